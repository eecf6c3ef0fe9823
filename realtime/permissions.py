"""DRF-style permissions for WebSocket and SSE endpoints.

The contract is Django REST framework's: ``has_permission(request, view)``,
``has_object_permission(request, view, obj)``, a ``message`` and a ``code``, and ``&``, ``|``, ``~``
composition between classes and instances. Two differences, both because these checks run on the
event loop at connect time:

- ``has_permission`` may be ``async def``. A plain ``def`` runs in a worker thread through
  ``database_sync_to_async``, so it may use the ORM freely.
- ``permission_classes`` may hold classes or instances (``HasRole("editor")`` is an instance).

``request`` is the Django ``HttpRequest`` on SSE endpoints and the ``ws`` connection on WebSocket
endpoints; both carry ``.user`` (``None`` or ``AnonymousUser`` for anonymous clients).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from channels.db import database_sync_to_async


def _user_of(request: Any) -> Any:
    user = getattr(request, "user", None)
    if user is None:
        user = getattr(getattr(request, "state", None), "user", None)
    return user


def is_authenticated(user: Any) -> bool:
    """True for a real, active user; False for None and AnonymousUser."""
    return user is not None and bool(getattr(user, "is_authenticated", False))


async def _call(method: Any, *args: Any) -> bool:
    if inspect.iscoroutinefunction(method):
        return bool(await method(*args))
    result = await database_sync_to_async(method)(*args)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


class _PermissionMeta(type):
    """Lets permission *classes* compose with ``&``, ``|`` and ``~`` as DRF's do."""

    def __and__(cls, other: Any) -> Permission:
        return And(cls(), _instance(other))

    def __rand__(cls, other: Any) -> Permission:
        return And(_instance(other), cls())

    def __or__(cls, other: Any) -> Permission:
        return Or(cls(), _instance(other))

    def __ror__(cls, other: Any) -> Permission:
        return Or(_instance(other), cls())

    def __invert__(cls) -> Permission:
        return Not(cls())


class Permission(metaclass=_PermissionMeta):
    """Base class: allow everything unless a subclass says otherwise."""

    message: str = "Permission denied"
    code: str = "permission_denied"

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        return True

    async def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return True

    def __and__(self, other: Any) -> Permission:
        return And(self, _instance(other))

    def __rand__(self, other: Any) -> Permission:
        return And(_instance(other), self)

    def __or__(self, other: Any) -> Permission:
        return Or(self, _instance(other))

    def __ror__(self, other: Any) -> Permission:
        return Or(_instance(other), self)

    def __invert__(self) -> Permission:
        return Not(self)


def _instance(permission: Any) -> Permission:
    if isinstance(permission, type):
        if not issubclass(permission, Permission) and not hasattr(permission, "has_permission"):
            raise TypeError(f"{permission!r} is not a permission class")
        return permission()
    if not hasattr(permission, "has_permission"):
        raise TypeError(
            f"{permission!r} is not a permission: use a Permission subclass or instance, "
            "e.g. permission_classes = [IsAuthenticated, HasRole('editor')]"
        )
    return permission


def get_permissions(permission_classes: Iterable[Any]) -> list[Permission]:
    """Instantiate the classes of a ``permission_classes`` list; instances are kept as they are."""
    return [_instance(p) for p in permission_classes]


async def check_permission(permission: Any, request: Any, view: Any) -> bool:
    """Run one permission's ``has_permission``, sync or async."""
    return await _call(permission.has_permission, request, view)


async def check_object_permission(permission: Any, request: Any, view: Any, obj: Any) -> bool:
    """Run one permission's ``has_object_permission``, sync or async; True when it has none."""
    method = getattr(permission, "has_object_permission", None)
    if method is None:
        return True
    return await _call(method, request, view, obj)


class And(Permission):
    """Both must allow; the second is not evaluated when the first denies."""

    def __init__(self, first: Permission, second: Permission) -> None:
        self.first, self.second = first, second

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        for permission in (self.first, self.second):
            if not await check_permission(permission, request, view):
                self.message = getattr(permission, "message", Permission.message)
                self.code = getattr(permission, "code", Permission.code)
                return False
        return True

    async def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return await check_object_permission(
            self.first, request, view, obj
        ) and await check_object_permission(self.second, request, view, obj)


def _either(first: Any, second: Any) -> str:
    """``"Role 'editor' required or administrator access required"``: what would have allowed."""
    messages = []
    for permission in (first, second):
        message = str(getattr(permission, "message", Permission.message))
        if message not in messages:
            messages.append(message)
    return " or ".join([messages[0], *(_lower_first(message) for message in messages[1:])])


def _lower_first(message: str) -> str:
    word = message.split(" ", 1)[0]
    return message if word.isupper() else message[:1].lower() + message[1:]


