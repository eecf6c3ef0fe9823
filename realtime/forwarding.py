"""Proof that a view's ``stream()`` only forwards a Channel, so that the direct delivery path may serve it.

The specification's push pattern is a generator that relays a subscription::

    async def stream(self, ws, **params):            # WebSocketView
        async for message in ticks.subscribe():
            yield message

    async def stream(self, request, **params):       # SSEView
        async for message in ticks.subscribe():
            yield {"data": message}

Run as written, it costs a task wake-up per socket per message. Such a generator runs no code of
its own between the subscription and the socket, so the engine may serve the view as it serves
``relay = ticks`` (``realtime.relay``, ``realtime.sse_relay``): the frame built once per publish and
written to each transport, with the same messages, order, drops and close codes.

The proof reads the function's bytecode, not its source: it must be instruction for instruction
the bytecode this interpreter compiles for one of the shapes above (:data:`MESSAGE`, :data:`DATA`),
with the channel named by a module global (``ticks``), a closure variable, or an attribute of
``self`` that is a plain value (``self.channel``, not a property), and ``subscribe()`` called with
no arguments. The shapes are compiled here, at import, by the same interpreter, so a Python
release that compiles them differently changes both sides alike. Anything else (a filter, a
transform, a ``try``, an argument to ``subscribe()``, a decorator, a Channel subclass that
overrides ``subscribe``) is not proven and runs as written.

``REALTIME["FORWARD_STREAMS"] = False`` turns the proof off: every ``stream()`` runs as written.

The channel is looked up when a connection starts, as the generator would look it up when it
starts; a name that does not resolve to a Channel leaves the generator to run (and fail) as written.
"""

from __future__ import annotations

import dis
import inspect
import types
from dataclasses import dataclass
from typing import Any

#: ``async for message in channel.subscribe(): yield message`` (WebSocketView.stream).
MESSAGE = "message"
#: ``async for message in channel.subscribe(): yield {"data": message}`` (SSEView.stream).
DATA = "data"

_YIELDS = {MESSAGE: "m", DATA: '{"data": m}'}

_SOURCES = {
    "global": "async def stream(self):\n    async for m in CHANNEL.subscribe():\n        yield {yields}\n",
    "attr": "async def stream(self):\n    async for m in self.channel.subscribe():\n        yield {yields}\n",
    "deref": (
        "def outer():\n    channel = None\n\n    async def stream(self):\n"
        "        async for m in channel.subscribe():\n            yield {yields}\n\n    return stream\n"
    ),
}

_LOCALS = frozenset({"LOAD_FAST", "STORE_FAST", "LOAD_FAST_CHECK"})


@dataclass(frozen=True)
class Proof:
    """Where a proven ``stream()`` finds its channel: a module ``global``, a closure (``deref``) or ``self.<attr>``."""

    kind: str
    name: str

    def channel(self, function: types.FunctionType, view: Any) -> Any:
        """The Channel the generator would subscribe to on ``view``, or None (then it runs as written)."""
        from .pubsub.channel import Channel

        missing = object()
        if self.kind == "global":
            found = function.__globals__.get(self.name, missing)
        elif self.kind == "deref":
            try:
                cell = function.__closure__[function.__code__.co_freevars.index(self.name)]  # type: ignore[index]
                found = cell.cell_contents
            except (TypeError, ValueError, IndexError):
                return None
        else:
            found = _plain_attribute(view, self.name, missing)
        if not isinstance(found, Channel):
            return None
        if type(found).subscribe is not Channel.subscribe or "subscribe" in vars(found):
            return None
        return found


def _plain_attribute(view: Any, name: str, missing: Any) -> Any:
    """``view.<name>`` when reading it runs no code (an instance or class value, no descriptor)."""
    instance = getattr(view, "__dict__", {})
    if name in instance:
        return instance[name]
    for klass in type(view).__mro__:
        if name in vars(klass):
            value = vars(klass)[name]
            return missing if hasattr(type(value), "__get__") else value
    return missing


