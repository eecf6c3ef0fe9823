"""Which of two route patterns is more specific: the rule that orders a router's routes.

Go's ``net/http`` ServeMux rule, applied to Django path patterns: a pattern is more specific
than another when it matches a strict subset of the other's paths, and the most specific
pattern that matches a path serves it, whatever the order of registration. Two patterns that
match some of the same paths with neither more specific are refused at start-up.

Patterns are compared segment by segment (``/``-separated). A static segment is narrower than a
parameter it satisfies (``moderation`` against ``{room}``); among Django's converters ``int`` and
``uuid`` are narrower than ``slug``, which is narrower than ``str``; ``int`` and ``uuid`` never
match the same text. A custom converter is taken to match within one segment (narrower than
``str``); two different custom converters cannot be ordered and are refused. ``<path:rest>`` is
understood as a whole last segment (like Go's ``{rest...}``); anywhere else it makes a pattern
comparable only by its leading segments.

Pure functions, no Django URL objects: tested from tables in ``tests/test_routing.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

_PIECE = re.compile(r"<(?:(\w+):)?(\w+)>")


class Relation(Enum):
    """How the paths matched by one pattern (or segment) relate to another's."""

    SAME = "same"  # exactly the same paths
    NARROWER = "narrower"  # a strict subset: the first is more specific
    WIDER = "wider"  # a strict superset: the second is more specific
    DISJOINT = "disjoint"  # no path matches both
    CONFLICT = "conflict"  # some paths match both and neither is more specific


#: Converter pairs (narrower, wider) among Django's built-ins; ``str`` is wider than any segment.
_NARROWER = {("int", "slug"), ("uuid", "slug")}
_DISJOINT = {frozenset(("int", "uuid"))}
_EXAMPLES = {"int": "1", "slug": "a", "str": "x", "uuid": "00000000-0000-0000-0000-000000000000", "path": "x"}


@dataclass(frozen=True)
class Segment:
    """One ``/``-separated part of a pattern: literal text and ``(converter,)`` pieces in order."""

    pieces: tuple[str | tuple[str], ...]

    @classmethod
    def parse(cls, text: str) -> Segment:
        """``ws`` → one literal piece; ``item-<int:id>`` → ``("item-", ("int",))``."""
        pieces: list[str | tuple[str]] = []
        position = 0
        for match in _PIECE.finditer(text):
            if match.start() > position:
                pieces.append(text[position:match.start()])
            pieces.append((match[1] or "str",))
            position = match.end()
        if position < len(text) or not pieces:
            pieces.append(text[position:])
        return cls(tuple(pieces))

    @property
    def literal(self) -> str | None:
        """The text, when the segment has no parameter."""
        return self.pieces[0] if len(self.pieces) == 1 and isinstance(self.pieces[0], str) else None

    @property
    def converter(self) -> str | None:
        """The converter's name, when the segment is one parameter and nothing else."""
        return self.pieces[0][0] if len(self.pieces) == 1 and isinstance(self.pieces[0], tuple) else None

    @property
    def has_path(self) -> bool:
        return any(isinstance(piece, tuple) and piece[0] == "path" for piece in self.pieces)

    def matches(self, text: str, regexes: dict[str, str]) -> bool:
        """Whether ``text`` (one segment of a path) is matched by this segment."""
        pattern = "".join(
            re.escape(piece) if isinstance(piece, str) else f"(?:{regexes.get(piece[0], '[^/]+')})"
            for piece in self.pieces
        )
        return re.fullmatch(pattern, text) is not None

    def example(self) -> str:
        """One text this segment matches (for error messages)."""
        return "".join(piece if isinstance(piece, str) else _EXAMPLES.get(piece[0], "x") for piece in self.pieces)


def compare_segments(a: Segment, b: Segment, regexes: dict[str, str]) -> Relation:
    """How segment ``a`` relates to segment ``b``."""
    if a == b:
        return Relation.SAME
    if a.literal is not None and b.literal is not None:
        return Relation.DISJOINT
    if a.literal is not None:
        return Relation.NARROWER if b.matches(a.literal, regexes) else Relation.DISJOINT
    if b.literal is not None:
        return Relation.WIDER if a.matches(b.literal, regexes) else Relation.DISJOINT
    if _literal_edges_differ(a, b):
        return Relation.DISJOINT
    if b.converter == "str":
        return Relation.NARROWER
    if a.converter == "str":
        return Relation.WIDER
    pair = (a.converter, b.converter)
    if pair in _NARROWER:
        return Relation.NARROWER
    if pair[::-1] in _NARROWER:
        return Relation.WIDER
    if frozenset(pair) in _DISJOINT:
        return Relation.DISJOINT
    return Relation.CONFLICT


