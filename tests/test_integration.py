"""Real sockets on 127.0.0.1, port 0: several clients against one server."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from chatproto import codec
from chatproto.backends.eventlog import Draft
from chatproto.backends.sqlite import SQLiteLog
from chatproto.limits import Limits
from chatproto.server import build_server
from tests.netclient import connect, connect_irc, connect_ws


class LiveTestCase(TestCase):
    timeout = 60

    def serve(
        self,
        web: bool = False,
        web_origins=(),
        irc: bool = False,
        cluster=None,
        expiry=10.0,
        min_replicas=0,
        admins=(),
        trusted_proxies=(),
        **limits,
    ):
        """A server on 127.0.0.1 (and its ``--web`` and ``--irc`` on ports of
        their own if asked); with ``cluster`` (a Redis URL), a node of that
        cluster. The latest one is ``self.server``; returns it."""
        server = build_server(
            reactor,
            ["tcp:0:interface=127.0.0.1"],
            self.mktemp() + ".sqlite3",
            Limits(**limits),
            web=["tcp:0:interface=127.0.0.1"] if web else [],
            web_origins=list(web_origins),
            irc=["tcp:0:interface=127.0.0.1"] if irc else [],
            cluster=cluster,
            cluster_expiry=expiry,
            cluster_min_replicas=min_replicas,
            admins=list(admins),
            trusted_proxies=list(trusted_proxies),
        )
        server.start()
        self.server = server
        self.hub = server.hub
        self.port = server.port
        self.web_port = server.web_port
        self.irc_port = server.irc_port
        if not hasattr(self, "clients"):
            self.clients = []
            self.addCleanup(self._clients_gone)  # runs after every server's stop
        self.addCleanup(self._stop, server)
        return defer.succeed(server)

    def _stop(self, server):
        return server.stopService() if server.running else None

    def _clients_gone(self):
        return defer.DeferredList([c.lost for c in self.clients])

    @defer.inlineCallbacks
    def client(self, nick=None, version=1, server=None):
        """A client of ``server`` (the latest one if None), logged in as ``nick``."""
        port = self.port if server is None else server.port
        client = yield connect(reactor, port, nick, version)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def irc(self, nick=None):
        """A raw IRC client on the ``irc`` port (``serve(irc=True)``)."""
        client = yield connect_irc(reactor, self.irc_port, nick)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def ws(self, nick=None, version=2, origin=None):
        """A WebSocket client on the ``web`` port (``serve(web=True)``)."""
        client = yield connect_ws(reactor, self.web_port, nick, version, origin)
        self.clients.append(client)
        return client


class Rooms(LiveTestCase):
    @defer.inlineCallbacks
    def test_version_1_and_version_2_clients_in_one_room(self):
        yield self.serve()
        old = yield self.client("old")
        new = yield self.client("new", version=2)
        new.send(codec.Join("general", "j"))
        state = yield new.expect(codec.RoomState)
        self.assertEqual(([p.nick for p in state.members], state.ref), (["old", "new"], "j"))
        joined = yield old.expect(codec.Joined)
        self.assertEqual((joined.nick, joined.room), ("new", None))
        for sender, text, room in ((old, "hi from v1", None), (new, "hi from v2", "general")):
            sender.send(codec.Say(text, "r", room))
            seen = []
            for client in (old, new):
                message = yield client.expect(codec.MessagePacket)
                seen.append((message.text, message.room, message.ref))
            self.assertEqual(
                seen,
                [
                    (text, None, "r" if sender is old else None),
                    (text, "general", "r" if sender is new else None),
                ],
            )
        new.send(codec.Join("side"))
        yield new.expect(codec.RoomState)
        new.send(codec.Say("elsewhere", "e", "side"))
        elsewhere = yield new.expect(codec.MessagePacket)
        self.assertEqual((elsewhere.seq, elsewhere.room), (1, "side"))
        old.send(codec.Ping("after"))
        between = []
        while not isinstance(between[-1:] and between[-1], codec.PongReply):
            between.append((yield old.next()))
        self.assertEqual(between, [codec.PongReply("after")], "nothing of the side room reached version 1")
        new.send(codec.Quit("bye"))
        left = yield old.next()
        self.assertEqual(left, codec.Left(joined.id, "new", "quit", "bye"))


class Chatting(LiveTestCase):
    @defer.inlineCallbacks
    def test_several_clients_chat_whisper_and_leave(self):
        yield self.serve()
        ann = yield self.client("ann")
        bob = yield self.client("bob")
        joined = yield ann.expect(codec.Joined)
        self.assertEqual(joined.nick, "bob")
        ann.send(codec.Say("hello bob", "r1"))
        mine = yield ann.expect(codec.MessagePacket)
        theirs = yield bob.expect(codec.MessagePacket)
        self.assertEqual((mine.ref, theirs.ref, mine.seq, theirs.text), ("r1", None, 1, "hello bob"))
        bob.send(codec.Whisper("ANN", "psst"))
        private = yield ann.expect(codec.Private)
        self.assertEqual((private.sender, private.text), ("bob", "psst"))
        bob.send(codec.Quit("later"))
        left = yield ann.expect(codec.Left)
        self.assertEqual((left.nick, left.reason, left.message), ("bob", "quit", "later"))
        yield bob.lost

    @defer.inlineCallbacks
    def test_concurrent_senders_one_order(self):
        senders, each = 5, 60
        yield self.serve(rate=10000, burst=10000)
        clients = []
        for i in range(senders):
            clients.append((yield self.client(f"user{i}")))
        for client in clients:
            client.inbox = type(client.inbox)()  # forget presence noise from logins
        for n in range(each):
            for i, client in enumerate(clients):
                client.send(codec.Say(f"{i}:{n}"))
        orders = []
        for client in clients:
            seen = []
            while len(seen) < senders * each:
                packet = yield client.expect(codec.MessagePacket)
                seen.append((packet.seq, packet.text))
            orders.append(seen)
        self.assertEqual([seq for seq, _ in orders[0]], list(range(1, senders * each + 1)))
        for order in orders[1:]:
            self.assertEqual(order, orders[0])
        for i in range(senders):  # each sender's own messages keep their order
            mine = [text for _, text in orders[0] if text.startswith(f"{i}:")]
            self.assertEqual(mine, [f"{i}:{n}" for n in range(each)])

    @defer.inlineCallbacks
    def test_catch_up_with_history_after_reconnect(self):
        yield self.serve()
        ann = yield self.client("ann")
        ann.send(codec.Say("one"))
        first = yield ann.expect(codec.MessagePacket)
        bob = yield self.client("bob")
        bob.transport.loseConnection()
        yield bob.lost
        for text in ("two", "three"):
            ann.send(codec.Say(text))
            yield ann.expect(codec.MessagePacket)
        bob = yield self.client("bob")
        bob.send(codec.HistoryRequest(after=first.seq))
        page = yield bob.expect(codec.HistoryPage)
        self.assertEqual(([m.text for m in page.messages], page.more), (["two", "three"], False))

    @defer.inlineCallbacks
    def test_frame_too_large_over_a_socket(self):
        yield self.serve(max_frame=4096)
        ann = yield self.client("ann")
        ann.sendString(b"\x02" + b"x" * 5000)
        error = yield ann.expect(codec.Error)
        self.assertEqual(error.code, "frame_too_large")
        yield ann.lost


class Checkpoints(TestCase):
    @defer.inlineCallbacks
    def test_room_service_checkpoints_on_a_thread_and_stops_cleanly(self):
        from chatproto.service import HubService

        store = SQLiteLog(self.mktemp() + ".sqlite3")
        room = build_server(reactor, history=store).hub
        store.append([Draft(1.0, "ann", "hi")])
        service = HubService(room)
        service.startService()
        service.maintenance.run()
        self.assertTrue(service.maintenance.busy, "a checkpoint is under way")
        yield service.maintenance.idle()
        self.assertEqual(store.checkpoint()[1], store.checkpoint()[0])
        service.maintenance.run()
        yield service.stopService()  # waits for the checkpoint before closing the store
        self.assertFalse(service.maintenance.busy)


#: mallopt's parameter for the free space at the heap's top that free() keeps.
M_TRIM_THRESHOLD = -1


class HeapTrim(TestCase):
    @defer.inlineCallbacks
    def test_trims_when_much_heap_is_free_on_a_thread(self):
        from chatproto.service import HeapTrimmer, ThreadedChore, _glibc, _resident

        trimmer = HeapTrimmer(threshold=1024 * 1024)
        if not trimmer.available:
            raise SkipTest("not glibc")
        # free() gives the heap's top back by itself past M_TRIM_THRESHOLD;
        # raised while the test runs, only the trimmer gives anything back.
        libc = _glibc()
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        self.addCleanup(libc.mallopt, M_TRIM_THRESHOLD, 128 * 1024)
        junk = [bytes(50_000) for _ in range(400)]  # 20 MB of heap, every page touched
        del junk
        resident = _resident()
        free = trimmer.trim_if_worth_it()  # a first look at so much free: it trims
        self.assertGreater(free, 10 * 1024 * 1024, "glibc reports the freed heap")
        self.assertLess(_resident(), resident - 10 * 1024 * 1024, "and the trim gave its pages back")
        chore = ThreadedChore(reactor, trimmer.trim_if_worth_it, 5.0, "heap trim")
        chore.startService()
        chore.run()
        self.assertTrue(chore.busy, "the work runs on a worker thread")
        chore.run()  # never two at once
        yield chore.stopService()
        self.assertFalse(chore.busy)
        self.assertFalse(chore._loop.running)


class CollectorPaceTests(SynchronousTestCase):
    def test_full_collections_wait_for_more_younger_ones_while_running(self):
        import gc

        from chatproto.service import CollectorPace

        before = gc.get_threshold()
        pace = CollectorPace(full_after=123)
        pace.startService()
        try:
            self.assertEqual(gc.get_threshold(), (before[0], before[1], 123))
        finally:
            pace.stopService()
        self.assertEqual(gc.get_threshold(), before, "put back on stop")


class _Heap:
    """glibc's two calls the trimmer makes, over a heap whose free bytes the test sets."""

    def __init__(self) -> None:
        self.free = 0
        self.arena = 0
        self.trims = 0
        self.resident = 10_000  # the process's, which a trim makes smaller

    def trimmer(self, threshold: int):
        from chatproto.service import HeapTrimmer

        trimmer = HeapTrimmer(threshold, resident=lambda: self.resident)
        trimmer._glibc = self
        return trimmer

    def mallinfo2(self):
        return type("MallInfo", (), {"fordblks": self.free, "arena": self.arena})()

    def malloc_trim(self, pad: int) -> None:
        self.trims += 1
        self.resident -= 100  # pages given back


