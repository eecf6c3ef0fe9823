"""The ASGI servers `realtime` knows internals of, each behind one adapter (:mod:`.base`).

``install()`` patches the running server once (called by the app's ``ready()`` and ``CoreApp``);
``websocket_writer(send)`` and ``response_writer(send)`` give the delivery path a writer of
ready-made frames for the connection behind a server's ASGI ``send``, or None: then every message
takes the ASGI send. None it is on a server no adapter knows, on a version its adapter was not
tested on (one warning at start-up), and everywhere with ``REALTIME["DIRECT_WRITES"] = False``.
``meter_inbound(send, meter)`` has the server count the client's unread bytes and stop reading past
their bounds (:mod:`realtime.inbound`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..conf import setting
from . import daphne, uvicorn
from .base import ServerAdapter, Writer

if TYPE_CHECKING:
    from ..inbound import InboundMeter

#: Every adapter, asked in turn; each recognises only its own server's ``send``.
ADAPTERS: tuple[ServerAdapter, ...] = (daphne.adapter, uvicorn.adapter)


def install() -> bool:
    """Patch the running server and check its versions (warning once if untested); True if one is known."""
    known = False
    for adapter in ADAPTERS:
        if adapter.install():
            adapter.trusted()
            known = True
    return known


def direct_writes_enabled() -> bool:
    """``REALTIME["DIRECT_WRITES"]``: whether writers are given at all (each adapter also checks its versions)."""
    return bool(setting("DIRECT_WRITES"))


def websocket_writer(send: Any) -> Writer | None:
    """A writer of WebSocket frames for the accepted socket behind ``send``, or None."""
    if not direct_writes_enabled():
        return None
    for adapter in ADAPTERS:
        if adapter.features.websocket_writes:
            writer = adapter.websocket_writer(send)
            if writer is not None:
                return writer if adapter.trusted() else None
    return None


def response_writer(send: Any) -> Writer | None:
    """A writer of SSE frames for the streaming response behind ``send``, or None."""
    if send is None or not direct_writes_enabled():
        return None
    for adapter in ADAPTERS:
        if adapter.features.response_writes:
            writer = adapter.response_writer(send)
            if writer is not None:
                return writer if adapter.trusted() else None
    return None


def abort(send: Any) -> bool:
    """Drop the connection behind ``send`` shortly, whatever it still buffers; False if no adapter can."""
    return any(adapter.abort(send) for adapter in ADAPTERS)


def meter_inbound(send: Any, meter: InboundMeter) -> bool:
    """Have the server behind ``send`` charge ``meter`` and pause reading past its bounds; False if no adapter can.

    Not a speed trick: it is on whatever ``DIRECT_WRITES`` says (the adapters check the names they rely on).
    """
    return any(adapter.features.inbound_pushback and adapter.meter_inbound(send, meter) for adapter in ADAPTERS)
