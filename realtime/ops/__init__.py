"""Operations: what a running deployment is doing, seen from outside.

- :mod:`.stats`: the process's counters, plain ints kept where the work happens (no dependency);
- :mod:`.connections`: one record per open connection (`live`: those open now), and one log line when it ends;
- :mod:`.labels`: bounded channel labels (names beyond ``METRICS_MAX_CHANNELS`` fold into patterns);
- :mod:`.prometheus`: those counters as Prometheus metrics (the ``[metrics]`` extra), served by
  :class:`.views.MetricsView` and on ``METRICS_PORT``;
- :mod:`.snapshot` and :mod:`.fleet`: one process's figures as a dict, published to Redis every few
  seconds so the admin page and ``manage.py realtime_status`` see every process;
- :mod:`.logs`: a JSON formatter for log pipelines.
"""
