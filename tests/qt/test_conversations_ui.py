"""The desktop client's conversations (protocol section 19): replies,
reactions, edits (Up too), deletion, typing, away and direct conversations,
in the window against a real in-process server on 127.0.0.1, and the
transcript model's rendering of them from fake packets."""

from __future__ import annotations

import time

import pytest_twisted
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest
from test_accounts_ui import PASSWORD, account
from test_client import line_for, log_in, other
from waiting import member_of, signal_fired, until

from chatproto import codec
from qtclient import models
from qtclient.models import HTML_ROLE, TranscriptModel, format_html
from qtclient.views.conversation import typing_words
from qtclient.views.transcript import TEXT_COLUMN


def row_of(window, text) -> int:
    window.transcript.flush()
    return next(i for i, line in enumerate(window.transcript.lines) if line.text == text)


def html(transcript, row) -> str:
    return transcript.data(transcript.index(row, TEXT_COLUMN), HTML_ROLE)


# -- the model, from fake packets ------------------------------------------------------


def test_formatting_is_rendered_and_everything_else_escaped():
    assert format_html("**b** *i* `x<y` <script>") == (
        '<b>b</b> <i>i</i> <code style="' + models.CODE_STYLE + '">x&lt;y</code> &lt;script&gt;'
    )
    block = format_html("look:\n```\n<b>raw</b>\n```\nafter")
    assert "&lt;b&gt;raw&lt;/b&gt;" in block and "<table" in block and block.endswith("after")
    assert format_html("> quoted\nplain").startswith('<span style="color:#555555">▎ quoted</span><br>plain')
    assert format_html('a "b" & c') == "a &quot;b&quot; &amp; c"
    assert format_html("2*3*4") == "2*3*4"


def test_changes_replace_the_message_and_update_the_quotes_of_replies(qtbot):
    t = TranscriptModel(batch_ms=0)
    t.own_nick = "alice"
    now = time.time()
    t.add_message(codec.Message(1, now, "bob", "is 2.1 out?"))
    reply = codec.Message(2, now + 1, "alice", "shiped", reply=codec.Quote(1, "bob", "is 2.1 out?"))
    t.add_message(reply)
    assert "↪ <b>bob</b>: is 2.1 out?" in html(t, 1) and 'href="quote:1"' in html(t, 1)
    edited = codec.Message(2, now + 1, "alice", "shipped", reply=reply.reply, edited=now + 2, rev=1)
    assert t.apply_change(edited)
    assert t.lines[1].text == "shipped" and "(edited)" in html(t, 1)
    reacted = codec.Message(
        2,
        now + 1,
        "alice",
        "shipped",
        reply=reply.reply,
        edited=now + 2,
        reactions=[codec.Reaction("🎉", ["bob", "alice"]), codec.Reaction("👀", ["carol"])],
        rev=2,
    )
    t.apply_change(reacted)
    assert "🎉 2" in html(t, 1) and "👀 1" in html(t, 1)
    assert "#cfe3ff" in html(t, 1), "our own reaction stands out"
    t.apply_change(codec.Message(2, now + 1, "alice", "stale", rev=1))
    assert t.lines[1].text == "shipped", "an older state does not replace a newer one"
    deleted = codec.Message(1, now, "bob", "", deleted=True, deleted_by="carol", rev=3)
    t.apply_change(deleted)
    assert t.data(t.index(0, TEXT_COLUMN)) == "message deleted by carol"
    assert "original deleted" in html(t, 1)
    assert not t.apply_change(codec.Message(99, now, "bob", "x", rev=4)), "not loaded: nothing to replace"
    assert t.last_own_row() == 1


