"""Room modes (docs/protocol.md 15.5): a key, a member limit, a moderated
room and voice, a secret room. On StringTransport and task.Clock."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.backends.sqlite import SQLiteLog
from chatproto.codec import ErrorCode
from tests.harness import Server
from tests.test_accounts import device, made_admin, registered
from tests.test_moderation import guest, moderate


def join_with(peer, room: str, key: str | None, ref: str = "j") -> list:
    peer.send(codec.Join(room, ref, key))
    return peer.received(flush=False)


class Modes(SynchronousTestCase):
    def setUp(self):
        self.server = Server(join_burst=100)
        self.ann = registered(self.server, "ann")
        self.ann.join("den")
        self.bob = guest(self.server, "bob")
        self.bob.join("den")
        self.server.flush()
        self.ann.received()
        self.bob.received()

    def test_mode_sets_and_records_each_field(self):
        moderate(self.ann, "mode", moderated=True, secret=True, key="s3cret", limit=5)
        (record,) = self.ann.received()
        self.assertEqual(
            record.action,
            {"op": "mode", "moderated": True, "secret": True, "key": "s3cret", "limit": 5},
        )
        self.assertEqual(
            record.text,
            "made the room moderated and made the room secret and set the room's key"
            " and limited the room to 5 members",
        )
        self.assertEqual(record.ref, "m")
        state = self.ann.join("den")
        self.assertEqual((state.moderated, state.secret, state.key, state.limit), (True, True, "s3cret", 5))

    def test_a_new_room_shows_no_modes(self):
        state = self.bob.join("den")
        self.assertEqual((state.moderated, state.secret, state.key, state.limit), (False, False, "", 0))

    def test_empty_key_and_zero_limit_remove_them(self):
        moderate(self.ann, "mode", key="k", limit=3)
        moderate(self.ann, "mode", key="", limit=0)
        records = self.ann.received()
        self.assertEqual(records[-1].text, "removed the room's key and removed the member limit")
        carol = guest(self.server, "carol")
        self.assertEqual(carol.join("den").key, "")

    def test_bad_keys_and_limits_are_bad_packet(self):
        for fields in (
            {"key": "has space"},
            {"key": "a,b"},
            {"key": "x" * 24},
            {"key": "bell\x07"},
            {"limit": -1},
            {"limit": 100_001},
        ):
            moderate(self.ann, "mode", **fields)
            self.assertEqual(self.ann.error().code, ErrorCode.BAD_PACKET, fields)
        moderate(self.ann, "mode", key="x" * 23, limit=100_000)
        self.assertEqual(self.ann.received()[0].action["limit"], 100_000)

    def test_mode_with_no_field(self):
        moderate(self.ann, "mode")
        error = self.ann.error()
        self.assertEqual(error.code, ErrorCode.BAD_PACKET)
        self.assertIn("moderated", error.message)

    def test_a_member_who_is_no_operator_changes_nothing(self):
        moderate(self.bob, "mode", moderated=True)
        self.assertEqual(self.bob.error().code, ErrorCode.NOT_OPERATOR)
        moderate(self.bob, "voice", "bob")
        self.assertEqual(self.bob.error().code, ErrorCode.NOT_OPERATOR)

    def test_key(self):
        moderate(self.ann, "mode", key="open-sesame")
        carol = guest(self.server, "carol")
        (error,) = join_with(carol, "den", None)
        self.assertEqual((error.code, error.ref), (ErrorCode.BAD_KEY, "j"))
        (error,) = join_with(carol, "den", "wrong")
        self.assertEqual(error.code, ErrorCode.BAD_KEY)
        (error,) = join_with(carol, "den", "OPEN-SESAME")
        self.assertEqual(error.code, ErrorCode.BAD_KEY, "a key is matched exactly")
        (state,) = join_with(carol, "den", "open-sesame")
        self.assertEqual((state.room, state.key), ("den", "open-sesame"))

    def test_limit(self):
        moderate(self.ann, "mode", limit=2)
        carol = guest(self.server, "carol")
        (error,) = join_with(carol, "den", None)
        self.assertEqual((error.code, error.ref), (ErrorCode.ROOM_FULL, "j"))
        self.bob.send(codec.Part("den"))
        self.server.flush()
        (state,) = join_with(carol, "den", None)
        self.assertEqual(state.limit, 2)

    def test_moderated_room(self):
        moderate(self.ann, "mode", moderated=True)
        self.server.flush()
        self.bob.received()
        self.bob.send(codec.Say("hello?", "s", room="den"))
        error = self.bob.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.MODERATED, "s"))
        self.ann.send(codec.Say("operators speak", room="den"))
        self.assertEqual(self.ann.received()[-1].text, "operators speak")
        moderate(self.ann, "voice", "bob")
        record = self.ann.received()[0]
        self.assertEqual((record.action, record.text), ({"op": "voice", "target": "bob"}, "gave bob voice"))
        self.bob.send(codec.Say("now I may", room="den"))
        self.assertEqual(self.bob.received()[-1].text, "now I may")
        self.ann.received()
        state = self.ann.join("den")
        self.assertEqual({p.nick: p.voice for p in state.members}, {"ann": None, "bob": True})
        moderate(self.ann, "devoice", "bob")
        self.assertEqual(self.ann.received()[0].action, {"op": "devoice", "target": "bob"})
        self.bob.received()
        self.bob.send(codec.Say("and now?", room="den"))
        self.assertEqual(self.bob.error().code, ErrorCode.MODERATED)

    def test_a_moderated_room_refuses_edits_and_reactions_but_not_deletes(self):
        self.bob.send(codec.Say("before", room="den"))
        seq = self.bob.received()[-1].seq
        moderate(self.ann, "mode", moderated=True)
        self.server.flush()
        self.bob.received()
        self.bob.send(codec.Edit("den", seq, "after"))
        self.assertEqual(self.bob.error().code, ErrorCode.MODERATED)
        self.bob.send(codec.React("den", seq, "👍"))
        self.assertEqual(self.bob.error().code, ErrorCode.MODERATED)
        self.bob.send(codec.Delete("den", seq, "d"))
        self.assertIsInstance(self.bob.received()[-1], codec.Changed)

    def test_moderated_is_checked_before_the_text(self):
        moderate(self.ann, "mode", moderated=True)
        self.bob.received()
        self.bob.send(codec.Say("", room="den"))
        self.assertEqual(self.bob.error().code, ErrorCode.MODERATED)

    def test_voice_needs_a_member_and_devoice_a_voiced_nick(self):
        moderate(self.ann, "voice", "carol")
        self.assertEqual(self.ann.error().code, ErrorCode.NO_SUCH_MEMBER)
        moderate(self.ann, "devoice", "bob")
        self.assertEqual(self.ann.error().code, ErrorCode.NO_SUCH_MEMBER)
        moderate(self.ann, "voice")
        self.assertEqual(self.ann.error().code, ErrorCode.BAD_PACKET)

    def test_a_guests_voice_goes_when_it_leaves(self):
        moderate(self.ann, "voice", "bob")
        self.bob.send(codec.Part("den"))
        self.bob.received()
        state = self.bob.join("den")
        self.assertEqual({p.nick: p.voice for p in state.members}, {"ann": None, "bob": None})

    def test_voice_is_announced_in_joined(self):
        carol = registered(self.server, "carol")
        carol.join("den")
        moderate(self.ann, "voice", "carol")
        carol.send(codec.Part("den"))
        self.server.flush()
        self.ann.received()
        carol.received()
        carol.join("den")
        joined = self.ann.only(codec.Joined)
        self.assertEqual((joined.nick, joined.voice), ("carol", True))

    def test_a_ban_takes_the_voice(self):
        carol = registered(self.server, "carol")
        carol.join("den")
        moderate(self.ann, "voice", "carol")
        moderate(self.ann, "ban", "carol")
        moderate(self.ann, "unban", "carol")
        self.server.flush()
        carol.received()
        state = carol.join("den")
        self.assertEqual({p.nick: p.voice for p in state.members}["carol"], None)

    def test_a_guest_that_registers_keeps_its_voice_as_an_account(self):
        moderate(self.ann, "voice", "bob")
        self.bob.send(codec.AccountRequest("register", "a long enough password", ref="r"))
        self.server.flush()
        self.assertTrue(self.server.hub.room_for("den").rules.is_voiced(self.server.hub.registry.held("bob")))
        self.assertIn("bob", self.server.hub.room_for("den").rules.voices)


class Secret(SynchronousTestCase):
    def setUp(self):
        self.server = Server(admins=["root"])
        self.ann = guest(self.server, "ann")
        self.ann.join("den")
        moderate(self.ann, "mode", secret=True)
        self.ann.received()

    def listed(self, peer) -> list[str]:
        peer.received()
        peer.send(codec.ListRooms("l"))
        return [info.room for info in peer.only(codec.RoomList).rooms]

    def test_a_secret_room_is_listed_to_its_members_only(self):
        self.assertEqual(self.listed(self.ann), ["den", "general"])
        bob = guest(self.server, "bob")
        self.assertEqual(self.listed(bob), ["general"])
        bob.join("den")
        self.assertEqual(self.listed(bob), ["den", "general"])

    def test_admins_see_it(self):
        made_admin(self.server, "root")
        root, _ = device(self.server, "root")
        self.assertEqual(self.listed(root), ["den", "general"])

    def test_a_public_room_again(self):
        moderate(self.ann, "mode", secret=False)
        self.assertEqual(self.listed(guest(self.server, "bob")), ["den", "general"])


class JoinOrder(SynchronousTestCase):
    """JOIN's checks of a room's rules: banned, invite_only, bad_key,
    room_full; who passes which (docs/protocol.md 15.5)."""

    def setUp(self):
        self.server = Server(join_burst=100, admins=["root"])
        self.ann = registered(self.server, "ann")
        self.ann.join("den")
        moderate(self.ann, "mode", invite_only=True, key="k", limit=1)
        moderate(self.ann, "ban", "bob")
        self.ann.received()

    def code(self, peer, key: str | None = None) -> str:
        (error,) = join_with(peer, "den", key)
        return error.code

    def test_the_order(self):
        bob = guest(self.server, "bob")
        self.assertEqual(self.code(bob, "k"), ErrorCode.BANNED, "banned first")
        carol = guest(self.server, "carol")
        self.assertEqual(self.code(carol), ErrorCode.INVITE_ONLY, "invite_only before the key")
        moderate(self.ann, "mode", invite_only=False)
        self.assertEqual(self.code(carol), ErrorCode.BAD_KEY, "the key before the limit")
        self.assertEqual(self.code(carol, "k"), ErrorCode.ROOM_FULL)

    def test_an_invitation_passes_invite_only_and_the_limit_but_not_the_key(self):
        carol = guest(self.server, "carol")
        moderate(self.ann, "invite", "carol")
        self.server.flush()
        carol.received()
        self.assertEqual(self.code(carol), ErrorCode.BAD_KEY)
        (state,) = join_with(carol, "den", "k")
        self.assertEqual(state.room, "den")

    def test_admins_pass_every_rule_but_a_ban_applies_to_no_admin(self):
        made_admin(self.server, "root")
        root, _ = device(self.server, "root")
        (state,) = join_with(root, "den", None)
        self.assertEqual(state.room, "den")

    def test_an_operator_coming_back_passes_everything(self):
        carol = guest(self.server, "carol")
        moderate(self.ann, "invite", "carol")
        join_with(carol, "den", "k")  # keeps the room, full, alive
        self.ann.send(codec.Part("den"))
        self.ann.received()
        state = self.ann.join("den")
        self.assertEqual(state.room, "den")


class KeptAcrossRestart(SynchronousTestCase):
    def test_modes_and_account_voices_are_kept(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        ann = registered(server, "ann")
        ann.join("den")
        carol = registered(server, "carol")
        carol.join("den")
        moderate(ann, "mode", moderated=True, secret=True, key="k", limit=9)
        moderate(ann, "voice", "carol")
        for peer in (ann, carol):
            peer.send(codec.Quit())
        server.flush()
        server.store.close()
        again = Server(store=SQLiteLog(path))
        dan = guest(again, "dan")
        (error,) = join_with(dan, "den", None)
        self.assertEqual(error.code, ErrorCode.BAD_KEY)
        carol, packets = device(again, "carol")
        (state,) = [p for p in packets if isinstance(p, codec.RoomState)]
        self.assertEqual((state.moderated, state.secret, state.key, state.limit), (True, True, "k", 9))
        self.assertEqual({p.nick: p.voice for p in state.members}, {"carol": True})
        carol.send(codec.Say("still voiced", room="den"))
        self.assertEqual(carol.received()[-1].text, "still voiced")


class VersionOne(SynchronousTestCase):
    def test_version_1_sees_no_voice_and_is_not_held_by_room_rules(self):
        server = Server(admins=["root"])
        made_admin(server, "root")
        root, _ = device(server, "root")
        bob = guest(server, "bob")
        bob.join("general")
        root.received()
        root.send(codec.Moderate("general", "voice", "bob", ref="v"))
        root.send(codec.Moderate("general", "mode", ref="m", moderated=True))
        server.flush()
        old = server.peer()
        welcome = old.login("old")
        self.assertEqual([(p.nick, p.voice) for p in welcome.peers if p.nick == "bob"], [("bob", None)])
        old.received()
        old.say("version 1 knows no room rules")
        self.assertEqual(old.received()[-1].text, "version 1 knows no room rules")
