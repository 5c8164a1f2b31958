"""Moderation (docs/protocol.md, section 15): room operators, server admins,
address limits. On StringTransport and task.Clock."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.backends.sqlite import SQLiteLog
from chatproto.codec import ErrorCode
from chatproto.core.connection import token_text
from tests.harness import Server, result
from tests.test_accounts import PASSWORD, device, made_admin, registered


def guest(server: Server, nick: str, host: str = "127.0.0.1"):
    peer = server.peer(host)
    peer.login(nick, version=2)
    peer.received()
    return peer


def moderate(peer, op: str, target: str | None = None, room: str = "den", **fields):
    peer.send(codec.Moderate(room, op, target, ref="m", **fields))


class Operators(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.ann = registered(self.server, "ann")
        self.state = self.ann.join("den")
        self.bob = guest(self.server, "bob")
        self.bob.join("den")
        self.server.flush()
        self.ann.received()

    def test_the_creator_is_the_operator(self):
        self.assertEqual([(p.nick, p.op) for p in self.state.members], [("ann", True)])
        moderate(self.bob, "kick", "ann")
        error = self.bob.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.NOT_OPERATOR, "m"))

    def test_a_kick_is_announced_recorded_and_takes_the_member_out(self):
        moderate(self.ann, "kick", "bob", reason="too loud")
        record, left = self.ann.received()
        self.assertEqual((record.sender, record.text, record.ref), ("ann", "kicked bob: too loud", "m"))
        self.assertEqual(record.action, {"op": "kick", "target": "bob", "reason": "too loud"})
        self.assertEqual((left.nick, left.reason, left.message), ("bob", "kicked", "too loud"))
        bob_saw = self.bob.received()
        self.assertEqual(bob_saw[0].action["op"], "kick")
        self.assertEqual(bob_saw[-1], codec.Left(left.id, "bob", "kicked", "too loud", "den"))
        self.bob.send(codec.Say("still here?", room="den"))
        self.assertEqual(self.bob.error().code, ErrorCode.NOT_A_MEMBER)
        (stored,) = self.server.stored("den")
        self.assertEqual((stored.sender, stored.action["op"]), ("ann", "kick"), "in the room's history")
        self.bob.send(codec.HistoryRequest(room="den"))
        self.assertEqual(self.bob.error().code, ErrorCode.NOT_A_MEMBER)
        self.ann.send(codec.HistoryRequest(room="den"))
        self.assertEqual(self.ann.only(codec.HistoryPage).messages[0].action["target"], "bob")

    def test_no_such_member(self):
        moderate(self.ann, "kick", "carol")
        self.assertEqual(self.ann.error().code, ErrorCode.NO_SUCH_MEMBER)
        moderate(self.ann, "unban", "carol")
        self.assertEqual(self.ann.error().code, ErrorCode.NO_SUCH_MEMBER)

    def test_a_ban_is_enforced_on_rejoin_until_lifted(self):
        moderate(self.ann, "ban", "bob")
        self.server.flush()
        self.assertEqual(self.bob.received()[-1].reason, "kicked")
        self.bob.send(codec.Join("den", "j"))
        error = self.bob.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.BANNED, "j"))
        self.ann.received()
        self.ann.send(codec.Moderate("den", "bans", ref="b"))
        bans = self.ann.only(codec.BanList, flush=False)
        self.assertEqual([(b.target, b.by) for b in bans.bans], [("bob", "ann")])
        moderate(self.ann, "unban", "BOB")
        self.assertEqual(self.bob.join("den").room, "den")

    def test_a_ban_holds_for_a_nick_not_present_and_across_a_new_guest(self):
        moderate(self.ann, "ban", "mallory")
        mallory = guest(self.server, "mallory")
        mallory.send(codec.Join("den"))
        self.assertEqual(mallory.error().code, ErrorCode.BANNED)

    def test_invite_only(self):
        moderate(self.ann, "mode", invite_only=True)
        record = self.ann.received()[0]
        self.assertEqual(record.action, {"op": "mode", "invite_only": True})
        carol = guest(self.server, "carol")
        carol.send(codec.Join("den", "j"))
        self.assertEqual(carol.error().code, ErrorCode.INVITE_ONLY)
        moderate(self.ann, "invite", "carol")
        self.assertEqual(carol.only(codec.Invited, flush=False), codec.Invited("den", "ann"))
        self.assertEqual(carol.join("den").invite_only, True)

    def test_a_kick_withdraws_the_invitation(self):
        """Kicked from an invite-only room, a member can't walk back in."""
        moderate(self.ann, "mode", invite_only=True)
        carol = guest(self.server, "carol")
        moderate(self.ann, "invite", "carol")
        self.server.flush()
        carol.received()
        carol.join("den")
        self.server.flush()
        self.ann.received()
        moderate(self.ann, "kick", "carol")
        self.server.flush()
        carol.received()
        carol.send(codec.Join("den", "j"))
        self.assertEqual(carol.error().code, ErrorCode.INVITE_ONLY)
        moderate(self.ann, "invite", "carol")  # a new invitation lets her in again
        self.server.flush()
        carol.received()
        self.assertEqual(carol.join("den").room, "den")

    def test_topic_lock(self):
        moderate(self.ann, "mode", topic_lock=True)
        self.bob.send(codec.SetTopic("den", "mine now", "t"))
        self.assertEqual(self.bob.error().code, ErrorCode.TOPIC_LOCKED)
        self.ann.send(codec.SetTopic("den", "ours", "t"))
        self.assertEqual(self.ann.received()[-1].topic, "ours")

    def test_operators_make_operators(self):
        moderate(self.ann, "op", "bob")
        self.server.flush()
        self.assertEqual(self.bob.received()[-1].action, {"op": "op", "target": "bob"})
        carol = guest(self.server, "carol")
        carol.join("den")
        moderate(self.bob, "kick", "carol")
        self.assertEqual(self.bob.received()[-1].reason, "kicked")
        state = self.bob.join("den")
        self.assertEqual({p.nick: p.op for p in state.members}, {"ann": True, "bob": True})

    def test_account_operators_and_bans_survive_an_empty_room(self):
        moderate(self.ann, "ban", "mallory")
        self.ann.send(codec.Part("den"))
        self.bob.send(codec.Part("den"))
        self.assertIsNone(self.server.hub.room_for("den"), "the room is gone")
        carol = guest(self.server, "carol")
        state = carol.join("den")
        self.assertEqual([p.op for p in state.members], [None], "not the operator: ann still runs it")
        mallory = guest(self.server, "mallory")
        mallory.send(codec.Join("den"))
        self.assertEqual(mallory.error().code, ErrorCode.BANNED)


