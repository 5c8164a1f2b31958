"""Conversations (docs/protocol.md 19) on a cluster: replies, edits,
deletions and reactions in each room's one order across nodes, their
present state in history and catch-up on every node, deleted text gone from
Redis, typing and away across nodes, direct conversations across nodes.
Real Valkey (or Redis) servers and real sockets, as tests/test_cluster.py."""

import os

from twisted.internet import defer

from chatproto import codec
from tests.netclient import connect
from tests.test_cluster import ClusterTestCase

PASSWORD = "correct horse battery staple 9"


class Conversations(ClusterTestCase):
    @defer.inlineCallbacks
    def member(self, nick, node, room="side", account=False):
        """A version 2 client of ``node`` in ``room`` (registered first with ``account``)."""
        client = yield self.client(nick, version=2, server=node)
        if account:
            client.send(codec.AccountRequest("register", PASSWORD, ref="reg"))
            yield client.expect(codec.Done)
        if room is not None:
            client.send(codec.Join(room, "j"))
            state = yield client.expect(codec.RoomState)
            client.state = state
        return client

    @defer.inlineCallbacks
    def seen(self, client, count):
        """The next ``count`` MESSAGE and CHANGED packets, skipping the rest."""
        got = []
        while len(got) < count:
            packet = yield client.expect((codec.MessagePacket, codec.Changed, codec.Error))
            if isinstance(packet, codec.Error):
                raise AssertionError(f"refused: {packet} after {got}")
            got.append(packet)
        return got

    @defer.inlineCallbacks
    def answer(self, client, ref):
        """The packet answering the request ``ref`` (MESSAGE, CHANGED or ERROR)."""
        while True:
            packet = yield client.expect((codec.MessagePacket, codec.Changed, codec.Error))
            if packet.ref == ref:
                return packet

    @defer.inlineCallbacks
    def page(self, client, **request):
        client.send(codec.HistoryRequest(room="side", **request))
        page = yield client.expect(codec.HistoryPage)
        return page

    @defer.inlineCallbacks
    def raw_redis(self, client):
        """Every key of the store and everything in it, as bytes."""
        found = []
        keys = yield client.call("KEYS", "*")
        for key in keys:
            kind = yield client.call("TYPE", key)
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind == "stream":
                value = yield client.call("XRANGE", key, "-", "+")
            elif kind == "hash":
                value = yield client.call("HGETALL", key)
            elif kind == "set":
                value = yield client.call("SMEMBERS", key)
            elif kind == "zset":
                value = yield client.call("ZRANGE", key, 0, -1)
            elif kind == "list":
                value = yield client.call("LRANGE", key, 0, -1)
            else:
                value = yield client.call("GET", key)
            found.append(key + b" " + repr(value).encode())
        return b"\n".join(found)


def shown(packet):
    """What a member sees of a MESSAGE or CHANGED, refs aside."""
    if isinstance(packet, codec.Changed):
        m = packet.message
        return ("changed", packet.kind, packet.by, m.seq, m.text, m.rev, m.deleted, _reactions(m))
    return ("message", packet.seq, packet.sender, packet.text, packet.reply)


def _reactions(message):
    return tuple((r.emoji, tuple(r.by)) for r in message.reactions or ())


def state(message):
    """A message's present state, as history shows it."""
    return (
        message.seq,
        message.sender,
        message.text,
        message.edited is not None,
        message.deleted,
        message.deleted_by,
        _reactions(message),
        message.reply,
        message.rev,
    )


