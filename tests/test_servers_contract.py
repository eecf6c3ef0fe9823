"""The contract of each server adapter (realtime.servers) with the installed server packages.

Every private name an adapter patches or reads is checked on the installed packages, and what it
reads on live connections on a real server (daphne in a subprocess, uvicorn in this process), so
that an upgrade that renames one fails here, naming the versions, instead of silently in
production. Then: the tested versions are the ones requirements.txt pins, an untested version
turns direct writes off with one warning, and ``REALTIME["DIRECT_WRITES"] = False`` gives no writer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import types

import httpx
import pytest
import uvicorn
import websockets
from websockets.protocol import State

from realtime import servers
from realtime.servers import daphne as daphne_servers
from realtime.servers import uvicorn as uvicorn_servers
from realtime.servers.base import ServerAdapter
from realtime.servers.daphne import DaphneAdapter, WriteGate
from realtime.servers.uvicorn import UvicornAdapter
from tests.raw_ws import RawClient, frame
from tests.servers import BIN, ROOT, Daphne, free_port, wait_for_port
from tests.waiting import alog_line, asettled

ADAPTERS = {"daphne": DaphneAdapter, "uvicorn": UvicornAdapter}


def broken(adapter: ServerAdapter, what: str) -> str:
    return (
        f"{what}: realtime.servers.{adapter.name} relies on it, and the installed {adapter.versions()} "
        f"lacks it. Adapt the adapter to this version and add it to its tested_versions (and requirements.txt)."
    )


# -- daphne, Twisted, autobahn -----------------------------------------------------------------------


def test_daphne_adapter_declares_the_names_it_patches():
    tables = daphne_servers.CLASS_ATTRIBUTES
    assert {"handle_reply", "onConnect", "onMessage", "onCloseFrame", "sendCloseFrame", "STATE_OPEN"} <= set(
        tables["daphne.ws_protocol.WebSocketProtocol"]
    )
    assert {"handle_reply", "kill_all_applications", "create_application", "log_action"} <= set(
        tables["daphne.server.Server"]
    )
    assert {"sendHttpErrorResponse", "sendData"} <= set(tables["daphne.ws_protocol.WebSocketProtocol"])
    assert {"registerProducer", "dataBuffer"} <= set(tables["twisted.internet.abstract.FileDescriptor"])
    assert {"onMessage", "dataReceived"} <= set(tables["daphne.ws_protocol.WebSocketProtocol"])  # inbound bytes
    assert {"application_queue", "remoteCloseCode", "data"} <= set(daphne_servers.WEBSOCKET_ATTRIBUTES)
    assert {"dataBuffer", "_tempDataLen", "socket", "connected", "TLS"} <= set(daphne_servers.TRANSPORT_ATTRIBUTES)
    assert "connections" in daphne_servers.SERVER_ATTRIBUTES


def test_daphne_twisted_and_autobahn_have_every_name_the_adapter_patches():
    adapter = DaphneAdapter()
    missing = adapter.missing_attributes()
    assert not missing, broken(adapter, ", ".join(missing))


class ContractDaphne(Daphne):
    def command(self) -> list[str]:
        return [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port), "tests.servers_contract_app:application"]


@pytest.fixture(scope="module")
def contract_daphne(output_dir):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    env.pop("REALTIME_DIRECT_WRITES", None)
    server = ContractDaphne(env, output_dir / "daphne-contract.log").start()
    yield server
    server.stop()


async def test_a_daphne_websocket_has_every_attribute_the_adapter_reads(contract_daphne):
    async with websockets.connect(f"{contract_daphne.ws_url}/daphne") as ws:
        report = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert not report["missing"], broken(DaphneAdapter(), ", ".join(report["missing"]))
    assert (report["writer"], report["ready"]) == ("DirectWriter", True), report


async def test_a_daphne_streaming_response_has_every_attribute_the_adapter_reads(contract_daphne):
    async with httpx.AsyncClient(timeout=10) as client:
        body = (await client.get(f"{contract_daphne.url}/daphne")).content
    report = json.loads(body.removeprefix(b": open\n\n"))
    assert not report["missing"], broken(DaphneAdapter(), ", ".join(report["missing"]))
    assert (report["writer"], report["ready"]) == ("ResponseWriter", True), report


async def denied(url: str) -> websockets.Response:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, open_timeout=10):
            pass
    return refused.value.response


async def test_a_daphne_handshake_can_be_answered_with_an_http_response(contract_daphne):
    # daphne alone answers a close before accept with 403 and has no websocket.http.response.
    start = len(contract_daphne.log())
    response = await denied(f"{contract_daphne.ws_url}/deny")
    answer = (response.status_code, response.headers.get("Retry-After"), bytes(response.body))
    assert answer == (503, "7", b"going away")
    await alog_line(contract_daphne.log, "WSREJECT /deny", start)  # daphne's access log, as for its own refusals


def inbound_contract(port: int, name: str) -> tuple[dict, dict]:
    """Drive the contract app's ``/<name>/inbound`` (tests/servers_contract_app.py) with raw frames."""
    client = RawClient(port, f"/{name}/inbound")
    try:
        head = frame(0x1, b"a" * 2000)
        client.send(head[:1000])  # half a message: still arriving
        first = json.loads(client.read_frame()[1])
        client.send(head[1000:] + frame(0x1, b"b" * (1 << 20)))
        second = json.loads(client.read_frame()[1])
        return first, second
    finally:
        client.close()


