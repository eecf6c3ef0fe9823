"""The trading demo's two Channels, declared once per process.

- ``ticks``: market ticks of every symbol, fanned out live (no history: a missed tick is stale anyway).
- ``trades``: every placed trade, with history (a Redis Stream when ``REDIS_URL`` is set), so an
  event stream that reconnects with ``Last-Event-ID`` resumes exactly where it left off.
"""

from realtime import Channel

ticks = Channel("ticks", maxlen=500)
trades = Channel("trades", maxlen=1000, history=1000)
