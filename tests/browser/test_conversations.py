"""The page's conversations (docs/protocol.md section 19): replies, reactions,
edits, deletion, typing, away, direct conversations and catching up on
changes after a drop, in real Chromium against a real server process."""

from __future__ import annotations

import pytest
from conftest import Page, close_dialog, open_dialog

from chatproto import codec
from tests.browser.test_features import PASSWORD, register
from tests.processes import TcpPeer


def joined(peer: TcpPeer, room: str) -> int:
    """Join ``room``; the seq of its newest message (0 for none)."""
    peer.send(codec.Join(room))
    state = peer.expect(codec.RoomState, lambda r: r.room == room)
    return state.history[-1].seq if state.history else 0


def said(peer: TcpPeer, text: str, room: str = "general", reply: int | None = None) -> int:
    """Say ``text`` in ``room``; its seq."""
    peer.send(codec.Say(text, "s", room, reply))
    return peer.expect(codec.MessagePacket, lambda m: m.ref == "s" and m.text == text).seq


def line(page: Page, text: str):
    """The transcript's message line whose text is ``text`` (waited for)."""
    script = """
        return [...document.querySelectorAll('#transcript li[data-seq]')]
            .find(li => li.querySelector('.text')?.textContent === arguments[0]) ?? null"""
    return page.wait(lambda: page.js(script, text), f"the line {text!r}")


def act(page: Page, text: str, what: str) -> None:
    """Hover the message ``text`` and click its ``what`` tool (reply, react, edit, delete)."""
    from selenium.webdriver.common.action_chains import ActionChains

    li = line(page, text)
    ActionChains(page.here()).move_to_element(li).perform()
    tool = li.find_element("css selector", f".tools [data-act={what}]")
    page.wait(tool.is_displayed, f"the {what} tool shown on hover")
    tool.click()


def typed(page: Page, text: str) -> None:
    page.find("#message-input").send_keys(text)


