"""realtime's system checks: the set-up mistakes manage.py check used to pass as "no issues"."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.checks import run_checks
from django.test import override_settings

from realtime import CoreApp, Router

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS_LAYER = {
    "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/3", "socket_timeout": 5}]}}
}

# What ASGI_APPLICATION may name, below.
django_default = get_asgi_application()  # the asgi.py of startproject, left in place
core = CoreApp(routers=[Router()])


class Wrapper:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


wrapped = Wrapper(Wrapper(core))  # middleware around the CoreApp, as projects wrap it
wrapped_default = Wrapper(django_default)


async def own_app(scope, receive, send):
    pass


def found(**overrides) -> list[tuple[str, str, str]]:
    """(id, message, hint) of realtime's findings under ``overrides``."""
    with override_settings(**overrides):
        return [(m.id, m.msg, m.hint) for m in run_checks() if m.id.startswith("realtime.") and not m.is_silenced()]


def ids(**overrides) -> list[str]:
    return [finding[0] for finding in found(**overrides)]


def test_the_demo_projects_settings_pass():
    assert found() == []


# -- daphne in INSTALLED_APPS -----------------------------------------------------------------------


def test_daphne_after_staticfiles_is_an_error_naming_the_app_whose_runserver_wins():
    apps = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    after = apps.index("django.contrib.staticfiles") + 1
    late = [*apps[:after], "daphne", *apps[after:]]
    [(check_id, message, hint)] = found(INSTALLED_APPS=late)
    assert check_id == "realtime.E001"
    assert "after 'django.contrib.staticfiles', whose runserver wins" in message and "WebSockets answer 404" in message
    assert hint.startswith('Move "daphne" to the start of INSTALLED_APPS, before \'django.contrib.staticfiles\'')


def test_daphne_missing_is_a_warning_that_says_where_to_put_it():
    [(check_id, message, hint)] = found(INSTALLED_APPS=[a for a in settings.INSTALLED_APPS if a != "daphne"])
    assert check_id == "realtime.W001" and "SSE streams hang" in message
    assert 'INSTALLED_APPS = ["daphne", *INSTALLED_APPS]' in hint and "realtime.W001" in hint


def test_daphne_second_after_an_app_without_runserver_is_fine():
    apps = [a for a in settings.INSTALLED_APPS if a not in ("daphne", "django.contrib.contenttypes")]
    assert ids(INSTALLED_APPS=["django.contrib.contenttypes", "daphne", *apps]) == []


# -- ASGI_APPLICATION -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("application", "expected", "says"),
    [
        (None, "realtime.E002", "ASGI_APPLICATION is not set: manage.py runserver cannot serve WebSockets"),
        ("tests.test_checks.django_default", "realtime.E004",
         "is Django's own ASGIHandler (the asgi.py of startproject): it refuses every WebSocket with "
         '"ValueError: Django can only handle ASGI/HTTP connections"'),
        ("tests.test_checks.wrapped_default", "realtime.E004", "Django's own ASGIHandler"),
        ("tests.test_checks.nowhere", "realtime.E003", "cannot be loaded: ImportError: Module \"tests.test_checks\""),
        ("tests.no_such_module.application", "realtime.E003", "ModuleNotFoundError"),
        ("tests.test_checks.own_app", "realtime.W002", "No realtime CoreApp (or Channels ProtocolTypeRouter)"),
    ],
)
def test_an_asgi_application_that_cannot_serve_realtime_is_reported(application, expected, says):
    [(check_id, message, hint)] = found(ASGI_APPLICATION=application)
    assert check_id == expected and says in message
    assert hint


@pytest.mark.parametrize("application", ["tests.test_checks.core", "tests.test_checks.wrapped",
                                         "project.asgi.application"])
def test_a_coreapp_even_inside_middleware_passes(application):
    assert ids(ASGI_APPLICATION=application) == []


