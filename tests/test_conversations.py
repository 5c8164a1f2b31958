"""Conversations (docs/protocol.md, section 19): replies, edits, deletions,
reactions, typing, away, direct conversations and catching up by rev. On
StringTransport and task.Clock, against the SQLite log."""

from __future__ import annotations

import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.backends import sqlite as sqlite_log
from chatproto.backends.sqlite import SCHEMA_VERSION, SQLiteLog
from chatproto.codec import ErrorCode
from tests.harness import Server, result
from tests.test_accounts import PASSWORD, registered


def v2(server: Server, *nicks: str):
    """Version 2 sessions, each in the default room."""
    peers = server.logged_in(*nicks, version=2)
    for peer in peers:
        peer.send(codec.Join("general"))
    server.flush()
    for peer in peers:
        peer.received()
    return peers


def said(peer, text: str, room: str = "general", reply: int | None = None, ref: str | None = None):
    """SAY in ``room``; the MESSAGE the sender got back."""
    peer.send(codec.Say(text, ref, room, reply))
    return [p for p in peer.received() if isinstance(p, codec.MessagePacket)][-1]


def changed(peer) -> list[codec.Changed]:
    return [p for p in peer.received() if isinstance(p, codec.Changed)]


def error_of(peer) -> str:
    errors = [p for p in peer.received() if isinstance(p, codec.Error)]
    assert len(errors) == 1, errors
    return errors[0].code