class HeapTrimPolicy(SynchronousTestCase):
    """A trim once ``threshold`` bytes (or a 64th of the heap) have been
    freed since the free space was at its lowest: after a burst, not again
    and again for the fragments that stay free between live objects."""

    def test_what_a_burst_frees_is_trimmed_once_fragments_never(self):
        heap = _Heap()
        trimmer = heap.trimmer(threshold=1000)
        for free in (900, 900, 600, 900):  # fragments, some reused and freed again
            heap.free = free
            trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 0)
        heap.free = 1600  # a burst freed 1000 since the low of 600
        trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 1)
        for free in (1500, 1600, 2400):  # what stays free after it is not trimmed again...
            heap.free = free
            trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 1)
        heap.free = 2500  # ...until another 1000 are freed after the low (1500)
        trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 2)

    def test_the_tail_of_a_burst_is_trimmed_once_the_heap_settles(self):
        heap = _Heap()
        trimmer = heap.trimmer(threshold=1000)
        heap.free = 1600
        trimmer.trim_if_worth_it()  # during the burst
        self.assertEqual(heap.trims, 1)
        heap.free, heap.resident = 1300, heap.resident + 400  # its last allocations touch pages again
        trimmer.trim_if_worth_it()
        heap.free = 1700  # and are freed: 400 more free, under the threshold
        trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 1, "still moving: not yet")
        trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 2, "settled, and the process grew since the trim: trimmed")
        for free in (1700, 1800, 1700, 1700):  # an idle server's small churn
            heap.free = free
            trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 2, "and not again while the heap stays as it was")

    def test_a_steady_heap_is_not_trimmed_again_for_pages_its_reuse_touches(self):
        heap = _Heap()
        trimmer = heap.trimmer(threshold=1000)
        heap.free = 1000
        trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 1)
        for _ in range(6):  # the trimmed free chunks are reused: resident again, the heap as free as it was
            heap.resident += 300
            trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 2, "its settle trim, then none while the heap does not move")
        heap.free = 1400  # it moves (a burst under the threshold)...
        trimmer.trim_if_worth_it()
        trimmer.trim_if_worth_it()  # ...and settles: once
        trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 3)

    def test_a_settled_heap_with_little_free_is_left_alone(self):
        heap = _Heap()
        trimmer = heap.trimmer(threshold=1000)
        heap.free, heap.resident = 100, 20_000
        for _ in range(3):
            trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 0, "under a quarter of the threshold free: nothing to give back")

    def test_a_first_look_at_much_free_heap_trims(self):
        heap = _Heap()
        trimmer = heap.trimmer(threshold=1000)
        heap.free = 1000
        trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 1)

    def test_a_big_heaps_churn_needs_more(self):
        heap = _Heap()
        trimmer = heap.trimmer(threshold=1000)
        heap.arena = 640_000  # a 64th: 10,000
        for free in (0, 9000, 9999):
            heap.free = free
            trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 0)
        heap.free = 10_000
        trimmer.trim_if_worth_it()
        self.assertEqual(heap.trims, 1)