class Or(Permission):
    """Either may allow; the second is not evaluated when the first allows.

    A denial names both alternatives, not only the last one tried.
    """

    def __init__(self, first: Permission, second: Permission) -> None:
        self.first, self.second = first, second
        self.message = _either(first, second)
        self.code = getattr(second, "code", Permission.code)

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        if await check_permission(self.first, request, view) or await check_permission(self.second, request, view):
            return True
        self.message = _either(self.first, self.second)  # an `&` operand now names the part that denied
        return False

    async def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        # As in DRF: an operand grants object access only if it granted access to the endpoint too.
        for permission in (self.first, self.second):
            if await check_permission(permission, request, view) and await check_object_permission(
                permission, request, view, obj
            ):
                return True
        return False


class Not(Permission):
    """Allows what the operand denies."""

    def __init__(self, operand: Permission) -> None:
        self.operand = operand

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        return not await check_permission(self.operand, request, view)

    async def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return not await check_object_permission(self.operand, request, view, obj)


class AllowAny(Permission):
    """Public access: the default when ``permission_classes`` is empty."""

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        return True


class IsAuthenticated(Permission):
    """Requires a valid JWT (or, on SSE, a logged-in session)."""

    message = "Authentication required"
    code = "not_authenticated"

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        return is_authenticated(_user_of(request))


class IsAdmin(Permission):
    """Requires ``user.is_staff``, ``user.is_superuser`` or a truthy ``user.is_admin``."""

    message = "Administrator access required"
    code = "not_admin"

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        user = _user_of(request)
        return is_authenticated(user) and any(
            bool(getattr(user, attr, False)) for attr in ("is_staff", "is_superuser", "is_admin")
        )


class HasRole(Permission):
    """Requires membership of a Django auth group named ``role`` (superusers hold every role).

    Roles are the Django admin's groups: the user list shows each user's roles and an admin edits
    them on the user's page.
    """

    code = "missing_role"

    def __init__(self, role: str) -> None:
        if not isinstance(role, str) or not role:
            raise ValueError("HasRole needs a role name, e.g. HasRole('editor')")
        self.role = role
        self.message = f"Role '{role}' required"

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        user = _user_of(request)
        if not is_authenticated(user):
            return False
        if getattr(user, "is_superuser", False):
            return True
        return await database_sync_to_async(self._in_group)(user)

    def _in_group(self, user: Any) -> bool:
        return user.groups.filter(name=self.role).exists()

    def __repr__(self) -> str:
        return f"HasRole({self.role!r})"


class IsOwner(Permission):
    """Only the owner may connect.

    The rule, in order:

    1. If the view defines ``get_object()`` (sync or async), its result must be owned by the user:
       ``has_object_permission`` compares ``obj.<owner_field>`` (default ``owner``, then ``user``)
       or ``obj.<owner_field>_id`` with the user's primary key.
    2. Otherwise the endpoint's path parameters are the object: the first of ``owner_params``
       present (``user_id``, ``userId``, ``owner_id``, ``pk``) must equal the user's primary key.
    3. With neither, access is denied (a misconfigured endpoint fails closed).

    Subclass and set ``owner_params`` or ``owner_fields``, or override ``get_owner_id(obj)``.
    """

    message = "You are not the owner"
    code = "not_owner"
    owner_params: tuple[str, ...] = ("user_id", "userId", "owner_id", "pk")
    owner_fields: tuple[str, ...] = ("owner", "user")

    async def has_permission(self, request: Any, view: Any = None) -> bool:
        user = _user_of(request)
        if not is_authenticated(user):
            return False
        get_object = getattr(view, "get_object", None)
        if get_object is not None:
            obj = get_object()
            if inspect.isawaitable(obj):
                obj = await obj
            return await self.has_object_permission(request, view, obj)
        params = getattr(view, "params", None) or {}
        for name in self.owner_params:
            if name in params:
                return str(params[name]) == str(user.pk)
        return False

    async def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        user = _user_of(request)
        if not is_authenticated(user) or obj is None:
            return False
        return str(self.get_owner_id(obj)) == str(user.pk)

    def get_owner_id(self, obj: Any) -> Any:
        """The primary key of the object's owner."""
        for field in self.owner_fields:
            owner_id = getattr(obj, f"{field}_id", None)
            if owner_id is not None:
                return owner_id
            owner = getattr(obj, field, None)
            if owner is not None:
                return getattr(owner, "pk", owner)
        return None


async def first_denial(permissions: Iterable[Any], request: Any, view: Any) -> Permission | None:
    """The first permission that denies, or None when all allow."""
    for permission in permissions:
        if not await check_permission(permission, request, view):
            return permission
    return None


def describe(permission: Any) -> str:
    """``(HasRole('editor') | IsAdmin)``: a permission as it is written in ``permission_classes``."""
    if isinstance(permission, type):
        return permission.__name__
    if isinstance(permission, And):
        return f"({describe(permission.first)} & {describe(permission.second)})"
    if isinstance(permission, Or):
        return f"({describe(permission.first)} | {describe(permission.second)})"
    if isinstance(permission, Not):
        return f"~{describe(permission.operand)}"
    if type(permission).__repr__ is not object.__repr__:
        return repr(permission)
    return type(permission).__name__
