"""Protocol version 2: rooms, on StringTransport and task.Clock (docs/protocol.md, section 14)."""

from __future__ import annotations

import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.backends.eventlog import StoreError
from chatproto.backends.sqlite import SCHEMA_VERSION, SQLiteLog
from chatproto.codec import ErrorCode
from chatproto.core.budget import cost
from chatproto.limits import DEFAULTS
from tests.harness import Server, result
from tests.test_protocol import V1_LIMITS, record_writes


def v2(server: Server, *nicks: str):
    return server.logged_in(*nicks, version=2)


class Login(SynchronousTestCase):
    def test_version_2_welcome_names_the_default_room_and_no_rooms_yet(self):
        server = Server()
        (ann,) = v2(server, "ann")
        bob = server.peer()
        welcome = bob.login("bob", version=2)
        self.assertEqual(
            (welcome.rooms, welcome.default_room, welcome.peers, welcome.history), ([], "general", [], [])
        )
        self.assertEqual(welcome.limits, DEFAULTS.as_wire(2))
        self.assertLessEqual(
            {
                "rooms_per_connection",
                "max_rooms",
                "room_name_length",
                "topic_length",
                "join_rate",
                "join_burst",
            },
            set(welcome.limits),
        )
        self.assertEqual(
            ann.received(),
            [codec.Pending(bob.connection.id, "connecting"), codec.Pending(bob.connection.id, "gone")],
            "no JOINED: bob is in no room",
        )

    def test_version_1_welcome_is_unchanged(self):
        server = Server()
        welcome = server.peer().login("ann")
        self.assertEqual(set(welcome.limits), V1_LIMITS)
        self.assertIsNone(welcome.rooms)
        self.assertIsNone(welcome.default_room)

    def test_a_version_2_login_is_pending_gone_to_version_1(self):
        server = Server()
        (old,) = server.logged_in("old")
        new = server.peer()
        self.assertEqual(old.received(), [codec.Pending(new.connection.id, "connecting")])
        new.login("new", version=2)
        self.assertEqual(old.received(), [codec.Pending(new.connection.id, "gone")])
        new.join("general")
        self.assertEqual(old.received(), [codec.Joined(new.connection.id, "new")])

    def test_version_1_sees_no_pending_gone_for_a_version_1_login(self):
        server = Server()
        (old, watcher) = server.logged_in("old", "watcher", version=1)
        (v2watch,) = v2(server, "v2watch")
        old.received(), watcher.received()
        new = server.peer()
        new.login("new")
        self.assertEqual(
            watcher.received(),
            [codec.Pending(new.connection.id, "connecting"), codec.Joined(new.connection.id, "new")],
        )
        self.assertEqual(
            v2watch.received(),
            [codec.Pending(new.connection.id, "connecting"), codec.Pending(new.connection.id, "gone")],
        )


