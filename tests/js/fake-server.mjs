// A tiny in-process server speaking protocol v1 (docs/protocol.md), for the client's unit tests.
// It is not the real server: the end-to-end tests in e2e/ run realtime.js against daphne.
import { WebSocketServer } from "ws";

/** A JWT-shaped token (unsigned: the fake trusts it) for `user`, expiring at `exp` (seconds). */
export function fakeToken(user, exp = Math.floor(Date.now() / 1000) + 3600) {
  const encode = (object) => Buffer.from(JSON.stringify(object)).toString("base64url");
  return `${encode({ alg: "none" })}.${encode({ user_id: user, exp })}.sig`;
}

function decode(token) {
  try {
    return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
  } catch {
    return null;
  }
}

export class FakeServer {
  /**
   * @param {object} [options]
   * @param {(channel: string, user: (number|null)) => (string|null)} [options.deny] an error code to refuse with
   * @param {Set<string>} [options.silent] ops the server never answers (to test timeouts)
   */
  constructor({ deny = (channel) => (channel.startsWith("secret:") ? "forbidden" : null), silent = new Set(), snapshot = null } = {}) {
    this.deny = deny;
    /** `(channel) => ({data, last_id}) | null`: a topic's snapshot, sent as TopicSocket does. */
    this.snapshot = snapshot;
    this.silent = silent;
    /** Every frame received, with the connection's number: [{conn, frame}]. */
    this.received = [];
    /** URLs and subprotocols of the upgrades. */
    this.upgrades = [];
    /** Upgrades answered 503 while shutting down. */
    this.refusals = 0;
    this.history = new Map(); // channel -> [{id, data}]
    this.nextId = 1;
    this.connections = new Set();
  }

  async start() {
    this.down = false;
    this.wss = new WebSocketServer({
      port: 0,
      host: "127.0.0.1",
      handleProtocols: (protocols) => [...protocols][0] ?? false,
      verifyClient: (info, done) => {
        if (!this.shuttingDown) return done(!this.down, 401);
        this.refusals += 1;
        done(false, 503, "Service Unavailable", { "Retry-After": "5" });
      },
    });
    await new Promise((resolve) => this.wss.once("listening", resolve));
    this.wss.on("connection", (ws, request) => this._accept(ws, request));
    return this;
  }

  get url() {
    return `ws://127.0.0.1:${this.wss.address().port}/ws`;
  }

  async stop() {
    for (const conn of this.connections) conn.ws.terminate();
    await new Promise((resolve) => this.wss.close(resolve));
  }

  /** Drops every connection at once, as a server restart does. */
  dropAll() {
    for (const conn of this.connections) conn.ws.terminate();
  }

  /** Closes every connection with `code` and `reason`, as the server's revocation does. */
  closeAll(code, reason) {
    for (const conn of this.connections) conn.ws.close(code, reason);
  }

  /** Drops every connection and refuses new ones until `up()`: a server that is away. */
  goDown() {
    this.down = true;
    this.dropAll();
  }

  up() {
    this.down = false;
    this.shuttingDown = false;
  }

  /** As realtime's SIGTERM: every connection closed with 1001, new upgrades answered 503 + Retry-After, until `up()`. */
  shutDown() {
    this.shuttingDown = true;
    this.closeAll(1001, "Server shutting down");
  }

  /** Publishes from the server side; returns the id. */
  publish(channel, data) {
    const id = String(this.nextId++);
    const entries = this.history.get(channel) ?? [];
    entries.push({ id, data });
    this.history.set(channel, entries);
    for (const conn of this.connections) {
      if (conn.channels.has(channel)) conn.send({ op: "message", channel, id, data });
    }
    return id;
  }

  /** Ends `channel` on every connection with an `unsubscribed` frame, as a permission re-check does. */
  unsubscribe(channel, reason) {
    for (const conn of this.connections) {
      if (conn.channels.delete(channel)) conn.send({ op: "unsubscribed", channel, reason });
    }
  }

  frames(op) {
    return this.received.filter((entry) => entry.frame.op === op);
  }

