"""Sealed event ids (realtime.sealed_ids): opaque, fixed length, and opened only by the stream that made them."""

import pytest

from realtime.pubsub import ids
from realtime.sealed_ids import TOKEN_LENGTH, IdSeal

ALICE, BOB = "trades\n/api/trading/events/1\n1", "trades\n/api/trading/events/2\n2"


@pytest.mark.parametrize("message_id", ["1796174744627933-1", "1796174744627933-2", "1732550000000-0",
                                        "0-0", "18446744073709551615-18446744073709551615"])
def test_a_sealed_id_opens_on_its_own_stream_only(message_id):
    token = IdSeal(ALICE).seal(message_id)
    assert len(token) == TOKEN_LENGTH and message_id.split("-")[0] not in token
    assert IdSeal(ALICE).open(token) == message_id
    assert IdSeal(BOB).open(token) is None
    assert IdSeal(ALICE).seal(message_id) == token  # the same message keeps its id (replayed or live)


def test_tokens_say_nothing_of_the_counter():
    seal = IdSeal(BOB)
    tokens = [seal.seal(ids.make(1796174744627933, n)) for n in (1, 2, 10, 999999)]
    assert {len(t) for t in tokens} == {TOKEN_LENGTH} and len(set(tokens)) == 4


@pytest.mark.parametrize("token", [
    "", "0", "1796174744627933-1", "x" * TOKEN_LENGTH, "é" * TOKEN_LENGTH, "=" * TOKEN_LENGTH, None, 7,
])
def test_what_this_stream_did_not_seal_does_not_open(token):
    assert IdSeal(ALICE).open(token) is None


def test_a_tampered_token_does_not_open():
    token = IdSeal(ALICE).seal("1796174744627933-5")
    for i in range(TOKEN_LENGTH):  # the last one too: its padding bits must be zero (one token per id)
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
        assert IdSeal(ALICE).open(flipped) is None, i


def test_another_secret_key_opens_nothing(settings):
    token = IdSeal(ALICE).seal("1796174744627933-5")
    settings.SECRET_KEY = "another-secret-key-of-enough-length-for-django-0123456789"
    assert IdSeal(ALICE).open(token) is None
    assert IdSeal(ALICE).open(IdSeal(ALICE).seal("1796174744627933-5")) == "1796174744627933-5"


def test_only_history_ids_are_sealed():
    with pytest.raises(ValueError, match="not a history id"):
        IdSeal(ALICE).seal("abc")