class ChangesAcrossNodes(Conversations):
    @defer.inlineCallbacks
    def test_edit_delete_react_across_two_nodes_in_one_order(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.member("alice", a)
        bob = yield self.member("bob", b)
        yield alice.expect(codec.Joined)
        alice.send(codec.Say("hello there", "s1", room="side"))
        yield alice.expect(codec.MessagePacket)
        bob.send(codec.Say("hi alice", "s2", room="side", reply=1))
        mine = yield self.answer(bob, "s2")
        self.assertEqual((mine.seq, mine.reply), (2, codec.Quote(1, "alice", "hello there")))
        # both nodes at once, on the same message: an edit and reactions, in one order everywhere
        alice.send(codec.Edit("side", 1, "hello there, bob", "e1"))
        bob.send(codec.React("side", 1, "👍", ref="r1"))
        alice.send(codec.React("side", 1, "👍", ref="r2"))
        bob.send(codec.React("side", 1, ":tada:", ref="r3"))
        alice.send(codec.React("side", 2, "❤️", ref="r4"))
        bob.send(codec.React("side", 1, ":tada:", on=False, ref="r5"))
        got_alice = yield self.seen(alice, 7)  # bob's MESSAGE, then the 6 changes
        got_bob = yield self.seen(bob, 6)
        alice_view = [shown(p) for p in got_alice[1:]]
        bob_view = [shown(p) for p in got_bob]
        self.assertEqual(alice_view, bob_view, "one order on both nodes")
        self.assertEqual([view[5] for view in alice_view], list(range(1, 7)), "each change took the next rev")
        bob.send(codec.Delete("side", 2, "d1"))
        deleted = yield self.answer(bob, "d1")
        self.assertEqual((deleted.message.text, deleted.message.deleted, deleted.message.rev), ("", True, 7))
        alice.send(codec.React("side", 2, "❤️", ref="r6"))  # after the deletion, in the order
        error = yield self.answer(alice, "r6")
        self.assertEqual(error.code, "message_deleted")
        # the present state: the same on every node, in a later node's room and in every history
        order = [v[2] for v in alice_view if v[1] == "react" and v[7] and v[7][0][0] == "👍"]
        thumbs = tuple(dict.fromkeys(order))  # who put 👍 first, as the one order says
        c = yield self.node()
        carol = yield self.member("carol", c)
        history = {m.seq: state(m) for m in carol.state.history}
        self.assertEqual(carol.state.rev, 7)
        first, second = history[1], history[2]
        self.assertEqual(first[:5], (1, "alice", "hello there, bob", True, None))
        self.assertEqual(first[6], (("👍", thumbs),))
        self.assertEqual(second[:6], (2, "bob", "", False, True, None), "deleted by its author")
        self.assertEqual(second[6], (), "its reactions went with it")
        self.assertEqual(
            second[7], codec.Quote(1, "alice", "hello there, bob"), "its quote: the present text"
        )
        for client in (alice, bob, carol):
            page = yield self.page(client, after=0)
            self.assertEqual([state(m) for m in page.messages], [first, second])

    @defer.inlineCallbacks
    def test_refusals_are_the_senders_alone_and_take_no_seq_or_rev(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.member("alice", a)
        bob = yield self.member("bob", b)
        yield alice.expect(codec.Joined)
        alice.send(codec.Say("mine", "s1", room="side"))
        yield bob.expect(codec.MessagePacket)
        for request, code in (
            (codec.Edit("side", 1, "theirs now", "x1"), "not_yours"),
            (codec.Edit("side", 7, "nothing", "x2"), "no_such_message"),
            (codec.Say("to nothing", "x3", room="side", reply=9), "no_such_message"),
            (codec.Delete("side", 1, "x4"), "not_yours"),
        ):
            bob.send(request)
            error = yield bob.expect(codec.Error)
            self.assertEqual((error.code, error.ref), (code, request.ref))
        bob.send(codec.React("side", 1, "👍", ref="r1"))
        bob.send(codec.React("side", 1, "👍", ref="r2"))  # again: unchanged, his alone
        answers = {}
        while len(answers) < 2:
            packet = yield bob.expect(codec.Changed)
            answers[packet.ref] = packet.message.rev
        self.assertEqual(answers, {"r1": 1, "r2": 1}, "the unchanged one shows the rev it has")
        bob.send(codec.Say("after", "s2", room="side", reply=1))
        said = yield bob.expect(codec.MessagePacket)
        self.assertEqual(said.seq, 2, "no seq used by the refused reply")
        seen = yield self.seen(alice, 3)
        self.assertEqual(
            [type(p).__name__ for p in seen], ["MessagePacket", "Changed", "MessagePacket"], "only the change"
        )
        self.assertEqual(seen[-1].text, "after")


class DeletedText(Conversations):
    @defer.inlineCallbacks
    def test_deleted_and_replaced_text_leave_no_trace_in_redis(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.member("alice", a)
        bob = yield self.member("bob", b)
        yield alice.expect(codec.Joined)
        alice.send(codec.Say("first draft wording", "s1", room="side"))
        yield alice.expect(codec.MessagePacket)
        alice.send(codec.Edit("side", 1, "the secret sauce is 42", "e1"))
        yield self.answer(alice, "e1")
        bob.send(codec.Say("what sauce?", "s2", room="side", reply=1))  # quotes its start
        reply = yield self.answer(bob, "s2")
        self.assertEqual(reply.reply.text, "the secret sauce is 42")
        bob.send(codec.React("side", 2, "🤔", ref="r"))  # the reply's change entry carries the quote too
        yield self.answer(bob, "r")
        alice.send(codec.React("side", 1, "👍", ref="r"))
        yield self.answer(alice, "r")
        raw = yield self.raw_redis(a.hub.peers.store.client)
        self.assertIn(b"the secret sauce", raw, "the check can see text")
        self.assertNotIn(b"first draft", raw, "an edit keeps no old text")
        alice.send(codec.Delete("side", 1, "d"))
        deleted = yield self.answer(alice, "d")
        self.assertEqual((deleted.kind, deleted.message.text, deleted.message.deleted), ("delete", "", True))
        raw = yield self.raw_redis(a.hub.peers.store.client)
        self.assertNotIn(b"secret sauce", raw)
        self.assertNotIn(b"first draft", raw)
        page = yield self.page(bob, after=0)
        self.assertEqual(
            [(m.seq, m.text, m.deleted) for m in page.messages], [(1, "", True), (2, "what sauce?", None)]
        )
        self.assertEqual(page.messages[1].reply, codec.Quote(1, deleted=True))
        self.assertEqual(_reactions(page.messages[1]), (("🤔", ("bob",)),))


class EditedAtOnce(Conversations):
    @defer.inlineCallbacks
    def test_a_message_edited_and_deleted_before_anyone_read_it(self):
        """Said and edited in one go: the edit takes the message's entry out
        of the stream before any node read it back. The sender is answered
        for both, the other node delivers the present state, nothing waits."""
        a = yield self.node()
        b = yield self.node()
        alice = yield self.member("alice", a)
        bob = yield self.member("bob", b)
        yield alice.expect(codec.Joined)
        for round in range(5):
            seq = round + 1
            alice.send(codec.Say(f"typo {round}", f"s{round}", room="side"))
            alice.send(codec.Edit("side", seq, f"fixed {round}", f"e{round}"))
            said = yield self.answer(alice, f"s{round}")
            edited = yield self.answer(alice, f"e{round}")
            self.assertEqual(
                (said.seq, edited.message.seq, edited.message.text), (seq, seq, f"fixed {round}")
            )
            while True:  # bob: the MESSAGE if his node read it in time, then the CHANGED
                packet = yield bob.expect((codec.MessagePacket, codec.Changed))
                if isinstance(packet, codec.Changed):
                    self.assertEqual((packet.message.seq, packet.message.text), (seq, f"fixed {round}"))
                    break
                self.assertEqual(packet.seq, seq)
        alice.send(codec.Say("gone soon", "g", room="side"))
        alice.send(codec.Delete("side", 6, "d"))
        yield self.answer(alice, "g")
        deleted = yield self.answer(alice, "d")
        self.assertEqual(deleted.message.deleted, True)
        bob.send(codec.Say("still in order", "b", room="side"))
        mine = yield self.answer(bob, "b")
        self.assertEqual(mine.seq, 7)
        got = yield alice.expect(codec.MessagePacket)
        self.assertEqual(got.text, "still in order")
        page = yield self.page(bob, after=0)
        self.assertEqual(
            [m.text for m in page.messages], [f"fixed {i}" for i in range(5)] + ["", "still in order"]
        )
        raw = yield self.raw_redis(a.hub.peers.store.client)
        self.assertNotIn(b"typo", raw)
        self.assertNotIn(b"gone soon", raw)


class KilledMidEdits(Conversations):
    @defer.inlineCallbacks
    def test_every_acknowledged_change_of_a_killed_node_is_kept(self):
        from twisted.internet import reactor

        from scripts.spawn import spawn_server

        a = yield self.node(expiry=2.0)
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
        alice = yield self.member("alice", a)
        bob = yield connect(reactor, port, "bob", 2)
        self.clients.append(bob)
        bob.send(codec.Join("side", "j"))
        yield bob.expect(codec.RoomState)
        bob.send(codec.Say("draft 0", "s", room="side"))
        yield bob.expect(codec.MessagePacket)
        alice.send(codec.Say("react to me", "s", room="side"))
        yield alice.expect(codec.MessagePacket)
        emoji = ["👍", "🎉", "❤️", "😀", "🔥", "👀", "🙏", "✅"]
        for i in range(1, 26):  # within the SAY burst (40)
            bob.send(codec.Edit("side", 1, f"draft {i}", f"e{i}"))
            if i <= len(emoji):
                bob.send(codec.React("side", 2, emoji[i - 1], ref=f"r{i}"))
        acked_edits, acked_emoji = [0], []
        for _ in range(15):  # the first acknowledgements, then the kill, mid-stream
            packet = yield bob.expect(codec.Changed)
            if packet.ref.startswith("e"):
                acked_edits.append(int(packet.ref[1:]))
            else:
                acked_emoji.append(emoji[int(packet.ref[1:]) - 1])
        doomed.signal("KILL")
        yield doomed.ended
        while True:  # what alice saw is what was stored; then bob is reaped
            packet = yield alice.next(timeout=20)
            if isinstance(packet, codec.Left):
                self.assertEqual(packet.nick, "bob")
                break
        page = yield self.page(alice, changed_after=0)
        self.assertFalse(page.more)
        by_seq = {m.seq: m for m in page.messages}
        kept = int(by_seq[1].text.split()[1])
        self.assertGreaterEqual(kept, max(acked_edits), "the last acknowledged edit (or a later one) is kept")
        # (no reaction among the acknowledgements: the message may have none, and no change)
        reacted = [r.emoji for r in by_seq[2].reactions or ()] if 2 in by_seq or acked_emoji else []
        self.assertEqual(reacted[: len(acked_emoji)], acked_emoji, "every acknowledged reaction, in order")
        self.assertEqual(page.rev, max(m.rev for m in page.messages))
        self.assertEqual(page.rev, kept + len(reacted), "one rev for each change kept, none skipped")


class CatchingUp(Conversations):
    @defer.inlineCallbacks
    def test_a_later_node_catches_up_by_rev_and_a_resumed_session_sees_the_same(self):
        a = yield self.node(history_replay=3)
        alice = yield self.client(server=a)
        welcome = yield alice.login("alice", version=2)
        alice.send(codec.Join("side", "j"))
        yield alice.expect(codec.RoomState)
        for i in range(1, 11):
            alice.send(codec.Say(f"m{i}", room="side"))
        yield self.seen(alice, 10)
        for seq in (2, 5, 3, 9):
            alice.send(codec.Edit("side", seq, f"m{seq} edited"))
        alice.send(codec.Delete("side", 5))
        alice.send(codec.React("side", 1, "👍"))
        yield self.seen(alice, 6)
        c = yield self.node(history_replay=3)
        carol = yield self.member("carol", c)
        self.assertEqual(carol.state.rev, 6)
        self.assertEqual([m.seq for m in carol.state.history], [8, 9, 10])
        self.assertEqual(carol.state.history[1].text, "m9 edited")
        page = yield self.page(carol, changed_after=0, limit=3)
        self.assertEqual(
            ([(m.seq, m.rev) for m in page.messages], page.more, page.rev),
            ([(2, 1), (3, 3), (9, 4)], True, 6),
        )
        page = yield self.page(carol, changed_after=4)
        self.assertEqual(
            [(m.seq, m.rev, m.text, m.deleted) for m in page.messages], [(5, 5, "", True), (1, 6, "m1", None)]
        )
        self.assertEqual(page.more, False)
        page = yield self.page(carol, before=6, limit=3)
        self.assertEqual([(m.seq, m.text) for m in page.messages], [(3, "m3 edited"), (4, "m4"), (5, "")])
        moved = yield self.client(server=c)
        again = yield moved.login("alice", resume=welcome.resume, version=2)
        self.assertEqual(again.nick, "alice")
        state = yield moved.expect(codec.RoomState)
        self.assertEqual(
            (state.rev, [(m.seq, m.text) for m in state.history]),
            (6, [(8, "m8"), (9, "m9 edited"), (10, "m10")]),
        )
        page = yield self.page(moved, after=0, limit=6)
        self.assertEqual(
            [(m.seq, m.text, m.deleted) for m in page.messages],
            [
                (1, "m1", None),
                (2, "m2 edited", None),
                (3, "m3 edited", None),
                (4, "m4", None),
                (5, "", True),
                (6, "m6", None),
            ],
        )
        self.assertEqual(_reactions(page.messages[0]), (("👍", ("alice",)),))


class TypingAndAway(Conversations):
    @defer.inlineCallbacks
    def test_typing_crosses_nodes_and_is_never_stored(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.member("alice", a)
        bob = yield self.member("bob", b)
        yield alice.expect(codec.Joined)
        alice.send(codec.Typing("side"))
        notice = yield bob.expect(codec.TypingNotice)
        self.assertEqual((notice.room, notice.nick, notice.typing), ("side", "alice", True))
        alice.send(codec.Typing("side", typing=False))
        notice = yield bob.expect(codec.TypingNotice)
        self.assertEqual((notice.nick, notice.typing), ("alice", False))
        alice.send(codec.Say("done typing", room="side"))
        yield bob.expect(codec.MessagePacket)  # everything alice's node wrote is in by now
        client = a.hub.peers.store.client
        entries = yield client.call("XRANGE", "chat:r:side", "-", "+")
        self.assertEqual(
            sorted({fields[0] for _, fields in entries}), [b"j", b"m", b"r"], "presence and the message"
        )
        raw = yield self.raw_redis(client)
        self.assertNotIn(b'"typing"', raw)

    @defer.inlineCallbacks
    def test_away_crosses_nodes_and_shows_in_a_later_nodes_room(self):
        a = yield self.node()
        b = yield self.node()
        alice = yield self.member("alice", a)
        bob = yield self.member("bob", b)
        yield alice.expect(codec.Joined)
        alice.send(codec.Away(True, "at lunch", ref="w"))
        done = yield alice.expect(codec.Done)
        self.assertEqual((done.op, done.ref), ("away", "w"))
        status = yield bob.expect(codec.Status)
        self.assertEqual((status.room, status.nick, status.away), ("side", "alice", "at lunch"))
        alice.send(codec.Join("other", "j2"))  # a room joined while away
        yield alice.expect(codec.RoomState)
        c = yield self.node()
        carol = yield self.member("carol", c)
        self.assertEqual(
            {p.nick: p.away for p in carol.state.members}, {"alice": "at lunch", "bob": None, "carol": None}
        )
        carol.send(codec.Join("other", "j3"))
        other = yield carol.expect(codec.RoomState)
        self.assertEqual({p.nick: p.away for p in other.members}, {"alice": "at lunch", "carol": None})
        alice.send(codec.Away(False, ref="back"))
        status = yield bob.expect(codec.Status)
        self.assertEqual((status.nick, status.away), ("alice", None))
        d = yield self.node()
        dave = yield self.member("dave", d)
        self.assertEqual({p.nick: p.away for p in dave.state.members}["alice"], None)


class DirectConversations(Conversations):
    @defer.inlineCallbacks
    def test_open_brings_in_a_participant_on_another_node_and_is_not_listed(self):
        a = yield self.node()
        b = yield self.node()
        bob = yield self.member("bob", b, room=None, account=True)
        alice = yield self.member("alice", a, room=None, account=True)
        alice.send(codec.Open(["bob"], "o"))
        mine = yield alice.expect(codec.RoomState)
        self.assertEqual((mine.room, mine.kind, mine.ref), ("@alice+bob", "direct", "o"))
        theirs = yield bob.expect(codec.RoomState)
        self.assertEqual((theirs.room, theirs.kind, theirs.ref), ("@alice+bob", "direct", None))
        alice.send(codec.Say("just us", "s", room="@alice+bob"))
        got = yield bob.expect(codec.MessagePacket)
        self.assertEqual((got.room, got.text), ("@alice+bob", "just us"))
        bob.send(codec.React("@alice+bob", got.seq, "👋", ref="r"))
        changed = yield alice.expect(codec.Changed)
        self.assertEqual(_reactions(changed.message), (("👋", ("bob",)),))
        for client in (alice, bob):
            client.send(codec.ListRooms("l"))
            listing = yield client.expect(codec.RoomList)
            self.assertNotIn("@alice+bob", [info.room for info in listing.rooms])

    @defer.inlineCallbacks
    def test_a_participant_offline_finds_it_at_the_next_login_on_any_node(self):
        a = yield self.node()
        b = yield self.node()
        bob = yield self.member("bob", b, room=None, account=True)
        bob.send(codec.Quit())
        yield bob.lost
        alice = yield self.member("alice", a, room=None, account=True)
        alice.send(codec.Open(["bob"], "o"))
        yield alice.expect(codec.RoomState)
        alice.send(codec.Say("while you were out", room="@alice+bob"))
        yield alice.expect(codec.MessagePacket)
        again = yield self.client(server=b)
        again.send(codec.Login("bob", 2, password=PASSWORD))
        yield again.expect(codec.Welcome)
        state = yield again.expect(codec.RoomState)
        self.assertEqual(
            (state.room, [m.text for m in state.history]), ("@alice+bob", ["while you were out"])
        )