def test_day_headings_and_messages_grouped_by_author(qtbot):
    t = TranscriptModel(batch_ms=0)
    day = time.mktime((2026, 12, 3, 12, 0, 0, 0, 0, -1))
    t.add_message(codec.Message(1, day, "bob", "one"))
    t.add_message(codec.Message(2, day + 60, "bob", "two"))
    t.add_message(codec.Message(3, day + 120, "carol", "three"))
    t.add_message(codec.Message(4, day + 86400, "carol", "next day"))
    nicks = [t.data(t.index(row, 1)) for row in range(4)]
    assert nicks == ["bob", "", "carol", "carol"]
    assert "Thursday 03 December 2026" in html(t, 0) and "December" not in html(t, 1)
    assert "Friday 04 December 2026" in html(t, 3)
    older = codec.Message(0, day - 86400, "bob", "older")
    t.add_history([older], None, older=True)
    assert "Wednesday" in html(t, 0) and "Thursday" in html(t, 1), "the heading follows an older page"


def test_the_emoji_picker_takes_a_grid_click_or_a_typed_name(qtbot):
    from qtclient.views.conversation import EmojiPicker

    picker = EmojiPicker()
    qtbot.addWidget(picker)
    picked = []
    picker.picked.connect(picked.append)
    picker.buttons["👍"].click()
    picker.field.setText(" :shipit: ")
    picker.field.returnPressed.emit()
    picker.field.setText("  ")
    picker.field.returnPressed.emit()
    assert picked == ["👍", ":shipit:"]


def test_typing_words():
    assert typing_words([]) == ""
    assert typing_words(["bob"]) == "bob is typing…"
    assert typing_words(["bob", "carol"]) == "bob and carol are typing…"
    assert typing_words(list("abcd")) == "several people are typing…"


def test_away_members_are_dimmed_with_their_message(qtbot):
    peers = models.PeerModel()
    peers.room_state(codec.RoomState("general", "", [codec.Peer(1, "bob", away="lunch")], []))
    item = peers.room_item("general").child(0)
    assert "lunch" in item.toolTip() and item.font().italic()
    peers.set_away("general", "BOB", None)
    item = peers.room_item("general").child(0)
    assert item.toolTip() == "" and not item.font().italic()
    peers.joined(codec.Joined(2, "carol", "general", away=""))
    assert peers.away("general", "carol") == ""
    peers.own_nick = "alice"
    peers.room_state(codec.RoomState("@alice+bob", "", [], [], kind="direct"))
    assert peers.room_item("@alice+bob").text() == "✉ bob"
    assert peers.room_item("@alice+bob").toolTip() == "direct conversation with bob"


# -- the window, against the real server -----------------------------------------------


