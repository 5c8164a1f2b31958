"""The RESP client: its parsing and deadlines driven by hand, and the
client against a real Valkey server."""

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from chatproto.backends.redis import (
    Incomplete,
    RedisAddress,
    RedisClient,
    RedisError,
    RedisProtocol,
    RedisUnavailable,
    Script,
    parse_reply,
)
from chatproto.backends.redis_cluster import ClusterClient, command_key, crc16, key_slot
from chatproto.backends.replicas import NotReplicated, Replicas
from tests.redisserver import RedisServer, ShardedRedis


class Parsing(unittest.SynchronousTestCase):
    def test_every_reply_kind(self):
        data = b"*5\r\n$3\r\nabc\r\n:42\r\n+OK\r\n$-1\r\n*1\r\n$0\r\n\r\n"
        value, end = parse_reply(data)
        self.assertEqual(value, [b"abc", 42, b"OK", None, [b""]])
        self.assertEqual(end, len(data))

    def test_an_error_is_a_value(self):
        value, _ = parse_reply(b"-ERR wrong\r\n")
        self.assertIsInstance(value, RedisError)

    def test_both_readers_agree_on_replies_split_anywhere(self):
        from chatproto.backends.redis import _reader, _Replies

        data = b"*3\r\n$5\r\nhello\r\n:7\r\n*1\r\n-ERR no\r\n+OK\r\n"
        for make in (_Replies, _reader):
            for cut in range(len(data) + 1):
                reader = make()
                reader.feed(data[:cut])
                got = []
                while (value := reader.gets()) is not False:
                    got.append(value)
                reader.feed(data[cut:])
                while (value := reader.gets()) is not False:
                    got.append(value)
                self.assertEqual(len(got), 2)
                self.assertEqual(got[0][:2], [b"hello", 7])
                self.assertIsInstance(got[0][2][0], RedisError)
                self.assertEqual(got[1], b"OK")

    def test_a_reply_split_anywhere_waits_for_the_rest(self):
        data = b"*2\r\n$5\r\nhello\r\n:7\r\n"
        for cut in range(1, len(data)):
            with self.assertRaises(Incomplete):
                parse_reply(data[:cut])

    def test_urls(self):
        a = RedisAddress.parse("rediss://user:p%40ss@example.org:6380/2")
        self.assertEqual(
            (a.host, a.port, a.db, a.username, a.password, a.tls),
            ("example.org", 6380, 2, "user", "p@ss", True),
        )
        self.assertEqual(RedisAddress.parse("redis://:secret@h").password, "secret")
        self.assertNotIn("secret", str(RedisAddress.parse("redis://:secret@h")))
        for bad in ("http://h", "redis://", "redis://h/x", "redis://h:99999"):
            with self.assertRaises(ValueError):
                RedisAddress.parse(bad)

    def test_sentinel_urls(self):
        a = RedisAddress.parse("sentinel://:s%40cret@h1,h2:26380,[::1]:5/my%20chat/3")
        self.assertEqual(a.sentinels, (("h1", 26379), ("h2", 26380), ("::1", 5)))
        self.assertEqual((a.primary, a.db, a.username, a.password), ("my chat", 3, None, "s@cret"))
        self.assertEqual(str(a), "sentinel://h1:26379,h2:26380,[::1]:5/my chat/3")
        self.assertEqual(RedisAddress.parse("sentinel://u:p@h/chat").username, "u")
        for bad in (
            "sentinel://h1,h2",
            "sentinel:///chat",
            "sentinel://h:0/chat",
            "sentinel://h/chat/x",
            "sentinel://::1/chat",  # IPv6 unbracketed
            "sentinel://[::1/chat",
            "sentinel://[::1]x/chat",
            "sentinel://h:²/chat",
        ):
            with self.assertRaises(ValueError):
                RedisAddress.parse(bad)

    def test_cluster_urls(self):
        a = RedisAddress.parse("redis-cluster://:p%40ss@h1:7000,h2,[::1]:7002")
        self.assertEqual(a.seeds, (("h1", 7000), ("h2", 6379), ("::1", 7002)))
        self.assertEqual((a.host, a.port, a.password, a.db), ("h1", 7000, "p@ss", 0))
        self.assertEqual(str(a), "redis-cluster://h1:7000,h2:6379,[::1]:7002")
        self.assertNotIn("p@ss", str(a))
        for bad in ("redis-cluster://", "redis-cluster://h/1", "redis-cluster://h:0", "redis-cluster://::1"):
            with self.assertRaises(ValueError):
                RedisAddress.parse(bad)


