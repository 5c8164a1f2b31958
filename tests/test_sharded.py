"""Cluster mode on a Redis Cluster (three primaries, each with a replica,
real processes started for each test): the rooms are spread over the
shards, and the cluster tests pass on it as on one Redis."""

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.redis_cluster import key_slot
from chatproto.backends.streams import StreamStore
from chatproto.rules import room_key
from tests import test_cluster as one
from tests.redisserver import ShardedRedis

log = Logger()


class ShardedCase(one.ClusterTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield ShardedRedis.started(self)


class OneRoomTwoNodes(ShardedCase, one.OneRoomTwoNodes):
    pass


class Order(ShardedCase, one.Order):
    pass


class Nicks(ShardedCase, one.Nicks):
    pass


class Whispers(ShardedCase, one.Whispers):
    pass


class Sessions(ShardedCase, one.Sessions):
    pass


class History(ShardedCase, one.History):
    pass


class Listing(ShardedCase, one.Listing):
    pass


class Renames(ShardedCase, one.Renames):
    pass


class Moderation(ShardedCase, one.Moderation):
    pass


class PendingAcrossNodes(ShardedCase, one.PendingAcrossNodes):
    pass


def stream_of(name: str) -> str:
    """Room ``name``'s stream key on a sharded cluster."""
    return StreamStore(None, sharded=True).stream(room_key(name))  # type: ignore[arg-type]


@defer.inlineCallbacks
def rooms_by_shard(redis):
    """A room name per primary, whose keys that primary serves."""
    owners = yield redis.owners()
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"room{i}"
        found.setdefault(owners[key_slot(stream_of(name))], name)
        if len(found) == len(redis.primaries):
            return found
    raise AssertionError("no room name found for every shard")


@defer.inlineCallbacks
def said(client, text: str, room: str, ref: str):
    """Say ``text`` in ``room``: the acknowledgement (a MESSAGE with ``ref``), or the ERROR."""
    client.send(codec.Say(text, ref, room=room))
    while True:
        packet = yield client.next()
        if isinstance(packet, (codec.MessagePacket, codec.Error)) and packet.ref == ref:
            return packet


@defer.inlineCallbacks
def history(client, room: str):
    client.send(codec.HistoryRequest(limit=500, room=room, ref="h"))
    page = yield client.expect(codec.HistoryPage)
    return [(m.seq, m.text) for m in page.messages]


@defer.inlineCallbacks
def joined(clients, names):
    """Each client joins each room, in turn."""
    for name in names:
        for client in clients:
            client.send(codec.Join(name))
            yield client.expect(codec.RoomState)


def pause(seconds: float = 0.05):
    return deferLater(reactor, seconds, lambda: None)


class Spread(ShardedCase):
    @defer.inlineCallbacks
    def test_each_room_lives_on_the_shard_its_name_hashes_to(self):
        rooms = yield rooms_by_shard(self.redis)
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        bob = yield self.client("bob", version=2, server=b)
        yield joined((alice, bob), rooms.values())
        for port, name in rooms.items():
            ack = yield said(alice, f"hello {name}", name, name)
            self.assertIsInstance(ack, codec.MessagePacket)
            heard = yield bob.expect(codec.MessagePacket)
            self.assertEqual((heard.room, heard.text, heard.seq), (name, f"hello {name}", 1))
            self.assertEqual((yield self.redis.ask(port, "EXISTS", stream_of(name))), 1, "on its shard")
        bob.send(codec.ListRooms("l"))
        listing = yield bob.expect(codec.RoomList)
        self.assertEqual(sorted(i.room for i in listing.rooms), sorted(["general", *rooms.values()]))


class Confirmed:
    """Mixed in: every node with --cluster-min-replicas 1 (each write, and
    each read a member is shown, confirmed on its shard's replica)."""

    def node(self, **options):
        return super().node(min_replicas=1, **options)


class ConfirmedOrder(Confirmed, ShardedCase, one.Order):
    pass


class ConfirmedHistory(Confirmed, ShardedCase, one.History):
    pass


class ShardFailover(ShardedCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_a_shard_primary_killed_stops_its_rooms_only_and_loses_nothing_acknowledged(self):
        """SIGKILL one shard's primary (not the home slot's): the rooms on
        the other shards go on answering every message; the dead shard's
        room refuses or stalls until its replica takes over, then goes on;
        every acknowledged message is in every room's history, gap-free,
        and seen in the same order on the other node."""
        rooms = yield rooms_by_shard(self.redis)
        home = yield self.redis.serving("{chat}")
        victim = next(port for port in rooms if port != home)
        a = yield self.node(rate=1000.0, burst=1000)
        b = yield self.node(rate=1000.0, burst=1000)
        alice = yield self.client("alice", version=2, server=a)
        bob = yield self.client("bob", version=2, server=b)
        yield joined((alice, bob), rooms.values())
        acked: dict[str, list[tuple[int, str]]] = {name: [] for name in rooms.values()}
        for name in rooms.values():
            ack = yield said(alice, "before", name, f"{name}.0")
            acked[name].append((ack.seq, "before"))
        yield self.redis.kill(victim)
        killed = reactor.seconds()
        refused = 0
        for i in range(1, 31):
            for port, name in rooms.items():
                text = f"m{i}"
                answer = yield said(alice, text, name, f"{name}.{i}")
                if isinstance(answer, codec.MessagePacket):
                    acked[name].append((answer.seq, text))
                else:
                    self.assertEqual(answer.code, "internal")
                    self.assertEqual(port, victim, "a room on a live shard refused a message")
                    refused += 1
        back = None
        for i in range(600):  # the dead shard's room, until its replica serves it (at most a minute)
            answer = yield said(alice, f"after{i}", rooms[victim], f"after{i}")
            if isinstance(answer, codec.MessagePacket):
                acked[rooms[victim]].append((answer.seq, f"after{i}"))
                back = reactor.seconds() - killed
                break
            yield pause(0.1)
        self.assertIsNotNone(back, "the dead shard's replica never took over")
        log.info("shard failover: first acknowledged message {s:.2f} s after the kill", s=back)
        for name, messages in acked.items():
            self.assertEqual([s for s, _ in messages], list(range(1, len(messages) + 1)), f"{name}: gap-free")
            kept = yield history(bob, name)
            self.assertEqual(kept, messages, f"{name}: every acknowledged message kept, in order")
        for port, name in rooms.items():
            if port != victim:
                self.assertEqual(len(acked[name]), 31, f"{name}: every message answered on a live shard")


class ConfirmedShardFailover(Confirmed, ShardFailover):
    """Two replicas a shard: after the failover the new primary still has
    one to confirm its writes (with one, it would refuse them all, durable
    but not available: docs/cluster.md)."""

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield ShardedRedis.started(self, replicas=2)


class SlotMigration(ShardedCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_a_room_chatting_while_its_slot_moves_to_another_shard_loses_nothing(self):
        rooms = yield rooms_by_shard(self.redis)
        source, name = next(iter(rooms.items()))
        target = next(port for port in rooms if port != source)
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        bob = yield self.client("bob", version=2, server=b)
        yield joined((alice, bob), [name])
        answers = []

        @defer.inlineCallbacks
        def chat():
            for i in range(60):
                answers.append((yield said(alice, f"m{i}", name, f"r{i}")))
                yield pause(0.01)

        chatting = chat()
        yield pause(0.1)
        moved_from = yield self.redis.migrate(key_slot(stream_of(name)), target, batch=2, pause=pause)
        yield chatting
        self.assertEqual(moved_from, source)
        self.assertTrue(all(isinstance(p, codec.MessagePacket) for p in answers), answers)
        self.assertEqual([p.seq for p in answers], list(range(1, 61)), "gap-free, none twice")
        heard = []
        while len(heard) < 60:
            heard.append((yield bob.expect(codec.MessagePacket)).seq)
        self.assertEqual(heard, list(range(1, 61)), "in one order on the other node")
        kept = yield history(bob, name)
        self.assertEqual(kept, [(i + 1, f"m{i}") for i in range(60)])
        self.assertEqual((yield self.redis.ask(target, "EXISTS", stream_of(name))), 1, "moved")
        ack = yield said(bob, "after the move", name, "last")
        self.assertEqual(ack.seq, 61)


class EmptyShard(ShardedCase):
    @defer.inlineCallbacks
    def test_a_room_whose_keys_are_gone_refuses_messages_rather_than_number_them_again(self):
        """A shard come back empty (no persistence, both its servers lost):
        a node that has seen the room's messages refuses new ones instead
        of handing out seqs 1, 2... a second time."""
        rooms = yield rooms_by_shard(self.redis)
        port, name = next(iter(rooms.items()))
        a = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        yield joined((alice,), [name])
        for i in range(3):
            ack = yield said(alice, f"m{i}", name, f"r{i}")
            self.assertEqual(ack.seq, i + 1)
        keys = yield self.redis.ask(port, "CLUSTER", "GETKEYSINSLOT", key_slot(stream_of(name)), 100)
        yield self.redis.ask(port, "DEL", *keys)
        refused = yield said(alice, "after", name, "r3")
        self.assertIsInstance(refused, codec.Error)
        self.assertEqual(refused.code, "internal")
        self.assertEqual(
            (yield self.redis.ask(port, "EXISTS", stream_of(name) + ":seq")), 0, "nothing numbered"
        )