@pytest_twisted.inlineCallbacks
def test_reply_react_edit_and_delete_from_the_window(window, server, sessions, qtbot):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    heard = signal_fired(window.session.messageReceived)
    bob.say("is 2.1 out?")
    yield heard
    original = row_of(window, "is 2.1 out?")
    assert window.message_actions(original) == ["reply", "react"], "not ours, not an operator"

    # Reply, from the hover bar.
    view = window.transcript_view
    rect = view.visualRect(window.transcript.index(original, TEXT_COLUMN))
    QTest.mouseMove(view.viewport(), rect.center())
    yield until(lambda: view.hover_bar.isVisible())
    assert not view.hover_bar.buttons["edit"].isVisibleTo(view.hover_bar)
    view.hover_bar.buttons["reply"].click()
    assert window.composer_note.isVisibleTo(window)
    assert window.composer_note.label.text() == "Replying to bob: is 2.1 out?"
    bob_hears = signal_fired(bob.messageReceived, lambda m: m.text == "shiped")
    window.input.setPlainText("shiped")
    window.submit(window.input.toPlainText())
    (answer,) = yield bob_hears
    assert answer.reply == codec.Quote(answer.reply.seq, "bob", "is 2.1 out?")
    assert not window.composer_note.isVisibleTo(window)
    yield until(lambda: line_for(window, "shiped") is not None and line_for(window, "shiped").seq)
    mine = row_of(window, "shiped")
    assert "↪ <b>bob</b>: is 2.1 out?" in html(window.transcript, mine)
    assert window.message_actions(mine) == ["reply", "react", "edit", "delete"]

    # React with the picker; clicking the chip takes it back.
    window.message_action("react", original)
    picker = window.emoji_picker
    changed = signal_fired(window.session.messageChanged, lambda room, m, kind, by: kind == "react")
    picker.buttons["🎉"].click()
    (_room, message, _kind, by) = yield changed
    assert by == "alice" and message.reactions == [codec.Reaction("🎉", ["alice"])]
    original = row_of(window, "is 2.1 out?")
    assert "🎉 1" in html(window.transcript, original)
    assert window._anchor_tooltip(original, "react:0") == "alice reacted with 🎉"
    taken_back = signal_fired(window.session.messageChanged, lambda room, m, kind, by: not m.reactions)
    window._anchor_clicked(original, "react:0")
    yield taken_back
    assert "🎉" not in html(window.transcript, row_of(window, "is 2.1 out?"))

    # Up in the empty input edits the last message.
    window.input.setFocus()
    qtbot.keyClick(window.input, Qt.Key.Key_Up)
    assert window.input.toPlainText() == "shiped" and window.composing[0] == "edit"
    bob_sees_edit = signal_fired(bob.messageChanged, lambda room, m, kind, by: kind == "edit")
    window.input.setPlainText("shipped")
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    (_room, edited, _kind, _by) = yield bob_sees_edit
    assert edited.text == "shipped" and edited.edited
    yield until(lambda: line_for(window, "shipped") is not None)
    assert "(edited)" in html(window.transcript, row_of(window, "shipped"))

    # Clicking the quote shows the original.
    window.transcript_view.clearSelection()
    window._anchor_clicked(row_of(window, "shipped"), f"quote:{answer.reply.seq}")
    assert window.transcript_view.selectionModel().isRowSelected(row_of(window, "is 2.1 out?"))

    # Delete, after saying yes.
    window.message_action("delete", row_of(window, "shipped"))
    box = window.confirm_box
    assert box is not None and "your message" in box.text()
    bob_sees_delete = signal_fired(bob.messageChanged, lambda room, m, kind, by: kind == "delete")
    box.button(box.StandardButton.Yes).click()
    (_room, gone, _kind, _by) = yield bob_sees_delete
    assert gone.deleted and gone.deleted_by is None and gone.text == ""
    yield until(lambda: any(line.deleted for line in window.transcript.lines))
    row = next(i for i, line in enumerate(window.transcript.lines) if line.deleted)
    assert window.transcript.data(window.transcript.index(row, TEXT_COLUMN)) == "message deleted"
    assert window.message_actions(row) == []


@pytest_twisted.inlineCallbacks
def test_the_context_menu_offers_the_actions_that_apply(window, server, sessions):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    heard = signal_fired(window.session.messageReceived)
    bob.say("hello")
    yield heard
    menu = window.message_menu(row_of(window, "hello"))
    assert [a.text() for a in menu.actions()] == ["Reply", "React"]
    general = window.peers.rooms["general"]
    bob_row = next(
        r for r in range(general.item.rowCount()) if general.item.child(r).data(models.NICK_ROLE) == "bob"
    )
    members = window.member_menu(general.item.child(bob_row).index())
    enabled = {a.text(): a.isEnabled() for a in members.actions() if not a.isSeparator()}
    assert enabled == {
        "Message bob…": True,
        "Kick bob": False,
        "Ban bob": False,
        "Make operator bob": False,
        "Give voice to bob": False,
    }
    next(a for a in members.actions() if a.text() == "Message bob…").trigger()
    assert window.input.toPlainText() == "/msg bob "
    assert window.message_menu(0) is None or "Edit" not in [
        a.text() for a in window.message_menu(0).actions()
    ]


@pytest_twisted.inlineCallbacks
def test_typing_is_sent_shown_and_cleared(window, server, sessions, qtbot):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    bob_sees = signal_fired(bob.typingChanged, lambda room, nicks: nicks == ["alice"])
    window.input.setFocus()
    qtbot.keyClicks(window.input, "hel")
    yield bob_sees
    bob_sees_stop = signal_fired(bob.typingChanged, lambda room, nicks: nicks == [])
    window.input.clear()
    yield bob_sees_stop
    shown = signal_fired(window.session.typingChanged, lambda room, nicks: nicks == ["bob"])
    bob.typing("general")
    yield shown
    assert window.typing_label.text() == "bob is typing…"
    gone = signal_fired(window.session.typingChanged, lambda room, nicks: nicks == [])
    bob.say("there")
    yield gone
    assert window.typing_label.text() == ""


