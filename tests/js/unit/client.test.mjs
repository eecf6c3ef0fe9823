// Unit tests of realtime.js against the in-process fake server (protocol replies only).
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import {
  Realtime,
  RealtimeError,
  backoffDelay,
  follow,
  jwtPayload,
  parseEventStream,
  websocketUrl,
} from "../../../realtime/static/realtime/realtime.js";
import { FakeServer, fakeToken, until } from "../fake-server.mjs";

const FAST = { base: 20, cap: 200 };

function client(server, options = {}) {
  return new Realtime(server.url, { WebSocket, backoff: FAST, heartbeat: 0, ...options });
}

describe("pure functions", () => {
  test("backoffDelay is full jitter below the exponential ceiling, capped", () => {
    const table = [
      // attempt, random, expected
      [0, 0, 0],
      [0, 0.5, 250],
      [1, 0.5, 500],
      [3, 0.999, 3996],
      [20, 0.5, 15000], // capped at 30000
      [1000, 0.999, 29970],
    ];
    for (const [attempt, random, expected] of table) {
      assert.equal(backoffDelay(attempt, { base: 500, cap: 30000 }, () => random), expected, `attempt ${attempt}`);
    }
    for (let attempt = 0; attempt < 12; attempt++) {
      const delay = backoffDelay(attempt);
      assert.ok(delay >= 0 && delay < Math.min(30000, 500 * 2 ** attempt));
    }
  });

  test("jwtPayload decodes the payload, {} for what is not a JWT", () => {
    assert.equal(jwtPayload(fakeToken(7, 1234)).exp, 1234);
    assert.equal(jwtPayload(fakeToken(7)).user_id, 7);
    assert.deepEqual(jwtPayload("nope"), {});
    assert.deepEqual(jwtPayload(""), {});
  });

  test("websocketUrl: ws(s) kept, http(s) mapped, relative resolved against the page, else TypeError", () => {
    assert.equal(websocketUrl("ws://h:1/ws"), "ws://h:1/ws");
    assert.equal(websocketUrl("https://h/api/realtime/ws"), "wss://h/api/realtime/ws");
    assert.equal(websocketUrl("http://h/ws?x=1"), "ws://h/ws?x=1");
    assert.throws(() => new Realtime("/api/realtime/ws", { WebSocket }), TypeError);
    globalThis.location = new URL("https://example.com/demo/");
    try {
      assert.equal(websocketUrl("/api/realtime/ws"), "wss://example.com/api/realtime/ws");
    } finally {
      delete globalThis.location;
    }
  });

  test("parseEventStream: fields, multi-line data, comments, CRLF, an unfinished event kept", () => {
    const { events, rest } = parseEventStream(
      ": ping\n\nid: 1-0\nevent: trade\ndata: {\"a\":\ndata: 1}\n\nretry: 3000\n\r\ndata:x\r\n\r\nid: 2",
    );
    assert.deepEqual(events, [
      { event: "trade", id: "1-0", data: '{"a":\n1}', retry: null },
      { event: "message", id: null, data: "", retry: 3000 },
      { event: "message", id: null, data: "x", retry: null },
    ]);
    assert.equal(rest, "id: 2");
  });
});

