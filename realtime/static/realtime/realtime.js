// realtime.js: the browser's (and Node 20's) client of realtime. One ES module, no build step, no
// dependency (pass `WebSocket` from the `ws` package where there is no global one):
//
//   import { Auth, Realtime, follow, listen } from "/static/realtime/realtime.js";
//   const auth = new Auth();                              // login, refresh, logout (simplejwt's views)
//   await auth.login("ada", "secret");
//   const rt = new Realtime("/api/realtime/ws", { getToken: () => auth.access() });   // protocol v1
//   const room = rt.subscribe("room:lobby", { onMessage: (data, message) => ..., onJoin, onLeave });
//   await rt.publish("room:lobby", { text: "hi" });
//   listen("/api/myapp/ws/ticks", { token: () => auth.access(), onMessage });        // one WebSocketView
//   follow("/api/myapp/events", { token: () => auth.access(), onEvent });             // one SSEView
//
// Realtime takes ideas from Phoenix's socket.js (a reconnect timer, rejoin every channel after a
// reconnect, a heartbeat) and presence.js (a member list kept in sync by a snapshot and join/leave
// diffs). Where it differs: the delay is full jitter (random between 0 and the exponential ceiling,
// so a thousand clients dropped by one restart do not come back in step), the token travels in the
// first message instead of the URL, and every channel resumes from the last id it received.

/** The subprotocol of version 1. */
export const PROTOCOL = "realtime.v1";

/** An error reply of the server (or a local failure: `timeout`, `disconnected`, `closed`). */
export class RealtimeError extends Error {
  /**
   * @param {string} code a stable code, e.g. "forbidden" or "timeout"
   * @param {string} [detail] what happened, for people
   */
  constructor(code, detail = "") {
    super(detail ? `${code}: ${detail}` : code);
    this.name = "RealtimeError";
    this.code = code;
    this.detail = detail;
  }
}

/**
 * Full-jitter exponential backoff: a random delay in [0, min(cap, base * 2^attempt)).
 * @param {number} attempt 0 for the first retry
 * @param {{base?: number, cap?: number}} [options] milliseconds
 * @param {() => number} [random] Math.random by default (tests pass their own)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, { base = 500, cap = 30000 } = {}, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * The payload of a JWT, decoded without checking anything (the server checks); {} if it is not one.
 * @param {string} token
 * @returns {object}
 */
export function jwtPayload(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}

/**
 * A WebSocket URL from `url`: ws:// and wss:// as they are, http(s):// mapped to ws(s)://, and a
 * relative URL ("/api/realtime/ws") resolved against the page's location in a browser.
 * @param {string} url
 * @returns {string}
 */
export function websocketUrl(url) {
  const base = globalThis.location && globalThis.location.href;
  const resolved = new URL(url, base); // throws on a relative URL outside a browser: say so
  resolved.protocol = resolved.protocol.replace(/^http/, "ws");
  return resolved.href;
}

/**
 * The fallback binding's URL of a TopicSocket URL: http(s)://, with "/fallback" after the path
 * (where `router.register_topics` serves it).
 * @param {string} url a ws(s):// or http(s):// URL
 * @returns {string}
 */
export function fallbackUrl(url) {
  const resolved = new URL(websocketUrl(url));
  resolved.protocol = resolved.protocol.replace(/^ws/, "http");
  resolved.pathname = `${resolved.pathname.replace(/\/$/, "")}/fallback`;
  return resolved.href;
}

/** An HTTP refusal of the fallback as the close event a WebSocket would have had. */
function fallbackClose(status, body) {
  const code = body && typeof body.code === "string" ? body.code : `http_${status}`;
  const reason = `${code}: ${(body && body.detail) || ""}`.slice(0, 120);
  if (status === 401 || status === 403) return { code: 4003, reason };
  if (status === 429) return { code: 1008, reason };
  if (status === 503) return { code: 1001, reason };
  return { code: 1006, reason };
}

/**
 * Protocol v1 over SSE downstream and HTTP POST upstream (docs/protocol.md, "Fallback binding"),
 * shaped as a WebSocket (`onopen`, `onmessage`, `onclose`, `send`, `close`, `readyState`) so that
 * `Realtime` drives it as it drives a socket. The stream's first event names the session; each
 * `send` is POSTed with it (frames sent while a POST is out go together in the next one, in order)
 * and with the token the stream was opened with (a token the client later sends in `connect` or
 * `refresh` is used from the next POST on).
 */
export class FallbackSocket {
  /**
   * @param {string} url the fallback URL (see `fallbackUrl`)
   * @param {{token?: (string|null), fetch?: typeof fetch}} [options]
   */
  constructor(url, { token = null, fetch: fetcher = (...args) => globalThis.fetch(...args) } = {}) {
    this.url = url;
    this.token = token;
    this.readyState = 0;
    this.session = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._fetch = fetcher;
    this._abort = new AbortController();
    this._outgoing = [];
    this._posting = false;
    this._open();
  }

  _headers(extra = {}) {
    return this.token ? { ...extra, Authorization: `Bearer ${this.token}` } : extra;
  }

  async _open() {
    let response;
    const fetcher = this._fetch; // called unbound: a browser's fetch refuses another `this`
    try {
      response = await fetcher(this.url, {
        headers: this._headers({ Accept: "text/event-stream" }),
        signal: this._abort.signal,
      });
    } catch (error) {
      return this._ended({ code: 1006, reason: `fallback unreachable: ${error.message}` });
    }
    if (response.status !== 200) {
      let body = null;
      try {
        body = JSON.parse(parseEventStream(`${await response.text()}\n\n`).events[0]?.data ?? "null");
      } catch {
        body = null;
      }
      return this._ended(fallbackClose(response.status, body));
    }
    let rest = "";
    try {
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      while (this.readyState < 2) {
        const { value, done } = await reader.read();
        if (done) break;
        const parsed = parseEventStream(rest + value);
        rest = parsed.rest;
        for (const event of parsed.events) {
          if (this.readyState >= 2) break;
          if (event.event === "session") {
            this.session = JSON.parse(event.data).session;
            this.readyState = 1;
            if (this.onopen) this.onopen({ type: "open" });
          } else if (event.event === "close") {
            const { code, reason } = JSON.parse(event.data);
            return this._ended({ code, reason });
          } else if (event.event === "error") {
            // The stream failed on the server (internal_error): as a WebSocket's 1011, reconnect.
            const { code, detail } = JSON.parse(event.data);
            return this._ended({ code: 1011, reason: `${code}: ${detail}` });
          } else if (event.event === "message" && this.readyState === 1 && this.onmessage) {
            this.onmessage({ type: "message", data: event.data });
          }
        }
      }
    } catch (error) {
      if (this.readyState < 3) return this._ended({ code: 1006, reason: `fallback stream failed: ${error.message}` });
      return;
    }
    this._ended({ code: 1006, reason: "the fallback stream ended" });
  }

