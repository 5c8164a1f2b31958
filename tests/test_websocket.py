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
from chatproto.transports.outbox import Outbox
from chatproto.transports.websocket import close_frame, ws_frame
from tests.harness import Server
from tests.netclient import WebSocketClient, connect_ws
from tests.test_integration import LiveTestCase, SlowConsumer
from tests.waiting import until


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
        response, _ = yield self.get("/ws", {b"upgrade": [b"websocket"]})  # no key, no version
        self.assertEqual(response.code, 400)
        again, _ = yield self.get("/")
        self.assertEqual(again.code, 200)

    @defer.inlineCallbacks
    def test_a_plain_get_of_the_socket_says_why_it_would_be_refused(self):
        """What a page asks when its WebSocket failed before the handshake
        (a browser shows the script only 1006): 426 while there is room,
        else 503 and the reason."""
        yield self.serve(web=True, max_clients=3)
        response, _ = yield self.get("/ws")
        self.assertEqual(response.code, 426)
        for _ in range(3):  # the server fills up (pending chat connections)
            yield self.client()
        response, body = yield self.get("/ws")
        self.assertEqual((response.code, body), (503, b"server_full\n"))


# -- Floods of WebSocket frames: every frame costs its share, Pongs count against sendq ----


def ping_frames(client, count: int, size: int = 125) -> bytes:
    """``count`` masked Ping frames of ``size`` bytes, as a flooder writes them."""
    from wsproto.events import Ping

    return b"".join(bytes(client.ws.send(Ping(b"p" * size))) for _ in range(count))


def fragment_frames(client, count: int) -> bytes:
    """One binary message in ``count`` 1-byte fragments, the last one missing."""
    return b"".join(bytes(client.ws.send(Message(data=b"x", message_finished=False))) for _ in range(count))


class FrameFloods(LiveTestCase):
    """On real sockets: WebSocket frames that are no packets are charged to
    the fair share like packets, as an Int32 flood is (tests/test_fairness.py)."""

    def connection_of(self, nick):
        return self.hub.session_for(nick).connection

    @defer.inlineCallbacks
    def cut_for_flooding(self, flood):
        yield self.serve(
            web=True, packet_rate=50, packet_burst=10, flood_cut=1, ping_interval=300, idle_timeout=600
        )
        bystander = yield self.client("bystander")
        flooder = yield self.ws("flooder")
        connection = self.connection_of("flooder")
        flooder.transport.write(flood(flooder))  # pipelined: 40 s of its share at once
        yield until(lambda: connection.paused)  # the server stopped reading it
        bystander.send(codec.Ping("still served"))
        self.assertEqual((yield bystander.expect(codec.PongReply)).token, "still served")
        bye = yield flooder.expect(codec.Bye, timeout=10)
        self.assertEqual(bye.reason, "kicked")
        self.assertEqual((yield flooder.lost), (CloseReason.POLICY_VIOLATION, "kicked"))
        self.assertEqual(self.hub.counters.disconnects["kicked"], 1)
        return flooder

    @defer.inlineCallbacks
    def test_a_ping_flood_read_back_is_paused_then_cut(self):
        flooder = yield self.cut_for_flooding(lambda client: ping_frames(client, 2000))
        self.assertLess(flooder.pongs, 2000, "cut before it was all answered")

    @defer.inlineCallbacks
    def test_a_flood_of_one_byte_fragments_is_paused_then_cut(self):
        yield self.cut_for_flooding(lambda client: fragment_frames(client, 2000))

    @defer.inlineCallbacks
    def test_a_ping_flood_not_read_is_cut_as_a_slow_consumer_within_sendq(self):
        most = [0]
        write = Outbox.write

        def measured(outbox, data):
            write(outbox, data)
            most[0] = max(most[0], outbox.backlog)

        self.patch(Outbox, "write", measured)
        sendq = 16 * 1024
        yield self.serve(web=True, sendq=sendq, packet_rate=1e6, packet_burst=1e6, flood_cut=600)
        flooder = yield self.ws("flooder")
        flooder.transport.pauseProducing()  # never reads its Pongs
        self.addCleanup(flooder.transport.resumeProducing)
        flood = ping_frames(flooder, 1000)

        def cut():
            return self.hub.counters.disconnects["slow_consumer"] > 0

        for _ in range(200):  # bounded: 200,000 Pings (26 MB) at most
            if cut():
                break
            flooder.transport.write(flood)
            yield until(lambda: cut() or not (flooder.transport.dataBuffer or flooder.transport._tempDataLen))
        self.assertEqual(self.hub.counters.disconnects["slow_consumer"], 1, "never cut")
        self.assertLessEqual(most[0], sendq + len(ws_frame(b"p" * 125)), "the outbox held more than sendq")
        flooder.transport.resumeProducing()
        yield flooder.lost


