"""Failover fences: after a replica is promoted, history before it cannot be vouched for.

Redis replication is asynchronous: a master killed mid-publish may have answered ``XADD`` (and its
readers may have handed the entry to subscribers) for writes its replica never received. The
promoted replica's stream then lacks them, and nothing in the stream says so: a resume from an id
before them would be answered with the entries after it, *recovered*, and a silent hole.

So a master that was promoted (``INFO replication`` shows a previous replication id,
``master_replid2``) records, once per replication id, the moment it was first seen promoted (its
own ``TIME``, in the hash :func:`key`), and a history on it vouches only for ids after that moment:
a resume from before the failover answers ``recovered: false`` (the client refetches its state),
one from after it is recovered as usual. The moment is taken by the first process that looks: the
stream readers when they reconnect after a failure, or the first resume. Later than the promotion
is honest too (a few resumes more say ``recovered: false``); earlier is impossible, since it is
read on the promoted master. It assumes the servers' clocks agree to better than a failover's
duration (NTP), as stream ids do.

On a Redis Cluster each master is fenced on its own: the hash lives in each tag bucket's slot.
"""

from __future__ import annotations

from typing import Any

from . import ids

#: Records the promotion moment of the current replication id, once: ``HSETNX`` with the server's time.
_FENCE = """
local t = redis.call('TIME')
redis.call('HSETNX', KEYS[1], ARGV[1], t[1] * 1000 + math.floor(t[2] / 1000))
return redis.call('HGET', KEYS[1], ARGV[1])
"""
_NEVER_PROMOTED = "0" * 40


def key(tag: str | None) -> str:
    """The hash of promotion moments: one per Redis, or per tag bucket's slot on a cluster (``tag``)."""
    return f"realtime:promotions:{tag}" if tag else "realtime:promotions"


async def fence(client: Any, tag: str | None = None, node_key: str | None = None) -> tuple[int, int]:
    """The id after which this master vouches for history (:data:`~realtime.pubsub.ids.START`: it was
    never promoted). ``node_key`` names the key whose node to ask on a cluster."""
    if node_key is not None and hasattr(client, "get_node_from_key"):  # a cluster: the node of the key's slot
        info = await client.info("replication", target_nodes=client.get_node_from_key(node_key))
    else:
        info = await client.info("replication")
    if isinstance(info, dict) and "master_replid" not in info and len(info) == 1:  # a per-node answer
        info = next(iter(info.values()))
    previous = str(info.get("master_replid2") or _NEVER_PROMOTED)
    if not previous.strip("0") or info.get("role") != "master":
        return ids.START
    moment = await client.eval(_FENCE, 1, key(tag), str(info["master_replid"]))
    return (int(moment), 0)
