// Unit tests of Auth against an in-process HTTP server that answers as simplejwt's views and
// realtime's LogoutView do (token pair, refresh with rotation and blacklisting, logout).
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, beforeEach, describe, test } from "node:test";

import { Auth, RealtimeError } from "../../../realtime/static/realtime/realtime.js";
import { fakeToken } from "../fake-server.mjs";

const HOUR = 3600;

class AuthServer {
  constructor() {
    this.requests = [];
    this.accessLifetime = HOUR; // seconds
    this.blacklisted = new Set();
    this.serial = 0;
  }

  async start() {
    this.server = http.createServer((request, response) => this._handle(request, response));
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return this;
  }

  url(path) {
    return `http://127.0.0.1:${this.server.address().port}${path}`;
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  pair() {
    this.serial += 1;
    return { access: fakeToken(5, Math.floor(Date.now() / 1000) + this.accessLifetime), refresh: `refresh-${this.serial}` };
  }

  count(path) {
    return this.requests.filter((r) => r.path === path).length;
  }

  _handle(request, response) {
    let text = "";
    request.on("data", (chunk) => (text += chunk));
    request.on("end", () => {
      const body = text ? JSON.parse(text) : null;
      const path = new URL(request.url, "http://x").pathname;
      this.requests.push({ path, method: request.method, body, authorization: request.headers.authorization ?? null });
      const answer = (status, data) => {
        response.writeHead(status, { "Content-Type": "application/json" });
        response.end(JSON.stringify(data));
      };
      switch (path) {
        case "/api/auth/token/":
          if (body.password !== "right") return answer(401, { detail: "No active account found with the given credentials", code: "no_active_account" });
          return answer(200, this.pair());
        case "/api/auth/token/refresh/": {
          if (this.blacklisted.has(body.refresh)) return answer(401, { detail: "Token is blacklisted", code: "token_not_valid" });
          this.blacklisted.add(body.refresh); // ROTATE_REFRESH_TOKENS + BLACKLIST_AFTER_ROTATION
          return answer(200, this.pair());
        }
        case "/api/auth/logout/":
          this.blacklisted.add(body.refresh);
          return answer(200, { detail: "Logged out", refresh_blacklisted: true });
        case "/api/orders":
          if (!request.headers.authorization) return answer(401, { detail: "Authentication credentials were not provided." });
          if (body.amount <= 0) return answer(400, { amount: ["Ensure this value is greater than 0."] });
          return answer(201, { ok: true, sent: body });
        case "/api/down":
          return answer(503, { detail: "The market is unavailable", code: "broker_unavailable" });
        default:
          return answer(404, {});
      }
    });
  }
}

/** An in-memory Storage, shared by the Auth objects of one "tab". */
function storage() {
  const items = new Map();
  return { items, getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, v), removeItem: (k) => items.delete(k) };
}

