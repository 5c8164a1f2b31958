"""One connection's state machine and the room, on StringTransport and task.Clock."""

import json

from twisted.internet.defer import fail
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.backends.eventlog import StoreError
from chatproto.codec import ErrorCode
from chatproto.core.hub import PENDING_SLACK
from tests.harness import Server, parse_frames

#: WELCOME.limits of version 1: exactly these keys.
V1_LIMITS = {
    "max_frame",
    "max_text",
    "max_clients",
    "sendq",
    "rate",
    "burst",
    "login_timeout",
    "ping_interval",
    "idle_timeout",
    "history_replay",
    "history_page",
}


def record_writes(test: SynchronousTestCase) -> list[bytes]:
    """Every bytes object written to any peer's transport during the test, in order."""
    written: list[bytes] = []
    original = StringTransport.write
    test.patch(
        StringTransport, "write", lambda transport, data: (written.append(data), original(transport, data))
    )
    return written


class Pending(SynchronousTestCase):
    def test_new_connection_is_announced_then_gone(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        stranger = server.peer()
        self.assertEqual(alice.only(codec.Pending), codec.Pending(stranger.connection.id, "connecting"))
        stranger.drop()
        self.assertEqual(alice.only(codec.Pending), codec.Pending(stranger.connection.id, "gone"))

    def test_welcome_lists_pending_ids_and_login_keeps_the_id(self):
        server = Server()
        waiting = server.peer()
        bob = server.peer()
        welcome = bob.login("bob")
        self.assertEqual(welcome.pending, [waiting.connection.id])
        self.assertEqual(welcome.id, bob.connection.id)
        welcome = waiting.login("ann")
        self.assertEqual(welcome.id, waiting.connection.id)
        self.assertEqual(bob.only(codec.Joined), codec.Joined(welcome.id, "ann"))

    def test_ids_are_never_reused(self):
        server = Server()
        seen = set()
        for _ in range(5):
            peer = server.peer()
            seen.add(peer.connection.id)
            peer.drop()
        self.assertEqual(len(seen), 5)

    def test_pending_connection_gets_no_chat(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        lurker = server.peer()
        alice.say("secret")
        server.flush()
        self.assertEqual(lurker.received(), [])

    def test_packets_needing_login(self):
        server = Server()
        peer = server.peer()
        for packet in (codec.Say("x", "r1"), codec.Whisper("a", "x", "r2"), codec.HistoryRequest(ref="r3")):
            peer.send(packet)
            error = peer.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.NOT_LOGGED_IN, packet.ref))
        self.assertFalse(peer.closing)

    def test_ping_before_login(self):
        server = Server()
        peer = server.peer()
        peer.send(codec.Ping("t1"))
        self.assertEqual(peer.only(codec.PongReply), codec.PongReply("t1"))

    def test_login_timeout(self):
        server = Server(login_timeout=5)
        (alice,) = server.logged_in("alice")
        idle = server.peer()
        alice.received()
        server.clock.advance(4.9)
        self.assertFalse(idle.closing)
        server.clock.advance(0.1)
        self.assertEqual(idle.only(codec.Bye), codec.Bye("login_timeout"))
        self.assertTrue(idle.closing)
        self.assertEqual(alice.only(codec.Pending).state, "gone")

    def test_logged_in_connection_has_no_login_timeout(self):
        server = Server(login_timeout=5)
        (alice,) = server.logged_in("alice")
        server.clock.advance(6)
        self.assertFalse(alice.closing)


