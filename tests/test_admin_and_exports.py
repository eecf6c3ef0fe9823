"""The admin shows and edits user roles; the package exports what the specification names."""

import importlib
import re
import tomllib
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

import realtime


@pytest.mark.django_db
def test_admin_user_list_shows_roles_and_the_user_page_edits_them(client):
    admin = User.objects.create_superuser("boss", password="pw-123456")
    editor = User.objects.create_user("ed", password="pw-123456")
    editors = Group.objects.create(name="editor")
    editor.groups.add(editors)
    client.force_login(admin)

    listing = client.get("/admin/auth/user/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "Roles" in html and ">editor<" in html

    page = client.get(f"/admin/auth/user/{editor.pk}/change/")
    assert page.status_code == 200 and 'name="groups"' in page.content.decode()

    reviewers = Group.objects.create(name="reviewer")
    form = {
        "username": "ed", "is_active": "on", "groups": [reviewers.pk],
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
    }
    response = client.post(f"/admin/auth/user/{editor.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(editor.groups.values_list("name", flat=True)) == ["reviewer"]


@pytest.mark.django_db
def test_user_list_filters_by_groups_once_and_shows_superusers_holding_every_role(client):
    admin = User.objects.create_superuser("boss", password="pw-123456")
    User.objects.create_user("plain", password="pw-123456")
    Group.objects.create(name="editor")  # the filter shows only when there is a group to pick
    client.force_login(admin)

    html = client.get("/admin/auth/user/").content.decode()

    assert html.count("By groups") == 1
    cells = dict(re.findall(r'<a href="/admin/auth/user/\d+/change/">(\w+)</a>.*?<td class="field-roles">(.*?)</td>',
                            html, re.S))
    assert cells == {"boss": "all (superuser)", "plain": "—"}


def test_all_matches_what_the_package_exports():
    for name in realtime.__all__:
        assert getattr(realtime, name) is not None, name
    spec_names = {"WebSocketView", "SSEView", "Channel", "sse_response", "Router", "AutoRouter", "CoreApp",
                  "AllowAny", "IsAuthenticated", "IsAdmin", "HasRole", "IsOwner", "WebSocketState"}
    assert spec_names <= set(realtime.__all__)
    assert importlib.import_module("realtime.permissions").Permission is realtime.Permission
    assert importlib.import_module("realtime.pubsub.broker").BrokerUnavailable is realtime.BrokerUnavailable
    with pytest.raises(AttributeError):
        realtime.NotAThing  # noqa: B018


def test_version_is_single_sourced_and_has_a_changelog_entry():
    root = Path(__file__).resolve().parent.parent
    assert re.fullmatch(r"\d+\.\d+\.\d+", realtime.__version__)
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"] == {"path": "realtime/__init__.py"}  # read from __version__
    assert f"## [{realtime.__version__}]" in (root / "CHANGELOG.md").read_text()
