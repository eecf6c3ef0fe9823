"""The multi-channel protocol's state machine, from tables: frames in, events out; no sockets, no Django."""

import re
from pathlib import Path

import pytest

from realtime.topics import protocol as p

PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


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


def read(proto, frame):
    """The one event of ``frame`` (the connection's FirstFrame, when it comes, set aside)."""
    events = [event for event in proto.receive_frame(frame) if type(event) is not p.FirstFrame]
    assert len(events) == 1, events
    return events[0]


def joined(*names, limit=3):
    proto = machine(limit)
    for name in names:
        read(proto, {"op": "subscribe", "ref": "s", "channel": name})
        proto.subscribed(name)
    return proto


def states(proto):
    return {name: subscription.state.value for name, subscription in proto.subscriptions.items()}


def documented(section):
    """The first column of a table of docs/protocol.md, under the heading ``section``."""
    text = PROTOCOL_DOC.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    cells = re.findall(r"^\| ([^|]+) \|", text, re.M)
    return {name for cell in cells for name in re.findall(r"`(\w+)`", cell)}


# -- every op of docs/protocol.md becomes its event ---------------------------------------------

REQUESTS = [
    # (frame, event type, the route's params or None)
    ({"op": "subscribe", "ref": "1", "channel": "room:2"}, p.Subscribe, {"id": 2}),
    ({"op": "subscribe", "ref": "1", "channel": "room:2", "last_id": "17"}, p.Subscribe, {"id": 2}),
    ({"op": "subscribe", "ref": "1", "channel": "room:2", "last_id": None}, p.Subscribe, {"id": 2}),
    ({"op": "unsubscribe", "ref": "1", "channel": "room:1"}, p.Unsubscribe, {"id": 1}),
    ({"op": "presence", "ref": "1", "channel": "room:1"}, p.Presence, {"id": 1}),
    ({"op": "publish", "ref": "1", "channel": "chat", "data": {"a": 1}}, p.Publish, {}),
    ({"op": "publish", "ref": "1", "channel": "chat", "data": None}, p.Publish, {}),
    ({"op": "connect", "ref": "1", "token": "t"}, p.Connect, None),
    ({"op": "refresh", "ref": "1", "token": "t"}, p.Refresh, None),
    ({"op": "ping", "ref": "1"}, p.Ping, None),
    ({"op": "ping", "ref": "1", "extra": [1, 2]}, p.Ping, None),
]


@pytest.mark.parametrize(("frame", "kind", "params"), REQUESTS)
def test_valid_frames_become_typed_events(frame, kind, params):
    event = read(joined("room:1", "chat"), frame)
    assert type(event) is kind and event.ref == "1"
    if params is not None:
        assert event.channel == frame["channel"] and event.route.params == params
    for name in ("last_id", "data", "token"):
        if name in frame:
            assert getattr(event, name) == frame[name]


def test_every_documented_op_has_its_event():
    assert documented("Client to server") == set(p.OPS) == {kind.__name__.lower() for _, kind, _ in REQUESTS}


def test_ping_is_answered_by_the_machine_itself():
    assert read(machine(), {"op": "ping", "ref": "p"}).frame == {"op": "reply", "ref": "p", "ok": True, "data": {}}


# -- the errors the machine decides alone --------------------------------------------------------