class SlowConsumer(LiveTestCase):
    web = False  # the slow reader's transport: Int32 here, WebSocket in test_websocket

    def slow_reader(self):
        return self.client("slow")

    @defer.inlineCallbacks
    def test_slow_reader_is_cut_and_others_lose_nothing(self):
        yield self.serve(web=self.web, sendq=256 * 1024, rate=100000, burst=100000, max_text=4000)
        talker = yield self.client("talker")
        watcher = yield self.client("watcher")
        slow = yield self.slow_reader()
        slow.transport.pauseProducing()  # stops reading: kernel buffers fill, then the server's
        text = "x" * 4000
        sent = 0
        left = None
        # Bounded: at most 8000 messages (32 MB per reader) before giving up.
        while left is None and sent < 8000:
            for i in range(100):
                talker.send(codec.Say(text, "batch" if i == 99 else None))
            sent += 100
            while (yield talker.expect(codec.MessagePacket)).ref is None:
                pass  # the talker's acknowledgement paces it by the server
            left = next((p for p in watcher.inbox.pending if isinstance(p, codec.Left)), None)
        self.assertIsNotNone(left, "slow reader was never cut off")
        self.assertEqual((left.nick, left.reason), ("slow", "slow_consumer"))
        talker.send(codec.Say("last"))
        received = 0
        while True:  # the watcher still gets every message, in order
            packet = yield watcher.expect(codec.MessagePacket)
            received = packet.seq
            if packet.text == "last":
                break
        self.assertEqual(received, sent + 1)
        slow.transport.resumeProducing()
        yield slow.lost


