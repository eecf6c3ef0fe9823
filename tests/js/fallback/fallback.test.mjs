// realtime.js behind a proxy that refuses WebSocket upgrades: the fallback binding (SSE down, POST
// up) against a real daphne, started by tests/test_js_fallback.py, which passes in the environment:
//   RT_SERVER    http://127.0.0.1:<port> (tests/topicsapp: TopicSocket /api/t14/ws, registered with register_topics)
//   RT_PASSWORD  the test users' password
// The proxy here forwards every HTTP request to daphne and answers every upgrade 403, as a corporate
// proxy that strips WebSockets does.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";
import WebSocket from "ws";

import { Realtime } from "../../../realtime/static/realtime/realtime.js";
import { until } from "../fake-server.mjs";

const SERVER = process.env.RT_SERVER;
const PASSWORD = process.env.RT_PASSWORD;
if (!SERVER) throw new Error("run through tests/test_js_fallback.py: RT_SERVER is unset");
const RUN = Date.now().toString(36);
const clients = [];
let proxy;
let proxyUrl;
let upgradesRefused = 0;

before(async () => {
  const upstream = new URL(SERVER);
  proxy = http.createServer((req, res) => {
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.destroy());
    res.on("close", () => forward.destroy()); // the client left: so does the stream to daphne
    req.pipe(forward);
  });
  proxy.on("upgrade", (req, socket) => {
    upgradesRefused += 1;
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  proxyUrl = `ws://127.0.0.1:${proxy.address().port}`;
});

after(async () => {
  for (const rt of clients) rt.close();
  proxy.closeAllConnections();
  await new Promise((resolve) => proxy.close(resolve));
});

async function token(username) {
  const response = await fetch(`${SERVER}/api/auth/token/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(response.status, 200, `login of ${username}`);
  return (await response.json()).access;
}

function client(username, options = {}) {
  const calls = { getToken: 0, states: [] };
  const rt = new Realtime(`${proxyUrl}/api/t14/ws`, {
    WebSocket,
    getToken: () => {
      calls.getToken += 1;
      return token(username);
    },
    backoff: { base: 100, cap: 500 },
    onStateChange: (state, detail) => calls.states.push([state, detail]),
    ...options,
  });
  clients.push(rt);
  return { rt, calls };
}

test("a client whose WebSocket upgrade is refused subscribes, receives, publishes and sees presence", async () => {
  const room = `lobby:fb-${RUN}`;
  const { rt: alice } = client("plain");
  const got = [];
  const joined = [];
  alice.subscribe(room, { onMessage: (data) => got.push(data), onJoin: (member) => joined.push(member.id) });
  await until(() => alice.isOpen && alice.subscriptions.get(room).state === "joined", "alice joined");
  assert.equal(alice.transport, "fallback");
  assert.ok(upgradesRefused >= 1, "the proxy refused the upgrade");

  const { rt: bob } = client("staff");
  const bobGot = [];
  bob.subscribe(room, { onMessage: (data) => bobGot.push(data) });
  await until(() => bob.isOpen && bob.subscriptions.get(room).state === "joined", "bob joined");
  await until(() => joined.length === 2, "alice sees both members");
  assert.deepEqual(new Set(joined).size, 2);
  const members = await alice.presence(room);
  assert.equal(members.length, 2);

  const { id } = await alice.publish(room, "hello");
  assert.ok(id);
  await bob.publish(room, "hi alice");
  await until(() => got.length === 2 && bobGot.length === 2, "both messages both ways");
  assert.deepEqual(got, [{ from: "plain", said: "hello" }, { from: "staff", said: "hi alice" }]);
  assert.deepEqual(bobGot, got);

  bob.close(); // its stream ends: the server ends the session and bob leaves presence
  await until(async () => (await alice.presence(room)).length === 1, "bob left with his stream");
});

test("a dropped fallback session resumes after its last id, each message once", async () => {
  const room = `lobby:resume-${RUN}`;
  const { rt: reader, calls } = client("subscriber");
  const got = [];
  reader.subscribe(room, { onMessage: (data) => got.push(data.said) });
  const { rt: writer } = client("plain");
  writer.subscribe(room);
  await until(() => [reader, writer].every((rt) => rt.isOpen && rt.subscriptions.get(room).state === "joined"), "joined");
  await writer.publish(room, "one");
  await until(() => got.length === 1, "one");

  const gaps = [];
  reader.subscriptions.get(room).handlers.onGap = (gap) => gaps.push(gap);
  reader.ws.close(4000, "dropped by the test"); // the session ends with its stream
  await writer.publish(room, "two");
  await writer.publish(room, "three");
  await until(() => got.length === 3, "two and three after the resume");
  await writer.publish(room, "four");
  await until(() => got.length === 4, "four live");
  assert.deepEqual(got, ["one", "two", "three", "four"]);
  assert.deepEqual(gaps, []);
  assert.equal(reader.transport, "fallback");
  assert.ok(calls.states.some(([state]) => state === "reconnecting"));
});

test("the token is refreshed in-band over the fallback, without a reconnection", async () => {
  const { rt, calls } = client("editor", { refreshBefore: 24 * 3600 * 1000 }); // refresh 1 s after connecting
  await until(() => rt.isOpen, "open");
  const reconnects = () => calls.states.filter(([state]) => state === "reconnecting").length;
  const before = reconnects();
  const firstCalls = calls.getToken;
  await until(() => calls.getToken >= firstCalls + 2, "two refreshes", 10000);
  await rt.ping();
  assert.equal(rt.transport, "fallback");
  assert.equal(reconnects(), before, "no reconnection for the refresh");
  assert.ok(rt.isOpen);
});

test("a WebSocket that does not open within openTimeout gives way to the fallback", async () => {
  // An upgrade that hangs (a proxy that holds it): the socket never opens nor closes by itself.
  class HangingSocket {
    constructor() {
      this.readyState = 0;
      HangingSocket.made += 1;
    }

    send() {
      throw new Error("not open");
    }

    close(code = 1000, reason = "") {
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code: 1006, reason }), 0);
    }
  }
  HangingSocket.made = 0;
  const rt = new Realtime(`${SERVER.replace(/^http/, "ws")}/api/t14/ws`, {
    WebSocket: HangingSocket,
    getToken: () => token("plain"),
    openTimeout: 300,
  });
  clients.push(rt);
  const started = Date.now();
  await until(() => rt.isOpen, "open over the fallback");
  assert.ok(Date.now() - started >= 300, "the WebSocket had its openTimeout");
  assert.equal(HangingSocket.made, 1);
  assert.equal(rt.transport, "fallback");
  const channel = `open:hang-${RUN}`;
  const got = [];
  rt.subscribe(channel, { onMessage: (data) => got.push(data) });
  await until(() => rt.subscriptions.get(channel).state === "joined", "joined");
  await rt.publish(channel, { n: 1 });
  await until(() => got.length === 1, "its own message");
  assert.deepEqual(got, [{ n: 1 }]);
});
