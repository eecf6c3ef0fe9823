"""The connection: protocol v1 over one WebSocket (the ``websockets`` library), reconnecting by itself.

```python
async with Realtime("wss://example.com/api/realtime/ws", get_token=fetch_token) as rt:
    room = await rt.subscribe("room:lobby")
    async for event in room:
        ...
```

As ``realtime.js`` does: the token goes in the first message (``connect``), never in the URL; a
token callback is asked again before the token's ``exp`` and its token sent as ``refresh`` over
the open socket; after a drop the next attempt waits a full-jitter delay (random between 0 and
``min(cap, base * 2**attempt)``), then every channel is joined again from its last id. Frames are
read by one task, in order; a subscribe reply is applied as it is read, before what follows it.
Liveness is the ``websockets`` library's own ping (``ping_interval``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .events import RealtimeError
from .subscription import Subscription

logger = logging.getLogger("realtime.client")

#: The subprotocol of version 1.
PROTOCOL = "realtime.v1"

TokenSource = Callable[[], str | Awaitable[str]]


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0,
                  draw: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: seconds in [0, min(cap, base * 2**attempt))."""
    return draw() * min(cap, base * 2 ** min(attempt, 30))


def token_exp(token: str) -> float | None:
    """A JWT's ``exp``, read without checking anything (the server checks); None if it has none."""
    try:
        part = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))).get("exp")
    except (IndexError, ValueError, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


class Realtime:
    """Many channels over one WebSocket to a ``TopicSocket``; reconnects until :meth:`close`.

    ``state`` is "idle" (until :meth:`start`), "connecting", "open" (the ``connect`` reply came),
    "reconnecting" or "closed";
    ``on_state_change(state, detail)`` hears each change.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: TokenSource | None = None,
        timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        refresh_before: float = 30.0,
        buffer: int = 10_000,
        ping_interval: float | None = 20.0,
        on_state_change: Callable[[str, str], None] | None = None,
    ) -> None:
        if url.startswith(("http://", "https://")):
            url = "ws" + url[4:]  # as realtime.js maps them
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"Not a WebSocket URL: {url!r} (give ws(s):// or http(s)://)")
        self.url = url
        self.token = token
        self.get_token = get_token
        self.timeout = timeout
        self.backoff = backoff
        self.refresh_before = refresh_before
        self.buffer = buffer
        self.ping_interval = ping_interval
        self.on_state_change = on_state_change
        self.state = "idle"
        #: The user id the server authenticated (None: anonymous), from the last ``connect`` reply.
        self.user: Any = None
        #: Channels the server joined by itself (``connect``'s ``channels``).
        self.server_channels: list[str] = []
        self.subscriptions: dict[str, Subscription] = {}
        self.attempt = 0
        #: Connections opened (the first one included).
        self.connections = 0
        self._ws: ClientConnection | None = None
        self._open = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ref = 0
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], Callable[[dict[str, Any]], None] | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._end: RealtimeError | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Realtime:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting (``async with`` does it)."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait until the connection is open (past ``connect``)."""
        self._check_usable()
        async with asyncio.timeout(timeout):
            await self._open.wait()

    async def close(self) -> None:
        """Close for good: no reconnection, pending requests fail with ``closed``, iterators end."""
        if self.state == "closed":
            return
        self._stop("", None)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _stop(self, detail: str, error: RealtimeError | None) -> None:
        self._set_state("closed", detail)
        self._end = error
        self._stopped.set()
        self._fail_pending("closed", detail or "the connection was closed")
        for subscription in list(self.subscriptions.values()):
            subscription.end(error or StopAsyncIteration())

    def _check_usable(self) -> None:
        if self.state == "closed":
            raise self._end or RealtimeError("closed", "this Realtime was closed")
        self.start()

    def spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``awaitable`` as a task of this client (cancelled by :meth:`close`); its failure is logged."""

        async def guarded() -> Any:
            try:
                return await awaitable
            except RealtimeError as error:
                if error.code not in ("disconnected", "closed"):
                    logger.warning("realtime: %s", error)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _set_state(self, state: str, detail: str) -> None:
        if self.state == state and state != "reconnecting":
            return
        self.state = state
        if self.on_state_change is not None:
            try:
                self.on_state_change(state, detail)
            except Exception:
                logger.exception("realtime: on_state_change raised")

    # -- the API --------------------------------------------------------------------------------

    async def subscribe(self, channel: str, *, last_id: str | None = None, presence: bool = False) -> Subscription:
        """Join ``channel`` (now, or once connected) and stay joined across reconnections.

        Returns once the server agreed; raises the refusal (``forbidden``, ``unknown_channel`` ...).
        ``last_id`` resumes from that id; ``presence`` keeps ``members`` in sync, with Join and Leave events.
        """
        self._check_usable()
        if channel in self.subscriptions:
            raise RealtimeError("already_subscribed", f"{channel}: unsubscribe() the existing subscription first")
        subscription = Subscription(self, channel, last_id, presence, self.buffer)
        self.subscriptions[channel] = subscription
        if self.is_open:
            await self._join(subscription)
        await subscription.first_reply()
        return subscription

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        """Publish on a channel this connection joined; returns the reply, ``{"id": ...}``."""
        return await self.request({"op": "publish", "channel": channel, "data": data})

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """The channel's members: ``[{"id", "info", "connections"}]``."""
        return (await self.request({"op": "presence", "channel": channel}))["members"]

    async def ping(self) -> None:
        """A round trip to the server."""
        await self.request({"op": "ping"})

    async def request(self, fields: dict[str, Any], *, on_ok: Callable[[dict[str, Any]], None] | None = None,
                      now: bool = False) -> dict[str, Any]:
        """Send a request once connected and return its reply's data; ``timeout`` seconds in all.

        ``on_ok(data)`` runs as the reply is read, before any frame after it."""
        self._check_usable()
        try:
            async with asyncio.timeout(self.timeout):
                if not now:
                    await self._wait_open_or_stop()
                reply = await self.send_request(fields, on_ok)
                return await reply
        except TimeoutError:
            raise RealtimeError("timeout", f"no reply to {fields.get('op')} within {self.timeout} s") from None

    async def send_request(self, fields: dict[str, Any],
                           on_ok: Callable[[dict[str, Any]], None] | None = None) -> Awaitable[dict[str, Any]]:
        """Send a request on the socket now; returns, once it is sent, the awaitable of its reply."""
        ws = self._ws
        if ws is None:
            raise RealtimeError("disconnected", "the connection closed")
        self._ref += 1
        ref = str(self._ref)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (future, on_ok)
        try:
            await ws.send(json.dumps({**fields, "ref": ref}))
        except ConnectionClosed:
            self._pending.pop(ref, None)
            raise RealtimeError("disconnected", "the connection closed") from None
        return self._reply_to(ref, future, fields.get("op"))

    async def _reply_to(self, ref: str, future: asyncio.Future[dict[str, Any]], op: Any) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            raise RealtimeError("timeout", f"no reply to {op} within {self.timeout} s") from None
        finally:
            self._pending.pop(ref, None)

    async def _join(self, subscription: Subscription) -> None:
        settle = await subscription.join()
        if settle is not None:
            self.spawn(settle)

    async def _wait_open_or_stop(self) -> None:
        if self._open.is_set():
            return
        opened = asyncio.ensure_future(self._open.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({opened, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            stopped.cancel()
        if not self._open.is_set():
            raise self._end or RealtimeError("closed", "this Realtime was closed")

    def _fail_pending(self, code: str, detail: str) -> None:
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(RealtimeError(code, detail))

    # -- the connection ---------------------------------------------------------------------------

    async def _token_for_connect(self) -> str | None:
        if self.get_token is not None and (self.token is None or self._expires_soon(self.token)):
            self.token = await self._fresh_token()
        return self.token

    async def _fresh_token(self) -> str:
        if self.get_token is None:
            raise RealtimeError("not_authenticated", "no get_token to ask for a fresh token")
        value = self.get_token()
        return await value if inspect.isawaitable(value) else value

    def _expires_soon(self, token: str) -> bool:
        exp = token_exp(token)
        return exp is not None and exp - time.time() < self.refresh_before

    async def _run(self) -> None:
        while self.state != "closed":
            self._set_state("connecting", f"attempt {self.attempt + 1}" if self.attempt else "")
            why = await self._connect_once()
            if self.state == "closed":
                return
            delay = backoff_delay(self.attempt, *self.backoff)
            self.attempt += 1
            self._set_state("reconnecting", f"{why}; retrying in {delay:.1f} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopped.wait()

    async def _connect_once(self) -> str:
        """One connection, from the handshake to its end; returns why it ended."""
        try:
            token = await self._token_for_connect()
        except Exception as error:
            return f"cannot get a token: {error}"
        try:
            ws = await connect(self.url, subprotocols=[PROTOCOL], open_timeout=self.timeout,
                               ping_interval=self.ping_interval, ping_timeout=self.ping_interval)
        except (OSError, InvalidHandshake, TimeoutError) as error:
            return f"cannot connect: {error}"
        self.connections += 1
        self._ws = ws
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        refresh: asyncio.Task[None] | None = None
        try:
            try:
                data = await self.request({"op": "connect", "token": token} if token else {"op": "ping"}, now=True)
            except RealtimeError as error:
                if error.code in ("disconnected", "timeout"):
                    await ws.close(4000, "no reply to connect")
                    return f"connect failed ({error.code})"
                if self.get_token is not None and error.code in ("token_expired", "token_not_valid", "user_mismatch"):
                    self.token = None  # connect may be sent once: start over with a fresh token
                    await ws.close(4000, "token refused")
                    return f"token refused ({error.code})"
                logger.warning("realtime: connect refused (%s); anonymous", error)
                data = {"user": None, "exp": None}
            self.user = data.get("user")
            self.server_channels = list(data.get("channels") or ())
            self.attempt = 0
            self._set_state("open", "")
            # Every channel's subscribe goes out before the requests the app made meanwhile (a publish
            # needs its channel joined again); the replies are awaited in tasks.
            for subscription in list(self.subscriptions.values()):
                await self._join(subscription)
            self._open.set()
            if self.get_token is not None and isinstance(data.get("exp"), int | float):
                refresh = asyncio.get_running_loop().create_task(self._refresh_loop(float(data["exp"])))
            await reader
        finally:
            self._open.clear()
            self._ws = None
            if refresh is not None:
                refresh.cancel()
            reader.cancel()
            self._fail_pending("disconnected", "the connection closed")
            for subscription in self.subscriptions.values():
                subscription.state = "joining"
            await ws.close()
        code, reason = ws.close_code, ws.close_reason or ""
        why = f"connection lost ({code}{': ' + reason if reason else ''})"
        if code == 4003:
            # The server ended the session (token_expired, session_revoked, ...): never reuse that token.
            self.token = None
            if self.get_token is None:
                self._stop(f"closed by the server ({code}: {reason})", RealtimeError(reason or "closed", why))
        return why

    async def _read(self, ws: ClientConnection) -> None:
        """Every frame of the socket, in order, until it closes."""
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                try:
                    frame = json.loads(text)
                except ValueError:
                    continue
                if not isinstance(frame, dict):
                    continue
                if frame.get("op") == "reply":
                    self._on_reply(frame)
                    continue
                subscription = self.subscriptions.get(frame.get("channel"))
                if subscription is not None:
                    subscription.receive(frame)

    def _on_reply(self, frame: dict[str, Any]) -> None:
        future, on_ok = self._pending.get(str(frame.get("ref")), (None, None))
        if future is None or future.done():
            return
        if frame.get("ok"):
            data = frame.get("data") or {}
            if on_ok is not None:
                on_ok(data)
            future.set_result(data)
        else:
            error = frame.get("error") or {}
            future.set_exception(RealtimeError(error.get("code", "error"), error.get("detail", "")))

    async def _refresh_loop(self, exp: float) -> None:
        """Send ``refresh`` with a fresh token ``refresh_before`` s before ``exp``, while the socket lives."""
        while True:
            await asyncio.sleep(max(1.0, exp - time.time() - self.refresh_before))
            try:
                token = await self._fresh_token()
                data = await self.request({"op": "refresh", "token": token})
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("realtime: token refresh failed (%s); retrying", error)
                if exp <= time.time():
                    return  # the server closes the socket with 4003 token_expired; the reconnect gets a fresh one
                await asyncio.sleep(min(5.0, self.refresh_before / 4))
                continue
            self.token = token
            if not isinstance(data.get("exp"), int | float):
                return
            exp = float(data["exp"])
