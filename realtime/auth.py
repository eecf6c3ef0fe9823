"""JWT authentication for WebSocket and SSE endpoints, in small overridable seams.

headers and query → raw token → validated token → user. Validation is simplejwt's (signature,
expiry, token type, algorithm); nothing here re-implements JWT. Each failure raises
:class:`AuthenticationFailed` with a stable ``code``; the WebSocket edge maps it to close code 4001,
the SSE edge to HTTP 401.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.db import database_sync_to_async

#: Query parameter that carries a token for clients that cannot set headers (``EventSource``,
#: the browser ``WebSocket``).
TOKEN_QUERY_PARAM = "token"


class AuthenticationFailed(Exception):
    """Credentials were presented and refused. ``code`` is stable; ``detail`` is for humans."""

    def __init__(self, detail: str, code: str = "authentication_failed") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class TokenAuthenticator:
    """Finds, validates and resolves a JWT. Subclass and override any step."""

    header_name = "authorization"

    def get_raw_token(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The token from ``Authorization: Bearer <token>`` first, then ``?token=``; None if absent."""
        header = headers.get(self.header_name)
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
        token = query.get(TOKEN_QUERY_PARAM)
        return token or None

    def get_validated_token(self, raw_token: str) -> Any:
        """simplejwt's validation: signature, expiry, token type. Raises AuthenticationFailed."""
        from rest_framework_simplejwt.authentication import JWTAuthentication
        from rest_framework_simplejwt.exceptions import InvalidToken

        if len(raw_token) > 8192:
            raise AuthenticationFailed("Token is too long", "token_not_valid")
        try:
            return JWTAuthentication().get_validated_token(raw_token.encode("utf-8", "replace"))
        except InvalidToken as error:
            detail = error.detail
            messages = detail.get("messages") if isinstance(detail, dict) else None
            reason = str(messages[0]["message"]) if messages else "Token is invalid"
            raise AuthenticationFailed(reason, "token_not_valid") from None

    def get_user(self, validated_token: Any) -> Any:
        """Load the user (sync; called through ``database_sync_to_async``). Refuses inactive users."""
        from rest_framework_simplejwt.authentication import JWTAuthentication
        from rest_framework_simplejwt.exceptions import AuthenticationFailed as JWTFailed
        from rest_framework_simplejwt.exceptions import InvalidToken

        try:
            return JWTAuthentication().get_user(validated_token)
        except (JWTFailed, InvalidToken) as error:
            code = getattr(error, "default_code", "authentication_failed")
            detail = error.detail
            codes = error.get_codes()
            if isinstance(codes, str):
                code = codes
            raise AuthenticationFailed(str(detail if isinstance(detail, str) else error), code) from None

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