describe("against the fake server", () => {
  let server;
  before(async () => {
    server = await new FakeServer().start();
  });
  after(async () => {
    await server.stop();
  });

  test("the token goes in the first message, never in the URL, over realtime.v1", async () => {
    const token = fakeToken(1);
    const states = [];
    const rt = client(server, { token, onStateChange: (state) => states.push(state) });
    try {
      await rt.ping();
      const upgrade = server.upgrades.at(-1);
      assert.equal(upgrade.protocol, "realtime.v1");
      assert.ok(!upgrade.url.includes(token) && !upgrade.url.includes("token"));
      const first = server.received.find((entry) => entry.conn === server.upgrades.length - 1);
      assert.deepEqual(first.frame, { op: "connect", token, ref: first.frame.ref });
      assert.equal(rt.user, 1);
      assert.deepEqual(states, ["connecting", "open"]);
    } finally {
      rt.close();
    }
    assert.equal(rt.state, "closed");
  });

  test("many channels on one socket; a denied one errors alone and the others go on", async () => {
    const rt = client(server, { token: fakeToken(2) });
    const got = { a: [], b: [], c: [] };
    const errors = [];
    try {
      const before = server.upgrades.length;
      const subs = ["a", "b", "c"].map((name) =>
        rt.subscribe(`many:${name}`, { onMessage: (data) => got[name].push(data) }),
      );
      const denied = rt.subscribe("secret:x", { onError: (error) => errors.push(error) });
      await Promise.all(subs.map((sub) => sub.ready));
      await assert.rejects(denied.ready, (error) => error instanceof RealtimeError && error.code === "forbidden");
      assert.equal(errors.length, 1);
      assert.equal(errors[0].code, "forbidden");
      assert.equal(denied.state, "closed");
      assert.ok(!rt.subscriptions.has("secret:x"));
      for (const name of ["a", "b", "c"]) server.publish(`many:${name}`, { name });
      await until(() => got.a.length && got.b.length && got.c.length, "a message on each channel");
      assert.deepEqual(got, { a: [{ name: "a" }], b: [{ name: "b" }], c: [{ name: "c" }] });
      assert.equal(server.upgrades.length, before + 1, "one socket for all channels");
      assert.throws(() => rt.subscribe("many:a"), (error) => error.code === "already_subscribed");
    } finally {
      rt.close();
    }
  });

  test("a channel the server ends (unsubscribed) calls onError with the reason, is forgotten, the others go on", async () => {
    const rt = client(server, { token: fakeToken(11) });
    const errors = [];
    const kept = [];
    try {
      const ended = rt.subscribe("ends:editors", { onError: (error) => errors.push(error) });
      const other = rt.subscribe("ends:open", { onMessage: (data) => kept.push(data) });
      await Promise.all([ended.ready, other.ready]);
      server.unsubscribe("ends:editors", { code: "forbidden", detail: "Role 'editor' required" });
      await until(() => errors.length === 1, "onError of the ended channel");
      assert.ok(errors[0] instanceof RealtimeError);
      assert.equal(errors[0].code, "forbidden");
      assert.equal(errors[0].detail, "Role 'editor' required");
      assert.equal(ended.state, "closed");
      assert.ok(!rt.subscriptions.has("ends:editors"));
      server.publish("ends:open", "still here");
      await until(() => kept.length === 1, "a message on the other channel");
      // After a reconnect only the other channel is subscribed again.
      server.goDown();
      await until(() => rt.state !== "open", "the client noticing the drop");
      const before = server.frames("subscribe").length;
      server.up();
      await until(() => server.frames("subscribe").length > before, "the resubscribe");
      await other.ready;
      await rt.ping();
      const again = server.frames("subscribe").slice(before).map((entry) => entry.frame.channel);
      assert.deepEqual(again, ["ends:open"]);
    } finally {
      rt.close();
    }
  });

  test("after the server drops the socket: reconnect, resubscribe with last_id, each message once", async () => {
    const states = [];
    const rt = client(server, { token: fakeToken(3), onStateChange: (state) => states.push(state) });
    const seen = [];
    try {
      const sub = rt.subscribe("resume:1", { onMessage: (data) => seen.push(data.n) });
      await sub.ready;
      server.publish("resume:1", { n: 1 });
      await until(() => seen.length === 1, "the first message");
      const connectsBefore = server.frames("connect").length;
      server.goDown();
      await until(() => rt.state !== "open", "the client noticing the drop");
      server.publish("resume:1", { n: 2 }); // published while the client is away
      server.publish("resume:1", { n: 3 });
      assert.deepEqual(seen, [1]);
      server.up();
      await until(() => seen.length >= 3, "the replay");
      server.publish("resume:1", { n: 4 });
      await until(() => seen.length >= 4, "a live message after recovery");
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(seen, [1, 2, 3, 4]);
      assert.equal(sub.duplicates, 0);
      assert.ok(server.frames("connect").length > connectsBefore, "connect sent again");
      const resubscribe = server.frames("subscribe").filter((e) => e.frame.channel === "resume:1").at(-1).frame;
      assert.equal(resubscribe.last_id, server.history.get("resume:1")[0].id);
      assert.ok(states.includes("reconnecting"));
      assert.equal(rt.state, "open");
    } finally {
      rt.close();
    }
  });

  test("a publish made while away goes out after its channel is joined again", async () => {
    const rt = client(server, { token: fakeToken(10) });
    try {
      await rt.subscribe("away:1").ready;
      server.goDown();
      await until(() => rt.state !== "open", "the client noticing the drop");
      const publishing = rt.publish("away:1", "queued"); // waits for the next connection
      server.up();
      const reply = await publishing;
      assert.equal(reply.id, server.history.get("away:1").at(-1).id);
      const last = server.upgrades.length - 1;
      const ops = server.received.filter((e) => e.conn === last).map((e) => e.frame.op);
      assert.deepEqual(ops.slice(0, 3), ["connect", "subscribe", "publish"]);
    } finally {
      rt.close();
    }
  });

  test("a channel the server subscribed by itself is joined by subscribe() and delivers", async () => {
    const rt = client(server, { token: fakeToken(9) });
    const seen = [];
    try {
      await rt.ping();
      assert.deepEqual(rt.serverChannels, ["user:9"]);
      const mine = rt.subscribe("user:9", { onMessage: (data) => seen.push(data) });
      await mine.ready;
      assert.equal(mine.state, "joined");
      server.publish("user:9", "for you");
      await until(() => seen.length === 1, "the message of the server-made subscription");
    } finally {
      rt.close();
    }
  });

  test("a repeated message id is dropped and counted", async () => {
    const rt = client(server, { token: fakeToken(4) });
    const seen = [];
    try {
      const sub = rt.subscribe("dup:1", { onMessage: (data) => seen.push(data) });
      await sub.ready;
      const id = server.publish("dup:1", "x");
      for (const conn of server.connections) conn.send({ op: "message", channel: "dup:1", id, data: "x" });
      server.publish("dup:1", "y");
      await until(() => seen.length === 2, "two messages");
      assert.deepEqual(seen, ["x", "y"]);
      assert.equal(sub.duplicates, 1);
    } finally {
      rt.close();
    }
  });

  test("history that cannot reach back is a gap with recovered: false, reported once", async () => {
    const rt = client(server, { token: fakeToken(5) });
    const gaps = [];
    try {
      server.publish("gone:1", "old");
      const sub = rt.subscribe("gone:1", { lastId: "no-such-id", onGap: (gap) => gaps.push(gap) });
      await sub.ready;
      for (const conn of server.connections) conn.send({ op: "gap", channel: "gone:1", missed: null, recovered: false });
      for (const conn of server.connections) conn.send({ op: "gap", channel: "gone:1", missed: 12 });
      await until(() => gaps.length === 2, "the slow-consumer gap");
      assert.deepEqual(gaps, [
        { channel: "gone:1", missed: null, recovered: false },
        { channel: "gone:1", missed: 12, recovered: true },
      ]);
    } finally {
      rt.close();
    }
  });

  test("publish resolves with the id; errors reject with an Error carrying code", async () => {
    const rt = client(server, { token: fakeToken(6) });
    try {
      const sub = rt.subscribe("pub:1");
      await sub.ready;
      const reply = await rt.publish("pub:1", { text: "hi" });
      assert.equal(reply.id, server.history.get("pub:1").at(-1).id);
      await assert.rejects(rt.publish("pub:other", {}), (error) => error instanceof Error && error.code === "not_subscribed");
      await sub.unsubscribe();
      assert.equal(sub.state, "closed");
      await until(() => server.frames("unsubscribe").some((e) => e.frame.channel === "pub:1"), "the unsubscribe");
    } finally {
      rt.close();
    }
  });

  test("a reply that never comes rejects with code timeout", async () => {
    const silent = await new FakeServer({ silent: new Set(["publish"]) }).start();
    const rt = client(silent, { token: fakeToken(7), timeout: 300 });
    try {
      await rt.subscribe("quiet:1").ready;
      await assert.rejects(rt.publish("quiet:1", 1), (error) => error.code === "timeout");
      assert.equal(rt._pending.size, 0);
    } finally {
      rt.close();
      await silent.stop();
    }
  });

  test("requests made before the connection opens are sent after connect; close() rejects the rest", async () => {
    const rt = client(server, { token: fakeToken(8) });
    const ping = rt.ping(); // still connecting
    await ping;
    const refs = server.received.filter((e) => e.frame.op === "connect" || e.frame.op === "ping").map((e) => e.frame.op);
    assert.equal(refs.at(-2), "connect");
    rt.close();
    await assert.rejects(rt.ping(), (error) => error.code === "closed");
  });

  test("presence: members() from the snapshot, onJoin and onLeave, one member per user", async () => {
    const alice1 = client(server, { token: fakeToken(11) });
    const alice2 = client(server, { token: fakeToken(11) });
    const bob = client(server, { token: fakeToken(12) });
    const joins = [];
    const leaves = [];
    try {
      await alice1.subscribe("room:p").ready;
      await alice2.subscribe("room:p").ready;
      const room = bob.subscribe("room:p", { onJoin: (m) => joins.push(m.id), onLeave: (m) => leaves.push(m.id) });
      await until(() => room.members().length === 2, "both users in the member list");
      const ids = room.members().map((m) => m.id).sort();
      assert.deepEqual(ids, [11, 12]);
      assert.equal(room.members().find((m) => m.id === 11).connections, 2);
      const members = await bob.presence("room:p");
      assert.equal(members.length, 2);
      alice1.close();
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(leaves, [], "alice still has a connection");
      alice2.close();
      await until(() => leaves.includes(11), "alice's leave");
      assert.deepEqual(room.members().map((m) => m.id), [12]);
      assert.ok(joins.includes(11) && joins.includes(12));
    } finally {
      for (const rt of [alice1, alice2, bob]) rt.close();
    }
  });

  test("presence resyncs after a reconnect: who left meanwhile gets onLeave", async () => {
    const carol = client(server, { token: fakeToken(21) });
    const dave = client(server, { token: fakeToken(22) });
    const leaves = [];
    try {
      await dave.subscribe("room:q").ready;
      const room = carol.subscribe("room:q", { onLeave: (m) => leaves.push(m.id) });
      await until(() => room.members().length === 2, "both members");
      // Carol's socket drops; Dave leaves while she is away (she never sees his leave event).
      server.goDown();
      await until(() => carol.state !== "open" && dave.state !== "open", "both disconnected");
      dave.close();
      server.up();
      await until(() => leaves.includes(22), "dave's leave, from the resync");
      assert.deepEqual(room.members().map((m) => m.id), [21]);
    } finally {
      carol.close();
      dave.close();
    }
  });

  test("getToken is called before exp and its token sent as refresh; an expired token is replaced at connect", async () => {
    const soon = Math.floor(Date.now() / 1000) + 3; // refreshed 1.5 s before it expires
    let calls = 0;
    const fresh = fakeToken(31, Math.floor(Date.now() / 1000) + 3600);
    const rt = client(server, {
      token: fakeToken(31, soon),
      getToken: () => {
        calls += 1;
        return fresh;
      },
      refreshBefore: 1500,
    });
    try {
      await rt.ping();
      assert.equal(calls, 0, "the token was still valid at connect");
      await until(() => server.frames("refresh").some((e) => e.frame.token === fresh), "the refresh frame", 10000);
      await until(() => rt.token === fresh, "the refresh reply", 10000); // kept once the server agreed
      assert.equal(calls, 1);
    } finally {
      rt.close();
    }

    let later = 0;
    const expired = new Realtime(server.url, {
      WebSocket,
      heartbeat: 0,
      token: fakeToken(32, Math.floor(Date.now() / 1000) - 10),
      getToken: async () => {
        later += 1;
        return fakeToken(32);
      },
    });
    try {
      await expired.ping();
      assert.equal(later, 1);
      assert.equal(expired.user, 32);
    } finally {
      expired.close();
    }
  });

  test("closed with 4003: reconnect with a fresh token from getToken, or stop without getToken", async () => {
    let calls = 0;
    const states = [];
    const withGetToken = client(server, {
      getToken: () => {
        calls += 1;
        return fakeToken(51);
      },
    });
    const withToken = client(server, { token: fakeToken(52), onStateChange: (state, detail) => states.push([state, detail]) });
    try {
      await withGetToken.ping();
      await withToken.ping();
      assert.equal(calls, 1);
      server.closeAll(4003, "token_expired");
      await until(() => calls === 2 && withGetToken.isOpen, "a new connection with a fresh token");
      await until(() => withToken.state === "closed", "the token-only client stopping");
      assert.match(states.at(-1)[1], /4003: token_expired/);
      await assert.rejects(withToken.ping(), (error) => error.code === "closed");
    } finally {
      withGetToken.close();
      withToken.close();
    }
  });

  test("a gap on a presence channel asks presence again", async () => {
    const rt = client(server, { token: fakeToken(53) });
    try {
      const room = rt.subscribe("room:gap", { onJoin: () => {} });
      await until(() => room.members().length === 1, "the first sync");
      const asked = server.frames("presence").length;
      for (const conn of server.connections) conn.send({ op: "gap", channel: "room:gap", missed: 3 });
      await until(() => server.frames("presence").length === asked + 1, "a second presence request");
    } finally {
      rt.close();
    }
  });

  test("a heartbeat without a reply drops the socket and reconnects", async () => {
    const deaf = await new FakeServer({ silent: new Set(["ping"]) }).start();
    const rt = new Realtime(deaf.url, { WebSocket, token: fakeToken(41), heartbeat: 200, timeout: 300, backoff: FAST });
    try {
      await until(() => deaf.frames("connect").length >= 2, "a second connection after the heartbeat timeout");
    } finally {
      rt.close();
      await deaf.stop();
    }
  });
});

