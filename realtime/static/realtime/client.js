// realtime client: JWT login with refresh, a WebSocket and an EventSource that reconnect
// by themselves with jittered exponential backoff, and an event stream that resumes after the
// last event it saw (Last-Event-ID), so a server restart neither loses nor repeats an event.
// A plain ES module: no build step, no dependency.

/** Exponential backoff with "equal jitter": half the delay is fixed, half is random. */
export class Backoff {
  constructor({ base = 500, cap = 10000, factor = 2 } = {}) {
    Object.assign(this, { base, cap, factor, attempt: 0 });
  }
  next() {
    const ceiling = Math.min(this.cap, this.base * this.factor ** this.attempt);
    this.attempt += 1;
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }
  reset() {
    this.attempt = 0;
  }
}

function decodeJwt(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}

/** Access and refresh tokens from /api/auth/token/, kept in sessionStorage (this tab only). */
export class Auth {
  constructor({
    tokenUrl = "/api/auth/token/", refreshUrl = "/api/auth/token/refresh/", logoutUrl = "/api/auth/logout/",
    key = "realtime.tokens",
  } = {}) {
    Object.assign(this, { tokenUrl, refreshUrl, logoutUrl, key });
    this.tokens = JSON.parse(sessionStorage.getItem(key) || "null");
    this.onlogout = null;
    this._refreshing = null;
  }
  get loggedIn() {
    return Boolean(this.tokens && this.tokens.refresh);
  }
  _store(tokens) {
    this.tokens = tokens;
    if (tokens) sessionStorage.setItem(this.key, JSON.stringify(tokens));
    else sessionStorage.removeItem(this.key);
  }
  async login(username, password) {
    const response = await fetch(this.tokenUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `Login failed (${response.status})`);
    this._store({ access: body.access, refresh: body.refresh });
  }
  /**
   * Forget the tokens in this tab and, unless `revoke` is false, tell the server: it blacklists the
   * refresh token and closes this user's connections everywhere. Resolves once the server answered
   * (or could not be reached: the tokens are forgotten either way).
   */
  async logout({ revoke = true } = {}) {
    let access = null;
    if (revoke && this.loggedIn) access = await this.access().catch(() => null); // refreshed if expiring
    const refresh = this.tokens && this.tokens.refresh;
    this._store(null);
    if (this.onlogout) this.onlogout();
    if (!access) return;
    await fetch(this.logoutUrl, {
      method: "POST",
      headers: { Authorization: `Bearer ${access}`, "Content-Type": "application/json" },
      body: JSON.stringify({ refresh }),
      keepalive: true,
    }).catch(() => {});
  }
  /** A valid access token, refreshed first when it expires within 30 s (or when `force`). */
  async access({ force = false } = {}) {
    if (!this.loggedIn) throw new Error("Not logged in");
    const exp = decodeJwt(this.tokens.access).exp || 0;
    if (!force && exp * 1000 - Date.now() > 30000) return this.tokens.access;
    this._refreshing ??= this._refresh().finally(() => (this._refreshing = null));
    return this._refreshing;
  }
  async _refresh() {
    let response;
    try {
      response = await fetch(this.refreshUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh: this.tokens.refresh }),
      });
    } catch (error) {
      throw new Error(`Cannot refresh the token: ${error.message}`); // server away: callers retry
    }
    if (response.status === 401) {
      this.logout({ revoke: false }); // the refresh token itself expired or was revoked
      throw new Error("Session expired");
    }
    if (!response.ok) throw new Error(`Cannot refresh the token (${response.status})`);
    const body = await response.json();
    this._store({ ...this.tokens, ...body });
    return this.tokens.access;
  }
  /** fetch() with the Bearer token; JSON in and out. */
  async fetchJSON(url, { method = "GET", body } = {}) {
    const token = await this.access();
    const response = await fetch(url, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.detail || JSON.stringify(data) || `HTTP ${response.status}`);
      error.status = response.status;
      error.data = data;
      throw error;
    }
    return data;
  }
}

function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** Close codes after which reconnecting cannot help. */
const FINAL_CLOSE_CODES = new Set([1000, 1003, 1007, 1008, 1009, 4003, 4004]);

/** A 4003 whose reason starts with one of these codes refused the token, not the user: refresh and retry. */
const REFRESH_REASON = /^(token_expired|token_not_valid|session_revoked|user_mismatch)\b/;

/** Whether the server refused the token (4003 with a credential reason, or 4001 under STRICT_TOKENS). */
function tokenRefused(event) {
  return event.code === 4001 || (event.code === 4003 && REFRESH_REASON.test(event.reason || ""));
}

/** What both streams share: reconnect after a jittered backoff until closed. */
class Reconnecting {
  _retry(why) {
    if (this.stopped) return;
    const delay = this.backoff.next();
    this.onstatus("reconnecting", `${why}; retrying in ${(delay / 1000).toFixed(1)} s`);
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delay);
  }
}

