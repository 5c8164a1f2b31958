"""Cluster mode: several servers share their rooms through a real Valkey
server (started for each test), on real sockets."""

from twisted.internet import defer

from chatproto import codec
from tests.redisserver import RedisServer
from tests.test_integration import LiveTestCase


class ClusterTestCase(LiveTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield RedisServer.started(self)

    def node(self, **options):
        return self.serve(cluster=self.redis.url, **options)

    @defer.inlineCallbacks
    def messages(self, client, count):
        """The next ``count`` MESSAGEs, skipping presence."""
        got = []
        while len(got) < count:
            got.append((yield client.expect(codec.MessagePacket)))
        return got


class OneRoomTwoNodes(ClusterTestCase):
    @defer.inlineCallbacks
    def test_members_and_messages_cross_nodes(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", server=a)
        welcome = yield self.client("bob", server=b)
        bob = welcome
        joined = yield alice.expect(codec.Joined)
        self.assertEqual(joined.nick, "bob")
        alice.send(codec.Say("hello from a", "r1"))
        mine = yield alice.expect(codec.MessagePacket)
        theirs = yield bob.expect(codec.MessagePacket)
        self.assertEqual((mine.text, mine.ref, mine.seq), ("hello from a", "r1", 1))
        self.assertEqual((theirs.text, theirs.ref, theirs.seq), ("hello from a", None, 1))

    @defer.inlineCallbacks
    def test_a_later_client_sees_members_of_both_nodes_in_welcome(self):
        a = yield self.node()
        b = yield self.node()
        yield self.client("alice", server=a)
        yield self.client("bob", server=b)
        carol = yield connect_welcome(self, "carol", a)
        self.assertEqual(sorted(p.nick for p in carol.peers), ["alice", "bob", "carol"])


@defer.inlineCallbacks
def connect_welcome(case, nick, server):
    from twisted.internet import reactor

    from tests.netclient import connect

    client = yield connect(reactor, server.port)
    case.clients.append(client)
    welcome = yield client.login(nick)
    return welcome
