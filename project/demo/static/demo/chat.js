// The demo's chat: rooms `room:{name}` over one multi-channel WebSocket (/api/realtime/ws) with
// realtime.js, a message log and "who is online" from presence.
import { Realtime } from "../realtime/realtime.js";

const $ = (selector) => document.querySelector(selector);
const MAX_LINES = 100;

let rt = null;
let room = null;

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
  join($("#room-name").value || "lobby");
}

export function stopChat() {
  if (rt) rt.close();
  rt = room = null;
  $("#chat-log").replaceChildren();
  showOnline();
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
