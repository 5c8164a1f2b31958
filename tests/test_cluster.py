"""Cluster mode: several servers share their rooms through a real Valkey
server (started for each test), on real sockets."""

import json
import os
import shutil

from twisted.internet import defer

from chatproto import codec
from chatproto.core import records
from tests import test_integration as live
from tests import test_irc as irc
from tests import test_websocket as websocket
from tests.netclient import connect
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
        alice = yield self.client("alice", server=a)
        yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)  # node a has read bob's join
        carol = yield connect_welcome(self, "carol", a)
        self.assertEqual(sorted(p.nick for p in carol.peers), ["alice", "bob", "carol"])


class Order(ClusterTestCase):
    @defer.inlineCallbacks
    def test_three_nodes_two_clients_each_one_order(self):
        """Everyone sends at once, on every node; every client sees the same
        messages with the same gap-free seqs, its own carrying its refs."""
        nodes = []
        for _ in range(3):
            nodes.append((yield self.node()))
        clients = []
        for i, node in enumerate(nodes):
            for j in range(2):
                clients.append((yield self.client(f"n{i}c{j}", server=node)))
        per = 15
        for k in range(per):
            for i, client in enumerate(clients):
                client.send(codec.Say(f"{i}:{k}", f"r{i}.{k}"))
        seen = []
        for client in clients:
            seen.append((yield self.messages(client, per * len(clients))))
        first = [(m.seq, m.sender, m.text) for m in seen[0]]
        self.assertEqual([seq for seq, _, _ in first], list(range(1, per * len(clients) + 1)))
        for i, got in enumerate(seen):
            self.assertEqual([(m.seq, m.sender, m.text) for m in got], first)
            own = [m for m in got if m.sender == f"n{i // 2}c{i % 2}"]
            self.assertEqual([m.ref for m in own], [f"r{i}.{k}" for k in range(per)])
            self.assertEqual(
                [m.text for m in own], [f"{i}:{k}" for k in range(per)], "each sender's order kept"
            )
            self.assertTrue(all(m.ref is None for m in got if m not in own))


class Nicks(ClusterTestCase):
    @defer.inlineCallbacks
    def test_a_nick_is_taken_on_every_node(self):
        a = yield self.node()
        b = yield self.node()
        yield self.client("alice", server=a)
        other = yield self.client(server=b)
        other.send(codec.Login("ALICE", 1, ref="l"))
        error = yield other.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("nick_taken", "l"))

    @defer.inlineCallbacks
    def test_two_nodes_racing_for_a_nick_one_wins(self):
        a = yield self.node()
        b = yield self.node()
        for round in range(5):
            one = yield self.client(server=a)
            two = yield self.client(server=b)
            nick = f"zed{round}"
            one.send(codec.Login(nick, 1))
            two.send(codec.Login(nick, 1))
            answers = []
            for client in (one, two):
                while True:
                    packet = yield client.next()
                    if isinstance(packet, (codec.Welcome, codec.Error)):
                        answers.append(type(packet))
                        break
            self.assertEqual(sorted(t.__name__ for t in answers), ["Error", "Welcome"])

    @defer.inlineCallbacks
    def test_a_nick_is_free_again_when_its_session_leaves(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", server=a)
        alice.send(codec.Quit("bye"))
        yield alice.lost
        again = yield connect_welcome(self, "alice", b)
        self.assertEqual(again.nick, "alice")


class Whispers(ClusterTestCase):
    @defer.inlineCallbacks
    def test_a_whisper_reaches_a_nick_on_another_node(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", server=a)
        bob = yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)  # node b has saved bob's session before it appended his join
        alice.send(codec.Whisper("BOB", "psst", "w"))
        mine = yield alice.expect(codec.Private)
        theirs = yield bob.expect(codec.Private)
        self.assertEqual(
            (mine.to, mine.ref, theirs.sender, theirs.text, theirs.ref), ("BOB", "w", "alice", "psst", None)
        )
        alice.send(codec.Whisper("nobody", "x", "n"))
        error = yield alice.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("no_such_nick", "n"))


class PendingAcrossNodes(ClusterTestCase):
    @defer.inlineCallbacks
    def pending(self, client, state, node):
        """The next PENDING ``state`` of a connection of node ``node``."""
        while True:
            packet = yield client.expect(codec.Pending)
            if packet.state == state and packet.id >> 32 == int(node.hub.peers.node):
                return packet.id

    @defer.inlineCallbacks
    def test_a_connection_pending_on_one_node_is_announced_on_every_node(self):
        """PENDING and WELCOME.pending are the cluster's: a connection on b
        is announced on a, listed in a's WELCOMEs, then gone when it logs in."""
        a = yield self.node()
        b = yield self.node()
        ann = yield self.client("ann", version=2, server=a)
        stranger = yield self.client(server=b)
        id = yield self.pending(ann, "connecting", b)
        late = yield self.client(server=a)
        welcome = yield late.login("late", version=2)
        self.assertIn(id, welcome.pending)
        stranger.send(codec.Login("str", 2))
        welcome = yield stranger.expect(codec.Welcome)
        self.assertEqual(welcome.id, id, "the session's id is the pending one")
        gone = yield self.pending(ann, "gone", b)
        self.assertEqual(gone, id)

    @defer.inlineCallbacks
    def test_a_connection_closed_before_its_login_is_gone_on_every_node(self):
        a = yield self.node()
        b = yield self.node()
        old = yield self.client("old", server=a)
        stranger = yield self.client(server=b)
        id = yield self.pending(old, "connecting", b)
        stranger.transport.loseConnection()
        gone = yield self.pending(old, "gone", b)
        self.assertEqual(gone, id)


