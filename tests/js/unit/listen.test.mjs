// Unit tests of listen(): one plain WebSocketView, against an in-process `ws` server whose behaviour
// each test scripts (what it sends on connect, how it closes).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";

import { FINAL_CLOSE_CODES, listen, tokenRefused } from "../../../realtime/static/realtime/realtime.js";
import { until } from "../fake-server.mjs";

const FAST = { base: 20, cap: 100 };

/** A WebSocket server; `onConnection(ws, url, number)` is set by each test. */
class ViewServer {
  async start() {
    this.wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await new Promise((resolve) => this.wss.once("listening", resolve));
    this.urls = [];
    this.received = [];
    this.onConnection = () => {};
    this.wss.on("connection", (ws, request) => {
      const url = new URL(request.url, "http://x");
      this.urls.push(url);
      ws.on("message", (text) => this.received.push(JSON.parse(text.toString())));
      this.onConnection(ws, url, this.urls.length);
    });
    return this;
  }

  url(path = "/ws/view") {
    return `ws://127.0.0.1:${this.wss.address().port}${path}`;
  }

  async stop() {
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise((resolve) => this.wss.close(resolve));
  }
}

describe("listen (one WebSocketView)", () => {
  let server;
  const open = [];
  before(async () => {
    server = await new ViewServer().start();
  });
  after(async () => {
    for (const socket of open) socket.close();
    await server.stop();
  });

  function start(options) {
    const states = [];
    const socket = listen(server.url(), {
      WebSocket,
      backoff: FAST,
      onStateChange: (state, detail) => states.push([state, detail]),
      ...options,
    });
    open.push(socket);
    return { socket, states };
  }

  test("tokenRefused: 4001, or 4003 with a credential reason; FINAL_CLOSE_CODES are realtime's", () => {
    const table = [
      [4001, "", true],
      [4003, "token_expired: Token is expired", true],
      [4003, "session_revoked", true],
      [4003, "token_not_valid: bad signature", true],
      [4003, "user_mismatch", true],
      [4003, "Role 'editor' required", false],
      [4003, "user_inactive: User is inactive", false],
      [1011, "token_expired", false],
    ];
    for (const [code, reason, refused] of table) assert.equal(tokenRefused({ code, reason }), refused, `${code} ${reason}`);
    assert.deepEqual([...FINAL_CLOSE_CODES], [1000, 1003, 1007, 1008, 1009, 4003]);
  });

  test("the token goes in ?token=, messages are JSON-decoded, the keepalive ping is not passed on", async () => {
    server.onConnection = (ws) => {
      ws.send('{"type":"ping"}');
      ws.send(JSON.stringify({ price: 1 }));
      ws.send('{"type":"ping","extra":1}'); // not the keepalive: only {"type": "ping"} alone is
      ws.send("plain text");
    };
    const got = [];
    const calls = [];
    const { socket, states } = start({
      token: (hint) => {
        calls.push(hint);
        return "tok en";
      },
      onMessage: (data) => got.push(data),
    });
    await until(() => got.length === 3, "three messages");
    assert.deepEqual(got, [{ price: 1 }, { type: "ping", extra: 1 }, "plain text"]);
    assert.equal(server.urls.at(-1).searchParams.get("token"), "tok en");
    assert.equal(server.urls.at(-1).pathname, "/ws/view");
    assert.deepEqual(calls, [{ refused: false }]);
    assert.deepEqual(states.map(([state]) => state), ["connecting", "open"]);
    assert.equal(socket.state, "open");
    socket.close();
    assert.equal(socket.state, "closed");
  });

  test("send() JSON-encodes while open and says false otherwise; close() stops reconnecting", async () => {
    server.onConnection = () => {};
    const { socket, states } = start({ onMessage: () => {} });
    assert.equal(socket.send({ early: true }), false);
    await until(() => socket.state === "open", "the socket open");
    assert.equal(socket.send({ n: 1 }), true);
    await until(() => server.received.some((frame) => frame.n === 1), "the frame on the server");
    const connections = server.urls.length;
    socket.close();
    assert.equal(socket.send({ n: 2 }), false);
    await new Promise((resolve) => setTimeout(resolve, 300)); // several backoff periods: nothing happens
    assert.equal(server.urls.length, connections);
    assert.deepEqual(states.at(-1), ["closed", ""]);
  });

  test("after a drop it reconnects with backoff and a fresh token, and goes on delivering", async () => {
    let tokens = 0;
    server.onConnection = (ws, url, number) => {
      ws.send(JSON.stringify({ connection: number, token: url.searchParams.get("token") }));
      if (url.searchParams.get("token") === "t1") setTimeout(() => ws.terminate(), 20); // a restart
    };
    const got = [];
    const { socket, states } = start({ token: async () => `t${++tokens}`, onMessage: (data) => got.push(data) });
    await until(() => got.length === 2, "a message from each connection");
    assert.deepEqual(got.map((m) => m.token), ["t1", "t2"]);
    const names = states.map(([state]) => state);
    assert.deepEqual(names, ["connecting", "open", "reconnecting", "connecting", "open"]);
    assert.match(states[2][1], /^connection lost \(1006\); retrying in \d+\.\d s$/);
    socket.close();
  });

  test("a refused token (4003 token_expired, 4001) asks for a fresh one with refused: true", async () => {
    server.onConnection = (ws, url) => {
      const token = url.searchParams.get("token");
      if (token === "old") ws.close(4003, "token_expired: Token is expired");
      else if (token === "strict") ws.close(4001, "token_not_valid");
      else ws.send(JSON.stringify({ ok: token }));
    };
    const hints = [];
    const issued = ["old", "strict", "fresh"];
    const got = [];
    const { socket } = start({
      token: ({ refused }) => {
        hints.push(refused);
        return issued.shift();
      },
      onMessage: (data) => got.push(data),
    });
    await until(() => got.length === 1, "the message on the fresh token");
    assert.deepEqual(got, [{ ok: "fresh" }]);
    assert.deepEqual(hints, [false, true, true]);
    socket.close();
  });

  test("a refused token that cannot be replaced (a string) closes for good", async () => {
    server.onConnection = (ws) => ws.close(4003, "session_revoked");
    const { socket, states } = start({ token: "fixed", onMessage: () => {} });
    await until(() => socket.state === "closed", "closed");
    assert.deepEqual(states.at(-1), ["closed", "closed by the server (4003: session_revoked)"]);
  });

  test("final close codes stop it: a permission's 4003, 1000, and the view's own finalCodes; 1011 retries", async () => {
    const cases = [
      [4003, "Role 'editor' required", [], "closed"],
      [1000, "", [], "closed"],
      [1008, "Rate limit exceeded", [], "closed"],
      [4004, "Unknown symbol", [4004], "closed"],
      [4004, "Unknown symbol", [], "reconnecting"],
      [1011, "Internal error", [], "reconnecting"],
      [1012, "", [], "reconnecting"],
    ];
    // Full jitter may draw a delay near 0 and reconnect before the count below is read:
    // pin the draw to the top of the range so a retrying case waits its whole 5 s.
    const random = Math.random;
    Math.random = () => 0.999;
    try {
      for (const [code, reason, finalCodes, expected] of cases) {
        await closesAs(code, reason, finalCodes, expected);
      }
    } finally {
      Math.random = random;
    }

    async function closesAs(code, reason, finalCodes, expected) {
      server.onConnection = (ws) => ws.close(code, reason);
      const before = server.urls.length;
      const { socket, states } = start({ token: () => "tok", onMessage: () => {}, finalCodes, backoff: { base: 5000, cap: 5000 } });
      await until(() => states.some(([state]) => state === "closed" || state === "reconnecting"), `${code} handled`);
      const [state, detail] = states.at(-1);
      assert.equal(state, expected, `${code} ${reason}: ${detail}`);
      assert.ok(detail.includes(`${code}${reason ? `: ${reason}` : ""}`), detail);
      assert.equal(server.urls.length, before + 1);
      socket.close();
    }
  });

  test("a socket silent for longer than the watchdog is dropped and opened again", async () => {
    const first = server.urls.length + 1;
    server.onConnection = (ws, url, number) => {
      if (number === first) return; // this one says nothing at all: a dead connection
      ws.send(JSON.stringify({ alive: number }));
    };
    const got = [];
    const { socket, states } = start({ watchdog: 150, onMessage: (data) => got.push(data) });
    await until(() => got.length === 1, "a message on the next connection");
    assert.ok(states.some(([state, detail]) => state === "reconnecting" && detail.startsWith("no message for")), JSON.stringify(states));
    socket.close();
  });

  test("a message keeps the watchdog fed (the view's keepalive is a message too)", async () => {
    server.onConnection = (ws) => {
      const timer = setInterval(() => ws.readyState === ws.OPEN && ws.send('{"type":"ping"}'), 40);
      ws.on("close", () => clearInterval(timer));
    };
    const first = server.urls.length;
    // a watchdog 12 pings long, watched for three of its periods: a loaded machine (CI runs this beside
    // the Python suite) can stall a 40 ms timer past 150 ms, which is not what this test is about
    const { socket, states } = start({ watchdog: 500, onMessage: () => {} });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(server.urls.length, first + 1);
    assert.deepEqual(states.map(([state]) => state), ["connecting", "open"]);
    socket.close();
  });

  test("a relative URL outside a browser and a missing WebSocket are TypeErrors", () => {
    assert.throws(() => listen("/api/ws", { WebSocket, onMessage() {} }), TypeError);
    if (!globalThis.WebSocket) assert.throws(() => listen(server.url(), { onMessage() {} }), TypeError); // Node 20
  });
});
