"""realtime.sessions without a server: the Origin rule for a session cookie, the cookie's key, the
session's user, and what an admitted session connection registers for revocation (and gives back)."""

import pytest
from django.contrib.auth.models import User

from realtime.admission import Admitted
from realtime.revocation import revocations
from realtime.security import origin_allowed
from realtime.sessions import SessionAuthenticator, SessionCredentials, revocation_key
from tests.waiting import await_until

HOST = {"host": "app.example.com"}


@pytest.mark.parametrize("origin, configured, plain, with_cookie", [
    ("http://app.example.com", None, True, True),             # the site's own
    ("http://evil.example", None, False, False),
    ("http://evil.example", ["*"], True, False),              # "*" never carries a cookie
    ("http://partner.example", ["http://partner.example"], True, True),   # trusted by name
    ("http://a.partner.example", ["http://*.partner.example"], True, True),
    (None, None, True, False),                                # no Origin: a program, not a browser
    ("null", ["*"], True, False),                             # a sandboxed frame
])
def test_a_session_cookie_needs_an_origin_trusted_by_name(settings, origin, configured, plain, with_cookie):
    settings.ALLOWED_HOSTS = ["app.example.com"]
    settings.REALTIME = {"ALLOWED_ORIGINS": configured}
    headers = {**HOST, **({"origin": origin} if origin is not None else {})}
    assert origin_allowed(headers, "ws") is plain
    assert origin_allowed(headers, "ws", ambient=True) is with_cookie


def test_the_session_key_comes_from_the_session_cookie(settings):
    authenticator = SessionAuthenticator()
    assert authenticator.session_key({"cookie": "csrftoken=x; sessionid=abc123; theme=dark"}) == "abc123"
    assert authenticator.session_key({"cookie": "csrftoken=x"}) is None
    assert authenticator.session_key({}) is None
    assert authenticator.ambient_credentials({"cookie": "sessionid=abc123"}) is True
    assert authenticator.ambient_credentials({"authorization": "Bearer x.y.z"}) is False
    settings.SESSION_COOKIE_NAME = "site_session"
    assert authenticator.session_key({"cookie": "sessionid=old; site_session=new"}) == "new"


def test_the_revocation_key_is_a_hash_that_does_not_carry_the_session_key():
    key = revocation_key("abc123")
    assert key.startswith("session:") and "abc123" not in key and key == revocation_key("abc123")


@pytest.mark.django_db
def test_the_users_of_a_session_a_gone_one_and_an_inactive_one(client):
    active = User.objects.create_user("ada", password="pw-123456")
    client.force_login(active)
    key = client.session.session_key
    authenticator = SessionAuthenticator()
    assert authenticator.get_session_user(key) == active
    assert authenticator.get_session_user("0" * 32) is None
    active.is_active = False
    active.save()
    assert authenticator.get_session_user(key) is None


async def test_an_admitted_session_registers_the_user_and_the_session_and_release_forgets_both():
    class Person:
        pk = 41

    closed = []
    admitted = Admitted(Person(), SessionCredentials(session=revocation_key("k1")))
    admitted.hold(closed.append)
    assert set(revocations.closers) >= {"41", revocation_key("k1")}
    revocations.on_revocation({"action": "revoke", "user": revocation_key("k1"), "reason": "logout"}, None)
    await await_until(lambda: closed, message="the closer, called on the connection's loop")
    assert closed == ["session_revoked"]
    admitted.release()
    assert "41" not in revocations.closers and revocation_key("k1") not in revocations.closers
    assert not admitted.holds_anything