  /** Queues one text frame; it is POSTed with those queued beside it. */
  send(text) {
    if (this.readyState !== 1) throw new Error("the fallback session is not open");
    this._outgoing.push(text);
    if (!this._posting) this._flush();
  }

  async _flush() {
    this._posting = true;
    try {
      while (this._outgoing.length && this.readyState === 1) {
        const batch = this._outgoing.splice(0, 32);
        let response;
        const fetcher = this._fetch;
        try {
          response = await fetcher(this.url, {
            method: "POST",
            headers: this._headers({ "Content-Type": "application/json", "X-Realtime-Session": this.session }),
            body: `[${batch.join(",")}]`,
          });
        } catch (error) {
          this.close(4000, `fallback POST failed: ${error.message}`);
          return;
        }
        if (response.status !== 202) {
          let body = null;
          try {
            body = await response.json();
          } catch {
            body = null;
          }
          const { code, reason } = fallbackClose(response.status, body);
          this.close(code === 1006 ? 4000 : code, reason);
          return;
        }
        for (const text of batch) {
          if (!text.includes('"token"')) continue;
          const frame = JSON.parse(text);
          // connect or refresh: that token is the session's from the next POST on
          if ((frame.op === "connect" || frame.op === "refresh") && typeof frame.token === "string") this.token = frame.token;
        }
      }
    } finally {
      this._posting = false;
    }
  }

  /** Ends the session: the stream is dropped, so the server leaves everything it joined. */
  close(code = 1000, reason = "") {
    this._ended({ code, reason });
  }

  _ended({ code, reason }) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this._outgoing = [];
    this._abort.abort();
    const onclose = this.onclose;
    if (onclose) setTimeout(() => onclose({ type: "close", code, reason, wasClean: code === 1000 }), 0);
  }
}

/** How many recent message ids each subscription remembers to drop a repeated one. */
const SEEN_IDS = 1000;

/**
 * One channel of a Realtime connection, made by `rt.subscribe()`. It stays subscribed across
 * reconnections until `unsubscribe()`, a refusal (`onError` is called) or the server ends it.
 */
export class Subscription {
  constructor(client, channel, { onMessage, onGap, onJoin, onLeave, onError, onSnapshot, lastId = null, presence } = {}) {
    this.client = client;
    this.channel = channel;
    /** The id of the last message received: sent as `last_id` when the channel is joined again. */
    this.lastId = lastId;
    /** "joining", "joined" or "closed". */
    this.state = "joining";
    /** Messages dropped because their id had been delivered already (the server should send none). */
    this.duplicates = 0;
    this.handlers = { onMessage, onGap, onJoin, onLeave, onError, onSnapshot };
    /** The topic's last snapshot (`{data, last_id}`), or null: the state the messages after it apply to. */
    this.snapshot = null;
    // Presence is synced when asked for, or when someone listens to joins and leaves.
    this.wantsPresence = presence ?? Boolean(onJoin || onLeave);
    this._members = new Map();
    this._seen = new Set();
    this._recoveryReported = false;
    /** Resolves with the first subscribe reply's data; rejects with a RealtimeError if refused. */
    this.ready = new Promise((resolve, reject) => (this._settle = { resolve, reject }));
    this.ready.catch(() => {}); // the refusal also goes to onError: not an unhandled rejection
  }

  /** The members present on the channel, as last known: [{id, info, connections}]. */
  members() {
    return [...this._members.values()];
  }

  /** Leaves the channel; resolves when the server agreed (at once when not connected). */
  unsubscribe() {
    if (this.state === "closed") return Promise.resolve({});
    const wasJoined = this.state === "joined";
    this._close();
    if (!wasJoined || !this.client.isOpen) return Promise.resolve({});
    return this.client._request({ op: "unsubscribe", channel: this.channel }).catch((error) => {
      if (error.code === "not_subscribed" || error.code === "disconnected") return {};
      throw error;
    });
  }

  _close() {
    this.state = "closed";
    this.client.subscriptions.delete(this.channel);
  }

  _call(name, ...args) {
    const handler = this.handlers[name];
    if (!handler) return;
    try {
      handler(...args);
    } catch (error) {
      console.error(`realtime: ${name} of ${this.channel} raised`, error);
    }
  }

  /** Sends `subscribe` (with `last_id` once a message was seen), then syncs presence if wanted. */
  async _join() {
    this.state = "joining";
    this._recoveryReported = false;
    const frame = { op: "subscribe", channel: this.channel };
    // Any id is sent as it is, "0" ("from the start") included: what it means is the server's to say.
    const resuming = this.lastId !== null && this.lastId !== undefined;
    if (resuming) frame.last_id = String(this.lastId);
    let joined = false;
    // The reply is applied as it is read, before the frames after it (its gap, its replay): a
    // promise's continuation would run only after every frame that came in the same chunk.
    const onOk = (data) => (joined = this._joined(data, resuming, true));
    let data;
    try {
      data = await this.client._request(frame, { onOk });
    } catch (error) {
      if (this.state === "closed" || error.code === "disconnected") return; // rejoined after reconnecting
      if (error.code === "already_subscribed" && this.client.serverChannels.includes(this.channel)) {
        // The server subscribed this connection itself (connect's `channels`), without a last_id: its
        // messages flow already, and what came while disconnected is lost (no gap frame says so).
        data = { channel: this.channel, recovered: !resuming, last_id: null };
        this._joined(data, resuming, false);
        this._settle.resolve(data);
        if (this.wantsPresence) await this._syncPresence();
        return;
      }
      this._close();
      this._settle.reject(error);
      this._call("onError", error);
      return;
    }
    if (!joined) {
      // unsubscribe() came while the subscribe was in flight: leave now that the server joined.
      if (this.client.isOpen) this.client._request({ op: "unsubscribe", channel: this.channel }).catch(() => {});
      return;
    }
    this._settle.resolve(data);
    if (this.wantsPresence) await this._syncPresence();
  }

