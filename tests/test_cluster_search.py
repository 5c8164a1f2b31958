"""Search in a cluster (docs/protocol.md 21.3): each node's own index, fed
from the rooms' streams, against a real Valkey on real sockets."""

from __future__ import annotations

import sqlite3

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.cluster.search_index import IndexFile
from chatproto.limits import Limits
from chatproto.server import FeedService, build_server
from tests.test_cluster import ClusterTestCase
from tests.waiting import until


def feed_of(server):
    """The node's search feed (cluster/search_index.py)."""
    (service,) = [s for s in server if isinstance(s, FeedService)]
    return service.feed


class Closing(SynchronousTestCase):
    def test_closed_while_a_batch_is_written_its_writer_closes_the_file(self):
        """A node stopping while its feed writes a batch on a worker thread
        closed the file under it (a segmentation fault, now and then)."""
        index = IndexFile(self.mktemp())
        with index._lock:  # a batch being written
            index.close()
            self.assertEqual(index.positions(), {}, "still open under its writer")
        self.assertEqual(index.write([], None), 0, "nothing written once closed")
        with self.assertRaises(sqlite3.ProgrammingError):
            index.positions()


class ClusterSearch(ClusterTestCase):
    def indexed_node(self, index: str, **options):
        """A node of the cluster whose search index is the file ``index``."""
        server = build_server(
            reactor,
            ["tcp:0:interface=127.0.0.1"],
            self.mktemp() + ".sqlite3",
            Limits(),
            cluster=self.redis.url,
            search_index=index,
            **options,
        )
        server.start()
        if not hasattr(self, "clients"):
            self.clients = []
            self.addCleanup(self._clients_gone)
        self.addCleanup(self._stop, server)
        return server

    @defer.inlineCallbacks
    def in_general(self, nick, server):
        client = yield self.client(nick, version=2, server=server)
        client.send(codec.Join("general"))
        yield client.expect(codec.RoomState)
        return client

    @defer.inlineCallbacks
    def results(self, client, words, **fields):
        client.send(codec.Search(words, ref="s", **fields))
        answer = yield client.expect((codec.Results, codec.Error))
        return answer

    @defer.inlineCallbacks
    def test_said_on_one_node_found_on_another_edits_and_deletions_followed(self):
        a = self.indexed_node(self.mktemp())
        b = self.indexed_node(self.mktemp())
        alice = yield self.in_general("alice", a)
        bob = yield self.in_general("bob", b)
        alice.send(codec.Say("a needle in the haystack", "r1", "general"))
        alice.send(codec.Say("nothing to see", "r2", "general"))
        yield self.messages(bob, 2)
        yield until(lambda: feed_of(b).indexed >= 2)
        found = yield self.results(bob, "NEEDLE")
        self.assertEqual([(h.room, h.seq, h.sender) for h in found.hits], [("general", 1, "alice")])
        self.assertEqual(found.hits[0].marks, [[2, 6]])
        alice.send(codec.Edit("general", 1, "a pin in the haystack"))
        alice.send(codec.Delete("general", 2))
        yield bob.expect(codec.Changed)
        yield bob.expect(codec.Changed)
        yield until(lambda: feed_of(b).indexed >= 4)
        self.assertEqual((yield self.results(bob, "needle")).hits, [])
        self.assertEqual([h.seq for h in (yield self.results(bob, "pin")).hits], [1])
        self.assertEqual((yield self.results(bob, "nothing")).hits, [])

    @defer.inlineCallbacks
    def test_a_restarted_node_goes_on_from_where_it_stopped(self):
        index = self.mktemp()
        a = self.indexed_node(self.mktemp())
        b = self.indexed_node(index)
        alice = yield self.in_general("alice", a)
        alice.send(codec.Say("first words", "r1", "general"))
        yield alice.expect(codec.MessagePacket)
        yield until(lambda: feed_of(b).indexed >= 1)
        yield b.stopService()
        alice.send(codec.Say("second words", "r2", "general"))
        alice.send(codec.Edit("general", 1, "first edited"))
        yield alice.expect(codec.MessagePacket)
        yield alice.expect(codec.Changed)
        again = self.indexed_node(index)
        bob = yield self.in_general("bob", again)
        yield until(lambda: feed_of(again).indexed >= 2)
        self.assertEqual(feed_of(again).indexed, 2)  # the second message and the edit, nothing read twice
        found = yield self.results(bob, "words")
        self.assertEqual([h.seq for h in found.hits], [2])
        self.assertEqual([h.seq for h in (yield self.results(bob, "edited")).hits], [1])

    @defer.inlineCallbacks
    def test_a_node_without_search_says_no_search(self):
        server = build_server(reactor, ["tcp:0:interface=127.0.0.1"], cluster=self.redis.url, search=False)
        server.start()
        self.clients = []
        self.addCleanup(self._clients_gone)
        self.addCleanup(self._stop, server)
        bob = yield self.in_general("bob", server)
        answer = yield self.results(bob, "x")
        self.assertEqual(answer.code, codec.ErrorCode.NO_SEARCH)

    @defer.inlineCallbacks
    def test_a_page_given_by_one_node_is_good_on_every_node(self):
        """Pages are signed with a key every node shares (kept in Redis), and
        hold where the search stopped: another node, and a node started after
        it with an index of its own, go on from there; a forged page is
        refused on every node."""
        a = self.indexed_node(self.mktemp())
        b = self.indexed_node(self.mktemp())
        alice = yield self.in_general("alice", a)
        bob = yield self.in_general("bob", b)
        for i in range(3):
            alice.send(codec.Say(f"needle {i}", f"r{i}", "general"))
        yield self.messages(bob, 3)
        yield until(lambda: feed_of(a).indexed >= 3 and feed_of(b).indexed >= 3)
        first = yield self.results(alice, "needle", limit=2)
        self.assertEqual(([h.seq for h in first.hits], first.more), ([3, 2], True))
        rest = yield self.results(bob, "needle", limit=2, page=first.page)
        self.assertEqual(([h.seq for h in rest.hits], rest.more), ([1], False))
        later = self.indexed_node(self.mktemp())
        carol = yield self.in_general("carol", later)
        yield until(lambda: feed_of(later).indexed >= 3)
        again = yield self.results(carol, "needle", limit=2, page=first.page)
        self.assertEqual([h.seq for h in again.hits], [1])
        forged = first.page[:-2] + ("AA" if not first.page.endswith("AA") else "BB")
        for client in (alice, bob):
            refused = yield self.results(client, "needle", page=forged)
            self.assertEqual(refused.code, codec.ErrorCode.BAD_SEARCH)

    @defer.inlineCallbacks
    def seqs(self, client, words):
        found = yield self.results(client, words)
        return [h.seq for h in found.hits]

    @defer.inlineCallbacks
    def test_search_finds_what_history_keeps_under_retention(self):
        """With --cluster-retention 3 a room keeps its last 3 messages: HISTORY
        pages exactly those, and the index forgets the older ones as the
        streams do (an edited one too), on a node that read them as they came
        and on one that built its index later."""
        a = self.indexed_node(self.mktemp(), cluster_retention=3)
        alice = yield self.in_general("alice", a)
        for i in range(1, 6):
            alice.send(codec.Say(f"word {i}", f"r{i}", "general"))
        yield self.messages(alice, 5)
        yield until(lambda: feed_of(a).indexed >= 5)  # read before the edit takes the entry out
        alice.send(codec.Edit("general", 3, "word three edited"))
        yield alice.expect(codec.Changed)
        yield until(lambda: feed_of(a).indexed >= 6)
        self.assertEqual((yield self.seqs(alice, "word")), [5, 4, 3])
        alice.send(codec.HistoryRequest(room="general"))
        page = yield alice.expect(codec.HistoryPage)
        self.assertEqual(([m.seq for m in page.messages], page.more), ([3, 4, 5], False))
        alice.send(codec.Say("word 6", "r6", "general"))
        yield alice.expect(codec.MessagePacket)
        yield until(lambda: feed_of(a).indexed >= 7)
        self.assertEqual((yield self.seqs(alice, "word")), [6, 5, 4])
        self.assertEqual((yield self.seqs(alice, "edited")), [])
        alice.send(codec.Edit("general", 2, "word two again", ref="e"))  # still in Redis, not kept
        refused = yield alice.expect(codec.Error)
        self.assertEqual((refused.code, refused.ref), (codec.ErrorCode.NO_SUCH_MESSAGE, "e"))
        later = self.indexed_node(self.mktemp(), cluster_retention=3)
        bob = yield self.in_general("bob", later)
        yield until(lambda: feed_of(later).indexed >= 3)
        self.assertEqual((yield self.seqs(bob, "word")), [6, 5, 4])
