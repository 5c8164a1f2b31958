"""The cluster store's scripts against a real server, one Redis and a
Redis Cluster alike: what reaping a dead node and moving a session do
when they meet, and a batch's rooms written in order through the gate of
their joins' booking."""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from chatproto.backends.redis import RedisAddress, RedisClient
from chatproto.backends.redis_cluster import ClusterClient
from chatproto.backends.streams import REAP_ROOMS, TAKE_OVER, InOrder, StreamStore
from chatproto.core import records
from tests.redisserver import RedisServer, ShardedRedis

ID = (1 << 32) + 1  # a session of node 1


class OneRedis(unittest.TestCase):
    timeout = 60
    sharded = False

    @defer.inlineCallbacks
    def setUp(self):
        if self.sharded:
            self.redis = yield ShardedRedis.started(self)
            client = ClusterClient(reactor, RedisAddress.parse(self.redis.url), "test", "{chat}")
        else:
            self.redis = yield RedisServer.started(self)
            client = RedisClient(reactor, RedisAddress.parse(self.redis.url), "test")
        client.start()
        self.addCleanup(client.stop)
        yield client.connected()
        self.store = StreamStore(client, sharded=self.sharded, clock=reactor)

    @defer.inlineCallbacks
    def joined(self):
        """alice (of node 1, now dead: listed, no heartbeat) in room ``side``."""
        store = self.store
        yield store.client.call("SADD", store.key("nodes"), "1")
        self.assertIsNone((yield store.claim("alice", "1")))
        yield store.save_session("alice", {"node": "1", "id": ID, "nick": "alice"})
        entry = records.MemberJoined("side", ID, "alice", "alice", False).entry("1")
        (written,) = yield store.append("1", 1, [("side", "side", [entry])])
        self.assertEqual(written, [0])

    def members(self):
        return self.store.client.call("HKEYS", self.store.stream("side") + ":m")

    @defer.inlineCallbacks
    def test_a_session_that_moved_is_not_reaped_with_its_old_node(self):
        """The take-over's home-slot step done, its member entries not yet
        moved (a reaper may run in between): the reaper leaves it alone."""
        yield self.joined()
        store = self.store
        args = [store.home, "alice", "1", "2", '{"node": "2"}', str(ID)]
        self.assertIsNotNone((yield TAKE_OVER(store.client, [], args)))
        self.assertTrue((yield store.reap("1")))
        self.assertEqual((yield self.members()), [str(ID).encode()], "still a member")
        stream = yield store.client.call("XRANGE", store.stream("side"), "-", "+")
        self.assertEqual([fields[0] for _, fields in stream], [b"j"], "no leave announced")

    @defer.inlineCallbacks
    def test_a_take_over_asked_once_the_reap_began_is_refused(self):
        yield self.joined()
        store = self.store
        yield REAP_ROOMS(store.client, [], [store.home, "1"])
        moved = yield store.take_over("alice", "1", {"node": "2", "id": ID, "nick": "alice"})
        self.assertIsNone(moved, "the reaper goes on: the resume is a new login")
        self.assertTrue((yield store.reap("1")))
        self.assertEqual((yield self.members()), [])
        self.assertIsNone((yield store.session("alice")))

    @defer.inlineCallbacks
    def test_a_take_over_before_the_reap_moves_every_entry(self):
        yield self.joined()
        moved = yield self.store.take_over("alice", "1", {"node": "2", "id": ID, "nick": "alice"})
        self.assertEqual(moved, [("side", "side")])
        self.assertTrue((yield self.store.reap("1")))
        self.assertEqual((yield self.members()), [str(ID).encode()], "its entry names node 2 now")


class Sharded(OneRedis):
    sharded = True


class Order(unittest.SynchronousTestCase):
    """InOrder: a room's scripts go in the order asked; one held by its gate
    holds back the later ones of its room, not other rooms'."""

    def test_a_gate_holds_its_room_back_and_a_failed_gate_fails_what_waited(self):
        sent: list[str] = []

        def script(name):
            def go():
                sent.append(name)
                return defer.succeed(name)

            return go

        order = InOrder()
        gate: defer.Deferred = defer.Deferred()
        a1 = order.send("a", gate, script("a1"))
        a2 = order.send("a", None, script("a2"))
        b1 = order.send("b", None, script("b1"))
        self.assertEqual(sent, ["b1"], "room b is not held by a's gate")
        gate.callback(None)
        self.assertEqual(sent, ["b1", "a1", "a2"])
        self.assertEqual([self.successResultOf(d) for d in (a1, a2, b1)], ["a1", "a2", "b1"])
        refused: defer.Deferred = defer.Deferred()
        c1 = order.send("c", refused, script("c1"))
        c2 = order.send("c", None, script("c2"))
        refused.errback(RuntimeError("home slot down"))
        refused.addErrback(lambda f: None)  # the gate's owner handles its failure
        self.failureResultOf(c1, RuntimeError)
        self.assertEqual(self.successResultOf(c2), "c2", "what came after goes")
        self.assertEqual(sent, ["b1", "a1", "a2", "c2"])
        failed = defer.fail(RuntimeError("refused at once"))
        d1, d2 = order.send("d", failed, script("d1")), order.send("e", failed, script("e1"))
        failed.addErrback(lambda f: None)
        self.failureResultOf(d1, RuntimeError)
        self.failureResultOf(d2, RuntimeError, "a gate failed already fails every room it holds")
        self.assertEqual(sent, ["b1", "a1", "a2", "c2"])


class PartlyRefused(unittest.SynchronousTestCase):
    """A batch over several rooms whose part in one room was refused (its
    answer perhaps lost: its entries may still come back) waits for the
    other rooms' entries only, however late the refused ones come."""

    def test_a_refused_rooms_entries_coming_back_count_no_more(self):
        from chatproto.cluster.node import _Pending

        pending = _Pending(None, 1, [], False)  # type: ignore[arg-type]
        pending.remaining, pending.unread = 3, {"a": 2, "b": 1}
        self.assertFalse(pending.read_back("a"))  # one of a's came back before the refusal was known
        pending.read_back("a", pending.unread["a"])  # a refused: what is left of it never counts
        self.assertFalse(pending.read_back("a"), "a late entry of a's counts no more")
        self.assertEqual(pending.remaining, 1)
        self.assertTrue(pending.read_back("b"))
