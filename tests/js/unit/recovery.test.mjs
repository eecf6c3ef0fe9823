// The recovery rules of realtime.js, from the table every client shares (tests/clients/recovery.json).
// A scripted server plays each case: per socket, the subscribe reply and the frames after it, written
// in one burst (as daphne writes a reply, its gap and its replay), then a close that makes the client
// reconnect; on the last socket a sentinel message (no id) marks the end of the case.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";

import { Realtime } from "../../../realtime/static/realtime/realtime.js";
import { until } from "../fake-server.mjs";

const TABLE = JSON.parse(readFileSync(new URL("../../clients/recovery.json", import.meta.url), "utf8"));
const CHANNEL = "room:recovery";
const END = "__end_of_case__";

/** Serves `steps` in turn, one per socket; resolves with the server and what the client sent. */
async function scripted(steps) {
  const subscribes = [];
  let sockets = 0;
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: (protocols) => [...protocols][0] ?? false });
  await new Promise((resolve) => wss.once("listening", resolve));
  wss.on("connection", (ws) => {
    const step = steps[Math.min(sockets, steps.length - 1)];
    const last = sockets >= steps.length - 1;
    sockets += 1;
    ws.on("message", (text) => {
      const frame = JSON.parse(text.toString());
      if (frame.op !== "subscribe") {
        ws.send(JSON.stringify({ op: "reply", ref: frame.ref, ok: true, data: frame.op === "connect" ? { v: 1, user: null, exp: null, channels: [] } : {} }));
        return;
      }
      subscribes.push(frame.last_id ?? null);
      ws._socket.cork(); // one burst: the client reads the reply and what follows it in one chunk
      ws.send(JSON.stringify({ op: "reply", ref: frame.ref, ok: true, data: { channel: frame.channel, ...step.reply } }));
      for (const extra of step.frames) ws.send(JSON.stringify({ ...extra, channel: frame.channel }));
      if (last) ws.send(JSON.stringify({ op: "message", channel: frame.channel, id: null, data: END }));
      process.nextTick(() => {
        ws._socket.uncork();
        if (!last) ws.close(4000, "next step");
      });
    });
  });
  return { wss, subscribes, url: `ws://127.0.0.1:${wss.address().port}/ws` };
}

describe("recovery rules (tests/clients/recovery.json)", () => {
  for (const rule of TABLE.cases) {
    test(rule.name, async () => {
      const server = await scripted(rule.connections);
      const events = [];
      let ended = false;
      const rt = new Realtime(server.url, { WebSocket, heartbeat: 0, backoff: { base: 5, cap: 20 } });
      try {
        const sub = rt.subscribe(CHANNEL, {
          lastId: rule.lastId,
          onMessage: (data) => (data === END ? (ended = true) : events.push({ message: data })),
          onGap: ({ missed, recovered }) => events.push({ gap: { missed, recovered } }),
          onSnapshot: (data) => events.push({ snapshot: data }),
        });
        await until(() => ended, `the end of "${rule.name}"`);
        assert.deepEqual(events, rule.events);
        assert.deepEqual(server.subscribes, rule.connections.map((step) => step.sent_last_id));
        assert.equal(sub.duplicates, rule.duplicates);
      } finally {
        rt.close();
        await new Promise((resolve) => server.wss.close(resolve));
      }
    });
  }
});
