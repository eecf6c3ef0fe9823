"""What :func:`realtime.pubsub.nats.round_trip` relies on in nats-py, seen on the wire.

A recording TCP proxy sits between nats-py and a nats-server of our own and keeps every byte the client
sends, in order. nats-py 2.16 writes ``flush()``'s ``PING`` straight to the socket while ``SUB`` and
``PUB`` wait for its flusher task, so a ``PONG`` can answer before the server has read them; the layer's
``round_trip`` hands the pending commands over first. The first test fails the day nats-py sends its
``PING`` behind what is pending (``round_trip`` can then be one ``flush()``); the others fail if
``round_trip`` stops putting the ``PING`` behind the ``SUB`` or the ``PUB``.
"""

from __future__ import annotations

import asyncio

import pytest

from realtime.pubsub.nats import round_trip
from tests.nats_server import NatsServer


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    server = NatsServer(tmp_path_factory.mktemp("nats-contract")).start()
    yield server
    server.stop()


class RecordingProxy:
    """Forwards one loopback port to the nats-server; ``sent`` is what clients wrote, in order."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sent = bytearray()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if record:
                        self.sent += data
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        for task in (asyncio.create_task(pipe(client_reader, upstream_writer, True)),
                     asyncio.create_task(pipe(upstream_reader, client_writer, False))):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxied(nats):
    """A nats-py connection through the recording proxy, and the proxy."""
    import nats as nats_py

    proxy = RecordingProxy(nats.port)
    port = await proxy.start()
    connection = await nats_py.connect(f"nats://127.0.0.1:{port}", pending_size=0, ping_interval=600,
                                       allow_reconnect=False)
    try:
        yield connection, proxy
    finally:
        await connection.close()
        await proxy.close()


async def written_after(proxy: RecordingProxy, mark: int, *needles: bytes) -> bytes:
    """What the client wrote after ``mark``, once every needle is in it (5 s at most)."""
    for _ in range(500):
        tail = bytes(proxy.sent[mark:])
        if all(needle in tail for needle in needles):
            return tail
        await asyncio.sleep(0.01)
    raise AssertionError(f"{needles!r} never reached the server; it got {bytes(proxy.sent[mark:])!r}")


async def test_nats_py_flush_writes_its_ping_ahead_of_a_pending_subscribe(proxied):
    connection, proxy = proxied
    mark = len(proxy.sent)
    await connection.subscribe("contract.flush")
    await connection.flush(timeout=5)
    tail = await written_after(proxy, mark, b"SUB contract.flush", b"PING")
    assert tail.index(b"PING") < tail.index(b"SUB contract.flush"), (
        "nats-py now sends flush()'s PING behind its pending commands: round_trip() can be one flush()")


async def test_round_trip_puts_its_ping_behind_the_subscribe(proxied, nats):
    connection, proxy = proxied
    mark = len(proxy.sent)
    await connection.subscribe("contract.round-trip")
    await round_trip(connection)
    tail = bytes(proxy.sent[mark:])  # the PONG came back: the proxy has forwarded everything ahead of the PING
    assert b"SUB contract.round-trip" in tail and b"PING" in tail, tail
    assert tail.index(b"SUB contract.round-trip") < tail.index(b"PING"), tail
    assert await asyncio.to_thread(nats.subscribers, "contract.round-trip") == 1


async def test_round_trip_puts_its_ping_behind_the_publish(proxied):
    connection, proxy = proxied
    mark = len(proxy.sent)
    await connection.publish("contract.publish", b"hello")
    await round_trip(connection)
    tail = bytes(proxy.sent[mark:])
    assert b"PUB contract.publish" in tail and b"PING" in tail, tail
    assert tail.index(b"PUB contract.publish") < tail.index(b"PING"), tail