def check_inbound(adapter: ServerAdapter, first: dict, second: dict, one_read: int) -> None:
    assert not first["missing"], broken(adapter, ", ".join(first["missing"]))
    assert first["attached"], broken(adapter, "the inbound patches (meter_inbound refused the connection)")
    assert first["arriving"] and 0 < first["parsing"] <= 1000, broken(adapter, f"its parse buffers ({first})")
    assert second["charged"] and second["paused"], broken(adapter, f"the charge of a queued message ({second})")
    assert second["read_while_paused"] <= one_read, broken(adapter, f"pausing its reads ({second})")
    assert second["resumed"] and second["second_charged"], broken(adapter, f"resuming its reads ({second})")


async def test_daphne_charges_inbound_bytes_and_pauses_reading_where_the_meter_says(contract_daphne):
    first, second = await asyncio.to_thread(inbound_contract, contract_daphne.port, "daphne")
    check_inbound(DaphneAdapter(), first, second, 64 * 1024)


# -- uvicorn, websockets, httptools ------------------------------------------------------------------


async def uvicorn_report(kind: str) -> dict:
    """The contract app's report from a uvicorn in this process (websockets-sansio, httptools)."""
    from tests.servers_contract_app import application

    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, http="httptools", ws="websockets-sansio",
                            lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.to_thread(wait_for_port, port)
        if kind == "websocket":
            async with websockets.connect(f"ws://127.0.0.1:{port}/uvicorn") as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 10))
        async with httpx.AsyncClient(timeout=10) as client:
            body = (await client.get(f"http://127.0.0.1:{port}/uvicorn")).content
        return json.loads(body.removeprefix(b": open\n\n"))
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def test_uvicorn_has_every_name_the_adapter_patches():
    server = uvicorn.Server(uvicorn.Config(lambda scope, receive, send: None))
    for name in uvicorn_servers.SERVER_ATTRIBUTES:
        assert hasattr(uvicorn.Server, name), broken(UvicornAdapter(), f"uvicorn.server.Server.{name}")
    for name in uvicorn_servers.SERVER_INSTANCE_ATTRIBUTES:
        assert hasattr(server, name), broken(UvicornAdapter(), f"uvicorn.server.Server().{name}")


async def test_a_uvicorn_handshake_answered_with_an_http_response_logs_no_error(caplog):
    # uvicorn's websockets-sansio leaves handshake_complete False after a websocket.http.response:
    # without UvicornAdapter.handshake_denied it logs "ASGI callable returned without completing handshake."
    from tests.servers_contract_app import application

    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, http="h11", ws="websockets-sansio",
                            lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    try:
        await asyncio.to_thread(wait_for_port, port)
        for _ in range(5):
            response = await denied(f"ws://127.0.0.1:{port}/deny")
            assert (response.status_code, response.headers.get("Retry-After")) == (503, "7")
        await asettled(lambda: [r for r in caplog.records if '"WebSocket /deny" 503' in r.getMessage()], len, 5, 0.05)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


async def test_uvicorn_charges_inbound_bytes_and_pauses_reading_where_the_meter_says():
    from tests.servers_contract_app import application

    missing = UvicornAdapter().missing_methods()
    assert not missing, broken(UvicornAdapter(), ", ".join(missing))
    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, ws="websockets-sansio", lifespan="off",
                            log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.to_thread(wait_for_port, port)
        first, second = await asyncio.to_thread(inbound_contract, port, "uvicorn")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    check_inbound(UvicornAdapter(), first, second, 256 * 1024)


@pytest.mark.parametrize(("kind", "writer"), [("websocket", "TransportWriter"), ("http", "ChunkWriter")])
async def test_a_uvicorn_connection_has_every_attribute_the_adapter_reads(kind, writer):
    assert {"writable", "handshake_complete", "close_sent", "disconnected", "conn"} <= set(
        uvicorn_servers.WEBSOCKET_ATTRIBUTES
    )
    assert {"response_started", "response_complete", "disconnected", "chunked_encoding", "flow", "transport"} <= set(
        uvicorn_servers.CYCLE_ATTRIBUTES
    )
    report = await uvicorn_report(kind)
    assert not report["missing"], broken(UvicornAdapter(), ", ".join(report["missing"]))
    assert (report["writer"], report["ready"]) == (writer, True), report


# -- versions ------------------------------------------------------------------------------------------


def pins() -> dict[str, str]:
    text = (ROOT / "requirements.txt").read_text()
    found = re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s#]+)", text, re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