  members(channel) {
    const byUser = new Map();
    for (const conn of this.connections) {
      if (conn.user === null || !conn.channels.has(channel)) continue;
      const member = byUser.get(conn.user) ?? { id: conn.user, info: { name: `user${conn.user}` }, connections: 0 };
      member.connections += 1;
      byUser.set(conn.user, member);
    }
    return [...byUser.values()];
  }

  _broadcastPresence(channel, op, user, except) {
    const member = this.members(channel).find((m) => m.id === user) ?? { id: user, info: { name: `user${user}` }, connections: 0 };
    if ((op === "join" && member.connections !== 1) || (op === "leave" && member.connections !== 0)) return;
    for (const conn of this.connections) {
      if (conn !== except && conn.channels.has(channel)) conn.send({ op, channel, member });
    }
  }

  _accept(ws, request) {
    const conn = { ws, user: null, channels: new Set(), number: this.upgrades.length };
    conn.send = (frame) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(frame));
    this.upgrades.push({ url: request.url, protocol: ws.protocol });
    this.connections.add(conn);
    ws.on("close", () => {
      this.connections.delete(conn);
      for (const channel of conn.channels) if (conn.user !== null) this._broadcastPresence(channel, "leave", conn.user);
    });
    ws.on("message", (text) => {
      const frame = JSON.parse(text.toString());
      this.received.push({ conn: conn.number, frame });
      if (this.silent.has(frame.op)) return;
      const ok = (data = {}) => conn.send({ op: "reply", ref: frame.ref, ok: true, data });
      const error = (code, detail = "") => conn.send({ op: "reply", ref: frame.ref, ok: false, error: { code, detail } });
      const { channel } = frame;
      switch (frame.op) {
        case "connect": {
          const payload = decode(frame.token);
          if (!payload) return error("token_not_valid");
          if (payload.exp * 1000 < Date.now()) return error("token_expired");
          conn.user = payload.user_id;
          conn.channels.add(`user:${conn.user}`); // as TopicSocket.auto_subscribe does
          return ok({ v: 1, user: conn.user, exp: payload.exp, channels: [`user:${conn.user}`] });
        }
        case "refresh": {
          const payload = decode(frame.token);
          if (!payload || payload.user_id !== conn.user) return error("user_mismatch");
          return ok({ exp: payload.exp });
        }
        case "ping":
          return ok();
        case "subscribe": {
          const refused = this.deny(channel, conn.user);
          if (refused) return error(refused, `no access to ${channel}`);
          if (conn.channels.has(channel)) return error("already_subscribed");
          const entries = this.history.get(channel) ?? [];
          const newest = entries.length ? entries[entries.length - 1].id : null;
          let replay = [];
          let recovered = true;
          if (frame.last_id !== undefined) {
            const index = entries.findIndex((entry) => entry.id === frame.last_id);
            if (index === -1 && entries.length) recovered = false;
            else replay = entries.slice(index + 1);
          }
          const snapshot = this.snapshot && (frame.last_id === undefined || !recovered) ? this.snapshot(channel) : null;
          let reply = { channel, recovered, last_id: newest };
          if (snapshot) {
            // The messages after the snapshot's id follow it (TopicSocket's seam).
            replay = entries.slice(entries.findIndex((entry) => entry.id === snapshot.last_id) + 1);
            reply = { ...reply, last_id: replay.length ? newest : snapshot.last_id, snapshot };
          }
          conn.channels.add(channel);
          ok(reply);
          for (const entry of replay) conn.send({ op: "message", channel, id: entry.id, data: entry.data });
          if (conn.user !== null) this._broadcastPresence(channel, "join", conn.user, conn);
          return;
        }
        case "unsubscribe":
          if (!conn.channels.delete(channel)) return error("not_subscribed");
          if (conn.user !== null) this._broadcastPresence(channel, "leave", conn.user);
          return ok();
        case "publish": {
          if (!conn.channels.has(channel)) return error("not_subscribed");
          return ok({ id: this.publish(channel, frame.data) });
        }
        case "presence":
          if (!conn.channels.has(channel)) return error("not_subscribed");
          return ok({ members: this.members(channel) });
        default:
          return error("unknown_op");
      }
    });
  }
}

/** Resolves when `predicate()` holds, polling; rejects after `timeout` ms with `what`. */
export async function until(predicate, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
