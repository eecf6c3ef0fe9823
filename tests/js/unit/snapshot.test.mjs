// State on subscribe in realtime.js: the reply's snapshot, then the messages after its id.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import { Realtime } from "../../../realtime/static/realtime/realtime.js";
import { FakeServer, fakeToken, until } from "../fake-server.mjs";

describe("snapshot on subscribe", () => {
  let server;
  /** The board's state as the server's topic keeps it: values and the id of the last one applied. */
  const boards = new Map();
  before(async () => {
    server = await new FakeServer({ snapshot: (channel) => boards.get(channel) ?? null }).start();
  });
  after(async () => {
    await server.stop();
  });

  test("onSnapshot and ready get the state, then only the messages after it; a covered resume gets none", async () => {
    const ids = [1, 2, 3].map((n) => server.publish("board:1", n));
    boards.set("board:1", { data: [1, 2], last_id: ids[1] }); // a state that lags the history by one
    const events = [];
    const rt = new Realtime(server.url, { WebSocket, token: fakeToken(8), backoff: { base: 20, cap: 200 }, heartbeat: 0 });
    try {
      const sub = rt.subscribe("board:1", {
        onSnapshot: (data, info) => events.push(["snapshot", data, info]),
        onMessage: (data) => events.push(["message", data]),
      });
      const reply = await sub.ready;
      assert.deepEqual(reply.snapshot, { data: [1, 2], last_id: ids[1] });
      assert.deepEqual(sub.snapshot, reply.snapshot);
      await until(() => events.length === 2, "the snapshot and the message after it");
      assert.deepEqual(events, [["snapshot", [1, 2], { channel: "board:1", last_id: ids[1] }], ["message", 3]]);

      boards.set("board:1", { data: [1, 2, 3, 4], last_id: server.publish("board:1", 4) });
      await until(() => events.length === 3, "a live message");
      server.goDown();
      await until(() => rt.state !== "open", "the client noticing the drop");
      server.publish("board:1", 5); // while away: the resume replays it, no snapshot
      server.up();
      await until(() => events.length === 4, "the replay after the reconnect");
      const state = [];
      for (const [kind, data] of events) {
        if (kind === "snapshot") state.splice(0, state.length, ...data);
        else state.push(data);
      }
      assert.deepEqual(state, [1, 2, 3, 4, 5]);
      assert.equal(events.filter(([kind]) => kind === "snapshot").length, 1);
      const resubscribe = server.frames("subscribe").filter((e) => e.frame.channel === "board:1").at(-1).frame;
      assert.equal(resubscribe.last_id, server.history.get("board:1")[3].id);
    } finally {
      rt.close();
    }
  });

  test("a resume history cannot reach gets a gap, then the snapshot to start again from", async () => {
    boards.set("board:2", { data: ["fresh"], last_id: server.publish("board:2", "fresh") });
    const events = [];
    const rt = new Realtime(server.url, { WebSocket, token: fakeToken(9), backoff: { base: 20, cap: 200 }, heartbeat: 0 });
    try {
      const sub = rt.subscribe("board:2", {
        lastId: "from-another-history",
        onGap: (gap) => events.push(["gap", gap.recovered]),
        onSnapshot: (data) => events.push(["snapshot", data]),
        onMessage: (data) => events.push(["message", data]),
      });
      await sub.ready;
      await until(() => events.length >= 2, "the gap and the snapshot");
      assert.deepEqual(events, [["gap", false], ["snapshot", ["fresh"]]]);
      assert.equal(sub.lastId, server.history.get("board:2")[0].id);
    } finally {
      rt.close();
    }
  });
});
