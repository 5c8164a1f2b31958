"""Cluster nodes on a Redis primary with two replicas behind three Sentinels
(``--cluster sentinel://...``, ``--cluster-min-replicas 1``), every process
real: the primary killed or frozen under load, a replica killed, a Sentinel
killed. What must hold each time: every acknowledged message is in every
node's history at the seq it was acknowledged with, the seqs have no gap,
every node has the same order, and everything a client was shown is in that
history as shown (no message shown that a failover then took back)."""

from __future__ import annotations

import sys

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from chatproto import codec
from tests.netclient import connect
from tests.redisserver import ReplicatedRedis
from tests.test_integration import LiveTestCase

FAST = {"rate": 1000.0, "burst": 1000}  # the chatters say one message after another


class Chatter:
    """A client saying numbered messages, one at a time, and what it saw:
    its acknowledged messages (text -> seq), its refused ones, and every
    message shown to it (seq -> text)."""

    def __init__(self, client, nick: str) -> None:
        self.client = client
        self.nick = nick
        self.acked: dict[str, int] = {}
        self.refused: set[str] = set()
        self.seen: dict[int, str] = {}
        self.conflicts: list[tuple[int, str, str]] = []
        self.said = 0

    @defer.inlineCallbacks
    def say(self):
        """Say the next message; True once acknowledged, False if refused."""
        self.said += 1
        text = f"{self.nick}{self.said}"
        self.client.send(codec.Say(text, text))
        while True:
            packet = yield self.client.next(timeout=30)  # longer: a stall, not a failover
            if isinstance(packet, codec.MessagePacket):
                self._shown(packet)
                if packet.ref == text:
                    self.acked[text] = packet.seq
                    return True
            elif isinstance(packet, codec.Error) and packet.ref == text:
                self.refused.add(text)
                return False

    def _shown(self, packet: codec.MessagePacket) -> None:
        before = self.seen.setdefault(packet.seq, packet.text)
        if before != packet.text:
            self.conflicts.append((packet.seq, before, packet.text))


class Failover(LiveTestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield ReplicatedRedis.started(self)
        self.nodes = []
        for _ in range(2):
            node = yield self.serve(cluster=self.redis.url, min_replicas=1, **FAST)
            yield node.hub.peers.started
            self.nodes.append(node)
        self.chatters = []
        for nick, node in zip(("alice", "bob"), self.nodes, strict=True):
            client = yield self.client(nick, server=node)
            self.chatters.append(Chatter(client, nick))
        yield self.chatters[0].client.expect(codec.Joined)  # a has read bob's join: both nodes are up

    @defer.inlineCallbacks
    def rounds(self, count: int):
        """Each chatter says ``count`` messages; every one acknowledged."""
        for _ in range(count):
            answers = yield defer.gatherResults([c.say() for c in self.chatters])
            self.assertEqual(answers, [True] * len(self.chatters), "refused with no failure")

    @defer.inlineCallbacks
    def until_acknowledged(self, since: float, wanted: int = 3, within: float = 60.0):
        """Chat through an outage until each chatter has ``wanted``
        acknowledgements more; a refused round waits a little before the
        next, as a person would. Returns the seconds from ``since`` to the
        first acknowledgement."""
        counts = [len(c.acked) for c in self.chatters]
        first = None
        while reactor.seconds() < since + within:
            answers = yield defer.gatherResults([c.say() for c in self.chatters])
            if any(answers) and first is None:
                first = reactor.seconds() - since
            if all(len(c.acked) >= n + wanted for c, n in zip(self.chatters, counts, strict=True)):
                return first
            if not all(answers):
                yield deferLater(reactor, 0.05, lambda: None)
        self.fail(f"no acknowledgement within {within} s; Redis's logs:\n{self.redis.story()}")

    @defer.inlineCallbacks
    def histories(self):
        """Each node's whole history, as a new client of it reads it."""
        pages = []
        for node in self.nodes:
            reader = yield connect(reactor, node.port, version=1)
            self.clients.append(reader)
            yield reader.login(f"reader{len(pages)}")
            reader.send(codec.HistoryRequest(after=0, limit=500))
            page = yield reader.expect(codec.HistoryPage)
            pages.append([(m.seq, m.text) for m in page.messages])
        return pages

    @defer.inlineCallbacks
    def check(self):
        """The invariants of the module's docstring."""
        pages = yield self.histories()
        history = pages[0]
        self.assertEqual(pages[1], history, "one order on every node")
        self.assertEqual([seq for seq, _ in history], list(range(1, len(history) + 1)), "no gap, no repeat")
        kept = dict(history)
        for chatter in self.chatters:
            self.assertEqual(chatter.conflicts, [], "a seq shown with two texts")
            for text, seq in chatter.acked.items():
                self.assertEqual(kept.get(seq), text, f"acknowledged {text!r} at {seq}, not kept there")
            for seq, text in chatter.seen.items():
                self.assertEqual(kept.get(seq), text, f"shown {text!r} at {seq}, not kept there")
        return history

    @staticmethod
    def report(what: str, seconds: float) -> None:
        print(f"\n{what}: first acknowledged message {seconds:.2f} s after", file=sys.stderr)

    @defer.inlineCallbacks
    def test_the_primary_killed_under_load(self):
        yield self.rounds(10)
        old = yield self.redis.primary()
        killed = reactor.seconds()
        yield self.redis.kill(old)
        took = yield self.until_acknowledged(killed)
        self.report("primary SIGKILLed", took)
        self.assertNotEqual((yield self.redis.primary()), old, "Sentinel promoted a replica")
        yield self.rounds(5)
        yield self.check()

    @defer.inlineCallbacks
    def test_the_primary_frozen_past_the_failover_then_thawed(self):
        """SIGSTOP past the failover, then SIGCONT: the old primary must not
        take writes that are then lost (it has no replica, so it refuses
        them, and nothing unconfirmed is shown), and it rejoins as a replica."""
        yield self.rounds(10)
        old = yield self.redis.primary()
        stopped = reactor.seconds()
        self.redis.signal(old, "STOP")
        took = yield self.until_acknowledged(stopped)
        self.report("primary SIGSTOPped", took)
        new = yield self.redis.primary()
        self.assertNotEqual(new, old)
        self.redis.signal(old, "CONT")
        yield self.rounds(5)
        yield self.redis.settled()  # the old primary is a replica of the new one now
        info = yield self.redis.ask(old, "INFO", "replication")
        self.assertIn(b"role:slave", info)
        yield self.rounds(5)
        yield self.check()

    @defer.inlineCallbacks
    def test_a_replica_killed_is_not_noticed(self):
        yield self.rounds(5)
        primary = yield self.redis.primary()
        replica = next(port for port in self.redis.ports if port != primary)
        yield self.redis.kill(replica)
        yield self.rounds(10)  # one replica still confirms: nothing refused
        yield self.check()

    @defer.inlineCallbacks
    def test_a_sentinel_killed_then_the_primary(self):
        """Two sentinels of three are still a majority: they fail over."""
        yield self.rounds(5)
        yield self.redis.kill(self.redis.sentinel_ports[0])
        yield self.rounds(5)
        old = yield self.redis.primary()
        killed = reactor.seconds()
        yield self.redis.kill(old)
        took = yield self.until_acknowledged(killed)
        self.report("primary SIGKILLed, one sentinel down", took)
        yield self.rounds(5)
        yield self.check()