class FramesOnStringTransport(SynchronousTestCase):
    """The frame loop on task.Clock: what each frame costs, and where its answer goes."""

    def setUp(self):
        self.server = Server(packet_rate=1000, packet_burst=1000, packets_per_turn=10_000)
        self.peer = self.server.peer(websocket=True)
        self.peer.login("ann", version=2)
        self.peer.received()

    def spent(self, frames: bytes) -> float:
        """Units of the fair share ``frames`` cost (the clock stands still: no refill)."""
        budget = self.peer.connection  # the policy is its own budget (core/budget.py Spender)
        before = budget._tokens
        self.peer.protocol.dataReceived(frames)
        return before - budget._tokens

    def test_a_fragmented_message_costs_a_unit_a_fragment_and_is_one_packet(self):
        from wsproto.events import Message

        payload = codec.encode(codec.Ping("split"))
        fragments = [payload[i : i + 1] for i in range(len(payload))]
        frames = self.peer.websocket.frames(
            *(
                Message(data=chunk, message_finished=i == len(fragments) - 1)
                for i, chunk in enumerate(fragments)
            )
        )
        self.assertEqual(self.spent(frames), len(fragments))
        self.assertEqual(self.peer.received(flush=False), [codec.PongReply("split")])

    def test_pings_and_pongs_cost_a_unit_each_and_pongs_answer_through_the_outbox(self):
        from wsproto.events import Ping, Pong

        outbox = self.peer.connection.outbox
        outbox.pauseProducing()  # as a full transport does: what is written waits in the outbox
        self.assertEqual(self.spent(self.peer.websocket.frames(*[Ping(b"x" * 125)] * 20)), 20)
        self.assertEqual(b"".join(outbox._queue), ws_frame(b"x" * 125, 0xA) * 20)  # one read's: one write
        self.assertEqual(outbox.backlog, 20 * len(ws_frame(b"x" * 125)), "counted against sendq")
        self.assertEqual(self.spent(self.peer.websocket.frames(Pong(b"unasked"))), 1)

    def test_a_ping_flood_stops_reading_mid_read_and_resumes_where_it_stopped(self):
        from wsproto.events import Ping

        server = Server(packet_rate=10, packet_burst=10)
        peer = server.peer(websocket=True)
        peer.login("bob", version=2)  # one unit
        peer.received()
        frames = b"".join(peer.websocket.frames(Ping(b"%d" % i)) for i in range(30))
        before = len(peer.transport.value())
        peer.protocol.dataReceived(frames)
        self.assertEqual(peer.transport.producerState, "paused", "reading stops, as for an Int32 flood")
        answered = peer.transport.value()[before:]
        self.assertEqual(answered, b"".join(ws_frame(b"%d" % i, 0xA) for i in range(10)), "9 + one into debt")
        for _ in range(30):  # bounded: 3 s of the clock pays 30 units back
            server.clock.advance(0.1)
        self.assertEqual(
            peer.transport.value()[before:], b"".join(ws_frame(b"%d" % i, 0xA) for i in range(30)), "in order"
        )
        self.assertEqual(peer.transport.producerState, "producing")

    def test_pongs_a_flooder_does_not_read_are_cut_at_sendq(self):
        from wsproto.events import Ping

        server = Server(sendq=4096, packet_rate=1e6, packet_burst=1e6)
        peer = server.peer(websocket=True)
        peer.login("bob", version=2)
        peer.received()
        outbox = peer.connection.outbox
        outbox.pauseProducing()  # as the transport does once its buffer is full
        most = 0
        for _ in range(100):  # bounded: 100 Pings of 125 bytes, three times sendq
            peer.protocol.dataReceived(peer.websocket.frames(Ping(b"p" * 125)))
            most = max(most, outbox.backlog)
        self.assertLessEqual(most, 4096 + len(ws_frame(b"p" * 125)))
        server.clock.advance(0)  # the next turn: no broadcast needed to cut it
        self.assertEqual(server.hub.counters.disconnects["slow_consumer"], 1)
        self.assertTrue(peer.closing)
        self.assertEqual(server.hub.sessions, [])

    def test_the_peers_close_is_answered_with_its_code(self):
        from wsproto.events import CloseConnection

        self.peer.protocol.dataReceived(self.peer.websocket.frames(CloseConnection(1001, "tab closed")))
        self.assertEqual(self.peer.received(), [])
        self.assertEqual(self.peer.websocket.close, (CloseReason.GOING_AWAY, ""))
        self.assertTrue(self.peer.closing)
        self.assertEqual(self.server.hub.sessions, [])

    def test_a_frame_wsproto_refuses_is_a_protocol_error(self):
        self.peer.protocol.dataReceived(b"\x82\x05hello")  # not masked
        self.peer.received()
        self.assertEqual(self.peer.websocket.close[0], CloseReason.PROTOCOL_ERROR)
        self.assertTrue(self.peer.closing)