describe("follow (SSE)", () => {
  test("resumes with Last-Event-ID after the stream ends, with the token in the Authorization header", async () => {
    const requests = [];
    const server = http.createServer((request, response) => {
      requests.push({ lastEventId: request.headers["last-event-id"] ?? null, auth: request.headers.authorization, url: request.url });
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      const start = Number(request.headers["last-event-id"] ?? 0);
      response.write("retry: 20\n\n");
      for (let id = start + 1; id <= start + 2; id++) response.write(`id: ${id}\nevent: trade\ndata: {"n": ${id}}\n\n`);
      response.end(); // the server goes away after two events
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const events = [];
    const stream = follow(`http://127.0.0.1:${server.address().port}/events`, {
      token: async () => "tok",
      onEvent: (event) => events.push(event),
      backoff: { cap: 50 },
    });
    try {
      await until(() => events.length >= 6, "three connections' events");
      assert.deepEqual(events.slice(0, 6).map((e) => e.data.n), [1, 2, 3, 4, 5, 6]);
      assert.equal(events[0].event, "trade");
      assert.deepEqual(requests.slice(0, 3).map((r) => r.lastEventId), [null, "2", "4"]);
      assert.ok(requests.every((r) => r.auth === "Bearer tok" && !r.url.includes("tok")));
    } finally {
      stream.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test("an event id delivered already is dropped and counted in duplicates", async () => {
    const server = http.createServer((request, response) => {
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      // A server that replays one event too many after Last-Event-ID, and an event without an id.
      const start = Number(request.headers["last-event-id"] ?? 0);
      response.write("retry: 20\n\n");
      for (let id = Math.max(1, start); id <= start + 2; id++) response.write(`id: ${id}\ndata: {"n": ${id}}\n\n`);
      response.write("event: reset\ndata: {}\n\n");
      response.end();
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const events = [];
    const stream = follow(`http://127.0.0.1:${server.address().port}/events`, {
      onEvent: (event) => events.push(event),
      backoff: { cap: 50 },
    });
    try {
      await until(() => events.filter((e) => e.event === "message").length >= 4, "two connections' events");
      const numbers = events.filter((e) => e.event === "message").map((e) => e.data.n);
      assert.deepEqual(numbers.slice(0, 4), [1, 2, 3, 4]);
      assert.ok(stream.duplicates >= 1, `duplicates ${stream.duplicates}`);
      assert.equal(events.filter((e) => e.event === "reset").length >= 2, true); // no id: never deduplicated
    } finally {
      stream.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test("after a 401 the token function is asked for a fresh token (refused: true)", async () => {
    const server = http.createServer((request, response) => {
      if (request.headers.authorization !== "Bearer fresh") {
        response.writeHead(401, { "Content-Type": "text/event-stream" });
        response.end('event: error\ndata: {"code":"token_expired"}\n\n');
        return;
      }
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      response.write('id: 1\ndata: "ok"\n\n');
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const hints = [];
    const events = [];
    const stream = follow(`http://127.0.0.1:${server.address().port}/events`, {
      token: ({ refused }) => {
        hints.push(refused);
        return refused ? "fresh" : "stale";
      },
      onEvent: (event) => events.push(event),
      backoff: { base: 10, cap: 50 },
    });
    try {
      await until(() => events.length === 1, "the event on the fresh token");
      assert.deepEqual(hints, [false, true]);
      assert.equal(events[0].data, "ok");
    } finally {
      stream.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