ERRORS = [
    # (frame, code, the ref echoed); on a connection joined to room:1 and chat, at its cap of 3 with one more
    ([1, 2], "bad_request", None),
    ("hello", "bad_request", None),
    (42, "bad_request", None),
    (None, "bad_request", None),
    (True, "bad_request", None),
    ({}, "bad_request", None),
    ({"op": "ping"}, "bad_request", None),
    ({"op": "ping", "ref": 7}, "bad_request", None),
    ({"op": "ping", "ref": None}, "bad_request", None),
    ({"op": "ping", "ref": ["1"]}, "bad_request", None),
    ({"op": "ping", "ref": ""}, "bad_request", None),
    ({"op": "ping", "ref": "x" * 33}, "bad_request", None),
    ({"op": "dance", "ref": "1"}, "unknown_op", "1"),
    ({"op": "PING", "ref": "1"}, "unknown_op", "1"),
    ({"op": ["ping"], "ref": "1"}, "unknown_op", "1"),
    ({"ref": "1"}, "unknown_op", "1"),
    ({"op": "subscribe", "ref": "1"}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": 42}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": ""}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": ["room:2"]}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "room:" + "9" * 200}, "unknown_channel", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "nowhere"}, "unknown_channel", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "room:1", "last_id": 5}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "room:2", "last_id": "9" * 65}, "bad_request", "1"),
    ({"op": "subscribe", "ref": "1", "channel": "room:1"}, "already_subscribed", "1"),
    ({"op": "unsubscribe", "ref": "1", "channel": "room:2"}, "not_subscribed", "1"),
    ({"op": "unsubscribe", "ref": "1", "channel": "nowhere"}, "unknown_channel", "1"),
    ({"op": "unsubscribe", "ref": "1"}, "bad_request", "1"),
    ({"op": "presence", "ref": "1", "channel": "room:2"}, "not_subscribed", "1"),
    ({"op": "presence", "ref": "1", "channel": "x" * 201}, "unknown_channel", "1"),
    ({"op": "publish", "ref": "1", "channel": "room:2", "data": 1}, "not_subscribed", "1"),
    ({"op": "publish", "ref": "1", "channel": "room:2"}, "not_subscribed", "1"),
    ({"op": "publish", "ref": "1", "channel": "room:1", "data": 1}, "publish_not_allowed", "1"),
    ({"op": "publish", "ref": "1", "channel": "chat"}, "bad_request", "1"),
    ({"op": "connect", "ref": "1"}, "bad_request", "1"),
    ({"op": "connect", "ref": "1", "token": None}, "bad_request", "1"),
    ({"op": "connect", "ref": "1", "token": 3}, "bad_request", "1"),
    ({"op": "refresh", "ref": "1", "token": 3}, "bad_request", "1"),
    ({"op": "refresh", "ref": "1"}, "bad_request", "1"),
]


@pytest.mark.parametrize(("frame", "code", "ref"), ERRORS)
def test_error_replies(frame, code, ref):
    proto = joined("room:1", "chat")
    before = states(proto)
    event = read(proto, frame)
    assert type(event) is p.Rejected
    assert event.frame == {"op": "reply", "ref": ref, "ok": False, "error": {"code": code, "detail": event.detail}}
    assert event.detail and event.code == code
    assert states(proto) == before  # a refused request changes nothing


def test_too_many_subscriptions_is_decided_by_the_machine():
    proto = joined("room:1", "room:2", "chat")
    event = read(proto, {"op": "subscribe", "ref": "9", "channel": "room:3"})
    assert event.frame == {"op": "reply", "ref": "9", "ok": False, "error": {
        "code": "too_many_subscriptions", "detail": "At most 3 channels on one connection"}}


#: Codes only the driver can decide (permissions, hooks, tokens, Redis): the machine hands it the request.
DRIVER_DECIDES = {
    "forbidden": {"op": "subscribe", "ref": "1", "channel": "room:2"},
    "refused": {"op": "publish", "ref": "1", "channel": "chat", "data": 1},
    "token_expired": {"op": "connect", "ref": "1", "token": "t"},
    "token_not_valid": {"op": "connect", "ref": "1", "token": "t"},
    "user_inactive": {"op": "connect", "ref": "1", "token": "t"},
    "user_not_found": {"op": "connect", "ref": "1", "token": "t"},
    "user_mismatch": {"op": "refresh", "ref": "1", "token": "t"},
    "not_authenticated": {"op": "refresh", "ref": "1", "token": "t"},
    "rate_limited": {"op": "ping", "ref": "1"},  # the socket's throttle, before the machine reads the frame
    "unencodable": {"op": "publish", "ref": "1", "channel": "chat", "data": 1},
    "broker_unavailable": {"op": "presence", "ref": "1", "channel": "room:1"},
    "internal_error": {"op": "subscribe", "ref": "1", "channel": "room:2"},
}


