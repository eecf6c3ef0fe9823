"""JWT authentication for WebSocket and SSE endpoints, in small overridable seams.

headers and query → raw token → validated token → user. Validation is simplejwt's (signature,
expiry, token type, algorithm); nothing here re-implements JWT. Each failure raises
:class:`AuthenticationFailed` with a stable ``code`` (``token_expired``, ``token_not_valid``,
``user_inactive``, ``user_not_found``, ``bad_authorization_header`` (``Token <jwt>``, a bare
``<jwt>``: the header to send is named), ...) and a plain ``detail``.

The edges decide what a refusal means (``REALTIME["STRICT_TOKENS"]``): by default, as in the
specification, a refused token counts as no token, so a public endpoint serves the client as
anonymous and a protected one closes the WebSocket with 4003 (SSE: 401) whose reason starts with
the code (``"token_expired: Token is expired"``). With ``STRICT_TOKENS`` every refusal is an error:
WebSocket 4001, SSE 401, on every endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from channels.db import database_sync_to_async

#: Query parameter that carries a token for clients that cannot set headers (``EventSource``,
#: the browser ``WebSocket``).
TOKEN_QUERY_PARAM = "token"


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

#: The longest close reason the WebSocket protocol allows, in UTF-8 bytes.
MAX_REASON_BYTES = 123


class AuthenticationFailed(Exception):
    """Credentials were presented and refused. ``code`` is stable; ``detail`` is for humans."""

    def __init__(self, detail: str, code: str = "authentication_failed") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code

    def close_reason(self) -> str:
        """``"<code>: <detail>"``, cut to the 123 bytes a close frame can carry."""
        return truncate_reason(f"{self.code}: {self.detail}")


def truncate_reason(reason: str) -> str:
    """``reason`` cut to MAX_REASON_BYTES of UTF-8, never inside a character."""
    return reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore")


class TokenAuthenticator:
    """Finds, validates and resolves a JWT. Subclass and override any step."""

    header_name = "authorization"

    def ambient_credentials(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries credentials a browser attaches by itself (a cookie this
        authenticator reads): its WebSocket handshake then needs a trusted Origin. Tokens are not."""
        return False

    def get_raw_token(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The token from ``Authorization: Bearer <token>`` first, then ``?token=``; None if absent.

        A header with another scheme (``Basic ...``) is left to others, as simplejwt leaves it, unless
        it carries what looks like a JWT and no ``?token=`` comes with it: ``Token <jwt>`` (DRF's
        habit) or a bare ``<jwt>`` is refused with ``bad_authorization_header`` and the header to
        send, rather than served as no token at all.
        """
        header = headers.get(self.header_name)
        token = query.get(TOKEN_QUERY_PARAM) or None
        if header:
            from rest_framework_simplejwt.settings import api_settings

            parts = header.split()
            types = api_settings.AUTH_HEADER_TYPES
            types = (types,) if isinstance(types, str) else tuple(types)
            if parts and parts[0] in types:
                if len(parts) != 2:
                    raise AuthenticationFailed(
                        "Authorization header must contain two space-delimited values",
                        "bad_authorization_header",
                    )
                return parts[1]
            if token is None and parts and len(parts) <= 2 and _looks_like_jwt(parts[-1]):
                sent = f'"{parts[0][:20]} <token>"' if len(parts) == 2 else "the bare token"
                raise AuthenticationFailed(
                    f'Send "Authorization: {types[0]} <token>", not {sent}', "bad_authorization_header"
                )
        return token

    def get_validated_token(self, raw_token: str) -> Any:
        """simplejwt's validation: signature, expiry, token type. Raises AuthenticationFailed.

        Each of simplejwt's ``AUTH_TOKEN_CLASSES`` is tried, as its ``JWTAuthentication`` does; a
        token whose only fault is its age is ``token_expired`` (the signature was checked first),
        anything else ``token_not_valid``.
        """
        from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
        from rest_framework_simplejwt.settings import api_settings

        if len(raw_token) > 8192:
            raise AuthenticationFailed("Token is too long", "token_not_valid")
        encoded = raw_token.encode("utf-8", "replace")
        refusals: list[tuple[str, str]] = []
        for token_class in api_settings.AUTH_TOKEN_CLASSES:
            try:
                return token_class(encoded)
            except ExpiredTokenError as error:
                refusals.append(("token_expired", str(error.args[0]) if error.args else "Token is expired"))
            except TokenError as error:
                refusals.append(("token_not_valid", str(error.args[0]) if error.args else "Token is invalid"))
        expired = [refusal for refusal in refusals if refusal[0] == "token_expired"]
        code, detail = (expired or refusals or [("token_not_valid", "Token is invalid")])[0]
        raise AuthenticationFailed(detail, code)

    def get_user(self, validated_token: Any) -> Any:
        """Load the user (sync; called through ``database_sync_to_async``). Refuses inactive users."""
        from rest_framework_simplejwt.authentication import JWTAuthentication
        from rest_framework_simplejwt.exceptions import AuthenticationFailed as JWTFailed

        try:
            return JWTAuthentication().get_user(validated_token)
        except JWTFailed as error:  # InvalidToken included; its detail is a dict of ErrorDetails
            code, detail = _code_and_detail(error)
            raise AuthenticationFailed(detail, code) from None

    async def authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> tuple[Any, Any] | None:
        """``(user, validated_token)``, or None when no token was presented."""
        raw_token = self.get_raw_token(headers, query)
        if raw_token is None:
            return None
        validated = self.get_validated_token(raw_token)
        user = await database_sync_to_async(self.get_user)(validated)
        return user, validated


def _looks_like_jwt(value: str) -> bool:
    """Three dot-separated base64url parts, as a JWS in compact form is."""
    parts = value.split(".")
    return len(parts) == 3 and all(part and _BASE64URL.fullmatch(part) for part in parts[:2])


def _code_and_detail(error: Any) -> tuple[str, str]:
    """Plain ``(code, text)`` of a simplejwt error, whose ``detail`` is ``{"detail": ..., "code": ...}``."""
    detail = getattr(error, "detail", None)
    code = getattr(error, "default_code", "authentication_failed")
    if isinstance(detail, dict):
        text = detail.get("detail", "")
        code = detail.get("code", code)
    else:
        text = detail if detail is not None else str(error)
    return str(code), str(text)