class Sessions(ClusterTestCase):
    @defer.inlineCallbacks
    def test_resume_on_another_node(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client(server=a)
        welcome = yield alice.login("alice")
        bob = yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)
        moved = yield self.client(server=b)
        again = yield moved.login("alice", resume=welcome.resume)
        self.assertEqual((again.id, again.nick), (welcome.id, "alice"))
        self.assertEqual(sorted(p.nick for p in again.peers), ["alice", "bob"])
        bye = yield alice.expect(codec.Bye)
        self.assertEqual(bye.reason, "replaced")
        moved.send(codec.Say("still me", "m"))
        got = yield bob.expect(codec.MessagePacket)
        self.assertEqual((got.sender, got.text), ("alice", "still me"))
        bob.send(codec.Say("and me"))
        yield self.messages(moved, 2)
        carol = yield connect_welcome(self, "carol", a)
        self.assertEqual(
            sorted(p.nick for p in carol.peers), ["alice", "bob", "carol"], "a still knows alice"
        )

    @defer.inlineCallbacks
    def test_a_wrong_token_is_a_new_login(self):
        a = yield self.node()
        b = yield self.node()
        yield self.client("alice", server=a)
        other = yield self.client(server=b)
        other.send(codec.Login("alice", 1, "not-the-token"))
        error = yield other.expect(codec.Error)
        self.assertEqual(error.code, "nick_taken")

    @defer.inlineCallbacks
    def test_a_node_that_stops_takes_its_sessions_out_of_the_rooms(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", server=a)
        yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)
        yield b.stopService()
        left = yield alice.expect(codec.Left)
        self.assertEqual((left.nick, left.reason), ("bob", "server_shutdown"))


class History(ClusterTestCase):
    @defer.inlineCallbacks
    def test_a_node_started_later_pages_the_history(self):
        a = yield self.node()
        alice = yield self.client("alice", server=a)
        for i in range(1, 31):
            alice.send(codec.Say(f"m{i}"))
        yield self.messages(alice, 30)
        c = yield self.node(history_replay=5)
        carol = yield connect_welcome(self, "carol", c)
        self.assertEqual([m.seq for m in carol.history], [26, 27, 28, 29, 30])
        client = self.clients[-1]
        client.send(codec.HistoryRequest(before=26, limit=10))
        page = yield client.expect(codec.HistoryPage)
        self.assertEqual(([m.seq for m in page.messages], page.more), (list(range(16, 26)), True))
        client.send(codec.HistoryRequest(before=5, limit=10))
        page = yield client.expect(codec.HistoryPage)
        self.assertEqual(([m.text for m in page.messages], page.more), (["m1", "m2", "m3", "m4"], False))
        client.send(codec.HistoryRequest(after=27, limit=10))
        page = yield client.expect(codec.HistoryPage)
        self.assertEqual(([m.seq for m in page.messages], page.more), ([28, 29, 30], False))


class OnTwoNodes:
    """Mixed into the live protocol tests (versions 1 and 2) to run them on
    a cluster of two nodes, the clients alternating between them."""

    @defer.inlineCallbacks
    def serve(self, **options):
        self.redis = yield RedisServer.started(self)
        other = yield LiveTestCase.serve(self, cluster=self.redis.url, **options)
        node = yield LiveTestCase.serve(self, cluster=self.redis.url, **options)
        self.nodes = [node, other]
        return node

    @defer.inlineCallbacks
    def client(self, nick=None, version=1, server=None):
        if server is None:
            server = self.nodes[len(self.clients) % 2]
        client = yield LiveTestCase.client(self, nick, version, server)
        if nick is not None and version == 1:  # in the default room from its login: on every node
            yield defer.gatherResults([known(node.hub, nick) for node in self.nodes if node is not server])
        return client


def known(hub, nick):
    """Fires once ``hub`` has ``nick`` among its default room's members (a
    member on another node is known once that node's join has been read)."""

    def present():
        return any(member.nick == nick for member in hub.default_room.members.values())

    if present():
        return defer.succeed(None)
    d = defer.Deferred()

    def seen(event):
        if event.kind == "room_joined" and not d.called and present():
            hub.observers.remove(seen)
            d.callback(None)

    hub.observers.append(seen)
    return d


class RoomsOnTwoNodes(OnTwoNodes, live.Rooms):
    pass


class ChattingOnTwoNodes(OnTwoNodes, live.Chatting):
    pass


class WebSocketOnTwoNodes(OnTwoNodes, websocket.WebSocketChat):
    pass


class IrcOnTwoNodes(OnTwoNodes, irc.Live):
    pass


@defer.inlineCallbacks
def connect_welcome(case, nick, server):
    from twisted.internet import reactor

    from tests.netclient import connect

    client = yield connect(reactor, server.port)
    case.clients.append(client)
    welcome = yield client.login(nick)
    return welcome