class ReturningOperators(SynchronousTestCase):
    """An operator who comes back is shown as one, to itself and to everyone
    else, on every transport (Int32 here; IRC in tests.test_irc)."""

    def setUp(self):
        from tests.test_irc import IrcPeer

        self.server = Server(admins=["root"])
        self.bob = guest(self.server, "bob")
        self.irc = IrcPeer(self.server)
        self.irc.register("ircy")

    def room_of_three(self, creator):
        """``creator`` makes den; bob and an IRC user join it; inboxes emptied."""
        for peer in (creator, self.bob):
            peer.received()
        creator.join("den")
        self.bob.join("den")
        self.irc.send("JOIN #den")
        for peer in (creator, self.bob):
            peer.received()
        self.irc.lines()

    def names(self) -> str:
        self.irc.send("NAMES #den")
        return self.irc.lines()[0].rsplit(":", 1)[1]

    def test_an_account_operator_logging_in_again_is_joined_as_operator(self):
        ann = registered(self.server, "ann")
        self.room_of_three(ann)
        ann.drop()
        self.bob.received(), self.irc.lines()
        _, packets = device(self.server, "ann")
        state = next(p for p in packets if isinstance(p, codec.RoomState))
        self.assertEqual({p.nick: p.op for p in state.members}, {"ann": True, "bob": None, "ircy": None})
        joined = self.bob.received()[-1]
        self.assertEqual(joined, codec.Joined(joined.id, "ann", "den", op=True))
        self.assertEqual(self.irc.lines(), [":ann!ann@chat JOIN :#den", ":test MODE #den +o :ann"])
        self.assertEqual(self.names(), "bob ircy @ann")

    def test_a_resumed_operator_keeps_its_status_and_nobody_sees_a_join(self):
        for make in (lambda: registered(self.server, "ann"), lambda: guest(self.server, "ann")):
            self.setUp()
            ann = make()
            self.room_of_three(ann)
            token = token_text(self.server.hub.session_for("ann").devices[ann.connection])
            again = self.server.peer()
            again.send(codec.Login("ann", 2, token, password=None))
            state = again.received()[1]
            self.assertEqual({p.nick: p.op for p in state.members}, {"ann": True, "bob": None, "ircy": None})
            self.assertFalse([p for p in self.bob.received() if isinstance(p, codec.Joined)])
            self.assertEqual(self.irc.lines(), [])
            self.assertEqual(self.names(), "@ann bob ircy")

    def test_a_guest_operator_is_no_operator_in_its_next_session_anywhere(self):
        gus = guest(self.server, "gus")
        self.room_of_three(gus)
        gus.drop()
        again = guest(self.server, "gus")
        state = again.join("den")
        self.assertEqual({p.nick: p.op for p in state.members}, {"bob": None, "ircy": None, "gus": None})
        self.assertEqual(self.bob.received()[-1].op, None)
        self.assertEqual(self.irc.lines()[-1], ":gus!gus@chat JOIN :#den")
        self.assertEqual(self.names(), "bob ircy gus")

    def test_an_admin_joins_as_operator_and_version_1_sees_no_op(self):
        (old,) = self.server.logged_in("old")
        made_admin(self.server, "root")
        root, _ = device(self.server, "root")
        self.bob.received()
        self.bob.join("general")
        self.bob.received(), old.received()
        root.join("general")
        self.assertEqual(self.bob.received()[-1].op, True)
        self.assertEqual(
            old.received()[-1], codec.Joined(root.connection.id, "root"), "version 1 is unchanged"
        )


