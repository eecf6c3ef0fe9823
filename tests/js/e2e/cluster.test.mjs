// realtime.js against the real server: two daphne processes sharing a real redis-server, started
// by tests/test_js_client.py, which passes them in the environment:
//   RT_SERVERS  {"a": "http://127.0.0.1:<port>", "b": ..., "memory": ...} ("memory": no Redis, history in memory)
//   RT_CONTROL  http://127.0.0.1:<port>: POST /stop/a, /kill/b (SIGKILL), /start/a ...
//   RT_USERS    {"plain": <pk>, ...}; RT_PASSWORD their password
//   RT_PRESENCE_TIMEOUT  REALTIME["PRESENCE_TIMEOUT"] of the servers, in seconds
// The rooms are the demo's (`room:{name:slug}` on /api/realtime/ws); the refused channel is the test
// topic `owned:{pk}` on /api/t14/ws (only its owner may join it).
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import WebSocket from "ws";

import { Auth, Realtime, follow, listen } from "../../../realtime/static/realtime/realtime.js";
import { until } from "../fake-server.mjs";

const SERVERS = JSON.parse(process.env.RT_SERVERS ?? "null");
const CONTROL = process.env.RT_CONTROL;
const USERS = JSON.parse(process.env.RT_USERS ?? "{}");
const PASSWORD = process.env.RT_PASSWORD;
const PRESENCE_TIMEOUT = Number(process.env.RT_PRESENCE_TIMEOUT ?? 30);
if (!SERVERS || !CONTROL) throw new Error("run through tests/test_js_client.py: RT_SERVERS and RT_CONTROL are unset");

const RUN = Date.now().toString(36); // room names of this run only
const clients = [];

after(() => {
  for (const rt of clients) rt.close();
});