class PendingElsewhere(SynchronousTestCase):
    """Another node's pending connections, as its news comes (a cluster's
    PENDING is the cluster's: docs/protocol.md 18)."""

    ID = 7 << 32  # another node's

    def setUp(self):
        self.server = Server(login_timeout=5)
        self.old, self.new = self.server.logged_in("old"), self.server.logged_in("new", version=2)
        self.old, self.new = self.old[0], self.new[0]
        self.old.received()
        self.inbound = self.server.hub.inbound

    def news(self, state, v1=True):
        self.inbound.pending(self.ID, state, v1)
        self.server.flush()

    def test_announced_like_our_own_and_listed_in_a_welcome(self):
        self.news("connecting")
        for peer in (self.old, self.new):
            self.assertEqual(peer.only(codec.Pending), codec.Pending(self.ID, "connecting"))
        welcome = self.server.peer().login("late", version=2)
        self.assertEqual(welcome.pending, [self.ID])
        self.new.received()
        self.news("gone")
        self.assertEqual(self.new.only(codec.Pending), codec.Pending(self.ID, "gone"))

    def test_a_version_1_login_elsewhere_is_no_pending_gone_to_version_1(self):
        """It sees that login as a JOINED, from the room's stream."""
        self.news("connecting")
        self.old.received()
        self.new.received()
        self.news("gone", v1=False)
        self.assertEqual(self.old.received(), [])
        self.assertEqual(self.new.only(codec.Pending), codec.Pending(self.ID, "gone"))

    def test_news_heard_twice_or_of_an_unknown_connection_is_nothing(self):
        self.news("gone")
        self.assertEqual(self.old.received(), [], "never heard of it")
        self.news("connecting")
        self.old.received()
        self.news("connecting")
        self.assertEqual(self.old.received(), [], "heard once")

    def test_a_node_that_left_takes_its_pending_connections(self):
        self.news("connecting")
        self.old.received()
        self.inbound.pending_gone(lambda id: id >> 32 == 8)
        self.server.flush()
        self.assertEqual(self.old.received(), [], "another node's")
        self.inbound.pending_gone(lambda id: id >> 32 == 7)
        self.server.flush()
        self.assertEqual(self.old.only(codec.Pending), codec.Pending(self.ID, "gone"))

    def test_a_going_that_never_came_is_taken_for_gone_after_the_login_timeout_and_more(self):
        self.news("connecting")
        self.old.received()
        self.server.clock.advance(5 + PENDING_SLACK - 0.1)
        self.assertEqual(self.old.received(), [])
        self.server.clock.advance(0.1)
        self.assertEqual(self.old.only(codec.Pending), codec.Pending(self.ID, "gone"))
        self.news("gone")
        self.assertEqual(self.old.received(), [], "once")
        self.assertEqual(self.server.peer().login("late", version=2).pending, [])


