// A typed use of the npm package (realtime/static/realtime), compiled with tsc --noEmit by
// tests/test_js_package.py. The @ts-expect-error lines must fail to compile: types that accept
// anything would make them unused, which tsc reports as an error.
import {
  Auth,
  FallbackSocket,
  PROTOCOL,
  Realtime,
  RealtimeError,
  backoffDelay,
  fallbackUrl,
  follow,
  listen,
  type GapInfo,
  type Member,
  type Subscription,
  type Snapshot,
} from "django-realtime-endpoints";

interface Chat {
  from: string;
  text: string;
}

const protocol: "realtime.v1" = PROTOCOL;
const delay: number = backoffDelay(3, { base: 500, cap: 30000 });

async function main(): Promise<void> {
  const auth = new Auth({ tokenUrl: "https://example.com/api/auth/token/" });
  await auth.login("ada", "secret");
  const rt = new Realtime("wss://example.com/api/realtime/ws", {
    getToken: () => auth.access(),
    onStateChange: (state, detail) => console.log(state, detail),
    backoff: { base: 500, cap: 30000 },
    fallback: true,
    openTimeout: 5000,
  });
  const transport: "websocket" | "fallback" = rt.transport;
  const side: string = fallbackUrl("wss://example.com/api/realtime/ws");
  const session: string | null = new FallbackSocket(side, { token: null }).session;
  console.log(transport, session);
  const gaps: GapInfo[] = [];
  const room: Subscription<Chat, { name: string }> = rt.subscribe<Chat, { name: string }>("room:lobby", {
    onMessage: (data, message) => console.log(data.from.toUpperCase(), data.text, message.id?.length),
    onGap: (gap) => gaps.push(gap),
    onJoin: (member) => console.log(member.info.name),
    onError: (error) => console.log(error.code, error.detail),
    lastId: "0",
  });
  const reply = await room.ready;
  const recovered: boolean = reply.recovered;
  const members: Member<{ name: string }>[] = room.members();
  const { id } = await rt.publish("room:lobby", { text: "hi" });
  const maybe: string | null = id;
  try {
    await rt.presence("room:other");
  } catch (error) {
    if (error instanceof RealtimeError && error.code === "not_subscribed") console.log(error.detail);
  }
  await room.unsubscribe();
  const board = rt.subscribe<{ card: string }, Record<string, unknown>, Record<string, string>>("board:main", {
    onSnapshot: (cards, { last_id }) => console.log(Object.keys(cards).length, last_id?.length),
  });
  const snapshot: Snapshot<Record<string, string>> | undefined = (await board.ready).snapshot;
  const current: Record<string, string> | undefined = board.snapshot?.data;
  console.log(snapshot?.last_id, current);
  rt.close();

  const socket = listen<{ price: number }>("wss://example.com/api/ticks", {
    onMessage: (data) => console.log(data.price.toFixed(2)),
    token: ({ refused }) => auth.access({ force: refused }),
  });
  socket.send({ subscribe: "AAPL" });
  const stream = follow<{ n: number }>("https://example.com/api/events", { onEvent: (event) => console.log(event.data.n) });
  const last: string | null = stream.lastEventId;
  stream.close();
  console.log(protocol, delay, recovered, members, maybe, last);

  // @ts-expect-error: onMessage gets the channel's data type
  rt.subscribe<Chat>("room:x", { onMessage: (data: number) => data });
  // @ts-expect-error: a message id is a string (or null), never compared as a number
  const wrong: number = (await rt.publish("room:x", 1)).id;
  // @ts-expect-error: listen needs onMessage
  listen("wss://example.com/api/ticks", {});
  // @ts-expect-error: the state is one of four names
  const state: "online" = rt.state;
  console.log(wrong, state);
}

void main();
