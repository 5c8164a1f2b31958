"""Abusive peers on real sockets: the room keeps serving everyone else."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall, deferLater

from chatproto import codec
from chatproto.transports.outbox import Outbox
from tests.test_integration import LiveTestCase
from tests.waiting import until


def gather(deferreds, timeout: float = 20.0) -> defer.Deferred:
    return defer.gatherResults(list(deferreds)).addTimeout(timeout, reactor)


class SlowLoris(LiveTestCase):
    @defer.inlineCallbacks
    def test_pending_connections_are_closed_after_login_timeout(self):
        yield self.serve(login_timeout=1.0)
        lurkers = []
        for _ in range(200):
            lurkers.append((yield self.client()))  # connect, never log in
        ann = yield self.client("ann")  # others still log in and chat meanwhile
        ann.send(codec.Say("still here", "r"))
        self.assertEqual((yield ann.expect(codec.MessagePacket)).ref, "r")
        yield gather(lurker.lost for lurker in lurkers)
        byes = [p for lurker in lurkers for p in lurker.inbox.pending if isinstance(p, codec.Bye)]
        self.assertEqual(len(byes), 200)
        self.assertEqual({bye.reason for bye in byes}, {"login_timeout"})
        self.assertEqual(self.hub.pending, [])
        self.assertFalse(any(isinstance(p, codec.MessagePacket) for x in lurkers for p in x.inbox.pending))


class ConnectionFlood(LiveTestCase):
    @defer.inlineCallbacks
    def test_beyond_max_clients_is_refused_and_sessions_keep_chatting(self):
        yield self.serve(max_clients=50)
        ann = yield self.client("ann")
        bob = yield self.client("bob")
        flood = []
        for i in range(100):
            flood.append((yield self.client()))
            if i % 10 == 0:  # chat goes on during the flood
                ann.send(codec.Say(f"during {i}"))
                yield bob.expect(codec.MessagePacket)
        # However slow the machine: wait until each flood connection is either
        # closed (refused) or pending in the room.
        yield until(lambda: sum(c.lost.called for c in flood) + len(self.hub.pending) == len(flood), 20)
        refused = [c for c in flood if c.lost.called]
        for client in refused:
            self.assertEqual(client.inbox.pending, [codec.Bye("server_full")])
        self.assertEqual(len(refused), 52)
        self.assertEqual(len(self.hub.pending), 48)
        bob_id = next(p.id for p in ann.inbox.pending if isinstance(p, codec.Joined))
        pending_ids = {p.id for p in ann.inbox.pending if isinstance(p, codec.Pending)} - {bob_id}
        self.assertEqual(len(pending_ids), 48, "refused connections are never announced")
        ann.send(codec.Say("after"))
        self.assertEqual((yield bob.expect(codec.MessagePacket)).text, "after")


class Flooder(LiveTestCase):
    @defer.inlineCallbacks
    def test_ten_times_the_rate_gets_rate_limited_and_others_are_served(self):
        yield self.serve(rate=20, burst=40)
        flooder = yield self.client("flooder")
        ann = yield self.client("ann")
        bob = yield self.client("bob")
        started = reactor.seconds()
        sent = 0
        for _tick in range(10):  # 200 messages a second for half a second
            for _ in range(20):
                flooder.send(codec.Say("spam", f"s{sent}"))
                sent += 1
            ann.send(codec.Say("normal", "n"))
            mine = yield ann.expect(codec.MessagePacket)
            while mine.ref != "n":
                mine = yield ann.expect(codec.MessagePacket)
            yield deferLater(reactor, 0.05, lambda: None)
        flooder.send(codec.Ping("end"))
        answers = [(yield flooder.next())]
        while not isinstance(answers[-1], codec.PongReply):
            answers.append((yield flooder.next()))
        # Until the last one was handled: past its budget, the flooder's
        # packets are handled later, as the rate's tokens come back.
        elapsed = reactor.seconds() - started
        limited = [p for p in answers if isinstance(p, codec.Error)]
        accepted = [p for p in answers if isinstance(p, codec.MessagePacket) and p.ref]
        self.assertEqual({e.code for e in limited}, {"rate_limited"})
        self.assertEqual(len(limited) + len(accepted), sent, "every packet is answered: nothing silent")
        self.assertLessEqual(len(accepted), 40 + 20 * elapsed + 1)
        self.assertGreaterEqual(len(accepted), 40)
        self.assertEqual({e.ref for e in limited} | {m.ref for m in accepted}, {f"s{i}" for i in range(sent)})
        normals = [p for p in bob.inbox.pending if isinstance(p, codec.MessagePacket) and p.text == "normal"]
        self.assertEqual(len(normals), 10, "the bystanders lost nothing")


class ManySlowConsumers(LiveTestCase):
    @defer.inlineCallbacks
    def test_each_is_cut_memory_stays_bounded_fast_clients_lose_nothing(self):
        sendq = 64 * 1024
        peak = [0]
        write = Outbox.write

        def watching(outbox, data):
            # What the outbox holds once this write is queued, before any cut.
            if outbox._paused and not outbox.closed:
                peak[0] = max(peak[0], outbox.backlog + len(data))
            write(outbox, data)

        # Broadcasts come through deliver, the same function as write.
        self.patch(Outbox, "write", watching)
        self.patch(Outbox, "deliver", watching)
        yield self.serve(sendq=sendq, rate=100000, burst=100000)
        talker = yield self.client("talker")
        fast, slow = [], []
        for i in range(2):
            fast.append((yield self.client(f"fast{i}")))
        for i in range(3):
            slow.append((yield self.client(f"slow{i}")))
        for client in slow:
            client.transport.pauseProducing()
        cut: set[str] = set()
        sent = 0
        text = "y" * 2000
        while len(cut) < 3 and sent < 20000:  # bounded: 40 MB per reader at most
            for i in range(100):
                talker.send(codec.Say(text, "b" if i == 99 else None))
            sent += 100
            while (yield talker.expect(codec.MessagePacket)).ref is None:
                pass
            cut |= {p.nick for p in fast[0].inbox.pending if isinstance(p, codec.Left)}
        self.assertEqual(cut, {"slow0", "slow1", "slow2"})
        self.assertGreater(peak[0], sendq // 2, "the slow readers' queues were watched filling")
        self.assertLessEqual(peak[0], sendq + len(text) * 110, "queued bytes never outgrow sendq")
        talker.send(codec.Say("last"))
        for client in fast:
            seqs = []
            while True:
                packet = yield client.expect(codec.MessagePacket)
                seqs.append(packet.seq)
                if packet.text == "last":
                    break
            self.assertEqual(seqs, list(range(1, sent + 2)), "in order, nothing lost")
        for client in slow:
            client.transport.resumeProducing()
        yield gather(c.lost for c in slow)


class HalfOpen(LiveTestCase):
    @defer.inlineCallbacks
    def test_a_peer_that_vanishes_is_reaped_by_the_idle_timeout(self):
        yield self.serve(ping_interval=0.3, idle_timeout=0.9)
        ann = yield self.client("ann")
        ghost = yield self.client("ghost")
        # The peer vanishes without a FIN: it neither reads nor writes again.
        ghost.transport.pauseProducing()
        # ann keeps talking (any packet counts as life); the ghost says nothing.
        talking = LoopingCall(lambda: ann.send(codec.Ping()))
        talking.start(0.1)
        left = yield ann.expect(codec.Left)
        talking.stop()
        self.assertEqual((left.nick, left.reason), ("ghost", "timeout"))
        self.assertEqual([s.nick for s in self.hub.sessions], ["ann"])
        ghost.transport.resumeProducing()
        yield ghost.lost


class Floods(LiveTestCase):
    """One client pipelines far past its budget: it gets at most its budget's
    worth of answers, and the others get everything, in order. Counts are
    checked against the time that passed, never times themselves."""

    RATE = BURST = 50  # budget units a second, and at once

    @defer.inlineCallbacks
    def flood(self, packet: bytes, answer, units: float):
        yield self.serve(packet_rate=self.RATE, packet_burst=self.BURST)
        flooder = yield self.client("flooder")
        bystander = yield self.client("bystander")
        watcher = yield self.client("watcher")
        started = reactor.seconds()
        flooder.transport.write(packet * 2000)
        for i in range(10):  # one after another, each acknowledged
            bystander.send(codec.Say(f"b{i}", f"r{i}"))
            while (yield bystander.expect(codec.MessagePacket)).ref != f"r{i}":
                pass
        seen = []
        while not seen or seen[-1].text != "b9":
            seen.append((yield watcher.expect(codec.MessagePacket)))
        elapsed = reactor.seconds() - started
        answers = sum(
            isinstance(p, answer) and getattr(p, "sender", "flooder") == "flooder"
            for p in flooder.inbox.pending
        )
        budget = self.BURST + self.RATE * elapsed
        self.assertLessEqual(answers, budget / units + 1, f"{answers} answers in {elapsed:.2f} s")
        self.assertGreater(answers, 0, "slowed down, still served")
        self.assertEqual([p.seq for p in seen], list(range(seen[0].seq, seen[0].seq + len(seen))), "in order")
        self.assertEqual([p.text for p in seen if p.sender == "bystander"], [f"b{i}" for i in range(10)])
        self.assertFalse(flooder.lost.called, "slowed, not cut, this soon")

    def test_ping(self):
        return self.flood(codec.encode_frame(codec.Ping("f")), codec.PongReply, 1)

    def test_history(self):
        return self.flood(codec.encode_frame(codec.HistoryRequest(limit=200)), codec.HistoryPage, 21)

    def test_bad_packets(self):
        return self.flood(codec.frame(b'\x02{"text":5}'), codec.Error, 1 + 1)

    def test_say_past_the_rate(self):
        # Accepted ones cost 1, rate_limited ones 2: count both against 1.
        return self.flood(codec.encode_frame(codec.Say("spam")), (codec.Error, codec.MessagePacket), 1)