class Joining(SynchronousTestCase):
    def test_join_makes_the_room_answers_with_its_state_and_tells_the_members(self):
        server = Server()
        ann, bob, outsider = v2(server, "ann", "bob", "outsider")
        state = ann.join("Lobby", "j1")
        self.assertEqual(
            state,
            codec.RoomState(
                "Lobby",
                "",
                [codec.Peer(ann.connection.id, "ann", op=True)],
                [],
                "j1",
                False,
                False,
                0,
                0,
                rev=0,
                moderated=False,
                secret=False,
                limit=0,
                key="",
                count=1,
            ),
            "its maker is its operator; nothing unread",
        )
        state = bob.join("LOBBY")
        self.assertEqual(state.room, "Lobby", "the name as first made; matched case-folded")
        self.assertEqual([p.nick for p in state.members], ["ann", "bob"])
        self.assertEqual(ann.received(), [codec.Joined(bob.connection.id, "bob", "Lobby")])
        self.assertEqual(bob.received(), [], "the joiner has its ROOM, not its own JOINED")
        self.assertEqual(outsider.received(), [])

    def test_the_joiner_gets_recent_history(self):
        server = Server(history_replay=2)
        ann, bob = v2(server, "ann", "bob")
        ann.join("lobby")
        for text in ("one", "two", "three"):
            ann.send(codec.Say(text, room="lobby"))
        server.flush()
        state = bob.join("lobby")
        self.assertEqual([(m.seq, m.text) for m in state.history], [(2, "two"), (3, "three")])

    def test_joining_again_sends_the_state_again_and_announces_nothing(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.join("lobby")
        bob.join("lobby")
        ann.received()
        again = bob.join("lobby", "again")
        self.assertEqual((again.ref, len(again.members)), ("again", 2))
        self.assertEqual(ann.received(), [])

    def test_messages_said_in_the_joining_turn_arrive_after_the_state(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.join("lobby")
        ann.send(codec.Say("before bob", room="lobby"))  # same turn: not stored yet
        bob.send(codec.Join("lobby"))
        ann.send(codec.Say("after bob", room="lobby"))
        packets = bob.received()
        self.assertIsInstance(packets[0], codec.RoomState)
        self.assertEqual(packets[0].history, [])
        self.assertEqual([p.text for p in packets[1:]], ["before bob", "after bob"])

    def test_room_names_follow_the_nick_rules_with_their_own_length(self):
        server = Server(room_name_length=8)
        (ann,) = v2(server, "ann")
        for name in ("", "x" * 9, "#general", "two words", "tab\t", "\u0301accent"):
            ann.send(codec.Join(name, "r"))
            error = ann.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.BAD_ROOM, "r"), repr(name))
        ann.send_payload(b'\x08{"room":"lone \\udc00","ref":"s"}')
        self.assertEqual(ann.error().code, ErrorCode.BAD_ROOM)
        self.assertEqual(ann.join("ｌｏｂｂｙ").room, "lobby", "NFKC")

    def test_too_many_rooms_for_a_connection_and_for_the_server(self):
        server = Server(rooms_per_connection=2, max_rooms=4, join_burst=100)
        ann, bob = v2(server, "ann", "bob")
        ann.join("a")
        ann.join("b")
        ann.send(codec.Join("c", "r"))
        error = ann.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.TOO_MANY_ROOMS, "r"))
        bob.join("c")  # general, a, b, c: the default room counts against max_rooms too
        bob.send(codec.Join("d", "r"))
        error = bob.error()
        self.assertEqual(error.code, ErrorCode.TOO_MANY_ROOMS)
        self.assertIn("limit of 4 rooms", error.message)
        bob.join("a")  # an existing room is fine

    def test_join_part_flood_is_rate_limited(self):
        server = Server(join_rate=1, join_burst=3)
        (ann,) = v2(server, "ann")
        ann.join("a")
        ann.send(codec.Part("a"))
        ann.received()
        ann.join("a")
        ann.send(codec.Join("a", "r"))
        error = ann.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.RATE_LIMITED, "r"))
        server.clock.advance(1)
        ann.join("b")