class Replies(SynchronousTestCase):
    def test_a_reply_quotes_its_original_and_a_deletion_shows_in_the_quote(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        original = said(ann, "is 2.1 out?")
        bob.received()
        answer = said(bob, "shipped", reply=original.seq)
        self.assertEqual(answer.reply, codec.Quote(original.seq, "ann", "is 2.1 out?"))
        self.assertEqual([p.reply for p in ann.received()], [answer.reply])
        ann.send(codec.Delete("general", original.seq))
        ann.received()
        page = server.stored()
        self.assertEqual(page[1].reply, codec.Quote(original.seq, deleted=True))

    def test_a_reply_to_a_seq_the_room_never_had_is_refused_and_takes_no_seq(self):
        server = Server()
        (ann,) = v2(server, "ann")
        ann.send(codec.Say("hm", "r", "general", 99))
        self.assertEqual(error_of(ann), ErrorCode.NO_SUCH_MESSAGE)
        self.assertEqual(server.stored(), [])
        self.assertEqual(said(ann, "next").seq, 1)

    def test_the_quote_is_the_start_of_the_present_text(self):
        server = Server()
        (ann,) = v2(server, "ann")
        long = said(ann, "x" * 300)
        answer = said(ann, "yes", reply=long.seq)
        self.assertEqual(answer.reply.text, "x" * 100)


class Edits(SynchronousTestCase):
    def test_an_edit_reaches_everyone_and_history_keeps_only_the_new_text(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        message = said(ann, "shiped")
        bob.received()
        server.clock.advance(5)
        ann.send(codec.Edit("general", message.seq, "shipped", "e1"))
        own, theirs = changed(ann), changed(bob)
        self.assertEqual(own[0].ref, "e1")
        self.assertIsNone(theirs[0].ref)
        for packet in own + theirs:
            self.assertEqual((packet.kind, packet.by, packet.message.text), ("edit", "ann", "shipped"))
            self.assertEqual((packet.message.edited, packet.message.rev), (5.0, 1))
        (stored,) = server.stored()
        self.assertEqual((stored.text, stored.edited), ("shipped", 5.0))
        carol = v2(server, "carol")[0]
        carol.send(codec.Join("general", "j"))
        (state,) = [p for p in carol.received() if isinstance(p, codec.RoomState)]
        self.assertEqual((state.history[-1].text, state.rev), ("shipped", 1))

    def test_order_of_checks(self):
        server = Server(edit_window=60)
        ann, bob = v2(server, "ann", "bob")
        mine = said(ann, "mine")
        theirs = said(bob, "theirs")
        ann.received()
        cases = [
            (codec.Edit("nowhere", 1, "x"), ErrorCode.NO_SUCH_ROOM),
            (codec.Edit("b a d", 1, "x"), ErrorCode.BAD_ROOM),
            (codec.Edit("general", mine.seq, ""), ErrorCode.BAD_TEXT),
            (codec.Edit("general", 99, "x"), ErrorCode.NO_SUCH_MESSAGE),
            (codec.Edit("general", theirs.seq, "x"), ErrorCode.NOT_YOURS),
        ]
        for packet, code in cases:
            ann.send(packet)
            self.assertEqual(error_of(ann), code, packet)
        server.clock.advance(61)
        ann.send(codec.Edit("general", mine.seq, "late"))
        self.assertEqual(error_of(ann), ErrorCode.TOO_LATE)
        ann.send(codec.Delete("general", mine.seq))
        ann.received()
        ann.send(codec.Edit("general", mine.seq, "x"))
        self.assertEqual(error_of(ann), ErrorCode.MESSAGE_DELETED)

    def test_not_a_member_comes_before_the_text(self):
        server = Server(rooms=["side"])
        (ann,) = v2(server, "ann")
        ann.send(codec.Edit("side", 1, ""))
        self.assertEqual(error_of(ann), ErrorCode.NOT_A_MEMBER)

    def test_a_guest_owns_its_messages_only_while_its_session_lasts(self):
        server = Server()
        (ann,) = v2(server, "ann")
        message = said(ann, "hi")
        ann.send(codec.Quit())
        ann.received()
        (again,) = v2(server, "ann")
        again.send(codec.Edit("general", message.seq, "mine now?"))
        self.assertEqual(error_of(again), ErrorCode.NOT_YOURS)

    def test_a_guest_after_a_restart_owns_nothing_of_a_guest_before_it_with_its_id(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        (ann,) = v2(server, "ann")
        message = said(ann, "hi")
        server.store.close()
        again = Server(store=SQLiteLog(path))
        (ann,) = v2(again, "ann")  # the same session id as before the restart
        self.assertEqual(ann.connection.id, 1)
        ann.send(codec.Edit("general", message.seq, "mine?"))
        self.assertEqual(error_of(ann), ErrorCode.NOT_YOURS)

    def test_an_account_owns_its_messages_on_every_device(self):
        server = Server()
        ann = registered(server, "ann")
        ann.send(codec.Join("general"))
        ann.received()
        message = said(ann, "from the laptop")
        phone = server.peer()
        phone.send(codec.Login("ann", 2, password=PASSWORD))
        phone.received()
        phone.send(codec.Edit("general", message.seq, "from the phone"))
        self.assertEqual(changed(phone)[0].message.text, "from the phone")


class Deletions(SynchronousTestCase):
    def test_the_author_an_operator_and_an_admin_may_delete_others_may_not(self):
        server = Server()
        ann, bob, carol = v2(server, "ann", "bob", "carol")
        for peer in (ann, bob, carol):
            peer.send(codec.Join("dev"))
        server.flush()
        for peer in (ann, bob, carol):
            peer.received()
        # ann made the room: its operator
        first = said(bob, "one", "dev")
        second = said(bob, "two", "dev")
        third = said(carol, "three", "dev")
        carol.send(codec.Delete("dev", first.seq, "d"))
        self.assertEqual(error_of(carol), ErrorCode.NOT_YOURS)
        bob.send(codec.Delete("dev", first.seq))
        (own,) = changed(bob)
        self.assertEqual((own.message.deleted, own.message.deleted_by, own.message.text), (True, None, ""))
        ann.received()
        ann.send(codec.Delete("dev", second.seq))
        (by_op,) = changed(ann)
        self.assertEqual((by_op.kind, by_op.by, by_op.message.deleted_by), ("delete", "ann", "ann"))
        bob.send(codec.Delete("dev", second.seq))
        self.assertEqual(error_of(bob), ErrorCode.MESSAGE_DELETED)
        self.assertEqual([m.deleted for m in server.stored("dev")], [True, True, None])
        del third

    def test_reactions_go_with_the_message(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        message = said(ann, "hi")
        bob.send(codec.React("general", message.seq, "👍"))
        bob.received()
        ann.send(codec.Delete("general", message.seq))
        self.assertIsNone(changed(ann)[-1].message.reactions)
        bob.send(codec.React("general", message.seq, "👍"))
        self.assertEqual(error_of(bob), ErrorCode.MESSAGE_DELETED)

    def test_moderation_records_are_for_an_admin_to_delete(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        for peer in (ann, bob):
            peer.send(codec.Join("dev"))
        server.flush()
        ann.send(codec.Moderate("dev", "kick", "bob", "spam"))
        server.flush()
        record = next(m for m in server.stored("dev") if m.action)
        ann.received()
        ann.send(codec.Delete("dev", record.seq))
        self.assertEqual(error_of(ann), ErrorCode.NOT_YOURS)
        ann.send(codec.Edit("dev", record.seq, "nothing happened"))
        self.assertEqual(error_of(ann), ErrorCode.NOT_YOURS)

    def test_the_text_is_gone_from_the_file(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        (ann,) = v2(server, "ann")
        message = said(ann, "my-secret-password-hunter2")
        ann.send(codec.Delete("general", message.seq))
        ann.received()
        self.assertTrue(server.store.purge())
        server.store.close()
        for suffix in ("", "-wal"):
            try:
                with open(path + suffix, "rb") as f:
                    self.assertNotIn(b"hunter2", f.read(), suffix)
            except FileNotFoundError:
                pass
        reopened = SQLiteLog(path)
        (kept,) = result(reopened.after(0, 10, "general"))[0]
        self.assertEqual((kept.seq, kept.deleted, kept.text), (message.seq, True, ""))


class Reactions(SynchronousTestCase):
    def test_add_take_back_and_the_same_twice_counts_once(self):
        server = Server()
        ann, bob, carol = v2(server, "ann", "bob", "carol")
        message = said(ann, "release!")
        for peer in (bob, carol):
            peer.received()
        bob.send(codec.React("general", message.seq, "🎉", ref="r1"))
        carol.send(codec.React("general", message.seq, "🎉"))
        server.flush()
        (last,) = changed(ann)[-1:]
        self.assertEqual(last.message.reactions, [codec.Reaction("🎉", ["bob", "carol"])])
        self.assertEqual((last.kind, last.by, last.emoji, last.on), ("react", "carol", "🎉", True))
        carol.received()
        bob.received()
        bob.send(codec.React("general", message.seq, "🎉", ref="again"))
        (same,) = changed(bob)
        self.assertEqual((same.ref, same.message.rev), ("again", 2))
        self.assertEqual(changed(carol), [])  # nobody else hears of it
        bob.send(codec.React("general", message.seq, "🎉", on=False))
        (taken,) = changed(carol)
        self.assertEqual(taken.message.reactions, [codec.Reaction("🎉", ["carol"])])
        self.assertEqual((taken.emoji, taken.on), ("🎉", False))
        bob.received()
        bob.send(codec.React("general", message.seq, "🎉", on=False, ref="none"))
        self.assertEqual(changed(bob)[0].ref, "none")

    def test_bounds_and_bad_emoji(self):
        server = Server(max_reactions=2, user_reactions=2)
        ann, bob = v2(server, "ann", "bob")
        message = said(ann, "pick")
        bob.received()
        for emoji in ("a", "b"):
            ann.send(codec.React("general", message.seq, emoji))
        ann.received()
        ann.send(codec.React("general", message.seq, "c"))
        self.assertEqual(error_of(ann), ErrorCode.TOO_MANY_REACTIONS)
        bob.send(codec.React("general", message.seq, "c"))
        self.assertEqual(error_of(bob), ErrorCode.TOO_MANY_REACTIONS)  # a third emoji
        for bad in ("ab", "+1", " ", ":No Caps:"):
            bob.send(codec.React("general", message.seq, bad))
            self.assertEqual(error_of(bob), ErrorCode.BAD_EMOJI, bad)
        bob.send(codec.React("general", message.seq, ":+1:"))
        self.assertEqual(error_of(bob), ErrorCode.TOO_MANY_REACTIONS)
        bob.send(codec.React("general", message.seq, "a"))
        self.assertEqual(changed(bob)[0].message.reactions[0].by, ["ann", "bob"])


class VersionOne(SynchronousTestCase):
    def test_a_version_1_session_sees_text_only_and_no_deleted_message(self):
        server = Server()
        (old,) = server.logged_in("old")
        (ann,) = v2(server, "ann")
        one = said(ann, "one")
        two = said(ann, "two", reply=one.seq)
        got = [p for p in old.received() if isinstance(p, codec.MessagePacket)]
        self.assertEqual([(p.text, p.reply) for p in got], [("one", None), ("two", None)])
        ann.send(codec.Edit("general", one.seq, "uno"))
        ann.send(codec.React("general", one.seq, "👍"))
        ann.send(codec.Typing("general"))
        ann.send(codec.Away(True, "lunch"))
        ann.send(codec.Delete("general", two.seq))
        server.flush()
        self.assertEqual(old.received(), [])
        old.send(codec.HistoryRequest())
        (page,) = old.received()
        self.assertEqual(
            [(m.seq, m.text, m.edited, m.reactions) for m in page.messages], [(1, "uno", None, None)]
        )
        late = server.peer()
        welcome = late.login("late", version=1)
        self.assertEqual([m.text for m in welcome.history], ["uno"])

    def test_the_new_packets_are_unknown_to_version_1(self):
        server = Server()
        (old,) = server.logged_in("old")
        old.send(codec.Edit("general", 1, "x", "r"))
        self.assertEqual(old.error().code, ErrorCode.UNKNOWN_TYPE)


class Typing(SynchronousTestCase):
    def test_typing_goes_to_version_2_at_most_once_an_interval_and_is_never_stored(self):
        server = Server()
        (old,) = server.logged_in("old")
        ann, bob = v2(server, "ann", "bob")
        old.received()
        ann.send(codec.Typing("general"))
        notice = codec.TypingNotice("general", "ann", True)
        self.assertEqual(bob.received(), [notice])
        self.assertEqual(ann.received(), [notice])  # its own devices too
        ann.send(codec.Typing("general"))
        self.assertEqual(bob.received(), [notice])  # the second of two at once
        for _ in range(5):
            ann.send(codec.Typing("general"))
        server.clock.advance(1)
        self.assertEqual(bob.received(), [])
        server.clock.advance(2)
        ann.send(codec.Typing("general"))
        self.assertEqual(bob.received(), [notice])
        ann.send(codec.Typing("general", typing=False))
        self.assertEqual(bob.received(), [codec.TypingNotice("general", "ann", False)])
        ann.send(codec.Typing("general", typing=False))
        self.assertEqual(bob.received(), [])
        self.assertEqual(old.received(), [])
        self.assertEqual(server.stored(), [])

    def test_typing_again_right_after_a_message_shows_once(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.send(codec.Typing("general"))
        said(ann, "done")
        bob.received()
        ann.send(codec.Typing("general", typing=False))  # stopped already: nothing
        self.assertEqual(bob.received(), [])
        ann.send(codec.Typing("general"))  # the bucket's second token
        self.assertEqual(bob.received(), [codec.TypingNotice("general", "ann", True)])
        said(ann, "again")
        bob.received()
        ann.send(codec.Typing("general"))  # none left within the interval
        self.assertEqual(bob.received(), [])
        server.clock.advance(3)
        ann.send(codec.Typing("general"))
        self.assertEqual(bob.received(), [codec.TypingNotice("general", "ann", True)])

    def test_true_and_false_in_turn_are_throttled_too(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        for _ in range(50):
            ann.send(codec.Typing("general"))
            ann.send(codec.Typing("general", typing=False))
        on, off = codec.TypingNotice("general", "ann", True), codec.TypingNotice("general", "ann", False)
        self.assertEqual(bob.received(), [on, off, on, off])

    def test_not_a_member(self):
        server = Server(rooms=["side"])
        (ann,) = v2(server, "ann")
        ann.send(codec.Typing("side"))
        self.assertEqual(error_of(ann), ErrorCode.NOT_A_MEMBER)


class Away(SynchronousTestCase):
    def test_away_and_back_reach_every_room_and_show_in_members(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        ann.send(codec.Away(True, "lunch", "a1"))
        self.assertEqual(ann.received(flush=False), [codec.Done("away", "ann", "a1")])
        self.assertEqual(bob.received(), [codec.Status("general", "ann", "lunch")])
        carol = server.logged_in("carol", version=2)[0]
        state = carol.join("general")
        self.assertEqual({p.nick: p.away for p in state.members}["ann"], "lunch")
        bob.received()
        ann.send(codec.Away(False))
        self.assertEqual(bob.received(), [codec.Status("general", "ann", None)])

    def test_a_bad_away_message(self):
        server = Server()
        (ann,) = v2(server, "ann")
        ann.send(codec.Away(True, "two\nlines"))
        self.assertEqual(error_of(ann), ErrorCode.BAD_TEXT)
        ann.send(codec.Away(True, "x" * 301))
        self.assertEqual(error_of(ann), ErrorCode.BAD_TEXT)


class Direct(SynchronousTestCase):
    def accounts(self, server, *nicks):
        return [registered(server, nick) for nick in nicks]

    def test_open_brings_both_in_and_nobody_else_can_join(self):
        server = Server()
        ann, bob, eve = self.accounts(server, "ann", "bob", "eve")
        for peer in (ann, bob, eve):
            peer.received()
        ann.send(codec.Open(["bob"], "o1"))
        (state,) = [p for p in ann.received() if isinstance(p, codec.RoomState)]
        self.assertEqual((state.room, state.kind, state.ref), ("@ann+bob", "direct", "o1"))
        (theirs,) = [p for p in bob.received() if isinstance(p, codec.RoomState)]
        self.assertEqual((theirs.room, theirs.ref), ("@ann+bob", None))
        said(bob, "hi ann", "@ann+bob")
        self.assertEqual([p.text for p in ann.received() if isinstance(p, codec.MessagePacket)], ["hi ann"])
        eve.send(codec.Join("@ann+bob", "j"))
        self.assertEqual(error_of(eve), ErrorCode.BAD_ROOM)
        eve.send(codec.Say("hi", None, "@ann+bob"))
        self.assertEqual(error_of(eve), ErrorCode.NOT_A_MEMBER)
        eve.send(codec.ListRooms("l"))
        (listing,) = eve.received()
        self.assertNotIn("@ann+bob", [r.room for r in listing.rooms])

    def test_opening_again_finds_the_same_conversation_with_its_history(self):
        server = Server()
        ann, bob = self.accounts(server, "ann", "bob")
        ann.send(codec.Open(["bob"]))
        server.flush()
        said(ann, "first", "@ann+bob")
        bob.received()
        bob.send(codec.Open(["ANN", "bob"], "o2"))
        (state,) = [p for p in bob.received() if isinstance(p, codec.RoomState)]
        self.assertEqual(([m.text for m in state.history], state.ref), (["first"], "o2"))

    def test_an_offline_participant_finds_it_at_login_with_unread(self):
        server = Server()
        ann, bob = self.accounts(server, "ann", "bob")
        bob.send(codec.Quit())
        bob.received()
        ann.send(codec.Open(["bob"]))
        server.flush()
        said(ann, "are you there?", "@ann+bob")
        phone = server.peer()
        phone.send(codec.Login("bob", 2, password=PASSWORD))
        rooms = {p.room: p for p in phone.received() if isinstance(p, codec.RoomState)}
        self.assertEqual(rooms["@ann+bob"].unread, 1)
        self.assertEqual(rooms["@ann+bob"].history[-1].text, "are you there?")

    def test_a_participant_who_left_comes_back_when_something_is_said(self):
        server = Server()
        ann, bob = self.accounts(server, "ann", "bob")
        ann.send(codec.Open(["bob"]))
        server.flush()
        bob.send(codec.Part("@ann+bob"))
        server.flush()
        bob.received()
        said(ann, "still there?", "@ann+bob")
        got = bob.received()
        self.assertIn("@ann+bob", [p.room for p in got if isinstance(p, codec.RoomState)])

    def test_a_new_account_with_a_deleted_ones_name_reads_none_of_its_conversations(self):
        server = Server()
        ann, bob = self.accounts(server, "ann", "bob")
        ann.send(codec.Open(["bob"]))
        server.flush()
        said(ann, "our secret", "@ann+bob")
        ann.send(codec.AccountRequest("delete", PASSWORD, ref="d"))
        server.flush()
        ann.received()
        ann.send(codec.Quit())
        server.clock.advance(1)  # accounts are told apart by when they were made
        (eve,) = self.accounts(server, "ann")
        eve.received()
        eve.send(codec.Open(["bob"], "o"))
        self.assertEqual(error_of(eve), ErrorCode.NO_SUCH_ACCOUNT)
        bob.received()
        said(bob, "ann?", "@ann+bob")
        self.assertEqual([p for p in eve.received() if isinstance(p, codec.RoomState)], [])

    def test_order_of_checks(self):
        server = Server()
        (guest,) = v2(server, "guest")
        guest.send(codec.Open(["bob"]))
        self.assertEqual(error_of(guest), ErrorCode.NOT_REGISTERED)
        (ann,) = self.accounts(server, "ann")
        ann.received()
        for names, code in (
            (["b a d"], ErrorCode.BAD_NICK),
            ([], ErrorCode.BAD_PACKET),
            (["ann"], ErrorCode.BAD_PACKET),
            ([f"n{i}" for i in range(8)], ErrorCode.BAD_PACKET),
            (["nobody"], ErrorCode.NO_SUCH_ACCOUNT),
        ):
            ann.send(codec.Open(names, "r"))
            self.assertEqual(error_of(ann), code, names)

    def test_no_operators_in_a_conversation(self):
        server = Server()
        ann, bob = self.accounts(server, "ann", "bob")
        ann.send(codec.Open(["bob"]))
        server.flush()
        message = said(bob, "mine", "@ann+bob")
        ann.received()
        ann.send(codec.Delete("@ann+bob", message.seq))
        self.assertEqual(error_of(ann), ErrorCode.NOT_YOURS)
        ann.send(codec.Moderate("@ann+bob", "kick", "bob"))
        self.assertEqual(error_of(ann), ErrorCode.NOT_PERMITTED)


class CatchingUp(SynchronousTestCase):
    def test_changed_after_gives_present_state_in_rev_order_in_pages(self):
        server = Server()
        (ann,) = v2(server, "ann")
        seqs = [said(ann, f"m{i}").seq for i in range(5)]
        for seq in seqs:
            ann.send(codec.React("general", seq, "👍"))
        ann.send(codec.Edit("general", seqs[0], "m0!"))
        ann.received()
        ann.send(codec.HistoryRequest(limit=3, room="general", changed_after=0))
        (page,) = ann.received()
        self.assertEqual(([m.seq for m in page.messages], page.more, page.rev), (seqs[1:4], True, 6))
        ann.send(codec.HistoryRequest(limit=3, room="general", changed_after=page.messages[-1].rev))
        (rest,) = ann.received()
        self.assertEqual(
            ([(m.seq, m.text) for m in rest.messages], rest.more), ([(5, "m4"), (1, "m0!")], False)
        )
        ann.send(codec.HistoryRequest(after=1, changed_after=0, room="general"))
        self.assertEqual(error_of(ann), ErrorCode.BAD_PACKET)

    def test_every_change_survives_a_restart(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        ann, bob = v2(server, "ann", "bob")
        one = said(ann, "one")
        two = said(bob, "two", reply=one.seq)
        ann.send(codec.Edit("general", one.seq, "uno"))
        bob.send(codec.React("general", one.seq, "👍"))
        bob.send(codec.Delete("general", two.seq))
        server.flush()
        before = server.stored()
        server.store.close()
        again = Server(store=SQLiteLog(path))
        self.assertEqual(again.stored(), before)
        (carol,) = v2(again, "carol")
        carol.send(codec.Join("general"))
        self.assertEqual(again.hub.directory.default.rev, 3)


class Migration(SynchronousTestCase):
    def test_a_schema_4_file_is_migrated_in_one_go_and_its_messages_are_nobodys(self):
        path = self.mktemp()
        db = sqlite3.connect(path, isolation_level=None)
        for script in (sqlite_log._TABLES, sqlite_log._ACCOUNT_TABLES, sqlite_log._ADMIN_MARK):
            sqlite_log._run_script(db, script)
        db.execute("INSERT INTO rooms VALUES (1, 'general')")
        db.execute(f"INSERT INTO messages VALUES ({sqlite_log.SPAN} + 1, 1.0, 'ann', 'old', NULL)")
        db.execute("PRAGMA user_version=4")
        db.close()
        server = Server(store=SQLiteLog(path))
        self.assertEqual([m.text for m in server.stored()], ["old"])
        ann = registered(server, "ann")  # what was said before schema 5 is nobody's
        ann.join("general")
        ann.received()
        ann.send(codec.Edit("general", 1, "new"))
        self.assertEqual(error_of(ann), ErrorCode.NOT_YOURS)
        ann.send(codec.React("general", 1, "👍"))
        self.assertEqual(changed(ann)[0].message.reactions, [codec.Reaction("👍", ["ann"])])
        (version,) = server.store._db.execute("PRAGMA user_version").fetchone()
        self.assertEqual(version, SCHEMA_VERSION)


class FoundByReview(SynchronousTestCase):
    """What a cold reading of the first version found, each now a test."""

    def test_an_admin_deletes_any_message_of_a_room(self):
        from tests.test_accounts import made_admin

        server = Server(admins=["root"])
        made_admin(server, "root")
        ann, bob = v2(server, "ann", "bob")
        for peer in (ann, bob):
            peer.send(codec.Join("dev"))
        server.flush()
        message = said(bob, "spam", "dev")
        root = server.peer()
        root.send(codec.Login("root", 2, password=PASSWORD))
        root.received()
        root.join("dev")
        root.send(codec.Delete("dev", message.seq))
        (gone,) = changed(root)
        self.assertEqual((gone.message.deleted, gone.message.deleted_by), (True, "root"))

    def test_a_new_account_with_a_deleted_ones_name_owns_none_of_its_messages(self):
        server = Server()
        (ann,) = [registered(server, "ann")]
        ann.join("general")
        message = said(ann, "mine")
        ann.send(codec.AccountRequest("delete", PASSWORD, ref="d"))
        ann.send(codec.Quit())
        server.flush()
        server.clock.advance(1)
        again = registered(server, "ann")
        again.join("general")
        again.received()
        again.send(codec.Edit("general", message.seq, "mine now"))
        self.assertEqual(error_of(again), ErrorCode.NOT_YOURS)

    def test_deleting_the_account_leaves_its_conversations(self):
        server = Server()
        ann, bob = registered(server, "ann"), registered(server, "bob")
        ann.send(codec.Open(["bob"]))
        server.flush()
        ann.send(codec.AccountRequest("delete", PASSWORD, ref="d"))
        server.flush()
        self.assertNotIn("@ann+bob", server.hub.registry.find("ann").rooms)
        bob.received()
        ann.received()
        said(bob, "secret after the delete", "@ann+bob")
        self.assertEqual([p for p in ann.received() if isinstance(p, codec.MessagePacket)], [])

    def test_the_old_text_of_an_edit_leaves_the_wal_too(self):
        path = self.mktemp()
        server = Server(store=SQLiteLog(path))
        (ann,) = v2(server, "ann")
        message = said(ann, "typo-hunter2")
        server.store.checkpoint()
        ann.send(codec.Edit("general", message.seq, "fixed"))
        ann.received()
        server.store.maintain()
        for suffix in ("", "-wal"):
            try:
                with open(path + suffix, "rb") as f:
                    self.assertNotIn(b"hunter2", f.read(), suffix)
            except FileNotFoundError:
                pass

    def test_version_1_sees_no_away_or_operator_mark_in_welcome(self):
        server = Server()
        (ann,) = v2(server, "ann")
        ann.send(codec.Away(True, "lunch"))
        server.flush()
        old = server.peer()
        old.send(codec.Login("old", 1))
        payload = old.transport.value()
        self.assertNotIn(b'"away"', payload)
        self.assertIn(b'"nick":"ann"', payload)

    def test_the_senders_answers_come_in_the_order_of_its_requests(self):
        server = Server()
        (ann,) = v2(server, "ann")
        message = said(ann, "hi")
        ann.send(codec.React("general", message.seq, "👍", ref="r0"))
        ann.received()
        ann.send(codec.Say("next", "s1", "general"))
        ann.send(codec.React("general", message.seq, "👍", ref="r1"))  # unchanged
        ann.send(codec.Edit("general", 99, "x", "e1"))  # refused
        got = [(type(p).__name__, p.ref) for p in ann.received()]
        self.assertEqual(got, [("MessagePacket", "s1"), ("Changed", "r1"), ("Error", "e1")])

    def test_a_later_guest_with_the_same_nick_takes_back_no_reaction(self):
        server = Server()
        ann, bob = v2(server, "ann", "bob")
        message = said(ann, "hi")
        bob.send(codec.React("general", message.seq, "👍"))
        bob.send(codec.Quit())
        server.flush()
        (again,) = v2(server, "bob")
        again.send(codec.React("general", message.seq, "👍", on=False, ref="u"))
        (answer,) = changed(again)
        self.assertEqual(answer.message.reactions, [codec.Reaction("👍", ["bob"])])
        self.assertEqual(answer.message.rev, 1, "nothing changed")

    def test_version_1_history_reads_past_pages_of_deleted_messages(self):
        server = Server()
        (ann,) = v2(server, "ann")
        (old,) = server.logged_in("old")
        seqs = [said(ann, f"m{i}").seq for i in range(6)]
        for seq in seqs[2:]:
            ann.send(codec.Delete("general", seq))
        server.flush()
        old.received()
        old.send(codec.HistoryRequest(limit=2))
        (page,) = old.received()
        self.assertEqual([m.text for m in page.messages], ["m0", "m1"])