@pytest_twisted.inlineCallbacks
def test_away_and_back(window, server, sessions):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    seen = signal_fired(bob.statusChanged, lambda status: status.nick == "alice" and status.away == "lunch")
    window.submit("/away lunch")
    yield seen
    yield until(lambda: window.peers.away("general", "alice") == "lunch")
    assert window.back_action.isEnabled()
    assert line_for(window, "you are away (/back when you are back)") is not None
    shown = signal_fired(window.session.statusChanged, lambda status: status.nick == "bob")
    bob.set_away("")
    yield shown
    assert window.peers.away("general", "bob") == ""
    back = signal_fired(bob.statusChanged, lambda status: status.nick == "alice" and status.away is None)
    window.back_action.trigger()
    yield back
    yield until(lambda: window.peers.away("general", "alice") is None)
    assert not window.back_action.isEnabled()


@pytest_twisted.inlineCallbacks
def test_msg_opens_a_direct_conversation_between_accounts(window, server, sessions):
    bob = sessions()
    registered = signal_fired(bob.requestDone, lambda done: done.op == "register")
    bob.connect_to("127.0.0.1", server.port, "bob", password=PASSWORD, register=True)
    yield registered
    yield account(window, server, "alice")
    bob_gets = signal_fired(bob.roomJoined, lambda state, reset: state.kind == "direct")
    window.submit("/msg bob are you there?")
    (state, _reset) = yield bob_gets
    assert state.room == "@alice+bob"
    yield until(lambda: window.room_names.get(window.current) == "@alice+bob")
    assert window.peers.room_item("@alice+bob").text() == "✉ bob"
    assert "✉ bob" in window.topic_label.text()
    direct = window.peers.rooms["@alice+bob"]
    bob_row = next(
        r for r in range(direct.item.rowCount()) if direct.item.child(r).data(models.NICK_ROLE) == "bob"
    )
    menu = window.member_menu(direct.item.child(bob_row).index())
    assert [a.text() for a in menu.actions()] == ["Message bob…"], "no operators in a conversation"
    yield until(lambda: line_for(window, "are you there?") is not None)
    heard = signal_fired(bob.messageReceived, lambda m: m.text == "are you there?")
    yield heard
    # bob answers; alice is looking at general: the conversation counts it unread.
    window.show_room("general")
    answered = signal_fired(window.session.messageReceived, lambda m: m.room == "@alice+bob")
    bob.say("yes", "@alice+bob")
    yield answered
    assert window.peers.unread("@alice+bob") == (1, True)
    # A second /msg goes to the same conversation, without OPEN.
    again = signal_fired(bob.messageReceived, lambda m: m.text == "good")
    window.submit("/msg bob good")
    (message,) = yield again
    assert message.room == "@alice+bob"


@pytest_twisted.inlineCallbacks
def test_msg_to_a_guest_is_still_a_whisper(window, server, sessions):
    yield account(window, server, "alice")
    zed = yield other(sessions, server, "zed")
    whispered = signal_fired(zed.privateReceived)
    window.submit("/msg zed psst")
    (private,) = yield whispered
    assert private.text == "psst"


@pytest_twisted.inlineCallbacks
def test_operators_may_delete_others_messages(window, server, sessions):
    yield log_in(window, server)
    joined = signal_fired(window.session.roomJoined, lambda state, reset: state.room == "ops")
    window.submit("/join ops")
    yield joined
    bob = yield other(sessions, server, "bob")
    yield member_of(bob, "ops")
    heard = signal_fired(window.session.messageReceived, lambda m: m.text == "spam")
    bob.say("spam", "ops")
    yield heard
    assert window.peers.is_op("ops", window.session.my_id), "the room's first member runs it"
    row = row_of(window, "spam")
    assert "delete" in window.message_actions(row)
    deleted = signal_fired(bob.messageChanged, lambda room, m, kind, by: kind == "delete")
    window.message_action("delete", row)
    window.confirm_box.button(window.confirm_box.StandardButton.Yes).click()
    (_room, gone, _kind, by) = yield deleted
    assert gone.deleted_by == "alice" and by == "alice"
    yield until(
        lambda: (
            window.transcript.data(window.transcript.index(row, TEXT_COLUMN)) == "message deleted by alice"
        )
    )


