"""The demo's endpoints, straight from the specification's examples."""

import asyncio
import time

from realtime import Router, SSEView, WebSocketView


class EchoWS(WebSocketView):
    """Echoes every JSON message back: the specification's public example."""

    encoding = "json"
    keepalive = 30

    async def on_connect(self, ws, **params):
        self.room = params.get("room", "default")

    async def on_receive(self, ws, data):
        await ws.send_json({"echo": data})

    async def on_disconnect(self, ws, code):
        pass


class SystemEvents(SSEView):
    """A clock: one ``update`` event a second."""

    ping_interval = 15

    async def stream(self, request, **params):
        count = 0
        while True:
            count += 1
            yield {"event": "update", "data": {"count": count, "time": time.time()}}
            await asyncio.sleep(1)


chat = Router(prefix="/chat", tags=["Chat"])
chat.register_websocket("/ws/{room}", EchoWS)

events = Router(prefix="/events", tags=["Events"])
events.register_sse("/system", SystemEvents)

router = Router()
router.include_router(chat)
router.include_router(events)