@pytest.mark.parametrize(("code", "frame"), sorted(DRIVER_DECIDES.items()))
def test_codes_the_driver_decides_reach_it_as_requests(code, frame):
    event = read(joined("room:1", "chat"), frame)
    assert type(event) is not p.Rejected and event.ref == "1"
    assert p.error(event.ref, code, "why") == {"op": "reply", "ref": "1", "ok": False,
                                               "error": {"code": code, "detail": "why"}}


def test_every_documented_error_code_is_decided_by_the_machine_or_the_driver():
    by_machine = {code for _, code, _ in ERRORS} | {"too_many_subscriptions"}
    assert documented("Error codes (in `reply.error.code`)") == by_machine | set(DRIVER_DECIDES)
    assert not by_machine & set(DRIVER_DECIDES)


# -- the connection's state ----------------------------------------------------------------------


def test_the_first_frame_is_announced_once_even_when_refused():
    proto = machine()
    assert proto.state is p.ConnectionState.OPENED
    first = proto.receive_frame("not an object")
    assert [type(event) for event in first] == [p.FirstFrame, p.Rejected]
    assert proto.state is p.ConnectionState.ACTIVE
    assert [type(event) for event in proto.receive_frame({"op": "ping", "ref": "1"})] == [p.Ping]


def test_connect_is_accepted_once_whatever_came_of_it():
    proto = machine()
    assert type(read(proto, {"op": "connect", "ref": "1", "token": "t"})) is p.Connect
    again = read(proto, {"op": "connect", "ref": "2", "token": "t"})
    assert (again.code, again.detail) == ("bad_request", "'connect' may be sent once")
    assert type(read(proto, {"op": "refresh", "ref": "3", "token": "t"})) is p.Refresh  # as often as needed
    assert type(read(proto, {"op": "refresh", "ref": "4", "token": "t"})) is p.Refresh


def test_a_refused_connect_frame_does_not_use_up_the_connect():
    proto = machine()
    assert read(proto, {"op": "connect", "ref": "1"}).code == "bad_request"
    assert type(read(proto, {"op": "connect", "ref": "2", "token": "t"})) is p.Connect


# -- each subscription's state: frames and reports in, events and states out ---------------------

SUB = {"op": "subscribe", "ref": "s", "channel": "room:1"}
UNSUB = {"op": "unsubscribe", "ref": "u", "channel": "room:1"}
PUB = {"op": "publish", "ref": "b", "channel": "chat", "data": 1}
PRESENCE = {"op": "presence", "ref": "r", "channel": "room:1"}

TRANSITIONS = [
    # (what happened before, the frame, the event type or error code, room:1's state after)
    ([], SUB, p.Subscribe, "joining"),
    ([SUB], SUB, "already_subscribed", "joining"),
    ([SUB, "subscribed"], SUB, "already_subscribed", "joined"),
    ([SUB], PRESENCE, "not_subscribed", "joining"),
    ([SUB], UNSUB, "not_subscribed", "joining"),
    ([SUB, "join_failed"], PRESENCE, "not_subscribed", None),
    ([SUB, "join_failed"], SUB, p.Subscribe, "joining"),
    ([SUB, "subscribed"], PRESENCE, p.Presence, "joined"),
    ([SUB, "subscribed"], UNSUB, p.Unsubscribe, "leaving"),
    ([SUB, "subscribed", UNSUB], UNSUB, "not_subscribed", "leaving"),
    ([SUB, "subscribed", UNSUB], PRESENCE, "not_subscribed", "leaving"),
    ([SUB, "subscribed", UNSUB], SUB, "already_subscribed", "leaving"),
    ([SUB, "subscribed", UNSUB, "unsubscribed"], SUB, p.Subscribe, "joining"),
    ([SUB, "subscribed", UNSUB, "unsubscribed"], UNSUB, "not_subscribed", None),
    ([], UNSUB, "not_subscribed", None),
    ([], PRESENCE, "not_subscribed", None),
    ([], PUB, "not_subscribed", None),
    ([{**PUB, "op": "subscribe"}], PUB, "not_subscribed", None),  # publish before the join is through
    ([{**PUB, "op": "subscribe"}, ("subscribed", "chat")], PUB, p.Publish, None),
]


