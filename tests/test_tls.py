"""TLS on loopback: the server on an ssl: endpoint, clients that verify it."""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, serverFromString, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from chatproto import codec
from chatproto.certs import fingerprint, write_pair
from chatproto.server import build_server
from chatproto.tls import PIN, PinningCreator, TLSSettings, fingerprint_of, verifying_creator
from tests.netclient import QueueClient
from tests.waiting import until


@implementer(IHandshakeListener)
class Handshaking(QueueClient):
    def __init__(self):
        super().__init__()
        self.handshake = defer.Deferred()

    def handshakeCompleted(self):
        self.handshake.callback(self.transport.getPeerCertificate())


class TLSRoundTrip(TestCase):
    timeout = 30

    def setUp(self):
        self.key, self.cert, self.cert_pem = write_pair(self.mktemp())
        server = build_server(
            reactor, [f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"]
        )
        server.start()
        self.hub = server.hub
        self.port = server.listeners[0].port
        self.addCleanup(server.stopService)

    def connect(self, creator):
        endpoint = HostnameEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        return connectProtocol(wrapClientTLS(creator, endpoint), QueueClient())

    @defer.inlineCallbacks
    def test_chat_over_tls_with_the_certificate_as_ca(self):
        client = yield self.connect(verifying_creator("localhost", self.cert))
        welcome = yield client.login("ann")
        self.assertEqual(welcome.nick, "ann")
        client.send(codec.Say("secret", "r"))
        message = yield client.expect(codec.MessagePacket)
        self.assertEqual((message.text, message.ref), ("secret", "r"))
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_a_certificate_from_another_ca_is_refused(self):
        _, other_ca, _ = write_pair(self.mktemp())
        client = yield self.connect(verifying_creator("localhost", other_ca))
        client.send(codec.Login("ann", 1))
        yield client.lost
        self.assertEqual(client.inbox.pending, [], "nothing was exchanged")
        self.assertEqual(self.hub.sessions, [])
        self.flushLoggedErrors(SSL.Error)

    @defer.inlineCallbacks
    def test_a_wrong_name_is_refused(self):
        client = yield self.connect(verifying_creator("chat.example.org", self.cert))
        client.send(codec.Login("ann", 1))
        yield client.lost
        self.assertEqual(self.hub.sessions, [])
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_pinning_sees_the_servers_fingerprint(self):
        endpoint = HostnameEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        client = yield connectProtocol(wrapClientTLS(PinningCreator("localhost"), endpoint), Handshaking())
        certificate = yield client.handshake
        self.assertEqual(fingerprint_of(certificate), fingerprint(self.cert_pem))
        client.transport.loseConnection()
        yield client.lost


class HostileServer(Int32StringReceiver):
    """Speaks first: WELCOME and a MESSAGE before anyone logged in or trusted it."""

    def connectionMade(self):
        self.factory.heard = []
        for packet in (
            codec.Welcome("ann", 1, "t", "evil", "", [codec.Peer(1, "ann")], [], [], {}),
            codec.MessagePacket(1, 1.0, "evil", "trust me"),
        ):
            self.sendString(codec.encode(packet))

    def stringReceived(self, payload):
        self.factory.heard.append(codec.decode_client(payload))


class TrustOnFirstUseAgainstAHostileServer(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_nothing_is_read_or_sent_before_the_user_trusts_it(self):
        from qtclient.session_machine import ClientSession, SessionEvents, State

        key, cert, _ = write_pair(self.mktemp())
        factory = Factory.forProtocol(HostileServer)
        factory.heard = []
        port = yield serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        ).listen(factory)
        self.addCleanup(port.stopListening)
        events = []

        class Events(SessionEvents):
            def certificate_unknown(self, where, fingerprint):
                events.append(("certificate_unknown", fingerprint))

            def welcome_received(self, welcome):
                events.append(("welcome", welcome.server))

            def message_received(self, message):
                events.append(("message", message.text))

        session = ClientSession(reactor, Events(), retry=lambda attempt: 60)
        self.addCleanup(session.disconnect)
        arrived = []
        original = ClientSession._packet
        self.patch(ClientSession, "_packet", lambda s, link, p: (arrived.append(p), original(s, link, p)))
        session.say("for trusted ears only")
        session.connect_to("127.0.0.1", port.getHost().port, "ann", TLSSettings(PIN), {})
        yield until(lambda: len(arrived) == 2 and events, 10)
        self.assertEqual([name for name, _ in events], ["certificate_unknown"], "WELCOME was not acted on")
        self.assertIs(session.state, State.TLS_CHECK)
        self.assertEqual(factory.heard, [], "nothing sent: no LOGIN, no queued message")
        session.trust_certificate(True)
        yield until(lambda: factory.heard, 10)
        self.assertEqual(factory.heard, [codec.Login("ann", 2)])


class TLSForBrowsersAndIrc(TestCase):
    """``--web ssl:`` (wss://) and ``--irc ssl:`` carry the same chat."""

    timeout = 30

    def setUp(self):
        self.key, self.cert, self.cert_pem = write_pair(self.mktemp())
        tls = f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"
        self.server = build_server(reactor, ["tcp:0:interface=127.0.0.1"], web=[tls], irc=[tls])
        self.server.start()
        self.addCleanup(self.server.stopService)

    def connect(self, port, protocol):
        endpoint = HostnameEndpoint(reactor, "127.0.0.1", port)
        return connectProtocol(wrapClientTLS(verifying_creator("localhost", self.cert), endpoint), protocol)

    @defer.inlineCallbacks
    def test_wss_and_ircs_chat_with_each_other(self):
        from chatproto.metrics import transport_kind
        from tests.netclient import IrcClient, WebSocketClient

        browser = yield self.connect(self.server.web_port, WebSocketClient())
        self.assertEqual((yield browser.accepted), 101)
        irc = yield self.connect(self.server.irc_port, IrcClient())
        yield irc.register("ann")
        irc.send("JOIN #general")
        yield irc.expect(lambda text: " 366 " in text)
        yield browser.login("bob", version=2)
        browser.send(codec.Join("general"))
        yield browser.expect(codec.RoomState)
        self.assertEqual(sorted(transport_kind(c) for c in self.hub_connections()), ["ircs", "wss"])
        browser.send(codec.Say("over wss", None, "general"))
        said = yield irc.expect(lambda text: "PRIVMSG" in text)
        self.assertEqual(said, ":bob!bob@chat PRIVMSG #general :over wss")
        own = yield browser.expect(codec.MessagePacket)
        self.assertEqual((own.sender, own.text), ("bob", "over wss"))
        irc.send("PRIVMSG #general :over ircs")
        heard = yield browser.expect(codec.MessagePacket)
        self.assertEqual((heard.sender, heard.text), ("ann", "over ircs"))
        for client in (browser, irc):
            client.transport.loseConnection()
            yield client.lost

    def hub_connections(self):
        return list(self.server.hub.registry.open.values())