/**
 * A JSON WebSocket that reconnects by itself. `url()` may be async (it can fetch a fresh token).
 * `onstatus(state, detail)`: state is "connecting", "live", "reconnecting" or "closed".
 */
export class LiveSocket extends Reconnecting {
  constructor({ url, onmessage, onstatus = () => {}, backoff = new Backoff(), watchdog = 45000, onunauthorized }) {
    super();
    Object.assign(this, { url, onmessage, onstatus, backoff, watchdog, onunauthorized });
    this.ws = null;
    this.stopped = false;
    this._timer = null;
    this._dog = null;
    this._connect();
  }
  async _connect() {
    if (this.stopped) return;
    this.onstatus("connecting", this.backoff.attempt ? `attempt ${this.backoff.attempt + 1}` : "");
    let url;
    try {
      url = await this.url();
    } catch (error) {
      return this._retry(error.message);
    }
    if (this.stopped) return;
    const ws = (this.ws = new WebSocket(wsUrl(url)));
    ws.onopen = () => {
      this.onstatus("live", "");
      this._feed();
    };
    ws.onmessage = (event) => {
      this._feed();
      this.backoff.reset(); // data flows: the next outage starts from the shortest delay again
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (data && data.type === "ping") return; // the server's keepalive
      this.onmessage(data);
    };
    ws.onclose = async (event) => {
      clearTimeout(this._dog);
      if (this.ws !== ws || this.stopped) return;
      const refused = tokenRefused(event);
      if (FINAL_CLOSE_CODES.has(event.code) && !refused) {
        this.onstatus("closed", `closed by the server (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
        return;
      }
      if (refused && this.onunauthorized) await this.onunauthorized().catch(() => {});
      this._retry(`connection lost (${event.code})`);
    };
  }
  _feed() {
    // Nothing for `watchdog` ms (not even a keepalive ping): the connection is dead, drop it.
    clearTimeout(this._dog);
    this._dog = setTimeout(() => this.ws && this.ws.close(), this.watchdog);
  }
  close() {
    this.stopped = true;
    clearTimeout(this._timer);
    clearTimeout(this._dog);
    if (this.ws) this.ws.close(1000);
    this.onstatus("closed", "");
  }
}

/**
 * An EventSource that resumes. The browser's own reconnection stops for good on any non-200 answer
 * (a 502 from a proxy while the server restarts, a 401 once the token expired), so on every error
 * this closes it and opens a new one after a jittered backoff, with a fresh token and
 * `?lastEventId=<the last id seen>`: the server replays exactly the events after it.
 * `url(lastEventId)` may be async. `handlers` maps event names to functions of (data, event).
 * Events named in `unique` are also dropped if their id was seen already (`duplicates` counts them).
 */
export class ResumableEvents extends Reconnecting {
  constructor({ url, handlers, onstatus = () => {}, backoff = new Backoff(), lastEventId = null, unique = [] }) {
    super();
    Object.assign(this, { url, handlers, onstatus, backoff, lastEventId });
    // Event names whose ids are never repeated: a second delivery of one is dropped and counted.
    this.unique = new Set(unique);
    this.seen = new Set();
    this.duplicates = 0;
    this.source = null;
    this.stopped = false;
    this._timer = null;
    this._connect();
  }
  async _connect() {
    if (this.stopped) return;
    this.onstatus("connecting", this.lastEventId ? `resuming after ${this.lastEventId}` : "");
    let url;
    try {
      url = await this.url(this.lastEventId);
    } catch (error) {
      return this._retry(error.message);
    }
    if (this.stopped) return;
    const source = (this.source = new EventSource(url));
    source.onopen = () => {
      this.onstatus("live", this.lastEventId ? `resumed after ${this.lastEventId}` : "");
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this.backoff.reset(), 3000); // stayed up: reset the backoff
    };
    for (const [name, handler] of Object.entries(this.handlers)) {
      source.addEventListener(name, (event) => {
        if (this.unique.has(name) && event.lastEventId) {
          if (this.seen.has(event.lastEventId)) {
            this.duplicates += 1;
            return;
          }
          this.seen.add(event.lastEventId);
          if (this.seen.size > 5000) this.seen.delete(this.seen.values().next().value);
        }
        if (event.lastEventId) this.lastEventId = event.lastEventId;
        let data = event.data;
        try {
          data = JSON.parse(event.data);
        } catch {
          /* plain text */
        }
        handler(data, event);
      });
    }
    source.onerror = () => {
      if (this.source !== source) return;
      source.close(); // take over from the browser's retry: it gives up on non-200 answers
      this._retry("stream interrupted");
    };
  }
  close() {
    this.stopped = true;
    clearTimeout(this._timer);
    if (this.source) this.source.close();
    this.onstatus("closed", "");
  }
}
