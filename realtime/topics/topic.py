"""Topic: a family of channels declared like a view (Phoenix's ``join/3``, Action Cable's ``subscribed``).

```python
class Room(Topic):
    pattern = "room:{id:int}"
    permission_classes = [IsAuthenticated, IsRoomMember]   # checked on every subscribe
    presence = True
    history = 200

    def member_info(self, user):
        return {"name": user.get_username()}

    async def on_publish(self, user, data, **params):
        return {"text": str(data["text"])[:500], "from": user.get_username()}
```

Each channel name (``room:42``) is one :class:`realtime.Channel` with the topic's ``history`` and
``maxlen``, so delivery is the Channel fan-out. One Topic instance is made per subscription: the
permissions see it as ``view`` (``view.params``/``view.kwargs`` hold the pattern's parameters,
converted), and its hooks run on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ..pubsub.channel import Channel, registry
from .channels import release_channel as release_channel  # its old home: topics.socket imports it from here
from .stores import presence_store

_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


class Refused(Exception):
    """Raised by ``on_subscribe`` (a ``forbidden`` reply) or ``on_publish`` (``refused``); the text is the detail."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What ``Topic.snapshot`` returns: a new subscriber's starting state, and the history id it is current to.

    ``data`` must hold the effect of every message of the channel up to ``last_id`` and of none after
    it; ``last_id`` None means "before the first message". The subscriber then receives exactly the
    messages after ``last_id``, from the channel's history (so the topic needs ``history``).
    """

    data: Any
    last_id: str | None


class CompiledPattern:
    """A topic pattern as a regex plus the converters of its parameters."""

    def __init__(self, pattern: str) -> None:
        from django.urls.converters import get_converters

        converters = get_converters()
        self.template = pattern
        self.converters: dict[str, Any] = {}
        parts, position = [], 0
        for match in _PARAM.finditer(pattern):
            name, kind = match[1], match[2] or "str"
            if kind not in converters:
                known = sorted(converters)
                raise ValueError(f"Unknown converter {kind!r} in topic pattern {pattern!r}; known: {known}")
            converter = converters[kind]
            self.converters[name] = converter
            parts.append(re.escape(pattern[position:match.start()]))
            regex = "[^:]+" if kind == "str" else converter.regex  # str stops at ":", the channel separator
            parts.append(f"(?P<{name}>{regex})")
            position = match.end()
        parts.append(re.escape(pattern[position:]))
        self.regex = re.compile("".join(parts))

    def match(self, name: str) -> dict[str, Any] | None:
        """The converted parameters when ``name`` is one canonical channel of this pattern, else None."""
        found = self.regex.fullmatch(name)
        if found is None:
            return None
        try:
            params = {key: self.converters[key].to_python(value) for key, value in found.groupdict().items()}
        except ValueError:
            return None
        return params if self.format(**params) == name else None  # "room:042" is not "room:42"

    def format(self, **params: Any) -> str:
        """The channel name for ``params``."""
        missing = set(self.converters) - set(params)
        if missing:
            raise TypeError(f"Channel {self.template!r} needs {sorted(missing)}")
        return _PARAM.sub(lambda m: str(self.converters[m[1]].to_url(params[m[1]])), self.template)


class Topic:
    """Base class of topics; one instance per subscription."""

    #: The channel names this topic serves: ``"room:{id:int}"``, ``"user:{pk:int}"``, ``"news"``.
    pattern: ClassVar[str] = ""
    #: Checked on every subscribe, with the connection as ``request`` and the Topic as ``view``.
    permission_classes: ClassVar[list[Any]] = []
    #: Keep members (one per user) and send ``join``/``leave`` to subscribers.
    presence: ClassVar[bool] = False
    #: Messages kept per channel so clients resume with ``last_id``; 0: none.
    history: ClassVar[int] = 0
    #: Undelivered messages kept per subscriber before the oldest is dropped (a ``gap``).
    maxlen: ClassVar[int] = 500
    #: Accept client publishes as they are; defining ``on_publish`` also allows them.
    allow_publish: ClassVar[bool] = False

    _compiled: ClassVar[CompiledPattern | None] = None

    def __init__(self, channel: str, params: dict[str, Any], ws: Any = None, user: Any = None) -> None:
        self.channel_name = channel
        self.params = params
        self.kwargs = params
        self.ws = ws
        self.user = user

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._compiled = None
        if cls.snapshot is not Topic.snapshot and not cls.history:
            raise TypeError(
                f"{cls.__name__} defines snapshot() but keeps no history: set history = N (e.g. 100), so a new "
                "subscriber receives the messages after the snapshot's id"
            )

    # -- hooks --------------------------------------------------------------------------------

    def member_info(self, user: Any) -> Any:
        """What other subscribers see of ``user`` in presence; sent as JSON."""
        return {}

    async def on_subscribe(self, user: Any, **params: Any) -> None:
        """Called after the permissions allowed a subscription; raise Refused to deny it."""

    async def snapshot(self, user: Any, **params: Any) -> Snapshot | None:
        """The state a new subscriber starts from, sent in its subscribe reply, or None (no snapshot).

        Return ``Snapshot(data, last_id)`` where ``data`` holds every message up to ``last_id`` and
        none after it (keep the id beside the state: ``last_id = await Room.publish(change)``, then
        apply ``change`` and store ``last_id``, one writer at a time). Called for a subscribe without
        ``last_id``, or whose ``last_id`` history could not reach; raise Refused to deny the subscribe.
        """
        return None

    async def on_unsubscribe(self, user: Any, **params: Any) -> None:
        """Called once when a subscription ends, whoever ended it."""

    async def on_publish(self, user: Any, data: Any, **params: Any) -> Any:
        """A client publishes ``data``: return what to publish, or raise Refused."""
        return data

    # -- the class's channels -----------------------------------------------------------------

    @classmethod
    def compiled(cls) -> CompiledPattern:
        if cls._compiled is None:
            if not cls.pattern:
                raise ValueError(f"{cls.__name__} needs a pattern, e.g. pattern = 'room:{{id:int}}'")
            cls._compiled = CompiledPattern(cls.pattern)
        return cls._compiled

    @classmethod
    def match(cls, name: str) -> dict[str, Any] | None:
        """The parameters of channel ``name`` when this topic serves it, else None."""
        return cls.compiled().match(name)

    @classmethod
    def channel_name_for(cls, **params: Any) -> str:
        """``Room.channel_name_for(id=42)`` → ``"room:42"``."""
        return cls.compiled().format(**params)

    @classmethod
    def accepts_publish(cls) -> bool:
        """Whether clients may publish on this topic's channels."""
        return cls.allow_publish or cls.on_publish is not Topic.on_publish

    @classmethod
    def channel(cls, name: str | None = None, /, **params: Any) -> Channel:
        """The process's Channel for ``name`` (or the name built from ``params``), made with the topic's settings."""
        name = name if name is not None else cls.channel_name_for(**params)
        channel = registry.get(name)
        if channel is None:
            channel = Channel(name, maxlen=cls.maxlen, history=cls.history)
        return channel

    @classmethod
    async def publish(cls, data: Any, name: str | None = None, /, **params: Any) -> str | None:
        """Publish from the server (views, tasks): ``await Room.publish({"text": "hi"}, id=42)``; returns the id."""
        return (await cls.channel(name, **params).publish_with_id(data))[1]

    @classmethod
    async def members(cls, name: str | None = None, /, **params: Any) -> list[dict[str, Any]]:
        """Who is in a channel, across processes: ``await Room.members(id=42)``."""
        name = name if name is not None else cls.channel_name_for(**params)
        return await presence_store().members(name)