def _instructions(code: types.CodeType) -> list[dis.Instruction]:
    return [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG")]


def _shape(code: types.CodeType) -> tuple[tuple[Any, ...], bytes, Proof | None, int] | None:
    """The instructions with every name and slot replaced by what must match, the exception table,
    the channel's place, and the local slot the attribute form reads (-1 otherwise)."""
    shape: list[tuple[Any, ...]] = []
    slots: dict[int, int] = {}
    proof: Proof | None = None
    base = -1
    instructions = _instructions(code)
    for index, ins in enumerate(instructions):
        op = ins.opname
        if op in _LOCALS:
            shape.append((op, slots.setdefault(ins.arg, len(slots))))  # type: ignore[arg-type]
        elif op == "LOAD_GLOBAL":
            if proof is not None:
                return None
            proof = Proof("global", ins.argval)
            shape.append((op, ins.arg & 1))  # type: ignore[operator]
        elif op == "LOAD_DEREF":
            if proof is not None:
                return None
            proof = Proof("deref", ins.argval)
            shape.append((op,))
        elif op == "LOAD_ATTR":
            if ins.argval == "subscribe":
                shape.append((op, "subscribe", ins.arg & 1))  # type: ignore[operator]
            else:
                previous = instructions[index - 1] if index else None
                if proof is not None or previous is None or previous.opname != "LOAD_FAST":
                    return None
                proof = Proof("attr", ins.argval)
                base = previous.arg  # type: ignore[assignment]
                shape.append((op, "*", ins.arg & 1))  # type: ignore[operator]
        elif op == "LOAD_CONST":
            shape.append((op, repr(ins.argval)))
        else:
            shape.append((op, ins.arg))
    return tuple(shape), code.co_exceptiontable, proof, base


def _compile_templates() -> dict[str, dict[str, tuple[tuple[Any, ...], bytes]]]:
    templates: dict[str, dict[str, tuple[tuple[Any, ...], bytes]]] = {}
    for form, yields in _YIELDS.items():
        templates[form] = {}
        for kind, source in _SOURCES.items():
            namespace: dict[str, Any] = {}
            exec(compile(source.replace("{yields}", yields), "<realtime.forwarding>", "exec"), namespace)  # noqa: S102
            function = namespace["outer"]() if kind == "deref" else namespace["stream"]
            shape = _shape(function.__code__)
            if shape is not None:
                templates[form][kind] = shape[:2]
    return templates


try:
    _TEMPLATES = _compile_templates()
except Exception:  # an interpreter whose bytecode dis cannot read: nothing is ever proven
    _TEMPLATES = {MESSAGE: {}, DATA: {}}

_proven: dict[tuple[types.CodeType, str], Proof | None] = {}


def prove(code: types.CodeType, form: str) -> Proof | None:
    """Where the channel comes from, when ``code`` is exactly ``form`` relaying it; else None."""
    key = (code, form)
    if key in _proven:
        return _proven[key]
    proof: Proof | None = None
    try:
        shape = _shape(code) if code.co_flags & inspect.CO_ASYNC_GENERATOR else None
    except Exception:  # bytecode this module cannot read is not proven
        shape = None
    if shape is not None and shape[2] is not None:
        found = shape[2]
        template = _TEMPLATES[form].get(found.kind)
        if template is not None and template == shape[:2] and (found.kind != "attr" or shape[3] == 0):
            proof = found
    _proven[key] = proof
    return proof


def forwarded_channel(view: Any, form: str, base_stream: Any) -> Any:
    """The Channel that ``view.stream`` only forwards in ``form``, or None (run the generator as written).

    ``base_stream`` is the base class's ``stream`` (which forwards nothing).
    """
    from .conf import setting

    if not setting("FORWARD_STREAMS"):
        return None
    if "stream" in getattr(view, "__dict__", {}):  # set on the instance (``as_asgi(stream=...)``): not proven
        return None
    function = getattr(type(view), "stream", None)
    if type(function) is not types.FunctionType or function is base_stream:
        return None
    proof = prove(function.__code__, form)
    if proof is None:
        return None
    return proof.channel(function, view)
