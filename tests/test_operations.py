"""``--metrics``: /metrics after a scripted session, and /healthz up and down,
over real sockets on 127.0.0.1."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from chatproto import codec
from chatproto.limits import Limits
from chatproto.server import build_server
from tests.netclient import connect


class Operations(TestCase):
    timeout = 60

    def setUp(self):
        self.server = build_server(
            reactor,
            ["tcp:0:interface=127.0.0.1"],
            self.mktemp() + ".sqlite3",
            Limits(),
            metrics="tcp:0:interface=127.0.0.1",
        )
        self.server.start()
        self.addCleanup(self.server.stopService)
        self.clients = []

    @defer.inlineCallbacks
    def get(self, path: str):
        port = self.server.operations.port.getHost().port
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
        body = yield readBody(response)
        return response.code, body.decode("utf-8")

    @defer.inlineCallbacks
    def client(self, nick, version=1):
        client = yield connect(reactor, self.server.port, nick, version)
        self.clients.append(client)
        self.addCleanup(lambda: client.transport.loseConnection() or client.lost)
        return client

    @defer.inlineCallbacks
    def metrics(self) -> dict:
        code, text = yield self.get("/metrics")
        self.assertEqual(code, 200)
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        return samples

    @defer.inlineCallbacks
    def test_metrics_after_a_scripted_session(self):
        ann = yield self.client("ann")
        bob = yield self.client("bob", version=2)
        bob.send(codec.Join("general"))
        yield bob.expect(codec.RoomState)
        taken = yield connect(reactor, self.server.port)
        self.addCleanup(lambda: taken.transport.loseConnection() or taken.lost)
        taken.send(codec.Login("ANN", 1))
        yield taken.expect(codec.Error)
        for text in ("one", "two"):
            ann.send(codec.Say(text, text))
            yield ann.expect(codec.MessagePacket)
            yield bob.expect(codec.MessagePacket)
        ann.send(codec.Say("bell\x07", "b"))
        yield ann.expect(codec.Error)
        bob.send(codec.Quit("bye"))
        yield ann.expect(codec.Left)
        m = yield self.metrics()
        self.assertEqual(m["chat_logins_total", (("result", "ok"),)], 2)
        self.assertEqual(m["chat_logins_total", (("result", "nick_taken"),)], 1)
        self.assertEqual(m["chat_messages_total", ()], 2)
        self.assertEqual(m["chat_deliveries_total", ()], 4, "two messages, each to ann and bob")
        self.assertEqual(m["chat_refusals_total", (("code", "bad_text"),)], 1)
        self.assertEqual(m["chat_refusals_total", (("code", "nick_taken"),)], 1)
        self.assertEqual(m["chat_disconnects_total", (("reason", "quit"),)], 1)
        self.assertEqual(m["chat_connections", (("state", "connected"), ("transport", "tcp"))], 1)
        self.assertEqual(m["chat_connections", (("state", "pending"), ("transport", "tcp"))], 1)
        self.assertEqual(m["chat_rooms", ()], 1)
        self.assertEqual(m["chat_room_members", ()], 1)
        self.assertEqual(m["chat_broadcast_batch_messages_sum", ()], 2)
        self.assertEqual(m["chat_store_seconds_count", (("op", "append"),)], 2)
        self.assertEqual(m["chat_store_errors_total", ()], 0)
        self.assertIn(("chat_reactor_lag_seconds_count", ()), m)
        self.assertIn(("chat_outbox_backlog_bytes", ()), m)
        self.assertIn(("chat_paused_connections", ()), m)

    @defer.inlineCallbacks
    def test_healthz_up_store_down_and_port_down(self):
        code, text = yield self.get("/healthz")
        self.assertEqual((code, text), (200, "ok\n"))
        self.server.hub.eventlog._db.close()  # the store stops answering
        code, text = yield self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertIn("does not answer", text)
        yield self.server.listeners[0].stopService()
        code, text = yield self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertIn("not listening on tcp:0:interface=127.0.0.1", text)

    @defer.inlineCallbacks
    def test_healthz_says_when_the_store_refuses_writes(self):
        """A full disk: reads go on, every write fails. /healthz must say so."""
        ann = yield self.client("ann")
        db = self.server.hub.eventlog._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: as when the disk is full
        for i in range(500):  # bounded: until a write fails
            ann.send(codec.Say(f"filling {i} " + "x" * 3000, f"r{i}"))
            answer = yield ann.expect((codec.MessagePacket, codec.Error))
            if isinstance(answer, codec.Error):
                break
        self.assertEqual(answer.code, "internal")
        code, text = yield self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertIn("refuses writes", text)
        db.execute("PRAGMA max_page_count = 1073741823")  # room again
        ann.send(codec.Say("back", "back"))
        yield ann.expect(codec.MessagePacket)
        code, text = yield self.get("/healthz")
        self.assertEqual((code, text), (200, "ok\n"), "healthy once a write goes in")


class MetricsAccess(TestCase):
    """/metrics on loopback by default, behind a bearer token if one is set,
    and rendered at most once a second however often it is scraped."""

    def render(self, resource, authorization: str | None = None):
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b""])
        if authorization is not None:
            request.requestHeaders.setRawHeaders(b"authorization", [authorization.encode()])
        body = resource.render_GET(request)
        return request.responseCode or 200, body

    def test_a_token_is_asked_for_and_compared(self):
        from chatproto.operations import MetricsResource

        resource = MetricsResource(CountingRegistry(), Clock(), token="s3cret-token-of-16+")
        self.assertEqual(self.render(resource)[0], 401)
        self.assertEqual(self.render(resource, "Bearer wrong")[0], 401)
        self.assertEqual(self.render(resource, "Basic s3cret-token-of-16+")[0], 401)
        self.assertEqual(self.render(resource, "Bearer s3cret-token-of-16+")[0], 200)

    def test_a_scrape_loop_costs_one_rendering_a_second(self):
        from chatproto.operations import MetricsResource

        clock, registry = Clock(), CountingRegistry()
        resource = MetricsResource(registry, clock)
        for _ in range(100):  # a scrape loop within one second
            self.render(resource)
        self.assertEqual(registry.renderings, 1)
        clock.advance(1)
        self.render(resource)
        self.assertEqual(registry.renderings, 2)

    def test_metrics_listen_on_loopback_unless_told(self):
        from chatproto.endpoints import metrics_endpoint

        self.assertEqual(metrics_endpoint("9100"), "tcp:9100:interface=127.0.0.1")
        self.assertEqual(metrics_endpoint("tcp:9100"), "tcp:9100:interface=127.0.0.1")
        self.assertEqual(metrics_endpoint("tcp6:9100"), "tcp6:9100:interface=::1")
        for said in ("tcp:9100:interface=0.0.0.0", "unix:/run/chat-metrics.sock", "ssl:9100:privateKey=k"):
            self.assertEqual(metrics_endpoint(said), said)


class CountingRegistry(CollectorRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.renderings = 0

    def collect(self):
        self.renderings += 1
        return super().collect()


class DashboardsNameRealMetrics(TestCase):
    def test_the_dashboard_and_alerts_use_only_exported_families(self):
        import os
        import re

        from prometheus_client import CollectorRegistry, generate_latest

        from chatproto.metrics import ChatCollector

        server = build_server(reactor, history=":memory:")
        registry = CollectorRegistry()
        registry.register(ChatCollector(server.hub))
        families = set(re.findall(r"^# TYPE (chat_\w+)", generate_latest(registry).decode(), re.MULTILINE))
        suffixes = ("", "_total", "_bucket", "_count", "_sum")
        exported = {family + suffix for family in families for suffix in suffixes}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for name in ("grafana-dashboard.json", "alerts.yml"):
            with open(os.path.join(root, "docs", name)) as f:
                used = set(re.findall(r"\bchat_\w+", f.read()))
            self.assertTrue(used, name)
            self.assertEqual(used - exported, set(), f"{name} names metrics the server does not export")
