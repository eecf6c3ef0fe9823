"""The SSE encoder: a table of cases, and a property test against a real SSE client parser."""

import json

import httpx
import pytest
from httpx_sse import EventSource
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.sse_encoder import encode_event, encode_item


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "hello"}, "data: hello\n\n"),
        ({"data": ""}, "data: \n\n"),
        ({"data": "a\nb"}, "data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, "data: a\ndata: b\ndata: c\n\n"),
        ({"data": "trail\n"}, "data: trail\ndata: \n\n"),
        ({"data": {"k": "v\nw"}}, 'data: {"k":"v\\nw"}\n\n'),
        ({"data": [1, "é"]}, 'data: [1,"é"]\n\n'),
        ({"data": "x", "event": "trade", "id": "7", "retry": 1500},
         "event: trade\nid: 7\nretry: 1500\ndata: x\n\n"),
        ({"data": ": not a comment"}, "data: : not a comment\n\n"),
    ],
)
def test_encode_event(kwargs, expected):
    assert encode_event(**kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": "x", "event": "a\nb"}, ValueError),
        ({"data": "x", "event": "a\rb"}, ValueError),
        ({"data": "x", "id": "1\x002"}, ValueError),
        ({"data": "x", "id": 5}, TypeError),
        ({"data": "x", "retry": -1}, ValueError),
        ({"data": "x", "retry": 1.5}, TypeError),
        ({"data": "x", "retry": True}, TypeError),
        ({"data": 42}, TypeError),
        ({"data": None}, TypeError),
    ],
)
def test_encode_event_rejects_what_the_format_cannot_carry(kwargs, error):
    with pytest.raises(error):
        encode_event(**kwargs)


@pytest.mark.parametrize(
    ("item", "message"),
    [({"event": "x"}, "needs 'data'"), ({"data": 1, "colour": "red"}, "Unknown SSE field"), ("text", "yield dicts")],
)
def test_encode_item_explains_bad_items(item, message):
    with pytest.raises(TypeError, match=message):
        encode_item(item)


def test_encode_item_accepts_integer_ids():
    assert encode_item({"data": "x", "id": 3}) == b"id: 3\ndata: x\n\n"


def parse(stream: bytes):
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)
    return list(EventSource(response).iter_sse())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
tricky_text = st.lists(st.sampled_from(["a", "é", "字", "\r", "\n", "\r\n", ":", " ", "\x00", "data: "])).map(
    "".join
) | st.text()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(tricky_text, st.dictionaries(st.text(), json_values, max_size=4),
                          st.lists(json_values, max_size=4)), min_size=1, max_size=5))
def test_any_payload_survives_encode_then_parse(payloads):
    stream = b"".join(
        encode_item({"event": "e", "id": str(i), "data": payload}) for i, payload in enumerate(payloads)
    )
    events = parse(stream)
    assert [event.id for event in events] == [str(i) for i in range(len(payloads))]
    for event, payload in zip(events, payloads, strict=True):
        assert event.event == "e"
        if isinstance(payload, str):
            # The format has no CR: line breaks of any kind arrive as LF.
            assert event.data == payload.replace("\r\n", "\n").replace("\r", "\n")
        else:
            assert json.loads(event.data) == payload


@pytest.mark.parametrize(
    "item",
    [{"data": "\ud800"}, {"data": {"x": "\udfff"}}, {"data": {"n": float("nan")}}, {"data": [float("inf")]},
     {"data": "ok", "event": "e\ud800"}],
)
def test_items_that_are_not_strict_json_in_utf8_are_refused(item):
    from realtime import UnencodableMessage

    with pytest.raises(UnencodableMessage):
        encode_item(item)