def _literal_edges_differ(a: Segment, b: Segment) -> bool:
    """``item-<int:id>`` and ``user-<int:id>`` cannot match the same text: their prefixes differ."""
    for index in (0, -1):
        x, y = a.pieces[index], b.pieces[index]
        if isinstance(x, str) and isinstance(y, str):
            if index == 0 and not (x.startswith(y) or y.startswith(x)):
                return True
            if index == -1 and not (x.endswith(y) or y.endswith(x)):
                return True
    return False


@dataclass(frozen=True)
class Pattern:
    """A Django path pattern (``ws/<room>``, trailing slash ignored) split into segments."""

    segments: tuple[Segment, ...]
    #: The pattern ends with a whole ``<path:...>`` segment, which matches one or more segments.
    tail: bool
    #: A ``<path:...>`` elsewhere: only the segments before it can be compared.
    opaque_from: int | None

    @classmethod
    def parse(cls, django_path: str) -> Pattern:
        segments = [Segment.parse(part) for part in django_path.strip("/").split("/")]
        tail = segments[-1].converter == "path"
        if tail:
            segments.pop()
        opaque = next((i for i, segment in enumerate(segments) if segment.has_path), None)
        return cls(tuple(segments), tail, opaque)

    def example(self) -> str:
        return "/" + "/".join([*(s.example() for s in self.segments), *(["x"] if self.tail else [])])


def compare(p: Pattern, q: Pattern, regexes: dict[str, str]) -> Relation:
    """How the paths matched by ``p`` relate to those matched by ``q``."""
    if p == q:
        return Relation.SAME
    if p.opaque_from is not None or q.opaque_from is not None:
        leading = min(i for i in (p.opaque_from, q.opaque_from, len(p.segments), len(q.segments)) if i is not None)
        pairs = zip(p.segments[:leading], q.segments[:leading], strict=True)
        relations = [compare_segments(a, b, regexes) for a, b in pairs]
        return Relation.DISJOINT if Relation.DISJOINT in relations else Relation.CONFLICT
    shared = min(len(p.segments), len(q.segments))
    relations = [compare_segments(a, b, regexes) for a, b in zip(p.segments[:shared], q.segments[:shared], strict=True)]
    longer = len(p.segments) - len(q.segments)
    if not p.tail and not q.tail:
        if longer:
            return Relation.DISJOINT
    elif p.tail and q.tail:
        if longer:  # the longer prefix's extra segments sit inside the other's tail
            relations.append(Relation.NARROWER if longer > 0 else Relation.WIDER)
    elif p.tail:  # p's tail takes one or more of q's remaining segments
        if longer >= 0:
            return Relation.DISJOINT
        relations.append(Relation.WIDER)
    else:
        if longer <= 0:
            return Relation.DISJOINT
        relations.append(Relation.NARROWER)
    return combine(relations)


def combine(relations: list[Relation]) -> Relation:
    """Segment relations → the patterns' relation (all must agree for one to be more specific)."""
    if Relation.DISJOINT in relations:
        return Relation.DISJOINT
    if Relation.CONFLICT in relations:
        return Relation.CONFLICT
    kinds = set(relations) - {Relation.SAME}
    if not kinds:
        return Relation.SAME
    return kinds.pop() if len(kinds) == 1 else Relation.CONFLICT


def common_example(p: Pattern, q: Pattern) -> str | None:
    """A path both patterns match, for the message that refuses them (None when not computable)."""
    if p.opaque_from is not None or q.opaque_from is not None or p.tail or q.tail:
        return None
    if len(p.segments) != len(q.segments):
        return None
    parts = []
    for a, b in zip(p.segments, q.segments, strict=True):
        if a.literal is not None:
            parts.append(a.literal)
        elif b.literal is not None:
            parts.append(b.literal)
        else:
            return None
    return "/" + "/".join(parts)
