"""The multi-channel protocol's state machine, from tables: no sockets, no Django."""

import pytest

from realtime.topics import protocol as p


class Room:
    """A stand-in topic class: what the machine needs of one (match, publishability)."""

    publish = False

    @staticmethod
    def match(name):
        prefix, _, rest = name.partition(":")
        return {"id": int(rest)} if prefix == "room" and rest.isdigit() else None


class Chat(Room):
    publish = True

    @staticmethod
    def match(name):
        return {} if name == "chat" else None


def machine(limit=3):
    return p.ServerProtocol(p.resolver([Room, Chat]), limit, publishable=lambda route: route.topic.publish)


def joined(*names, limit=3):
    proto = machine(limit)
    for name in names:
        request = proto.receive({"op": "subscribe", "ref": "s", "channel": name})
        proto.subscribed(name, request.route)
    return proto


ERRORS = [
    # (frame, code, the ref echoed)
    ([1, 2], "bad_request", None),
    ("hello", "bad_request", None),
    ({"op": "ping"}, "bad_request", None),
    ({"op": "ping", "ref": 7}, "bad_request", None),
    ({"op": "ping", "ref": ""}, "bad_request", None),
    ({"op": "ping", "ref": "x" * 33}, "bad_request", None),
    ({"op": "dance", "ref": "1"}, "unknown_op", "1"),
    ({"ref": "1"}, "unknown_op", "1"),
    ({"op": "subscribe", "ref": "1"}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": 42}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": ""}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "room:" + "9" * 200}, "unknown_channel", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "nowhere"}, "unknown_channel", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "room:1", "last_id": 5}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "room:1"}, "already_subscribed", "1"),
    ({"op": "unsubscribe", "ref": "1", "channel": "room:2"}, "not_subscribed", "1"),
    ({"op": "unsubscribe", "ref": "1", "channel": "nowhere"}, "unknown_channel", "1"),
    ({"op": "presence", "ref": "1", "channel": "room:2"}, "not_subscribed", "1"),
    ({"op": "publish", "ref": "1", "channel": "room:2", "data": 1}, "not_subscribed", "1"),
    ({"op": "publish", "ref": "1", "channel": "room:1", "data": 1}, "publish_not_allowed", "1"),
    ({"op": "publish", "ref": "1", "channel": "chat"}, "bad_request", "1"),
    ({"op": "connect", "ref": "1"}, "bad_request", "1"),
    ({"op": "connect", "ref": "1", "token": None}, "bad_request", "1"),
    ({"op": "refresh", "ref": "1", "token": 3}, "bad_request", "1"),
]


@pytest.mark.parametrize(("frame", "code", "ref"), ERRORS)
def test_error_replies(frame, code, ref):
    proto = joined("room:1", "chat")
    out = proto.receive(frame)
    assert out["op"] == "reply" and out["ok"] is False
    assert out["ref"] == ref
    assert out["error"]["code"] == code
    assert out["error"]["detail"]


REQUESTS = [
    ({"op": "subscribe", "ref": "1", "channel": "room:2"}, "subscribe", {"id": 2}),
    ({"op": "subscribe", "ref": "1", "channel": "room:2", "last_id": "17"}, "subscribe", {"id": 2}),
    ({"op": "unsubscribe", "ref": "1", "channel": "room:1"}, "unsubscribe", {"id": 1}),
    ({"op": "presence", "ref": "1", "channel": "room:1"}, "presence", {"id": 1}),
    ({"op": "publish", "ref": "1", "channel": "chat", "data": {"a": 1}}, "publish", {}),
    ({"op": "publish", "ref": "1", "channel": "chat", "data": None}, "publish", {}),
    ({"op": "connect", "ref": "1", "token": "t"}, "connect", None),
    ({"op": "refresh", "ref": "1", "token": "t"}, "refresh", None),
]


@pytest.mark.parametrize(("frame", "op", "params"), REQUESTS)
def test_valid_frames_become_requests_for_the_driver(frame, op, params):
    request = machine().receive(frame) if op in ("connect", "refresh") else joined("room:1", "chat").receive(frame)
    assert isinstance(request, p.Request)
    assert (request.op, request.ref) == (op, "1")
    if params is not None:
        assert request.channel == frame["channel"] and request.route.params == params
    assert request.last_id == frame.get("last_id")
    assert request.data == frame.get("data")


def test_ping_is_answered_by_the_machine_itself():
    assert machine().receive({"op": "ping", "ref": "p"}) == {"op": "reply", "ref": "p", "ok": True, "data": {}}


def test_connect_is_accepted_once():
    proto = machine()
    assert isinstance(proto.receive({"op": "connect", "ref": "1", "token": "t"}), p.Request)
    assert proto.receive({"op": "connect", "ref": "2", "token": "t"})["error"]["code"] == "bad_request"


def test_channel_names_at_the_length_cap_are_resolved_and_over_it_refused():
    proto = p.ServerProtocol(lambda name: p.Route(object, {}), max_channel_length=200)
    assert isinstance(proto.receive({"op": "subscribe", "ref": "1", "channel": "x" * 200}), p.Request)
    assert proto.receive({"op": "subscribe", "ref": "2", "channel": "x" * 201})["error"]["code"] == "unknown_channel"


def test_ten_thousand_subscribe_requests_are_capped():
    proto = machine(limit=100)
    codes = {}
    for i in range(10_000):
        out = proto.receive({"op": "subscribe", "ref": str(i), "channel": f"room:{i}"})
        if isinstance(out, p.Request):
            proto.subscribed(out.channel, out.route)
            codes["ok"] = codes.get("ok", 0) + 1
        else:
            codes[out["error"]["code"]] = codes.get(out["error"]["code"], 0) + 1
    assert codes == {"ok": 100, "too_many_subscriptions": 9_900}
    assert len(proto.subscriptions) == 100


def test_unsubscribing_makes_room_under_the_cap():
    proto = joined("room:1", "room:2", limit=2)
    assert proto.receive({"op": "subscribe", "ref": "1", "channel": "room:3"})["error"]["code"] == (
        "too_many_subscriptions"
    )
    proto.unsubscribed("room:1")
    assert isinstance(proto.receive({"op": "subscribe", "ref": "2", "channel": "room:3"}), p.Request)


def test_gap_frames():
    assert p.gap("room:1", 12) == {"op": "gap", "channel": "room:1", "missed": 12}
    assert p.gap("room:1", None) == {"op": "gap", "channel": "room:1", "missed": None, "recovered": False}
