"""An incremental parser of ``text/event-stream`` bodies, as the WHATWG spec has EventSource read them.

Bytes go in as they arrive, in chunks cut anywhere; complete events come out. Comments (``: ping``)
are kept apart, ``retry`` is remembered, and a block without ``data`` dispatches nothing, exactly as
in a browser.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """One dispatched event: ``data`` is the raw text; ``json()`` decodes it."""

    data: str
    event: str = "message"
    id: str | None = None  # the id field of this event's block, if it had one

    def json(self) -> Any:
        """The data decoded as JSON."""
        return json.loads(self.data)


@dataclass
class EventStreamParser:
    """Feed it bytes with ``feed``; it returns the events those bytes completed."""

    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    last_event_id: str = ""
    _decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    _buffer: str = ""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _started: bool = False
    _after_cr: bool = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse ``chunk``; return the events it completed, in order."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._buffer += text
        events = []
        while True:
            line, ending = self._next_line()
            if ending is None:
                break
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _next_line(self) -> tuple[str, str | None]:
        if not self._buffer:
            return "", None
        if self._after_cr and self._buffer.startswith("\n"):
            self._buffer = self._buffer[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._after_cr = False
        for index, char in enumerate(self._buffer):
            if char == "\n" or char == "\r":
                size = 2 if self._buffer[index : index + 2] == "\r\n" else 1
                line, self._buffer = self._buffer[:index], self._buffer[index + size :]
                self._after_cr = size == 1 and char == "\r"
                return line, char
        return "", None

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, event, event_id = self._data, self._event, self._id
        self._data, self._event, self._id = [], "", None
        if not data:
            return None
        return Event(data="\n".join(data), event=event or "message", id=event_id)