class Order(SynchronousTestCase):
    def test_each_room_numbers_its_own_messages_from_one(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.join("a")
        ann.join("b")
        bob.join("b")
        ann.received()
        for room in ("a", "b", "a", "b", "b"):
            ann.send(codec.Say(f"to {room}", room=room))
        got = [(m.room, m.seq) for m in ann.received()]
        self.assertEqual([seq for room, seq in got if room == "a"], [1, 2])
        self.assertEqual([seq for room, seq in got if room == "b"], [1, 2, 3])
        self.assertEqual(len(got), 5, "each once, to a member of both rooms")
        self.assertEqual([(m.room, m.seq) for m in bob.received()], [("b", 1), ("b", 2), ("b", 3)])
        self.assertEqual([m.seq for m in server.stored("a")], [1, 2])
        self.assertEqual([m.seq for m in server.stored("b")], [1, 2, 3])

    def test_presence_keeps_its_place_among_a_rooms_messages(self):
        server = Server()
        ann, bob, cat = v2(server, "ann", "bob", "cat")
        ann.join("a")
        bob.join("a")
        ann.received()
        ann.send(codec.Say("one", room="a"))
        cat.send(codec.Join("a"))
        ann.send(codec.Say("two", room="a"))
        bob.send(codec.Part("a"))
        ann.send(codec.Say("three", room="a"))
        kinds = [
            type(p).__name__ + ":" + (getattr(p, "text", None) or getattr(p, "nick", ""))
            for p in ann.received()
        ]
        self.assertEqual(
            kinds, ["MessagePacket:one", "Joined:cat", "MessagePacket:two", "Left:bob", "MessagePacket:three"]
        )

    def test_a_broadcast_is_encoded_once_per_version_and_shared(self):
        server = Server()
        (old,) = server.logged_in("old")
        ann, bob, cat = v2(server, "ann", "bob", "cat")
        old.received()
        for peer in (ann, bob, cat):
            peer.join("general")
        for peer in (ann, bob, cat, old):
            peer.received()
        written = record_writes(self)
        old.say("hi")
        server.flush()
        v2_writes = [data for data in written if b'"room":"general"' in data]
        self.assertEqual(len(v2_writes), 3)
        self.assertTrue(
            all(data is v2_writes[0] for data in v2_writes), "one bytes object for every v2 member"
        )


class Versions(SynchronousTestCase):
    def test_version_1_and_version_2_chat_in_the_default_room(self):
        server = Server()
        (old,) = server.logged_in("old")
        (new,) = v2(server, "new")
        old.received()
        state = new.join("general")
        self.assertEqual([p.nick for p in state.members], ["old", "new"])
        self.assertEqual(old.received(), [codec.Joined(new.connection.id, "new")])
        old.say("from v1", "o")
        new.send(codec.Say("from v2", "n", "general"))
        self.assertEqual(
            old.received(),
            [
                codec.MessagePacket(1, 0.0, "old", "from v1", "o"),
                codec.MessagePacket(2, 0.0, "new", "from v2"),
            ],
        )
        self.assertEqual(
            new.received(),
            [
                codec.MessagePacket(1, 0.0, "old", "from v1", None, "general"),
                codec.MessagePacket(2, 0.0, "new", "from v2", "n", "general"),
            ],
        )

    def test_version_1_gets_nothing_of_other_rooms(self):
        server = Server()
        (old,) = server.logged_in("old")
        ann, bob = v2(server, "ann", "bob")
        old.received()
        ann.join("lobby")
        bob.join("lobby")
        ann.send(codec.Say("hi", room="lobby"))
        ann.send(codec.SetTopic("lobby", "plans"))
        bob.send(codec.Part("lobby"))
        self.assertEqual(old.received(), [])

    def test_version_1_packets_are_version_1s(self):
        server = Server()
        (old,) = server.logged_in("old")
        server.hub.directory.get_or_create("lobby")
        for packet in (codec.Join("lobby", "r"), codec.Part("general", None, "r"), codec.ListRooms("r")):
            old.send(packet)
            error = old.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.UNKNOWN_TYPE, "r"))
        old.send_payload(b'\x02{"text":"hi","room":"lobby"}')  # an unknown field to version 1
        self.assertEqual(old.only(codec.MessagePacket).text, "hi")
        self.assertEqual(server.stored("general")[0].text, "hi")
        old.send_payload(b'\x02{"text":"x","room":5}')
        self.assertIsInstance(old.only(codec.MessagePacket), codec.MessagePacket, "ignored, not bad_packet")

    def test_parting_the_default_room_is_quit_to_version_1(self):
        server = Server()
        (old,) = server.logged_in("old")
        (new,) = v2(server, "new")
        new.join("general")
        old.received()
        new.send(codec.Part("general", "brb", "p"))
        self.assertEqual(old.received(), [codec.Left(new.connection.id, "new", "quit", "brb")])
        self.assertEqual(
            new.received(), [codec.Left(new.connection.id, "new", "part", "brb", "general", "p")]
        )

    def test_a_resume_must_keep_its_version(self):
        server = Server()
        ghost = server.peer()
        token = ghost.login("ann", version=2).resume
        again = server.peer()
        again.send(codec.Login("ann", 1, token, "r"))
        self.assertEqual(again.error().code, ErrorCode.NICK_TAKEN)