async function token(server, username) {
  const response = await fetch(`${SERVERS[server]}/api/auth/token/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(response.status, 200, `login of ${username}`);
  return (await response.json()).access;
}

/** A Realtime on `server` ("a" or "b") as `username` (null: anonymous), connected. */
async function connect(server, username, { path = "/api/realtime/ws", ...options } = {}) {
  const url = SERVERS[server].replace(/^http/, "ws") + path;
  const rt = new Realtime(url, {
    WebSocket,
    getToken: username ? () => token(server, username) : null,
    backoff: { base: 200, cap: 2000 },
    timeout: 20000,
    ...options,
  });
  clients.push(rt);
  await rt.ping();
  return rt;
}

async function control(action, server) {
  const response = await fetch(`${CONTROL}/${action}/${server}`, { method: "POST" });
  assert.equal(response.status, 200, `${action} ${server}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

describe("realtime.js against two daphne processes and Redis", () => {
  test("many channels on one socket, each message on its own channel", async () => {
    const reader = await connect("a", "plain");
    const writer = await connect("b", "editor");
    const names = Array.from({ length: 40 }, (_, i) => `room:many-${RUN}-${i}`);
    const got = new Map(names.map((name) => [name, []]));
    const subs = names.map((name) => reader.subscribe(name, { onMessage: (data) => got.get(name).push(data.text) }));
    await Promise.all(subs.map((sub) => sub.ready));
    for (const name of names) await writer.subscribe(name).ready;
    await Promise.all(names.map((name) => writer.publish(name, { text: `hello ${name}` })));
    await until(() => [...got.values()].every((texts) => texts.length === 1), "one message per channel", 30000);
    for (const [name, texts] of got) assert.deepEqual(texts, [`hello ${name}`]);
    assert.equal(reader.subscriptions.size, 40);
    for (const sub of subs) assert.equal(sub.duplicates, 0);
  });

  test("a refused channel errors alone; the other channels of the socket go on", async () => {
    const plain = await connect("a", "plain", { path: "/api/t14/ws" });
    const other = USERS.editor;
    const errors = [];
    const texts = [];
    const open = plain.subscribe(`open:${RUN}`, { onMessage: (data) => texts.push(data) });
    const refused = plain.subscribe(`owned:${other}`, { onError: (error) => errors.push(error.code) });
    const own = plain.subscribe(`owned:${USERS.plain}`);
    await assert.rejects(refused.ready, (error) => error.code === "forbidden");
    await open.ready;
    await own.ready;
    assert.deepEqual(errors, ["forbidden"]);
    await assert.rejects(plain.publish("no-such-topic:1", 1), (error) => error.code === "unknown_channel");
    await plain.publish(`open:${RUN}`, "still here");
    await until(() => texts.length === 1, "the open channel's message");
    assert.deepEqual(texts, ["still here"]);
    assert.equal(plain.state, "open");
  });

  test("the token is refreshed over the open socket before it expires, without reconnecting", async () => {
    const states = [];
    let calls = 0;
    // The servers' tokens last 15 minutes: refreshing "15 minutes minus 3 s" early happens in ~3 s.
    const rt = await connect("a", "plain", {
      refreshBefore: 15 * 60 * 1000 - 3000,
      getToken: () => {
        calls += 1;
        return token("a", "plain");
      },
      onStateChange: (state) => states.push(state),
    });
    const first = rt.token;
    await until(() => calls >= 2 && rt.token !== first, "a refreshed token", 30000);
    const room = `room:refresh-${RUN}`;
    const texts = [];
    await rt.subscribe(room, { onMessage: (data) => texts.push(data.text) }).ready;
    await rt.publish(room, { text: "after the refresh" });
    await until(() => texts.length === 1, "a message after the refresh", 20000);
    assert.ok(!states.includes("reconnecting"), `states: ${states}`);
  });

  test("presence from both processes: one member per user across two connections", async () => {
    const room = `room:presence-${RUN}`;
    const joins = [];
    const leaves = [];
    const watcher = await connect("a", null); // anonymous: reads, is not a member
    const watched = watcher.subscribe(room, { onJoin: (m) => joins.push(m.info.name), onLeave: (m) => leaves.push(m.info.name) });
    await watched.ready;
    const plainA = await connect("a", "plain");
    const plainB = await connect("b", "plain");
    const editorB = await connect("b", "editor");
    for (const rt of [plainA, plainB, editorB]) await rt.subscribe(room).ready;
    for (const server of ["a", "b"]) {
      const rt = server === "a" ? plainA : editorB;
      await until(async () => (await rt.presence(room)).length === 2, `both users seen from ${server}`, 20000);
      const members = await rt.presence(room);
      assert.deepEqual(members.map((m) => m.info.name).sort(), ["editor", "plain"]);
      assert.equal(members.find((m) => m.info.name === "plain").connections, 2);
      assert.equal(members.find((m) => m.info.name === "editor").connections, 1);
    }
    await until(() => watched.members().length === 2, "the watcher's member list", 20000);
    await sleep(1000); // room for a second join of plain, if there were one
    assert.deepEqual(joins.sort(), ["editor", "plain"]);

    plainA.close(); // plain still has a connection on b: no leave
    await sleep(1500);
    assert.deepEqual(leaves, []);
    plainB.close();
    await until(() => leaves.includes("plain"), "plain's leave after the last connection", 20000);
    assert.deepEqual(leaves, ["plain"]);
    assert.deepEqual(watched.members().map((m) => m.info.name), ["editor"]);
  });

  test("a daphne restart with messages published meanwhile: each delivered exactly once", async () => {
    const room = `room:restart-${RUN}`;
    const states = [];
    const texts = [];
    const reader = await connect("a", "plain", { onStateChange: (state) => states.push(state) });
    const writer = await connect("b", "editor");
    const sub = reader.subscribe(room, { onMessage: (data) => texts.push(data.text) });
    await sub.ready;
    await writer.subscribe(room).ready;
    for (const n of [1, 2, 3]) await writer.publish(room, { text: `m${n}` });
    await until(() => texts.length === 3, "the messages before the restart", 20000);

    await control("stop", "a");
    await until(() => reader.state !== "open", "the reader noticing", 20000);
    for (const n of [4, 5, 6]) await writer.publish(room, { text: `m${n}` }); // while a is down
    await sleep(500);
    assert.deepEqual(texts, ["m1", "m2", "m3"]);
    await control("start", "a");

    await until(() => texts.length >= 6, "the messages published meanwhile, after the reconnection", 60000);
    await until(() => reader.state === "open", "the reader open again", 20000);
    await writer.publish(room, { text: "m7" });
    await until(() => texts.length >= 7, "a live message after the recovery", 20000);
    await sleep(1000); // room for a duplicate, if there were one
    assert.deepEqual(texts, ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
    assert.equal(sub.duplicates, 0, "the server sent no message twice");
    assert.ok(states.includes("reconnecting"));
  });

  for (const action of ["stop", "kill"]) {
    test(`a restart (${action}) of a process with history in memory: recovered false once, no new message dropped`, async () => {
      // The restarted process's history starts over and hands out ids seen before the restart.
      const room = `open:memory-${action}-${RUN}`;
      const texts = [];
      const gaps = [];
      const reader = await connect("memory", null, { path: "/api/t14/ws" });
      const writer = await connect("memory", null, { path: "/api/t14/ws" });
      const sub = reader.subscribe(room, { onMessage: (data) => texts.push(data), onGap: (gap) => gaps.push(gap) });
      await sub.ready;
      await writer.subscribe(room).ready;
      for (const n of [1, 2, 3]) await writer.publish(room, `m${n}`);
      await until(() => texts.length === 3, "the messages before the restart", 20000);
      await control(action, "memory");
      await until(() => reader.state !== "open", "the reader noticing", 20000);
      await control("start", "memory");
      await until(() => gaps.length >= 1, "the reader told recovered false", 60000);
      await until(() => writer.isOpen, "the writer back", 20000);
      for (const n of [4, 5, 6, 7, 8]) await writer.publish(room, `m${n}`);
      await until(() => texts.length >= 8, "the messages after the restart", 20000);
      await reader.ping(); // room for a gap or a message twice, if there were one
      assert.deepEqual(texts, ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]);
      assert.deepEqual(gaps, [{ channel: room, missed: null, recovered: false }]);
      assert.equal(sub.duplicates, 0);
      reader.close();
      writer.close();
    });
  }

  test("follow() resumes an SSE stream with Last-Event-ID after a daphne restart, each event once", async () => {
    const seen = [];
    const states = [];
    const stream = follow(`${SERVERS.a}/api/t/sse/resumable`, {
      token: () => token("b", "plain"),
      onEvent: (event) => event.event === "entry" && seen.push(event.data.n),
      onStateChange: (state) => states.push(state),
      backoff: { base: 200, cap: 2000 },
    });
    const publisher = new WebSocket(`${SERVERS.b.replace(/^http/, "ws")}/api/t/publish/live-history`);
    await new Promise((resolve, reject) => {
      publisher.once("open", resolve);
      publisher.once("error", reject);
    });
    const publish = (n) =>
      new Promise((resolve) => {
        publisher.once("message", resolve);
        publisher.send(JSON.stringify({ n, run: RUN }));
      });
    try {
      await until(() => states.includes("open"), "the stream open", 20000);
      await sleep(500); // the view joins the channel
      for (const n of [1, 2]) await publish(n);
      await until(() => seen.length === 2, "the events before the restart", 20000);
      await control("stop", "a");
      await until(() => states.at(-1) === "reconnecting", "the stream noticing", 20000);
      for (const n of [3, 4]) await publish(n);
      await control("start", "a");
      await until(() => seen.length >= 4, "the events published meanwhile", 60000);
      await publish(5);
      await until(() => seen.length >= 5, "a live event after resuming", 20000);
      await sleep(1000);
      assert.deepEqual(seen, [1, 2, 3, 4, 5]);
      assert.ok(stream.lastEventId);
    } finally {
      stream.close();
      publisher.close();
    }
  });

  test("Auth and listen(): a WebSocketView with ?token=, and a logout that closes it everywhere", async () => {
    // "subscriber" is this test's own user: the logout closes every connection of the user.
    const auth = new Auth({
      tokenUrl: `${SERVERS.a}/api/auth/token/`,
      refreshUrl: `${SERVERS.a}/api/auth/token/refresh/`,
      logoutUrl: `${SERVERS.a}/api/auth/logout/`,
    });
    await auth.login("subscriber", PASSWORD);
    const { refresh } = auth.tokens;
    const got = [];
    const states = [];
    const hints = [];
    const socket = listen(`${SERVERS.b}/api/t/hello/7`, {
      WebSocket,
      token: ({ refused }) => {
        hints.push(refused);
        return auth.access({ force: refused });
      },
      onMessage: (data) => got.push(data),
      onStateChange: (state, detail) => states.push([state, detail]),
      backoff: { base: 200, cap: 1000 },
    });
    const refused = [];
    const denied = listen(`${SERVERS.a}/api/t/editor-only`, {
      WebSocket,
      token: () => auth.access(),
      onMessage: () => {},
      onStateChange: (state, detail) => refused.push([state, detail]),
    });
    try {
      await until(() => got.length === 1, "the view's first message", 20000);
      assert.deepEqual(got[0], { user: "subscriber", params: { number: 7 } });
      // A permission's 4003 is final: no reconnection.
      await until(() => denied.state === "closed", "the permission's refusal", 20000);
      assert.match(refused.at(-1)[1], /^closed by the server \(4003: /);

      await auth.logout(); // on process a; the socket is on b
      assert.equal(auth.loggedIn, false);
      await until(() => states.some(([, detail]) => detail.includes("4003: session_revoked")), "the revocation", 20000);
      await until(() => hints.includes(true), "a fresh token asked for", 20000);
      assert.notEqual(socket.state, "closed"); // it retries (until close()): a new login would get it back
      const again = await fetch(`${SERVERS.a}/api/auth/token/refresh/`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh }),
      });
      assert.equal(again.status, 401); // blacklisted by the logout
    } finally {
      socket.close();
      denied.close();
    }
    assert.equal(socket.state, "closed");
  });

  test("a process killed with SIGKILL: its members leave within the presence bound", async () => {
    const room = `room:kill-${RUN}`;
    const leaves = [];
    const watcher = await connect("a", "plain");
    const watched = watcher.subscribe(room, { onLeave: (m) => leaves.push(m.info.name) });
    await watched.ready;
    const victim = await connect("b", "editor", { backoff: { base: 60000, cap: 60000 } });
    await victim.subscribe(room).ready;
    await until(() => watched.members().some((m) => m.info.name === "editor"), "the editor present", 20000);

    const killed = Date.now();
    await control("kill", "b");
    victim.close(); // no reconnection elsewhere: the member must go because its process went
    // The bound: a process silent for PRESENCE_TIMEOUT is reaped; generous slack for a loaded machine.
    const bound = PRESENCE_TIMEOUT * 1000 * 2 + 15000;
    await until(() => leaves.includes("editor"), `the editor's leave within ${bound} ms`, bound);
    const took = Date.now() - killed;
    console.log(`leave after SIGKILL: ${took} ms (PRESENCE_TIMEOUT ${PRESENCE_TIMEOUT} s)`);
    assert.ok(took >= 0);
    assert.deepEqual((await watcher.presence(room)).map((m) => m.info.name), ["plain"]);
    await control("start", "b");
  });
});
