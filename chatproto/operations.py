"""What an operator's tools read: ``/metrics`` (Prometheus' text format) and
``/healthz``, on the endpoint given by ``--metrics``.

Both run on the reactor thread: a scrape reads plain numbers and walks the
open connections once, which costs far less than a turn of chat traffic.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.application.internet import TimerService
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from chatproto.metrics import ChatCollector

log = Logger()

#: How often the reactor's lag is sampled.
LAG_EVERY = 0.5


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class HealthResource(Resource):
    """200 ``ok`` when every listener is up and the history store answers;
    503 and the reasons otherwise (for load balancers and watchdogs)."""

    isLeaf = True

    def __init__(self, server) -> None:
        super().__init__()
        self.chat_server = server  # not "server": putChild overwrites that

    def render_GET(self, request: Request):
        d = self.chat_server.health()
        d.addCallback(self._answer, request)
        d.addErrback(lambda f: log.failure("health check failed", f))
        return NOT_DONE_YET

    @staticmethod
    def _answer(problems: list[str], request: Request) -> None:
        if request.finished or request.channel is None:
            return
        request.setResponseCode(503 if problems else 200)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.write(("\n".join(problems) if problems else "ok").encode("utf-8") + b"\n")
        request.finish()


def operations_site(server) -> Site:
    """The site ``--metrics`` serves: ``/metrics`` and ``/healthz``."""
    registry = CollectorRegistry()
    registry.register(ChatCollector(server.hub))
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"healthz", HealthResource(server))
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site


class LagMonitor(TimerService):
    """Samples how late a periodic reactor call fires (Synapse's tick time):
    a blocked reactor shows here before users notice."""

    def __init__(self, clock, counters, every: float = LAG_EVERY) -> None:
        super().__init__(every, self._tick)
        self.clock = clock
        self.counters = counters
        self._last: float | None = None

    def startService(self) -> None:
        self._last = None
        super().startService()

    def _tick(self) -> None:
        now = self.clock.seconds()
        if self._last is not None:
            self.counters.lag.observe(max(0.0, now - self._last - self.step))
        self._last = now
