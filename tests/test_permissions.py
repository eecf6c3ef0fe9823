"""Permission classes and their composition, called directly (DRF's contract, sync or async)."""

from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User

from realtime import AllowAny, HasRole, IsAdmin, IsAuthenticated, IsOwner, Permission
from realtime.permissions import check_permission, get_permissions


def request_for(user):
    return SimpleNamespace(user=user)


class Denies(Permission):
    calls = 0

    async def has_permission(self, request, view=None):
        type(self).calls += 1
        return False


class Allows(Permission):
    calls = 0

    def has_permission(self, request, view=None):  # sync: runs in a worker thread
        type(self).calls += 1
        return True


def authenticated(**attrs):
    return SimpleNamespace(is_authenticated=True, pk=1, **attrs)


async def test_allow_any_and_is_authenticated():
    assert await check_permission(AllowAny(), request_for(None), None)
    assert not await check_permission(IsAuthenticated(), request_for(None), None)
    assert not await check_permission(IsAuthenticated(), request_for(AnonymousUser()), None)
    assert await check_permission(IsAuthenticated(), request_for(authenticated()), None)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [({"is_staff": True}, True), ({"is_superuser": True}, True), ({"is_admin": True}, True), ({}, False)],
)
async def test_is_admin(attrs, expected):
    assert await check_permission(IsAdmin(), request_for(authenticated(**attrs)), None) is expected


async def test_spec_style_request_state_user_is_read():
    request = SimpleNamespace(state=SimpleNamespace(user=authenticated()))
    assert await check_permission(IsAuthenticated(), request, None)


@pytest.mark.django_db(transaction=True)  # a sync has_permission runs via database_sync_to_async
async def test_and_or_not_between_classes_and_instances():
    Denies.calls = Allows.calls = 0
    request = request_for(authenticated())
    assert not await check_permission(Denies & Allows, request, None)
    assert Allows.calls == 0  # `&` stops at the first denial
    assert await check_permission(Allows | Denies, request, None)
    assert Denies.calls == 1  # `|` stops at the first grant: Denies ran only for `&` above
    assert await check_permission(~Denies, request, None)
    assert await check_permission(Denies() | IsAuthenticated, request, None)
    assert not await check_permission(~(AllowAny & IsAuthenticated), request, None)


async def test_and_reports_the_message_of_the_permission_that_denied():
    permission = IsAuthenticated & IsAdmin
    assert not await check_permission(permission, request_for(authenticated()), None)
    assert permission.message == IsAdmin.message


async def test_or_names_every_alternative_when_it_denies():
    permission = HasRole("editor") | IsAdmin
    assert permission.message == "Role 'editor' required or administrator access required"
    assert not await check_permission(permission, request_for(None), None)
    assert permission.message == "Role 'editor' required or administrator access required"
    three = IsAdmin | HasRole("editor") | HasRole("reviewer")
    assert three.message == "Administrator access required or role 'editor' required or role 'reviewer' required"
    assert (IsAdmin | IsAdmin).message == IsAdmin.message


async def test_or_of_an_and_names_the_part_of_the_and_that_denied():
    permission = (IsAuthenticated & IsAdmin) | HasRole("editor")
    assert not await check_permission(permission, request_for(None), None)
    assert permission.message == "Authentication required or role 'editor' required"


def test_get_permissions_accepts_classes_and_instances_and_rejects_others():
    role = HasRole("editor")
    permissions = get_permissions([IsAuthenticated, role])
    assert isinstance(permissions[0], IsAuthenticated) and permissions[1] is role
    with pytest.raises(TypeError, match="not a permission"):
        get_permissions([object()])
    with pytest.raises(ValueError, match="role name"):
        HasRole("")


@pytest.mark.django_db(transaction=True)
async def test_has_role_reads_django_groups():
    from asgiref.sync import sync_to_async

    def make():
        editor = User.objects.create_user("ed")
        editor.groups.add(Group.objects.create(name="editor"))
        return editor, User.objects.create_user("plain"), User.objects.create_superuser("root")

    editor, plain, root = await sync_to_async(make)()
    assert await check_permission(HasRole("editor"), request_for(editor), None)
    assert not await check_permission(HasRole("editor"), request_for(plain), None)
    assert await check_permission(HasRole("editor"), request_for(root), None)
    assert not await check_permission(HasRole("editor"), request_for(None), None)


async def test_is_owner_by_path_parameter():
    user = authenticated()
    assert await check_permission(IsOwner(), request_for(user), SimpleNamespace(params={"user_id": "1"}))
    assert not await check_permission(IsOwner(), request_for(user), SimpleNamespace(params={"userId": 2}))
    assert not await check_permission(IsOwner(), request_for(user), SimpleNamespace(params={}))  # fails closed


async def test_is_owner_by_object():
    user = authenticated()

    class View:
        params = {}

        def __init__(self, obj):
            self.obj = obj

        async def get_object(self):
            return self.obj

    assert await check_permission(IsOwner(), request_for(user), View(SimpleNamespace(owner_id=1)))
    assert await check_permission(IsOwner(), request_for(user), View(SimpleNamespace(user=SimpleNamespace(pk=1))))
    assert not await check_permission(IsOwner(), request_for(user), View(SimpleNamespace(owner_id=3)))

    class ByAuthor(IsOwner):
        owner_fields = ("author",)

    assert await check_permission(ByAuthor(), request_for(user), View(SimpleNamespace(author_id=1)))


# -- end to end through the project's routers, in-process (realtime.testing) -------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "who", "allowed"),
    [
        ("admin-only", "staff", True),
        ("admin-only", "plain", False),
        ("admin-only", None, False),
        ("editor-only", "editor", True),
        ("editor-only", "root", True),  # a superuser holds every role
        ("editor-only", "plain", False),
        ("editor-or-admin", "editor", True),
        ("editor-or-admin", "staff", True),
        ("editor-or-admin", "plain", False),
    ],
)
async def test_role_protected_sockets_admit_or_close_with_4003(realtime_websocket, path, who, allowed):
    from asgiref.sync import sync_to_async

    from realtime.testing import token_for

    def make():
        users = {
            "staff": User.objects.create_user("staff", is_staff=True),
            "plain": User.objects.create_user("plain"),
            "editor": User.objects.create_user("editor"),
            "root": User.objects.create_superuser("root"),
        }
        users["editor"].groups.add(Group.objects.create(name="editor"))
        return users

    users = await sync_to_async(make)()
    token = token_for(users[who]) if who else None
    ws = await realtime_websocket(f"/api/t/{path}", token=token)
    if allowed:
        assert await ws.receive() == {"user": who, "params": {}}
    else:
        await ws.assert_closed(4003)
