"""What an operator's tools read: ``/metrics`` (Prometheus' text format) and
``/healthz``, on the endpoint given by ``--metrics``.

Both run on the reactor thread: a scrape reads plain numbers and walks the
open connections once, which costs far less than a turn of chat traffic.
"""

from __future__ import annotations

import hmac

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from chatproto.metrics import ChatCollector

log = Logger()

#: How often the reactor's lag is sampled.
LAG_EVERY = 0.5


#: Seconds a rendering of /metrics is served again: a scrape loop costs
#: one rendering a second, whatever its rate.
RENDER_EVERY = 1.0


class MetricsResource(Resource):
    """Prometheus' text format, rendered at most once a RENDER_EVERY and, with
    a token, only for ``Authorization: Bearer TOKEN``."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, clock, token: str | None = None) -> None:
        super().__init__()
        self.registry = registry
        self.clock = clock
        self.token = token
        self._rendered: tuple[float, bytes] | None = None

    def render_GET(self, request: Request) -> bytes:
        if not self.authorised(request):
            request.setResponseCode(401)
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="metrics"')
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"a bearer token is needed (--metrics-token-file)\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        now = self.clock.seconds()
        if self._rendered is None or now - self._rendered[0] >= RENDER_EVERY:
            self._rendered = (now, generate_latest(self.registry))
        return self._rendered[1]

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.getHeader("authorization") or ""
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8"), self.token.encode("utf-8")
        )


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


def operations_site(server, clock, token: str | None = None) -> Site:
    """The site ``--metrics`` serves: ``/metrics`` (behind ``token`` if
    given) and ``/healthz`` (open: it says only up or down, and why)."""
    registry = CollectorRegistry()
    registry.register(ChatCollector(server.hub))
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry, clock, token))
    root.putChild(b"healthz", HealthResource(server))
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site


class LagMonitor(TimerService):
    """Samples how late a periodic reactor call fires (Synapse's tick time):
    a blocked reactor shows here before users notice."""

    clock: IReactorTime

    def __init__(self, clock: IReactorTime, counters, every: float = LAG_EVERY) -> None:
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