class FragmentsGathered(SynchronousTestCase):
    def test_n_fragments_are_kept_as_they_came_and_joined_once(self):
        from chatproto.transports import websocket

        joins = []

        def join(chunks):
            joins.append(len(chunks))
            return b"".join(chunks)

        self.patch(websocket, "_join", join)
        fragments = websocket.Fragments()
        chunks = [bytes([i % 256]) * 1000 for i in range(60)]
        for chunk in chunks:
            self.assertTrue(fragments.add(chunk, 65536))
        self.assertTrue(
            all(kept is chunk for kept, chunk in zip(fragments.chunks, chunks, strict=True)), "no copy"
        )
        self.assertEqual(fragments.done(), b"".join(chunks))
        self.assertEqual(joins, [60], "one join, of every chunk once: linear")

    def test_one_byte_fragments_are_gathered_in_one_run_and_joined_once(self):
        from chatproto.transports import websocket

        joins = []
        self.patch(websocket, "_join", lambda chunks: joins.append(len(chunks)) or b"".join(chunks))
        fragments = websocket.Fragments()
        for i in range(60_000):  # an O(N²) gathering would copy 1.8 GB here
            self.assertTrue(fragments.add(bytes([i % 256]), 65536))
        fragments.add(b"", 65536)  # an empty one keeps nothing
        self.assertEqual(len(fragments.chunks), 1, "one entry, not 60,000 objects")
        self.assertEqual(fragments.done(), bytes(i % 256 for i in range(60_000)))
        self.assertEqual(joins, [1])

    def test_past_the_limit_nothing_more_is_kept(self):
        from chatproto.transports.websocket import Fragments

        fragments = Fragments()
        self.assertTrue(fragments.add(b"x" * 1000, 1024))
        self.assertFalse(fragments.add(b"x" * 25, 1024))
        self.assertEqual((fragments.chunks, fragments.size), ([], 1025))

    def test_a_message_over_the_frame_limit_in_fragments_is_closed_with_1009(self):
        from wsproto.events import Message

        server = Server(pending_frame=1024, max_frame=1024)
        peer = server.peer(websocket=True)
        frames = peer.websocket.frames(*[Message(data=b"x" * 100, message_finished=False)] * 11)
        peer.protocol.dataReceived(frames)
        self.assertEqual(peer.received()[0].code, "frame_too_large")
        self.assertEqual(peer.websocket.close, (CloseReason.MESSAGE_TOO_BIG, "frame_too_large"))