@pytest.mark.parametrize("name", ADAPTERS)
def test_tested_versions_are_what_requirements_txt_pins(name):
    adapter, pinned = ADAPTERS[name](), pins()
    for package, tested in adapter.tested_versions.items():
        assert package in pinned, f"requirements.txt does not pin {package}, which realtime.servers.{name} reads"
        assert pinned[package] in tested, (
            f"requirements.txt pins {package}=={pinned[package]}; realtime.servers.{name} was tested on {tested}"
        )


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_installed_servers_are_versions_the_adapters_were_tested_on(name):
    adapter = ADAPTERS[name]()
    assert not adapter.untested_versions(), broken(adapter, f"an untested version ({adapter.untested_versions()})")


# -- the version check and DIRECT_WRITES, with fake connections ------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False


class FakeSansio:
    """Has what realtime.servers.uvicorn reads on a websockets-sansio protocol."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.handshake_complete, self.close_sent, self.disconnected = True, False, False
        self.initial_response = None
        self.conn = types.SimpleNamespace(state=State.OPEN)
        self.transport = FakeTransport()

    async def asgi_send(self, message: dict) -> None:
        pass


FakeSansio.__module__ = uvicorn_servers.WEBSOCKET_MODULE


class FakeAutobahn:
    """Has what realtime.servers.daphne reads on an accepted daphne WebSocket."""

    STATE_OPEN = 3

    def __init__(self) -> None:
        self.state = self.STATE_OPEN
        self.transport = FakeTransport()
        self._realtime_gate = WriteGate(self.transport)

    def sendMessage(self, payload: bytes, isBinary: bool) -> None:
        pass


class FakeDaphneServer:
    async def handle_reply(self, protocol, message: dict) -> None:
        pass


def fake_send(name: str):
    if name == "daphne":
        return functools.partial(FakeDaphneServer().handle_reply, FakeAutobahn())
    return FakeSansio().asgi_send


@pytest.mark.parametrize("name", ADAPTERS)
def test_an_untested_version_turns_direct_writes_off_with_one_warning(name, monkeypatch, caplog):
    adapter = ADAPTERS[name]()
    package = next(iter(adapter.tested_versions))
    installed = {**{p: v[0] for p, v in adapter.tested_versions.items()}, package: "99.0.1"}
    monkeypatch.setattr(adapter, "installed_versions", lambda: installed)
    monkeypatch.setattr(servers, "ADAPTERS", (adapter,))
    send = fake_send(name)
    assert adapter.websocket_writer(send) is not None, "the fake connection does not look like the server's"
    with caplog.at_level(logging.WARNING, logger="realtime.servers"):
        assert servers.install()  # start-up
        for _ in range(3):
            assert servers.websocket_writer(send) is None
    warnings = [r for r in caplog.records if r.name == "realtime.servers"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert f"{package} 99.0.1" in warnings[0].getMessage() and "direct writes are off" in warnings[0].getMessage()


@pytest.mark.parametrize("name", ADAPTERS)
def test_direct_writes_false_gives_no_writer(name, monkeypatch, settings):
    adapter = ADAPTERS[name]()
    monkeypatch.setattr(servers, "ADAPTERS", (adapter,))
    send = fake_send(name)
    writer = servers.websocket_writer(send)
    assert writer is not None and writer.ready()
    writer.write(b"frame")
    transport = send.args[0].transport if name == "daphne" else send.__self__.transport
    assert transport.written == [b"frame"]
    settings.REALTIME = {**settings.REALTIME, "DIRECT_WRITES": False}
    assert servers.websocket_writer(send) is None
    assert servers.response_writer(send) is None
    assert not servers.direct_writes_enabled()


class _TwistedTransport:
    """The state of a Twisted TCP transport that ``send_now`` reads, over a real socket."""

    def __init__(self, sock, *, tls: bool = False, buffered: bytes = b"") -> None:
        self.socket, self.TLS, self.connected = sock, tls, 1
        self.dataBuffer, self._tempDataLen = buffered, len(buffered)
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _read_all(sock) -> bytes:
    sock.setblocking(False)
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_send_now_sends_at_once_when_twisted_holds_nothing_and_keeps_order_otherwise():
    import socket

    ours, peer = socket.socketpair()
    ours.setblocking(False)
    try:
        transport = _TwistedTransport(ours)
        daphne_servers.send_now(transport, b"frame")
        assert _read_all(peer) == b"frame" and transport.written == []

        behind = _TwistedTransport(ours, buffered=b"earlier")  # Twisted holds bytes: they go first
        daphne_servers.send_now(behind, b"later")
        assert behind.written == [b"later"] and _read_all(peer) == b""

        tls = _TwistedTransport(ours, tls=True)  # TLS bytes must go through the TLS layer
        daphne_servers.send_now(tls, b"secret")
        assert tls.written == [b"secret"] and _read_all(peer) == b""

        big = bytes(range(256)) * 40_000  # more than the socket buffer takes: the rest is Twisted's
        full = _TwistedTransport(ours)
        daphne_servers.send_now(full, big)
        assert len(full.written) == 1 and 0 < len(full.written[0]) < len(big)
        sent = len(big) - len(full.written[0])
        assert _read_all(peer) == big[:sent] and full.written[0] == big[sent:]
    finally:
        ours.close()
        peer.close()