class Failures(ClusterTestCase):
    @defer.inlineCallbacks
    def survivor(self, nick, node):
        client = yield self.client(nick, server=node)
        return client

    @defer.inlineCallbacks
    def test_a_node_killed_mid_chat(self):
        """SIGKILL a node while its users chat: every acknowledged message is
        kept with its own seq, and each of its users is seen leaving once,
        on both surviving nodes."""
        from twisted.internet import reactor

        from scripts.spawn import spawn_server

        a = yield self.node(expiry=2.0)
        c = yield self.node(expiry=2.0)
        doomed = spawn_server(
            reactor,
            "--cluster",
            self.redis.url,
            "--cluster-expiry",
            "2",
            "--search-index",
            os.path.abspath(self.mktemp()),
        )
        self.addCleanup(lambda: doomed.ended)
        self.addCleanup(lambda: doomed.signal("KILL") if not doomed.ended.called else None)
        port = yield doomed.listening
        alice = yield self.client("alice", server=a)
        dave = yield self.client("dave", server=c)
        bob = yield connect(reactor, port)
        self.clients.append(bob)
        yield bob.login("bob")
        carol = yield connect(reactor, port)
        self.clients.append(carol)
        yield carol.login("carol")
        acked = set()
        for i in range(20):
            alice.send(codec.Say(f"a{i}", f"a{i}"))
            bob.send(codec.Say(f"b{i}", f"b{i}"))
        for _ in range(10):  # bob's first acknowledgements, then the kill, mid-stream
            acked.add((yield bob.expect(codec.MessagePacket)).ref)
        doomed.signal("KILL")
        yield doomed.ended
        for watcher in (alice, dave):
            gone = []
            while len(gone) < 2:
                packet = yield watcher.next(timeout=20)
                if isinstance(packet, codec.MessagePacket) and packet.ref:
                    acked.add(packet.ref)
                elif isinstance(packet, codec.Left):
                    gone.append((packet.nick, packet.reason))
            self.assertEqual(sorted(gone), [("bob", "connection_lost"), ("carol", "connection_lost")])
        acked = {ref for ref in acked if ref}
        alice.send(codec.Say("after", "after"))
        for watcher in (alice, dave):  # everything before "after" is in: no second LEFT
            while True:
                packet = yield watcher.next()
                self.assertFalse(isinstance(packet, codec.Left), f"announced twice: {packet}")
                if isinstance(packet, codec.MessagePacket) and packet.text == "after":
                    break
        alice.send(codec.HistoryRequest(after=0, limit=500))
        page = yield alice.expect(codec.HistoryPage)
        seqs = [m.seq for m in page.messages]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)), "no seq repeated or skipped")
        self.assertTrue({f"a{i}" for i in range(20)} <= acked, "alice's node lived: all hers acknowledged")
        self.assertLessEqual(acked, {m.text for m in page.messages}, "every acknowledged message kept")

    @defer.inlineCallbacks
    def test_a_redis_that_comes_back_empty_is_refused_and_said_not_waited_for(self):
        """Redis without its data (no persistence, flushed): every node refuses
        and says so, at once, instead of handing out seqs 1, 2... again or
        waiting for entries that will never come."""
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", server=a)
        bob = yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)
        for i in range(3):
            alice.send(codec.Say(f"before {i}", f"b{i}"))
            yield alice.expect(codec.MessagePacket)
        yield self.redis.stop()
        shutil.rmtree(self.redis.folder)  # its append-only file gone: it comes back empty
        os.makedirs(self.redis.folder)
        yield self.redis.start()
        for node in (a, b):
            yield node.hub.peers.store.client.connected()
            yield node.hub.peers.reader_client.connected()
        alice.send(codec.Say("after", "a1"))
        answer = yield alice.expect((codec.MessagePacket, codec.Error))
        self.assertIsInstance(answer, codec.Error, "not acknowledged as seq 1 of a history that lost 3")
        self.assertEqual((answer.code, answer.ref), ("internal", "a1"))
        bob.send(codec.Join("elsewhere", "j"))
        error = yield bob.expect(codec.Error)
        self.assertEqual(error.ref, "j", "an answer, not silence")
        health = yield b.health()
        self.assertTrue(any("lost the cluster's data" in problem for problem in health), health)
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_redis_restarted_under_load(self):
        """While Redis is down, senders get ERROR internal; once it is back,
        chat goes on; every acknowledged message is kept and was delivered."""
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", server=a)
        bob = yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)
        acked, refused = [], []

        @defer.inlineCallbacks
        def say(i):
            alice.send(codec.Say(f"m{i}", f"m{i}"))
            while True:
                packet = yield alice.next()
                if isinstance(packet, codec.MessagePacket) and packet.ref == f"m{i}":
                    acked.append(packet.text)
                    return True
                if isinstance(packet, codec.Error) and packet.ref == f"m{i}":
                    self.assertEqual(packet.code, "internal")
                    refused.append(f"m{i}")
                    return False

        for i in range(10):
            yield say(i)
        yield self.redis.stop()
        ok = yield say(10)
        self.assertFalse(ok, "refused while Redis is down")
        yield self.redis.start()
        for node in (a, b):
            yield node.hub.peers.store.client.connected()
            yield node.hub.peers.reader_client.connected()
        for i in range(11, 21):
            yield say(i)
        self.assertEqual(refused, ["m10"])
        self.assertEqual(acked, [f"m{i}" for i in range(21) if i != 10])
        got = yield self.messages(bob, 20)
        self.assertEqual([m.text for m in got], acked, "delivered to the other node, in order")
        bob.send(codec.HistoryRequest(after=0, limit=100))
        page = yield bob.expect(codec.HistoryPage)
        self.assertEqual([m.text for m in page.messages], acked)
        self.assertEqual([m.seq for m in page.messages], list(range(1, 21)))

    @defer.inlineCallbacks
    def test_after_an_outage_no_node_is_reaped_before_it_could_beat_again(self):
        """Redis back after an outage longer than --cluster-expiry (a
        failover, a restart): every heartbeat key has expired, and the first
        node back must not take the others for dead before they could beat
        again; it waits until it has been connected for the expiry."""
        a = yield self.node(expiry=2.0)
        b = yield self.node(expiry=2.0)
        alice = yield self.client("alice", server=a)
        bob = yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)
        yield self.redis.stop()
        yield self.redis.start()
        yield a.hub.peers.store.client.connected()
        # b's key as after a long outage, b not back yet: a's reaper runs now
        yield a.hub.peers.store.client.call("DEL", a.hub.peers.store.key("node", b.hub.peers.node))
        yield a.hub.peers._reap()
        yield b.hub.peers.store.client.connected()
        yield b.hub.peers._beat()
        yield a.hub.peers._reap()
        bob.send(codec.Say("still here", "r"))
        while True:
            packet = yield alice.next()
            self.assertFalse(isinstance(packet, codec.Left), f"bob was reaped while alive: {packet}")
            if isinstance(packet, codec.MessagePacket):
                self.assertEqual(packet.text, "still here")
                break


@defer.inlineCallbacks
def admin_password(a, b, nick: str):
    """The one-time password of the --admin account one of the nodes made at
    start (both checked; only one can have made it)."""
    yield defer.gatherResults([a.hub.accounts.admins_checked, b.hub.accounts.admins_checked])
    made = [n.hub.accounts.setup_passwords[nick] for n in (a, b) if nick in n.hub.accounts.setup_passwords]
    assert len(made) == 1, made
    return made[0]