@pytest.mark.parametrize(("before", "frame", "expected", "after"), TRANSITIONS)
def test_subscription_transitions(before, frame, expected, after):
    proto = machine()
    for step in before:
        if type(step) is dict:
            read(proto, step)
        else:
            report, channel = step if type(step) is tuple else (step, "room:1")
            getattr(proto, report)(channel)
    event = read(proto, frame)
    if type(expected) is str:
        assert type(event) is p.Rejected and event.code == expected
    else:
        assert type(event) is expected
    assert states(proto).get("room:1") == after


def test_a_subscription_records_its_route_ref_and_last_id():
    proto = machine()
    read(proto, {"op": "subscribe", "ref": "7", "channel": "room:5", "last_id": "41"})
    subscription = proto.subscriptions["room:5"]
    assert (subscription.route, subscription.ref, subscription.last_id) == (p.Route(Room, {"id": 5}), "7", "41")
    assert subscription.state is p.SubscriptionState.JOINING


ILLEGAL = [
    # (what happened before, the driver's step, the message of the error it raises)
    ([], ("subscribed", "room:1"), "subscribed('room:1') needs the subscription joining; it is absent"),
    ([SUB, "subscribed"], ("subscribed", "room:1"),
     "subscribed('room:1') needs the subscription joining; it is joined"),
    ([SUB, "subscribed"], ("join_failed", "room:1"),
     "join_failed('room:1') needs the subscription joining; it is joined"),
    ([SUB], ("unsubscribed", "room:1"), "unsubscribed('room:1') needs the subscription leaving; it is joining"),
    ([SUB, "subscribed"], ("unsubscribed", "room:1"),
     "unsubscribed('room:1') needs the subscription leaving; it is joined"),
    ([SUB, "subscribed"], ("server_subscribe", "room:1"),
     "server_subscribe('room:1') needs the subscription absent; it is joined"),
    (["close"], ("receive_frame", {"op": "ping", "ref": "1"}),
     "receive_frame() needs the connection opened or active; it is closing"),
    (["close"], ("server_subscribe", "room:2"),
     "server_subscribe() needs the connection opened or active; it is closing"),
    (["close"], ("close",), "close() needs the connection opened or active; it is closing"),
]


@pytest.mark.parametrize(("before", "step", "message"), ILLEGAL)
def test_an_illegal_step_raises_naming_what_was_expected(before, step, message):
    proto = machine()
    for done in before:
        if type(done) is dict:
            read(proto, done)
        elif done == "close":
            proto.close()
        else:
            getattr(proto, done)("room:1")
    with pytest.raises(p.IllegalTransition) as raised:
        getattr(proto, step[0])(*step[1:])
    assert str(raised.value) == message


SERVER_UNSUBSCRIBE = [
    # (what happened before, the event server_unsubscribe returns, room:1's state after)
    ([], None, None),
    ([SUB], None, "joining"),  # still joining: its subscribe checks the permissions now in force
    ([SUB, "subscribed"], p.Unsubscribe, "leaving"),
    ([SUB, "subscribed", UNSUB], None, "leaving"),  # the client's unsubscribe is already ending it
    ([SUB, "subscribed", "close"], None, "leaving"),  # the connection is ending all of them
]


@pytest.mark.parametrize(("before", "expected", "after"), SERVER_UNSUBSCRIBE)
def test_the_server_ends_only_a_joined_subscription(before, expected, after):
    proto = machine()
    for done in before:
        if type(done) is dict:
            read(proto, done)
        elif done == "close":
            proto.close()
        else:
            getattr(proto, done)("room:1")
    event = proto.server_unsubscribe("room:1")
    assert (type(event) if event is not None else None) is expected
    assert states(proto).get("room:1") == after
    if event is not None:
        assert event == p.Unsubscribe(channel="room:1", route=p.Route(Room, {"id": 1}))
        proto.unsubscribed("room:1")
        assert "room:1" not in proto.subscriptions
        assert type(read(proto, SUB)) is p.Subscribe  # the client may ask again (its permissions decide)