def test_a_route_the_asgi_module_refuses_is_reported_by_check(monkeypatch, tmp_path):
    (tmp_path / "broken_asgi.py").write_text(
        "from realtime import CoreApp, Router, WebSocketView\n"
        "router = Router()\n"
        "router.register_websocket('/e/:id', WebSocketView)\n"
        "application = CoreApp(routers=[router])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    [(check_id, message, _)] = found(ASGI_APPLICATION="broken_asgi.application")
    assert check_id == "realtime.E003" and "ImproperlyConfigured: register_websocket('/e/:id'" in message


# -- several processes ------------------------------------------------------------------------------


def test_redis_url_without_a_cross_process_layer_is_an_error_naming_the_layer_to_add(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    for layers in (IN_MEMORY, {}):
        [(check_id, message, hint)] = found(REDIS_URL="redis://127.0.0.1:6379/3", CHANNEL_LAYERS=layers)
        assert check_id == "realtime.E010"
        assert "a publish on a Channel without history reaches this process only" in message
        assert '"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"' in hint


def test_a_cross_process_layer_without_redis_url_is_an_error_giving_the_layers_url(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    [(check_id, message, hint)] = found(REDIS_URL=None, CHANNEL_LAYERS=REDIS_LAYER)
    assert check_id == "realtime.E011"
    assert "publishes reach every process, but settings.REDIS_URL is not set: presence, history ids" in message
    assert hint.startswith("Set REDIS_URL = 'redis://127.0.0.1:6379/3' in settings")


def test_a_cluster_url_and_a_layer_of_one_server_disagree_either_way(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    [(check_id, message, hint)] = found(REDIS_URL="redis+cluster://127.0.0.1:7000", CHANNEL_LAYERS=REDIS_LAYER)
    assert check_id == "realtime.E012" and "channels_redis cannot reach a cluster" in message
    assert "realtime.pubsub.sharded.RedisClusterChannelLayer" in hint
    cluster_layer = {"default": {"BACKEND": "realtime.pubsub.sharded.RedisClusterChannelLayer"}}
    [(check_id, message, _)] = found(REDIS_URL="redis://127.0.0.1:6379/3", CHANNEL_LAYERS=cluster_layer)
    assert check_id == "realtime.E012" and "needs a redis+cluster:// URL" in message
    assert found(REDIS_URL="redis+cluster://127.0.0.1:7000", CHANNEL_LAYERS=cluster_layer) == []


def test_a_sentinel_url_needs_the_layer_to_ask_the_same_sentinels(monkeypatch):
    from realtime.pubsub.redis import channel_layer_host

    monkeypatch.delenv("REDIS_URL", raising=False)
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"
    # a layer pinned to one server keeps publishing to the old master after a failover
    [(check_id, message, hint)] = found(REDIS_URL=url, CHANNEL_LAYERS=REDIS_LAYER)
    assert check_id == "realtime.E012" and "stops being the master after a failover" in message
    assert "channel_layer_host(REDIS_URL)" in hint
    cluster_layer = {"default": {"BACKEND": "realtime.pubsub.sharded.RedisClusterChannelLayer"}}
    [(check_id, message, hint)] = found(REDIS_URL=url, CHANNEL_LAYERS=cluster_layer)
    assert check_id == "realtime.E012" and "needs a redis+cluster:// URL" in message and "channel_layer_host" in hint
    sentinel_layer = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                                  "CONFIG": {"hosts": [channel_layer_host(url)]}}}
    assert found(REDIS_URL=url, CHANNEL_LAYERS=sentinel_layer) == []
    core_layer = {"default": {**sentinel_layer["default"], "BACKEND": "channels_redis.core.RedisChannelLayer"}}
    assert found(REDIS_URL=url, CHANNEL_LAYERS=core_layer) == []
    # and the other way round: sentinels in the layer, one server in REDIS_URL
    [(check_id, message, hint)] = found(REDIS_URL="redis://127.0.0.1:6379/3", CHANNEL_LAYERS=sentinel_layer)
    assert check_id == "realtime.E012" and "its hosts ask sentinels for a master" in message
    assert "redis+sentinel://" in hint


def test_a_sentinel_url_is_parsed_strictly_and_never_echoed(monkeypatch):
    from realtime.pubsub.redis import SentinelTarget, channel_layer_host, sentinel_target

    assert sentinel_target("rediss+sentinel://app:s%40cret@a:1,[::1]:2,b/cache/3?sentinel_password=pw") == \
        SentinelTarget(sentinels=[("a", 1), ("::1", 2), ("b", 26379)], service="cache", db=3, username="app",
                       password="s@cret", sentinel_password="pw", ssl=True)
    host = channel_layer_host("redis+sentinel://:pw@a:1/m")
    assert host["sentinels"] == [("a", 1)] and host["master_name"] == "m" and host["password"] == "pw"
    assert host["db"] == 0 and host["socket_timeout"] == 5.0 and "ssl" not in host
    for wrong in ("redis+sentinel://:pw@a:1", "redis+sentinel://:pw@/m", "redis+sentinel://:pw@a:1/m/0/extra"):
        with pytest.raises(ValueError) as error:
            sentinel_target(wrong)
        assert "pw" not in str(error.value)


def test_the_redis_url_environment_variable_alone_is_a_warning_saying_it_is_a_setting(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    [(check_id, message, hint)] = found(REDIS_URL=None, CHANNEL_LAYERS=IN_MEMORY)
    assert check_id == "realtime.W010"
    assert "realtime reads the Django setting REDIS_URL, which is not set" in message
    assert 'REDIS_URL = os.environ.get("REDIS_URL")' in hint
    assert ids(REDIS_URL=None, CHANNEL_LAYERS=IN_MEMORY, SILENCED_SYSTEM_CHECKS=["realtime.W010"]) == []


def test_both_or_neither_pass(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert ids(REDIS_URL="redis://127.0.0.1:6379/3", CHANNEL_LAYERS=REDIS_LAYER) == []
    assert ids(REDIS_URL=None, CHANNEL_LAYERS=IN_MEMORY) == []


def test_a_coreapp_built_with_a_mismatch_logs_it_for_daphne_which_runs_no_checks(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("realtime.checks")
    logger.addHandler(handler)
    try:
        with override_settings(REDIS_URL=None, CHANNEL_LAYERS=REDIS_LAYER):
            CoreApp(routers=[Router()], http_app=django_default)
        with override_settings(REDIS_URL=None, CHANNEL_LAYERS=REDIS_LAYER, SILENCED_SYSTEM_CHECKS=["realtime.E011"]):
            CoreApp(routers=[Router()], http_app=django_default)
    finally:
        logger.removeHandler(handler)
    [record] = records
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("realtime.E011: CHANNEL_LAYERS['default'] is channels_redis")
    assert "HINT: Set REDIS_URL = 'redis://127.0.0.1:6379/3'" in record.getMessage()
