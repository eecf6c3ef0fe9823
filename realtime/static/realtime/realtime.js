// realtime.js: the client of the multi-channel protocol v1 (docs/protocol.md) and a small
// Server-Sent Events helper. One ES module, no build step, no dependency; browsers and Node 20
// (pass `WebSocket` from the `ws` package where there is no global one).
//
//   import { Realtime } from "/static/realtime/realtime.js";
//   const rt = new Realtime("wss://example.com/api/realtime/ws", { getToken: () => auth.access() });
//   const room = rt.subscribe("room:lobby", { onMessage: (data, message) => ..., onJoin, onLeave });
//   await rt.publish("room:lobby", { text: "hi" });
//
// Ideas from Phoenix's socket.js (a reconnect timer, rejoin every channel after a reconnect, a
// heartbeat) and presence.js (a member list kept in sync by a snapshot and join/leave diffs).
// Where it differs: the delay is full jitter (random between 0 and the exponential ceiling, so a
// thousand clients dropped by one restart do not come back in step), the token travels in the first
// message instead of the URL, and every channel resumes from the last id it received.

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

/** How many recent message ids each subscription remembers to drop a repeated one. */
const SEEN_IDS = 1000;

/**
 * One channel of a Realtime connection, made by `rt.subscribe()`. It stays subscribed across
 * reconnections until `unsubscribe()`, a refusal (`onError` is called) or the server ends it.
 */
export class Subscription {
  constructor(client, channel, { onMessage, onGap, onJoin, onLeave, onError, lastId = null, presence } = {}) {
    this.client = client;
    this.channel = channel;
    /** The id of the last message received: sent as `last_id` when the channel is joined again. */
    this.lastId = lastId;
    /** "joining", "joined" or "closed". */
    this.state = "joining";
    /** Messages dropped because their id had been delivered already (the server should send none). */
    this.duplicates = 0;
    this.handlers = { onMessage, onGap, onJoin, onLeave, onError };
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
    const resuming = this.lastId !== null && this.lastId !== undefined;
    if (resuming) frame.last_id = String(this.lastId);
    let data;
    try {
      data = await this.client._request(frame);
    } catch (error) {
      if (this.state === "closed" || error.code === "disconnected") return; // rejoined after reconnecting
      if (error.code === "already_subscribed" && this.client.serverChannels.includes(this.channel)) {
        // The server subscribed this connection itself (connect's `channels`): its messages flow already.
        this.state = "joined";
        this._settle.resolve({ channel: this.channel, recovered: !resuming, last_id: null });
        if (this.wantsPresence) await this._syncPresence();
        return;
      }
      this._close();
      this._settle.reject(error);
      this._call("onError", error);
      return;
    }
    if (this.state === "closed") {
      // unsubscribe() came while the subscribe was in flight: leave now that the server joined.
      if (this.client.isOpen) this.client._request({ op: "unsubscribe", channel: this.channel }).catch(() => {});
      return;
    }
    this.state = "joined";
    if (!resuming && data.last_id !== null && data.last_id !== undefined && this.lastId === null) {
      this.lastId = data.last_id; // resume from here if the connection drops before any message
    }
    if (resuming && data.recovered === false) {
      this._recoveryReported = true;
      this._call("onGap", { channel: this.channel, missed: null, recovered: false });
    }
    this._settle.resolve(data);
    if (this.wantsPresence) await this._syncPresence();
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
        if (frame.recovered === false && this._recoveryReported) {
          this._recoveryReported = false; // the reply said so already
          return;
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
    } = options;
    if (!Socket) throw new TypeError("No global WebSocket here: pass one, e.g. new Realtime(url, { WebSocket }) with WebSocket from the 'ws' package");
    try {
      url = websocketUrl(url);
    } catch {
      throw new TypeError(`Not a URL: ${url} (outside a browser give a full ws:// or wss:// URL)`);
    }
    Object.assign(this, { url, token, getToken, Socket, timeout, onStateChange, refreshBefore, heartbeat });
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
    this._timers = { retry: null, refresh: null, heartbeat: null };
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
   *   onLeave(member), onError(RealtimeError); `lastId` to resume from; `presence` to sync members
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
    try {
      ws = this.ws = new this.Socket(this.url, [PROTOCOL]);
    } catch (error) {
      return this._retry(error.message);
    }
    ws.onopen = () => this._opened(ws, token);
    ws.onmessage = (event) => this._received(ws, event.data);
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (event) => this._closed(ws, event);
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
    for (const frame of this._queue.splice(0)) this._send(frame);
    for (const subscription of this.subscriptions.values()) subscription._join();
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
      if (frame.ok) pending.resolve(frame.data ?? {});
      else pending.reject(new RealtimeError(frame.error?.code || "error", frame.error?.detail || ""));
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
  _request(fields, { now = false } = {}) {
    if (this.state === "closed") return Promise.reject(new RealtimeError("closed", "the connection was closed"));
    const ref = String(++this._ref);
    const frame = { ...fields, ref };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        this._queue = this._queue.filter((queued) => queued !== frame);
        reject(new RealtimeError("timeout", `no reply to ${fields.op} within ${this.timeout} ms`));
      }, this.timeout);
      this._pending.set(ref, { resolve, reject, timer, frame });
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
 * Follows an SSE endpoint and resumes after the last event seen, sending `Last-Event-ID`.
 *
 * In a browser, `new EventSource(url)` already resends `Last-Event-ID` when it reconnects, but it
 * cannot send an Authorization header (the token goes in `?token=`) and it gives up for good on any
 * answer but a 200 (a 502 while the servers restart, a 401 once the token expired). This helper
 * reads the stream with `fetch` instead, in browsers and Node 20 alike: the token goes in the
 * Authorization header (`token` may be a function, called on each connection for a fresh one), and
 * after any failure it reconnects with full-jitter backoff (the server's `retry:` is the base).
 *
 * @param {string} url
 * @param {object} options
 * @param {(event: {event: string, id: (string|null), data: any}) => void} options.onEvent data is
 *   JSON-decoded when it is JSON
 * @param {string|(() => (string|Promise<string>))} [options.token]
 * @param {string} [options.lastEventId] resume after this id from the start
 * @param {(state: string, detail: string) => void} [options.onStateChange] "connecting", "open",
 *   "reconnecting", "closed"
 * @param {{base?: number, cap?: number}} [options.backoff]
 * @returns {{close: () => void, readonly lastEventId: (string|null)}}
 */
export function follow(url, { onEvent, token = null, lastEventId = null, onStateChange = () => {}, backoff = {}, fetch: fetchImpl = globalThis.fetch } = {}) {
  const delays = { base: 1000, cap: 30000, ...backoff };
  const state = { lastEventId, closed: false, attempt: 0, controller: null, timer: null };

  async function connect() {
    onStateChange("connecting", state.lastEventId ? `resuming after ${state.lastEventId}` : "");
    state.controller = new AbortController();
    const headers = { Accept: "text/event-stream", "Cache-Control": "no-cache" };
    if (state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
    try {
      const value = typeof token === "function" ? await token() : token;
      if (value) headers.Authorization = `Bearer ${value}`;
      const response = await fetchImpl(url, { headers, signal: state.controller.signal });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
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
          if (event.id !== null) state.lastEventId = event.id;
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
      const delay = backoffDelay(state.attempt++, delays);
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
  };
}
