"""The client's session state machine, with no Qt: on task.Clock and StringTransport.

A fake endpoint hands each connection attempt to the test, which plays the
server by writing frames into the link and reading what the client wrote.
"""

from __future__ import annotations

from OpenSSL import crypto
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.certs import fingerprint, make_self_signed
from chatproto.tls import PIN, TLSSettings
from qtclient.session_machine import MAX_QUEUED, TRANSITIONS, ClientSession, SessionEvents, State


class Recorder(SessionEvents):
    """Every event, in order, as (name, args)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple]] = []

    def __getattribute__(self, name):
        if name.startswith("_") or name in ("seen", "named", "states"):
            return object.__getattribute__(self, name)
        if hasattr(SessionEvents, name):
            return lambda *args: self.seen.append((name, args))
        return object.__getattribute__(self, name)

    def named(self, name: str) -> list[tuple]:
        return [args for event, args in self.seen if event == name]

    def states(self) -> list[State]:
        return [args[0] for args in self.named("state_changed")]


class FakeEndpoint:
    def __init__(self) -> None:
        self.attempts: list[tuple[object, Deferred]] = []

    def connect(self, factory) -> Deferred:
        d: Deferred = Deferred()
        self.attempts.append((factory, d))
        return d


class CertTransport(StringTransport):
    def __init__(self, cert: crypto.X509) -> None:
        super().__init__()
        self.cert = cert

    def getPeerCertificate(self):
        return self.cert


class Harness:
    def __init__(self, tls: TLSSettings | None = None, pins: dict | None = None) -> None:
        self.clock = Clock()
        self.events = Recorder()
        self.endpoint = FakeEndpoint()
        self.session = ClientSession(
            self.clock, self.events, retry=lambda attempt: 1.0, endpoint_for=lambda h, p, t: self.endpoint
        )
        self.session.connect_to("127.0.0.1", 7777, "ann", tls, pins if pins is not None else {})

    def accept(self, transport: StringTransport | None = None):
        """The pending attempt connects; returns (protocol, transport)."""
        factory, d = self.endpoint.attempts[-1]
        protocol = factory.buildProtocol(None)
        transport = transport or StringTransport()
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport

    def refuse(self) -> None:
        _, d = self.endpoint.attempts[-1]
        d.errback(ConnectionRefusedError())

    @staticmethod
    def serve(protocol, *packets) -> None:
        protocol.dataReceived(b"".join(codec.encode_frame(p) for p in packets))

    @staticmethod
    def sent(transport: StringTransport) -> list:
        payloads, rest = codec.split_frames(transport.value())
        transport.clear()
        assert rest == b""
        return [codec.decode_client(p) for p in payloads]

    @staticmethod
    def drop(protocol) -> None:
        protocol.connectionLost(Failure(ConnectionDone()))


def welcome(nick="ann", id=1, rooms=()) -> codec.Welcome:
    """A version 2 WELCOME: rooms come in ROOM packets."""
    return codec.Welcome(nick, id, "token", "srv", "", [], [], [], {"max_text": 4000}, list(rooms), "general")


def room(name="general", history=(), ref=None, members=(("ann", 1),)) -> codec.RoomState:
    return codec.RoomState(name, "", [codec.Peer(id, nick) for nick, id in members], list(history), ref)


def msg(seq: int, text: str = "", sender: str = "bob", ref=None, room="general") -> codec.MessagePacket:
    return codec.MessagePacket(seq, float(seq), sender, text or f"m{seq}", ref, room)


def message(seq: int, text: str = "", sender: str = "bob") -> codec.Message:
    return codec.Message(seq, float(seq), sender, text or f"m{seq}")


class Transitions(SynchronousTestCase):
    def test_table_names_only_states_and_every_state_is_reachable(self):
        reachable = {State.DISCONNECTED} | set(TRANSITIONS.values())
        self.assertEqual(reachable, set(State))

    def test_an_event_with_no_transition_is_a_bug_not_a_silent_change(self):
        h = Harness()
        self.assertRaises(RuntimeError, h.session._fire, "caught_up")
        self.assertIs(h.session.state, State.CONNECTING)


class Lifecycle(SynchronousTestCase):
    def test_plain_connect_login_welcome(self):
        h = Harness()
        protocol, transport = h.accept()
        self.assertEqual(h.sent(transport), [codec.Login("ann", 2)])
        h.serve(protocol, welcome())
        self.assertEqual(h.events.states(), [State.CONNECTING, State.LOGGING_IN, State.CONNECTED])
        self.assertEqual(
            h.sent(transport),
            [codec.Join("general", "join:general"), codec.Ping("p1")],
            "the default room to begin with; keepalive starts with the session",
        )
        h.serve(protocol, room(history=[message(1), message(2)], ref="join:general"))
        self.assertEqual(h.session.rooms["general"].last_seq, 2)
        self.assertEqual(len(h.events.named("room_joined")), 1)

    def test_a_failed_attempt_retries_after_the_policy_delay(self):
        h = Harness()
        h.refuse()
        self.assertEqual(h.events.named("error_received")[0][0], "unreachable")
        self.assertEqual(h.events.named("reconnect_scheduled"), [(1.0,)])
        self.assertIs(h.session.state, State.RECONNECTING)
        h.clock.advance(1.0)
        self.assertEqual(len(h.endpoint.attempts), 2)
        _protocol, _transport = h.accept()
        self.assertIs(h.session.state, State.LOGGING_IN)

    def test_nick_taken_gives_up_and_stops_retrying(self):
        h = Harness()
        protocol, _ = h.accept()
        h.serve(protocol, codec.Error("nick_taken", "nick 'ann' is taken"))
        self.assertIs(h.session.state, State.GIVEN_UP)
        h.drop(protocol)
        h.clock.advance(60)
        self.assertEqual(len(h.endpoint.attempts), 1, "no retry")

    def test_kicked_gives_up_after_the_link_closes(self):
        h = Harness()
        protocol, _ = h.accept()
        h.serve(protocol, welcome(), codec.Bye("kicked"))
        h.drop(protocol)
        self.assertIs(h.session.state, State.GIVEN_UP)
        h.clock.advance(60)
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_disconnect_sends_quit(self):
        h = Harness()
        protocol, transport = h.accept()
        h.serve(protocol, welcome())
        h.sent(transport)
        h.session.disconnect()
        self.assertEqual(h.sent(transport), [codec.Quit("leaving")])
        self.assertIs(h.session.state, State.DISCONNECTED)


class PasswordChange(SynchronousTestCase):
    def logged_in(self):
        h = Harness()
        h.session.connect_to("127.0.0.1", 7777, "ann", password="old password")
        protocol, transport = h.accept()
        h.serve(protocol, welcome())
        h.sent(transport)
        return h, protocol

    def password_after_a_drop(self, h, protocol) -> str:
        h.drop(protocol)
        h.clock.advance(1)
        _, transport = h.accept()
        (login,) = h.sent(transport)
        return login.password

    def refused(self, h, protocol) -> None:
        h.session.change_account("password", "wrong guess", "refused one")
        h.serve(protocol, codec.Error("bad_password", "wrong nick or password", "account:password"))

    def test_the_new_password_is_used_to_log_in_again_only_once_the_server_took_it(self):
        h, protocol = self.logged_in()
        self.refused(h, protocol)
        h.session.change_account("password", "old password", "new password")
        h.serve(protocol, codec.Done("password", "ann", "account:password"))
        self.assertEqual(self.password_after_a_drop(h, protocol), "new password")

    def test_a_refused_change_keeps_the_old_password(self):
        h, protocol = self.logged_in()
        self.refused(h, protocol)
        self.assertEqual(self.password_after_a_drop(h, protocol), "old password")


class Outage(SynchronousTestCase):
    def test_reconnect_rejoins_each_room_catches_up_each_and_reports_missed_messages(self):
        h = Harness()
        protocol, transport = h.accept()
        h.serve(protocol, welcome(), room(history=[message(1)]), msg(2))
        self.assertTrue(h.session.join("side"))
        h.serve(protocol, room("side", history=[message(7, room_message := "x")]))
        ref = h.session.say("typed while online")
        h.sent(transport)
        h.drop(protocol)  # the echo never came
        self.assertEqual(h.events.named("connection_lost"), [()])
        self.assertIs(h.session.state, State.RECONNECTING)
        queued = h.session.say("typed while offline", "side")
        h.clock.advance(1.0)
        protocol, transport = h.accept()
        self.assertEqual(h.sent(transport), [codec.Login("ann", 2, "token")], "resume with the token")
        h.serve(protocol, welcome())  # not resumed: the server had noticed the drop
        self.assertIs(h.session.state, State.CATCHING_UP)
        self.assertEqual(
            h.sent(transport)[:2], [codec.Join("general", "join:general"), codec.Join("side", "join:side")]
        )
        h.serve(protocol, room(history=[message(5)], ref="join:general"))  # more was said than it shows
        self.assertEqual(h.sent(transport), [codec.HistoryRequest(after=2, limit=200, room="general")])
        page1 = [message(3), message(4, "typed while online", "ann")]
        h.serve(protocol, codec.HistoryPage(page1, True, "general"))
        self.assertEqual(h.sent(transport), [codec.HistoryRequest(after=4, limit=200, room="general")])
        h.serve(protocol, codec.HistoryPage([message(5)], False, "general"))
        self.assertIs(h.session.state, State.CATCHING_UP, "side is not caught up yet")
        h.serve(protocol, room("side", history=[message(7, room_message), message(8)], ref="join:side"))
        # the ROOM's history reaches back to what was seen: no page needed
        self.assertIs(h.session.state, State.CONNECTED)
        self.assertEqual(h.events.named("back_online"), [(4,)], "3, 4 and 5 in general, 8 in side")
        self.assertIn((ref, 4), h.events.named("send_confirmed"), "found in history, not sent twice")
        self.assertEqual(h.sent(transport), [codec.Say("typed while offline", queued, "side")])
        self.assertEqual((h.session.rooms["general"].last_seq, h.session.rooms["side"].last_seq), (5, 8))

    def test_a_resume_gets_its_rooms_without_joining(self):
        h = Harness()
        protocol, transport = h.accept()
        h.serve(protocol, welcome(), room(history=[message(1)]))
        h.drop(protocol)
        h.clock.advance(1.0)
        protocol, transport = h.accept()
        h.sent(transport)
        h.serve(protocol, welcome(rooms=["general"]), room(history=[message(1)]))
        self.assertNotIn(codec.Join("general", "join:general"), h.sent(transport))
        self.assertIs(h.session.state, State.CONNECTED)

    def test_a_room_that_can_not_be_joined_again_is_dropped_not_waited_for(self):
        h = Harness()
        protocol, _ = h.accept()
        h.serve(protocol, welcome(), room(history=[message(1)]))
        h.drop(protocol)
        h.clock.advance(1.0)
        protocol, _ = h.accept()
        h.serve(protocol, welcome(), codec.Error("too_many_rooms", "full", "join:general"))
        self.assertIs(h.session.state, State.CONNECTED)
        self.assertEqual(h.session.rooms, {})

    def test_older_history_is_asked_for_the_room_scrolled(self):
        h = Harness()
        protocol, transport = h.accept()
        h.serve(
            protocol, welcome(), room(history=[message(5)]), room("side", history=[message(40), message(41)])
        )
        h.sent(transport)
        self.assertTrue(h.session.request_older("SIDE"))
        self.assertFalse(h.session.request_older("side"), "one request at a time per room")
        self.assertTrue(h.session.request_older())  # the default room's own
        self.assertEqual(
            h.sent(transport),
            [
                codec.HistoryRequest(before=40, limit=100, room="side"),
                codec.HistoryRequest(before=5, limit=100, room="general"),
            ],
        )
        h.serve(protocol, codec.HistoryPage([message(39)], False, "side"))
        self.assertEqual(h.events.named("history_received")[-1][:2], ("side", [message(39)]))
        self.assertEqual(h.session.rooms["side"].oldest_seq, 39)
        self.assertEqual(h.session.rooms["general"].oldest_seq, 5, "the other room's place is its own")

    def test_parting_forgets_the_room(self):
        h = Harness()
        protocol, transport = h.accept()
        h.serve(protocol, welcome(), room())
        h.sent(transport)
        self.assertTrue(h.session.part("general", "lunch"))
        self.assertEqual(h.sent(transport), [codec.Part("general", "lunch", "part:general")])
        h.serve(protocol, codec.Left(1, "ann", "part", "lunch", "general", "part:general"))
        self.assertEqual(h.session.rooms, {})
        self.assertEqual(len(h.events.named("room_left")), 1)
        self.assertEqual(h.events.named("peer_left"), [])

    def test_a_reconnect_with_nothing_missed_says_zero(self):
        h = Harness()
        protocol, _ = h.accept()
        h.serve(protocol, welcome(), room())
        h.drop(protocol)
        h.clock.advance(1.0)
        protocol, _ = h.accept()
        h.serve(protocol, welcome(), room())
        self.assertEqual(h.events.named("back_online"), [(0,)])

    def test_offline_queue_is_bounded(self):
        h = Harness()
        for i in range(MAX_QUEUED):
            self.assertIsNotNone(h.session.say(f"q{i}"))
        self.assertIsNone(h.session.say("one too many"))
        self.assertEqual(h.events.named("error_received")[-1][0], "queue_full")


class TrustOnFirstUse(SynchronousTestCase):
    def setUp(self):
        _, pem = make_self_signed()
        self.cert = crypto.load_certificate(crypto.FILETYPE_PEM, pem)
        self.fingerprint = fingerprint(pem)

    def test_a_hostile_server_is_not_listened_to_before_trust(self):
        """It sends WELCOME (and a PING) before anyone trusted it: nothing is
        acted on, nothing is sent, and the queued message stays queued."""
        pins: dict = {}
        h = Harness(TLSSettings(PIN), pins)
        h.session.say("for trusted ears only")
        protocol, transport = h.accept(CertTransport(self.cert))
        self.assertIs(h.session.state, State.TLS_CHECK)
        h.serve(protocol, welcome(), msg(1), codec.ServerPing("t"))
        protocol.handshakeCompleted()
        h.serve(protocol, welcome(), msg(2))
        self.assertEqual(h.events.named("certificate_unknown"), [("127.0.0.1:7777", self.fingerprint)])
        self.assertIs(h.session.state, State.TLS_CHECK)
        self.assertEqual(transport.value(), b"", "no LOGIN, no PONG, no queued message")
        for name in ("welcome_received", "message_received", "send_confirmed"):
            self.assertEqual(h.events.named(name), [], name)
        h.session.trust_certificate(True)
        self.assertEqual(pins, {"127.0.0.1:7777": self.fingerprint})
        self.assertEqual(h.sent(transport), [codec.Login("ann", 2)])
        self.assertIs(h.session.state, State.LOGGING_IN)
        h.serve(protocol, welcome())
        self.assertIs(h.session.state, State.CONNECTED)
        self.assertIn(codec.Say("for trusted ears only", "c1", "general"), h.sent(transport))

    def test_refusing_the_certificate_gives_up(self):
        h = Harness(TLSSettings(PIN))
        protocol, transport = h.accept(CertTransport(self.cert))
        protocol.handshakeCompleted()
        h.session.trust_certificate(False)
        self.assertIs(h.session.state, State.GIVEN_UP)
        self.assertEqual(transport.value(), b"")

    def test_a_changed_certificate_is_refused(self):
        h = Harness(TLSSettings(PIN), {"127.0.0.1:7777": "AA:BB"})
        protocol, transport = h.accept(CertTransport(self.cert))
        protocol.handshakeCompleted()
        self.assertIs(h.session.state, State.GIVEN_UP)
        self.assertIn("CHANGED", h.events.named("error_received")[0][1])
        self.assertEqual(transport.value(), b"")

    def test_a_pinned_certificate_logs_in_at_once(self):
        h = Harness(TLSSettings(PIN), {"127.0.0.1:7777": self.fingerprint})
        protocol, transport = h.accept(CertTransport(self.cert))
        protocol.handshakeCompleted()
        self.assertEqual(h.sent(transport), [codec.Login("ann", 2)])


class ReplacedLinks(SynchronousTestCase):
    def test_packets_from_a_replaced_link_are_ignored(self):
        h = Harness()
        old, _ = h.accept()
        h.serve(old, welcome())
        h.session.connect_to("127.0.0.1", 7778, "ann")  # the user picks another server
        new, _transport = h.accept()
        h.serve(old, msg(7), codec.Bye("kicked"))
        self.assertEqual(h.events.named("message_received"), [])
        self.assertEqual(h.events.named("error_received"), [])
        h.serve(new, welcome())
        self.assertIs(h.session.state, State.CONNECTED)

    def test_a_second_welcome_on_one_link_is_ignored(self):
        h = Harness()
        protocol, _ = h.accept()
        h.serve(protocol, welcome(), welcome(nick="mallory", id=9))
        self.assertEqual(len(h.events.named("welcome_received")), 1)
        self.assertEqual(h.session.nick, "ann")


class Dispatch(SynchronousTestCase):
    def test_every_server_packet_class_has_a_handler(self):
        from qtclient.session_machine import _HANDLERS

        self.assertEqual(set(_HANDLERS), set(codec.SERVER_PACKETS))

    def test_errors_for_a_sent_message_mark_it_failed_and_retry_resends(self):
        h = Harness()
        protocol, transport = h.accept()
        h.serve(protocol, welcome())
        h.sent(transport)
        ref = h.session.say("too fast")
        h.serve(protocol, codec.Error("rate_limited", "slow down", ref))
        self.assertEqual(h.events.named("send_failed"), [(ref, "slow down")])
        h.sent(transport)
        h.session.retry(ref)
        self.assertEqual(h.sent(transport), [codec.Say("too fast", ref, "general")])

    def test_rtt_from_our_ping(self):
        h = Harness()
        protocol, _transport = h.accept()
        h.serve(protocol, welcome())
        h.clock.advance(0.25)
        h.serve(protocol, codec.PongReply("p1"))
        self.assertEqual(h.events.named("rtt_measured"), [(0.25,)])


def big_room(name="big", count=5000, members=(("ann", 1), ("op", 2))) -> codec.RoomState:
    peers = [codec.Peer(id, nick) for nick, id in members]
    return codec.RoomState(name, "", peers, [], count=count, lazy=True)


class BigRooms(SynchronousTestCase):
    """Section 22: the count, MEMBERS pages and FOLLOW, and small rooms as before."""

    def logged_in(self):
        h = Harness()
        protocol, transport = h.accept()
        h.serve(protocol, welcome())
        h.sent(transport)
        return h, protocol, transport

    def test_a_small_rooms_count_is_its_members_then_joined_and_left(self):
        h, protocol, _transport = self.logged_in()
        h.serve(protocol, room(members=(("ann", 1), ("bob", 2))))
        self.assertFalse(h.session.is_lazy("general"))
        h.serve(protocol, codec.Joined(3, "cy", "general"), codec.Left(2, "bob", "quit", room="general"))
        self.assertEqual(h.events.named("count_changed"), [("general", 2), ("general", 3), ("general", 2)])
        self.assertEqual(h.session.count_of("general"), 2)

    def test_a_big_rooms_count_comes_from_room_and_count_not_from_joined(self):
        h, protocol, _transport = self.logged_in()
        h.serve(protocol, big_room())
        self.assertTrue(h.session.is_lazy("big"))
        h.serve(protocol, codec.Joined(9, "followed", "big"), codec.Count("big", 5003))
        h.serve(protocol, codec.Left(9, "followed", "quit", room="big"))
        self.assertEqual(h.events.named("count_changed"), [("big", 5000), ("big", 5003)])
        self.assertEqual(len(h.events.named("peer_joined")), 1, "a followed member's JOINED still shows")

    def test_a_room_that_turns_big_is_told_by_its_first_count(self):
        h, protocol, _transport = self.logged_in()
        h.serve(protocol, room(members=(("ann", 1), ("bob", 2))))
        h.serve(protocol, codec.Joined(3, "cy", "general"), codec.Count("general", 3))
        self.assertTrue(h.session.is_lazy("general"), "docs/protocol.md 22.2")
        self.assertEqual(h.events.named("room_turned_big"), [("general", 3)])
        h.serve(protocol, codec.Joined(4, "dee", "general"))
        self.assertEqual(h.session.count_of("general"), 3, "from now on the count comes in COUNT")

    def test_members_pages_carry_their_ref_and_prefix_and_move_the_count(self):
        h, protocol, transport = self.logged_in()
        h.serve(protocol, big_room())
        h.sent(transport)
        first = h.session.members("big", limit=2)
        completing = h.session.members("BIG", prefix="zo")
        self.assertEqual(
            h.sent(transport),
            [
                codec.MembersRequest("big", None, None, 2, first),
                codec.MembersRequest("big", None, "zo", None, completing),
            ],
        )
        page = codec.Members("big", [codec.Peer(5, "a"), codec.Peer(6, "b")], 5001, "b", first)
        found = codec.Members("big", [codec.Peer(7, "Zoe")], 5001, None, completing)
        h.serve(protocol, found, page)
        self.assertEqual(h.events.named("members_received"), [(completing, found, "zo"), (first, page, None)])
        self.assertEqual(h.session.count_of("big"), 5001)
        h.serve(protocol, page)  # an answer to nothing asked (twice): not reported again
        self.assertEqual(len(h.events.named("members_received")), 2)

    def test_a_refused_members_is_reported_to_its_asker_only(self):
        h, protocol, _transport = self.logged_in()
        h.serve(protocol, big_room())
        ref = h.session.members("big")
        h.serve(protocol, codec.Error("not_a_member", "you are not in big", ref))
        self.assertEqual(
            h.events.named("members_failed"), [(ref, "big", "not_a_member", "you are not in big")]
        )
        self.assertEqual(h.events.named("error_received"), [])

    def test_follow_only_in_a_big_room_and_its_answer_is_a_page(self):
        h, protocol, transport = self.logged_in()
        h.serve(protocol, room(), big_room())
        h.sent(transport)
        self.assertFalse(h.session.follow("general", ["bob"]), "a small room sends every JOINED already")
        self.assertTrue(h.session.follow("big", ["Zoe"]))
        (sent,) = h.sent(transport)
        self.assertEqual(sent, codec.Follow("big", ["Zoe"], sent.ref))
        h.serve(protocol, codec.Members("big", [codec.Peer(7, "Zoe")], 5000, None, sent.ref))
        self.assertEqual(len(h.events.named("members_received")), 1)

    def test_nothing_asked_offline_and_asks_go_with_the_link(self):
        h, protocol, _transport = self.logged_in()
        h.serve(protocol, big_room())
        ref = h.session.members("big")
        h.drop(protocol)
        self.assertIsNone(h.session.members("big"))
        h.clock.advance(1.0)
        protocol, _transport = h.accept()
        h.serve(protocol, welcome(), big_room())
        h.serve(protocol, codec.Members("big", [], 5000, None, ref))  # the old link's answer
        self.assertEqual(h.events.named("members_received"), [])