class Slots(unittest.SynchronousTestCase):
    """Keys hash to slots as the servers say (``CLUSTER KEYSLOT``), and
    each command is routed by its key."""

    def test_slots_of_keys_and_hash_tags(self):
        self.assertEqual(key_slot("123456789"), 12739)  # the specification's example
        self.assertEqual(key_slot("{chat}:x"), 14028)
        self.assertEqual((key_slot("chat:r:{a}"), key_slot("chat:r:{b}")), (15495, 3300))
        self.assertEqual(key_slot("chat:r:{a}:seq"), key_slot("chat:r:{a}"))
        self.assertEqual(key_slot("{user1000}.following"), key_slot("{user1000}.followers"))
        self.assertEqual(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384, "an empty tag is no tag")
        self.assertEqual(key_slot("foo{{bar}}zap"), key_slot("{bar"))
        self.assertEqual(key_slot("foo{bar}{zap}"), key_slot("bar"))

    def test_the_key_each_command_is_routed_by(self):
        self.assertEqual(command_key(("EVALSHA", "abc", 2, "k1", "k2", "arg")), "k1")
        self.assertIsNone(command_key(("EVALSHA", "abc", 0, "arg")), "no key: the home slot")
        self.assertEqual(command_key(("XREAD", "COUNT", 5, "STREAMS", "s", "0-0")), "s")
        self.assertEqual(command_key(("SPUBLISH", "chan", "x")), "chan")
        self.assertEqual(command_key(("GET", "k")), "k")
        for keyless in (("PING",), ("WAIT", 1, 100), ("PUBLISH", "c", "m"), ("CLUSTER", "SLOTS")):
            self.assertIsNone(command_key(keyless))


class _Lost:
    """The factory a protocol driven by hand reports to."""

    def prepare(self, proto):
        return defer.succeed(proto)

    def lost(self, proto):
        pass


