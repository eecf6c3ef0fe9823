"""History on NATS JetStream: a stream per channel prefix, one subject per channel, ids that resume honestly.

With ``NATS_URL`` set, a Channel with ``history=N`` keeps its history here instead of a Redis Stream:

- The stream of a channel is named after its *prefix*, the part of its name before the first ``:``
  (``chat:room/1`` and ``chat:room/2`` share the stream of ``chat``; a name without ``:`` is its own
  prefix): ``RT_<prefix>_<hash>``, on the subjects ``realtime.h.<stream>.*``, file storage, and
  ``max_msgs_per_subject`` = N (the largest N of its channels), so each channel keeps its last N
  messages as ``XADD MAXLEN N`` does. A channel's subject is ``realtime.h.<stream>.<base64url(name)>``.
- An id is ``"<epoch>-<sequence>"``: the JetStream stream sequence, after the stream's creation time
  in microseconds (:mod:`realtime.pubsub.ids`' shape). A stream deleted and made again, or a
  server whose store was wiped, has another creation time, so an id of the old stream is never read
  as a position in the new one: the resume answers ``recovered: false``.
- ``after(last_id)`` is recovered when the message ``last_id`` names is still in the stream, on
  this channel's subject: trimming removes a subject's oldest messages first, so every later one is
  still there. When it was trimmed away (or is of another epoch, malformed, or in the future) the
  answer is not recovered, and the replay is everything the stream holds for the channel. ``"0"``
  is recovered while the channel holds fewer than N messages (nothing can have been trimmed).
- Delivery, local included, comes from one ordered push consumer per channel and process
  (:class:`JetStreamTransport`), started at the stream's last sequence when the first subscriber
  arrives, so every subscriber everywhere sees the ids in stream order. It runs on the process's
  one NATS connection (:func:`realtime.pubsub.nats.client`); after a reconnect the consumer is made
  again from the last sequence it delivered (nats-py's ordered consumer), so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import logging
import re
from typing import Any

from ..encoding import SharedMessage
from . import ids
from .broker import BrokerUnavailable, broker_state, reach
from .nats import COMMAND_TIMEOUT, NatsUnreachable, client, unreachable
from .transport import Fanout, Replay, until_positioned

logger = logging.getLogger("realtime.history")

SUBJECT_ROOT = "realtime.h"
_STREAM_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
#: Seconds a consumer nobody reads is kept by the server (a process that died without deleting its own).
INACTIVE = 10.0
#: Seconds between the idle heartbeats of a reading consumer: two missed ones and it is made again.
HEARTBEAT = 1.0


def prefix(name: str) -> str:
    """The channel prefix whose stream holds ``name``'s history: the text before the first ``:``."""
    return name.split(":", 1)[0]