class Accounts(ClusterTestCase):
    PASSWORD = "correct horse battery staple 9"

    @defer.inlineCallbacks
    def test_an_account_made_on_one_node_logs_in_on_another_and_is_back_in_its_rooms(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        alice.send(codec.AccountRequest("register", self.PASSWORD, ref="r"))
        done = yield alice.expect(codec.Done)
        self.assertEqual((done.op, done.ref), ("register", "r"))
        count = yield b.hub.accounts.store.count_accounts()
        self.assertEqual(count, 1, "counted for the cap on every node")
        alice.send(codec.Join("side", "j"))
        yield alice.expect(codec.RoomState)
        alice.send(codec.Quit())
        yield alice.lost
        guest = yield self.client(server=b)
        guest.send(codec.Login("alice", 2, ref="g"))
        error = yield guest.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("nick_registered", "g"))
        again = yield self.client(server=b)
        again.send(codec.Login("alice", 2, password=self.PASSWORD))
        welcome = yield again.expect(codec.Welcome)
        self.assertTrue(welcome.account)
        state = yield again.expect(codec.RoomState)
        self.assertEqual(state.room, "side")

    @defer.inlineCallbacks
    def test_an_admin_is_an_operator_on_every_node_and_after_a_resume_there(self):
        a = yield self.node(admins=["root"])
        b = yield self.node(admins=["root"])
        bob = yield self.client("bob", version=2, server=a)
        bob.send(codec.Join("den"))
        yield bob.expect(codec.RoomState)  # bob made it: its operator
        password = yield admin_password(a, b, "root")
        root = yield self.client(server=a)
        root.send(codec.Login("root", 2, password=password))
        first = yield root.expect(codec.Welcome)
        self.assertTrue(first.admin)
        root.send(codec.Join("den"))
        state = yield root.expect(codec.RoomState)
        self.assertEqual({p.nick: p.op for p in state.members}, {"bob": True, "root": True})
        carol = yield self.client("carol", version=2, server=b)
        carol.send(codec.Join("den"))
        state = yield carol.expect(codec.RoomState)
        self.assertEqual(
            {p.nick: p.op for p in state.members}, {"bob": True, "root": True, "carol": None}, "seen from b"
        )
        yield root.expect(codec.Joined)  # carol
        moved = yield self.client(server=b)
        moved.send(codec.Login("root", 2, first.resume))
        welcome = yield moved.expect(codec.Welcome)
        self.assertTrue(welcome.admin)
        state = yield moved.expect(codec.RoomState)
        self.assertEqual(
            {p.nick: p.op for p in state.members}, {"bob": True, "root": True, "carol": None}, "resumed on b"
        )

    @defer.inlineCallbacks
    def registered(self, server, nick):
        """A version 2 client of ``server`` that registered ``nick`` and is in room side."""
        client = yield self.client(nick, version=2, server=server)
        client.send(codec.AccountRequest("register", self.PASSWORD, ref="r"))
        yield client.expect(codec.Done)
        client.send(codec.Join("side"))
        yield client.expect(codec.RoomState)
        return client

    @defer.inlineCallbacks
    def test_a_login_elsewhere_takes_over_a_session_whose_connection_dropped_unseen(self):
        """alice's network went: node a has not noticed (her connection is
        open and silent). Her login with the password on node b answers as
        a resume would: the same session, in its rooms, nobody told of a
        leave or a join; a closes the old connection with BYE replaced."""
        a = yield self.node()
        b = yield self.node()
        alice, bob = yield self.alice_and_bob(a, b)
        again = yield self.client(server=b)
        again.send(codec.Login("alice", 2, password=self.PASSWORD, ref="l"))
        welcome = yield again.expect(codec.Welcome)
        self.assertEqual((welcome.nick, welcome.account), ("alice", True))
        state = yield again.expect(codec.RoomState)
        self.assertEqual(sorted(p.nick for p in state.members), ["alice", "bob"])
        bye = yield alice.expect(codec.Bye)
        self.assertEqual(bye.reason, "replaced")
        again.send(codec.Say("back", room="side"))
        seen = []
        while not seen or not isinstance(seen[-1], codec.MessagePacket):
            seen.append((yield bob.next()))
        self.assertEqual((seen[-1].sender, seen[-1].text), ("alice", "back"))
        self.assertFalse([p for p in seen if isinstance(p, (codec.Joined, codec.Left))], seen)
        carol = yield self.client("carol", version=2, server=a)
        carol.send(codec.Join("side"))
        state = yield carol.expect(codec.RoomState)
        self.assertEqual(sorted(p.nick for p in state.members), ["alice", "bob", "carol"], "a knew")

    @defer.inlineCallbacks
    def alice_and_bob(self, a, b):
        """alice, an account on node a, in room side with bob (on b)."""
        alice = yield self.registered(a, "alice")
        bob = yield self.client("bob", version=2, server=b)
        bob.send(codec.Join("side"))
        yield bob.expect(codec.RoomState)
        yield alice.expect(codec.Joined)
        return alice, bob

    @defer.inlineCallbacks
    def second_device(self, a, b):
        """alice and bob; alice's second device logs in on b while the first
        answers the PING: it is relayed to a. Returns (alice, bob, desk, its WELCOME)."""
        alice, bob = yield self.alice_and_bob(a, b)
        desk = yield self.client(server=b)
        desk.send(codec.Login("alice", 2, password=self.PASSWORD, ref="l"))
        ping = yield alice.expect(codec.ServerPing)
        alice.send(codec.Pong(ping.token))
        welcome = yield desk.expect(codec.Welcome)
        return alice, bob, desk, welcome

    @defer.inlineCallbacks
    def test_a_second_device_on_another_node_is_relayed_to_its_session(self):
        """As on one server: the same session (one id, its rooms), nobody
        told of a join; what either device says reaches the other and bob."""
        a = yield self.node()
        b = yield self.node()
        alice, bob, desk, welcome = yield self.second_device(a, b)
        self.assertEqual(
            (welcome.id, welcome.nick, welcome.account), (a.hub.registry.held("alice").id, "alice", True)
        )
        state = yield desk.expect(codec.RoomState)
        self.assertEqual((state.room, sorted(p.nick for p in state.members)), ("side", ["alice", "bob"]))
        alice.send(codec.Say("from the phone", "p", "side"))
        got = yield desk.expect(codec.MessagePacket)
        self.assertEqual((got.sender, got.text, got.ref), ("alice", "from the phone", None))
        desk.send(codec.Say("from the desk", "d", "side"))
        echo = yield desk.expect(codec.MessagePacket)
        self.assertEqual((echo.text, echo.ref), ("from the desk", "d"))
        got = yield alice.expect(codec.MessagePacket)
        self.assertEqual((got.text, got.ref), ("from the phone", "p"))
        got = yield alice.expect(codec.MessagePacket)
        self.assertEqual((got.text, got.ref), ("from the desk", None))
        desk.send(codec.Quit())
        yield desk.lost
        alice.send(codec.Say("one device again", room="side"))
        seen = []
        while len([p for p in seen if isinstance(p, codec.MessagePacket)]) < 3:
            seen.append((yield bob.next()))
        self.assertEqual(
            [p.text for p in seen if isinstance(p, codec.MessagePacket)],
            ["from the phone", "from the desk", "one device again"],
        )
        self.assertFalse(
            [p for p in seen if isinstance(p, (codec.Joined, codec.Left))], "one session throughout"
        )

    @defer.inlineCallbacks
    def test_a_relayed_device_is_announced_pending_once_by_the_node_it_reached(self):
        a = yield self.node()
        b = yield self.node()
        carol = yield self.client("carol", version=2, server=a)
        _alice, _bob, _desk, _welcome = yield self.second_device(a, b)
        carol.send(codec.Ping("sync", "p"))
        seen = []
        while not seen or not isinstance(seen[-1], codec.PongReply):
            seen.append((yield carol.next()))
        announced = {p.id for p in seen if isinstance(p, codec.Pending)}
        session = a.hub.registry.held("alice")
        (relayed,) = [c.id for c in session.devices if c.id != session.id]
        self.assertNotIn(relayed, announced, "none for the connection a made for the relayed device")
        self.assertIn(int(b.hub.peers.node), {id >> 32 for id in announced}, "the one b announced")

    @defer.inlineCallbacks
    def test_no_password_crosses_the_store(self):
        """The relayed LOGIN goes without its password (node b checked it);
        a packet with a password from the relayed device is refused on b."""
        a = yield self.node()
        b = yield self.node()
        _alice, _bob, desk, _welcome = yield self.second_device(a, b)
        desk.send(codec.AccountRequest("password", self.PASSWORD, "another horse battery 42", ref="p"))
        error = yield desk.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("not_permitted", "p"))
        desk.send(codec.Login("alice", 2, password=self.PASSWORD, ref="again"))
        error = yield desk.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("already_logged_in", "again"))
        desk.send(codec.AdminRequest("sessions", ref="s"))
        error = yield desk.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("not_admin", "s"), "relayed, and refused on a")
        inbox = yield a.hub.peers.store.client.call(
            "XRANGE", "chat:node:" + a.hub.peers.node + ":in", "-", "+"
        )
        notes = [json.loads(fields[1]) for _, fields in inbox]
        carried = [records.read_note(note) for note in notes if str(note.get("kind", "")).startswith("relay")]
        self.assertTrue(carried, "the relay went through a's inbox")
        sent = [note.payload for note in carried if isinstance(note, records.RelayOpened)]
        sent += [p for note in carried if isinstance(note, records.RelayIn) for p in note.payloads]
        self.assertTrue(sent)
        for payload in sent:
            self.assertNotIn(b"horse", payload)

    @defer.inlineCallbacks
    def test_a_relayed_device_resumes_on_its_node_and_hears_when_the_sessions_node_stops(self):
        a = yield self.node()
        b = yield self.node()
        alice, _bob, desk, welcome = yield self.second_device(a, b)
        again = yield self.client(server=b)
        again.send(codec.Login("alice", 2, welcome.resume))
        resumed = yield again.expect(codec.Welcome)
        self.assertEqual(resumed.id, welcome.id)
        bye = yield desk.expect(codec.Bye)
        self.assertEqual(bye.reason, "replaced")
        alice.send(codec.Say("still both", "s", "side"))
        got = yield again.expect(codec.MessagePacket)
        self.assertEqual(got.text, "still both")
        yield a.stopService()
        bye = yield again.expect(codec.Bye)
        self.assertEqual(bye.reason, "server_shutdown")
        yield again.lost

    @defer.inlineCallbacks
    def test_a_relayed_device_is_closed_when_the_sessions_node_dies(self):
        """Node a stops beating (as if killed): once b reaps it, b closes
        the device it relayed there, which logs in again (here, to b)."""
        a = yield self.node(expiry=1.0)
        b = yield self.node(expiry=1.0)
        _alice, bob, desk, _welcome = yield self.second_device(a, b)
        a.hub.peers._heartbeat.stop()
        yield a.hub.peers.store.client.call("DEL", "chat:node:" + a.hub.peers.node)
        bye = yield desk.expect(codec.Bye)
        self.assertEqual(bye.reason, "server_shutdown")
        left = yield bob.expect(codec.Left)
        self.assertEqual((left.nick, left.reason), ("alice", "connection_lost"))
        again = yield self.client(server=b)
        again.send(codec.Login("alice", 2, password=self.PASSWORD))
        back = yield again.expect(codec.Welcome)
        self.assertEqual(back.nick, "alice")

    @defer.inlineCallbacks
    def test_a_browser_is_relayed_too_an_irc_client_is_not(self):
        a = yield self.node()
        yield self.node(web=True, irc=True)  # b: self.ws and self.irc reach it
        alice = yield self.registered(a, "alice")
        page = yield self.ws(version=2)
        page.send(codec.Login("alice", 2, password=self.PASSWORD))
        ping = yield alice.expect(codec.ServerPing)
        alice.send(codec.Pong(ping.token))
        welcome = yield page.expect(codec.Welcome)
        self.assertTrue(welcome.account)
        yield page.expect(codec.RoomState)
        page.send(codec.Say("from the page", "w", "side"))
        got = yield alice.expect(codec.MessagePacket)
        self.assertEqual(got.text, "from the page")
        irc = yield self.irc()
        irc.send(f"PASS :{self.PASSWORD}", "NICK alice", "USER alice 0 * :alice")
        ping = yield alice.expect(codec.ServerPing)
        alice.send(codec.Pong(ping.token))
        refused = yield irc.expect(lambda text: " 433 " in text)
        self.assertIn("in use on another server", refused)

    @defer.inlineCallbacks
    def test_a_wrong_password_elsewhere_asks_nobody(self):
        """The password is checked before the holding node is asked: a wrong
        one is bad_password, and the session is not disturbed."""
        a = yield self.node()
        b = yield self.node()
        alice = yield self.registered(a, "alice")
        other = yield self.client(server=b)
        other.send(codec.Login("alice", 2, password="not it at all 12345", ref="l"))
        error = yield other.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("bad_password", "l"))
        alice.send(codec.Say("undisturbed", "s", "side"))
        said = yield alice.expect(codec.MessagePacket)
        self.assertEqual(said.text, "undisturbed", "no PING came before it")