# -- the server's own subscriptions, the cap, closing --------------------------------------------


def test_server_subscriptions_go_through_the_machine_and_count_under_the_cap():
    proto = machine(limit=2)
    event = proto.server_subscribe("room:7")
    assert event == p.Subscribe(ref=None, channel="room:7", route=p.Route(Room, {"id": 7}))
    assert states(proto) == {"room:7": "joining"} and proto.state is p.ConnectionState.OPENED
    proto.subscribed("room:7")
    assert proto.server_subscribe("nowhere") is None
    proto.server_subscribe("room:8")
    assert proto.server_subscribe("room:9") is None  # the cap
    assert read(proto, {"op": "subscribe", "ref": "1", "channel": "chat"}).code == "too_many_subscriptions"
    assert read(proto, {"op": "unsubscribe", "ref": "2", "channel": "room:7"}).ref == "2"  # the client may leave it


def test_ten_thousand_subscribe_requests_are_capped():
    proto = machine(limit=100)
    codes = {}
    for i in range(10_000):
        out = read(proto, {"op": "subscribe", "ref": str(i), "channel": f"room:{i}"})
        if type(out) is p.Subscribe:
            proto.subscribed(out.channel)
            codes["ok"] = codes.get("ok", 0) + 1
        else:
            codes[out.code] = codes.get(out.code, 0) + 1
    assert codes == {"ok": 100, "too_many_subscriptions": 9_900}
    assert len(proto.subscriptions) == 100


def test_unsubscribing_makes_room_under_the_cap_once_it_has_ended():
    proto = joined("room:1", "room:2", limit=2)
    assert read(proto, {"op": "subscribe", "ref": "1", "channel": "room:3"}).code == "too_many_subscriptions"
    read(proto, {"op": "unsubscribe", "ref": "2", "channel": "room:1"})
    assert read(proto, {"op": "subscribe", "ref": "3", "channel": "room:3"}).code == "too_many_subscriptions"
    proto.unsubscribed("room:1")
    assert type(read(proto, {"op": "subscribe", "ref": "4", "channel": "room:3"})) is p.Subscribe


def test_closing_leaves_every_subscription_whatever_its_state():
    proto = joined("room:1", "chat")
    read(proto, {"op": "subscribe", "ref": "3", "channel": "room:3"})  # still joining
    read(proto, {"op": "unsubscribe", "ref": "4", "channel": "chat"})  # already leaving
    leaving = proto.close()
    assert [(event.ref, event.channel) for event in leaving] == [(None, "room:1"), (None, "chat"), (None, "room:3")]
    assert all(type(event) is p.Unsubscribe for event in leaving)
    assert proto.state is p.ConnectionState.CLOSING
    assert set(states(proto).values()) == {"leaving"}
    for event in leaving:
        proto.unsubscribed(event.channel)
    assert proto.subscriptions == {}


def test_channel_names_at_the_length_cap_are_resolved_and_over_it_refused():
    proto = p.ServerProtocol(lambda name: p.Route(object, {}), max_channel_length=200)
    assert type(read(proto, {"op": "subscribe", "ref": "1", "channel": "x" * 200})) is p.Subscribe
    assert read(proto, {"op": "subscribe", "ref": "2", "channel": "x" * 201}).code == "unknown_channel"


# -- the frames the server sends -----------------------------------------------------------------


def test_gap_frames():
    assert p.gap("room:1", 12) == {"op": "gap", "channel": "room:1", "missed": 12}
    assert p.gap("room:1", None) == {"op": "gap", "channel": "room:1", "missed": None, "recovered": False}


def test_reply_and_unsubscribed_frames():
    assert p.reply("7", {"id": "3"}) == {"op": "reply", "ref": "7", "ok": True, "data": {"id": "3"}}
    assert p.unsubscribed("room:1", "session_revoked", "bye") == {
        "op": "unsubscribed", "channel": "room:1", "reason": {"code": "session_revoked", "detail": "bye"},
    }
