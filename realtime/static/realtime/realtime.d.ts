// Types of realtime.js (the same folder's one module), checked by tests/test_js_package.py with tsc --noEmit.

/** The subprotocol of version 1. */
export declare const PROTOCOL: "realtime.v1";

/** An error reply of the server (or a local failure: `timeout`, `disconnected`, `closed`). */
export declare class RealtimeError extends Error {
  constructor(code: string, detail?: string);
  readonly name: "RealtimeError";
  /** A stable code, e.g. "forbidden", "refused", "timeout". */
  code: string;
  detail: string;
  /** Set by Auth on an HTTP answer that is not ok. */
  status?: number;
  data?: unknown;
}

export interface Backoff {
  /** ms */
  base?: number;
  /** ms */
  cap?: number;
}

export type StateHandler = (state: "connecting" | "open" | "reconnecting" | "closed", detail: string) => void;

/** Full-jitter exponential backoff: a random delay in [0, min(cap, base * 2^attempt)) ms. */
export declare function backoffDelay(attempt: number, options?: Backoff, random?: () => number): number;

/** The payload of a JWT, decoded without checking anything; {} if it is not one. */
export declare function jwtPayload(token: string): { exp?: number; [claim: string]: unknown };

/** A WebSocket URL: ws(s) as is, http(s) mapped to ws(s), a relative one resolved against the page. */
export declare function websocketUrl(url: string): string;

/** The fallback binding's URL of a TopicSocket URL: http(s), with "/fallback" after the path. */
export declare function fallbackUrl(url: string): string;

/**
 * Protocol v1 over SSE down and POST up (docs/protocol.md, "Fallback binding"), shaped as a
 * WebSocket so that Realtime drives it; Realtime makes one itself when a WebSocket cannot open.
 */
