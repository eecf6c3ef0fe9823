"""What `realtime` needs from an ASGI server, declared per server the way Django declares databases.

Each server `realtime` knows internals of (daphne, uvicorn) has one :class:`ServerAdapter` in this
package, as each database has a backend in ``django.db.backends``:

- ``features``: what the adapter gives on that server (:class:`Features`, like a backend's
  ``DatabaseFeatures``);
- ``tested_versions``: the exact versions of the server's packages the adapter was tested on
  (``requirements.txt`` pins them; ``tests/test_servers_contract.py`` checks both agree and that
  every private name the adapter relies on is there);
- ``install()``: patches the server, once, where it needs patching;
- ``websocket_writer(send)`` / ``response_writer(send)``: a :class:`Writer` of ready-made bytes to
  the connection behind a server's ASGI ``send``, or None when ``send`` is not this server's;
- ``abort(send)``: drop the TCP connection soon, whatever it still buffers;
- ``meter_inbound(send, meter)``: have the server count, in the connection's
  :class:`realtime.inbound.InboundMeter`, the bytes it holds of the client's messages (its queue for
  the application, its parse buffers), and let the meter stop and restart reading the socket.

Direct writes bypass the server's own send, so they trust its private state: on a version outside
``tested_versions`` (:meth:`ServerAdapter.trusted`) they are refused, with one warning on the
``realtime.servers`` logger naming the versions, instead of guessing.

The errors a server's send raises for a departed or slow client are here too, so that the adapters
and :mod:`realtime.flow` share them without importing each other.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from ..closecodes import CloseCode
from ..pubsub.delivery import Writer as Writer  # what the delivery engine writes through

if TYPE_CHECKING:
    from ..inbound import InboundMeter

logger = logging.getLogger("realtime.servers")

#: ASGI extension key: asks the server to drop the TCP connection soon after this message,
#: whatever is still buffered (daphne honours it through realtime.servers.daphne).
ABORT_KEY = "realtime.abort"
#: How long a slow consumer's last frame may take to flush before the connection is dropped.
ABORT_GRACE_SECONDS = 1.0


class ClientDisconnected(OSError):
    """A send reached a connection the client has left (ASGI asks servers to raise an OSError).

    ``code`` is the client's close code when the server knows it (daphne does), else None.
    """

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(reason or f"the client has disconnected ({code})")
        self.code = code


class SlowConsumer(ClientDisconnected):
    """The connection was ended because its client did not read what it was sent."""

    def __init__(self, reason: str = "slow consumer") -> None:
        super().__init__(int(CloseCode.SLOW_CONSUMER), reason)


@dataclass(frozen=True)
class Features:
    """What an adapter gives on its server (with versions it was tested on)."""

    #: WebSocket frames can be written straight to the transport (``websocket_writer``).
    websocket_writes: bool = False
    #: SSE frames can be written straight to a streaming response (``response_writer``).
    response_writes: bool = False
    #: A send to a departed client raises ClientDisconnected with the client's close code.
    close_code_on_disconnect: bool = False
    #: Every close code RFC 6455 lets a server send reaches the client, with its reason.
    any_close_code: bool = False
    #: The ASGI send waits while the client's write buffer is over its high-water mark.
    backpressure: bool = False
    #: The connection is dropped after a message that carries ABORT_KEY, or by ``abort(send)``.
    abort: bool = False
    #: On SIGTERM every WebSocket is closed with 1001 before the applications are cancelled.
    graceful_shutdown: bool = False
    #: ``meter_inbound``: the inbound bytes the server holds are counted, and reading the socket is paused past them.
    inbound_pushback: bool = False


class ServerAdapter(ABC):
    """One ASGI server as `realtime` uses it. Subclasses declare the class attributes below."""

    #: The server's name, for messages.
    name: ClassVar[str]
    #: Modules present in ``sys.modules`` once this server runs in the process.
    modules: ClassVar[tuple[str, ...]]
    features: ClassVar[Features]
    #: Distribution name → the versions this adapter was tested on.
    tested_versions: ClassVar[Mapping[str, tuple[str, ...]]]

    def __init__(self) -> None:
        self._trusted: bool | None = None

    def running(self) -> bool:
        """True when this server's modules are loaded: it serves, or (daphne in INSTALLED_APPS) it could."""
        return any(name in sys.modules for name in self.modules)

    def installed_versions(self) -> dict[str, str | None]:
        """The installed version of each package in ``tested_versions`` (None: not installed)."""
        versions: dict[str, str | None] = {}
        for name in self.tested_versions:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        return versions

    def untested_versions(self) -> dict[str, str]:
        """Installed packages whose version is not among ``tested_versions`` (missing ones cannot run)."""
        return {
            name: version
            for name, version in self.installed_versions().items()
            if version is not None and version not in self.tested_versions[name]
        }

    def versions(self) -> str:
        """``daphne 4.2.3, twisted 26.10.0, ...``: the installed set, for messages."""
        installed = self.installed_versions().items()
        return ", ".join(f"{name} {version or '(not installed)'}" for name, version in installed)

    def trusted(self) -> bool:
        """True when every installed package is a tested version; else False, with one warning."""
        if self._trusted is None:
            untested = self.untested_versions()
            self._trusted = not untested
            if untested:
                logger.warning(
                    "realtime: %s is running with %s, not a version realtime was tested on (%s); direct writes "
                    "are off for it and every message takes the ASGI send",
                    self.name,
                    ", ".join(f"{name} {version}" for name, version in untested.items()),
                    ", ".join(f"{name} {' or '.join(tested)}" for name, tested in self.tested_versions.items()),
                )
        return self._trusted

    def install(self) -> bool:
        """Patch the server once where it needs it; True when this server is the one running."""
        return self.running()

    @abstractmethod
    def websocket_writer(self, send: Any) -> Writer | None:
        """A writer of WebSocket frames for the accepted socket behind ``send``, or None."""

    @abstractmethod
    def response_writer(self, send: Any) -> Writer | None:
        """A writer of SSE frames for the streaming response behind ``send``, or None."""

    def missing(self, send: Any) -> list[str]:
        """What the adapter reads on the live connection behind ``send`` and that connection lacks.

        Checked on a real server by tests/test_servers_contract.py.
        """
        return []

    def abort(self, send: Any) -> bool:
        """Drop the connection behind ``send`` in ABORT_GRACE_SECONDS; False when not this server's."""
        return False

    def meter_inbound(self, send: Any, meter: InboundMeter) -> bool:
        """Charge ``meter`` with what the server holds of the client's messages on the WebSocket behind
        ``send``, and give it the control of reading that socket; False when not this server's, or it cannot.

        Called before ``websocket.accept``. The connection gives each message back (``meter.taken()``)
        as it hands it to the view.
        """
        return False