class Leaving(SynchronousTestCase):
    def test_part_tells_the_members_and_the_leaver_with_its_ref(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.join("lobby")
        bob.join("lobby")
        ann.received()
        bob.send(codec.Say("last words", room="lobby"))
        bob.send(codec.Part("lobby", "bye\x07 now", "p1"))
        bob.send(codec.Say("too late", "t", "lobby"))
        self.assertEqual([type(p) for p in bob.received()], [codec.MessagePacket, codec.Left, codec.Error])
        left = codec.Left(bob.connection.id, "bob", "part", "bye now", "lobby")
        self.assertEqual(ann.received()[1:], [left])

    def test_disconnecting_is_seen_once_in_each_room(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        for room in ("a", "b"):
            ann.join(room)
            bob.join(room)
        ann.received()
        bob.send(codec.Quit("gone"))
        self.assertEqual(
            ann.received(),
            [
                codec.Left(bob.connection.id, "bob", "quit", "gone", "a"),
                codec.Left(bob.connection.id, "bob", "quit", "gone", "b"),
            ],
        )

    def test_an_empty_room_goes_unless_it_always_exists(self):
        server = Server(rooms=["Help"])
        (ann,) = v2(server, "ann")
        ann.join("lobby")
        ann.send(codec.Part("lobby"))
        ann.send(codec.ListRooms("l"))
        listing = ann.received()[-1]
        self.assertEqual([r.room for r in listing.rooms], ["general", "Help"])
        ann.send(codec.Say("hi", "s", "lobby"))
        self.assertEqual(ann.error().code, ErrorCode.NO_SUCH_ROOM)

    def test_the_listing_is_encoded_once_until_what_it_shows_changes(self):
        server = Server(join_burst=100)
        ann, bob = v2(server, "ann", "bob")
        for name in ("b-room", "a-room"):
            ann.join(name)
        ann.send(codec.ListRooms("one"))
        first = ann.received()[-1]
        built = server.hub.directory._listing_json
        bob.send(codec.ListRooms("two"))
        self.assertEqual(bob.received()[-1].rooms, first.rooms)
        self.assertIs(server.hub.directory._listing_json, built, "not built again: nothing changed")
        self.assertEqual(
            [(r.room, r.members) for r in first.rooms], [("a-room", 1), ("b-room", 1), ("general", 0)]
        )
        bob.join("a-room")
        ann.send(codec.SetTopic("b-room", "news", "t"))
        server.flush()
        ann.send(codec.ListRooms("three"))
        (listing,) = [p for p in ann.received() if isinstance(p, codec.RoomList)]
        self.assertEqual(listing.ref, "three")
        self.assertEqual(
            [(r.room, r.members, r.topic) for r in listing.rooms],
            [("a-room", 2, ""), ("b-room", 1, "news"), ("general", 0, "")],
        )

    def test_a_long_listing_costs_by_its_rooms(self):
        rooms = [f"room{i}" for i in range(1000)]
        server = Server(packet_rate=200, packet_burst=200, max_rooms=2000, rooms=rooms)
        (ann,) = v2(server, "ann")
        server.clock.advance(10)  # the budget refilled
        self.assertEqual(cost(codec.ListRooms(), 200, len(server.hub.directory.rooms)), 1 + 1001 / 10)
        ann.protocol.dataReceived(codec.encode_frame(codec.ListRooms("l")) * 5)
        self.assertEqual(ann.transport.producerState, "paused", "two 101-unit LISTs empty a 200-unit budget")
        self.assertEqual(sum(isinstance(p, codec.RoomList) for p in ann.received(flush=False)), 2)

    def test_part_of_a_room_you_are_not_in(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.join("lobby")
        for packet in (
            codec.Part("lobby", None, "r"),
            codec.Say("x", "r", "lobby"),
            codec.HistoryRequest(room="lobby", ref="r"),
            codec.SetTopic("lobby", "t", "r"),
        ):
            bob.send(packet)
            error = bob.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.NOT_A_MEMBER, "r"), packet)
        for packet in (codec.Part("nowhere", None, "r"), codec.Say("x", "r", "nowhere")):
            bob.send(packet)
            self.assertEqual(bob.error().code, ErrorCode.NO_SUCH_ROOM)
        bob.send(codec.Say("x", "r"))  # no room: the default room, which bob is not in
        self.assertEqual(bob.error().code, ErrorCode.NOT_A_MEMBER)

    def test_part_and_join_in_one_turn(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.join("lobby")
        bob.join("lobby")
        ann.received()
        bob.send(codec.Part("lobby"))
        bob.send(codec.Join("lobby"))
        ann.send(codec.Say("hello again", room="lobby"))
        got = bob.received()
        self.assertEqual([type(p) for p in got], [codec.Left, codec.RoomState, codec.MessagePacket])
        self.assertEqual([type(p) for p in ann.received()], [codec.Left, codec.Joined, codec.MessagePacket])


class Topics(SynchronousTestCase):
    def test_topic_reaches_the_members_and_is_in_the_state_and_the_listing(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.join("lobby")
        server.clock.advance(5)
        ann.send(codec.SetTopic("lobby", "plans for friday", "t1"))
        self.assertEqual(ann.received(), [codec.TopicChanged("lobby", "plans for friday", "ann", 5.0, "t1")])
        self.assertEqual(bob.join("lobby").topic, "plans for friday")
        bob.send(codec.ListRooms("l"))
        self.assertEqual(
            bob.only(codec.RoomList),
            codec.RoomList(
                [codec.RoomInfo("general", "", 0), codec.RoomInfo("lobby", "plans for friday", 2)], "l"
            ),
        )

    def test_bad_topics(self):
        server = Server(topic_length=10)
        (ann,) = v2(server, "ann")
        ann.join("lobby")
        for topic in ("x" * 11, "two\nlines", "tab\there"):
            ann.send(codec.SetTopic("lobby", topic, "r"))
            error = ann.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.BAD_TOPIC, "r"), repr(topic))
        ann.send(codec.SetTopic("lobby", ""))
        self.assertEqual(ann.only(codec.TopicChanged).topic, "", "an empty topic clears it")

    def test_a_permanent_rooms_topic_survives_a_restart_and_a_passing_rooms_does_not(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path), rooms=["help"])
        (ann,) = v2(server, "ann")
        ann.join("help")
        ann.join("lobby")
        ann.send(codec.SetTopic("help", "ask here"))
        ann.send(codec.SetTopic("lobby", "not kept"))  # lobby still has ann when the server stops
        server.flush()
        server.store.close()
        again = Server(store=SQLiteLog(path), rooms=["help"])
        (bob,) = v2(again, "bob")
        self.assertEqual(bob.join("help").topic, "ask here")
        self.assertEqual(bob.join("lobby").topic, "")


