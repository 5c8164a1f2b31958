"""Each connection's fair share, on StringTransport and task.Clock."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.codec import ErrorCode
from chatproto.core.budget import CUT, REFUSAL, Budget, cost
from chatproto.limits import Limits
from tests.harness import Server


def pings(n: int, start: int = 0) -> bytes:
    return b"".join(codec.encode_frame(codec.Ping(f"t{i}")) for i in range(start, start + n))


def next_turn(server, peer) -> None:
    """Run the one call that resumes ``peer``, as the reactor's next turn
    would (task.Clock.advance(0) would also run what that call schedules)."""
    (call,) = [c for c in server.clock.getDelayedCalls() if c.func == peer.connection._unthrottle]
    assert call.getTime() == server.clock.seconds(), "due now: no delay, only a turn"
    server.clock.calls.remove(call)
    call.called = True  # as task.Clock marks the calls it runs
    call.func()


def paused(peer) -> bool:
    return peer.transport.producerState == "paused"


class Costs(SynchronousTestCase):
    def test_every_packet_costs_one_and_history_by_its_rows(self):
        for packet in (
            codec.Login("ann", 1),
            codec.Say("hi"),
            codec.Whisper("bob", "hi"),
            codec.Ping(),
            codec.Pong(),
            codec.Quit(),
        ):
            self.assertEqual(cost(packet, 200), 1, packet)
        self.assertEqual(cost(codec.HistoryRequest(limit=200), 200), 21)
        self.assertEqual(cost(codec.HistoryRequest(), 200), 6, "the default page is 50 rows")
        self.assertEqual(cost(codec.HistoryRequest(limit=10**6), 200), 21, "clamped like the page itself")
        self.assertEqual(cost(codec.HistoryRequest(limit=0), 200), 1.1)
        self.assertEqual(REFUSAL, 1)

    def test_the_budget_goes_into_debt_and_says_how_long(self):
        budget = Budget(rate=10, burst=2, now=0.0)
        self.assertEqual(budget.spend(1, 0.0), 0)
        self.assertEqual(budget.spend(1, 0.0), 0)
        self.assertAlmostEqual(budget.spend(3, 0.0), 0.3)
        self.assertAlmostEqual(budget.flooding_for(1.0), 1.0)
        self.assertEqual(budget.spend(1, 5.0), 0, "paid back and refilled to the burst")
        budget.caught_up()
        self.assertEqual(budget.flooding_for(9.0), 0)

    def test_settle_tells_every_transport_what_to_do(self):
        limits = Limits(packet_rate=10, packet_burst=2, packets_per_turn=3, flood_cut=5)
        budget = Budget(limits.packet_rate, limits.packet_burst, now=0.0)
        self.assertIsNone(budget.settle(1, 0.0, 1, True, limits), "within budget: go on")
        self.assertEqual(budget.settle(0, 0.0, 3, True, limits), 0.0, "the turn's share: until the next turn")
        now = 0.0
        for _ in range(100):  # bounded: a pipelining flooder let back in as soon as it may
            delay = budget.settle(2, now, 1, True, limits)
            if delay == CUT:
                break
            self.assertGreater(delay, 0)
            now += delay
        self.assertEqual(delay, CUT)
        self.assertGreaterEqual(now, limits.flood_cut, "cut only after flood_cut seconds")

    def test_settle_never_cuts_a_sender_that_waits_or_pauses(self):
        limits = Limits(packet_rate=10, packet_burst=2, flood_cut=5)
        budget = Budget(limits.packet_rate, limits.packet_burst, now=0.0)
        now = 0.0
        for _ in range(100):  # one request at a time: nothing waiting behind it
            now += budget.settle(21, now, 1, False, limits)
        self.assertGreater(now, 100, "slowed down a lot, never cut")
        flooder = Budget(limits.packet_rate, limits.packet_burst, now=0.0)
        self.assertGreater(flooder.settle(3, 0.0, 1, True, limits), 0)
        self.assertIsNone(flooder.settle(1, 4.9, 1, True, limits), "back within budget")
        self.assertGreater(flooder.settle(3, 5.0, 1, True, limits), 0, "a new flood starts from zero")


class Pacing(SynchronousTestCase):
    def test_within_the_budget_nothing_changes(self):
        server = Server(packet_rate=100, packet_burst=100)
        (ann,) = server.logged_in("ann")
        ann.protocol.dataReceived(pings(20))
        self.assertEqual(len(ann.received(flush=False)), 20)
        self.assertFalse(paused(ann))

    def test_past_the_budget_reading_pauses_until_it_is_paid_back(self):
        server = Server(packet_rate=10, packet_burst=10)
        (ann,) = server.logged_in("ann")  # the LOGIN cost one unit
        server.clock.advance(1)  # refilled
        ann.protocol.dataReceived(pings(15))
        self.assertEqual(len(ann.received(flush=False)), 11, "the burst, and one into debt")
        self.assertTrue(paused(ann), "TCP pushes back on the sender")
        server.clock.advance(0.1)
        self.assertEqual([p.token for p in ann.received(flush=False)], ["t11"])
        server.clock.advance(0.3)
        self.assertEqual([p.token for p in ann.received(flush=False)], ["t12", "t13", "t14"])
        server.clock.advance(0.1)
        self.assertFalse(paused(ann), "reading again once the buffer is handled and the debt paid")
        ann.protocol.dataReceived(pings(1, 99))
        self.assertEqual([p.token for p in ann.received(flush=False)], ["t99"], "answers in order, none lost")

    def test_history_costs_by_rows_and_refused_packets_cost_more(self):
        server = Server(packet_rate=10, packet_burst=30)
        (ann,) = server.logged_in("ann")
        server.clock.advance(1)
        ann.send(codec.HistoryRequest(limit=200))  # 21 units: 9 left
        self.assertFalse(paused(ann))
        ann.send_payload(b"\x02{}")  # refused: 1 + 1 units, 7 left
        ann.send_payload(b"\x02{}")
        ann.send_payload(b"\x02{}")
        ann.send_payload(b"\x02{}")  # 1 left
        self.assertFalse(paused(ann))
        ann.send_payload(b"\x02{}")  # -1: into debt
        self.assertTrue(paused(ann))
        self.assertEqual(
            [type(p) for p in ann.received(flush=False)], [codec.HistoryPage] + [codec.Error] * 5
        )

    def test_a_turn_handles_a_bounded_number_of_packets(self):
        server = Server(packets_per_turn=5, packet_rate=1000, packet_burst=1000)
        (ann,) = server.logged_in("ann")
        ann.protocol.dataReceived(pings(12))
        self.assertEqual(len(ann.received(flush=False)), 5)
        self.assertTrue(paused(ann))
        next_turn(server, ann)
        self.assertEqual(len(ann.received(flush=False)), 5)
        next_turn(server, ann)
        self.assertEqual([p.token for p in ann.received(flush=False)], ["t10", "t11"])
        self.assertFalse(paused(ann))

    def test_pending_connections_are_paced_too(self):
        server = Server(packet_rate=10, packet_burst=5)
        peer = server.peer()
        peer.protocol.dataReceived(pings(8))
        self.assertEqual(len(peer.received(flush=False)), 6)
        self.assertTrue(paused(peer))

    def test_a_paused_connection_that_drops_leaves_no_timer(self):
        server = Server(packet_rate=10, packet_burst=1)
        (ann,) = server.logged_in("ann")
        ann.protocol.dataReceived(pings(5))
        self.assertTrue(paused(ann))
        self.assertEqual(len(ann.received(flush=False)), 1)
        ann.drop()
        self.assertIsNone(ann.connection._throttle)
        server.clock.advance(10)
        self.assertEqual(ann.received(flush=False), [], "nothing handled after the connection is gone")

    def test_a_throttled_connection_that_is_closed_is_read_again(self):
        """Its FIN (or TLS close) must be seen, not left unread for the grace period."""
        server = Server(packet_rate=10, packet_burst=1)
        (ann,) = server.logged_in("ann")
        ann.protocol.dataReceived(pings(5))
        self.assertTrue(paused(ann))
        server.hub.kick(ann.connection.id)
        self.assertFalse(paused(ann))
        self.assertIsNone(ann.connection._throttle)
        self.assertEqual(ann.received(flush=False)[-1], codec.Bye("kicked"), "nothing handled after BYE")


class SmallFramesBeforeLogin(SynchronousTestCase):
    def test_a_pending_connection_may_not_send_a_large_frame(self):
        server = Server(pending_frame=4096, max_frame=65536)
        peer = server.peer()
        peer.protocol.dataReceived(b"\x00\x00\x10\x01")  # announces 4097 bytes
        error = peer.error()
        self.assertEqual(error.code, ErrorCode.FRAME_TOO_LARGE)
        self.assertIn("4096", error.message)
        self.assertTrue(peer.closing)

    def test_once_logged_in_max_frame_applies(self):
        server = Server(pending_frame=4096, max_frame=65536, max_text=8000)
        (ann,) = server.logged_in("ann")
        ann.say("x" * 6000, "big")
        self.assertEqual(ann.only(codec.MessagePacket).ref, "big")


class FloodCut(SynchronousTestCase):
    def test_a_flooder_that_never_slows_down_is_cut(self):
        server = Server(packet_rate=10, packet_burst=10, flood_cut=5, idle_timeout=600, ping_interval=300)
        flooder, bob = server.logged_in("flooder", "bob")
        flooder.protocol.dataReceived(pings(1000))
        for _ in range(60):  # bounded: 6 s of the clock
            server.clock.advance(0.1)
        self.assertIn(codec.Bye("kicked"), flooder.received())
        self.assertTrue(flooder.closing)
        left = bob.only(codec.Left)
        self.assertEqual((left.nick, left.reason), ("flooder", "kicked"))

    def test_one_request_at_a_time_is_slowed_never_cut(self):
        """A client that waits for each answer (a long catch-up) stays past its
        budget for longer than flood_cut, and is only slowed down."""
        server = Server(packet_rate=10, packet_burst=10, flood_cut=2, idle_timeout=600, ping_interval=300)
        (ann,) = server.logged_in("ann")
        answered = 0
        for _ in range(600):  # bounded: 60 s of the clock
            if not paused(ann):
                ann.send(codec.HistoryRequest(limit=200))
            server.clock.advance(0.1)
            answered += sum(isinstance(p, codec.HistoryPage) for p in ann.received(flush=False))
        self.assertFalse(ann.closing)
        self.assertEqual(answered, 29, "one 21-unit page every 2.1 s, after the first")


class CoalescedPresence(SynchronousTestCase):
    """With many sessions logged in, presence alone waits a moment for more
    (a login storm writes to everyone once per interval); chat never waits."""

    def setUp(self):
        from chatproto.core import broadcast

        self.patch(broadcast, "COALESCE_AT", 3)
        self.patch(broadcast, "PRESENCE_DELAY", 0.01)
        self.delay = broadcast.PRESENCE_MAX

    def test_presence_waits_and_chat_takes_it_along_in_order(self):
        server = Server()
        alice, bob, carol = server.logged_in("alice", "bob", "carol")
        dave = server.peer()
        dave.login("dave")
        self.assertEqual(alice.received(), [], "JOINED waits while presence alone is pending")
        server.clock.advance(self.delay)
        self.assertEqual([type(p) for p in alice.received()], [codec.Pending, codec.Joined])
        bob.received(), carol.received()
        erin = server.peer()
        erin.login("erin")
        bob.say("hello")
        server.flush()
        packets = bob.received()
        self.assertEqual([type(p) for p in packets], [codec.Pending, codec.Joined, codec.MessagePacket])
        self.assertEqual(packets[1].nick, "erin", "the pending presence goes first, in order")
        self.assertEqual([type(p) for p in carol.received()][-1], codec.MessagePacket)

    def test_the_wait_grows_with_the_sessions_up_to_a_limit(self):
        from chatproto.core import broadcast

        server = Server()
        alice = server.logged_in("alice", "bob", "carol", "dave", "erin", "frank")[0]
        alice.received()
        server.peer().login("gina")
        server.clock.advance(0.05)
        self.assertEqual(alice.received(), [], "6 sessions, 10 ms each")
        server.clock.advance(0.02)
        self.assertEqual([type(p) for p in alice.received()], [codec.Pending, codec.Joined])
        self.patch(broadcast, "PRESENCE_DELAY", 1.0)
        server.peer().login("hank")
        server.clock.advance(broadcast.PRESENCE_MAX)
        self.assertEqual([p.nick for p in alice.received()[1:]], ["hank"], "never longer than PRESENCE_MAX")

    def test_a_joiner_gets_only_what_follows_its_welcome(self):
        server = Server()
        server.logged_in("alice", "bob", "carol")
        dave, erin = server.peer(), server.peer()
        dave.login("dave")
        welcome = erin.login("erin")
        self.assertIn("dave", [p.nick for p in welcome.peers])
        erin.received()
        server.clock.advance(self.delay)
        self.assertEqual(erin.received(), [], "dave's JOINED is in erin's WELCOME already")