def stream_name(name: str) -> str:
    """``RT_<readable prefix>_<hash>`` (stream names allow no ``.``, ``*``, ``>`` nor spaces)."""
    head = prefix(name)
    digest = hashlib.blake2b(head.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
    return f"RT_{_STREAM_SAFE.sub('_', head)[:32]}_{digest}"


def subject(name: str) -> str:
    """The subject of channel ``name`` in its prefix's stream (one token for any name)."""
    token = base64.urlsafe_b64encode(name.encode("utf-8", "surrogatepass")).decode().rstrip("=")
    return f"{SUBJECT_ROOT}.{stream_name(name)}.{token}"


def epoch_of(info: Any) -> int:
    """A stream's creation time in microseconds: the first part of its ids."""
    return (info.created - _EPOCH) // datetime.timedelta(microseconds=1)


async def dropped(js: Any, stream: str, subscription: Any) -> None:
    """Unsubscribe ``subscription`` (a JetStream push subscription), delete its consumer (the server would
    after ``INACTIVE`` seconds), and end its helper tasks whatever the connection's state: nats-py's
    ``unsubscribe`` raises on a closed connection before stopping them."""
    try:
        await subscription.unsubscribe()
        consumer = getattr(subscription, "_consumer", None)  # nats-py keeps the name of the one made last
        if consumer:
            await js.delete_consumer(stream, consumer)
    except Exception:  # noqa: S110 - closed or reconnecting: the server drops it after INACTIVE seconds
        pass
    finally:
        inner = getattr(subscription, "_sub", None)
        jsi = getattr(inner, "_jsi", None)
        for task in (getattr(jsi, "_hbtask", None), getattr(jsi, "_fctask", None)):
            if task is not None:
                task.cancel()
        if inner is not None:
            inner._stop_processing()


class JetStreamHistory:
    """One channel's history in its prefix's JetStream stream."""

    def __init__(self, url: str | None, name: str, size: int) -> None:
        self.url = url
        self.name = name
        self.size = size
        self.stream = stream_name(name)
        self.subject = subject(name)

    async def jetstream(self) -> Any:
        connection = await client(self.url)
        if not connection.is_connected:
            raise NatsUnreachable("not connected to NATS (history)")
        return connection.jetstream(timeout=COMMAND_TIMEOUT)

    async def info(self) -> Any:
        """The stream's info, the stream made (or its per-subject bound raised to ``size``) when needed."""
        from nats.js import api
        from nats.js.errors import BadRequestError, NotFoundError

        js = await self.jetstream()
        try:
            try:
                found = await js.stream_info(self.stream)
            except NotFoundError:
                config = api.StreamConfig(
                    name=self.stream, subjects=[f"{SUBJECT_ROOT}.{self.stream}.*"],
                    storage=api.StorageType.FILE, max_msgs_per_subject=self.size, discard=api.DiscardPolicy.OLD,
                    num_replicas=1,
                )
                try:
                    return await js.add_stream(config)
                except BadRequestError:  # another process made it first (with another bound): use theirs
                    found = await js.stream_info(self.stream)
            bound = found.config.max_msgs_per_subject
            if bound is not None and 0 < bound < self.size:
                found.config.max_msgs_per_subject = self.size
                found = await js.update_stream(found.config)
            return found
        except Exception as error:
            if not unreachable(error):
                raise
            raise NatsUnreachable(f"JetStream unreachable ({self.stream}): {error or type(error).__name__}") from error

    async def append(self, message: Any, epoch: int) -> str:
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        js = await self.jetstream()
        try:
            ack = await js.publish(self.subject, payload, stream=self.stream, timeout=COMMAND_TIMEOUT)
        except Exception as error:
            if not unreachable(error):
                raise
            raise NatsUnreachable(f"JetStream publish not confirmed: {error or type(error).__name__}") from error
        return ids.make(epoch, ack.seq)

    async def newest_id(self) -> str | None:
        """The id of the channel's newest message, or None."""
        from nats.js.errors import NotFoundError

        info = await self.info()
        js = await self.jetstream()
        try:
            last = await js.get_last_msg(self.stream, self.subject)
        except NotFoundError:
            return None
        except Exception as error:
            if not unreachable(error):
                raise
            raise NatsUnreachable(f"JetStream unreachable: {error or type(error).__name__}") from error
        return ids.make(epoch_of(info), last.seq)

    async def after(self, last_id: str) -> Replay:
        """What the stream holds for this channel after ``last_id``, and whether that is everything after it."""
        from nats.js.errors import NotFoundError

        info = await self.info()
        epoch, state = epoch_of(info), info.state
        parsed = ids.parse(last_id)
        js = await self.jetstream()
        try:
            if parsed is not None and (parsed == ids.START or parsed == (epoch, 0)):
                counted = await js.stream_info(self.stream, subjects_filter=self.subject)
                held = (counted.state.subjects or {}).get(self.subject, 0)
                recovered, start = held < self.size, 1  # a bound never reached trimmed nothing
            elif parsed is None or parsed[0] != epoch or parsed[1] > state.last_seq:
                recovered, start = False, 1  # malformed, another stream (made again), or invented
            else:
                try:
                    named = await js.get_msg(self.stream, seq=parsed[1])
                    recovered = named.subject == self.subject
                except NotFoundError:  # trimmed away: what came between may have gone with it
                    recovered = False
                start = parsed[1] + 1 if recovered else 1
            return await self._read(js, epoch, start), recovered
        except Exception as error:
            if not unreachable(error):
                raise
            raise NatsUnreachable(f"JetStream unreachable: {error or type(error).__name__}") from error

    async def _read(self, js: Any, epoch: int, start: int) -> list[tuple[str, Any]]:
        """The channel's messages from sequence ``start`` to its newest, by one short-lived ordered consumer."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        try:
            last = (await js.get_last_msg(self.stream, self.subject)).seq
        except NotFoundError:
            return []
        if start > last:
            return []
        reader = await js.subscribe(
            self.subject, stream=self.stream, ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, config=api.ConsumerConfig(opt_start_seq=start),
            inactive_threshold=INACTIVE,
        )
        entries: list[tuple[str, Any]] = []
        try:
            while True:
                msg = await reader.next_msg(timeout=COMMAND_TIMEOUT)
                seq = msg.metadata.sequence.stream
                entries.append((ids.make(epoch, seq), json.loads(msg.data)))
                if seq >= last:
                    return entries
        finally:
            await dropped(js, self.stream, reader)


class JetStreamTransport:
    """A history Channel with ``NATS_URL``: publishes are JetStream publishes, deliveries come from the
    process's ordered consumer of the channel's subject (so every subscriber sees one order)."""

    def __init__(self, channel: Fanout, url: str) -> None:
        self.channel = channel
        self.store = JetStreamHistory(url, channel.name or "", channel.history)
        #: The stream's epoch as last read (None: read it again before the next publish).
        self.epoch: int | None = None
        self._reconnects = -1
        #: Set once the running reader knows where it reads from.
        self.positioned: asyncio.Future[None] | None = None

    async def _epoch(self) -> int:
        """The stream's epoch, read again after every reconnect (the stream may have been made again)."""
        connection = await client(self.store.url)
        reconnects = connection.stats["reconnects"]
        if self.epoch is None or reconnects != self._reconnects:
            self.epoch = epoch_of(await self.store.info())
            self._reconnects = reconnects
        return self.epoch

    async def publish(self, message: Any) -> tuple[int, str | None]:
        """Appends to the stream; returns the local subscribers that will receive it from the reader."""
        async def append() -> str:
            try:
                return await self.store.append(message, await self._epoch())
            except Exception:
                self.epoch = None  # a stream gone or made again: read it before the next publish
                raise

        try:
            message_id = await reach("history", self.channel.name, append, broker="NATS")
        except BrokerUnavailable:
            self.channel.broker_errors += 1
            raise
        return self.channel.subscriber_count, message_id

    def listen(self) -> Any:
        self.positioned = asyncio.get_running_loop().create_future()
        return self._listen(self.positioned)

    async def replay_after(self, last_id: str) -> Replay:
        """The replay, read once the reader has its position (as :class:`~realtime.pubsub.streams.StreamTransport`)."""
        await until_positioned(self)
        return await reach("history", self.channel.name, lambda: self.store.after(last_id), broker="NATS")

    async def newest_id(self) -> str | None:
        return await reach("history", self.channel.name, self.store.newest_id, broker="NATS")

    def _deliverer(self, epoch: int) -> Any:
        """The consumer's callback: each message to the local subscribers, with its id in ``epoch``."""
        channel = self.channel

        async def deliver(msg: Any) -> None:
            if not broker_state.up:
                broker_state.recovered()
            try:
                message = json.loads(msg.data)
            except ValueError:
                channel.rejected += 1
                return
            message_id = ids.make(epoch, msg.metadata.sequence.stream)
            channel.deliver(SharedMessage(message) if type(message) is dict else message, message_id)

        return deliver

    async def _listen(self, positioned: asyncio.Future[None]) -> None:
        """This process's single reader of the channel's subject; NATS away: keep trying, then read on."""
        from nats.js import api

        store = self.store
        delay = 0.1
        while True:
            try:
                info = await store.info()
                js = await store.jetstream()

                reader = await js.subscribe(
                    store.subject, stream=store.stream, cb=self._deliverer(epoch_of(info)), ordered_consumer=True,
                    idle_heartbeat=HEARTBEAT, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    config=api.ConsumerConfig(opt_start_seq=info.state.last_seq + 1), inactive_threshold=INACTIVE,
                )
                break
            except asyncio.CancelledError:
                if not positioned.done():
                    positioned.set_result(None)
                raise
            except Exception as error:
                broker_state.failed("history", error, "NATS")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        positioned.set_result(None)
        try:
            await asyncio.Event().wait()  # until the last subscriber leaves (cancelled)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(dropped(js, store.stream, reader))
