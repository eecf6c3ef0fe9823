"""Shared by the commands that publish from outside the server: refuse when nothing would reach it."""

from django.core.management.base import CommandError

from realtime.pubsub.channel import Channel


def reaches_other_processes(channel: Channel) -> bool:
    """True when a publish here reaches subscribers in other processes (a layer, or a Redis Stream)."""
    return channel.reaches_other_processes


def require_cross_process(channel: Channel) -> None:
    """Raise ``CommandError`` (exit status 1) when ``channel`` is confined to this command's process."""
    if reaches_other_processes(channel):
        return
    from django.conf import settings

    backend = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get(channel.layer_alias, {}).get("BACKEND")
    configured = f"CHANNEL_LAYERS[{channel.layer_alias!r}] is {backend}" if backend else "no CHANNEL_LAYERS"
    raise CommandError(
        f"No cross-process channel layer is configured ({configured}): a message published by this command "
        "stays in its own process and never reaches a running server. Configure channels_redis "
        "(in the demo project: set REDIS_URL) in the server and here, then run this again."
    )
