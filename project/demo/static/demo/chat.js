// The demo's chat: rooms `room:{name}` over one multi-channel WebSocket (/api/realtime/ws) with
// realtime.js, a message log and who is in the room from presence; and who is online on the whole
// site from the channel `online` (project/chat/online.py): its snapshot, then each change.
import { Realtime } from "../realtime/realtime.js";

const $ = (selector) => document.querySelector(selector);
const MAX_LINES = 100;

let rt = null;
let room = null;
/** The site's online users: id → name, from the `online` topic's snapshot and messages. */
const siteOnline = new Map();

function setStatus(state, detail) {
  const element = $("#chat-status");
  element.dataset.state = state === "open" ? "live" : state;
  element.querySelector(".state").textContent = state === "open" ? "live" : state;
  element.querySelector(".detail").textContent = detail || "";
}

function line(className, parts) {
  const log = $("#chat-log");
  const item = document.createElement("li");
  item.className = className;
  for (const [text, cls] of parts) {
    const span = document.createElement("span");
    span.textContent = text;
    if (cls) span.className = cls;
    item.append(span);
  }
  log.append(item);
  while (log.children.length > MAX_LINES) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
  return item;
}

function memberName(member) {
  return (member.info && member.info.name) || String(member.id);
}

function showOnline() {
  const list = $("#online");
  const members = room ? room.members() : [];
  list.replaceChildren(
    ...members
      .map((member) => {
        const item = document.createElement("li");
        item.textContent = memberName(member);
        item.dataset.name = memberName(member);
        if (member.connections > 1) item.title = `${member.connections} connections`;
        return item;
      })
      .sort((a, b) => a.textContent.localeCompare(b.textContent)),
  );
  $("#online-count").textContent = String(members.length);
}

function showSiteOnline() {
  const users = [...siteOnline.entries()].sort((a, b) => a[1].localeCompare(b[1]) || a[0] - b[0]);
  $("#site-online").replaceChildren(
    ...users.map(([id, name]) => {
      const item = document.createElement("li");
      item.textContent = name;
      item.dataset.name = name;
      item.dataset.id = String(id);
      return item;
    }),
  );
  $("#site-online-count").textContent = String(users.length);
}

/** `online`'s snapshot (`[{id, name}]`, replacing what was known) and its changes (`{op, user}`). */
function watchSiteOnline() {
  rt.subscribe("online", {
    onSnapshot: (users) => {
      siteOnline.clear();
      for (const user of users) siteOnline.set(user.id, user.name);
      showSiteOnline();
    },
    onMessage: (change) => {
      if (change.op === "online") siteOnline.set(change.user.id, change.user.name);
      else if (change.op === "offline") siteOnline.delete(change.user.id);
      showSiteOnline();
    },
    onError: (error) => line("error", [[`online: ${error.message}`]]),
  });
}

function showMessage(data, message) {
  const author = data.from ?? data.name ?? (data.user && (data.user.name ?? data.user)) ?? "?";
  const item = line("message", [[`${author}: `, "author"], [String(data.text ?? JSON.stringify(data)), "text"]]);
  item.dataset.author = author;
  item.dataset.id = message.id ?? "";
}

function join(name) {
  if (room) room.unsubscribe().catch(() => {});
  $("#chat-log").replaceChildren();
  $("#chat-room").textContent = name;
  const channel = `room:${name}`;
  room = rt.subscribe(channel, {
    onMessage: showMessage,
    onJoin: (member) => {
      line("presence join", [[`${memberName(member)} joined`]]).dataset.name = memberName(member);
      showOnline();
    },
    onLeave: (member) => {
      line("presence leave", [[`${memberName(member)} left`]]).dataset.name = memberName(member);
      showOnline();
    },
    onGap: (gap) => line("gap", [[gap.recovered === false ? "Older messages are no longer available." : `${gap.missed} messages skipped`]]),
    onError: (error) => line("error", [[`${channel}: ${error.message}`]]),
  });
  showOnline();
}

/** Opens the chat for a logged-in user; `auth` is the page's realtime.js Auth. */
export function startChat(auth) {
  stopChat();
  rt = new Realtime("/api/realtime/ws", {
    getToken: () => auth.access({ force: Boolean(rt && rt.token) }),
    onStateChange: setStatus,
  });
  watchSiteOnline();
  join($("#room-name").value || "lobby");
}

export function stopChat() {
  if (rt) rt.close();
  rt = room = null;
  $("#chat-log").replaceChildren();
  siteOnline.clear();
  showOnline();
  showSiteOnline();
}

$("#room-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("#room-name").value.trim().toLowerCase();
  if (rt && name) join(name);
});

$("#chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#chat-input");
  const text = input.value.trim();
  if (!text || !room) return;
  try {
    await rt.publish(room.channel, { text });
    input.value = "";
  } catch (error) {
    line("error", [[`not sent: ${error.message}`]]);
  }
});