@pytest_twisted.inlineCallbacks
def test_changes_missed_while_away_come_back_by_rev(window, server, sessions):
    from qtclient import session as states

    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    heard = signal_fired(window.session.messageReceived, lambda m: m.text == "teh plan")
    bob.say("teh plan")
    (said,) = yield heard
    yield window.session.disconnect()
    edited = signal_fired(bob.messageChanged, lambda room, m, kind, by: kind == "edit")
    bob.edit("general", said.seq, "the plan")
    yield edited
    reacted = signal_fired(bob.messageChanged, lambda room, m, kind, by: kind == "react")
    bob.react("general", said.seq, "👍")
    yield reacted
    caught = []
    window.session.messageChanged.connect(lambda room, m, kind, by: caught.append((kind, m.text)))
    back = signal_fired(window.session.stateChanged, lambda state, detail: state == states.CONNECTED)
    window.connect_to(window.target)
    yield back
    yield until(lambda: ("catch_up", "the plan") in caught)
    yield until(lambda: line_for(window, "the plan") is not None)
    row = row_of(window, "the plan")
    assert "(edited)" in html(window.transcript, row) and "👍 1" in html(window.transcript, row)
    assert window.session.machine.rooms["general"].rev == 2


@pytest_twisted.inlineCallbacks
def test_a_conversation_left_comes_back_when_the_other_says_something(window, server, sessions):
    bob = sessions()
    registered = signal_fired(bob.requestDone, lambda done: done.op == "register")
    bob.connect_to("127.0.0.1", server.port, "bob", password=PASSWORD, register=True)
    yield registered
    yield account(window, server, "alice")
    bob_in = signal_fired(bob.roomJoined, lambda state, reset: state.kind == "direct")
    opened = signal_fired(window.session.roomJoined, lambda state, reset: state.kind == "direct")
    window.session.open_direct(["bob"])
    yield opened
    yield bob_in
    left = signal_fired(window.session.roomLeft)
    window.part_action.trigger()
    yield left
    assert window.peers.room_item("@alice+bob") is None
    assert window.room_names.get(window.current) == "general"
    back = signal_fired(window.session.roomJoined, lambda state, reset: state.kind == "direct")
    bob.say("still there?", "@alice+bob")
    yield back
    yield until(lambda: window.peers.room_item("@alice+bob") is not None)
    assert window.room_names.get(window.current) == "general", "it comes back without taking the user there"
    assert window.peers.room_item("@alice+bob").text().startswith("✉ bob")
    yield until(lambda: "still there?" in [line.text for line in window.transcripts["@alice+bob"].lines])


@pytest_twisted.inlineCallbacks
def test_the_server_takes_every_emoji_of_the_picker(window, server, sessions):
    from qtclient.views.conversation import COMMON_EMOJI

    yield log_in(window, server)
    errors = []
    window.session.errorReceived.connect(lambda code, message: errors.append((code, message)))
    seqs = []
    for text in ("first", "second"):
        heard = signal_fired(window.session.messageReceived, lambda m, text=text: m.text == text)
        window.session.say(text, "general")
        (message,) = yield heard
        seqs.append(message.seq)
    halves = (COMMON_EMOJI[:8], COMMON_EMOJI[8:])  # user_reactions: 10 of one session on one message
    for seq, emoji in zip(seqs, halves, strict=True):
        for one in emoji:
            changed = signal_fired(
                window.session.messageChanged, lambda room, m, kind, by, one=one: kind == "react"
            )
            window.session.react("general", seq, one)
            (_room, message, _kind, _by) = yield changed
            assert one in [r.emoji for r in message.reactions], (one, errors)
    assert errors == []
