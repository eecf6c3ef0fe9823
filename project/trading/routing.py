"""The trading demo's real-time endpoints, discovered by project/routing.py under /api."""

from realtime import Router

from .views import TickStreamWS, TradeEventsSSE

router = Router(prefix="/trading", tags=["Trading"])
router.register_websocket("/ws/ticks/{symbol}", TickStreamWS)
router.register_sse("/events/{userId}", TradeEventsSSE)
