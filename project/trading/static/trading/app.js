// The demo page: log in, watch ticks, place trades, see your own trade events live. Everything
// goes through realtime.js: Auth for the tokens, listen() for the tick WebSocket, follow() for the
// trade events (SSE), and Realtime for the chat (chat.js).
import { Auth, follow, listen } from "../realtime/realtime.js";
import { startChat, stopChat } from "../demo/chat.js";

const $ = (selector) => document.querySelector(selector);
const MAX_TICKS = 12;
const MAX_TRADES = 50;
/** Reconnect delays: full jitter from 0.5 s up to 10 s. */
const BACKOFF = { base: 500, cap: 10000 };
/** TickStreamWS closes with 4004 for a symbol that does not exist: retrying cannot help. */
const UNKNOWN_SYMBOL = 4004;

const auth = new Auth();
let ticks = null;
let events = null;
let user = null;

function setStatus(which, state, detail) {
  if (state === "open") state = "live"; // realtime.js says "open"; the page says "live"
  const element = $(`#${which}-status`);
  element.dataset.state = state;
  element.querySelector(".state").textContent = state;
  element.querySelector(".detail").textContent = detail || "";
}

function time(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// -- ticks ---------------------------------------------------------------------------------------

let previousPrice = null;
let ticksWereLive = false;

function showGap(text) {
  const row = $("#ticks tbody").insertRow(0);
  row.className = "gap";
  cell(row, text).colSpan = 4;
}

function showTick(tick) {
  const body = $("#ticks tbody");
  const row = body.insertRow(0);
  row.className = "tick";
  row.dataset.seq = tick.seq;
  const change = previousPrice === null ? 0 : tick.price - previousPrice;
  const direction = change > 0 ? "up" : change < 0 ? "down" : "flat";
  cell(row, time(tick.epoch));
  cell(row, tick.symbol);
  cell(row, String(tick.price), `num ${direction}`);
  cell(row, previousPrice === null ? "" : (change > 0 ? "+" : "") + change.toPrecision(3), `num ${direction}`);
  previousPrice = tick.price;
  const last = $("#last-price");
  last.textContent = String(tick.price);
  last.className = `price ${direction}`;
  while (body.rows.length > MAX_TICKS) body.deleteRow(-1);
}

function watchTicks() {
  if (ticks) ticks.close();
  previousPrice = null;
  ticksWereLive = false;
  $("#ticks tbody").replaceChildren();
  $("#last-price").textContent = "–";
  const symbol = $("#symbol").value;
  ticks = listen(`/api/trading/ws/ticks/${encodeURIComponent(symbol)}`, {
    token: ({ refused }) => auth.access({ force: refused }),
    onMessage: showTick,
    onStateChange: (state, detail) => {
      if (state === "open" && ticksWereLive) showGap(`reconnected at ${time(Date.now() / 1000)}`);
      if (state === "open") ticksWereLive = true;
      setStatus("ticks", state, detail);
    },
    backoff: BACKOFF,
    finalCodes: [UNKNOWN_SYMBOL],
  });
}

// -- trade events --------------------------------------------------------------------------------

function showTrade(trade, id) {
  const body = $("#trades tbody");
  // The outbox publishes at least once: a replay after a worker crash has a new event id, the same trade.
  if (body.querySelector(`tr[data-trade-id="${CSS.escape(String(trade.trade_id))}"]`)) return;
  const row = body.insertRow(0);
  row.className = `trade ${trade.side}`;
  row.dataset.tradeId = trade.trade_id;
  row.dataset.eventId = id;
  cell(row, time(trade.time));
  cell(row, trade.symbol);
  cell(row, trade.side, `side ${trade.side}`);
  cell(row, trade.amount, "num");
  cell(row, String(trade.price), "num");
  cell(row, id, "id");
  while (body.rows.length > MAX_TRADES) body.deleteRow(-1);
  $("#trade-count").textContent = String(body.querySelectorAll("tr.trade").length);
  $("#trades-status").dataset.duplicates = String(events.duplicates);
}

function showReset() {
  const body = $("#trades tbody");
  const row = body.insertRow(0);
  row.className = "reset";
  const td = cell(row, "History no longer reaches back to the last event seen: some trades may be missing.");
  td.colSpan = 6;
}

function watchTrades() {
  if (events) events.close();
  // fetch, not EventSource: the token goes in the Authorization header, and after any failure (a 502
  // while the servers restart) it reconnects with Last-Event-ID, so the server replays what was missed.
  events = follow(`/api/trading/events/${user.id}`, {
    token: ({ refused }) => auth.access({ force: refused }),
    onEvent: (event) => {
      if (event.event === "trade") showTrade(event.data, event.id);
      else if (event.event === "reset") showReset();
    },
    onStateChange: (state, detail) => {
      setStatus("trades", state, detail);
      $("#trades-status").dataset.duplicates = String(events ? events.duplicates : 0);
    },
    backoff: BACKOFF,
  });
}

async function placeOrder(form) {
  const result = $("#order-result");
  const order = { symbol: form.symbol.value, side: form.side.value, amount: form.amount.value };
  result.textContent = "sending…";
  try {
    const trade = await auth.fetchJSON("/api/trading/orders", { method: "POST", body: order });
    result.textContent = `accepted: ${trade.side} ${trade.amount} ${trade.symbol} @ ${trade.price}`;
  } catch (error) {
    result.textContent = `refused: ${error.detail || error.message}`;
  }
}

// -- session -------------------------------------------------------------------------------------

async function start() {
  try {
    user = await auth.fetchJSON("/api/trading/me");
  } catch (error) {
    if (error.status === 401 || error.code === "session_expired") auth.logout({ revoke: false });
    else $("#login-error").textContent = `Cannot reach the server: ${error.detail || error.message}`;
    return;
  }
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#session").hidden = false;
  $("#whoami").textContent = user.username;
  $("#admin-link").hidden = !user.is_staff;
  $("#trades tbody").replaceChildren();
  $("#trade-count").textContent = "0";
  watchTicks();
  watchTrades();
  startChat(auth);
}

function stop() {
  if (ticks) ticks.close();
  if (events) events.close();
  stopChat();
  ticks = events = user = null;
  $("#app").hidden = true;
  $("#session").hidden = true;
  $("#login").hidden = false;
}

auth.onLogout = stop;

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  $("#login-error").textContent = "";
  try {
    await auth.login(form.username.value, form.password.value);
    form.password.value = "";
    await start();
  } catch (error) {
    $("#login-error").textContent = error.detail || error.message;
  }
});
$("#logout").addEventListener("click", () => auth.logout());
$("#symbol").addEventListener("change", watchTicks);
$("#order-form").addEventListener("submit", (event) => {
  event.preventDefault();
  placeOrder(event.target);
});

if (auth.loggedIn) start();
