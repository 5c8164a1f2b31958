"""Big rooms (docs/protocol.md, section 22): ROOM's shown set and count,
follow sets, JOINED and LEFT to followers only, COUNT, MEMBERS and FOLLOW;
version 1 and IRC unchanged. On StringTransport and task.Clock, with a
small ``lazy_members`` so that a room is big at a few members."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.codec import ErrorCode
from chatproto.core import counts
from chatproto.core.broadcast import COALESCE_AT, PRESENCE_MAX
from chatproto.core.pending_news import QUIET
from tests.harness import Server
from tests.test_accounts import registered
from tests.test_conversations import said, v2
from tests.test_irc import IrcPeer


def big(**limits) -> Server:
    """A server where a room of more than five members is big."""
    return Server(lazy_members=5, **limits)


def joined(server: Server, room: str, *nicks: str) -> list:
    """Version 2 sessions that join ``room`` one after another."""
    peers = server.logged_in(*nicks, version=2)
    for peer in peers:
        peer.join(room)
    server.flush()
    for peer in peers:
        peer.received()
    return peers


def presence(peer) -> list:
    """The JOINED, LEFT and COUNT packets received, as (kind, nick or count)."""
    seen = []
    for packet in peer.received():
        if isinstance(packet, codec.Joined):
            seen.append(("joined", packet.nick))
        elif isinstance(packet, codec.Left):
            seen.append(("left", packet.nick))
        elif isinstance(packet, codec.Count):
            seen.append(("count", packet.members))
    return seen


def members(peer, room: str = "hall", **fields) -> codec.Members | codec.Error:
    """MEMBERS; its one answer."""
    peer.send(codec.MembersRequest(room, ref="m", **fields))
    answers = [p for p in peer.received() if isinstance(p, (codec.Members, codec.Error))]
    assert len(answers) == 1, answers
    return answers[0]


def follow(peer, nicks: list[str], room: str = "hall") -> codec.Members | codec.Error:
    peer.send(codec.Follow(room, nicks, ref="f"))
    answers = [p for p in peer.received() if isinstance(p, (codec.Members, codec.Error))]
    assert len(answers) == 1, answers
    return answers[0]


def nicks(packet) -> list[str]:
    return [peer.nick for peer in packet.members]


class Shown(SynchronousTestCase):
    def test_a_small_room_lists_everyone_with_its_count(self):
        server = big()
        ann, _bob = joined(server, "hall", "ann", "bob")
        state = server.peer()
        state.login("cat", version=2)
        state.received()
        room = state.join("hall")
        self.assertEqual(nicks(room), ["ann", "bob", "cat"])
        self.assertEqual((room.count, room.lazy), (3, None))
        self.assertEqual(presence(ann), [("joined", "cat")])

    def test_a_big_rooms_room_shows_the_joiner_operators_voiced_and_recent_authors(self):
        server = big(members_shown=5)
        ann, b1, b2, b3, _b4, _b5 = joined(server, "hall", "ann", "b1", "b2", "b3", "b4", "b5")
        ann.send(codec.Moderate("hall", "voice", "b4"))
        for peer, text in ((b1, "first"), (b2, "second"), (b1, "third"), (b3, "fourth")):
            said(peer, text, "hall")
        b3.send(codec.Part("hall"))
        server.flush()
        new = server.peer()
        new.login("zed", version=2)
        new.received()
        room = new.join("hall")
        self.assertTrue(room.lazy)
        self.assertEqual(room.count, 6)
        self.assertEqual(
            nicks(room),
            ["zed", "ann", "b4", "b1", "b2"],
            "itself, the operator, the voiced, then authors still here, the latest first, at most five",
        )
        self.assertEqual([p.op for p in room.members[:3]], [None, True, None])
        self.assertEqual(room.members[2].voice, True)
        self.assertEqual(
            server.hub.following.follows(new.connection, "hall"), ["zed", "ann", "b4", "b1", "b2"]
        )

    def test_a_room_stays_big_when_members_leave(self):
        server = big()
        peers = joined(server, "hall", *[f"m{i}" for i in range(6)])
        for peer in peers[1:5]:
            peer.send(codec.Part("hall"))
        server.flush()
        new = server.peer()
        new.login("zed", version=2)
        new.received()
        room = new.join("hall")
        self.assertEqual((room.lazy, room.count, nicks(room)), (True, 3, ["zed", "m0"]))

    def test_lazy_members_zero_keeps_every_room_whole(self):
        server = Server(lazy_members=0)
        joined(server, "hall", *[f"m{i}" for i in range(8)])
        new = server.peer()
        new.login("zed", version=2)
        new.received()
        room = new.join("hall")
        self.assertEqual((room.lazy, room.count, len(room.members)), (None, 9, 9))

    def test_welcome_limits_tell_version_2_the_big_room_limits(self):
        server = Server(lazy_members=7, members_shown=3, members_page=9, follow_limit=11, count_interval=2.5)
        peer = server.peer()
        limits = peer.login("ann", version=2).limits
        self.assertEqual(
            {key: limits[key] for key in ("lazy_members", "members_shown", "members_page", "follow_limit")},
            {"lazy_members": 7, "members_shown": 3, "members_page": 9, "follow_limit": 11},
        )
        self.assertEqual(limits["count_interval"], 2.5)
        self.assertNotIn("lazy_members", server.peer().login("bob", version=1).limits)


class Presence(SynchronousTestCase):
    def setUp(self):
        self.server = big()
        self.peers = joined(self.server, "hall", *[f"m{i}" for i in range(6)])  # big from the sixth
        self.server.clock.advance(1)
        for peer in self.peers:
            peer.received()

    def newcomer(self, nick: str):
        peer = self.server.peer()
        peer.login(nick, version=2)
        peer.received()
        peer.join("hall")
        return peer

    def test_members_of_a_room_that_turned_big_still_hear_everyone_they_knew(self):
        server = big()
        peers = joined(server, "hall", "a", "b", "c", "d", "e")
        six = self.newcomer_on(server, "f")
        self.assertEqual(
            presence(peers[0]), [("joined", "f"), ("count", 6)], "COUNT tells it the room is big"
        )
        six.send(codec.Part("hall"))
        server.clock.advance(1)
        self.assertEqual(presence(peers[0]), [("left", "f"), ("count", 5)])
        self.newcomer_on(server, "g")
        server.clock.advance(1)
        self.assertEqual(presence(peers[0]), [("count", 6)], "a newcomer nobody follows: its count only")

    def newcomer_on(self, server: Server, nick: str):
        peer = server.peer()
        peer.login(nick, version=2)
        peer.received()
        peer.join("hall")
        return peer

    def test_joined_and_left_reach_only_the_members_that_follow_them(self):
        m0, m1 = self.peers[0], self.peers[1]
        self.assertIsInstance(follow(m0, ["zed"]), codec.Members)
        zed = self.newcomer("zed")
        self.assertEqual(presence(m0), [("joined", "zed"), ("count", 7)])
        self.assertEqual(presence(m1), [("count", 7)])
        zed.send(codec.Part("hall", ref="p"))
        own = [p for p in zed.received() if isinstance(p, codec.Left)]
        self.assertEqual(
            own, [codec.Left(zed.connection.id, "zed", "part", None, "hall", "p")], "its own LEFT"
        )
        self.server.clock.advance(1)
        self.assertEqual(presence(m0), [("left", "zed"), ("count", 6)])
        self.assertEqual(presence(m1), [("count", 6)])
        zed.join("hall")
        self.server.clock.advance(1)
        self.assertEqual(presence(m0), [("joined", "zed"), ("count", 7)], "a member who left stays followed")

    def test_count_goes_at_most_once_an_interval_with_the_latest_count(self):
        m0 = self.peers[0]
        self.newcomer("n1")
        self.assertEqual(presence(m0), [("count", 7)], "the first at once")
        self.newcomer("n2")
        self.newcomer("n3")
        self.assertEqual(presence(m0), [])
        self.server.clock.advance(0.5)
        self.assertEqual(presence(m0), [])
        self.server.clock.advance(0.5)
        self.assertEqual(presence(m0), [("count", 9)], "coalesced")
        n4 = self.newcomer("n4")
        n4.send(codec.Part("hall"))
        self.server.clock.advance(1)
        self.assertEqual(presence(m0), [], "back where the last COUNT said: none")

    def test_count_interval_grows_with_every_spread_of_members(self):
        self.patch(counts, "SPREAD", 4)  # the room has 6 members: two spreads
        m0 = self.peers[0]
        self.server.clock.advance(1)  # two intervals since the COUNT of the sixth join
        self.newcomer("n1")
        self.assertEqual(presence(m0), [("count", 7)], "at once")
        self.newcomer("n2")
        self.server.clock.advance(1)
        self.assertEqual(presence(m0), [], "8 members: two intervals")
        self.server.clock.advance(1)
        self.assertEqual(presence(m0), [("count", 8)])

    def test_other_room_traffic_is_unchanged(self):
        m0, m1 = self.peers[0], self.peers[1]
        said(m1, "hello", "hall")
        self.assertEqual([p.text for p in m0.received() if isinstance(p, codec.MessagePacket)], ["hello"])

    def test_a_rename_goes_to_everyone_and_the_follow_moves_to_the_new_nick(self):
        m0, m1 = self.peers[0], self.peers[1]
        zed = self.newcomer("zed")
        follow(m0, ["zed"])
        m1.received()
        zed.send(codec.Nick("zoe"))
        self.assertIn(codec.Renamed("zed", "zoe"), m1.received())
        self.assertIn(codec.Renamed("zed", "zoe"), m0.received())
        zed.send(codec.Part("hall"))
        self.server.clock.advance(1)
        self.assertEqual(presence(m0)[0], ("left", "zoe"))
        self.assertNotIn(("left", "zoe"), presence(m1))

    def test_a_resumed_session_keeps_its_follows(self):
        m0 = self.peers[0]
        zed = self.newcomer("zed")
        follow(m0, ["zed"])
        token = self.server.hub.session_for("m0").token
        again = self.server.peer()
        again.login("m0", resume=token, version=2)
        again.received()
        self.assertIn("zed", self.server.hub.following.follows(again.connection, "hall"))
        m0.drop()
        zed.send(codec.Part("hall"))
        self.server.clock.advance(1)
        self.assertEqual(presence(again), [("left", "zed"), ("count", 6)])

    def test_each_device_of_an_account_has_its_own_follows(self):
        server = big()
        one = registered(server, "acct")
        one.join("hall")
        two = server.peer()
        two.login("acct", version=2, password="correct horse")
        others = joined(server, "hall", *[f"m{i}" for i in range(6)])
        server.clock.advance(1)
        one.received()
        two.received()
        follow(one, ["zed"])
        self.newcomer_on(server, "zed")
        server.clock.advance(1)
        self.assertEqual(presence(one), [("joined", "zed"), ("count", 8)])
        self.assertEqual(presence(two), [("count", 8)])
        self.assertEqual(presence(others[0]), [("count", 8)])


class GatheredBatch(SynchronousTestCase):
    """With COALESCE_AT connections logged in, presence is gathered, and a
    batch holds server-wide PENDINGs beside a big room's hidden JOINEDs:
    each goes only where it concerns (Broadcast._reach), the rest of the
    room gets its COUNT alone, and version 1 every PENDING."""

    def test_hidden_joins_in_a_gathered_batch_reach_their_followers_and_themselves(self):
        server = big()
        hall = joined(server, "hall", *[f"m{i}" for i in range(6)])
        server.logged_in(*[f"u{i}" for i in range(COALESCE_AT)], version=2)
        old = server.logged_in("old")[0]
        server.clock.advance(1)
        for peer in [*hall, old]:
            peer.received()
        self.assertIsInstance(follow(hall[0], ["zed", "amy"]), codec.Members)
        newcomers = [server.peer(), server.peer()]
        for peer, nick in zip(newcomers, ["zed", "amy"], strict=True):
            peer.login(nick, version=2)
            peer.received()
            peer.send(codec.Join("hall", ref="j"))
        server.clock.advance(PRESENCE_MAX)
        # The first change's COUNT at once, the next once the interval is over (22.5).
        self.assertEqual(presence(hall[0]), [("joined", "zed"), ("count", 7), ("joined", "amy")])
        self.assertEqual(presence(hall[1]), [("count", 7)], "nobody it follows")
        server.clock.advance(1)
        server.clock.advance(PRESENCE_MAX)  # gathered, as any presence
        self.assertEqual(presence(hall[0]), [("count", 8)])
        self.assertEqual(presence(hall[1]), [("count", 8)])
        for peer in newcomers:
            got = peer.received(flush=False)
            rooms = [p for p in got if isinstance(p, codec.RoomState)]
            self.assertEqual([(r.room, r.lazy) for r in rooms], [("hall", True)], "its ROOM")
            self.assertFalse([p for p in got if isinstance(p, codec.Pending)], "nobody pending for a second")
        ids = [peer.connection.id for peer in newcomers]
        self.assertEqual(
            pendings(old), [(ids[0], "connecting"), (ids[1], "connecting")] + [(id, "gone") for id in ids]
        )


class Unchanged(SynchronousTestCase):
    def test_version_1_in_a_big_room_gets_every_member_and_every_join_and_leave(self):
        server = big()
        old = server.peer()
        old.login("old", version=1)
        old.received()
        v2(server, *[f"m{i}" for i in range(6)])
        old.received()
        welcome = server.peer().login("late", version=1)
        self.assertEqual(len(welcome.peers), 8, "every member of the default room")
        newest = server.peer()
        newest.login("newest", version=2)
        self.assertTrue(newest.join("general").lazy)
        newest.send(codec.Part("general"))
        server.clock.advance(1)
        kinds = [
            (type(p).__name__, p.nick) for p in old.received() if isinstance(p, (codec.Joined, codec.Left))
        ]
        self.assertEqual(kinds, [("Joined", "late"), ("Joined", "newest"), ("Left", "newest")])

    def test_irc_in_a_big_room_gets_whole_names_and_every_join_and_part(self):
        server = big()
        irc = IrcPeer(server)
        irc.register("ircer")
        irc.send("JOIN #hall")
        irc.lines()
        joined(server, "hall", *[f"m{i}" for i in range(6)])
        irc.lines()
        late = server.peer()
        late.login("late", version=2)
        late.received()
        late.join("hall")
        late.send(codec.Part("hall"))
        server.clock.advance(1)
        commands = [command for command, _ in irc.commands()]
        self.assertEqual(commands, ["JOIN", "PART"])
        other = IrcPeer(server)
        other.register("other")
        other.send("JOIN #hall")
        names = [params[-1] for command, params in other.commands() if command == "353"]
        self.assertEqual(
            sorted(" ".join(names).replace("@", "").split()),
            sorted(["ircer", "other"] + [f"m{i}" for i in range(6)]),
        )


class Members(SynchronousTestCase):
    def test_pages_through_a_thousand_members_and_finds_them_by_prefix(self):
        server = big(members_page=300)
        nicks_made = [f"Member{i:04d}" for i in range(1000)]
        peers = joined(server, "hall", *nicks_made)
        asker = peers[0]
        seen: list[str] = []
        after = None
        pages = 0
        for _ in range(10):
            page = members(asker, after=after, limit=400)
            self.assertIsInstance(page, codec.Members)
            self.assertEqual(page.count, 1000)
            self.assertLessEqual(len(page.members), 300, "at most members_page")
            seen += nicks(page)
            pages += 1
            if page.next is None:
                break
            after = page.next
        self.assertEqual((seen, pages), (nicks_made, 4))
        found = members(asker, prefix="MEMBER099")
        self.assertEqual(nicks(found), [f"Member{i:04d}" for i in range(990, 1000)])
        self.assertIsNone(found.next)
        first = members(asker, prefix="member001", limit=4)
        self.assertEqual(
            (nicks(first), first.next), ([f"Member{i:04d}" for i in range(10, 14)], "member0013")
        )
        rest = members(asker, prefix="member001", after=first.next, limit=100)
        self.assertEqual((nicks(rest), rest.next), ([f"Member{i:04d}" for i in range(14, 20)], None))
        self.assertEqual(members(asker, prefix="nobody").members, [])

    def test_what_members_returns_is_followed_and_the_oldest_follows_go_past_the_limit(self):
        server = big(follow_limit=4)
        peers = joined(server, "hall", *[f"m{i}" for i in range(8)])
        following = server.hub.following
        self.assertEqual(
            following.follows(peers[0].connection, "hall"),
            ["m2", "m3", "m4", "m5"],
            "in the room when it turned big: it followed everyone, the oldest gone past the limit",
        )
        asker = peers[7]
        self.assertEqual(
            following.follows(asker.connection, "hall"), ["m7", "m0"], "its ROOM: itself, the operator"
        )
        members(asker, prefix="m", limit=2)
        self.assertEqual(following.follows(asker.connection, "hall"), ["m7", "m0", "m1"])
        answer = follow(asker, ["m5", "ghost", "m6"])
        self.assertEqual((nicks(answer), answer.count, answer.next, answer.ref), (["m5", "m6"], 8, None, "f"))
        self.assertEqual(following.follows(asker.connection, "hall"), ["m1", "ghost", "m5", "m6"])
        server.clock.advance(1)
        asker.received()
        for peer in (peers[1], peers[2], peers[5]):
            peer.send(codec.Part("hall"))
        server.clock.advance(1)
        self.assertEqual(presence(asker), [("left", "m1"), ("left", "m5"), ("count", 5)])

    def test_pages_follow_nick_changes_and_leaves(self):
        server = big()
        peers = joined(server, "hall", "ann", "bob", "cy", "dee", "eve", "fay", "gus")
        peers[1].send(codec.Nick("zed"))  # bob: from second to last
        peers[4].send(codec.Nick("Ann2"))  # eve: right after ann
        server.flush()
        peers[5].send(codec.Part("hall"))  # fay
        peers[4].send(codec.Part("hall"))  # a leave by the changed nick
        peers[2].send(codec.Nick("Cy"))  # the same key: the index keeps its place
        server.flush()
        asker = peers[0]
        asker.received()
        self.assertEqual(nicks(members(asker)), ["ann", "Cy", "dee", "gus", "zed"])
        self.assertEqual(nicks(members(asker, prefix="z")), ["zed"])
        self.assertEqual(nicks(members(asker, prefix="ann")), ["ann"])
        room = server.hub.directory.find("hall")
        self.assertEqual((room.keys, len(room.ids)), (["ann", "cy", "dee", "gus", "zed"], 5))

    def test_errors_come_in_order(self):
        server = big()
        ann, _bob = joined(server, "hall", "ann", "bob")
        outsider = server.logged_in("out", version=2)[0]
        old = server.logged_in("old", version=1)[0]
        stranger = server.peer()
        stranger.send(codec.MembersRequest("hall", ref="m"))
        self.assertEqual(stranger.error().code, ErrorCode.NOT_LOGGED_IN)
        old.send(codec.MembersRequest("hall", ref="m"))
        self.assertEqual(old.error().code, ErrorCode.UNKNOWN_TYPE)
        self.assertEqual(members(outsider, room="#bad room", limit=0).code, ErrorCode.BAD_PACKET)
        self.assertEqual(members(outsider, room="#bad room").code, ErrorCode.BAD_ROOM)
        self.assertEqual(members(outsider, room="nowhere").code, ErrorCode.NO_SUCH_ROOM)
        self.assertEqual(members(outsider).code, ErrorCode.NOT_A_MEMBER)
        self.assertEqual(follow(outsider, ["bad nick!"]).code, ErrorCode.NOT_A_MEMBER)
        self.assertEqual(follow(ann, ["bad nick!"]).code, ErrorCode.BAD_NICK)
        self.assertEqual(follow(ann, ["bob"], room="nowhere").code, ErrorCode.NO_SUCH_ROOM)
        answer = members(ann)
        self.assertEqual(
            (nicks(answer), answer.count, answer.ref), (["ann", "bob"], 2, "m"), "any room, big or not"
        )


def pendings(peer) -> list[tuple[int, str]]:
    """The PENDING packets received, as (id, state)."""
    return [(p.id, p.state) for p in peer.received(flush=False) if isinstance(p, codec.Pending)]


class QuietPending(SynchronousTestCase):
    """With COALESCE_AT sessions logged in, version 2 hears of a pending
    connection only once it has been pending for QUIET seconds, and of its
    going only if it heard of it (docs/protocol.md 22.8)."""

    def setUp(self):
        self.server = Server()
        crowd = self.server.logged_in(*[f"u{i}" for i in range(COALESCE_AT)], version=2)
        self.v2 = crowd[0]
        self.v1 = self.server.logged_in("old")[0]
        self.server.clock.advance(1)
        for peer in crowd:
            peer.received(flush=False)
        self.v1.received(flush=False)

    def settle(self, seconds: float = 0.0) -> None:
        """``seconds`` pass, then every gathered batch is written."""
        self.server.clock.advance(seconds)
        self.server.clock.advance(PRESENCE_MAX)

    def test_a_prompt_login_is_not_announced_to_version_2(self):
        newcomer = self.server.peer()
        self.settle(QUIET / 2)
        newcomer.login("new", version=2)
        self.settle(QUIET)
        self.assertEqual(pendings(self.v2), [])
        id = newcomer.connection.id
        self.assertEqual(pendings(self.v1), [(id, "connecting"), (id, "gone")], "version 1 is frozen")

    def test_a_prompt_login_costs_no_walk_over_the_version_2_sessions(self):
        """Its PENDING pair is version 1's alone: the gathered batch is
        delivered to version 1's group, never to the crowd's."""
        delivered = []
        deliver_view = self.server.hub.broadcast._deliver_view

        def spy(wire, version, connections, *rest):
            delivered.append((version, len(connections)))
            return deliver_view(wire, version, connections, *rest)

        self.server.hub.broadcast._deliver_view = spy
        newcomer = self.server.peer()
        newcomer.login("new", version=2)
        self.settle(QUIET)
        self.assertEqual(delivered, [(1, 1)])

    def test_a_connection_pending_past_the_quiet_time_is_announced_both_ways(self):
        newcomer = self.server.peer()
        id = newcomer.connection.id
        self.settle(QUIET - PRESENCE_MAX - 0.01)
        self.assertEqual(pendings(self.v2), [], "not yet")
        self.settle(PRESENCE_MAX)
        self.assertEqual(pendings(self.v2), [(id, "connecting")])
        newcomer.login("new", version=2)
        self.settle()
        self.assertEqual(pendings(self.v2), [(id, "gone")])

    def test_announced_in_the_order_they_came(self):
        first, second = self.server.peer(), self.server.peer()
        self.settle(QUIET)
        ids = [first.connection.id, second.connection.id]
        self.assertEqual(pendings(self.v2), [(ids[0], "connecting"), (ids[1], "connecting")])
        self.assertEqual(self.server.hub.news.ids(ids, 2), ids)

    def test_a_welcome_lists_only_the_pending_connections_version_2_heard_of(self):
        early = self.server.peer()
        self.settle(QUIET)
        late = self.server.peer()
        joiner = self.server.peer()
        welcome = joiner.login("joiner", version=2)
        self.assertIn(early.connection.id, welcome.pending)
        self.assertNotIn(late.connection.id, welcome.pending)
        old = self.server.peer()
        welcome_v1 = old.login("oldtimer", version=1)
        self.assertIn(late.connection.id, welcome_v1.pending, "version 1 hears of every one")
        early.drop()
        late.drop()
        self.settle(QUIET)
        self.assertEqual(pendings(joiner), [(early.connection.id, "gone")])

    def test_a_connection_announced_later_reaches_a_session_that_logged_in_meanwhile(self):
        waiting = self.server.peer()
        joiner = self.server.peer()
        welcome = joiner.login("joiner", version=2)
        self.assertNotIn(waiting.connection.id, welcome.pending)
        self.settle(QUIET)
        self.assertEqual(pendings(joiner), [(waiting.connection.id, "connecting")])
        waiting.drop()
        self.settle()
        self.assertEqual(pendings(joiner), [(waiting.connection.id, "gone")])

    def test_a_small_server_announces_at_once(self):
        server = Server()
        watcher = server.logged_in("watcher", version=2)[0]
        watcher.received(flush=False)
        newcomer = server.peer()
        server.clock.advance(0)
        self.assertEqual(pendings(watcher), [(newcomer.connection.id, "connecting")])
