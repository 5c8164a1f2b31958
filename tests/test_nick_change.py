"""NICK after login (docs/protocol.md 15.11): a guest takes another nick;
an account's nick is its name. On StringTransport and task.Clock."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.codec import ErrorCode
from tests.harness import Server
from tests.test_accounts import PASSWORD, device, made_admin, registered


def guest(server: Server, nick: str, *rooms: str):
    """A version 2 guest in ``rooms``, its inbox emptied."""
    peer = server.peer()
    peer.login(nick, version=2)
    peer.received()
    for room in rooms:
        peer.join(room)
    server.flush()
    peer.received()
    return peer


def refused(peer, nick: str) -> codec.Error:
    peer.send(codec.Nick(nick, ref="n"))
    peer.server.flush()
    errors = [p for p in peer.received(flush=False) if isinstance(p, codec.Error)]
    assert len(errors) == 1, errors
    assert errors[0].ref == "n", errors[0]
    return errors[0]


def renames(peer) -> list[codec.Renamed]:
    return [p for p in peer.received() if isinstance(p, codec.Renamed)]


class OrderOfChecks(SynchronousTestCase):
    """Each request fails two checks and is told the first (15.11)."""

    def setUp(self):
        self.server = Server(admins=["root"])

    def test_before_login_not_logged_in(self):
        peer = self.server.peer()
        peer.send(codec.Nick("bad nick", ref="n"))
        self.assertEqual(peer.error(), codec.Error(ErrorCode.NOT_LOGGED_IN, "log in first", "n"))

    def test_version_1_has_no_nick_packet(self):
        (old,) = self.server.logged_in("old")
        old.send(codec.Nick("new", ref="n"))
        self.assertEqual(old.error().code, ErrorCode.UNKNOWN_TYPE)

    def test_rate_before_account(self):
        server = Server(join_burst=1, join_rate=0.001)
        ann = registered(server, "ann")
        ann.send(codec.Away(True))
        ann.received()
        self.assertEqual(refused(ann, "annie").code, ErrorCode.RATE_LIMITED)

    def test_account_before_nick_rules(self):
        ann = registered(self.server, "ann")
        error = refused(ann, "not a nick")
        self.assertEqual(error.code, ErrorCode.NOT_PERMITTED)
        self.assertIn("an account's nick is its name", error.message)

    def test_nick_rules_before_taken(self):
        gus = guest(self.server, "gus")
        self.assertEqual(refused(gus, "two words").code, ErrorCode.BAD_NICK)
        self.assertEqual(refused(gus, "x" * 33).code, ErrorCode.BAD_NICK)

    def test_taken_before_registered(self):
        registered(self.server, "ann")
        gus = guest(self.server, "gus")
        self.assertEqual(refused(gus, "ANN").code, ErrorCode.NICK_TAKEN)
        guest(self.server, "bob")
        self.assertEqual(refused(gus, "Bob").code, ErrorCode.NICK_TAKEN)

    def test_registered_before_banned(self):
        registered(self.server, "ann").send(codec.Quit())
        made_admin(self.server, "root")
        root, _ = device(self.server, "root")
        root.send(codec.AdminRequest("ban", target="ann", ref="b"))
        root.received()
        gus = guest(self.server, "gus")
        self.assertEqual(refused(gus, "Ann").code, ErrorCode.NICK_REGISTERED)

    def test_server_ban_before_room_ban(self):
        made_admin(self.server, "root")
        root, _ = device(self.server, "root")
        root.send(codec.AdminRequest("ban", target="mallory", reason="spam", ref="b"))
        gus = guest(self.server, "gus", "den")
        gus.send(codec.Moderate("den", "ban", "mallory"))
        self.server.flush()
        gus.received()
        error = refused(gus, "Mallory")
        self.assertEqual(error.code, ErrorCode.BANNED)
        self.assertIn("from the server", error.message)

    def test_a_room_ban_of_a_room_the_session_is_in(self):
        gus = guest(self.server, "gus", "den")
        gus.send(codec.Moderate("den", "ban", "mallory"))
        self.server.flush()
        gus.received()
        error = refused(gus, "mallory")
        self.assertEqual(error.code, ErrorCode.BANNED)
        self.assertIn("'den'", error.message)
        gus.send(codec.Part("den"))
        self.server.flush()
        gus.received()
        gus.send(codec.Nick("mallory", ref="n"))
        self.assertEqual(renames(gus), [codec.Renamed("gus", "mallory", "n")], "not in 'den' any more")

    def test_the_same_nick_changes_nothing_but_a_case_change_renames(self):
        gus = guest(self.server, "gus", "general")
        bob = guest(self.server, "bob", "general")
        gus.received()
        gus.send(codec.Nick("gus", ref="n"))
        self.assertEqual(renames(gus), [codec.Renamed("gus", "gus", "n")])
        self.assertEqual(bob.received(), [])
        gus.send(codec.Nick("Gus", ref="n2"))
        self.assertEqual(renames(gus), [codec.Renamed("gus", "Gus", "n2")])
        self.assertEqual(renames(bob), [codec.Renamed("gus", "Gus")])
        self.assertEqual(self.server.hub.session_for("GUS").nick, "Gus")

    def test_a_refused_nick_changes_nothing(self):
        gus = guest(self.server, "gus", "general")
        guest(self.server, "bob", "general")
        refused(gus, "bob")
        self.assertEqual(self.server.hub.session_for("gus").nick, "gus")
        self.assertEqual(self.server.hub.session_for("bob").nick, "bob")


class TheChange(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.ann = guest(self.server, "ann", "general", "den")
        self.bob = guest(self.server, "bob", "general", "den")
        self.carol = guest(self.server, "carol", "den")
        self.dave = guest(self.server, "dave", "lobby")
        for peer in (self.ann, self.bob, self.carol):
            peer.received()

    def test_renamed_goes_once_to_each_sharer_and_to_the_renamed(self):
        self.ann.send(codec.Nick("annie", ref="n"))
        self.assertEqual(renames(self.ann), [codec.Renamed("ann", "annie", "n")])
        self.assertEqual(renames(self.bob), [codec.Renamed("ann", "annie")], "in two shared rooms: once")
        self.assertEqual(renames(self.carol), [codec.Renamed("ann", "annie")])
        self.assertEqual(self.dave.received(), [], "shares no room")

    def test_in_each_rooms_order_with_its_messages(self):
        self.bob.send(codec.Say("before", room="den"))
        self.ann.send(codec.Nick("annie"))
        self.bob.send(codec.Say("after", room="den"))
        seen = [
            (type(p).__name__, getattr(p, "text", None) or getattr(p, "nick", None))
            for p in self.carol.received()
        ]
        self.assertEqual(
            seen, [("MessagePacket", "before"), ("Renamed", "annie"), ("MessagePacket", "after")]
        )

    def test_the_nick_changes_everywhere_the_server_keeps_it(self):
        self.ann.send(codec.Nick("annie"))
        self.server.flush()
        hub = self.server.hub
        self.assertIsNone(hub.session_for("ann"))
        self.assertEqual(hub.session_for("annie").nick, "annie")
        erin = guest(self.server, "erin")
        state = erin.join("den")
        self.assertIn("annie", [m.nick for m in state.members])
        self.assertNotIn("ann", [m.nick for m in state.members])
        again = guest(self.server, "ann")
        self.assertEqual(again.connection.session.nick, "ann", "the old nick is free")

    def test_say_whisper_typing_and_away_after_a_rename(self):
        self.ann.send(codec.Nick("annie"))
        self.server.flush()
        for peer in (self.ann, self.bob, self.carol):
            peer.received()
        self.ann.send(codec.Say("hi", room="den"))
        self.assertEqual(self.carol.only(codec.MessagePacket).sender, "annie")
        self.bob.received(), self.ann.received()
        self.bob.send(codec.Whisper("ann", "psst", ref="w"))
        self.assertEqual(self.bob.error().code, ErrorCode.NO_SUCH_NICK)
        self.bob.send(codec.Whisper("Annie", "psst"))
        self.assertEqual(self.ann.only(codec.Private).to, "annie")
        self.bob.received()
        self.ann.send(codec.Typing("den"))
        self.assertEqual(self.carol.only(codec.TypingNotice), codec.TypingNotice("den", "annie", True))
        self.ann.send(codec.Away(True, "lunch"))
        self.assertEqual(self.carol.only(codec.Status), codec.Status("den", "annie", "lunch"))
        erin = guest(self.server, "erin")
        state = erin.join("den")
        self.assertIn(("annie", "lunch"), [(m.nick, m.away) for m in state.members])

    def test_a_guest_still_owns_what_it_said(self):
        self.ann.send(codec.Say("typo", room="den"))
        self.server.flush()
        (message,) = [p for p in self.ann.received() if isinstance(p, codec.MessagePacket)]
        self.ann.send(codec.Nick("annie"))
        self.server.flush()
        self.ann.received()
        self.ann.send(codec.Edit("den", message.seq, "fixed", ref="e"))
        changed = [p for p in self.ann.received() if isinstance(p, codec.Changed)]
        self.assertEqual(changed[0].message.text, "fixed")

    def test_a_session_in_no_room_is_told_alone(self):
        erin = guest(self.server, "erin")
        self.dave.received(), self.bob.received()
        erin.send(codec.Nick("erina", ref="n"))
        self.assertEqual(renames(erin), [codec.Renamed("erin", "erina", "n")])
        self.assertEqual(self.dave.received(), [])
        self.assertEqual(self.bob.received(), [])


class Operators(SynchronousTestCase):
    def test_a_guest_operator_stays_one(self):
        server = Server()
        gus = guest(server, "gus", "nook")
        bob = guest(server, "bob", "nook")
        gus.send(codec.Nick("gary"))
        server.flush()
        gus.received(), bob.received()
        erin = guest(server, "erin")
        state = erin.join("nook")
        self.assertEqual({m.nick: m.op for m in state.members}, {"gary": True, "bob": None, "erin": None})
        gus.send(codec.Moderate("nook", "kick", "bob", ref="k"))
        record = next(p for p in gus.received() if isinstance(p, codec.MessagePacket))
        self.assertEqual((record.sender, record.action["op"]), ("gary", "kick"))


class VersionOne(SynchronousTestCase):
    def test_version_1_sees_the_old_nick_leave_and_the_new_one_join(self):
        server = Server()
        (old,) = server.logged_in("old")
        ann = guest(server, "ann", "general", "den")
        session_id = ann.connection.session.id
        old.received()
        ann.send(codec.Nick("annie"))
        self.assertEqual(
            old.received(),
            [
                codec.Left(session_id, "ann", "quit", "now known as annie"),
                codec.Joined(session_id, "annie"),
            ],
        )
        late = server.peer()
        welcome = late.login("late")
        self.assertIn("annie", [p.nick for p in welcome.peers])

    def test_not_in_the_default_room_version_1_sees_nothing(self):
        server = Server()
        (old,) = server.logged_in("old")
        ann = guest(server, "ann", "den")
        old.received()
        ann.send(codec.Nick("annie"))
        self.assertEqual(old.received(), [])


class Resume(SynchronousTestCase):
    def test_a_resume_after_a_rename_uses_the_new_nick(self):
        server = Server()
        ann = server.peer()
        welcome = ann.login("ann", version=2)
        ann.join("den")
        ann.send(codec.Nick("annie"))
        server.flush()
        ann.received()
        again = server.peer()
        back = again.login("annie", resume=welcome.resume, version=2)
        self.assertEqual((back.nick, back.id, back.rooms), ("annie", welcome.id, ["den"]))
        self.assertTrue(ann.closing, "the old connection was replaced")

    def test_the_old_nick_with_the_token_is_an_ordinary_login(self):
        server = Server()
        ann = server.peer()
        welcome = ann.login("ann", version=2)
        ann.send(codec.Nick("annie"))
        server.flush()
        other = server.peer()
        fresh = other.login("ann", resume=welcome.resume, version=2)
        self.assertNotEqual(fresh.id, welcome.id)
        self.assertFalse(ann.closing)


class HeldStore:
    """An account store whose answers wait until the test gives them."""

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred] = []

    def account(self, key: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append(d)
        return d


class WhileTheStoreIsAsked(SynchronousTestCase):
    """What changes between the NICK and the account store's answer wins."""

    def setUp(self):
        self.server = Server()
        self.held = HeldStore()
        self.server.hub.renames.store = self.held
        self.gus = guest(self.server, "gus", "general")

    def test_a_login_that_took_the_nick_meanwhile_wins(self):
        self.gus.send(codec.Nick("zed", ref="n"))
        zed = self.server.peer()
        self.assertEqual(zed.login("zed", version=2).nick, "zed")
        self.held.waiting[0].callback(None)
        self.server.flush()
        (error,) = [p for p in self.gus.received() if isinstance(p, codec.Error)]
        self.assertEqual((error.code, error.ref), (ErrorCode.NICK_TAKEN, "n"))
        self.assertEqual(self.server.hub.session_for("gus").id, self.gus.connection.session.id)

    def test_a_session_gone_meanwhile_changes_nothing(self):
        self.gus.send(codec.Nick("zed", ref="n"))
        self.gus.drop()
        self.held.waiting[0].callback(None)
        self.server.flush()
        self.assertIsNone(self.server.hub.session_for("zed"))
        self.assertIsNone(self.server.hub.session_for("gus"))

    def test_a_guest_registered_meanwhile_is_an_account(self):
        self.gus.send(codec.Nick("zed", ref="n"))
        self.gus.send(codec.AccountRequest("register", PASSWORD, ref="r"))
        self.assertEqual(self.gus.only(codec.Done, flush=False).op, "register")
        self.held.waiting[0].callback(None)
        self.server.flush()
        (error,) = [p for p in self.gus.received() if isinstance(p, codec.Error)]
        self.assertEqual((error.code, error.ref), (ErrorCode.NOT_PERMITTED, "n"))
        self.assertEqual(self.gus.connection.session.nick, "gus")