  /**
   * A subscribe that succeeded: joined, and when it could not resume (`recovered: false`) one gap,
   * reported here; the `gap` frame the server sends after such a reply (`gapFollows`) is then the
   * same gap, not a second one. Returns false when the subscription was closed meanwhile.
   */
  _joined(data, resuming, gapFollows) {
    if (this.state === "closed") return false;
    this.state = "joined";
    if (!resuming && data.last_id !== null && data.last_id !== undefined && this.lastId === null) {
      this.lastId = data.last_id; // resume from here if the connection drops before any message
    }
    if (resuming && data.recovered === false) {
      this._forgetIds();
      this._recoveryReported = gapFollows;
      this._call("onGap", { channel: this.channel, missed: null, recovered: false });
    }
    if (data.snapshot) {
      // The topic's state, current to snapshot.last_id; the messages after the reply are exactly those
      // after it. Called before them, on every join that carries one (never on a resume history covered).
      this.snapshot = data.snapshot;
      if (data.last_id !== null && data.last_id !== undefined) this.lastId = data.last_id;
      this._call("onSnapshot", data.snapshot.data, { channel: this.channel, last_id: data.snapshot.last_id });
    }
    return true;
  }

  /**
   * After a failed recovery, the ids received before are no guide to those that follow (a restarted
   * in-memory history hands out the same ones again): compared to them, new messages would be
   * dropped as duplicates. Ids are compared by equality only, and only within one history.
   */
  _forgetIds() {
    this._seen.clear();
  }

  /** Replaces the member list by the server's, calling onJoin/onLeave for what changed. */
  async _syncPresence() {
    let members;
    try {
      members = await this.client.presence(this.channel);
    } catch (error) {
      if (error.code !== "disconnected" && this.state !== "closed") this._call("onError", error);
      return;
    }
    if (this.state === "closed") return;
    const fresh = new Map(members.map((member) => [memberKey(member), member]));
    for (const [key, member] of this._members) {
      if (!fresh.has(key)) {
        this._members.delete(key);
        this._call("onLeave", member);
      }
    }
    for (const [key, member] of fresh) {
      const known = this._members.has(key);
      this._members.set(key, member);
      if (!known) this._call("onJoin", member);
    }
  }

  _onFrame(frame) {
    switch (frame.op) {
      case "message": {
        this._recoveryReported = false; // the gap of a failed recovery comes before its replay, or not at all
        const id = frame.id;
        if (id !== null && id !== undefined) {
          if (this._seen.has(id)) {
            this.duplicates += 1;
            return;
          }
          this._seen.add(id);
          if (this._seen.size > SEEN_IDS) this._seen.delete(this._seen.values().next().value);
          this.lastId = id;
        }
        this._call("onMessage", frame.data, frame);
        break;
      }
      case "gap":
        if (frame.recovered === false) {
          this._forgetIds();
          if (this._recoveryReported) {
            this._recoveryReported = false; // the subscribe reply reported this gap already
            return;
          }
        }
        this._call("onGap", { channel: this.channel, missed: frame.missed ?? null, recovered: frame.recovered ?? true });
        // join/leave frames wait in the same bounded queue: some may be among those dropped.
        if (this.wantsPresence && this.state === "joined") this._syncPresence();
        break;
      case "join":
        this._members.set(memberKey(frame.member), frame.member);
        this._call("onJoin", frame.member);
        break;
      case "leave":
        this._members.delete(memberKey(frame.member));
        this._call("onLeave", frame.member);
        break;
      case "unsubscribed": {
        const reason = frame.reason || {};
        this._close();
        this._call("onError", new RealtimeError(reason.code || "unsubscribed", reason.detail || ""));
        break;
      }
    }
  }
}

function memberKey(member) {
  return JSON.stringify(member.id);
}

/**
 * One WebSocket carrying many channels, reconnecting by itself until `close()`.
 *
 * States (passed to `onStateChange(state, detail)`): "connecting", "open" (the `connect` reply
 * came), "reconnecting" (waiting for the next attempt) and "closed" (by `close()`).
 */