class AdminRightsAcrossNodes(ClusterTestCase):
    @defer.inlineCallbacks
    def test_a_resume_elsewhere_brings_no_rights_the_session_had_not(self):
        """docs/protocol.md 15.7: the admin deletes its account on a and its
        session registers the name again: no rights there, and none when the
        session is resumed on b (whose list of admins is older)."""
        a = yield self.node(admins=["root"])
        b = yield self.node(admins=["root"])
        password = yield admin_password(a, b, "root")
        root = yield self.client(server=a)
        root.send(codec.Login("root", 2, password=password))
        first = yield root.expect(codec.Welcome)
        self.assertTrue(first.admin)
        root.send(codec.AccountRequest("delete", password, ref="d"))
        yield root.expect(codec.Done)
        root.send(codec.AccountRequest("register", "someone else's pw", ref="r"))
        yield root.expect(codec.Done)
        root.send(codec.AdminRequest("sessions", ref="s"))
        error = yield root.expect(codec.Error)
        self.assertEqual(error.code, "not_admin")
        moved = yield self.client(server=b)
        moved.send(codec.Login("root", 2, first.resume))
        welcome = yield moved.expect(codec.Welcome)
        self.assertFalse(welcome.admin)
        moved.send(codec.AdminRequest("sessions", ref="s"))
        error = yield moved.expect(codec.Error)
        self.assertEqual(error.code, "not_admin")

    @defer.inlineCallbacks
    def root(self, a, b):
        """The admin ``root`` (of both nodes' --admin) logged in on ``a``."""
        password = yield admin_password(a, b, "root")
        root = yield self.client(server=a)
        root.send(codec.Login("root", 2, password=password))
        yield root.expect(codec.Welcome)
        return root

    @defer.inlineCallbacks
    def test_sessions_lists_every_nodes_sessions_and_pending_connections(self):
        a = yield self.node(admins=["root"])
        b = yield self.node(admins=["root"])
        c = yield self.node()  # not an --admin node: a or b makes root's account
        root = yield self.root(a, b)
        yield self.client("bob", server=b)
        carol = yield self.client("carol", version=2, server=c)
        carol.send(codec.Join("den"))
        yield carol.expect(codec.RoomState)
        yield self.client(server=c)  # connected, not logged in
        root.send(codec.AdminRequest("sessions", ref="s"))
        sessions = yield root.expect(codec.Sessions)
        self.assertEqual(sessions.ref, "s")
        rooms = {s.nick: sorted(s.rooms) for s in sessions.connected}
        self.assertEqual(rooms, {"root": [], "bob": ["general"], "carol": ["den"]})
        self.assertEqual(len(sessions.pending), 1, "the connection on c that has not logged in")
        self.assertEqual(len({s.id for s in sessions.connected}), 3, "one id each: ids are per node")

    @defer.inlineCallbacks
    def test_sessions_leaves_out_a_node_that_does_not_answer(self):
        """A node that died and is not reaped yet is still listed in Redis:
        it is waited for no longer than the patience, then left out."""
        a = yield self.node(admins=["root"])
        b = yield self.node(admins=["root"])
        root = yield self.root(a, b)
        yield self.client("bob", server=b)
        a.hub.peers.questions.patience = 0.5
        yield a.hub.peers.store.client.call("SADD", "chat:nodes", "999")  # a node that never answers
        yield a.hub.peers.store.client.call("SET", "chat:node:999", "1", "PX", 60_000)
        root.send(codec.AdminRequest("sessions", ref="s"))
        sessions = yield root.expect(codec.Sessions)
        self.assertEqual({s.nick for s in sessions.connected}, {"root", "bob"})

    @defer.inlineCallbacks
    def test_an_admin_kicks_a_session_on_another_node(self):
        """What SESSIONS lists the admin may kick: the node holding the nick
        records it in the target's rooms (every node's members see it),
        then BYE; a nick nobody holds is no_such_nick, as on one server."""
        a = yield self.node(admins=["root"])
        b = yield self.node(admins=["root"])
        root = yield self.root(a, b)
        alice = yield self.client("alice", server=a)
        bob = yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)
        root.send(codec.AdminRequest("kick", target="Bob", reason="spam", ref="k"))
        done = yield root.expect(codec.Done)
        self.assertEqual((done.op, done.ref), ("kick", "k"))
        record = yield bob.expect(codec.MessagePacket)
        self.assertEqual(
            (record.sender, record.action), ("root", {"op": "server_kick", "target": "bob", "reason": "spam"})
        )
        self.assertEqual((yield bob.expect(codec.Bye)), codec.Bye("kicked"))
        seen = yield alice.expect(codec.MessagePacket)
        self.assertEqual((seen.sender, seen.action), (record.sender, record.action))
        left = yield alice.expect(codec.Left)
        self.assertEqual((left.nick, left.reason), ("bob", "kicked"))
        stand_ins = {s.nick for s in b.hub.peers.remotes.values()}
        self.assertEqual(stand_ins, {"alice"}, "root's stand-in on b, forgotten")
        root.send(codec.AdminRequest("kick", target="nobody", ref="n"))
        error = yield root.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("no_such_nick", "n"))