def cleared(page: Page) -> None:
    """Empty the box as a person would: select all, then delete."""
    from selenium.webdriver.common.keys import Keys

    box = page.find("#message-input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)


def result(page: Page, dialog: str) -> str:
    return page.find(f"{dialog} .result").text


def texts(page: Page, css: str) -> list[str]:
    return page.js("return [...document.querySelectorAll(arguments[0])].map(n => n.textContent)", css)


# -- replies ----------------------------------------------------------------------------------------


def test_a_reply_quotes_its_original_and_follows_its_changes(pages, peers):
    ann = pages()
    ann.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    original = said(desk, "is 2.1 out?")
    act(ann, "is 2.1 out?", "reply")
    ann.wait(lambda: ann.find("#compose-bar").is_displayed(), "the reply bar")
    assert "Replying to desk" in ann.find("#compose-what").text
    ann.find("#compose-cancel").click()
    ann.wait(lambda: not ann.find("#compose-bar").is_displayed(), "the reply cancelled")
    act(ann, "is 2.1 out?", "reply")
    ann.say("shipped yesterday")
    answer = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert answer.reply is not None and answer.reply.seq == original
    assert not ann.find("#compose-bar").is_displayed(), "the bar goes with the reply"
    reply = line(ann, "shipped yesterday")
    ann.wait(lambda: reply.find_elements("css selector", ".quote"), "the quote")
    assert reply.find_element("css selector", ".quote").text == "desk is 2.1 out?"
    reply.find_element("css selector", ".quote").click()
    ann.wait(lambda: "flash" in line(ann, "is 2.1 out?").get_attribute("class"), "the original flashed")
    desk.send(codec.Edit("general", original, "is 2.1 out yet?", ref="e"))
    desk.expect(codec.Changed, lambda c: c.ref == "e")
    quote = "#transcript li[data-seq] .quote"
    ann.wait(lambda: texts(ann, quote) == ["desk is 2.1 out yet?"], "the quote follows the edit")
    desk.send(codec.Delete("general", original, ref="d"))
    desk.expect(codec.Changed, lambda c: c.ref == "d")
    ann.wait(lambda: texts(ann, quote) == ["original deleted"], "the quote says the original is gone")
    assert "message deleted" in ann.lines("#transcript li.deleted")


# -- reactions ----------------------------------------------------------------------------------------


def test_reactions_are_chips_with_counts_and_names(pages, peers):
    ann = pages()
    ann.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    seq = said(desk, "lunch at noon?")
    act(ann, "lunch at noon?", "react")
    ann.wait(lambda: ann.find("#emoji-picker").is_displayed(), "the emoji picker")
    ann.find('#emoji-picker button[data-emoji="👍"]').click()
    changed = desk.expect(codec.Changed, lambda c: c.kind == "react")
    assert changed.by == "ann" and changed.message.reactions[0].by == ["ann"]
    chips = "#transcript li[data-seq] .reaction"
    ann.wait(lambda: texts(ann, chips) == ["👍 1"], "ann's reaction")
    assert "mine" in ann.find(chips).get_attribute("class")
    desk.send(codec.React("general", seq, "👍", ref="r"))
    desk.expect(codec.Changed, lambda c: c.ref == "r")
    ann.wait(lambda: texts(ann, chips) == ["👍 2"], "two reactions")
    assert ann.find(chips).get_attribute("title") == "ann, desk reacted with 👍"
    ann.find(chips).click()  # takes mine back
    ann.wait(lambda: texts(ann, chips) == ["👍 1"], "one left")
    assert "mine" not in ann.find(chips).get_attribute("class")
    assert ann.find(chips).get_attribute("title") == "desk reacted with 👍"
    desk.send(codec.React("general", seq, "👍", on=False, ref="r2"))
    desk.expect(codec.Changed, lambda c: c.ref == "r2")
    ann.wait(lambda: not ann.all(chips), "no reactions left")
    act(ann, "lunch at noon?", "react")  # a short name, typed
    ann.wait(lambda: ann.find("#emoji-other").is_displayed(), "the picker's field")
    ann.find("#emoji-other").send_keys(":taco:\n")
    ann.wait(lambda: texts(ann, chips) == [":taco: 1"], "the named reaction")


# -- edits ----------------------------------------------------------------------------------------


def test_edit_own_messages_with_the_tool_and_the_up_arrow(pages, peers):
    from selenium.webdriver.common.keys import Keys

    ann = pages()
    ann.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    ann.say("teh plan")
    first = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann").seq
    ann.say("second thuoght")
    second = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann").seq
    said(desk, "not yours to edit")
    line(ann, "second thuoght")
    ann.find("#message-input").send_keys(Keys.ARROW_UP)  # the box is empty: edits my last
    box = ann.find("#message-input")
    ann.wait(lambda: box.get_attribute("value") == "second thuoght", "the last message in the box")
    assert "Editing" in ann.find("#compose-what").text
    cleared(ann)
    ann.say("second thought")
    edit = desk.expect(codec.Changed, lambda c: c.kind == "edit")
    assert (edit.message.seq, edit.message.text) == (second, "second thought") and edit.message.edited
    line(ann, "second thought")
    ann.wait(lambda: texts(ann, "#transcript .edited") == [" (edited)"], "(edited)")
    act(ann, "teh plan", "edit")
    ann.wait(lambda: box.get_attribute("value") == "teh plan", "the first message in the box")
    cleared(ann)
    ann.say("the plan")
    edit = desk.expect(codec.Changed, lambda c: c.kind == "edit")
    assert (edit.message.seq, edit.message.text) == (first, "the plan")
    line(ann, "the plan")
    ann.wait(lambda: len(ann.all("#transcript .edited")) == 2, "both marked edited")
    theirs = line(ann, "not yours to edit")
    assert not theirs.find_elements("css selector", "[data-act=edit]"), "no edit for someone else's"
    act(ann, "the plan", "edit")  # Escape drops an edit
    ann.wait(lambda: box.get_attribute("value") == "the plan", "in the box again")
    box.send_keys(Keys.ESCAPE)
    ann.wait(
        lambda: box.get_attribute("value") == "" and not ann.find("#compose-bar").is_displayed(), "dropped"
    )


# -- deletion ----------------------------------------------------------------------------------------


def test_delete_own_and_as_the_rooms_operator(pages, peers):
    ann, bob = pages(), pages()
    ann.log_in("ann")
    ann.say("/join den")  # ann makes den: its operator
    ann.wait(lambda: ann.current_room() == "den", "den")
    bob.log_in("bob")
    bob.say("/join den")
    bob.wait(lambda: bob.current_room() == "den", "bob in den")
    desk = peers("desk")
    joined(desk, "den")
    said(desk, "buy cheap watches", "den")
    ann.say("oops, wrong room")
    desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    spam = line(bob, "buy cheap watches")
    assert not spam.find_elements("css selector", "[data-act=delete]"), "a member can't delete others'"
    act(ann, "oops, wrong room", "delete")
    gone = desk.expect(codec.Changed, lambda c: c.kind == "delete")
    assert gone.message.deleted and gone.message.deleted_by is None
    # the first drawn as deleted before the next hover: the lines move when it is
    ann.wait(lambda: ann.lines("#transcript li.deleted") == ["message deleted"], "the first deleted")
    act(ann, "buy cheap watches", "delete")  # the operator's right
    gone = desk.expect(codec.Changed, lambda c: c.kind == "delete")
    assert gone.message.deleted_by == "ann"
    for page in (ann, bob):
        page.wait(
            lambda p=page: p.lines("#transcript li.deleted") == ["message deleted by ann", "message deleted"],
            "both deleted",
        )
    assert "buy cheap watches" not in " ".join(bob.lines("#transcript li"))


# -- the message menu (a right click, a long press on a phone) ------------------------------------


def test_the_message_menu_offers_what_the_tools_offer(pages, peers):
    from selenium.webdriver.common.action_chains import ActionChains

    ann = pages()
    ann.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    said(desk, "right click me")
    ActionChains(ann.here()).context_click(line(ann, "right click me")).perform()
    ann.wait(lambda: ann.find("#message-menu").is_displayed(), "the menu")
    acts = ann.js("return [...document.querySelectorAll('#message-menu button')].map(b => b.dataset.act)")
    assert acts == ["reply", "react"], "someone else's: no edit, no delete"
    ann.find("#message-menu [data-act=react]").click()
    ann.wait(lambda: ann.find("#emoji-picker").is_displayed(), "the picker from the menu")
    ann.find('#emoji-picker button[data-emoji="🎉"]').click()
    ann.wait(lambda: texts(ann, "#transcript .reaction") == ["🎉 1"], "the reaction")


# -- typing ----------------------------------------------------------------------------------------


def test_typing_is_shown_and_stops(pages, peers):
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    typing = lambda page: page.find("#typing").text  # noqa: E731
    typed(ann, "hel")
    bob.wait(lambda: typing(bob) == "ann is typing…", "ann typing, at bob")
    assert typing(ann) == "", "nobody is told of their own typing"
    cleared(ann)
    bob.wait(lambda: typing(bob) == "", "an emptied box stops it")
    typed(ann, "hello bob")
    bob.wait(lambda: typing(bob) == "ann is typing…", "typing again")
    ann.say("")  # Enter sends it
    bob.wait(lambda: "hello bob" in bob.lines("#transcript li.message"), "the message")
    assert typing(bob) == "", "the message ends the typing"
    desk = peers("desk")
    joined(desk, "general")
    desk.send(codec.Typing("general", True))
    bob.wait(lambda: typing(bob) == "desk is typing…", "desk typing")
    bob.wait(lambda: typing(bob) == "", "it expires by itself after twice the interval")


# -- away ----------------------------------------------------------------------------------------


def test_away_members_are_dimmed_with_their_message(pages):
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    bob.say("/away at lunch")
    away = "#member-list li.away"
    ann.wait(lambda: ann.all(f"{away}[data-nick=bob]"), "bob away at ann")
    assert ann.find(f"{away}[data-nick=bob] .member-name").get_attribute("title") == "bob is away: at lunch"
    bob.wait(lambda: bob.find("#away-button").text == "Back", "bob's control says Back")
    carol = pages()
    carol.log_in("carol")  # ROOM.members carries the away
    carol.wait(lambda: carol.all(f"{away}[data-nick=bob]"), "bob away for a newcomer")
    bob.wait(lambda: bob.all("#member-list li[data-nick=carol]"), "carol in bob's list")
    assert not bob.all(f"{away}[data-nick=carol]"), "carol is present"
    bob.find("#away-button").click()  # back
    ann.wait(lambda: not ann.all(away), "bob back at ann")
    carol.wait(lambda: not carol.all(away), "bob back at carol")
    bob.wait(lambda: bob.find("#away-button").text == "Away", "the control says Away again")
    carol.find("#away-button").click()  # away without a message
    ann.wait(lambda: ann.all(f"{away}[data-nick=carol]"), "carol away")
    assert ann.find(f"{away}[data-nick=carol] .member-name").get_attribute("title") == "carol is away"
    carol.say("/back")
    ann.wait(lambda: not ann.all(away), "carol back")
    open_dialog(ann, "#account-button", "#account-dialog")  # where a phone sets it
    ann.find("#away-message").send_keys("on the train")
    ann.find("#away-set").click()
    ann.wait(lambda: result(ann, "#account-dialog") == "You are away: on the train", "said in the dialog")
    bob.wait(lambda: bob.all(f"{away}[data-nick=ann]"), "ann away at bob")
    ann.find("#away-back").click()
    ann.wait(lambda: result(ann, "#account-dialog") == "You are back.", "back, said in the dialog")
    bob.wait(lambda: not bob.all(away), "ann back at bob")
    close_dialog(ann, "#account-dialog")


# -- direct conversations ---------------------------------------------------------------------------


def test_a_direct_conversation_across_two_people_and_a_second_device(pages, server):
    register(server.port, "ann")
    register(server.port, "bob")
    ann, bob = pages(), pages()
    ann.log_in("ann", PASSWORD)
    bob.log_in("bob", PASSWORD)
    ann.say("/msg bob are you free at 3?")
    ann.wait(lambda: ann.current_room() == "bob", "the conversation shown, named by bob")
    line(ann, "are you free at 3?")
    direct = "#direct-list li .room-name"
    assert texts(ann, direct) == ["bob"]
    bob.wait(lambda: texts(bob, direct) == ["ann"], "the conversation at bob")
    bob.wait(lambda: texts(bob, "#direct-list li .unread") == ["1"], "one unread")
    assert bob.current_room() == "general", "not snatched away from what bob reads"
    bob.find(direct).click()
    bob.wait(lambda: bob.current_room() == "ann", "bob in the conversation")
    line(bob, "are you free at 3?")
    assert not bob.all("#direct-list .unread"), "read once shown"
    bob.say("yes, see you then")
    line(ann, "yes, see you then")
    phone = pages()  # ann's second device
    phone.log_in("ann", PASSWORD)
    phone.wait(lambda: texts(phone, direct) == ["bob"], "the conversation on the second device")
    phone.find(direct).click()
    phone.wait(lambda: phone.current_room() == "bob", "shown")
    line(phone, "yes, see you then")
    assert "are you free at 3?" in phone.lines("#transcript li.own"), "ann's own on every device"
    ann.find("#room-list li[data-room=general] .room-name").click()
    ann.wait(lambda: ann.current_room() == "general", "back in general")
    ann.say("/msg bob one more thing")  # the same conversation, not a new one
    ann.wait(lambda: ann.current_room() == "bob", "the conversation again")
    line(bob, "one more thing")
    line(phone, "one more thing")
    assert texts(ann, direct) == ["bob"] and texts(bob, direct) == ["ann"]
    bob.say("/msg ann and a reply")
    line(ann, "and a reply")
    assert texts(bob, direct) == ["ann"]


def test_a_guest_still_whispers(pages, server):
    register(server.port, "ann")
    ann, guest = pages(), pages()
    ann.log_in("ann", PASSWORD)
    guest.log_in("gus")
    guest.say("/msg ann psst")
    ann.wait(lambda: "psst" in ann.lines("#transcript li.whisper"), "a guest's whisper")
    ann.say("/msg gus hello guest")  # gus has no account: a whisper, said so
    guest.wait(lambda: "hello guest" in guest.lines("#transcript li.whisper"), "whispered back")
    assert not ann.all("#direct-list li")


# -- catching up after a drop ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server_args", [("--history-replay", "3")]
)  # ROOM's history holds no changed message
def test_changes_missed_during_a_drop_are_caught_up(pages, peers, server):
    page = pages()
    page.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    seqs = [said(desk, f"m{n}") for n in range(8)]
    line(page, "m7")
    page.js("const s = window.chatApp.session; s.retry = () => 3600000; s.ws.close()")  # the network drops
    page.wait(lambda: page.state() == "reconnecting", "the drop")
    desk.send(codec.Edit("general", seqs[0], "m0 fixed", ref="e"))
    desk.expect(codec.Changed, lambda c: c.ref == "e")
    desk.send(codec.Delete("general", seqs[1], ref="d"))
    desk.expect(codec.Changed, lambda c: c.ref == "d")
    desk.send(codec.React("general", seqs[2], "🎉", ref="r"))
    desk.expect(codec.Changed, lambda c: c.ref == "r")
    said(desk, "after the changes")
    page.js("const s = window.chatApp.session; s._cancelRetry(); s._setState('connecting'); s._open()")
    page.wait(lambda: page.state() == "connected", "back")
    line(page, "after the changes")
    line(page, "m0 fixed")
    page.wait(lambda: page.lines("#transcript li.deleted") == ["message deleted"], "m1 deleted")
    page.wait(lambda: texts(page, "#transcript .reaction") == ["🎉 1"], "m2's reaction")
    assert page.js("return window.chatApp.session.rooms.get('general').rev") == 3


