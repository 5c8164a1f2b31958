"""``--listen proxy:tcp:...``: behind a load balancer that speaks the PROXY
protocol, every per-address limit sees the client, never the proxy. Real
sockets on 127.0.0.1."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from chatproto import codec
from chatproto.limits import Limits
from chatproto.server import build_server
from tests.netclient import QueueClient
from tests.waiting import until


def header(source: str, port: int = 50000) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 7777\r\n".encode()


class Proxied(TestCase):
    timeout = 30

    def setUp(self):
        self.server = build_server(
            reactor,
            ["proxy:tcp:0:interface=127.0.0.1"],
            ":memory:",
            Limits(max_per_address=1, login_timeout=1.0, ping_interval=30, idle_timeout=90),
        )
        self.server.start()
        self.addCleanup(self.server.stopService)

    @defer.inlineCallbacks
    def through_proxy(self, first: bytes):
        client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.port), QueueClient()
        )
        self.addCleanup(lambda: client.transport.loseConnection() or client.lost)
        client.transport.write(first)
        return client

    @defer.inlineCallbacks
    def test_the_client_is_the_one_the_header_names(self):
        ann = yield self.through_proxy(header("203.0.113.7") + codec.encode_frame(codec.Login("ann", 2)))
        yield ann.expect(codec.Welcome)
        (session,) = self.server.hub.sessions
        self.assertEqual([c.host for c in session.devices], ["203.0.113.7"])
        again = yield self.through_proxy(header("203.0.113.7", 50001))
        bye = yield again.expect(codec.Bye)
        self.assertEqual(bye.reason, "too_many_connections", "the client's limit, not the proxy's exemption")
        other = yield self.through_proxy(header("203.0.113.8") + codec.encode_frame(codec.Login("bob", 2)))
        yield other.expect(codec.Welcome)

    @defer.inlineCallbacks
    def test_no_header_or_a_late_one_is_never_a_chat_connection(self):
        liar = yield self.through_proxy(codec.encode_frame(codec.Login("mallory", 2)))
        yield liar.lost
        silent = yield self.through_proxy(b"PROXY TCP4 203.0")  # and then nothing
        yield silent.lost  # closed at the deadline (login_timeout)
        self.assertEqual((self.server.hub.sessions, self.server.hub.pending), ([], []))
        yield until(lambda: self.server.hub.gate.open == {})
