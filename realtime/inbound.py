"""What one WebSocket makes the server hold of its client's messages, bounded in bytes.

A client can send faster than its view reads: a handler that is busy, or that waits on a send to
that very client while the client does not read its replies. Every message received and not yet
handed to the view is held by the server, in three places: the ASGI server's queue (daphne hands
each message to the application at once; uvicorn's websockets-sansio queues them), the server's
parse buffers (bytes read but not parsed yet, a message still arriving), and the view's own inbox
(a push-only ``_handle``, see ``WebSocketView.handler_reads``). One :class:`InboundMeter` per
connection counts them where they are held:

- the server adapter (:func:`realtime.servers.meter_inbound`) charges each message it queues for
  the application (``charge``), reports its parse buffers after each read (``parsed``), and gives
  the meter ``pause`` and ``resume`` for its transport (daphne: Twisted's ``pauseProducing``;
  uvicorn: asyncio's ``pause_reading``);
- the connection gives each message back as it hands it to the view (``taken``).

The bounds, both read when the connection is accepted:

- ``MAX_INBOUND_BYTES`` per connection: past it, a connection with messages waiting is no longer
  read, so TCP fills and the client's sends block; it is read again once its view has read down to
  half of it (or everything). A connection with nothing waiting is always read, so a message as
  large as ``MAX_MESSAGE_SIZE`` can always arrive: a connection holds at most the larger of the two
  plus one read from the socket (64 KiB on daphne, 256 KiB on uvicorn).
- ``MAX_INBOUND_BYTES_PER_IP`` shared by the connections of one client address
  (:data:`realtime.security.inbound_addresses`): past half of it, every connection of the address
  with messages waiting is no longer read; a connection whose bytes take the address past the whole
  budget is closed with 1008 ``Too much unread data from this address``. So an address holds at most
  its budget plus one read.

Where the server cannot pause reading (a server no adapter knows, an untested version), the meter
counts the view's inbox alone, and a connection past its limit is closed with 1008 ``Too much
unread data`` instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .conf import setting
from .security import ByteBudget, inbound_addresses

#: The close reasons (code 1008) of a connection past its bound that could not be paused, and of
#: one that took its address past the address's budget.
OVER_CONNECTION = "Too much unread data"
OVER_ADDRESS = "Too much unread data from this address"


class ReadControl(Protocol):
    """Stops and restarts reading one connection's socket: given by its server adapter."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


def message_size(message: dict[str, Any]) -> int:
    """The payload size of a ``websocket.receive`` message (characters of a text one, as it is held)."""
    payload = message.get("text")
    if payload is None:
        payload = message.get("bytes")
    return len(payload) if payload is not None else 0


