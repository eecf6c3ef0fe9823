"""Topic patterns: which channel names a topic serves, and the parameters its permissions see."""

import pytest

from realtime import Topic


class Room(Topic):
    pattern = "room:{id:int}"


class Chat(Topic):
    pattern = "chat:{name:slug}"


class Thread(Topic):
    pattern = "forum:{forum}:thread:{id:int}"


class News(Topic):
    pattern = "news"


MATCHES = [
    (Room, "room:42", {"id": 42}),
    (Room, "room:042", None),  # not canonical: "room:42" is that channel
    (Room, "room:-1", None),
    (Room, "room:", None),
    (Room, "room:42:x", None),
    (Room, "rooms:42", None),
    (Chat, "chat:lobby-2_b", {"name": "lobby-2_b"}),
    (Chat, "chat:a b", None),
    (Thread, "forum:django:thread:7", {"forum": "django", "id": 7}),
    (Thread, "forum:a:b:thread:7", None),  # {str} stops at ":"
    (News, "news", {}),
    (News, "news:1", None),
]


@pytest.mark.parametrize(("topic", "name", "params"), MATCHES)
def test_pattern_matching(topic, name, params):
    assert topic.match(name) == params


def test_names_are_built_from_parameters():
    assert Room.channel_name_for(id=42) == "room:42"
    assert Thread.channel_name_for(forum="django", id=7) == "forum:django:thread:7"
    with pytest.raises(TypeError):
        Room.channel_name_for()


def test_client_publishing_is_off_unless_the_topic_allows_it():
    class Quiet(Topic):
        pattern = "q"

    class Loud(Topic):
        pattern = "l"
        allow_publish = True

    class Checked(Topic):
        pattern = "c"

        async def on_publish(self, user, data, **params):
            return data

    assert [t.accepts_publish() for t in (Quiet, Loud, Checked)] == [False, True, True]


def test_an_unknown_converter_is_refused():
    class Bad(Topic):
        pattern = "x:{a:nope}"

    with pytest.raises(ValueError, match="nope"):
        Bad.match("x:1")


def test_each_name_is_one_channel_with_the_topic_settings():
    class Kept(Topic):
        pattern = "kept:{id:int}"
        history = 7
        maxlen = 9

    channel = Kept.channel(id=3)
    assert (channel.name, channel.history, channel.maxlen) == ("kept:3", 7, 9)
    assert Kept.channel("kept:3") is channel
