"""Endpoints for the operations tests: a server that closes, a burst of channel names, rooms."""

from realtime import Channel, Router, WebSocketView
from realtime.closecodes import WebSocketException


class CloseOnMessage(WebSocketView):
    """Closes with the code of the path on the first message."""

    async def on_receive(self, ws, data):
        raise WebSocketException(self.params["code"], "closed by the server")


class Burst(WebSocketView):
    """{"n", "prefix"}: publish once on each of n new channels named prefix + i."""

    async def on_receive(self, ws, data):
        for i in range(data["n"]):
            await Channel.named(f"{data['prefix']}{i}").publish({"i": i})
        await ws.send_json({"published": data["n"]})


class Room(WebSocketView):
    """Relays channel room:<name>; each message received is published there."""

    async def stream(self, ws, name):
        async for message in Channel.named(f"room:{name}").subscribe():
            yield message

    async def on_receive(self, ws, data):
        await Channel.named(f"room:{self.params['name']}").publish(data)


router = Router(prefix="/ops")
router.register_websocket("/close/<int:code>", CloseOnMessage)
router.register_websocket("/burst", Burst)
router.register_websocket("/room/{name}", Room)
