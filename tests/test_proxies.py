"""realtime.proxies: X-Forwarded-For believed from trusted proxies only, read from the right.

The same rules against real servers: tests/test_edge.py (daphne reached directly and through nginx).
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from realtime.proxies import _networks, forwarded_client, parse_address, resolve_client

LOOPBACK = _networks(("127.0.0.1", "::1"))
CHAIN = _networks(("127.0.0.1", "10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "networks", "expected"),
    [
        # An untrusted peer is the client, whatever it says.
        ("198.51.100.7", "203.0.113.1", LOOPBACK, None),
        ("127.0.0.2", "203.0.113.1", LOOPBACK, None),
        # A trusted peer's own client: the right-most hop.
        ("127.0.0.1", "203.0.113.1", LOOPBACK, ("203.0.113.1", True)),
        ("::1", "203.0.113.1", LOOPBACK, ("203.0.113.1", True)),
        ("::ffff:127.0.0.1", "203.0.113.1", LOOPBACK, ("203.0.113.1", True)),
        # What the client put left of it is never read ($proxy_add_x_forwarded_for appends).
        ("127.0.0.1", "192.0.2.66, 192.0.2.67, 203.0.113.1", LOOPBACK, ("203.0.113.1", True)),
        # A chain of trusted proxies is skipped from the right.
        ("127.0.0.1", "192.0.2.66, 203.0.113.1, 10.1.2.3, 10.0.0.9", CHAIN, ("203.0.113.1", False)),
        # Every hop trusted: the left-most.
        ("127.0.0.1", "10.1.2.3, 10.0.0.9", CHAIN, ("10.1.2.3", False)),
        # Ports and brackets a proxy may add.
        ("127.0.0.1", "[2001:db8::5]:4711", LOOPBACK, ("2001:db8::5", True)),
        ("127.0.0.1", "203.0.113.1:4711", LOOPBACK, ("203.0.113.1", True)),
        # A hop that is no address ends the walk: the trusted hop right of it is counted.
        ("127.0.0.1", "nonsense", LOOPBACK, None),
        ("127.0.0.1", "203.0.113.1, unknown, 10.0.0.9", CHAIN, ("10.0.0.9", False)),
        ("127.0.0.1", " , ", LOOPBACK, None),
        # No trusted proxy at all.
        ("127.0.0.1", "203.0.113.1", (), None),
    ],
)
def test_the_client_is_the_right_most_untrusted_hop_behind_a_trusted_peer(peer, forwarded_for, networks, expected):
    assert forwarded_client(peer, forwarded_for, networks) == expected


def test_addresses_parse_with_or_without_a_port():
    assert str(parse_address(" 192.0.2.1 ")) == "192.0.2.1"
    assert str(parse_address("[::1]:80")) == "::1"
    assert str(parse_address("::ffff:10.0.0.1")) == "10.0.0.1"
    assert parse_address("example.com") is None
    assert parse_address("") is None


def scope(kind: str, client, *headers: tuple[bytes, bytes]) -> dict:
    return {"type": kind, "client": client, "headers": list(headers)}


def test_a_trusted_peer_sets_client_port_and_scheme():
    http = scope("http", ("127.0.0.1", 5000), (b"x-forwarded-for", b"203.0.113.1"),
                 (b"x-forwarded-port", b"4711"), (b"x-forwarded-proto", b"https"))
    http["scheme"] = "http"
    resolve_client(http)
    assert (http["client"], http["scheme"]) == (("203.0.113.1", 4711), "https")
    ws = scope("websocket", ["127.0.0.1", 5000], (b"X-Forwarded-For", b"203.0.113.1"),
               (b"x-forwarded-proto", b"https"))
    client = ws["client"]
    resolve_client(ws)
    assert ws["client"] is client and client == ["203.0.113.1", 0]  # daphne's list, for its access log
    assert ws["scheme"] == "wss"


def test_several_forwarded_for_headers_are_one_list():
    both = scope("http", ("127.0.0.1", 1), (b"x-forwarded-for", b"192.0.2.66"), (b"x-forwarded-for", b"203.0.113.1"))
    resolve_client(both)
    assert both["client"] == ("203.0.113.1", 0)


def test_an_untrusted_peer_keeps_its_address_and_scheme():
    forged = scope("http", ("198.51.100.7", 5000), (b"x-forwarded-for", b"203.0.113.1"),
                   (b"x-forwarded-proto", b"https"))
    forged["scheme"] = "http"
    resolve_client(forged)
    assert (forged["client"], forged["scheme"]) == (("198.51.100.7", 5000), "http")
    local = scope("http", ("127.0.0.1", 5000))  # trusted, but no header: a local client
    resolve_client(local)
    assert local["client"] == ("127.0.0.1", 5000)


@override_settings(REALTIME={"TRUSTED_PROXIES": []})
def test_an_empty_list_believes_no_one():
    forged = scope("websocket", ("127.0.0.1", 5000), (b"x-forwarded-for", b"203.0.113.1"))
    resolve_client(forged)
    assert forged["client"] == ("127.0.0.1", 5000)


@override_settings(REALTIME={"TRUSTED_PROXIES": ["10.0.0.0/8"]})
def test_the_setting_is_read_on_each_use():
    from_proxy = scope("websocket", ("10.9.9.9", 1), (b"x-forwarded-for", b"203.0.113.1"))
    resolve_client(from_proxy)
    assert from_proxy["client"] == ("203.0.113.1", 0)
    loopback = scope("websocket", ("127.0.0.1", 1), (b"x-forwarded-for", b"203.0.113.1"))
    resolve_client(loopback)
    assert loopback["client"] == ("127.0.0.1", 1)


@pytest.mark.parametrize("value", ["127.0.0.1", ["localhost"], ["10.0.0.0/33"]])
def test_a_wrong_setting_says_what_is_expected(value):
    with override_settings(REALTIME={"TRUSTED_PROXIES": value}), pytest.raises(ImproperlyConfigured):
        resolve_client(scope("http", ("127.0.0.1", 1), (b"x-forwarded-for", b"203.0.113.1")))
