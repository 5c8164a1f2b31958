"""The command table (core/commands.py) and the renderings of every transport:
every client packet has one row whose checks apply in one order on every
transport, and every server packet is shown by every transport or is
listed, with the reason, as one IRC deliberately doesn't show. On
StringTransport and task.Clock."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core import commands
from chatproto.core.budget import cost, follow_cost, history_cost, list_cost, unit
from chatproto.core.commands import BUCKETS, COMMANDS, EVERY_VERSION
from chatproto.transports import irc, policy
from chatproto.transports.int32 import INT32
from chatproto.transports.websocket import WEBSOCKET
from tests.harness import Server
from tests.test_irc import IrcPeer

#: One of each client packet, as a logged-in client might send it.
SAMPLES = {
    codec.Login: codec.Login("again", 2, ref="r"),
    codec.Say: codec.Say("hello", "r", "general"),
    codec.Whisper: codec.Whisper("bob", "psst", "r"),
    codec.Ping: codec.Ping("t", "r"),
    codec.Quit: codec.Quit("bye", "r"),
    codec.HistoryRequest: codec.HistoryRequest(limit=5, ref="r", room="general"),
    codec.Pong: codec.Pong("t", "r"),
    codec.Join: codec.Join("general", "r"),
    codec.Part: codec.Part("nowhere", ref="r"),
    codec.ListRooms: codec.ListRooms("r"),
    codec.SetTopic: codec.SetTopic("general", "a topic", "r"),
    codec.AccountRequest: codec.AccountRequest("delete", password="pw", ref="r"),
    codec.Mark: codec.Mark("general", 1, "r"),
    codec.Moderate: codec.Moderate("general", "op", "bob", ref="r"),
    codec.AdminRequest: codec.AdminRequest("sessions", ref="r"),
    codec.Edit: codec.Edit("general", 1, "fixed", "r"),
    codec.Delete: codec.Delete("general", 1, "r"),
    codec.React: codec.React("general", 1, "👍", ref="r"),
    codec.Typing: codec.Typing("general", ref="r"),
    codec.Away: codec.Away(True, "lunch", "r"),
    codec.Open: codec.Open(["bob"], "r"),
    codec.Nick: codec.Nick("ann2", "r"),
    codec.Files: codec.Files("r"),
    codec.Search: codec.Search("hello", ref="r"),
    codec.MembersRequest: codec.MembersRequest("general", limit=5, ref="r"),
    codec.Follow: codec.Follow("general", ["bob"], "r"),
}


def errors(packets) -> list[codec.Error]:
    return [p for p in packets if isinstance(p, codec.Error)]


class Table(SynchronousTestCase):
    def test_every_client_packet_has_exactly_one_row(self):
        self.assertEqual(set(COMMANDS), set(codec.CLIENT_PACKETS))
        self.assertEqual(len(commands._ROWS), len(codec.CLIENT_PACKETS))
        for cls, row in COMMANDS.items():
            self.assertIs(row.packet, cls)
        self.assertEqual(set(SAMPLES), set(codec.CLIENT_PACKETS), "a sample of each for the tests below")

    def test_versions_are_the_codecs(self):
        for cls, row in COMMANDS.items():
            self.assertLessEqual(row.versions, EVERY_VERSION)
            self.assertEqual(1 in row.versions, cls in codec.V1_CLIENT_PACKETS, cls.__name__)

    def test_buckets_and_costs(self):
        messages = {cls for cls, row in COMMANDS.items() if row.bucket == "messages"}
        presence = {cls for cls, row in COMMANDS.items() if row.bucket == "presence"}
        self.assertEqual(
            messages,
            {codec.Say, codec.Whisper, codec.Edit, codec.Delete, codec.React, codec.Files, codec.Search},
        )
        self.assertEqual(
            presence,
            {
                codec.Join,
                codec.Part,
                codec.SetTopic,
                codec.AccountRequest,
                codec.Moderate,
                codec.AdminRequest,
                codec.Away,
                codec.Open,
                codec.Nick,
            },
        )
        self.assertTrue(all(row.bucket in (None, *BUCKETS) for row in COMMANDS.values()))
        self.assertIs(COMMANDS[codec.HistoryRequest].cost, history_cost)
        self.assertIs(COMMANDS[codec.ListRooms].cost, list_cost)
        self.assertIs(COMMANDS[codec.Follow].cost, follow_cost)
        others = set(COMMANDS) - {codec.HistoryRequest, codec.ListRooms, codec.Follow}
        self.assertTrue(all(COMMANDS[cls].cost is unit for cls in others))
        # budget.cost is the table's
        self.assertEqual(cost(codec.HistoryRequest(limit=30), 200), 1 + 30 / 10)
        self.assertEqual(cost(codec.ListRooms(), 200, 5000), 1 + 5000 / 10)
        self.assertEqual(cost(codec.Say("x"), 200), 1)

    def test_only_login_ping_pong_and_quit_need_no_login(self):
        free = {cls for cls, row in COMMANDS.items() if not row.login}
        self.assertEqual(free, {codec.Login, codec.Ping, codec.Pong, codec.Quit})


class Checks(SynchronousTestCase):
    """Each row's checks, in their order: login, version, bucket, handler."""

    def test_not_logged_in(self):
        for cls, row in COMMANDS.items():
            server = Server()
            peer = server.peer()
            peer.send(SAMPLES[cls])
            refused = [e for e in errors(peer.received()) if e.code == ErrorCode.NOT_LOGGED_IN]
            if row.login:
                self.assertEqual(refused, [codec.Error(ErrorCode.NOT_LOGGED_IN, "log in first", "r")], cls)
                self.assertIsNone(peer.connection._buckets, "no bucket spent before the login check")
            else:
                self.assertEqual(refused, [], cls)

    def test_wrong_version(self):
        """A version 1 session's packet that only version 2 has: the codec
        refuses it on the wire, and the table says the same of a packet a
        transport built itself (as IRC does)."""
        for cls, row in COMMANDS.items():
            server = Server()
            (old,) = server.logged_in("old", version=1)
            old.send(SAMPLES[cls])
            from_wire = [e for e in errors(old.received()) if e.code == ErrorCode.UNKNOWN_TYPE]
            for _ in range(3):  # never rate-limited: the version is checked before the bucket
                old.connection.packetReceived(SAMPLES[cls])
            built = [e for e in errors(old.received()) if e.code != ErrorCode.NOT_LOGGED_IN]
            if 1 in row.versions:
                self.assertEqual(from_wire, [], cls)
                continue
            message = f"packet type 0x{cls.TYPE:02X} is not a version 1 client-to-server packet"
            self.assertEqual(from_wire, [codec.Error(ErrorCode.UNKNOWN_TYPE, message, "r")], cls)
            self.assertEqual(built, [codec.Error(ErrorCode.UNKNOWN_TYPE, message, "r")] * 3, cls)
            self.assertIsNone(old.connection._buckets, "no bucket spent before the version check")

    def test_rate_limited_bucket(self):
        for cls, row in COMMANDS.items():
            if row.bucket is None:
                continue
            server = Server(burst=1, rate=0.1, join_burst=1, join_rate=0.1)
            ann, _bob = server.logged_in("ann", "bob", version=2)
            ann.join("general")
            ann.received()
            if row.bucket == "presence":
                server.clock.advance(10)  # the JOIN's token back
            ann.send(SAMPLES[cls])
            first = errors(ann.received())
            self.assertNotIn(ErrorCode.RATE_LIMITED, [e.code for e in first], cls)
            ann.send(SAMPLES[cls])
            what = BUCKETS[row.bucket].what
            self.assertEqual(
                errors(ann.received()),
                [
                    codec.Error(
                        ErrorCode.RATE_LIMITED,
                        f"slow down: at most 0.1 {what} a second (burst 1); this one was dropped",
                        "r",
                    )
                ],
                cls,
            )

    def test_the_presence_bucket_is_shared(self):
        server = Server(join_burst=2, join_rate=0.01)
        (ann,) = server.logged_in("ann", version=2)
        ann.join("general")
        ann.send(codec.SetTopic("general", "one", "t"))
        ann.received()
        ann.send(codec.Part("general", ref="p"))
        self.assertEqual(ann.error().code, ErrorCode.RATE_LIMITED)

    def test_rows_without_a_bucket_are_never_rate_limited(self):
        server = Server(burst=1, rate=0.01, join_burst=1, join_rate=0.01)
        (ann,) = server.logged_in("ann", version=2)
        ann.join("general")
        ann.received()
        for cls in (codec.Ping, codec.Pong, codec.HistoryRequest, codec.ListRooms, codec.Mark):
            for _ in range(3):
                ann.send(SAMPLES[cls])
            codes = [e.code for e in errors(ann.received())]
            self.assertNotIn(ErrorCode.RATE_LIMITED, codes, cls)

    def test_a_deferred_result_gets_one_errback(self):
        """A refusal that comes later is its ERROR; anything else is logged
        and answered internal, with the row's words."""
        server = Server()
        (ann,) = server.logged_in("ann", version=2)
        later = defer.Deferred()
        server.hub.room_requests.list_rooms = lambda connection, packet: later
        ann.send(codec.ListRooms("l"))
        self.assertEqual(ann.received(), [])
        later.errback(ProtocolError(ErrorCode.BAD_PACKET, "no", None))
        self.assertEqual(ann.error(), codec.Error(ErrorCode.BAD_PACKET, "no", "l"))
        server.hub.room_requests.list_rooms = lambda connection, packet: defer.fail(
            RuntimeError("store down")
        )
        ann.send(codec.ListRooms("l"))
        self.assertEqual(
            ann.error(), codec.Error(ErrorCode.INTERNAL, "the server could not list the rooms", "l")
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_every_transport_goes_through_the_table(self):
        server = Server()
        applied = []
        original = policy.apply

        def spy(command, connection, packet):
            applied.append((connection.wire.name, type(packet)))
            return original(command, connection, packet)

        self.patch(policy, "apply", spy)
        tcp = server.peer()
        tcp.login("tcp", version=2)
        tcp.join("general")
        ws = server.peer(websocket=True)
        ws.login("ws", version=2)
        ws.join("general")
        chat = IrcPeer(server)
        chat.register("irc")
        chat.send("JOIN #general")
        kinds = [(name, kind) for name, kind in applied]
        for name in ("int32", "websocket", "irc"):
            self.assertIn((name, codec.Login), kinds)
            self.assertIn((name, codec.Join), kinds)


class Renderings(SynchronousTestCase):
    """Every server packet type is shown by every transport, or is listed
    (IRC only) with the reason it is not."""

    def test_int32_and_websocket_frame_every_packet(self):
        from tests.harness import WebSocketFrames, parse_frames

        for cls in codec.SERVER_PACKETS:
            payload = bytes([cls.TYPE]) + b"{}"
            self.assertEqual(codec.split_frames(INT32.frame(payload)), ([payload], b""))
            browser = WebSocketFrames()
            browser.parser.receive_data(WEBSOCKET.frame(payload))
            (event,) = list(browser.parser.events())
            self.assertEqual(bytes(event.data), payload)
        self.assertTrue(parse_frames(INT32.frame(codec.encode(codec.Bye("x")))))

    def test_irc_shows_or_lists_every_server_packet(self):
        shown = set(irc._BY_WIRE) | {cls.TYPE for cls in irc._BY_CONNECTION}
        self.assertFalse(shown & set(irc.NOT_SHOWN), "listed as not shown, yet rendered")
        for cls in codec.SERVER_PACKETS:
            self.assertIn(irc.rendering(cls.TYPE), ("wire", "connection", "not shown"), cls)
        for kind, reason in irc.NOT_SHOWN.items():
            self.assertTrue(reason.strip(), kind)
        self.assertEqual(set(irc.NOT_SHOWN) | shown, {cls.TYPE for cls in codec.SERVER_PACKETS})

    def test_a_packet_irc_neither_shows_nor_lists_fails(self):
        with self.assertRaises(KeyError):
            irc.rendering(0xFE)


class RefusalsCostAlike(SynchronousTestCase):
    def test_a_refusal_answered_at_once_costs_what_a_raised_one_does(self):
        """A WHISPER to nobody is refused through a Deferred the single
        server's peers have already answered; it spends what a SAY to a room
        the sender isn't in spends (the refusal's surcharge included)."""
        server = Server()
        (ann,) = server.logged_in("ann", version=2)

        def spent(packet) -> float:
            budget = ann.protocol.connection  # the policy is its own budget (core/budget.py Spender)
            before = budget._tokens
            ann.send(packet)
            self.assertEqual(len(errors(ann.received())), 1)
            return before - budget._tokens

        self.assertEqual(spent(codec.Whisper("nobody", "psst", "w")), spent(codec.Say("hi", "s", "nowhere")))
