"""The fenced code blocks of the documentation site (docs/), each with the marker that says who runs it.

Every block is preceded by one HTML comment, which the site does not show:

- ``<!-- install: ACTION [TARGET] -->``: a step of the tutorial's new project, run or written by
  tests/test_install.py (``shell``, ``redis``, ``serve``, ``testing``: shell; ``write``/``append``: a file);
- ``<!-- run: NAME -->``: a client script tests/test_install.py runs against the new project's servers;
- ``<!-- example: PATH -->``: a file of the testing how-to's example app (tests/test_testing_kit.py
  and tests/test_install.py run its tests);
- ``<!-- exec: NAME -->``: a snippet a named test executes (tests/test_docs.py lists which);
- ``<!-- parsed: WHY -->``: only parsed (compiled, ``bash -n``, ``node --check``, loaded as JSON or
  YAML) by tests/test_docs.py, for the reason given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
TUTORIAL = ["tutorial/install.md", "tutorial/auth.md", "tutorial/sse.md", "tutorial/topic.md", "tutorial/redis.md"]
KINDS = ("install", "run", "example", "exec", "parsed")

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
_MARKER = re.compile(r"<!-- (\w+): ([^\n]+?) -->\n\Z")


@dataclass(frozen=True)
class Block:
    page: str  # relative to docs/
    line: int
    kind: str | None  # one of KINDS, or None when the block has no marker
    argument: str
    language: str
    code: str

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    """The fenced blocks of one page, in order."""
    text = (DOCS / page).read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()]
        marker = _MARKER.search(before)
        kind, argument = (marker[1], marker[2].strip()) if marker else (None, "")
        found.append(Block(page, before.count("\n") + 1, kind, argument, match[1], match[2].rstrip("\n")))
    return found


def pages() -> list[str]:
    return sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))


def every_block() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


def marked(kind: str, *page_list: str) -> list[Block]:
    """The blocks with a ``kind`` marker, in the order of ``page_list`` (default: every page)."""
    return [block for page in (page_list or pages()) for block in blocks(page) if block.kind == kind]
