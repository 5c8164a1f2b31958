"""The RESP client against a real Valkey server."""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from chatproto.backends.redis import (
    Incomplete,
    RedisAddress,
    RedisClient,
    RedisError,
    RedisUnavailable,
    Script,
    parse_reply,
)
from tests.redisserver import RedisServer


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
