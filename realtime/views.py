"""HTTP endpoints that belong to the real-time layer."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from .revocation import revocations


class LogoutView(APIView):
    """``POST /api/auth/logout/``: closes the caller's WebSockets and SSE streams in every process.

    With simplejwt's ``token_blacklist`` app installed, a ``{"refresh": "..."}`` body is blacklisted
    too. Access tokens stay valid until they expire (keep them short-lived).
    """

    authentication_classes = [JWTAuthentication]
    permission_classes = [IsAuthenticated]

    def post(self, request: Any) -> Response:
        from django.apps import apps

        blacklisted = False
        refresh = request.data.get("refresh") if hasattr(request.data, "get") else None
        if refresh and apps.is_installed("rest_framework_simplejwt.token_blacklist"):
            from rest_framework_simplejwt.exceptions import TokenError
            from rest_framework_simplejwt.tokens import RefreshToken

            try:
                RefreshToken(refresh).blacklist()
                blacklisted = True
            except TokenError:
                pass
        revocations.revoke_sync(request.user.pk, "logout")
        return Response({"detail": "Logged out", "refresh_blacklisted": blacklisted})