# -- HTTP before the upgrade: one deadline per request, counted in the limits ---------------

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class HttpOnClock(SynchronousTestCase):
    """ChatChannel on StringTransport and task.Clock (the hub's clock)."""

    def setUp(self):
        from twisted.internet.address import IPv4Address

        self.address = IPv4Address
        self.ports = iter(range(50000, 51000))

    def serve(self, **limits):
        from chatproto.transports.web import web_site

        self.server = Server(**limits)
        self.hub = self.server.hub
        self.site = web_site(self.hub)

    def connect(self, host: str = "203.0.113.1"):
        from twisted.internet.testing import StringTransport

        transport = StringTransport(peerAddress=self.address("TCP", host, next(self.ports)))
        channel = self.site.buildProtocol(transport.getPeer())
        channel.makeConnection(transport)
        return channel, transport

    def drop(self, channel):
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        channel.connectionLost(Failure(ConnectionDone()))

    def test_a_trickled_request_is_closed_at_its_deadline_though_bytes_keep_coming(self):
        self.serve(login_timeout=5)
        channel, transport = self.connect()
        for byte in UPGRADE[:19]:  # a byte every quarter of a second: 4.75 s of the clock
            channel.dataReceived(bytes([byte]))
            self.server.clock.advance(0.25)
        self.assertFalse(transport.disconnecting, "not before its deadline")
        channel.dataReceived(UPGRADE[19:20])
        self.server.clock.advance(0.25)
        self.assertTrue(transport.disconnecting, "closed at 5 s, bytes or not")
        self.assertEqual(transport.value(), b"")
        self.drop(channel)
        self.assertEqual((self.hub.registry.reserved, self.hub.gate.open), (0, {}))

    def test_each_request_on_a_kept_alive_connection_has_its_own_deadline(self):
        self.serve(login_timeout=5)
        channel, transport = self.connect()
        self.server.clock.advance(4)
        channel.dataReceived(b"GET /ws HTTP/1.1\r\nHost: chat.example\r\n\r\n")  # answered: 426
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 426 "))
        self.server.clock.advance(4.9)
        self.assertFalse(transport.disconnecting, "the next request's deadline runs from the answer")
        self.server.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_the_upgrade_ends_the_deadline_and_passes_the_place_on(self):
        self.serve(login_timeout=5)
        channel, transport = self.connect()
        self.assertEqual((self.hub.registry.reserved, self.hub.gate.open), (1, {"203.0.113.1": 1}))
        channel.dataReceived(UPGRADE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        self.assertEqual(self.hub.registry.reserved, 0)
        self.assertEqual(len(self.hub.pending), 1)
        self.assertEqual(self.hub.gate.open, {"203.0.113.1": 1}, "counted once")
        (_pending,) = self.hub.pending
        self.server.clock.advance(5)  # now the chat connection's login timeout
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.hub.counters.disconnects["login_timeout"], 1)
        channel.connectionLost(None)  # the chat connection's end, by way of the channel
        self.assertEqual(self.hub.gate.open, {})

    def test_http_connections_count_against_max_per_address(self):
        self.serve(max_per_address=20, address_burst=100)
        crowd = [self.connect("203.0.113.1") for _ in range(20)]
        self.assertFalse(any(transport.disconnecting for _, transport in crowd))
        channel, transport = self.connect("203.0.113.1")  # the 21st
        self.assertTrue(transport.disconnecting, "refused at once")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(transport.value().endswith(b"\r\n\r\ntoo_many_connections\n"))
        channel.dataReceived(UPGRADE)  # read before the close: nothing comes of it
        self.assertEqual(self.hub.registry.reserved, 20)
        self.assertEqual(self.server.peer("203.0.113.1").received(), [codec.Bye("too_many_connections")])
        self.assertFalse(self.connect("198.51.100.7")[1].disconnecting, "another address is welcome")
        from chatproto.metrics import ChatCollector

        (family,) = [ChatCollector(self.hub)._connections()]
        gauge = {tuple(sample.labels.values()): sample.value for sample in family.samples}
        self.assertEqual(gauge["http", "pending"], 21, "shown as HTTP connections, pending")
        self.drop(crowd[0][0])
        self.assertFalse(self.connect("203.0.113.1")[1].disconnecting, "a place came free")

    def test_http_connections_count_against_max_clients(self):
        self.serve(max_clients=3)
        self.connect("203.0.113.1")
        self.server.peer("203.0.113.2")
        self.connect("203.0.113.3")
        _, refused = self.connect("203.0.113.4")
        self.assertTrue(refused.value().endswith(b"server_full\n"))
        self.assertTrue(refused.disconnecting)
        self.assertEqual(self.server.peer("203.0.113.5").received(), [codec.Bye("server_full")])
        self.assertEqual(self.hub.counters.disconnects["server_full"], 2)