class KeptTopics(SynchronousTestCase):
    """A room's topic is kept as long as its rules are (docs/protocol.md 14.2)."""

    def restarted(self, server: Server, path: str) -> Server:
        server.flush()
        server.store.close()
        return Server(store=SQLiteLog(path))

    def test_an_account_rooms_topic_comes_back_after_a_restart_with_its_ban(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        ann = registered(server, "ann")
        ann.join("den")
        ann.send(codec.SetTopic("den", "plans for friday"))
        moderate(ann, "ban", "mallory")
        again = self.restarted(server, path)
        bob = guest(again, "bob")
        self.assertEqual(bob.join("den").topic, "plans for friday")
        bob.send(codec.ListRooms("l"))
        listed = {info.room: info.topic for info in bob.only(codec.RoomList).rooms}
        self.assertEqual(listed["den"], "plans for friday")
        mallory = guest(again, "mallory")
        mallory.send(codec.Join("den"))
        self.assertEqual(mallory.error().code, ErrorCode.BANNED, "the ban came back with it")

    def test_an_account_rooms_topic_set_later_comes_back_when_it_logs_in(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        ann = registered(server, "ann")
        ann.join("den")
        moderate(ann, "mode", invite_only=True)
        ann.send(codec.SetTopic("den", "members only"))
        again = self.restarted(server, path)
        _, packets = device(again, "ann")
        state = next(p for p in packets if isinstance(p, codec.RoomState))
        self.assertEqual((state.room, state.topic, state.invite_only), ("den", "members only", True))

    def test_the_topic_stays_while_the_room_is_empty_and_goes_when_it_is_closed(self):
        server = Server(admins=["root"])
        ann = registered(server, "ann")
        ann.join("den")
        moderate(ann, "ban", "mallory")
        ann.send(codec.SetTopic("den", "kept"))
        ann.send(codec.Part("den"))
        ann.received()
        self.assertIsNone(server.hub.room_for("den"))
        self.assertEqual(ann.join("den").topic, "kept")
        made_admin(server, "root")
        device(server, "root")[0].send(codec.AdminRequest("close", room="den"))
        server.flush()
        self.assertEqual(guest(server, "bob").join("den").topic, "", "closing forgets rules and topic")

    def test_a_room_without_kept_rules_forgets_its_topic(self):
        server = Server()
        ann = guest(server, "ann")
        ann.join("den")
        ann.send(codec.SetTopic("den", "passing"))
        moderate(ann, "ban", "mallory")
        moderate(ann, "unban", "mallory")
        ann.send(codec.Part("den"))
        ann.received()
        self.assertEqual(ann.join("den").topic, "", "nothing of its rules was worth keeping")


class RulesNobodyCanEnforce(SynchronousTestCase):
    """docs/protocol.md 14.2: an empty room keeps its rules only while an
    account is among its operators; a guest operator's rules go with the
    room, so it can't lock itself for good."""

    def guest_room(self, server: Server):
        gus = guest(server, "gus")
        gus.join("den")
        moderate(gus, "mode", invite_only=True, topic_lock=True)
        moderate(gus, "ban", "mallory")
        gus.send(codec.SetTopic("den", "gus's den"))
        server.flush()
        gus.received()
        return gus

    def assert_fresh(self, server: Server, joiner=None):
        """The next joiner makes the room anew and runs it; nothing of the old rules holds."""
        state = (joiner or guest(server, "bob")).join("den")
        self.assertEqual((state.invite_only, state.topic_lock, state.topic), (False, False, ""))
        self.assertEqual([p.op for p in state.members], [True])
        self.assertEqual(guest(server, "mallory").join("den").room, "den", "the ban went too")

    def test_a_guest_operators_rules_go_when_the_room_empties(self):
        server = Server()
        self.guest_room(server).send(codec.Part("den"))
        self.assertIsNone(server.hub.room_for("den"))
        self.assert_fresh(server)

    def test_they_hold_while_the_room_has_members(self):
        server = Server()
        gus = self.guest_room(server)
        moderate(gus, "invite", "bob")
        bob = guest(server, "bob")
        bob.join("den")
        gus.drop()  # the operator is gone; bob is still in
        carol = guest(server, "carol")
        carol.send(codec.Join("den", "j"))
        self.assertEqual(carol.error().code, ErrorCode.INVITE_ONLY)
        bob.send(codec.Part("den"))
        carol.received()
        self.assert_fresh(server, carol)

    def test_they_go_across_a_restart(self):
        """Stored while the room had members (the server stopped, or was
        killed, with gus in it): not taken back by the next server."""
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        self.guest_room(server)
        server.flush()
        server.store.close()
        self.assert_fresh(Server(store=SQLiteLog(path)))

    def test_an_account_operators_rules_are_kept_and_judge_the_next_join(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        ann = registered(server, "ann")
        ann.join("den")
        moderate(ann, "mode", invite_only=True)
        ann.send(codec.Part("den"))
        ann.send(codec.Quit())
        server.flush()
        server.store.close()
        again = Server(store=SQLiteLog(path))
        carol = guest(again, "carol")
        carol.send(codec.Join("den", "j"))
        self.assertEqual(carol.error().code, ErrorCode.INVITE_ONLY)
        carol.send(codec.ListRooms("l"))
        listed = [info.room for info in carol.only(codec.RoomList).rooms]
        self.assertEqual(listed, ["general"], "empty, so not listed (14.6)")
        ann, _ = device(again, "ann")
        state = ann.join("den")
        self.assertEqual(
            (state.invite_only, [(p.nick, p.op) for p in state.members]), (True, [("ann", True)])
        )


class AdminRights(SynchronousTestCase):
    """Rights belong to the account the server made for --admin, not to a spelling."""

    def test_the_admin_account_is_made_at_start_with_a_one_time_password(self):
        server = Server(admins=["Boss"])
        record = result(server.hub.accounts.store.account("boss"))
        self.assertEqual((record.nick, record.admin), ("Boss", True))
        self.assertEqual(len(server.hub.accounts.setup_passwords["boss"]), 16)
        made_admin(server, "Boss")
        _, packets = device(server, "Boss")
        self.assertTrue(packets[0].admin, "its password changed, the account is still the admin")

    def test_a_guest_who_registers_an_admin_name_gets_no_rights(self):
        store = SQLiteLog(":memory:")
        early = Server(store=store)  # a server without --admin: anyone may register boss
        registered(early, "boss").send(codec.Quit())
        server = Server(store=store, admins=["boss"])
        _, packets = device(server, "boss")
        self.assertFalse(packets[0].admin, "registered by someone, not made for the operator")
        device(server, "boss")[0].send(codec.AdminRequest("sessions", ref="a"))
        self.assertNotIn("boss", server.hub.accounts.setup_passwords)

    def test_rights_die_with_the_account(self):
        server = Server(admins=["boss"])
        made_admin(server, "boss")
        boss, _ = device(server, "boss")
        boss.join("den")
        guest(server, "bob").join("den")  # the room stays
        boss.send(codec.AccountRequest("delete", PASSWORD, ref="d"))
        self.assertIn(codec.Done("delete", "boss", "d"), boss.received())
        boss.send(codec.Quit())
        thief = registered(server, "boss", "another password")
        thief.send(codec.AdminRequest("sessions", ref="a"))
        self.assertEqual(thief.error().code, ErrorCode.NOT_ADMIN)
        state = thief.join("den")
        self.assertEqual(
            [(p.nick, p.op) for p in state.members],
            [("bob", None), ("boss", None)],
            "nor the room's operator",
        )

    def test_rights_begin_only_at_a_login_whose_welcome_says_admin(self):
        """15.7: WELCOME's ``admin`` and ADMIN agree for the whole session.
        Registering a --admin name mid-session (possible once its account
        was deleted) grants nothing, then or at the next login."""
        server = Server(admins=["boss"])
        made_admin(server, "boss")
        boss, packets = device(server, "boss")
        self.assertTrue(packets[0].admin)
        boss.send(codec.AdminRequest("sessions", ref="s"))
        self.assertIsInstance(boss.only(codec.Sessions, flush=False), codec.Sessions)
        boss.send(codec.AccountRequest("delete", PASSWORD, ref="d"))
        boss.received()
        boss.send(codec.AdminRequest("sessions", ref="s"))
        self.assertEqual(boss.error().code, ErrorCode.NOT_ADMIN, "rights end with the account, at once")
        boss.send(codec.Quit())
        gus = server.peer()
        self.assertFalse(gus.login("boss", version=2).admin)
        gus.received()
        gus.send(codec.AccountRequest("register", "another password", ref="r"))
        self.assertEqual(gus.only(codec.Done, flush=False), codec.Done("register", "boss", "r"))
        gus.send(codec.AdminRequest("sessions", ref="s"))
        self.assertEqual(gus.error().code, ErrorCode.NOT_ADMIN, "not at once")
        gus.send(codec.Quit())
        again, packets = device(server, "boss", "another password")
        self.assertFalse(packets[0].admin)
        again.send(codec.AdminRequest("sessions", ref="s"))
        self.assertEqual(again.error().code, ErrorCode.NOT_ADMIN, "nor at the next login")

    def test_an_operator_who_deletes_the_account_leaves_no_status_to_the_next(self):
        store = SQLiteLog(":memory:")
        server = Server(store=store)
        ann = registered(server, "ann")
        ann.join("den")
        bob = registered(server, "bob")  # an account operator too: the rules stay with him
        bob.join("den")
        moderate(ann, "op", "bob")
        moderate(ann, "mode", invite_only=True)
        bob.send(codec.Part("den"))
        ann.send(codec.Part("den"))
        ann.send(codec.AccountRequest("delete", PASSWORD, ref="d"))
        ann.send(codec.Quit())
        server.flush()
        self.assertEqual(result(store_rules(store, "den"))["ops"], ["bob"], "the stored rules forget ann")
        again = registered(server, "ann", "someone else's")
        again.send(codec.Join("den", "j"))
        self.assertEqual(again.error().code, ErrorCode.INVITE_ONLY, "the next ann is nobody there")


def store_rules(store, room: str):
    from chatproto.backends.sqlite_accounts import SQLiteAccounts

    return SQLiteAccounts(store).rules(room)


class Admins(SynchronousTestCase):
    def setUp(self):
        self.server = Server(admins=["root"])
        made_admin(self.server, "root")
        self.root, packets = device(self.server, "root")
        self.assertTrue(packets[0].admin)
        self.bob = guest(self.server, "bob")
        self.bob.join("den")

    def admin(self, op, **fields):
        self.root.received()
        self.root.send(codec.AdminRequest(op, ref="a", **fields))

    def test_only_admins(self):
        self.bob.send(codec.AdminRequest("sessions", ref="a"))
        self.assertEqual(self.bob.error().code, ErrorCode.NOT_ADMIN)

    def test_a_non_admin_is_told_not_admin_before_anything_else(self):
        """Not even the list of ops: a non-admin learns nothing of ADMIN."""
        for request in (
            codec.AdminRequest("frobnicate", ref="a"),
            codec.AdminRequest("ban", duration=-1.0, ref="a"),  # a bad duration, no target
            codec.AdminRequest("close", ref="a"),  # no room
            codec.AdminRequest("kick", target="no body", ref="a"),  # a bad nick
        ):
            self.bob.send(request)
            error = self.bob.error()
            self.assertEqual((error.code, error.ref), (ErrorCode.NOT_ADMIN, "a"), request)
            self.assertNotIn("sessions", error.message)
        self.admin("frobnicate")
        error = self.root.error()
        self.assertEqual(error.code, ErrorCode.BAD_PACKET, "an admin is told the ops")
        self.assertIn("sessions", error.message)

    def test_a_server_kick_or_ban_is_recorded_to_the_target_too_then_bye(self):
        for op in ("kick", "ban"):
            self.setUp()
            carol = guest(self.server, "carol")
            carol.join("den")
            self.server.flush()
            self.bob.received()
            self.admin(op, target="bob", reason="spam")
            record, bye = self.bob.received()
            self.assertEqual(record.action, {"op": f"server_{op}", "target": "bob", "reason": "spam"})
            self.assertEqual((record.sender, record.room), ("root", "den"))
            self.assertEqual(bye, codec.Bye("kicked"), "the record first, then BYE")
            self.assertTrue(self.bob.closing)
            seen = carol.received()
            self.assertEqual(seen[0], record)
            self.assertEqual((seen[1].nick, seen[1].reason), ("bob", "kicked"))
            self.assertEqual(self.root.only(codec.Done, flush=False), codec.Done(op, "bob", "a"))

    def test_admins_see_the_pending_and_connected_lists(self):
        pending = self.server.peer()
        self.root.received()
        self.admin("sessions")
        sessions = self.root.only(codec.Sessions, flush=False)
        self.assertEqual([p.id for p in sessions.pending], [pending.connection.id])
        self.assertEqual(
            {(s.nick, s.account, tuple(s.rooms)) for s in sessions.connected},
            {("root", True, ()), ("bob", False, ("den",))},
        )

    def test_close_a_room(self):
        self.admin("close", room="den", reason="spam")
        self.assertEqual(self.root.only(codec.Done, flush=False), codec.Done("close", "den", "a"))
        record, left = self.bob.received()
        self.assertEqual((record.sender, record.action), ("root", {"op": "close", "reason": "spam"}))
        self.assertEqual(left.reason, "closed")
        self.assertIsNone(self.server.hub.room_for("den"))
        self.admin("close", room="general")
        self.assertEqual(self.root.error().code, ErrorCode.NOT_PERMITTED)

    def test_a_server_ban_keeps_the_nick_out_until_it_expires(self):
        self.admin("ban", target="bob", duration=60.0)
        self.assertIn(codec.Bye("kicked"), self.bob.received())
        again = self.server.peer()
        again.send(codec.Login("bob", 2))
        error = again.error()
        self.assertEqual((error.code, error.retry_after), (ErrorCode.BANNED, 60))
        self.server.clock.advance(60)
        self.assertIsInstance(self.server.peer().login("bob", version=2), codec.Welcome)

    def test_an_address_ban(self):
        outsider = guest(self.server, "eve", host="203.0.113.5")
        self.admin("ban_address", address="203.0.113.0/24", duration=600.0)
        self.assertEqual(self.root.only(codec.Done, flush=False).target, "203.0.113.0/24")
        self.assertIn(codec.Bye("kicked"), outsider.received())
        late = self.server.peer("203.0.113.77")
        self.assertEqual(late.received(), [codec.Bye("banned")])
        self.assertTrue(late.closing)
        self.assertIsInstance(self.server.peer("198.51.100.1").login("ok", version=2), codec.Welcome)
        self.admin("unban_address", address="203.0.113.0/24")
        self.assertIsInstance(self.server.peer("203.0.113.77").login("eve", version=2), codec.Welcome)

    def test_reset_a_password(self):
        registered(self.server, "ann").send(codec.Quit())
        self.admin("reset", target="ann", password="brand new pw")
        self.assertEqual(self.root.only(codec.Done, flush=False), codec.Done("reset", "ann", "a"))
        self.assertIsInstance(device(self.server, "ann", "brand new pw")[1][0], codec.Welcome)
        self.admin("reset", target="nobody", password="brand new pw")
        self.assertEqual(self.root.error().code, ErrorCode.NO_SUCH_ACCOUNT)

    def test_an_admin_is_an_operator_everywhere(self):
        self.root.received()
        self.root.join("den")
        self.root.send(codec.Moderate("den", "kick", "bob", ref="k"))
        self.assertEqual(self.bob.received()[-1].reason, "kicked")


class OrderOfChecks(SynchronousTestCase):
    """A request that fails two checks gets the first one's error, in the
    orders docs/protocol.md gives (14.4 JOIN, 14.6 TOPIC, 15.2 MARK, 15.7 ADMIN)."""

    def refused(self, peer, packet) -> str:
        peer.received()
        peer.send(packet)
        return peer.error().code

    def test_join(self):
        server = Server(join_burst=100, rooms_per_connection=2)
        ann = guest(server, "ann")
        ann.join("den")
        moderate(ann, "mode", invite_only=True)
        moderate(ann, "ban", "bob")
        bob = guest(server, "bob")
        self.assertEqual(self.refused(bob, codec.Join("den")), ErrorCode.BANNED, "banned before invite_only")
        bob.join("a")
        bob.join("b")
        self.assertEqual(self.refused(bob, codec.Join("den")), ErrorCode.TOO_MANY_ROOMS, "the counts first")
        self.assertEqual(self.refused(bob, codec.Join("no room")), ErrorCode.BAD_ROOM, "the name before them")
        self.assertIsInstance(bob.join("a"), codec.RoomState, "a member gets ROOM again at its limit")

    def test_join_past_the_servers_room_count(self):
        server = Server(join_burst=100, max_rooms=2)
        ann = registered(server, "ann")
        ann.join("den")
        moderate(ann, "ban", "bob")
        bob = guest(server, "bob")
        self.assertEqual(self.refused(bob, codec.Join("den")), ErrorCode.BANNED)
        ann.send(codec.Part("den"))  # den is no room now: making it again would pass max_rooms
        guest(server, "carol").join("elsewhere")
        self.assertEqual(self.refused(bob, codec.Join("den")), ErrorCode.TOO_MANY_ROOMS)

    def test_join_rate_first(self):
        server = Server(join_burst=1, join_rate=0.001)
        bob = guest(server, "bob")
        bob.join("a")
        self.assertEqual(self.refused(bob, codec.Join("no room")), ErrorCode.RATE_LIMITED)

    def test_topic_locked_before_a_bad_topic(self):
        server = Server(join_burst=100)
        ann = guest(server, "ann")
        ann.join("den")
        moderate(ann, "mode", topic_lock=True)
        bob = guest(server, "bob")
        bob.join("den")
        self.assertEqual(self.refused(bob, codec.SetTopic("den", "two\nlines")), ErrorCode.TOPIC_LOCKED)
        self.assertEqual(self.refused(ann, codec.SetTopic("den", "two\nlines")), ErrorCode.BAD_TOPIC)
        carol = guest(server, "carol")
        self.assertEqual(self.refused(carol, codec.SetTopic("den", "two\nlines")), ErrorCode.NOT_A_MEMBER)

    def test_mark(self):
        server = Server()
        ann = guest(server, "ann")
        ann.join("den")
        ann.send(codec.Say("one", room="den"))
        ann.send(codec.Say("two", room="den"))
        server.flush()
        ann.received()
        bob = guest(server, "bob")
        self.assertEqual(self.refused(bob, codec.Mark("den", 99)), ErrorCode.NOT_A_MEMBER)
        self.assertEqual(self.refused(bob, codec.Mark("nowhere", 99)), ErrorCode.NO_SUCH_ROOM)
        self.assertEqual(self.refused(bob, codec.Mark("no room", -5)), ErrorCode.BAD_ROOM)
        bob.send_payload(b'\x0d{"room":"no room","seq":"1","ref":"m"}')
        self.assertEqual(bob.error().code, ErrorCode.BAD_PACKET, "a malformed packet before any check")
        bob.join("den")
        bob.send(codec.Mark("den", 99, "m"))
        self.assertEqual(
            bob.only(codec.Marked, flush=False), codec.Marked("den", 2, 0, "m"), "past the newest"
        )
        bob.send(codec.Mark("den", 1, "b"))
        self.assertEqual(bob.only(codec.Marked, flush=False), codec.Marked("den", 2, 0, "b"), "never back")
        pending = server.peer()
        self.assertEqual(self.refused(pending, codec.Mark("no room", 1)), ErrorCode.NOT_LOGGED_IN)

    def test_admin(self):
        server = Server(admins=["root"], join_burst=100)
        made_admin(server, "root")
        root, _ = device(server, "root")
        root.received()
        pending = server.peer()
        self.assertEqual(self.refused(pending, codec.AdminRequest("frobnicate")), ErrorCode.NOT_LOGGED_IN)
        checks = [
            (codec.AdminRequest("frobnicate", duration=-1.0), ErrorCode.BAD_PACKET, "unknown ADMIN op"),
            (codec.AdminRequest("ban", duration=-1.0), ErrorCode.BAD_PACKET, "'duration'"),
            (codec.AdminRequest("ban", duration=60.0), ErrorCode.BAD_PACKET, "'target'"),
            (codec.AdminRequest("ban", target="no body"), ErrorCode.BAD_NICK, ""),
            (codec.AdminRequest("ban", target="root"), ErrorCode.NOT_PERMITTED, ""),
            (codec.AdminRequest("kick", target="nobody"), ErrorCode.NO_SUCH_NICK, ""),
            (codec.AdminRequest("close", room="no room"), ErrorCode.BAD_ROOM, ""),
            (codec.AdminRequest("close", room="nowhere"), ErrorCode.NO_SUCH_ROOM, ""),
            (codec.AdminRequest("close", room="general"), ErrorCode.NOT_PERMITTED, ""),
            (codec.AdminRequest("reset", target="nobody"), ErrorCode.BAD_PACKET, "'password'"),
            (codec.AdminRequest("reset", target="nobody", password="short"), ErrorCode.NO_SUCH_ACCOUNT, ""),
            (codec.AdminRequest("unban", target="nobody"), ErrorCode.NO_SUCH_MEMBER, ""),
        ]
        for request, code, said in checks:
            root.received()
            root.send(request)
            error = root.error()
            self.assertEqual(error.code, code, request)
            self.assertIn(said, error.message)
        slow = Server(admins=["root"], join_burst=1, join_rate=0.001)
        bob = guest(slow, "bob")
        bob.join("a")
        self.assertEqual(self.refused(bob, codec.AdminRequest("sessions")), ErrorCode.RATE_LIMITED)


class PerAddress(SynchronousTestCase):
    def test_one_address_is_refused_while_another_gets_in(self):
        server = Server(max_per_address=3)
        crowd = [server.peer("203.0.113.1") for _ in range(3)]
        extra = server.peer("203.0.113.1")
        self.assertEqual(extra.received(), [codec.Bye("too_many_connections")])
        self.assertTrue(extra.closing)
        other = server.peer("198.51.100.2")
        self.assertIsInstance(other.login("other", version=2), codec.Welcome)
        crowd[0].drop()
        self.assertIsInstance(server.peer("203.0.113.1").login("back", version=2), codec.Welcome)

    def test_the_connection_rate_per_address(self):
        server = Server(address_rate=1.0, address_burst=2)
        server.peer("203.0.113.1").drop()
        server.peer("203.0.113.1").drop()
        self.assertEqual(server.peer("203.0.113.1").received(), [codec.Bye("too_many_connections")])
        server.clock.advance(1)
        self.assertFalse(server.peer("203.0.113.1").closing, "a token again after a second")

    def test_loopback_is_exempt(self):
        server = Server(max_per_address=1, address_burst=1)
        peers = [server.peer("127.0.0.1") for _ in range(5)]
        self.assertFalse(any(peer.closing for peer in peers))