describe("Auth", () => {
  let server;
  let tab;
  before(async () => {
    server = await new AuthServer().start();
  });
  after(async () => {
    await server.stop();
  });
  beforeEach(() => {
    server.requests = [];
    server.accessLifetime = HOUR;
    tab = storage();
  });

  function auth(options = {}) {
    return new Auth({
      tokenUrl: server.url("/api/auth/token/"),
      refreshUrl: server.url("/api/auth/token/refresh/"),
      logoutUrl: server.url("/api/auth/logout/"),
      storage: tab,
      ...options,
    });
  }

  test("login keeps the pair in the tab's storage, so a reload is still logged in", async () => {
    const first = auth();
    assert.equal(first.loggedIn, false);
    await first.login("ada", "right");
    assert.equal(first.loggedIn, true);
    assert.deepEqual(server.requests[0].body, { username: "ada", password: "right" });
    assert.deepEqual(JSON.parse(tab.items.get("realtime.tokens")), first.tokens);
    const reloaded = auth();
    assert.equal(reloaded.loggedIn, true);
    assert.equal(await reloaded.access(), first.tokens.access);
    assert.equal(server.count("/api/auth/token/refresh/"), 0);
  });

  test("a refused login rejects with the server's code, detail and status, and keeps nothing", async () => {
    const a = auth();
    await assert.rejects(a.login("ada", "wrong"), (error) => {
      assert.ok(error instanceof RealtimeError);
      assert.equal(error.code, "no_active_account");
      assert.equal(error.detail, "No active account found with the given credentials");
      assert.equal(error.status, 401);
      return true;
    });
    assert.equal(a.loggedIn, false);
    assert.equal(tab.items.size, 0);
  });

  test("access() refreshes a token close to its exp, once for concurrent callers, keeping the rotated refresh", async () => {
    server.accessLifetime = 10; // within refreshBefore (30 s)
    const a = auth();
    await a.login("ada", "right");
    const before = a.tokens;
    server.accessLifetime = HOUR;
    const tokens = await Promise.all([a.access(), a.access(), a.access()]);
    assert.equal(server.count("/api/auth/token/refresh/"), 1);
    assert.deepEqual(server.requests.at(-1).body, { refresh: before.refresh });
    assert.ok(tokens.every((token) => token === a.tokens.access && token !== before.access));
    assert.notEqual(a.tokens.refresh, before.refresh);
    assert.deepEqual(JSON.parse(tab.items.get("realtime.tokens")), a.tokens);
    assert.equal(await a.access(), a.tokens.access); // far from exp now: no refresh
    assert.equal(server.count("/api/auth/token/refresh/"), 1);
    await a.access({ force: true });
    assert.equal(server.count("/api/auth/token/refresh/"), 2);
  });

  test("a refresh token the server refuses logs out: session_expired, onLogout, tokens gone", async () => {
    let logouts = 0;
    const a = auth({ onLogout: () => logouts++ });
    await a.login("ada", "right");
    server.blacklisted.add(a.tokens.refresh);
    await assert.rejects(a.access({ force: true }), (error) => error.code === "session_expired");
    assert.equal(a.loggedIn, false);
    assert.equal(logouts, 1);
    assert.equal(tab.items.size, 0);
    assert.equal(server.count("/api/auth/logout/"), 0); // nothing to revoke
    await assert.rejects(a.access(), (error) => error.code === "not_logged_in");
  });

  test("logout() sends the refresh token with the Bearer access for the server to blacklist", async () => {
    let logouts = 0;
    const a = auth({ onLogout: () => logouts++ });
    await a.login("ada", "right");
    const { access, refresh } = a.tokens;
    await a.logout();
    const request = server.requests.at(-1);
    assert.equal(request.path, "/api/auth/logout/");
    assert.equal(request.authorization, `Bearer ${access}`);
    assert.deepEqual(request.body, { refresh });
    assert.equal(a.loggedIn, false);
    assert.equal(logouts, 1);
    assert.equal(tab.items.size, 0);
    assert.ok(server.blacklisted.has(refresh));
  });

  test("logout({revoke: false}) only forgets; a server out of reach does not keep the tokens", async () => {
    const a = auth();
    await a.login("ada", "right");
    await a.logout({ revoke: false });
    assert.equal(server.count("/api/auth/logout/"), 0);
    assert.equal(a.loggedIn, false);

    const away = auth({ logoutUrl: "http://127.0.0.1:1/api/auth/logout/" });
    await away.login("ada", "right");
    await away.logout(); // resolves: the tokens are forgotten either way
    assert.equal(away.loggedIn, false);
  });

  test("fetchJSON: Bearer and JSON; a refusal rejects with status, data and a readable detail", async () => {
    const a = auth();
    await a.login("ada", "right");
    assert.deepEqual(await a.fetchJSON(server.url("/api/orders"), { method: "POST", body: { amount: 3 } }), { ok: true, sent: { amount: 3 } });
    assert.equal(server.requests.at(-1).authorization, `Bearer ${a.tokens.access}`);
    await assert.rejects(a.fetchJSON(server.url("/api/orders"), { method: "POST", body: { amount: 0 } }), (error) => {
      assert.equal(error.status, 400);
      assert.equal(error.code, "http_400");
      assert.deepEqual(error.data, { amount: ["Ensure this value is greater than 0."] });
      assert.equal(error.detail, JSON.stringify(error.data));
      return true;
    });
    await assert.rejects(a.fetchJSON(server.url("/api/down")), (error) => error.code === "broker_unavailable" && error.status === 503);
  });

  test("a server out of reach is RealtimeError unreachable; without sessionStorage tokens live in memory", async () => {
    const away = new Auth({ tokenUrl: "http://127.0.0.1:1/api/auth/token/" });
    await assert.rejects(away.login("ada", "right"), (error) => error instanceof RealtimeError && error.code === "unreachable");
    const memory = new Auth({ tokenUrl: server.url("/api/auth/token/") }); // Node: no sessionStorage
    await memory.login("ada", "right");
    assert.equal(memory.loggedIn, true);
  });
});