# -- formatting ----------------------------------------------------------------------------------------


def test_basic_formatting_is_rendered_as_elements_never_html(pages, peers):
    page = pages()
    page.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    said(desk, "**bold** and *it* and `x<y`\n> quoted <b>\n```\nblock <i>\n```\nafter")
    page.wait(lambda: page.all("#transcript strong"), "formatted")
    assert texts(page, "#transcript .text strong") == ["bold"]
    assert texts(page, "#transcript .text em") == ["it"]
    assert texts(page, "#transcript .text > code") == ["x<y"]
    assert texts(page, "#transcript .text blockquote") == ["quoted <b>"]
    assert texts(page, "#transcript .text pre") == ["block <i>"]
    assert not page.all("#transcript b, #transcript i"), "markup stays text"


# -- the transcript: grouped by author and by day -------------------------------------------------


@pytest.fixture
def old_talk_server(tmp_path):
    """A server whose general room holds talk from two days ago and from today."""
    import time

    from chatproto.backends.eventlog import Draft
    from chatproto.backends.sqlite import SQLiteLog
    from tests.processes import Server

    history = str(tmp_path / "talk.sqlite3")
    now = time.time()
    old = now - 2 * 86400
    log = SQLiteLog(history)
    talk = [(old, "bob", "one"), (old + 30, "bob", "two"), (old + 60, "carol", "three")]
    talk += [(now - 120, "carol", "four"), (now - 60, "carol", "five")]
    log.append([Draft(ts, who, text) for ts, who, text in talk])
    log.close()
    running = Server(history)
    running.start()
    yield running
    running.stop()


