"""MkDocs hooks for the documentation site (mkdocs.yml lists this file).

The docstrings cross-reference in Sphinx's roles (``:class:`Channel```), which mkdocstrings renders
as the role's text followed by the name in code; the site shows the name alone.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|mod|meth|func|attr|exc|data|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    """Drop Sphinx role prefixes in front of the code they name."""
    return _ROLE.sub("", html)
