"""The specification's trading system: public ticks over WebSocket, each user's trades over SSE,
and a small JSON API to place trades."""

from __future__ import annotations

from rest_framework import status
from rest_framework.permissions import IsAuthenticated as DRFIsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from realtime import BrokerUnavailable, IsAuthenticated, IsOwner, SSEView, WebSocketException, WebSocketView

from .channels import ticks, trades
from .market import SYMBOLS, simulator
from .trades import InvalidOrder, place_trade

#: Close code for a tick stream of a symbol that does not exist (the client should not retry).
UNKNOWN_SYMBOL = 4004
#: Seconds a client should wait before placing an order again while the market is unavailable.
RETRY_AFTER = 5


class TickStreamWS(WebSocketView):
    """Ticks of one symbol in real time (public): ``/api/trading/ws/ticks/{symbol}``."""

    keepalive = 15

    async def on_connect(self, ws, **params):
        self.symbol = params.get("symbol", "R_100")
        if self.symbol not in SYMBOLS:
            raise WebSocketException(UNKNOWN_SYMBOL, f"Unknown symbol; one of {', '.join(SYMBOLS)}")

    async def stream(self, ws, symbol):
        # The first subscriber of this process starts the (deployment-wide) simulator; the last stops it.
        async with simulator.running():
            async for tick in ticks.subscribe():
                if tick["symbol"] == symbol:
                    yield tick


class TradeEventsSSE(SSEView):
    """One user's trade events (only their own): ``/api/trading/events/{userId}``.

    Each event carries an id, so a client that reconnects with ``Last-Event-ID`` (or ``?lastEventId=``)
    gets exactly what it missed, then live events. The stream filters the trades Channel, so its ids
    are sealed (``realtime.sealed_ids``): they say nothing of other users' trades, and open on this
    user's stream only.
    """

    permission_classes = [IsAuthenticated & IsOwner]
    ping_interval = 15

    async def stream(self, request, **params):
        user_id = self.user.pk
        async for frame in self.follow(trades, event="trade", predicate=lambda t: t.get("user_id") == user_id):
            yield frame


class OrderView(APIView):
    """``POST /api/trading/orders`` ``{"symbol": "R_100", "side": "buy", "amount": "10"}`` with a Bearer JWT.

    201 with the trade once it is published to every process; 503 with a JSON error (and no trade)
    while Redis is unreachable. A sync view: Django runs it in a thread, off the event loop.
    """

    authentication_classes = [JWTAuthentication]
    permission_classes = [DRFIsAuthenticated]

    def post(self, request):
        try:
            trade = place_trade(request.user, request.data)
        except InvalidOrder as error:
            return Response(error.errors, status=status.HTTP_400_BAD_REQUEST)
        except BrokerUnavailable:
            return Response(
                {"detail": "The market is unavailable; the order was not placed. Try again shortly.",
                 "code": "broker_unavailable"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER)},
            )
        return Response(trade, status=status.HTTP_201_CREATED)


class MeView(APIView):
    """``GET /api/trading/me``: who the token belongs to, for the page (id for the event stream, admin link)."""

    authentication_classes = [JWTAuthentication]
    permission_classes = [DRFIsAuthenticated]

    def get(self, request):
        user = request.user
        return Response({"id": user.pk, "username": user.get_username(), "is_staff": user.is_staff})
