"""Named WebSocket close codes and the exception that closes a connection from any hook."""

from enum import IntEnum


class CloseCode(IntEnum):
    """Close codes sent by `realtime`, with what a client should do for each."""

    #: The conversation is over; nothing went wrong. Do not reconnect unless you want more.
    NORMAL = 1000
    #: The server is going away (shutdown or restart). Reconnect with backoff.
    GOING_AWAY = 1001
    #: A protocol error: a frame no WebSocket endpoint may send (unmasked, bad opcode, bad close code).
    PROTOCOL_ERROR = 1002
    #: A frame of a type the view does not accept (binary on a json/text view, text on a bytes view).
    UNSUPPORTED_DATA = 1003
    #: Never sent: the connection ended without a close frame (reported to ``on_disconnect``).
    ABNORMAL = 1006
    #: A frame whose payload does not decode (malformed JSON, invalid UTF-8).
    INVALID_PAYLOAD = 1007
    #: A policy was violated (rate limit, missing subprotocol, forbidden origin, too much unread inbound
    #: data: ``MAX_INBOUND_BYTES_PER_IP``, see realtime.inbound). Do not retry at once.
    POLICY_VIOLATION = 1008
    #: A message larger than the view accepts.
    MESSAGE_TOO_BIG = 1009
    #: The server hit an unexpected error. Reconnect with backoff.
    INTERNAL_ERROR = 1011
    #: The server is restarting. Reconnect with backoff.
    SERVICE_RESTART = 1012
    #: Only with ``REALTIME["STRICT_TOKENS"]``: a token was refused, expired or revoked. Refresh, reconnect.
    UNAUTHORIZED = 4001
    #: Not allowed. The reason says why: a credential code (``token_expired: ...``, ``token_not_valid: ...``,
    #: ``session_revoked``: refresh the token, then reconnect; ``user_inactive: ...``: do not), or a
    #: permission's message (do not reconnect with the same credentials).
    FORBIDDEN = 4003
    #: The client did not read what it was sent for too long (``REALTIME["SLOW_CONSUMER_TIMEOUT"]``).
    #: Reconnect, resuming from the last id received.
    SLOW_CONSUMER = 4008


def refused_credentials_code() -> CloseCode:
    """The close code for a refused, expired or revoked token: 4003, or 4001 with ``STRICT_TOKENS``."""
    from .conf import setting

    return CloseCode.UNAUTHORIZED if setting("STRICT_TOKENS") else CloseCode.FORBIDDEN


class WebSocketException(Exception):
    """Raise from any hook to close the connection with `code` and `reason`."""

    def __init__(self, code: int = CloseCode.POLICY_VIOLATION, reason: str = "") -> None:
        super().__init__(f"{int(code)}: {reason}" if reason else str(int(code)))
        self.code = int(code)
        self.reason = reason


#: Codes an endpoint may put in a close frame (RFC 6455 section 7.4, IANA registry).
SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def is_sendable(code: int) -> bool:
    """True for a code a server may send: the registered ones above, and 3000-4999."""
    return code in SENDABLE_CODES or 3000 <= code <= 4999


def is_receivable(code: int) -> bool:
    """Close codes a client may send (RFC 6455 7.4: 1005, 1006 and 1015 never appear in a frame)."""
    return is_sendable(code)