class OtherSockets(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_a_unix_socket_and_tcp_serve_one_room(self):
        from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol

        from tests.netclient import QueueClient

        folder = tempfile.mkdtemp(prefix="chat-")  # a short path: AF_UNIX allows about 100 bytes
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "chat.sock")
        server = build_server(reactor, ["tcp:0:interface=127.0.0.1", f"unix:{path}"])
        server.start()
        self.addCleanup(server.stopService)
        local = yield connectProtocol(UNIXClientEndpoint(reactor, path), QueueClient())
        yield local.login("ann")
        remote = yield connect(reactor, server.port, "bob")
        local.send(codec.Say("over a unix socket", "u"))
        self.assertEqual((yield local.expect(codec.MessagePacket)).ref, "u")
        self.assertEqual((yield remote.expect(codec.MessagePacket)).text, "over a unix socket")
        for client in (local, remote):
            client.transport.loseConnection()
            yield client.lost

    @defer.inlineCallbacks
    def test_tcp_connections_have_nagle_off(self):
        import socket

        server = build_server(reactor, ["tcp:0:interface=127.0.0.1"])
        server.start()
        self.addCleanup(server.stopService)
        client = yield connect(reactor, server.port, "ann")
        (connection,) = [s.connection for s in server.hub.sessions]
        handle = connection.transport.getHandle()
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        client.transport.loseConnection()
        yield client.lost


