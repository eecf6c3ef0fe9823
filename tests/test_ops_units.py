"""The pure parts of realtime.ops: label folding, histograms, the JSON formatter, the status command alone."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.core.management import call_command
from django.test import override_settings

from realtime.ops.labels import ChannelLabels
from realtime.ops.logs import JSONFormatter
from realtime.ops.stats import Histogram


@pytest.mark.parametrize(
    ("names", "labels"),
    [
        (["a", "b"], ["a", "b"]),
        (["a", "b", "room:1", "room:2", "chat:x"], ["a", "b", "room:*", "room:*", "chat:*"]),
        (["a", "b", "plain", ":odd"], ["a", "b", "other", "other"]),
        (["a", "b", "x:1", "y:1", "z:1", "x:2"], ["a", "b", "x:*", "y:*", "other", "x:*"]),
    ],
)
def test_channel_names_beyond_the_limit_fold_into_patterns_then_other(names, labels):
    with override_settings(REALTIME={"METRICS_MAX_CHANNELS": 2}):
        folding = ChannelLabels()
        assert [folding.label(name) for name in names] == labels
        assert [folding.label(name) for name in names] == labels  # a label never changes


def test_ten_thousand_names_make_a_bounded_set_of_labels():
    with override_settings(REALTIME={"METRICS_MAX_CHANNELS": 100}):
        folding = ChannelLabels()
        labels = {folding.label(f"{kind}:{i}") for kind in ("room", "user") for i in range(5000)}
        labels |= {folding.label(f"t{i}:x") for i in range(10000)}  # 10,000 distinct prefixes
    assert len(labels) <= 201


def test_histogram_buckets_are_cumulative_and_le():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.sum == pytest.approx(3.65) and histogram.count == 4
    assert histogram.quantile(0.5) == 0.1 and histogram.quantile(0.75) == 1.0 and histogram.quantile(1.0) is None


def test_json_formatter_writes_one_object_with_the_structured_fields():
    record = logging.LogRecord("realtime.connections", logging.INFO, __file__, 1, "ended %s", ("x",), None)
    record.realtime = {"endpoint": "/api/ws/<room>", "code": "1000", "user": 7}
    line = JSONFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "ended x" and data["logger"] == "realtime.connections" and data["level"] == "INFO"
    assert data["endpoint"] == "/api/ws/<room>" and data["user"] == 7 and data["time"].endswith("+00:00")


@override_settings(REDIS_URL=None)
def test_realtime_status_without_redis_shows_this_process_and_says_so():
    out = io.StringIO()
    call_command("realtime_status", stdout=out)
    assert "REDIS_URL is not set: this process can only see itself" in out.getvalue()
    out = io.StringIO()
    call_command("realtime_status", "--json", stdout=out)
    found = json.loads(out.getvalue())
    assert found["shared"] is False and len(found["processes"]) == 1


def test_counters_keep_their_numbers_in_arrays_not_in_objects_of_their_own():
    # A counter bumped at every connection's end would leave its last int object among the freed
    # blocks of a wave of disconnects, keeping a pymalloc arena resident (bench/soak).
    import gc
    from array import array

    from realtime.ops.stats import EndpointTotals, Tally

    totals = EndpointTotals()
    for _ in range(3):
        totals.connections += 1
        totals.sent += 10**6
        totals.duration.observe(2.5)
    assert (totals.connections, totals.sent, totals.received, totals.duration.count) == (3, 3 * 10**6, 0, 3)
    assert totals.duration.sum == pytest.approx(7.5)
    held = [r for o in (totals, totals.duration) for r in gc.get_referents(o)]
    assert not [r for r in held if type(r) in (int, float)]
    assert any(type(r) is array for r in held)

    tally = Tally()
    tally[("websocket", "1000", "client")] += 1
    tally[("websocket", "1000", "client")] += 1
    tally[("sse", "end", "server")] += 1
    assert dict(tally) == {("websocket", "1000", "client"): 2, ("sse", "end", "server"): 1}
    assert tally[("never", "seen", "-")] == 0 and len(tally) == 2 and tally.get("x", 0) == 0


def test_a_socket_condemned_by_its_inbound_bound_counts_as_its_1008_even_once_also_slow():
    """The meter closes it 1008; the close then waits behind a send to a client that does not read,
    and the slow-consumer policy gives up on it too. Why the server ended it is the 1008."""
    from types import SimpleNamespace

    from realtime.inbound import OVER_ADDRESS
    from realtime.ops.connections import websocket_end

    condemned = SimpleNamespace(inbound=SimpleNamespace(overflowed=OVER_ADDRESS), close_code=1008, closed_by="server")
    assert websocket_end(condemned, slow=True) == ("1008", "server")
    slow_only = SimpleNamespace(inbound=SimpleNamespace(overflowed=None), close_code=1008, closed_by="server")
    assert websocket_end(slow_only, slow=True) == ("4008", "server")
    gone = SimpleNamespace(inbound=None, close_code=None, closed_by=None)
    assert websocket_end(gone, slow=False) == ("1006", "client")