class History(SynchronousTestCase):
    def test_pages_of_one_room_name_it(self):
        server = Server()
        (ann,) = v2(server, "ann")
        ann.join("a")
        ann.join("b")
        for i in range(5):
            ann.send(codec.Say(f"a{i}", room="a"))
            ann.send(codec.Say(f"b{i}", room="b"))
        ann.received()
        ann.send(codec.HistoryRequest(before=5, limit=2, room="b", ref="h"))
        page = ann.only(codec.HistoryPage)
        self.assertEqual(([m.text for m in page.messages], page.more, page.room), (["b2", "b3"], True, "b"))
        ann.send(codec.HistoryRequest(after=3, room="a"))
        self.assertEqual([m.text for m in ann.only(codec.HistoryPage).messages], ["a3", "a4"])

    def test_version_1_pages_have_no_room(self):
        server = Server()
        (old,) = server.logged_in("old")
        old.say("hi")
        old.received()
        old.send(codec.HistoryRequest())
        page = old.only(codec.HistoryPage)
        self.assertEqual((page.room, [m.text for m in page.messages]), (None, ["hi"]))


class Resume(SynchronousTestCase):
    def test_a_version_2_resume_gets_welcome_then_each_rooms_state(self):
        server = Server()
        (watcher,) = v2(server, "watcher")
        ghost = server.peer()
        token = ghost.login("ann", version=2).resume
        ghost.join("a")
        ghost.join("b")
        watcher.join("a")
        watcher.received()
        again = server.peer()
        again.send(codec.Login("ann", 2, token))
        welcome, *states = again.received(flush=False)
        self.assertEqual(welcome.rooms, ["a", "b"])
        self.assertEqual(
            [(s.room, [p.nick for p in s.members]) for s in states],
            [("a", ["ann", "watcher"]), ("b", ["ann"])],
        )
        self.assertEqual(
            watcher.received(),
            [codec.Pending(again.connection.id, "connecting"), codec.Pending(again.connection.id, "gone")],
            "no LEFT, no JOINED",
        )
        watcher.send(codec.Say("still here?", room="a"))
        self.assertEqual(again.only(codec.MessagePacket).text, "still here?")