class InboundMeter:
    """The bytes the server holds for one connection's client, unread by its view."""

    __slots__ = (
        "_control", "_overflow", "address_limit", "budget", "closed", "key", "limit", "overflowed", "parsing",
        "paused", "queued", "server", "sizes",
    )

    def __init__(
        self, key: object, overflow: Callable[[str], None], budget: ByteBudget = inbound_addresses,
    ) -> None:
        limit, address_limit = setting("MAX_INBOUND_BYTES"), setting("MAX_INBOUND_BYTES_PER_IP")
        self.limit: int | None = int(limit) if limit else None
        self.address_limit: int | None = int(address_limit) if address_limit and key is not None else None
        self.key = key
        self.budget = budget
        #: Bytes of the messages queued for the view (their sizes, oldest first; made at the first, as an
        #: idle socket needs none), and of the parse buffers.
        self.sizes: deque[int] | None = None
        self.queued = 0
        self.parsing = 0
        self.paused = False
        self.closed = False
        #: The reason the connection is being closed for, once it went past a bound it could not be held to.
        self.overflowed: str | None = None
        #: True once a server adapter charges this meter and can pause its reading.
        self.server = False
        self._control: ReadControl | None = None
        self._overflow = overflow
        if self.address_limit is not None:
            budget.join(key, self)

    @property
    def held(self) -> int:
        """Bytes held for this connection now."""
        return self.queued + self.parsing

    # -- the server adapter's side ------------------------------------------------------------

    def attach(self, control: ReadControl) -> None:
        """The adapter charges this meter from now on, and stops and restarts reading the socket with ``control``."""
        self._control = control
        self.server = True
        if self.address_limit is not None and self.budget.total(self.key) >= self.address_limit:
            self._set_paused(True)  # the address has spent its budget: read once it is back under it

    def charge(self, size: int) -> None:
        """A message of ``size`` bytes was queued for the view (out of the parse buffers, as far as they held it)."""
        if self.closed:
            return
        moved = min(size, self.parsing)
        self.parsing -= moved
        if self.sizes is None:
            self.sizes = deque()
        self.sizes.append(size)
        self.queued += size
        self._grew(size - moved)

    def parsed(self, size: int) -> None:
        """The server's parse buffers for this connection now hold ``size`` bytes."""
        if self.closed or size == self.parsing:
            return
        delta, self.parsing = size - self.parsing, size
        if delta > 0:
            self._grew(delta)
        else:
            self._shrank(delta)

    # -- the connection's side ----------------------------------------------------------------

    def received(self) -> None:
        """The connection took a message from the server (for the view, or for its inbox): a server
        that reads again on its own once its queue is empty (uvicorn) stops again while the meter says so."""
        if self.paused and self._control is not None and not self.closed:
            self._control.pause()

    def taken(self) -> None:
        """The oldest queued message was handed to the view."""
        if self.closed or not self.sizes:
            return
        size = self.sizes.popleft()
        self.queued -= size
        self._shrank(-size)

    def release(self) -> None:
        """The connection has ended: give every byte back to the address. A second call does nothing."""
        if self.closed:
            return
        self.closed = True
        held, self.queued, self.parsing = self.held, 0, 0
        self.sizes = None
        if self.address_limit is not None:
            self.budget.leave(self.key, self)
            self.budget.add(self.key, -held)
        self._control = None

    def budget_freed(self) -> None:
        """Called by the budget when a connection of the address gave bytes back."""
        self._maybe_resume()

    def budget_spent(self) -> None:
        """Called by the budget when another connection took the address to its whole budget: stop
        reading, whatever is queued, until the address is back under it."""
        if self.closed or self.overflowed is not None or not self.server:
            return
        if not self.paused:
            self._set_paused(True)

    # -- the policy ----------------------------------------------------------------------------

    def _grew(self, delta: int) -> None:
        """``delta`` more bytes are held (0: as many, but more of them queued)."""
        if self.address_limit is None:
            address_total = 0
        else:
            address_total = self.budget.add(self.key, delta) if delta else self.budget.total(self.key)
        if self.overflowed is not None:
            if self._control is not None:
                self._control.pause()  # uvicorn reads again to see the close's reply: not from this client
            return
        if delta > 0 and self.address_limit is not None and address_total >= self.address_limit:
            self._close(OVER_ADDRESS)
            self.budget.spent(self.key, self)
            return
        if self.paused:
            if self._control is not None:
                self._control.pause()  # a server that resumed reading on its own (uvicorn's receive) stops again
            return
        if not self.queued:
            return
        over_own = self.limit is not None and self.held >= self.limit
        if over_own or self._address_busy(address_total):
            if self.server:
                self._set_paused(True)
            elif over_own:
                self._close(OVER_CONNECTION)

    def _shrank(self, delta: int) -> None:
        if self.address_limit is not None:
            self.budget.add(self.key, delta)
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        if self.closed or not self.paused or self.overflowed is not None:
            return
        if self._may_resume():
            self._set_paused(False)
            return
        if self._control is not None:
            self._control.pause()  # a server that resumed reading on its own (uvicorn's receive) stops again
        if self._address_busy():
            self.budget.wait(self.key, self)

    def _address_busy(self, address_total: int | None = None) -> bool:
        """Past half the address's budget: its connections with messages waiting are not read."""
        if self.address_limit is None:
            return False
        if address_total is None:
            address_total = self.budget.total(self.key)
        return address_total >= self.address_limit // 2

    def _may_resume(self) -> bool:
        if self.address_limit is not None:
            total = self.budget.total(self.key)
            if total >= self.address_limit:
                return False  # the whole budget is spent: no connection of the address is read
        else:
            total = 0
        if not self.queued:
            return True
        if self.limit is not None and self.held > self.limit // 2:
            return False
        return not self._address_busy(total)

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            if self._control is not None:
                self._control.pause()
            if self.address_limit is not None and self._address_busy():
                self.budget.wait(self.key, self)  # told when the address gives bytes back
        else:
            if self.address_limit is not None:
                self.budget.stop_waiting(self.key, self)
            if self._control is not None:
                self._control.resume()

    def _close(self, reason: str) -> None:
        """Stop reading, and have the connection closed with 1008 ``reason`` (its bytes stay counted until it ends)."""
        self.overflowed = reason
        self.paused = True
        if self._control is not None:
            self._control.pause()
        if self.address_limit is not None:
            self.budget.stop_waiting(self.key, self)
        self._overflow(reason)