class Deadlines(unittest.SynchronousTestCase):
    """A command unanswered past its allowance drops the connection (a
    frozen server), a blocking command's allowance counts its block, and a
    replica's READONLY answer drops it at once."""

    def setUp(self):
        self.clock = Clock()
        self.proto = RedisProtocol(self.clock, timeout=3.0)
        self.proto.factory = _Lost()
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def lose(self):
        self.proto.connectionLost(None)

    def test_an_unanswered_command_aborts_the_connection(self):
        d = self.proto.execute("PING")
        self.clock.advance(2.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.lose()
        self.failureResultOf(d, RedisUnavailable)

    def test_answers_in_time_keep_it(self):
        first = self.proto.execute("PING")
        self.clock.advance(2)
        second = self.proto.execute("PING")
        self.proto.dataReceived(b"+PONG\r\n")
        self.assertEqual(self.successResultOf(first), b"PONG")
        self.clock.advance(2)  # 4 s after the first, 2 after the second
        self.assertFalse(self.transport.disconnecting)
        self.proto.dataReceived(b"+PONG\r\n")
        self.successResultOf(second)
        self.clock.advance(60)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_blocking_read_may_take_its_block(self):
        self.proto.execute("XREAD", "BLOCK", 2000, "STREAMS", "s", "0")
        self.proto.execute("WAIT", 1, 1000)
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)

    def test_readonly_drops_the_connection(self):
        d = self.proto.execute("SET", "k", "v")
        self.proto.dataReceived(b"-READONLY You can't write against a read only replica.\r\n")
        self.failureResultOf(d, RedisError)
        self.assertTrue(self.transport.disconnecting)

    def test_noreplicas_drops_the_connection(self):
        """A primary cut off from its replicas (min-replicas-to-write): the
        next connection asks Sentinel again."""
        d = self.proto.execute("SET", "k", "v")
        self.proto.dataReceived(b"-NOREPLICAS Not enough good replicas to write.\r\n")
        self.failureResultOf(d, RedisError)
        self.assertTrue(self.transport.disconnecting)

    def test_a_subscribers_message_may_come_before_its_pong(self):
        pushed = []
        self.proto.on_push = pushed.append
        d = self.proto.execute("PING")
        self.proto.dataReceived(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n")
        self.assertNoResult(d)
        self.proto.dataReceived(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        self.assertEqual(pushed, [[b"message", b"ch", b"hi"]])
        self.assertEqual(self.successResultOf(d), [b"pong", b""])

    def test_other_errors_keep_it(self):
        d = self.proto.execute("INCR", "k")
        self.proto.dataReceived(b"-ERR value is not an integer or out of range\r\n")
        self.failureResultOf(d, RedisError)
        self.assertFalse(self.transport.disconnecting)


class Stopping(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_stop_while_the_connection_is_prepared(self):
        """A server that takes the connection and never answers AUTH, ROLE
        or SETNAME: the client stops cleanly (its cancelled preparation
        fails, as ClientService expects; it used to raise NoTransition)."""
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.protocol import Factory, Protocol

        accepted = defer.Deferred()

        class Silent(Protocol):
            def dataReceived(self, data):  # the client's first commands: it is preparing
                if not accepted.called:
                    accepted.callback(None)

        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Silent))
        self.addCleanup(port.stopListening)
        client = RedisClient(
            reactor, RedisAddress.parse(f"redis://127.0.0.1:{port.getHost().port}"), "t", timeout=30
        )
        client.start()
        yield accepted
        yield client.stop()
        self.assertFalse(client.up)

    def test_a_wait_for_the_connection_given_up_on_is_not_kept(self):
        client = RedisClient(Clock(), RedisAddress.parse("redis://127.0.0.1:1"), "t")
        kept, dropped = client.connected(), client.connected()
        dropped.cancel()
        self.failureResultOf(dropped, defer.CancelledError)
        self.assertEqual(client._waiting, [kept])


class AgainstValkey(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.server = yield RedisServer.started(self)
        self.client = RedisClient(reactor, RedisAddress.parse(self.server.url), "test")
        self.client.start()
        self.addCleanup(self.client.stop)
        yield self.client.connected()

    @defer.inlineCallbacks
    def test_pipelined_commands_answer_in_order(self):
        answers = yield defer.gatherResults([self.client.call("INCR", "n") for _ in range(100)])
        self.assertEqual(answers, list(range(1, 101)))
        value = yield self.client.call("SET", "k", "ü" * 70000)
        self.assertEqual(value, b"OK")
        self.assertEqual((yield self.client.call("GET", "k")).decode(), "ü" * 70000)

    @defer.inlineCallbacks
    def test_errors_fail_only_their_command(self):
        bad = self.client.call("NOSUCHCOMMAND")
        good = self.client.call("PING")
        yield self.assertFailure(bad, RedisError)
        self.assertEqual((yield good), b"PONG")

    @defer.inlineCallbacks
    def test_scripts_load_themselves(self):
        script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        self.assertEqual((yield script(self.client, ["s"], [5])), 5)
        yield self.client.call("SCRIPT", "FLUSH")
        self.assertEqual((yield script(self.client, ["s"], [5])), 10)

    @defer.inlineCallbacks
    def test_down_fails_at_once_then_reconnects(self):
        yield self.client.call("SET", "kept", "yes")
        yield self.server.stop()
        yield self.assertFailure(self.client.call("PING"), RedisUnavailable)
        yield self.server.start()
        yield self.client.connected()
        self.assertEqual((yield self.client.call("GET", "kept")), b"yes", "the append-only file kept it")

    @defer.inlineCallbacks
    def test_a_frozen_server_fails_commands_after_the_deadline(self):
        client = RedisClient(reactor, RedisAddress.parse(self.server.url), "quick", timeout=0.5)
        client.start()
        self.addCleanup(client.stop)
        yield client.connected()
        self.server.process.signal("STOP")
        self.addCleanup(self.server.process.signal, "CONT")  # before it is stopped
        yield self.assertFailure(client.call("PING"), RedisUnavailable)
        self.server.process.signal("CONT")
        yield client.connected()
        self.assertEqual((yield client.call("PING")), b"PONG")

    def test_no_replicas_asked_confirms_at_once(self):
        replicas = Replicas(self.client, 0, reactor)
        self.successResultOf(replicas.confirm())
        self.assertEqual(self.successResultOf(replicas.after(defer.succeed(7))), 7)

    @defer.inlineCallbacks
    def test_a_write_no_replica_confirms_fails_after_patience(self):
        """A lone server has no replica: WAIT answers 0 each second, and
        the write is refused once the patience is spent, not before; the
        connection is made again (through Sentinel, it may find another
        primary)."""
        replicas = Replicas(self.client, 1, reactor, patience=1.5)
        started = reactor.seconds()
        written = replicas.after(self.client.call("INCR", "n"))
        also = replicas.confirm()  # one WAIT answers both
        yield self.assertFailure(written, NotReplicated)
        yield self.assertFailure(also, NotReplicated)
        self.assertGreaterEqual(reactor.seconds() - started, 1.5)
        self.assertFalse(self.client.up, "dropped")
        yield self.client.connected()
        self.assertEqual((yield self.client.call("GET", "n")), b"1", "written on the primary all the same")

    @defer.inlineCallbacks
    def test_a_subscriber_to_a_frozen_server_drops_it(self):
        """It sends no command of its own: its PINGs find the silence."""
        address = RedisAddress.parse(self.server.url)
        subscriber = RedisClient(
            reactor, address, "sub", subscribe=("ch",), on_push=lambda _: None, timeout=0.3
        )
        subscriber.start()
        self.addCleanup(subscriber.stop)
        yield subscriber.connected()
        self.server.process.signal("STOP")
        self.addCleanup(self.server.process.signal, "CONT")
        for _ in range(100):  # PING after 0.3 s, dropped 0.3 s later: well within 10 s
            if not subscriber.up:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(subscriber.up, "still taken for connected")
        self.server.process.signal("CONT")
        yield subscriber.connected()

    @defer.inlineCallbacks
    def test_a_read_is_not_confirmed_on_another_connection(self):
        """A mark (and its WAIT) on a new connection, perhaps to a new
        primary, says nothing of what was read on the old one: refused."""
        replicas = Replicas(self.client, 1, reactor, mark_key="m")
        read_on = self.client.connection
        yield self.server.restart()
        yield self.client.connected()
        yield self.assertFailure(replicas.mark(read_on), RedisUnavailable)
        self.assertEqual((yield self.client.call("EXISTS", "m")), 0, "nothing written")

    @defer.inlineCallbacks
    def test_a_subscriber_hears_its_channel_again_after_a_restart(self):
        heard: list = []
        waiting: list[defer.Deferred] = []

        def push(value):
            heard.append(value)
            while waiting:
                waiting.pop().callback(None)

        def next_push():
            d = defer.Deferred()
            waiting.append(d)
            return d

        address = RedisAddress.parse(self.server.url)
        subscriber = RedisClient(reactor, address, "sub", subscribe=("ch",), on_push=push)
        subscriber.start()
        self.addCleanup(subscriber.stop)
        yield subscriber.connected()  # subscribed: SUBSCRIBE was answered
        got = next_push()
        self.assertEqual((yield self.client.call("PUBLISH", "ch", "one")), 1)
        yield got
        self.assertEqual(heard, [[b"message", b"ch", b"one"]])
        yield self.server.restart()
        yield defer.gatherResults([self.client.connected(), subscriber.connected()])
        got = next_push()
        yield self.client.call("PUBLISH", "ch", "two")
        yield got
        self.assertEqual(heard[-1], [b"message", b"ch", b"two"])


class OnACluster(unittest.TestCase):
    """The cluster client against a real Redis Cluster (three primaries,
    three replicas): commands reach the slot's primary, and follow it when
    the slot moves."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield ShardedRedis.started(self)
        self.client = ClusterClient(reactor, RedisAddress.parse(self.redis.url), "test", "{chat}")
        self.client.start()
        self.addCleanup(self.client.stop)
        yield self.client.connected()

    @defer.inlineCallbacks
    def test_keys_of_every_shard_and_a_slot_that_moves(self):
        keys = [f"k{{{i}}}" for i in range(30)]
        yield defer.gatherResults([self.client.call("SET", k, k) for k in keys])
        owners = yield self.redis.owners()
        self.assertEqual({owners[key_slot(k)] for k in keys}, set(self.redis.primaries), "on every shard")
        slot = key_slot(keys[0])
        target = next(p for p in self.redis.primaries if p != owners[slot])
        yield self.redis.migrate(slot, target)
        self.assertEqual((yield self.client.call("GET", keys[0])), keys[0].encode(), "MOVED followed")
        self.assertEqual(self.client.where(keys[0]), f"127.0.0.1:{target}", "the map learnt it")
        values = yield defer.gatherResults([self.client.call("GET", k) for k in keys])
        self.assertEqual(values, [k.encode() for k in keys])

    @defer.inlineCallbacks
    def test_a_script_declaring_no_key_runs_in_the_home_slot(self):
        script = Script("return redis.call('INCR', ARGV[1])")
        self.assertEqual((yield script(self.client, [], ["{chat}:n"])), 1)
        self.assertEqual((yield self.client.call("GET", "{chat}:n")), b"1")


class _Node:
    """A cluster node's client driven by hand: what it was sent, in order,
    each answered when the test says."""

    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log
        self.connection = self  # a connection that is up
        self.up = True
        self.ever_up = True
        self.waiting: dict[str, defer.Deferred] = {}

    def call(self, *args):
        return self.execute(*args)

    def execute(self, *args):
        d = defer.Deferred()
        if args[0] != "ASKING":
            self.log.append((self.name, args[2]))
            self.waiting[args[2]] = d
        return d

    def stop(self):
        return defer.succeed(None)


class Redirections(unittest.SynchronousTestCase):
    """While a slot's commands are redirected they go one at a time, in
    the order they were asked for, whichever way their redirections come."""

    def setUp(self):
        self.clock = Clock()
        self.client = ClusterClient(self.clock, RedisAddress.parse("redis-cluster://x:1"), "test")
        self.sent: list = []
        self.x, self.y = _Node("x", self.sent), _Node("y", self.sent)
        self.client._nodes = {"x:1": self.x, "y:1": self.y}  # type: ignore[dict-item]
        self.client._owner = ["x:1"] * 16384
        self.client._mapped = self.client._running = True
        self.client._remap = lambda: None  # type: ignore[method-assign]

    def test_a_slot_moved_mid_pipeline_keeps_the_order_asked(self):
        moved = RedisError(f"MOVED {key_slot('k')} y:1")
        a, b = self.client.call("SET", "k", "a"), self.client.call("SET", "k", "b")
        self.x.waiting["a"].errback(moved)  # answered in order: a first
        c = self.client.call("SET", "k", "c")  # asked while a is redirected
        self.y.waiting["a"].callback(b"OK")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(a), b"OK")
        self.assertEqual(self.sent, [("x", "a"), ("x", "b"), ("y", "a")], "c waits for b, asked before it")
        self.x.waiting["b"].errback(moved)
        self.y.waiting["b"].callback(b"OK")
        self.clock.advance(0)
        self.y.waiting["c"].callback(b"OK")
        self.clock.advance(0)
        self.assertEqual([self.successResultOf(d) for d in (b, c)], [b"OK", b"OK"])
        self.assertEqual([v for node, v in self.sent if node == "y"], ["a", "b", "c"])
        self.assertEqual(self.client._queues, {}, "the slot back to sending at once")

    def test_tryagain_is_asked_again_later_and_ask_once_after_asking(self):
        slot = key_slot("k")
        d = self.client.call("SET", "k", "a")
        self.x.waiting["a"].errback(RedisError("TRYAGAIN Multiple keys request during rehashing of slot"))
        self.assertEqual(len(self.sent), 1, "not at once")
        self.clock.advance(ClusterClient.TRYAGAIN)
        self.x.waiting["a"].errback(RedisError(f"ASK {slot} y:1"))
        self.clock.advance(0)
        self.y.waiting["a"].callback(b"OK")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), b"OK")
        self.assertEqual(self.sent, [("x", "a"), ("x", "a"), ("y", "a")])
        self.assertEqual(self.client.where("k"), "x:1", "ASK moves no slot")


class _Connecting(_Node):
    """A primary's client still making its first connection."""

    def __init__(self, name: str, log: list) -> None:
        super().__init__(name, log)
        self.connection = None
        self.up = self.ever_up = False
        self.connecting: list[defer.Deferred] = []

    def connected(self):
        d = defer.Deferred()
        self.connecting.append(d)
        return d

    def come_up(self):
        """Connected, as RedisClient is: at once, the waiters woken a turn later (``wake``)."""
        self.connection = self
        self.up = self.ever_up = True

    def wake(self):
        waiting, self.connecting = self.connecting, []
        for d in waiting:
            d.callback(self)


class FirstConnections(unittest.SynchronousTestCase):
    """The map can name a primary before its client has connected (at
    start, only the home slot's primary is waited for): commands for it
    wait for that first connection, in order, for a while; a node that was
    up and went fails them at once."""

    def setUp(self):
        self.clock = Clock()
        address = RedisAddress.parse("redis-cluster://x:1")
        self.client = ClusterClient(self.clock, address, "test", timeout=3.0)
        self.sent: list = []
        self.x = _Connecting("x", self.sent)
        self.client._nodes = {"x:1": self.x}  # type: ignore[dict-item]
        self.client._owner = ["x:1"] * 16384
        self.client._mapped = self.client._running = True
        self.remapped = 0
        self.client._remap = self._remap  # type: ignore[method-assign]

    def _remap(self):
        self.remapped += 1

    def test_commands_wait_for_the_first_connection_in_order(self):
        a, b = self.client.call("SET", "k", "a"), self.client.call("SET", "k", "b")
        self.assertNoResult(a)
        self.assertEqual(self.sent, [], "nothing sent before it is up")
        self.x.come_up()
        c = self.client.call("SET", "k", "c")  # connected, its waiters not woken yet
        self.assertEqual(self.sent, [], "c does not overtake a and b")
        self.assertEqual(len(self.x.connecting), 1, "one wait for the node, however many commands")
        self.x.wake()
        d = self.client.call("SET", "k", "d")
        self.assertEqual(self.sent, [("x", "a"), ("x", "b"), ("x", "c"), ("x", "d")])
        for value in "abcd":
            self.x.waiting[value].callback(b"OK")
        self.assertEqual([self.successResultOf(r) for r in (a, b, c, d)], [b"OK"] * 4)
        self.assertEqual((self.client._connecting, self.client._firsts), (set(), {}))

    def test_a_stop_fails_what_waits_as_unavailable(self):
        d = self.client.call("SET", "k", "a")
        self.client.stop()
        self.assertIn("stopped", str(self.failureResultOf(d, RedisUnavailable).value))

    def test_a_node_that_never_connects_fails_them_after_the_timeout(self):
        d = self.client.call("SET", "k", "a")
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        failure = self.failureResultOf(d, RedisUnavailable)
        self.assertIn("x:1 within 3.0 s", str(failure.value))
        self.assertEqual(self.remapped, 1, "the map read again: perhaps the node is gone")
        self.assertEqual(self.sent, [])

    def test_a_node_that_was_up_fails_them_at_once(self):
        self.x.ever_up = True
        self.x.call = lambda *args: defer.fail(RedisUnavailable("no connection to Redis at x:1"))  # type: ignore[method-assign]
        self.failureResultOf(self.client.call("SET", "k", "a"), RedisUnavailable)
