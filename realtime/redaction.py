"""Secrets out of logged URIs: ``token=`` and its kin in a query string become ``[redacted]``.

Browsers' ``EventSource`` and ``WebSocket`` can carry a token only in the query string, and servers'
access logs print whole URIs (daphne's does; :mod:`realtime.servers.daphne` routes it through
:func:`redact`).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

#: Query parameters whose values are never logged, compared on the *decoded* name (``%74oken``
#: reaches the application as ``token``, so it must be redacted too).
SECRET_PARAMS = frozenset({"token", "access_token", "access", "refresh", "refresh_token"})
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s]*)(=?)([^&;#\s]*)")


def redact(path: str) -> str:
    """``/events?token=abc&x=1`` → ``/events?token=[redacted]&x=1``; ``?%74oken=abc`` too."""
    head, mark, query = path.partition("?")
    if not mark:
        return path

    def hide(match: re.Match[str]) -> str:
        name = unquote_plus(match[2]).strip().lower()
        if match[3] and name in SECRET_PARAMS:
            return f"{match[1]}{match[2]}=[redacted]"
        return match[0]

    return head + _QUERY_PARAM.sub(hide, "?" + query)
