"""The WebSocket transport and the web site (docs/protocol.md, section 16),
on real sockets on 127.0.0.1: the same rooms as TCP, the same limits, and
bad input closed with a clear code while everyone else goes on."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, readBody
from wsproto.events import Message
from wsproto.frame_protocol import CloseReason

from chatproto import codec
from chatproto.transports.websocket import close_frame, ws_frame
from tests.harness import Server
from tests.netclient import WebSocketClient
from tests.test_integration import LiveTestCase, SlowConsumer


class Framing(LiveTestCase):
    def test_frames_are_what_a_websocket_parser_reads(self):
        from wsproto.connection import Connection, ConnectionType
        from wsproto.events import BytesMessage, CloseConnection

        client = Connection(ConnectionType.CLIENT)  # past the handshake
        for size in (0, 125, 126, 65535, 65536, 70000):
            client.receive_data(ws_frame(b"\x82" + b"x" * size))
            (event,) = list(client.events())
            self.assertIsInstance(event, BytesMessage)
            self.assertEqual(len(event.data), size + 1)
        client.receive_data(close_frame(1009, "frame_too_large"))
        (event,) = list(client.events())
        self.assertIsInstance(event, CloseConnection)
        self.assertEqual((event.code, event.reason), (1009, "frame_too_large"))


class OnStringTransport(SynchronousTestCase):
    """The same connection limits as Int32, on task.Clock (tests/harness.py)."""

    def test_the_per_address_limit_applies(self):
        server = Server(max_per_address=2)
        crowd = [server.peer("203.0.113.1", websocket=True) for _ in range(2)]
        extra = server.peer("203.0.113.1", websocket=True)
        self.assertEqual(extra.received(), [codec.Bye("too_many_connections")])
        self.assertEqual(extra.websocket.close, (CloseReason.POLICY_VIOLATION, "too_many_connections"))
        self.assertTrue(extra.closing)
        self.assertIsInstance(
            server.peer("198.51.100.2", websocket=True).login("other", version=2), codec.Welcome
        )
        crowd[0].drop()
        self.assertIsInstance(
            server.peer("203.0.113.1", websocket=True).login("back", version=2), codec.Welcome
        )

    def test_login_and_idle_timeouts(self):
        server = Server(login_timeout=5, ping_interval=10, idle_timeout=30)
        silent = server.peer(websocket=True)
        server.clock.advance(5)
        self.assertEqual(silent.received(), [codec.Bye("login_timeout")])
        self.assertEqual(silent.websocket.close, (CloseReason.POLICY_VIOLATION, "login_timeout"))
        idle = server.peer(websocket=True)
        idle.login("ann", version=2)
        idle.received()
        server.clock.advance(10)
        (ping,) = idle.received()
        self.assertIsInstance(ping, codec.ServerPing)
        server.clock.advance(20)
        self.assertEqual(idle.received(), [codec.Bye("timeout")])
        self.assertEqual(idle.websocket.close[1], "timeout")

    def test_quit_closes_normally_after_what_was_queued(self):
        server = Server()
        ann = server.peer(websocket=True)
        ann.login("ann", version=2)
        ann.received()
        ann.send(codec.Quit("bye"))
        self.assertEqual(ann.received(), [])
        self.assertEqual(ann.websocket.close, (CloseReason.NORMAL_CLOSURE, "quit"))
        self.assertTrue(ann.closing)


class SlowBrowser(SlowConsumer):
    """The same slow reader over a WebSocket: cut, and nothing lost for others."""

    web = True

    def slow_reader(self):
        return self.ws("slow", version=1)


class WebSocketChat(LiveTestCase):
    @defer.inlineCallbacks
    def test_a_browser_past_its_fair_share_loses_nothing_and_is_rate_limited(self):
        yield self.serve(web=True, packet_rate=100, packet_burst=5)
        browser = yield self.ws("ann")
        tokens = [f"p{i}" for i in range(30)]
        pings = (browser.ws.send(Message(data=codec.encode(codec.Ping(t)))) for t in tokens)
        browser.transport.write(b"".join(pings))  # one read: most wait while reading is stopped
        answered = []
        for _ in tokens:
            answered.append((yield browser.expect(codec.PongReply)).token)
        self.assertEqual(answered, tokens)
        browser.send(codec.Join("general"))
        yield browser.expect(codec.RoomState)
        for _ in range(60):  # the message bucket: rate 20, burst 40
            browser.send(codec.Say("x", None, "general"))
        refused = yield browser.expect(codec.Error)
        self.assertEqual(refused.code, "rate_limited")

    @defer.inlineCallbacks
    def test_a_browser_and_a_tcp_client_chat_in_one_room(self):
        yield self.serve(web=True)
        browser = yield self.ws("ann")
        desk = yield self.client("bob", version=2)
        for client in (browser, desk):
            client.send(codec.Join("general", "j"))
            yield client.expect(codec.RoomState)
        browser.send(codec.Say("hello from a browser", "s1", "general"))
        mine = yield browser.expect(codec.MessagePacket)
        theirs = yield desk.expect(codec.MessagePacket)
        self.assertEqual((mine.text, mine.ref, mine.sender), ("hello from a browser", "s1", "ann"))
        self.assertEqual((theirs.seq, theirs.ref), (mine.seq, None))
        desk.send(codec.Say("and back", "s2", "general"))
        back = yield browser.expect(codec.MessagePacket)
        self.assertEqual((back.text, back.sender, back.seq), ("and back", "bob", mine.seq + 1))
        browser.send(codec.Whisper("bob", "psst"))
        whisper = yield desk.expect(codec.Private)
        self.assertEqual((whisper.sender, whisper.text), ("ann", "psst"))

    @defer.inlineCallbacks
    def test_a_websocket_is_pending_then_connected_like_any_other(self):
        yield self.serve(web=True)
        watcher = yield self.client("watcher")
        browser = yield self.ws()
        pending = yield watcher.expect(codec.Pending)
        self.assertEqual(pending.state, "connecting")
        from chatproto.metrics import transport_kind

        (connection,) = [c for c in self.hub.registry.pending.values()]
        self.assertEqual(transport_kind(connection), "ws")
        yield browser.login("ann", version=2)
        gone = yield watcher.expect(codec.Pending)
        self.assertEqual((gone.id, gone.state), (pending.id, "gone"))
        self.assertEqual([s.nick for s in self.hub.registry.sessions.values()], ["watcher", "ann"])

    @defer.inlineCallbacks
    def test_a_text_message_is_closed_with_1003_and_others_go_on(self):
        yield self.serve(web=True)
        other = yield self.ws("other")
        browser = yield self.ws("ann")
        browser.send_text('{"nick": "x"}')
        error = yield browser.expect(codec.Error)
        self.assertEqual(error.code, "bad_packet")
        close = yield browser.lost
        self.assertEqual(close, (CloseReason.UNSUPPORTED_DATA, "text_frame"))
        other.send(codec.Ping("still here"))
        pong = yield other.expect(codec.PongReply)
        self.assertEqual(pong.token, "still here")

    @defer.inlineCallbacks
    def test_an_oversized_message_is_closed_with_1009(self):
        yield self.serve(web=True, max_frame=1024)
        browser = yield self.ws()
        browser.send_payload(codec.encode(codec.Ping("x" * 5000)))  # over the pending limit too
        error = yield browser.expect(codec.Error)
        self.assertEqual(error.code, "frame_too_large")
        close = yield browser.lost
        self.assertEqual(close, (CloseReason.MESSAGE_TOO_BIG, "frame_too_large"))
        after = yield self.ws("ann")
        after.send(codec.Join("general"))
        yield after.expect(codec.RoomState)
        after.send(codec.Say("x" * 900, "big", "general"))  # within max_frame once logged in
        said = yield after.expect(codec.MessagePacket)
        self.assertEqual((said.ref, len(said.text)), ("big", 900))

    @defer.inlineCallbacks
    def test_a_bad_packet_is_an_error_and_the_connection_stays(self):
        yield self.serve(web=True)
        browser = yield self.ws("ann")
        browser.send_payload(b"\x02{not json")
        error = yield browser.expect(codec.Error)
        self.assertEqual(error.code, "bad_packet")
        browser.send(codec.Ping("after"))
        pong = yield browser.expect(codec.PongReply)
        self.assertEqual(pong.token, "after")

    @defer.inlineCallbacks
    def test_the_login_timeout_applies(self):
        yield self.serve(web=True, login_timeout=0.2)
        browser = yield self.ws()
        bye = yield browser.expect(codec.Bye)
        self.assertEqual(bye.reason, "login_timeout")
        close = yield browser.lost
        self.assertEqual(close[1], "login_timeout")

    @defer.inlineCallbacks
    def test_shutdown_says_bye_and_going_away(self):
        yield self.serve(web=True)
        browser = yield self.ws("ann")
        stopped = self.server.stopService()
        bye = yield browser.expect(codec.Bye)
        self.assertEqual(bye.reason, "server_shutdown")
        close = yield browser.lost
        self.assertEqual(close, (CloseReason.GOING_AWAY, "server_shutdown"))
        yield stopped

    @defer.inlineCallbacks
    def test_a_page_of_another_origin_is_refused(self):
        yield self.serve(web=True, web_origins=["https://chat.example.org"])
        port = self.web_port
        for origin, status in (
            ("http://evil.example", 403),
            (f"http://127.0.0.1:{port}", 101),  # the page's own
            ("https://chat.example.org", 101),  # listed with --web-origin
            (None, 101),  # no browser: no Origin, no cookies to abuse
        ):
            client = yield connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", port), WebSocketClient(origin)
            )
            self.clients.append(client)
            got = yield client.accepted
            self.assertEqual(got, status, origin)
            client.transport.loseConnection()


class Site(LiveTestCase):
    @defer.inlineCallbacks
    def get(self, path: str, headers=None):
        from twisted.web.http_headers import Headers

        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{self.web_port}{path}".encode(), Headers(headers or {})
        )
        body = yield readBody(response)
        return response, body

    @defer.inlineCallbacks
    def test_the_page_with_a_strict_policy_and_no_listings(self):
        yield self.serve(web=True)
        response, body = yield self.get("/")
        self.assertEqual(response.code, 200)
        self.assertIn(b'<script type="module" src="js/app.js">', body)
        (policy,) = response.headers.getRawHeaders("content-security-policy")
        self.assertIn("script-src 'self'", policy)
        self.assertIn("default-src 'none'", policy)
        self.assertNotIn("unsafe-inline", policy)
        script, _ = yield self.get("/js/app.js")
        self.assertEqual(script.headers.getRawHeaders("content-type"), ["text/javascript; charset=utf-8"])
        listing, _ = yield self.get("/js/")
        self.assertEqual(listing.code, 403)
        missing, _ = yield self.get("/nothing-here")
        self.assertEqual(missing.code, 404)

    @defer.inlineCallbacks
    def test_a_bad_handshake_is_400_and_the_server_goes_on(self):
        yield self.serve(web=True)
        response, _ = yield self.get("/ws")  # a plain GET: no upgrade
        self.assertEqual(response.code, 400)
        again, _ = yield self.get("/")
        self.assertEqual(again.code, 200)