class Login(SynchronousTestCase):
    def test_welcome(self):
        server = Server()
        (ann,) = server.logged_in("ann")
        ann.say("earlier")
        server.flush()
        peer = server.peer()
        welcome = peer.login("ＢＯＢ")  # fullwidth: NFKC makes it BOB
        self.assertEqual(welcome.nick, "BOB")
        self.assertEqual(welcome.server, "test")
        self.assertEqual(welcome.motd, "hello")
        self.assertEqual(
            sorted((p.id, p.nick) for p in welcome.peers),
            sorted([(ann.connection.id, "ann"), (peer.connection.id, "BOB")]),
        )
        self.assertEqual([m.text for m in welcome.history], ["earlier"])
        self.assertEqual(set(welcome.limits), V1_LIMITS)
        self.assertEqual(welcome.limits["max_frame"], 65536)
        self.assertTrue(welcome.resume)

    def test_bad_nicks_can_be_retried(self):
        server = Server()
        peer = server.peer()
        for nick in ("", "a" * 33, "has space", "emoji😀", "\u0301accent", "semi;colon"):
            peer.send(codec.Login(nick, 1, ref="n"))
            error = peer.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.BAD_NICK, "n"), nick)
        peer.send_payload(b'\x01{"nick":"a\\ud800","proto":1,"ref":"n"}')  # a lone surrogate
        self.assertEqual(peer.error().code, ErrorCode.BAD_NICK)
        self.assertEqual(peer.login("ok_name-1.x").nick, "ok_name-1.x")

    def test_nick_taken_matches_nfkc_casefold(self):
        server = Server()
        server.logged_in("Alice")
        peer = server.peer()
        for nick in ("alice", "ALICE", "Ａlice"):
            peer.send(codec.Login(nick, 1))
            self.assertEqual(peer.error().code, ErrorCode.NICK_TAKEN)
        self.assertFalse(peer.closing)
        self.assertEqual(peer.login("alice2").nick, "alice2")

    def test_unsupported_version_closes(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        peer = server.peer()
        peer.send(codec.Login("bob", 3))
        self.assertEqual(peer.error().code, ErrorCode.UNSUPPORTED_VERSION)
        self.assertTrue(peer.closing)
        peer.send(codec.Ping("after"))
        self.assertEqual(peer.received(), [], "the ERROR is the last packet")
        self.assertEqual(alice.received()[-1], codec.Pending(peer.connection.id, "gone"))

    def test_a_version_1_login_with_a_password_of_any_kind_logs_in(self):
        """``password`` is no field of version 1 (section 15): ignored, as unknown fields are (2)."""
        server = Server()
        peer = server.peer()
        peer.send_payload(b"\x01" + json.dumps({"nick": "ann", "proto": 1, "password": 12345}).encode())
        self.assertEqual(peer.received(flush=False)[0].nick, "ann")

    def test_already_logged_in(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        alice.send(codec.Login("other", 1))
        self.assertEqual(alice.error().code, ErrorCode.ALREADY_LOGGED_IN)
        self.assertFalse(alice.closing)


class Chat(SynchronousTestCase):
    def test_say_reaches_everyone_sender_copy_carries_ref(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        server.clock.advance(12.5)
        alice.say("hi\tthere\nall", ref="r1")
        self.assertEqual(bob.received(flush=False), [], "nothing is broadcast before it is stored")
        server.flush()
        mine = alice.only(codec.MessagePacket)
        theirs = bob.only(codec.MessagePacket)
        self.assertEqual(mine, codec.MessagePacket(1, 12.5, "alice", "hi\tthere\nall", "r1"))
        self.assertEqual(theirs, codec.MessagePacket(1, 12.5, "alice", "hi\tthere\nall"))
        self.assertEqual(server.stored(), [theirs.message])

    def test_seq_increases_by_one_in_one_order(self):
        server = Server()
        peers = server.logged_in("a", "b", "c")
        for i in range(9):
            peers[i % 3].say(f"m{i}")
            if i % 4 == 0:
                server.flush()
        server.flush()
        orders = [[(p.seq, p.text) for p in peer.received()] for peer in peers]
        self.assertEqual(orders[0], [(i + 1, f"m{i}") for i in range(9)])
        self.assertEqual(orders[0], orders[1])
        self.assertEqual(orders[1], orders[2])

    def test_broadcast_is_encoded_once(self):
        server = Server()
        server.logged_in("a", "b", "c")
        written = record_writes(self)
        server.hub.messages.say(server.hub.sessions[0].connection, "hello", None)
        server.flush()
        self.assertEqual(len(written), 3)
        self.assertTrue(all(data is written[0] for data in written))

    def test_presence_and_chat_share_one_order(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        alice.say("before join")
        newcomer = server.peer()  # same turn: the pending message must go out first
        alice.say("after join")
        server.flush()
        for peer in (alice, bob):
            kinds = [type(p).__name__ + getattr(p, "text", "") for p in peer.received()]
            self.assertEqual(kinds, ["MessagePacketbefore join", "Pending", "MessagePacketafter join"])
        self.assertEqual(newcomer.received(), [])

    def test_mid_turn_login_gets_the_turns_messages_but_not_earlier_presence(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        alice.say("said first")
        carol = server.peer()
        welcome = carol.login("carol")
        alice.say("said after")
        self.assertEqual(welcome.history, [], "history stops at the last stored batch")
        self.assertEqual(
            [(type(p).__name__, getattr(p, "text", None)) for p in carol.received()],
            [("MessagePacket", "said first"), ("MessagePacket", "said after")],
        )
        self.assertEqual(
            [type(p).__name__ for p in bob.received()],
            ["MessagePacket", "Pending", "Joined", "MessagePacket"],
        )

    def test_one_write_per_recipient_per_turn(self):
        server = Server()
        server.logged_in("a", "b", "c")
        written = record_writes(self)
        for _ in range(5):
            server.peer()
        server.hub.messages.say(server.hub.session_for("a").connection, "hello", None)
        server.flush()
        self.assertEqual(len(written), 3)
        self.assertEqual(len(parse_frames(written[0])), 6, "five PENDING and one MESSAGE in one write")

    def test_bad_text(self):
        server = Server(max_text=10)
        (alice,) = server.logged_in("alice")
        for text in ("", "x" * 11, "carriage\rreturn", "bell\x07", "del\x7f", "c1\x85"):
            alice.say(text, ref="t")
            error = alice.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.BAD_TEXT, "t"), repr(text))
        alice.send_payload(b'\x02{"text":"lone \\udc00","ref":"t"}')
        self.assertEqual(alice.error().code, ErrorCode.BAD_TEXT)
        alice.say("x" * 10)
        server.flush()
        self.assertEqual(alice.only(codec.MessagePacket).text, "x" * 10)

    def test_whisper(self):
        server = Server()
        alice, bob, carol = server.logged_in("alice", "Bob", "carol")
        server.clock.advance(3)
        alice.send(codec.Whisper("BOB", "psst", "w1"))
        self.assertEqual(bob.only(codec.Private), codec.Private(3.0, "alice", "Bob", "psst"))
        self.assertEqual(alice.only(codec.Private), codec.Private(3.0, "alice", "Bob", "psst", "w1"))
        self.assertEqual(carol.received(), [])
        self.assertEqual(server.store.last_seq(), 0, "whispers are not stored")

    def test_whisper_to_yourself_arrives_once(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        alice.send(codec.Whisper("alice", "note", "w"))
        self.assertEqual(alice.only(codec.Private).ref, "w")

    def test_whisper_to_nobody(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        alice.send(codec.Whisper("ghost", "hello?", "w2"))
        error = alice.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.NO_SUCH_NICK, "w2"))
        alice.send(codec.Whisper("not a nick!", "hello?"))
        self.assertEqual(alice.error().code, ErrorCode.BAD_NICK)

    def test_whisper_follows_messages_said_before_it(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        alice.say("public")
        alice.send(codec.Whisper("bob", "private"))
        self.assertEqual([type(p) for p in bob.received()], [codec.MessagePacket, codec.Private])

    def test_rate_limit_and_burst(self):
        server = Server(rate=20, burst=40)
        alice, bob = server.logged_in("alice", "bob")
        for i in range(41):
            alice.say(f"m{i}", ref=f"r{i}")
        error = alice.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.RATE_LIMITED, "r40"))
        server.flush()
        self.assertEqual(len(bob.received()), 40)
        alice.received()
        server.clock.advance(0.5)  # ten tokens back
        for i in range(11):
            alice.send(codec.Whisper("bob", f"w{i}", f"w{i}"))
        packets = alice.received()
        self.assertEqual(len([p for p in packets if isinstance(p, codec.Private)]), 10)
        self.assertEqual(packets[-1], codec.Error(ErrorCode.RATE_LIMITED, packets[-1].message, "w10"))

    def test_history_store_failure_is_internal_error_and_nothing_is_broadcast(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")

        def broken(drafts):
            return fail(StoreError("disk full"))

        self.patch(server.store, "append", broken)
        alice.say("lost?", ref="r")
        server.flush()
        error = alice.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.INTERNAL, "r"))
        self.assertEqual(bob.received(), [])
        self.patch(server.store, "append", type(server.store).append.__get__(server.store))
        alice.say("stored")
        server.flush()
        self.assertEqual(bob.only(codec.MessagePacket).seq, 1, "a refused seq is never seen, so reused")

    def test_handler_failure_is_internal_error_and_connection_survives(self):
        server = Server()
        (alice,) = server.logged_in("alice")

        def broken(session, request):
            raise RuntimeError("bug")

        self.patch(server.hub.messages, "history", broken)
        alice.send(codec.HistoryRequest(ref="h"))
        error = alice.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.INTERNAL, "h"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        alice.send(codec.Ping("still"))
        self.assertEqual(alice.only(codec.PongReply).token, "still")


class Malformed(SynchronousTestCase):
    def test_bad_packets_keep_the_connection(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        for payload in (b"", b"\x02", b"\x02[1]", b"\x02{bad", b'\x02{"text":1}', b"\x02\xff\xfe"):
            alice.send_payload(payload)
            self.assertEqual(alice.error().code, ErrorCode.BAD_PACKET, payload)
        alice.send_payload(b'\x06{"before":5,"after":1,"ref":"h"}')
        error = alice.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.BAD_PACKET, "h"))
        self.assertFalse(alice.closing)

    def test_unknown_type(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        alice.send_payload(b'\x81{"ref":"u"}')
        error = alice.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.UNKNOWN_TYPE, "u"))
        self.assertFalse(alice.closing)

    def test_frame_size_limit(self):
        server = Server(max_frame=2000)
        alice, bob = server.logged_in("alice", "bob")
        body = b'{"text":"' + b"x" * (2000 - 1 - len(b'{"text":""}')) + b'"}'
        alice.send_payload(b"\x02" + body)  # exactly max_frame: accepted
        server.flush()
        self.assertEqual(len(bob.only(codec.MessagePacket).text), 1988)
        alice.received()
        alice.protocol.dataReceived(b"\x00\x00\x07\xd1")  # announces 2001 bytes
        self.assertEqual(alice.error().code, ErrorCode.FRAME_TOO_LARGE)
        self.assertTrue(alice.closing)
        alice.protocol.dataReceived(b"x" * 3000)
        self.assertEqual(alice.received(), [], "nothing after frame_too_large")
        self.assertEqual(bob.only(codec.Left).reason, "connection_lost")

    def test_frames_after_quit_in_the_same_read_are_ignored(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        data = codec.frame(codec.encode(codec.Quit())) + codec.frame(codec.encode(codec.Say("late")))
        alice.protocol.dataReceived(data)
        server.flush()
        self.assertEqual(bob.only(codec.Left).reason, "quit")


class Leaving(SynchronousTestCase):
    def test_quit_with_and_without_reason(self):
        server = Server()
        alice, bob, carol = server.logged_in("alice", "bob", "carol")
        alice.send(codec.Quit("gone\x07 fishing"))
        self.assertTrue(alice.closing)
        self.assertEqual(alice.received(), [], "after QUIT the server just closes")
        self.assertEqual(
            bob.only(codec.Left), codec.Left(alice.connection.id, "alice", "quit", "gone fishing")
        )
        carol.received()
        bob.send(codec.Quit())
        self.assertEqual(carol.only(codec.Left), codec.Left(bob.connection.id, "bob", "quit"))
        alice.drop()
        self.assertEqual(carol.received(), [], "LEFT is said once")

    def test_pending_quit(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        peer = server.peer()
        alice.received()
        peer.send(codec.Quit())
        self.assertTrue(peer.closing)
        self.assertEqual(alice.only(codec.Pending).state, "gone")

    def test_dropped_connection(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        alice.drop()
        self.assertEqual(bob.only(codec.Left).reason, "connection_lost")
        self.assertEqual(server.peer().login("alice").nick, "alice", "the nick is free again")

    def test_kick(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        self.assertTrue(server.hub.kick(alice.connection.id))
        self.assertEqual(alice.only(codec.Bye), codec.Bye("kicked"))
        self.assertTrue(alice.closing)
        self.assertEqual(bob.only(codec.Left).reason, "kicked")
        self.assertFalse(server.hub.kick(alice.connection.id))

    def test_close_grace_aborts_a_peer_that_never_closes(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        server.hub.kick(alice.connection.id)
        self.assertFalse(alice.transport.disconnected)
        server.clock.advance(10)
        self.assertTrue(alice.transport.disconnected)


class Keepalive(SynchronousTestCase):
    def test_ping_then_timeout(self):
        server = Server(ping_interval=30, idle_timeout=90)
        alice, bob = server.logged_in("alice", "bob")
        server.clock.advance(29)
        bob.send(codec.Pong())  # bob keeps talking
        server.clock.advance(1)
        ping = alice.only(codec.ServerPing)
        self.assertTrue(ping.token)
        self.assertEqual(bob.received(), [])
        server.clock.advance(59.9)
        self.assertFalse(alice.closing)
        server.clock.advance(0.1)
        self.assertEqual(alice.only(codec.Bye), codec.Bye("timeout"))
        self.assertEqual(next(p for p in bob.received() if isinstance(p, codec.Left)).reason, "timeout")

    def test_any_packet_counts_as_life(self):
        server = Server(ping_interval=30, idle_timeout=90)
        (alice,) = server.logged_in("alice")
        for _ in range(10):
            server.clock.advance(25)
            alice.send(codec.Ping())
        self.assertEqual([type(p) for p in alice.received()], [codec.PongReply] * 10)
        self.assertFalse(alice.closing)

    def test_answering_ping_keeps_the_connection(self):
        server = Server(ping_interval=30, idle_timeout=90)
        (alice,) = server.logged_in("alice")
        for _ in range(5):
            server.clock.advance(30)
            ping = alice.only(codec.ServerPing)
            alice.send(codec.Pong(ping.token))
        self.assertFalse(alice.closing)


class Limits(SynchronousTestCase):
    def test_max_clients_counts_pending_and_refuses_silently(self):
        server = Server(max_clients=2)
        (alice,) = server.logged_in("alice")
        waiting = server.peer()
        alice.received()
        refused = server.peer()
        self.assertEqual(refused.only(codec.Bye), codec.Bye("server_full"))
        self.assertTrue(refused.closing)
        self.assertEqual(alice.received(), [], "a refused connection is never announced")
        refused.drop()
        self.assertEqual(alice.received(), [])
        waiting.drop()
        server.peer().login("bob")

    def test_slow_consumer_is_cut_and_others_get_everything(self):
        server = Server(sendq=4000)
        alice, slow, bob = server.logged_in("alice", "slow", "bob")
        slow.connection.outbox.pauseProducing()  # its socket buffer is full
        for i in range(30):
            server.hub.messages.say(server.hub.session_for("alice").connection, f"{i:0100d}", None)
            server.flush()
        self.assertEqual(slow.received()[-1], codec.Bye("slow_consumer"))
        self.assertTrue(slow.closing)
        seen = bob.received()
        self.assertEqual(len([p for p in seen if isinstance(p, codec.MessagePacket)]), 30)
        self.assertEqual([p.reason for p in seen if isinstance(p, codec.Left)], ["slow_consumer"])
        self.assertEqual(len(alice.received()), 31)

    def test_paused_consumer_catches_up_in_order(self):
        server = Server(sendq=100000)
        alice, reader = server.logged_in("alice", "reader")
        reader.connection.outbox.pauseProducing()
        for i in range(5):
            alice.say(f"m{i}")
            server.flush()
        self.assertEqual(reader.received(), [])
        reader.connection.outbox.resumeProducing()
        self.assertEqual([p.text for p in reader.received()], [f"m{i}" for i in range(5)])

    def test_history_replay_and_page_limits(self):
        server = Server(history_replay=3, history_page=4)
        (alice,) = server.logged_in("alice")
        for i in range(10):
            server.hub.messages.say(server.hub.session_for("alice").connection, f"m{i}", None)
        server.flush()
        self.assertEqual([m.seq for m in server.peer().login("bob").history], [8, 9, 10])
        alice.received()
        alice.send(codec.HistoryRequest(limit=100))
        page = alice.only(codec.HistoryPage)
        self.assertEqual(([m.seq for m in page.messages], page.more), ([7, 8, 9, 10], True))
        alice.send(codec.HistoryRequest(limit=0))
        self.assertEqual([m.seq for m in alice.only(codec.HistoryPage).messages], [10])


class History(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        (self.alice,) = self.server.logged_in("alice")
        session = self.server.hub.session_for("alice")
        for i in range(1, 121):
            self.server.hub.messages.say(session.connection, f"m{i}", None)
        self.server.flush()
        self.alice.received()

    def test_integers_beyond_64_bits_are_bad_packet_not_internal(self):
        failures = []
        globalLogPublisher.addObserver(failures.append)
        self.addCleanup(globalLogPublisher.removeObserver, failures.append)
        for field in ("before", "after", "limit"):
            for value in (2**63, -(2**63) - 1, 10**30):
                body = json.dumps({field: value, "ref": field}).encode()
                self.alice.send_payload(bytes([codec.PacketType.HISTORY]) + body)
                error = self.alice.error()
                self.assertEqual((error.code, error.ref), (ErrorCode.BAD_PACKET, field))
        self.assertEqual([e for e in failures if e.get("log_failure")], [], "no traceback logged")
        self.assertEqual(self.page(after=2**63 - 1), ([], False), "the largest integer is a valid bound")

    def page(self, **request):
        self.alice.send(codec.HistoryRequest(**request))
        page = self.alice.only(codec.HistoryPage)
        return [m.seq for m in page.messages], page.more

    def test_newest_page_by_default(self):
        seqs, more = self.page()
        self.assertEqual((seqs, more), (list(range(71, 121)), True))

    def test_before_pages_back(self):
        self.assertEqual(self.page(before=71, limit=50), (list(range(21, 71)), True))
        self.assertEqual(self.page(before=21, limit=50), (list(range(1, 21)), False))

    def test_after_catches_up(self):
        self.assertEqual(self.page(after=100, limit=10), (list(range(101, 111)), True))
        self.assertEqual(self.page(after=110), (list(range(111, 121)), False))
        self.assertEqual(self.page(after=120), ([], False))

    def test_welcome_history_is_the_most_recent_oldest_first(self):
        welcome = self.server.peer().login("bob")
        self.assertEqual([m.seq for m in welcome.history], list(range(71, 121)))

    def test_pages_fit_in_max_frame(self):
        server = Server(max_text=4000)
        (alice,) = server.logged_in("alice")
        for _i in range(40):
            server.hub.messages.say(server.hub.session_for("alice").connection, "é" * 4000, None)
        server.flush()
        alice.received()
        alice.send(codec.HistoryRequest(limit=40))
        data = alice.transport.value()
        page = alice.only(codec.HistoryPage)
        self.assertLessEqual(len(data) - 4, 65536)
        self.assertTrue(page.more)
        self.assertEqual(page.messages[-1].seq, 40, "the newest are kept")


class Resume(SynchronousTestCase):
    def test_resume_takes_over_the_ghost(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        token = server.hub.session_for("alice").token
        again = server.peer()
        alice.received()
        bob.received()
        welcome = again.login("Alice", resume=token)
        self.assertEqual((welcome.id, welcome.nick), (alice.connection.id, "alice"))
        self.assertNotEqual(welcome.resume, token)
        self.assertEqual(alice.only(codec.Bye), codec.Bye("replaced"))
        self.assertTrue(alice.closing)
        alice.drop()
        self.assertEqual(bob.received(), [codec.Pending(again.connection.id, "gone")])
        again.say("back", ref="b")
        server.flush()
        self.assertEqual(bob.only(codec.MessagePacket).sender, "alice")
        self.assertEqual(again.only(codec.MessagePacket).ref, "b")

    def test_old_token_is_no_longer_valid(self):
        server = Server()
        server.logged_in("alice")
        token = server.hub.session_for("alice").token
        server.peer().login("alice", resume=token)
        late = server.peer()
        late.send(codec.Login("alice", 1, token))
        self.assertEqual(late.error().code, ErrorCode.NICK_TAKEN)

    def test_wrong_token_is_nick_taken(self):
        server = Server()
        server.logged_in("alice")
        peer = server.peer()
        peer.send(codec.Login("alice", 1, "guess"))
        self.assertEqual(peer.error().code, ErrorCode.NICK_TAKEN)

    def test_token_for_a_free_nick_is_an_ordinary_login(self):
        server = Server()
        (bob,) = server.logged_in("bob")
        welcome = server.peer().login("carol", resume="stale")
        self.assertEqual(welcome.nick, "carol")
        self.assertEqual(bob.received()[-1], codec.Joined(welcome.id, "carol"))


class Shutdown(SynchronousTestCase):
    def test_store_first_then_bye_everyone(self):
        server = Server()
        alice, bob = server.logged_in("alice", "bob")
        pending = server.peer()
        alice.received()
        bob.received()
        alice.say("last words")
        done = server.hub.shutdown()
        self.assertEqual(server.store.last_seq(), 1)
        self.assertEqual([type(p) for p in bob.received()], [codec.MessagePacket, codec.Bye])
        for peer in (alice, bob, pending):
            self.assertTrue(peer.closing)
            peer.drop()
        self.assertIsNone(self.successResultOf(done))

    def test_shutdown_aborts_peers_that_do_not_close(self):
        server = Server()
        (alice,) = server.logged_in("alice")
        done = server.hub.shutdown(grace=2)
        self.assertNoResult(done)
        server.clock.advance(2)
        self.assertTrue(alice.transport.disconnected, "aborted")
        alice.drop()  # what the reactor reports after an abort
        self.successResultOf(done)


class WelcomeFixedFields(SynchronousTestCase):
    def test_a_changed_motd_is_in_the_next_welcome(self):
        """WELCOME's server name, motd and limits are encoded once, and again
        whenever the name or motd changes."""
        server = Server()
        self.assertEqual(server.peer().login("ann", version=2).motd, "hello")
        server.hub.assembler.motd = "new rules"
        server.hub.assembler.name = "renamed"
        welcome = server.peer().login("bob", version=1)
        self.assertEqual((welcome.motd, welcome.server), ("new rules", "renamed"))
        self.assertEqual(server.peer().login("cy", version=2).motd, "new rules")