export class Realtime {
  /**
   * @param {string} url the TopicSocket endpoint: ws(s)://, http(s):// or, in a browser, relative
   *   ("/api/realtime/ws": the page's own host, wss on https pages)
   * @param {object} [options]
   * @param {string} [options.token] an access token, sent in the `connect` message
   * @param {() => (string|Promise<string>)} [options.getToken] a fresh token: called before connecting
   *   without a usable token, and `refreshBefore` ms before the token's `exp` (sent as `refresh`)
   * @param {typeof WebSocket} [options.WebSocket] the constructor, where there is no global one
   * @param {number} [options.timeout] ms a reply may take before its promise rejects with "timeout"
   * @param {(state: string, detail: string) => void} [options.onStateChange]
   * @param {{base?: number, cap?: number}} [options.backoff] reconnect delays in ms (full jitter)
   * @param {number} [options.refreshBefore] ms before `exp` to refresh the token
   * @param {number} [options.heartbeat] ms between pings; a ping without a reply drops the socket
   * @param {boolean} [options.fallback] when the WebSocket cannot open (upgrade refused, or no open
   *   within `openTimeout`), carry the protocol over SSE and POST (`FallbackSocket`); default true
   * @param {number} [options.openTimeout] ms a WebSocket may take to open before the fallback is tried
   */
  constructor(url, options = {}) {
    const {
      token = null,
      getToken = null,
      WebSocket: Socket = globalThis.WebSocket,
      timeout = 10000,
      onStateChange = () => {},
      backoff = {},
      refreshBefore = 30000,
      heartbeat = 30000,
      fallback = true,
      openTimeout = 10000,
    } = options;
    if (!Socket && !fallback) throw new TypeError("No global WebSocket here: pass one, e.g. new Realtime(url, { WebSocket }) with WebSocket from the 'ws' package");
    try {
      url = websocketUrl(url);
    } catch {
      throw new TypeError(`Not a URL: ${url} (outside a browser give a full ws:// or wss:// URL)`);
    }
    Object.assign(this, { url, token, getToken, Socket, timeout, onStateChange, refreshBefore, heartbeat });
    Object.assign(this, { fallback, openTimeout, fallbackUrl: fallbackUrl(url) });
    /**
     * "websocket", or "fallback" once a WebSocket could not open: SSE down, POST up. The transport
     * that opened is kept for the following reconnections.
     */
    this.transport = Socket ? "websocket" : "fallback";
    this.backoff = { base: 500, cap: 30000, ...backoff };
    /** "connecting", "open", "reconnecting" or "closed" (null only until the constructor connects). */
    this.state = null;
    /** The user id the server authenticated (null: anonymous), from the last `connect` reply. */
    this.user = null;
    /**
     * Channels the server subscribed this connection to by itself (`connect`'s `channels`, e.g.
     * "user:5"). Their messages reach a Subscription once `subscribe()` is called for them (the
     * server's `already_subscribed` then counts as joined); they are not recovered after a reconnect.
     */
    this.serverChannels = [];
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    this.attempt = 0;
    this.ws = null;
    this._ref = 0;
    this._pending = new Map(); // ref -> {resolve, reject, timer}
    this._queue = []; // frames waiting for the connection to open
    this._timers = { retry: null, refresh: null, heartbeat: null, open: null };
    this._connect();
  }

  /** Whether the connection is up and past `connect`. */
  get isOpen() {
    return this.state === "open";
  }

  /**
   * Joins a channel (now, or as soon as connected) and keeps it joined across reconnections.
   * @param {string} channel e.g. "room:lobby"
   * @param {object} [handlers] onMessage(data, message), onGap({missed, recovered}), onJoin(member),
   *   onLeave(member), onError(RealtimeError), onSnapshot(data, {channel, last_id}) (the topic's state,
   *   before the messages that follow it); `lastId` to resume from; `presence` to sync members
   * @returns {Subscription}
   */
  subscribe(channel, handlers = {}) {
    if (this.state === "closed") throw new RealtimeError("closed", "this Realtime was closed");
    if (this.subscriptions.has(channel)) {
      throw new RealtimeError("already_subscribed", `${channel}: unsubscribe() the existing subscription first`);
    }
    const subscription = new Subscription(this, channel, handlers);
    this.subscriptions.set(channel, subscription);
    if (this.isOpen) subscription._join();
    return subscription;
  }

  /** Publishes `data` on a channel; resolves with {id}. */
  publish(channel, data) {
    return this._request({ op: "publish", channel, data });
  }

  /** The channel's members: resolves with [{id, info, connections}]. */
  async presence(channel) {
    return (await this._request({ op: "presence", channel })).members;
  }

  /** A round trip to the server. */
  ping() {
    return this._request({ op: "ping" });
  }

  /** Closes the connection for good: no reconnection; pending requests reject with "closed". */
  close() {
    this._stop("");
  }

  _stop(detail) {
    if (this.state === "closed") return;
    this._setState("closed", detail);
    for (const timer of Object.values(this._timers)) clearTimeout(timer);
    this._failPending("closed", "the connection was closed");
    this._queue = [];
    for (const subscription of this.subscriptions.values()) subscription.state = "closed";
    this.subscriptions.clear();
    if (this.ws) this.ws.close(1000);
  }

  // -- the connection -----------------------------------------------------------------------

  _setState(state, detail) {
    if (this.state === state && state !== "reconnecting") return;
    this.state = state;
    try {
      this.onStateChange(state, detail);
    } catch (error) {
      console.error("realtime: onStateChange raised", error);
    }
  }

  /** The token to connect with: a fresh one from getToken() when none is held or it expires soon. */
  async _tokenForConnect() {
    if (this.getToken && (!this.token || this._expiresSoon(this.token))) this.token = await this.getToken();
    return this.token;
  }

  _expiresSoon(token) {
    const exp = jwtPayload(token).exp;
    return typeof exp === "number" && exp * 1000 - Date.now() < this.refreshBefore;
  }

  async _connect() {
    if (this.state === "closed") return;
    this._setState("connecting", this.attempt ? `attempt ${this.attempt + 1}` : "");
    let token;
    try {
      token = await this._tokenForConnect();
    } catch (error) {
      return this._retry(`cannot get a token: ${error.message}`);
    }
    if (this.state === "closed") return;
    let ws;
    const transport = this.transport;
    try {
      ws = this.ws = transport === "fallback"
        ? new FallbackSocket(this.fallbackUrl, { token })
        : new this.Socket(this.url, [PROTOCOL]);
    } catch (error) {
      return this._retry(error.message);
    }
    let opened = false;
    clearTimeout(this._timers.open);
    if (transport === "websocket" && this.fallback && this.openTimeout) {
      this._timers.open = setTimeout(() => {
        if (ws === this.ws && !opened) ws.close(4000, "no open within openTimeout");
      }, this.openTimeout);
    }
    ws.onopen = () => {
      opened = true;
      clearTimeout(this._timers.open);
      this._opened(ws, token);
    };
    ws.onmessage = (event) => this._received(ws, event.data);
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (event) => {
      clearTimeout(this._timers.open);
      if (ws === this.ws && !opened && this.state !== "closed") {
        // A WebSocket that never opened (its upgrade refused by a proxy, or too slow): the fallback
        // at once. A fallback that never opened: the WebSocket again, after the backoff.
        if (transport === "websocket" && this.fallback) {
          this.ws = null;
          this.transport = "fallback";
          this._setState("reconnecting", `WebSocket did not open (${event.code}); trying the fallback`);
          this._connect();
          return;
        }
        if (transport === "fallback" && this.Socket) this.transport = "websocket";
      }
      this._closed(ws, event);
    };
  }