export declare class FallbackSocket {
  constructor(url: string, options?: { token?: string | null; fetch?: typeof fetch });
  readonly url: string;
  /** 0 connecting, 1 open (the session event arrived), 3 closed. */
  readonly readyState: 0 | 1 | 2 | 3;
  /** The session id the stream's first event named; null before. */
  readonly session: string | null;
  token: string | null;
  onopen: ((event: { type: "open" }) => void) | null;
  onmessage: ((event: { type: "message"; data: string }) => void) | null;
  onclose: ((event: { type: "close"; code: number; reason: string; wasClean: boolean }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(text: string): void;
  close(code?: number, reason?: string): void;
}

/** A member of a presence channel: one per user. */
export interface Member<Info = Record<string, unknown>> {
  id: string | number;
  info: Info;
  connections: number;
}

/** A `message` frame of protocol v1. */
export interface MessageFrame<T = unknown> {
  op: "message";
  channel: string;
  /** The channel's history id (null without history): an opaque string, compared by equality. */
  id: string | null;
  data: T;
}

export interface GapInfo {
  channel: string;
  /** How many were dropped (a slow reader), or null: unknown (a failed recovery). */
  missed: number | null;
  /** false: history could not reach back to the last id; refetch the state. */
  recovered: boolean;
}

/** A topic's state for a new subscriber, current to the history id `last_id` (null: before any message). */
export interface Snapshot<S = unknown> {
  data: S;
  last_id: string | null;
}

/** The subscribe reply's data. */
export interface SubscribeReply<S = unknown> {
  channel: string;
  recovered: boolean;
  last_id: string | null;
  /** The topic's snapshot, when it has one: the messages after the reply are exactly those after its id. */
  snapshot?: Snapshot<S>;
}

export interface SubscribeOptions<T = unknown, Info = Record<string, unknown>, S = unknown> {
  onMessage?: (data: T, message: MessageFrame<T>) => void;
  /** The topic's state, before the messages after it; on every join that carries one. */
  onSnapshot?: (data: S, info: { channel: string; last_id: string | null }) => void;
  /** Once per gap: a failed recovery (`recovered: false`) or messages dropped (`missed`). */
  onGap?: (gap: GapInfo) => void;
  onJoin?: (member: Member<Info>) => void;
  onLeave?: (member: Member<Info>) => void;
  onError?: (error: RealtimeError) => void;
  /** Resume after this id; "0" is sent as it is ("from the start"). */
  lastId?: string | null;
  /** Keep `members()` in sync (on by default when onJoin or onLeave is given). */
  presence?: boolean;
}

/** One channel of a Realtime connection, made by `rt.subscribe()`. */
export declare class Subscription<T = unknown, Info = Record<string, unknown>, S = unknown> {
  readonly client: Realtime;
  readonly channel: string;
  /** The id of the last message received: sent as `last_id` when the channel is joined again. */
  lastId: string | null;
  state: "joining" | "joined" | "closed";
  /** Messages dropped because their id had been delivered already. */
  duplicates: number;
  /** The topic's last snapshot, or null. */
  snapshot: Snapshot<S> | null;
  /** Resolves with the first subscribe reply (its `snapshot` included); rejects with a RealtimeError if refused. */
  readonly ready: Promise<SubscribeReply<S>>;
  members(): Member<Info>[];
  unsubscribe(): Promise<Record<string, never>>;
}

export interface RealtimeOptions {
  /** An access token, sent in the `connect` message. */
  token?: string | null;
  /** A fresh token: before connecting without a usable one, and `refreshBefore` ms before its exp. */
  getToken?: (() => string | Promise<string>) | null;
  /** The constructor, where there is no global one (Node 20: the `ws` package's). */
  WebSocket?: unknown;
  /** ms a reply may take. */
  timeout?: number;
  onStateChange?: StateHandler;
  backoff?: Backoff;
  refreshBefore?: number;
  /** ms between pings; 0: none. */
  heartbeat?: number;
  /** Carry the protocol over SSE and POST when the WebSocket cannot open (default true). */
  fallback?: boolean;
  /** ms a WebSocket may take to open before the fallback is tried (default 10000; 0: no limit). */
  openTimeout?: number;
}

/** One WebSocket carrying many channels (protocol v1), reconnecting by itself until `close()`. */
export declare class Realtime {
  constructor(url: string, options?: RealtimeOptions);
  state: "connecting" | "open" | "reconnecting" | "closed" | null;
  /** "fallback" once a WebSocket could not open; the transport that opened is kept. */
  transport: "websocket" | "fallback";
  readonly isOpen: boolean;
  /** The user id the server authenticated (null: anonymous). */
  user: string | number | null;
  /** Channels the server subscribed this connection to by itself. */
  serverChannels: string[];
  readonly subscriptions: Map<string, Subscription<any, any>>;
  token: string | null;
  subscribe<T = unknown, Info = Record<string, unknown>, S = unknown>(
    channel: string, options?: SubscribeOptions<T, Info, S>,
  ): Subscription<T, Info, S>;
  publish(channel: string, data: unknown): Promise<{ id: string | null }>;
  presence<Info = Record<string, unknown>>(channel: string): Promise<Member<Info>[]>;
  ping(): Promise<Record<string, never>>;
  close(): void;
}

/** Close codes after which listen() does not reconnect. */
export declare const FINAL_CLOSE_CODES: readonly number[];

/** Whether a close event says the server refused the token (4003 with a credential reason, or 4001). */
export declare function tokenRefused(event: { code: number; reason?: string }): boolean;

export type TokenOption = string | null | ((hint: { refused: boolean }) => string | Promise<string>);

export interface ListenOptions<T = unknown> {
  onMessage: (data: T, event: unknown) => void;
  token?: TokenOption;
  onStateChange?: StateHandler;
  backoff?: Backoff;
  /** ms without any message before the socket counts as dead; 0: never. */
  watchdog?: number;
  finalCodes?: number[];
  WebSocket?: unknown;
}

/** Listens to one WebSocketView and reconnects by itself until `close()`. */
export declare function listen<T = unknown>(url: string, options: ListenOptions<T>): {
  send(data: unknown): boolean;
  close(): void;
  readonly state: "connecting" | "open" | "reconnecting" | "closed" | null;
};

export interface StreamEvent {
  event: string;
  id: string | null;
  data: string;
  retry: number | null;
}

/** Parses a chunk of a text/event-stream: the events completed and the unparsed rest. */
export declare function parseEventStream(buffer: string): { events: StreamEvent[]; rest: string };

export interface FollowOptions<T = unknown> {
  onEvent: (event: { event: string; id: string | null; data: T }) => void;
  token?: TokenOption;
  lastEventId?: string | null;
  onStateChange?: StateHandler;
  backoff?: Backoff;
  fetch?: typeof fetch;
}

/** Follows an SSEView and resumes after the last event seen (Last-Event-ID). */
export declare function follow<T = unknown>(url: string, options: FollowOptions<T>): {
  close(): void;
  readonly lastEventId: string | null;
  readonly duplicates: number;
};

export interface TokenStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface AuthOptions {
  tokenUrl?: string;
  refreshUrl?: string;
  logoutUrl?: string;
  key?: string;
  storage?: TokenStorage;
  refreshBefore?: number;
  onLogout?: (() => void) | null;
  fetch?: typeof fetch;
}

/** Access and refresh tokens from simplejwt's views, kept in sessionStorage (in memory without one). */
export declare class Auth {
  constructor(options?: AuthOptions);
  tokens: { access: string; refresh: string } | null;
  readonly loggedIn: boolean;
  login(username: string, password: string): Promise<void>;
  logout(options?: { revoke?: boolean }): Promise<void>;
  access(options?: { force?: boolean }): Promise<string>;
  fetchJSON<T = unknown>(url: string, options?: { method?: string; body?: unknown }): Promise<T>;
}
