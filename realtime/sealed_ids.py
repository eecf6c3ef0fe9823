"""Sealed event ids: what a filtered SSE stream sends instead of its channel's history ids.

A history id orders *every* message of a channel: on a stream that shows one user only their own
trades, ids ``1`` then ``3`` tell that user someone else traded in between, and Redis stream ids
date everyone's events. A filtered stream (``follow(..., predicate=...)``, a relay with its own
``relay_message``) therefore sends each id sealed: encrypted, with authentication, under a key
derived from ``settings.SECRET_KEY``, bound to the stream's identity (channel, path and user). The
client sees an opaque token of fixed length, sends it back as ``Last-Event-ID``, and only the same
stream can open it; one that does not open (another user's, tampered, made under another
``SECRET_KEY``) is answered as a malformed id is: ``event: reset``, then what history holds.

Why AES-SIV (RFC 5297, ``cryptography``'s ``AESSIV``) rather than AES-GCM or Fernet: it is
*deterministic* authenticated encryption, so a message has the same id on every send (live or
replayed: the client's duplicate check keeps working) with no nonce to keep unique, and misuse
cannot leak the key stream. It leaks only equality, which the client knows anyway (same message,
same id). The plaintext is the history id packed into 16 bytes, so every token is 43 characters
whatever the counter, and its length says nothing either.
"""

from __future__ import annotations

import base64
import binascii
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .pubsub import ids

_PACKED = struct.Struct(">QQ")
#: base64url, unpadded, of the 16-byte SIV and the 16-byte packed id.
TOKEN_LENGTH = 43
_ciphers: dict[str, AESSIV] = {}


def _cipher() -> AESSIV:
    """The AES-SIV of the current ``SECRET_KEY`` (read at each call: tests and rotations change it)."""
    from django.conf import settings

    secret = settings.SECRET_KEY
    cipher = _ciphers.get(secret)
    if cipher is None:
        key = HKDF(algorithm=hashes.SHA256(), length=64, salt=b"realtime.sealed-ids", info=b"aes-256-siv").derive(
            secret.encode("utf-8")
        )
        _ciphers.clear()  # one key at a time: the old one goes with its secret
        cipher = _ciphers[secret] = AESSIV(key)
    return cipher


class IdSeal:
    """Seals the history ids of one stream and opens only the tokens it made."""

    __slots__ = ("_cipher", "_identity")

    def __init__(self, identity: str) -> None:
        self._cipher = _cipher()
        self._identity = [identity.encode("utf-8")]

    def seal(self, message_id: str) -> str:
        """The token sent for history id ``message_id``."""
        parsed = ids.parse(message_id)
        if parsed is None:
            raise ValueError(f"not a history id: {message_id!r}")
        sealed = self._cipher.encrypt(_PACKED.pack(*parsed), self._identity)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str) -> str | None:
        """The history id sealed in ``token``, or None when this stream did not make it."""
        if type(token) is not str or len(token) != TOKEN_LENGTH:
            return None
        try:
            sealed = base64.urlsafe_b64decode(token + "=")
            if base64.urlsafe_b64encode(sealed)[:TOKEN_LENGTH] != token.encode("ascii"):
                return None  # not the canonical spelling (padding bits set, stray characters)
            packed = self._cipher.decrypt(sealed, self._identity)
        except (InvalidTag, binascii.Error, ValueError):
            return None
        return ids.make(*_PACKED.unpack(packed))