  async _opened(ws, token) {
    let data;
    try {
      // Before `connect` is answered nothing else goes out, so every subscribe sees the user.
      data = await this._request(token ? { op: "connect", token } : { op: "ping" }, { now: true });
    } catch (error) {
      if (ws !== this.ws) return;
      if (this.getToken && /^(token_expired|token_not_valid|user_mismatch)$/.test(error.code)) {
        this.token = null; // connect may be sent once: start over with a fresh token
        ws.close(4000, "token refused");
        return;
      }
      if (error.code === "timeout") {
        ws.close(4000, "no reply to connect");
        return;
      }
      data = { user: null, exp: null }; // refused for good (e.g. user_inactive): go on anonymously
      console.warn(`realtime: connect refused (${error.message}); anonymous`);
    }
    if (ws !== this.ws || this.state === "closed") return;
    this.user = data.user ?? null;
    this.serverChannels = Array.isArray(data.channels) ? data.channels : [];
    this.attempt = 0;
    this._setState("open", "");
    this._scheduleRefresh(data.exp);
    this._scheduleHeartbeat();
    // Every channel's subscribe goes out first (each sends it at once): a publish queued while away
    // needs its channel joined again.
    for (const subscription of this.subscriptions.values()) subscription._join();
    for (const frame of this._queue.splice(0)) this._send(frame);
  }