class BadEntries(ClusterTestCase):
    @defer.inlineCallbacks
    def test_a_malformed_entry_is_skipped_and_the_room_goes_on(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", server=a)
        bob = yield self.client("bob", server=b)
        yield alice.expect(codec.Joined)
        client = a.hub.peers.store.client
        seq = int((yield client.call("GET", "chat:r:general:seq")) or 0)
        for kind, value in (
            ("m", b"no separators"),
            ("j", b"1|2|{not json"),
            ("l", b"|0|{}"),
            ("zz", b"1|1|{}"),
        ):
            yield client.call("XADD", "chat:r:general", f"{seq}-*", kind, value)
        alice.send(codec.Say("still here", "s"))
        got = yield bob.expect(codec.MessagePacket)
        self.assertEqual((got.text, got.seq), ("still here", seq + 1))
        mine = yield alice.expect(codec.MessagePacket)
        self.assertEqual(mine.ref, "s")


class Listing(ClusterTestCase):
    @defer.inlineCallbacks
    def test_list_shows_the_rooms_of_every_node(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        alice.send(codec.Join("Side"))
        yield alice.expect(codec.RoomState)
        alice.send(codec.SetTopic("Side", "on node a"))
        yield alice.expect(codec.TopicChanged)
        bob = yield self.client("bob", version=2, server=b)
        bob.send(codec.ListRooms("l"))
        listing = yield bob.expect(codec.RoomList)
        self.assertEqual(listing.ref, "l")
        self.assertEqual(
            [(info.room, info.topic, info.members) for info in listing.rooms],
            [("general", "", 0), ("Side", "on node a", 1)],  # version 2 joins rooms itself
        )
        alice.send(codec.Part("Side"))
        yield alice.expect(codec.Left)
        bob.send(codec.ListRooms())
        listing = yield bob.expect(codec.RoomList)
        self.assertEqual(
            [info.room for info in listing.rooms], ["general"], "an empty room is gone everywhere"
        )

    @defer.inlineCallbacks
    def test_a_secret_room_of_another_node_is_not_listed(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        alice.send(codec.Join("hideout"))
        yield alice.expect(codec.RoomState)
        alice.send(codec.Moderate("hideout", "mode", ref="m", secret=True))
        yield alice.expect(codec.MessagePacket)
        bob = yield self.client("bob", version=2, server=b)
        bob.send(codec.ListRooms("l"))
        listing = yield bob.expect(codec.RoomList)
        self.assertEqual([info.room for info in listing.rooms], ["general"])
        alice.send(codec.ListRooms("l"))
        listing = yield alice.expect(codec.RoomList)
        self.assertEqual([info.room for info in listing.rooms], ["general", "hideout"], "to its member")


class Moderation(ClusterTestCase):
    @defer.inlineCallbacks
    def test_an_operator_on_one_node_kicks_and_bans_on_another(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        alice.send(codec.Join("side"))
        yield alice.expect(codec.RoomState)  # she made it: its operator
        bob = yield self.client("bob", version=2, server=b)
        bob.send(codec.Join("side"))
        state = yield bob.expect(codec.RoomState)
        self.assertEqual([(p.nick, p.op) for p in state.members], [("alice", True), ("bob", None)])
        carol = yield self.client("carol", version=2, server=b)
        alice.send(codec.Moderate("side", "ban", "carol", "spam", ref="b"))
        record = yield alice.expect(codec.MessagePacket)  # the record answers
        self.assertEqual((record.ref, record.action["op"]), ("b", "ban"))
        carol.send(codec.Join("side", "c"))
        error = yield carol.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("banned", "c"), "the ban holds on the other node")
        alice.send(codec.Moderate("side", "mode", invite_only=True, ref="m"))
        record = yield alice.expect(codec.MessagePacket)
        self.assertEqual(record.ref, "m")
        alice.send(codec.Moderate("side", "kick", "bob", "bye", ref="k"))
        left = yield bob.expect(codec.Left)
        self.assertEqual((left.nick, left.reason, left.room), ("bob", "kicked", "side"))
        bob.send(codec.Join("side", "again"))
        error = yield bob.expect(codec.Error)
        self.assertEqual(
            (error.code, error.ref), ("invite_only", "again"), "the mode holds on the other node"
        )

    @defer.inlineCallbacks
    def test_room_modes_and_a_guests_voice_hold_on_another_node(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        alice.send(codec.Join("side"))
        yield alice.expect(codec.RoomState)
        bob = yield self.client("bob", version=2, server=b)
        bob.send(codec.Join("side"))
        yield bob.expect(codec.RoomState)
        joined = yield alice.expect(codec.Joined)  # alice's node knows bob is in: she can voice him
        self.assertEqual(joined.nick, "bob")
        alice.send(codec.Moderate("side", "mode", ref="m", moderated=True, key="k", limit=2))
        yield alice.expect(codec.MessagePacket)
        yield bob.expect(codec.MessagePacket)
        bob.send(codec.Say("hello?", "s", room="side"))
        error = yield bob.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("moderated", "s"), "moderated on the other node")
        alice.send(codec.Moderate("side", "voice", "bob", ref="v"))
        yield bob.expect(codec.MessagePacket)
        bob.send(codec.Say("voiced", "s2", room="side"))
        said = yield bob.expect(codec.MessagePacket)
        self.assertEqual((said.text, said.ref), ("voiced", "s2"), "a guest's voice travels")
        carol = yield self.client("carol", version=2, server=b)
        carol.send(codec.Join("side", "c", "k"))
        error = yield carol.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("room_full", "c"), "the key and the limit hold there")

    @defer.inlineCallbacks
    def test_a_rooms_topic_is_kept_in_redis_with_its_rules(self):
        a = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        alice.send(codec.AccountRequest("register", "correct horse", ref="r"))
        yield alice.expect(codec.Done)  # an account operator: the rules stay with the empty room
        alice.send(codec.Join("side"))
        yield alice.expect(codec.RoomState)
        alice.send(codec.SetTopic("side", "plans for friday"))
        alice.send(codec.Moderate("side", "ban", "carol", ref="b"))
        alice.send(codec.Part("side", ref="p"))
        left = yield alice.expect(codec.Left)
        self.assertEqual(left.ref, "p")
        b = yield self.node()  # one that never saw the room, after it was empty
        bob = yield self.client("bob", version=2, server=b)
        bob.send(codec.Join("side"))
        state = yield bob.expect(codec.RoomState)
        self.assertEqual(state.topic, "plans for friday")

    @defer.inlineCallbacks
    def test_a_guest_operators_rules_go_with_the_empty_room(self):
        """docs/protocol.md 14.2: nobody who could come back runs it."""
        a = yield self.node()
        gus = yield self.client("gus", version=2, server=a)
        gus.send(codec.Join("side"))
        yield gus.expect(codec.RoomState)
        gus.send(codec.SetTopic("side", "plans for friday"))
        gus.send(codec.Moderate("side", "mode", invite_only=True, ref="m"))
        gus.send(codec.Part("side", ref="p"))
        left = yield gus.expect(codec.Left)
        self.assertEqual(left.ref, "p")
        b = yield self.node()
        bob = yield self.client("bob", version=2, server=b)
        bob.send(codec.Join("side"))
        state = yield bob.expect(codec.RoomState)
        self.assertEqual((state.topic, state.invite_only), ("", False))
        self.assertEqual([(p.nick, p.op) for p in state.members], [("bob", True)])

    @defer.inlineCallbacks
    def test_a_room_whose_last_member_was_reaped_goes_as_after_a_clean_leave(self):
        """Its last member's node killed: once reaped, the room's rules and
        topic go as after a PART (14.2); the default room keeps its topic."""
        from twisted.internet import reactor

        from scripts.spawn import spawn_server

        b = yield self.node(expiry=2.0)
        doomed = spawn_server(reactor, "--cluster", self.redis.url, "--cluster-expiry", "2")
        self.addCleanup(lambda: doomed.ended)
        self.addCleanup(lambda: doomed.signal("KILL") if not doomed.ended.called else None)
        port = yield doomed.listening
        gus = yield connect(reactor, port)
        self.clients.append(gus)
        yield gus.login("gus", version=2)
        for room in ("general", "side"):
            gus.send(codec.Join(room))
            yield gus.expect(codec.RoomState)
        gus.send(codec.SetTopic("general", "kept"))
        gus.send(codec.SetTopic("side", "plans for friday"))
        gus.send(codec.Moderate("side", "mode", invite_only=True, ref="m"))
        while (yield gus.expect(codec.MessagePacket)).ref != "m":  # the record, stored
            pass
        bob = yield self.client("bob", version=2, server=b)
        bob.send(codec.Join("general"))
        state = yield bob.expect(codec.RoomState)
        self.assertEqual(state.topic, "kept")
        doomed.signal("KILL")
        yield doomed.ended
        while True:  # bounded by expect's timeout: the reaper's LEFT
            left = yield bob.expect(codec.Left, timeout=20)
            if left.nick == "gus":
                break
        self.assertEqual(left.reason, "connection_lost")
        bob.send(codec.Join("side", ref="j"))
        state = yield bob.next()
        while not isinstance(state, (codec.RoomState, codec.Error)):  # presence before the answer
            state = yield bob.next()
        self.assertIsInstance(state, codec.RoomState, "the room's invite-only rule went with it")
        self.assertEqual((state.topic, state.invite_only), ("", False))
        self.assertEqual([(p.nick, p.op) for p in state.members], [("bob", True)])
        fresh = yield self.node()  # one that reads the store anew
        carol = yield self.client("carol", version=2, server=fresh)
        carol.send(codec.Join("general"))
        state = yield carol.expect(codec.RoomState)
        self.assertEqual(state.topic, "kept", "a room that always exists keeps its topic")

    @defer.inlineCallbacks
    def test_a_server_ban_made_on_one_node_holds_on_every_node(self):
        a = yield self.node(admins=["root"])
        b = yield self.node(admins=["root"])
        password = yield admin_password(a, b, "root")
        root = yield self.client(server=a)
        root.send(codec.Login("root", 2, password=password))
        yield root.expect(codec.Welcome)
        bob = yield self.client("bob", version=2, server=b)
        root.send(codec.AdminRequest("ban", target="bob", reason="spam", ref="x"))
        done = yield root.expect(codec.Done)
        self.assertEqual(done.ref, "x")
        bye = yield bob.expect(codec.Bye)
        self.assertEqual(bye.reason, "kicked")
        again = yield self.client(server=b)
        again.send(codec.Login("bob", 2, ref="l"))
        error = yield again.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("banned", "l"))


class Renames(ClusterTestCase):
    """NICK (docs/protocol.md 15.11) across nodes: the nick is claimed in
    the store as LOGIN claims it, and the rename reaches every node's members."""

    @defer.inlineCallbacks
    def joined(self, client, *rooms):
        for room in rooms:
            client.send(codec.Join(room))
            yield client.expect(codec.RoomState)

    @defer.inlineCallbacks
    def test_a_rename_reaches_the_other_node_once_and_claims_the_new_nick(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client(server=a)
        welcome = yield alice.login("alice", version=2)
        yield self.joined(alice, "general", "side")
        bob = yield self.client("bob", version=2, server=b)
        yield self.joined(bob, "general", "side")
        old = yield self.client("olga", server=b)  # version 1: in general
        yield alice.expect(codec.Joined)
        yield alice.expect(codec.Joined)
        alice.send(codec.Nick("alicia", ref="n"))
        mine = yield alice.expect(codec.Renamed)
        self.assertEqual(mine, codec.Renamed("alice", "alicia", "n"))
        theirs = yield bob.expect(codec.Renamed)
        self.assertEqual(theirs, codec.Renamed("alice", "alicia"))
        left = yield old.expect(codec.Left)
        self.assertEqual((left.nick, left.reason), ("alice", "quit"))
        joined = yield old.expect(codec.Joined)
        self.assertEqual((joined.id, joined.nick), (left.id, "alicia"))
        alice.send(codec.Say("marker", room="side"))
        packet = yield bob.next()
        while not isinstance(packet, codec.MessagePacket):
            self.assertNotIsInstance(packet, codec.Renamed, "once, though two rooms are shared")
            packet = yield bob.next()
        self.assertEqual((packet.sender, packet.text), ("alicia", "marker"))
        # the new nick is claimed everywhere, the old one free
        bob.send(codec.Nick("ALICIA", ref="t"))
        error = yield bob.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("nick_taken", "t"))
        other = yield self.client(server=b)
        other.send(codec.Login("Alicia", 2, ref="l"))
        error = yield other.expect(codec.Error)
        self.assertEqual((error.code, error.ref), ("nick_taken", "l"))
        again = yield connect_welcome(self, "alice", b)
        self.assertEqual(again.nick, "alice")
        # a whisper to the new nick reaches its node; to the old, no one of that session
        bob.send(codec.Whisper("alicia", "psst"))
        private = yield alice.expect(codec.Private)
        self.assertEqual((private.sender, private.to), ("bob", "alicia"))
        # members on either node, and a node that reads the room afresh, show the new nick
        erin = yield self.client("erin", version=2, server=b)
        erin.send(codec.Join("side"))
        state = yield erin.expect(codec.RoomState)
        self.assertIn("alicia", [m.nick for m in state.members])
        c = yield self.node()
        fay = yield self.client("fay", version=2, server=c)
        fay.send(codec.Join("side"))
        state = yield fay.expect(codec.RoomState)
        self.assertEqual(sorted(m.nick for m in state.members), ["alicia", "bob", "erin", "fay"])
        # and the session resumes on another node by its new nick
        moved = yield self.client(server=c)
        back = yield moved.login("alicia", resume=welcome.resume, version=2)
        self.assertEqual((back.id, back.nick, back.rooms), (welcome.id, "alicia", ["general", "side"]))

    @defer.inlineCallbacks
    def test_a_change_of_case_reaches_the_other_node(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.client("alice", version=2, server=a)
        yield self.joined(alice, "side")
        bob = yield self.client("bob", version=2, server=b)
        yield self.joined(bob, "side")
        yield alice.expect(codec.Joined)
        bob.send(codec.Nick("Bob", ref="n"))
        self.assertEqual((yield bob.expect(codec.Renamed)), codec.Renamed("bob", "Bob", "n"))
        self.assertEqual((yield alice.expect(codec.Renamed)), codec.Renamed("bob", "Bob"))
        carol = yield self.client("carol", version=2, server=a)
        carol.send(codec.Join("side"))
        state = yield carol.expect(codec.RoomState)
        self.assertEqual(sorted(m.nick for m in state.members), ["Bob", "alice", "carol"])