class Conversations(LiveTestCase):
    @defer.inlineCallbacks
    def test_replies_edits_reactions_and_deletions_with_a_version_1_client_in_the_room(self):
        """Section 19 over real sockets: an Int32 and a WebSocket version 2
        client see every change in the same order; the version 1 client in
        the room sees the messages' text only, and no change at all."""
        yield self.serve(web=True)
        old = yield self.client("old")
        ann = yield self.client("ann", version=2)
        bob = yield self.ws("bob")
        for client in (ann, bob):
            client.send(codec.Join("general"))
            yield client.expect(codec.RoomState)
        ann.send(codec.Say("shiped", "s1", "general"))
        first = yield ann.expect(codec.MessagePacket)
        yield bob.expect(codec.MessagePacket)
        bob.send(codec.Say("nice", "s2", "general", first.seq))
        reply = yield bob.expect(codec.MessagePacket)
        self.assertEqual(reply.reply, codec.Quote(first.seq, "ann", "shiped"))
        ann.send(codec.Edit("general", first.seq, "shipped", "e"))
        bob.send(codec.React("general", first.seq, "🎉", ref="r"))
        ann.send(codec.Typing("general"))
        bob.send(codec.Delete("general", reply.seq, "d"))
        seen = {}
        for client in (ann, bob):
            kinds = []
            while len(kinds) < 3:
                packet = yield client.next()
                if isinstance(packet, codec.Changed):
                    kinds.append((packet.kind, packet.message.seq, packet.message.rev))
            seen[client] = kinds
        self.assertEqual(seen[ann], seen[bob])
        self.assertEqual(sorted(k for k, _, _ in seen[ann]), ["delete", "edit", "react"])
        old.send(codec.Ping("after"))
        between = []
        while not isinstance(between[-1:] and between[-1], codec.PongReply):
            between.append((yield old.next()))
        texts = [p.text for p in between if isinstance(p, codec.MessagePacket)]
        self.assertEqual(texts, ["shiped", "nice"])
        self.assertEqual(
            [type(p) for p in between if not isinstance(p, codec.MessagePacket)][-1:], [codec.PongReply]
        )
        self.assertFalse([p for p in between if isinstance(p, (codec.Changed, codec.TypingNotice))])
        old.send(codec.HistoryRequest(ref="h"))
        page = yield old.expect(codec.HistoryPage)
        self.assertEqual([(m.text, m.reactions) for m in page.messages], [("shipped", None)])