class HttpOnSockets(LiveTestCase):
    @defer.inlineCallbacks
    def raw(self):
        from tests.netclient import RawClient

        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.web_port), RawClient())
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def test_a_request_trickled_a_byte_at_a_time_is_closed_at_its_deadline(self):
        from twisted.internet.task import LoopingCall

        yield self.serve(web=True, login_timeout=0.5)
        client = yield self.raw()
        request = iter(UPGRADE[:-2] + b"X-Padding: " + b"a" * 400)  # never complete

        def trickle():
            byte = next(request, None)
            if byte is None:
                loop.stop()
            else:
                client.transport.write(bytes([byte]))

        loop = LoopingCall(trickle)
        done = loop.start(0.02)  # 50 bytes a second for 12 s, bounded by the request's length
        yield client.lost.addTimeout(20, reactor)
        self.assertTrue(loop.running, "closed while its bytes were still coming")
        loop.stop()
        yield done
        self.assertEqual(client.received, b"")
        yield until(lambda: self.hub.registry.reserved == 0)

    @defer.inlineCallbacks
    def test_http_connections_count_against_max_clients_from_their_accept(self):
        yield self.serve(web=True, max_clients=5)
        crowd = []
        for _ in range(5):
            crowd.append((yield self.raw()))
        yield until(lambda: self.hub.registry.reserved == 5)
        extra = yield self.raw()
        yield extra.lost.addTimeout(10, reactor)  # refused and closed at once
        self.assertTrue(extra.received.startswith(b"HTTP/1.1 503 "))
        self.assertTrue(extra.received.endswith(b"server_full\n"))
        tcp = yield self.client()
        self.assertEqual((yield tcp.expect(codec.Bye)).reason, "server_full")
        crowd[0].transport.loseConnection()
        yield until(lambda: self.hub.registry.reserved == 4)
        browser = yield self.ws("ann")  # a place came free
        self.assertEqual((self.hub.registry.reserved, len(self.hub.registry.open)), (4, 1))
        for client in [*crowd[1:], browser]:
            client.transport.loseConnection()
        yield until(lambda: self.hub.registry.reserved == 0)

    @defer.inlineCallbacks
    def test_the_21st_http_connection_from_one_address_is_refused_at_once(self):
        from chatproto.core import accounts

        self.patch(accounts, "exempt", lambda host: False)  # count 127.0.0.1 like any address
        yield self.serve(web=True, max_per_address=20, address_burst=100)
        crowd = []
        for _ in range(20):
            crowd.append((yield self.raw()))
        yield until(lambda: self.hub.gate.open.get("127.0.0.1") == 20)
        extra = yield self.raw()
        yield extra.lost.addTimeout(10, reactor)
        self.assertTrue(extra.received.endswith(b"too_many_connections\n"))
        self.assertEqual(self.hub.counters.disconnects["too_many_connections"], 1)
        for client in crowd:
            client.transport.loseConnection()
        yield until(lambda: self.hub.registry.reserved == 0)


class BehindAProxy(LiveTestCase):
    """``--trusted-proxy``: X-Forwarded-For names the browser only when a
    trusted proxy wrote it, and the browser's own limits apply."""

    def forwarded(self, for_: str):
        return connect_ws(reactor, self.web_port, headers=[(b"x-forwarded-for", for_.encode())])

    @defer.inlineCallbacks
    def test_the_client_a_trusted_proxy_names_is_counted(self):
        yield self.serve(web=True, trusted_proxies=["127.0.0.1"], max_per_address=1)
        first = yield self.forwarded("198.51.100.1, 203.0.113.9")
        self.clients.append(first)
        yield first.login("ann")
        (session,) = self.hub.sessions
        self.assertEqual([c.host for c in session.devices], ["203.0.113.9"], "the rightmost untrusted hop")
        second = yield self.forwarded("203.0.113.9")
        self.clients.append(second)
        bye = yield second.expect(codec.Bye)
        self.assertEqual(bye.reason, "too_many_connections", "that browser's limit, not the proxy's")
        other = yield self.forwarded("203.0.113.10")
        self.clients.append(other)
        yield other.login("bob")

    @defer.inlineCallbacks
    def test_from_anyone_else_the_header_is_ignored(self):
        yield self.serve(web=True, trusted_proxies=["10.0.0.0/8"])
        liar = yield self.forwarded("203.0.113.9")
        self.clients.append(liar)
        yield liar.login("mallory")
        (session,) = self.hub.sessions
        self.assertEqual([c.host for c in session.devices], ["127.0.0.1"])


class TrustedProxiesRule(SynchronousTestCase):
    def test_the_client_is_the_rightmost_hop_no_trusted_proxy_wrote(self):
        from chatproto.transports.forwarded import TrustedProxies

        proxies = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
        self.assertEqual(proxies.client("127.0.0.1", "203.0.113.9, 10.1.2.3"), "203.0.113.9")
        self.assertEqual(proxies.client("127.0.0.1", "6.6.6.6, 203.0.113.9"), "203.0.113.9", "spoofed left")
        self.assertEqual(proxies.client("192.0.2.1", "203.0.113.9"), "192.0.2.1", "not a trusted peer")
        self.assertEqual(proxies.client("127.0.0.1", "junk, 203.0.113.9"), "203.0.113.9")
        self.assertEqual(proxies.client("127.0.0.1", "203.0.113.9, junk"), "127.0.0.1", "believe nothing")
        self.assertEqual(proxies.client("127.0.0.1", None), "127.0.0.1")