def test_messages_are_grouped_by_author_and_day(driver, old_talk_server):
    from conftest import console_errors

    console_errors(driver)
    page = Page(driver, old_talk_server.url)
    try:
        page.log_in("ann")
        line(page, "five")
        days = texts(page, "#transcript li.day")
        assert len(days) == 2 and days[1] == "Today", days
        script = """return [...document.querySelectorAll('#transcript li')].map(li =>
            li.classList.contains('day') ? 'day'
            : (li.classList.contains('continued') ? '+' : '')
              + (li.querySelector('.text')?.textContent ?? ''))"""
        said = {"day", "one", "two", "three", "four", "five"}
        order = [t for t in page.js(script) if t.lstrip("+") in said]
        assert order == ["day", "one", "+two", "three", "day", "four", "+five"], order
        assert not page.find("li[data-seq].continued .from").is_displayed(), "one header per group"
        assert page.errors() == [] and console_errors(driver) == []
    finally:
        page.close()
        driver.switch_to.window(driver.window_handles[0])


# -- /list and a long press -----------------------------------------------------------------------------


def test_list_shows_the_rooms_in_the_transcript(pages, peers):
    page = pages()
    page.log_in("ann")
    desk = peers("desk")
    joined(desk, "den")
    desk.send(codec.SetTopic("den", "the quiet room"))
    desk.expect(codec.TopicChanged)
    page.say("/list")
    page.wait(lambda: "den (1): the quiet room" in page.lines("#transcript li.notice"), "den listed")
    assert "general (1)" in page.lines("#transcript li.notice")


def test_a_long_press_opens_the_message_menu(pages, peers):
    page = pages()
    page.log_in("ann")
    page.say("pressed long")
    li = line(page, "pressed long")
    box = page.js("const r = arguments[0].getBoundingClientRect(); return [r.x + 40, r.y + 10]", li)
    touch = {"touchPoints": [{"x": box[0], "y": box[1]}]}
    page.here().execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchStart", **touch})
    page.wait(lambda: page.find("#message-menu").is_displayed(), "the menu after a long press")
    page.here().execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    acts = page.js("return [...document.querySelectorAll('#message-menu button')].map(b => b.dataset.act)")
    assert acts == ["reply", "react", "edit", "delete"], "all four for my own"
    page.find("#message-menu [data-act=delete]").click()
    page.wait(lambda: page.lines("#transcript li.deleted") == ["message deleted"], "deleted from the menu")
