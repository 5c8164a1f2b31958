"""What the server counts, and how Prometheus reads it.

The hot path only adds to plain integers on :class:`Counters` (one per
hub); everything else (connections, rooms, outbox backlogs) is read from
the hub when ``/metrics`` is scraped, by :class:`ChatCollector`. So counting
costs a broadcast a few additions per batch, not a call per message.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import ISSLTransport

#: Upper bounds of the histograms' buckets.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    """Bucket counts and a sum, kept as plain numbers."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str, labels: dict[str, str] | None = None):
        family = HistogramMetricFamily(name, documentation, labels=list(labels or {}))
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric(list((labels or {}).values()), buckets, self.sum)
        return family


class Counters:
    """Everything counted as it happens, by whoever sees it happen."""

    def __init__(self) -> None:
        self.logins: Counter[str] = Counter()  # result: ok, or the error code
        self.messages = 0  # stored
        self.deliveries = 0  # message copies written to recipients
        self.refusals: Counter[str] = Counter()  # ERROR codes sent
        self.disconnects: Counter[str] = Counter()  # BYE and LEFT reasons
        self.batch = Histogram(BATCH_BUCKETS)
        self.store = {"append": Histogram(SECONDS_BUCKETS), "read": Histogram(SECONDS_BUCKETS)}
        self.store_errors = 0
        self.lag = Histogram(SECONDS_BUCKETS)


def transport_kind(connection) -> str:
    """tcp, tls or unix; ws or wss for WebSocket; irc or ircs for IRC: what
    carries a connection (for the connections gauge)."""
    transport = getattr(connection, "transport", None)
    if transport is None:
        return "unknown"
    secure = ISSLTransport.providedBy(transport)
    wire = getattr(connection.wire, "name", "")
    if wire == "websocket":
        return "wss" if secure else "ws"
    if wire == "irc":
        return "ircs" if secure else "irc"
    if secure:
        return "tls"
    return "unix" if isinstance(transport.getHost(), UNIXAddress) else "tcp"


class ChatCollector(Collector):
    """The ``chat_`` families, read from the hub and its counters at scrape."""

    def __init__(self, hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator:
        hub, counters = self.hub, self.hub.counters
        yield self._connections()
        yield _counter("chat_logins", "LOGINs by result: ok, or the error code.", "result", counters.logins)
        yield _single(CounterMetricFamily, "chat_messages", "Messages stored.", counters.messages)
        yield _single(
            CounterMetricFamily,
            "chat_deliveries",
            "Message copies written to recipients.",
            counters.deliveries,
        )
        yield counters.batch.family("chat_broadcast_batch_messages", "Messages per broadcast batch.")
        yield _counter("chat_refusals", "ERRORs sent, by code.", "code", counters.refusals)
        yield _counter("chat_disconnects", "BYE and LEFT reasons.", "reason", counters.disconnects)
        backlogs = [c.outbox.backlog for c in hub.registry.open.values() if hasattr(c, "outbox")]
        yield _single(
            GaugeMetricFamily,
            "chat_outbox_backlog_bytes",
            "The largest unsent output of any connection.",
            max(backlogs, default=0),
        )
        yield _single(
            GaugeMetricFamily,
            "chat_paused_connections",
            "Connections the server is not reading (past their fair share).",
            sum(1 for c in hub.registry.open.values() if getattr(c, "paused", False)),
        )
        for op, histogram in counters.store.items():
            yield histogram.family("chat_store_seconds", "History appends and reads.", {"op": op})
        yield _single(
            CounterMetricFamily, "chat_store_errors", "History writes refused.", counters.store_errors
        )
        yield counters.lag.family("chat_reactor_lag_seconds", "How late a periodic reactor call fires.")
        yield _single(GaugeMetricFamily, "chat_rooms", "Rooms that exist.", len(hub.directory.rooms))
        yield _single(
            GaugeMetricFamily,
            "chat_room_members",
            "Memberships: sessions in rooms, counted once per room.",
            sum(len(room.members) for room in hub.directory.rooms.values()),
        )

    def _connections(self):
        family = GaugeMetricFamily(
            "chat_connections", "Open connections by transport and state.", labels=["transport", "state"]
        )
        counts: Counter[tuple[str, str]] = Counter()
        registry = self.hub.registry
        for id, connection in registry.open.items():
            state = "pending" if id in registry.pending else "connected"
            counts[transport_kind(connection), state] += 1
        if registry.reserved:  # HTTP connections of --web, not (yet) a WebSocket
            counts["http", "pending"] += registry.reserved
        for kind in ("tcp", "tls", "unix"):
            for state in ("pending", "connected"):
                counts.setdefault((kind, state), 0)
        for (kind, state), count in sorted(counts.items()):
            family.add_metric([kind, state], count)
        return family


def _single(cls, name: str, documentation: str, value: float):
    family = cls(name, documentation)
    family.add_metric([], value)
    return family


def _counter(name: str, documentation: str, label: str, counts: Counter) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(counts.items()):
        family.add_metric([key], value)
    return family
