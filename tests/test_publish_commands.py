"""publish and place_trade refuse, with a non-zero exit, when nothing they publish could reach a server."""

import os
import subprocess

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.test import override_settings

from project.trading.channels import trades
from realtime.management.commands._layer import reaches_other_processes
from realtime.pubsub.channel import Channel
from tests.servers import PYTHON, ROOT

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                     "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}


def test_publish_exits_non_zero_with_the_reason_on_the_in_memory_layer():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    env.pop("REDIS_URL", None)
    result = subprocess.run([PYTHON, "manage.py", "publish", "ticks", '{"symbol": "R_100"}'],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "No cross-process channel layer is configured" in result.stderr
    assert "channels.layers.InMemoryChannelLayer" in result.stderr
    assert "Published" not in result.stdout


@override_settings(CHANNEL_LAYERS=IN_MEMORY, REDIS_URL=None)
def test_place_trade_refuses_before_placing_anything():
    before = async_to_sync(trades.newest_id)()
    with pytest.raises(CommandError, match="never reaches a running server"):
        call_command("place_trade", "alice", "R_100", "buy", "10")
    assert async_to_sync(trades.newest_id)() == before


@override_settings(CHANNEL_LAYERS={}, REDIS_URL=None)
def test_no_layer_at_all_is_named_too():
    with pytest.raises(CommandError, match="no CHANNEL_LAYERS"):
        call_command("publish", "ticks", "{}")


def test_what_counts_as_reaching_other_processes():
    plain, history = Channel("cmd-plain"), Channel("cmd-history", history=10)
    with override_settings(CHANNEL_LAYERS=IN_MEMORY, REDIS_URL=None):
        assert not reaches_other_processes(plain) and not reaches_other_processes(history)
    with override_settings(CHANNEL_LAYERS=IN_MEMORY, REDIS_URL="redis://127.0.0.1:1/0"):
        assert reaches_other_processes(history)  # delivered through its Redis Stream
        assert not reaches_other_processes(plain)
    with override_settings(CHANNEL_LAYERS=REDIS, REDIS_URL=None):
        assert reaches_other_processes(plain)