class Migration(SynchronousTestCase):
    def make_v1_file(self, rows: int) -> str:
        path = self.mktemp()
        db = sqlite3.connect(path)
        db.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY, ts REAL NOT NULL,"
            " sender TEXT NOT NULL, text TEXT NOT NULL)"
        )
        db.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?)",
            [(n, float(n), "ann", f"m{n}") for n in range(1, rows + 1)],
        )
        db.commit()
        db.close()
        return path

    def test_a_version_1_history_becomes_the_default_rooms_and_seqs_continue(self):
        path = self.make_v1_file(3)
        server = Server(store=SQLiteLog(path, "lounge"), default_room="Lounge")
        (old,) = server.logged_in("old")
        old.send(codec.HistoryRequest())
        self.assertEqual([m.text for m in old.only(codec.HistoryPage).messages], ["m1", "m2", "m3"])
        old.say("m4")
        self.assertEqual(old.only(codec.MessagePacket).seq, 4)
        (new,) = v2(server, "new")
        self.assertEqual([m.seq for m in new.join("lounge").history], [1, 2, 3, 4])
        (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
        self.assertEqual(version, SCHEMA_VERSION)

    def test_migrating_twice_changes_nothing(self):
        path = self.make_v1_file(2)
        SQLiteLog(path).close()
        log = SQLiteLog(path)
        self.assertEqual(log.last_seq(), 2)
        self.assertEqual(result(log.after(0, 10))[0][1].text, "m2")

    def test_a_file_with_no_room_for_another_room_refuses_its_messages(self):
        store = SQLiteLog(self.mktemp())
        store.last_seq("general")  # general has its id (1)
        store._db.execute("INSERT INTO rooms VALUES (?, 'last')", (2**23 - 2,))
        server = Server(store=store)
        (ann,) = v2(server, "ann")
        ann.join("one-more")  # id 2**23 - 1: its rows would pass 2**63
        ann.send(codec.Say("hi", "r", "one-more"))
        error = ann.only(codec.Error)
        self.assertEqual((error.code, error.ref), (ErrorCode.INTERNAL, "r"))
        ann.join("general")
        ann.send(codec.Say("still fine", "g", "general"))
        self.assertEqual(ann.only(codec.MessagePacket).text, "still fine")

    def test_a_file_from_a_newer_server_is_refused(self):
        path = self.mktemp()
        db = sqlite3.connect(path)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.close()
        with self.assertRaises(StoreError) as caught:
            SQLiteLog(path)
        self.assertIn("newer server", str(caught.exception))