  _received(ws, text) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.op === "reply") {
      const pending = this._pending.get(frame.ref);
      if (!pending) return;
      this._pending.delete(frame.ref);
      clearTimeout(pending.timer);
      if (frame.ok) {
        if (pending.onOk) pending.onOk(frame.data ?? {}); // before the next frame is read
        pending.resolve(frame.data ?? {});
      } else pending.reject(new RealtimeError(frame.error?.code || "error", frame.error?.detail || ""));
      return;
    }
    const subscription = this.subscriptions.get(frame.channel);
    if (subscription) subscription._onFrame(frame);
  }

  _closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearTimeout(this._timers.refresh);
    clearTimeout(this._timers.heartbeat);
    // What was sent may or may not have arrived: say so. Queued frames wait for the next socket.
    this._failPending("disconnected", `the connection closed (${event.code})`);
    for (const subscription of this.subscriptions.values()) subscription.state = "joining";
    if (this.state === "closed") return;
    const why = `${event.code}${event.reason ? `: ${event.reason}` : ""}`;
    if (event.code === 4003) {
      // The server ended the session (token_expired, session_revoked, ...): never reuse that token.
      this.token = null;
      if (!this.getToken) {
        this._stop(`closed by the server (${why})`);
        return;
      }
    }
    this._retry(`connection lost (${why})`);
  }

  _retry(why) {
    if (this.state === "closed") return;
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this._setState("reconnecting", `${why}; retrying in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(this._timers.retry);
    this._timers.retry = setTimeout(() => this._connect(), delay);
  }

  // -- requests -----------------------------------------------------------------------------

  /** Sends a request with a fresh ref; the promise settles with the reply (or a timeout). */
  _request(fields, { now = false, onOk = null } = {}) {
    if (this.state === "closed") return Promise.reject(new RealtimeError("closed", "the connection was closed"));
    const ref = String(++this._ref);
    const frame = { ...fields, ref };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        this._queue = this._queue.filter((queued) => queued !== frame);
        reject(new RealtimeError("timeout", `no reply to ${fields.op} within ${this.timeout} ms`));
      }, this.timeout);
      this._pending.set(ref, { resolve, reject, timer, frame, onOk });
      if (now || this.isOpen) this._send(frame);
      else this._queue.push(frame);
    });
  }

  _send(frame) {
    try {
      this.ws.send(JSON.stringify(frame));
    } catch {
      // The socket is closing: the close handler rejects the request as "disconnected".
    }
  }

  _failPending(code, detail) {
    const queued = new Set(this._queue);
    for (const [ref, pending] of this._pending) {
      if (code !== "closed" && queued.has(pending.frame)) continue; // never sent: still waiting
      this._pending.delete(ref);
      clearTimeout(pending.timer);
      pending.reject(new RealtimeError(code, detail));
    }
  }

  // -- token refresh and heartbeat ----------------------------------------------------------

  _scheduleRefresh(exp) {
    clearTimeout(this._timers.refresh);
    if (!this.getToken || typeof exp !== "number") return;
    const delay = Math.max(1000, exp * 1000 - Date.now() - this.refreshBefore);
    this._timers.refresh = setTimeout(() => this._refresh(exp), delay);
  }

  async _refresh(exp) {
    if (!this.isOpen) return;
    try {
      const token = await this.getToken();
      const data = await this._request({ op: "refresh", token });
      this.token = token;
      this._scheduleRefresh(data.exp);
    } catch (error) {
      if (this.state === "closed") return;
      console.warn(`realtime: token refresh failed (${error.message}); retrying`);
      // Try again shortly while the old token lasts; a reconnect gets a fresh one anyway.
      if (this.isOpen && exp * 1000 > Date.now()) {
        this._timers.refresh = setTimeout(() => this._refresh(exp), Math.min(5000, this.refreshBefore / 4));
      }
    }
  }

  _scheduleHeartbeat() {
    clearTimeout(this._timers.heartbeat);
    if (!this.heartbeat) return;
    this._timers.heartbeat = setTimeout(async () => {
      const ws = this.ws;
      try {
        await this.ping();
      } catch (error) {
        if (error.code === "timeout" && ws === this.ws && ws) ws.close(4000, "heartbeat timeout");
        return;
      }
      if (ws === this.ws) this._scheduleHeartbeat();
    }, this.heartbeat);
  }
}

// -- One WebSocketView ---------------------------------------------------------------------------

/**
 * Close codes after which reconnecting cannot help (realtime's CloseCode): the conversation is over
 * (1000), the client sent what the view refuses (1003, 1007, 1009), a policy refused it (1008), or
 * a permission did (4003 whose reason is not a credential code).
 */
export const FINAL_CLOSE_CODES = Object.freeze([1000, 1003, 1007, 1008, 1009, 4003]);

/** A 4003 whose reason starts with one of these refused the token, not the user: a fresh one may do. */
const CREDENTIAL_REASON = /^(token_expired|token_not_valid|session_revoked|user_mismatch)\b/;

/**
 * Whether a close event says the server refused the token: 4003 with a credential reason, or 4001
 * (`REALTIME["STRICT_TOKENS"]`).
 * @param {{code: number, reason?: string}} event
 * @returns {boolean}
 */
export function tokenRefused(event) {
  return event.code === 4001 || (event.code === 4003 && CREDENTIAL_REASON.test(event.reason || ""));
}

/**
 * Listens to one `WebSocketView` (not the multi-channel protocol: that is `Realtime`) and
 * reconnects by itself until `close()`.
 *
 * Messages are JSON-decoded when they are JSON; the view's keepalive (`{"type": "ping"}`) is not
 * passed on, but it keeps the watchdog fed: `watchdog` ms without any message (pick more than the
 * view's `keepalive`, 30 s by default) drops the socket as dead and reconnects. A browser cannot set
 * headers on a WebSocket, so the token goes in `?token=` (keep it out of proxy logs; realtime's
 * nginx.conf does). After a drop the next attempt waits a full-jitter delay; it stops for good on a
 * close code of `FINAL_CLOSE_CODES` or `finalCodes`, and on a refused token when `token` is not a
 * function.
 *
 * @param {string} url ws(s)://, http(s):// or, in a browser, relative ("/api/myapp/ws/ticks")
 * @param {object} options
 * @param {(data: any, event: MessageEvent) => void} options.onMessage
 * @param {string|((hint: {refused: boolean}) => (string|Promise<string>))} [options.token] a function
 *   is called before each connection, with `refused: true` after the server refused the last token
 *   (4003 `token_expired`, `session_revoked`, ... or 4001): return a fresh one then
 * @param {(state: string, detail: string) => void} [options.onStateChange] "connecting", "open",
 *   "reconnecting", "closed"
 * @param {{base?: number, cap?: number}} [options.backoff] reconnect delays in ms (full jitter)
 * @param {number} [options.watchdog] ms without a message before the socket counts as dead; 0: never
 * @param {number[]} [options.finalCodes] the view's own close codes that also stop it (e.g. 4004)
 * @param {typeof WebSocket} [options.WebSocket] the constructor, where there is no global one
 * @returns {{send: (data: any) => boolean, close: () => void, readonly state: string}}
 */
export function listen(url, {
  onMessage,
  token = null,
  onStateChange = () => {},
  backoff = {},
  watchdog = 45000,
  finalCodes = [],
  WebSocket: Socket = globalThis.WebSocket,
} = {}) {
  if (!Socket) throw new TypeError("No global WebSocket here: pass one, e.g. listen(url, { WebSocket }) with WebSocket from the 'ws' package");
  let target;
  try {
    target = websocketUrl(url);
  } catch {
    throw new TypeError(`Not a URL: ${url} (outside a browser give a full ws:// or wss:// URL)`);
  }
  const delays = { base: 500, cap: 30000, ...backoff };
  const final = new Set([...FINAL_CLOSE_CODES, ...finalCodes]);
  const state = { name: null, ws: null, attempt: 0, refused: false, retry: null, dog: null };

  function setState(name, detail) {
    if (state.name === name && name !== "reconnecting") return;
    state.name = name;
    try {
      onStateChange(name, detail);
    } catch (error) {
      console.error("realtime: onStateChange raised", error);
    }
  }

  function retry(why) {
    if (state.name === "closed") return;
    const delay = backoffDelay(state.attempt++, delays);
    setState("reconnecting", `${why}; retrying in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(state.retry);
    state.retry = setTimeout(connect, delay);
  }

  function stop(detail) {
    if (state.name === "closed") return;
    clearTimeout(state.retry);
    clearTimeout(state.dog);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000);
    setState("closed", detail);
  }

  function feed(ws) {
    clearTimeout(state.dog);
    if (!watchdog) return;
    state.dog = setTimeout(() => {
      if (ws !== state.ws) return;
      state.ws = null; // its close event, whenever the dead connection gives one, is ignored
      ws.close(4000, "watchdog");
      retry(`no message for ${(watchdog / 1000).toFixed(0)} s`);
    }, watchdog);
  }

  async function connect() {
    if (state.name === "closed") return;
    setState("connecting", state.attempt ? `attempt ${state.attempt + 1}` : "");
    let address = target;
    try {
      const value = typeof token === "function" ? await token({ refused: state.refused }) : token;
      if (value) {
        const withToken = new URL(target);
        withToken.searchParams.set("token", value);
        address = withToken.href;
      }
    } catch (error) {
      return retry(`cannot get a token: ${error.message}`);
    }
    if (state.name === "closed") return;
    let ws;
    try {
      ws = state.ws = new Socket(address);
    } catch (error) {
      return retry(error.message);
    }
    ws.onopen = () => {
      if (ws !== state.ws) return;
      setState("open", "");
      feed(ws);
    };
    ws.onmessage = (event) => {
      if (ws !== state.ws) return;
      feed(ws);
      state.attempt = 0; // data flows: the next outage starts from the shortest delay again
      let data = event.data;
      if (typeof data === "string") {
        try {
          data = JSON.parse(data);
        } catch {
          /* plain text */
        }
      }
      if (data && data.type === "ping" && Object.keys(data).length === 1) return; // the view's keepalive
      try {
        onMessage(data, event);
      } catch (error) {
        console.error("realtime: onMessage raised", error);
      }
    };
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (event) => {
      if (ws !== state.ws) return;
      clearTimeout(state.dog);
      state.ws = null;
      const why = `${event.code}${event.reason ? `: ${event.reason}` : ""}`;
      state.refused = tokenRefused(event);
      if (state.refused ? typeof token !== "function" : final.has(event.code)) {
        stop(`closed by the server (${why})`);
        return;
      }
      retry(`connection lost (${why})`);
    };
  }

  connect();
  return {
    /** Sends `data` JSON-encoded; false (nothing sent) while not connected. */
    send(data) {
      const ws = state.ws;
      if (!ws || ws.readyState !== 1) return false;
      ws.send(JSON.stringify(data));
      return true;
    },
    /** Closes the socket for good: no reconnection. */
    close() {
      stop("");
    },
    get state() {
      return state.name;
    },
  };
}

// -- Server-Sent Events -------------------------------------------------------------------------

/**
 * Parses a chunk of a text/event-stream; returns the events completed and the unparsed rest.
 * @param {string} buffer text received so far (the previous rest plus the new chunk)
 * @returns {{events: Array<{event: string, id: (string|null), data: string, retry: (number|null)}>, rest: string}}
 */
export function parseEventStream(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { event: "message", id: null, data: [], retry: null };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") event.data.push(value);
      else if (field === "event") event.event = value;
      else if (field === "id" && !value.includes("\0")) event.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
    }
    if (event.data.length || event.id !== null || event.retry !== null) events.push({ ...event, data: event.data.join("\n") });
  }
  return { events, rest };
}

/**
 * A `Retry-After` header's delay in milliseconds (seconds, or an HTTP date); 0 without a valid one.
 * @param {string|null} value
 * @returns {number}
 */
function retryAfterMs(value) {
  if (!value) return 0;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? 0 : Math.max(0, at - Date.now());
}

/**
 * Follows an SSE endpoint and resumes after the last event seen, sending `Last-Event-ID`.
 *
 * In a browser, `new EventSource(url)` already resends `Last-Event-ID` when it reconnects, but it
 * cannot send an Authorization header (the token goes in `?token=`) and it gives up for good on any
 * answer but a 200 (a 502 while the servers restart, a 401 once the token expired). This helper
 * reads the stream with `fetch` instead, in browsers and Node 20 alike: the token goes in the
 * Authorization header (`token` may be a function, called on each connection for a fresh one), and
 * after any failure it reconnects with full-jitter backoff (the server's `retry:` is the base; an
 * answer with `Retry-After`, as a server shutting down gives with its 503, waits that long first).
 * An event whose id was delivered already is dropped and counted in `duplicates` (the server should
 * send none: it replays only what comes after `Last-Event-ID`).
 *
 * @param {string} url
 * @param {object} options
 * @param {(event: {event: string, id: (string|null), data: any}) => void} options.onEvent data is
 *   JSON-decoded when it is JSON
 * @param {string|((hint: {refused: boolean}) => (string|Promise<string>))} [options.token] a function
 *   gets `refused: true` after the server answered 401 to the last token: return a fresh one
 * @param {string} [options.lastEventId] resume after this id from the start
 * @param {(state: string, detail: string) => void} [options.onStateChange] "connecting", "open",
 *   "reconnecting", "closed"
 * @param {{base?: number, cap?: number}} [options.backoff]
 * @returns {{close: () => void, readonly lastEventId: (string|null), readonly duplicates: number}}
 */
export function follow(url, { onEvent, token = null, lastEventId = null, onStateChange = () => {}, backoff = {}, fetch: fetchImpl = globalThis.fetch } = {}) {
  const delays = { base: 1000, cap: 30000, ...backoff };
  const state = { lastEventId, closed: false, attempt: 0, controller: null, timer: null, refused: false, duplicates: 0 };
  const seen = new Set();

  async function connect() {
    onStateChange("connecting", state.lastEventId ? `resuming after ${state.lastEventId}` : "");
    state.controller = new AbortController();
    const headers = { Accept: "text/event-stream", "Cache-Control": "no-cache" };
    if (state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
    try {
      const refused = state.refused;
      state.refused = false; // until the server answers 401 to this one
      const value = typeof token === "function" ? await token({ refused }) : token;
      if (value) headers.Authorization = `Bearer ${value}`;
      const response = await fetchImpl(url, { headers, signal: state.controller.signal });
      state.refused = response.status === 401;
      if (!response.ok) {
        const error = new Error(`HTTP ${response.status}`);
        error.retryAfter = retryAfterMs(response.headers.get("Retry-After"));
        throw error;
      }
      onStateChange("open", "");
      state.attempt = 0;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      for (;;) {
        const { value: chunk, done } = await reader.read();
        if (done) break;
        const parsed = parseEventStream(rest + chunk);
        rest = parsed.rest;
        for (const event of parsed.events) {
          if (event.retry !== null) delays.base = event.retry;
          if (event.id !== null) {
            if (seen.has(event.id)) {
              state.duplicates += 1;
              continue;
            }
            seen.add(event.id);
            if (seen.size > SEEN_IDS) seen.delete(seen.values().next().value);
            state.lastEventId = event.id;
          }
          if (!event.data && event.event === "message") continue;
          let data = event.data;
          try {
            data = JSON.parse(event.data);
          } catch {
            /* plain text */
          }
          onEvent({ event: event.event, id: event.id, data });
        }
      }
      throw new Error("stream ended");
    } catch (error) {
      if (state.closed) return;
      // A server that says when to come back (503 while it shuts down) is not asked sooner; the
      // jitter on top keeps its clients from coming back all at once.
      const delay = (error.retryAfter ?? 0) + backoffDelay(state.attempt++, delays);
      onStateChange("reconnecting", `${error.message}; retrying in ${(delay / 1000).toFixed(1)} s`);
      state.timer = setTimeout(connect, delay);
    }
  }

  connect();
  return {
    close() {
      state.closed = true;
      clearTimeout(state.timer);
      if (state.controller) state.controller.abort();
      onStateChange("closed", "");
    },
    get lastEventId() {
      return state.lastEventId;
    },
    get duplicates() {
      return state.duplicates;
    },
  };
}

// -- Logging in -----------------------------------------------------------------------------------

/** Where `Auth` keeps tokens when the platform has no sessionStorage (Node) or refuses it. */
function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key),
  };
}

function defaultStorage() {
  try {
    if (globalThis.sessionStorage) return globalThis.sessionStorage;
  } catch {
    /* a sandboxed frame: sessionStorage throws */
  }
  return memoryStorage();
}

/** A RealtimeError for an HTTP answer that is not ok, with `status` and the JSON body as `data`. */
function httpError(response, data, what) {
  const fields = data && typeof data === "object" && Object.keys(data).length ? JSON.stringify(data) : "";
  const detail = (data && data.detail) || fields || `${what} (HTTP ${response.status})`; // DRF: {field: [...]}
  const error = new RealtimeError((data && data.code) || `http_${response.status}`, String(detail));
  error.status = response.status;
  error.data = data;
  return error;
}

/**
 * Access and refresh tokens from simplejwt's views, as the tutorial's URLconf (docs/tutorial/install.md) serves them
 * (`/api/auth/token/`, `/api/auth/token/refresh/`) and realtime's `LogoutView` (`/api/auth/logout/`).
 * They are kept in `sessionStorage` under `key` (this tab only; in memory where there is none), so
 * a reload stays logged in. Errors are `RealtimeError`s: the server's `code` (or `http_<status>`)
 * with its `detail`, `not_logged_in`, `unreachable`, `session_expired`.
 */
export class Auth {
  /**
   * @param {object} [options]
   * @param {string} [options.tokenUrl] simplejwt's TokenObtainPairView
   * @param {string} [options.refreshUrl] simplejwt's TokenRefreshView
   * @param {string} [options.logoutUrl] realtime.views.LogoutView
   * @param {string} [options.key] the storage key
   * @param {{getItem, setItem, removeItem}} [options.storage] sessionStorage by default
   * @param {number} [options.refreshBefore] ms before the access token's `exp` to refresh it
   * @param {() => void} [options.onLogout] called when the tokens are forgotten (logout, or a
   *   refresh token the server no longer accepts)
   * @param {typeof fetch} [options.fetch]
   */
  constructor({
    tokenUrl = "/api/auth/token/",
    refreshUrl = "/api/auth/token/refresh/",
    logoutUrl = "/api/auth/logout/",
    key = "realtime.tokens",
    storage = defaultStorage(),
    refreshBefore = 30000,
    onLogout = null,
    fetch: fetchImpl = (...args) => globalThis.fetch(...args),
  } = {}) {
    Object.assign(this, { tokenUrl, refreshUrl, logoutUrl, key, storage, refreshBefore, onLogout });
    this._fetch = fetchImpl;
    /** `{access, refresh}` or null. */
    this.tokens = null;
    try {
      this.tokens = JSON.parse(storage.getItem(key) || "null");
    } catch {
      /* not ours: start logged out */
    }
    this._refreshing = null;
  }

  /** Whether a refresh token is held (it may still be refused by the server). */
  get loggedIn() {
    return Boolean(this.tokens && this.tokens.refresh);
  }

  _store(tokens) {
    this.tokens = tokens;
    if (tokens) this.storage.setItem(this.key, JSON.stringify(tokens));
    else this.storage.removeItem(this.key);
  }

  /** fetch(), with a network failure as RealtimeError("unreachable"). */
  async _request(url, init) {
    try {
      return await this._fetch(url, init);
    } catch (error) {
      throw new RealtimeError("unreachable", `${url}: ${error.message}`);
    }
  }

  _post(url, body) {
    return this._request(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }

  /** Obtains a token pair; rejects with the server's refusal (bad credentials, throttled). */
  async login(username, password) {
    const response = await this._post(this.tokenUrl, { username, password });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw httpError(response, body, "Login failed");
    this._store({ access: body.access, refresh: body.refresh });
  }

  /**
   * Forgets the tokens of this tab and, unless `revoke` is false, tells the server: it blacklists
   * the refresh token and closes this user's connections everywhere. Resolves once the server
   * answered, or could not be reached: the tokens are forgotten either way.
   */
  async logout({ revoke = true } = {}) {
    let access = null;
    if (revoke && this.loggedIn) access = await this.access().catch(() => null); // refreshed if expiring
    const refresh = this.tokens && this.tokens.refresh;
    this._store(null);
    if (this.onLogout) this.onLogout();
    if (!access) return;
    await this._fetch(this.logoutUrl, {
      method: "POST",
      headers: { Authorization: `Bearer ${access}`, "Content-Type": "application/json" },
      body: JSON.stringify({ refresh }),
      keepalive: true,
    }).catch(() => {});
  }

  /**
   * A valid access token: the one held, or a refreshed one when it expires within `refreshBefore`
   * ms (or when `force`). Concurrent calls share one refresh.
   */
  async access({ force = false } = {}) {
    if (!this.loggedIn) throw new RealtimeError("not_logged_in", "log in first");
    const exp = jwtPayload(this.tokens.access).exp || 0;
    if (!force && exp * 1000 - Date.now() > this.refreshBefore) return this.tokens.access;
    this._refreshing ??= this._refresh().finally(() => (this._refreshing = null));
    return this._refreshing;
  }

  async _refresh() {
    const response = await this._post(this.refreshUrl, { refresh: this.tokens.refresh }); // unreachable: callers retry
    if (response.status === 401) {
      this.logout({ revoke: false }); // the refresh token itself expired or was revoked
      throw new RealtimeError("session_expired", "log in again");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw httpError(response, body, "Cannot refresh the token");
    this._store({ ...this.tokens, ...body }); // with ROTATE_REFRESH_TOKENS the body has a new refresh too
    return this.tokens.access;
  }

  /** `fetch()` with the Bearer token, JSON in and out; rejects with a RealtimeError on a non-2xx. */
  async fetchJSON(url, { method = "GET", body } = {}) {
    const token = await this.access();
    const response = await this._request(url, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw httpError(response, data, "Request failed");
    return data;
  }
}
