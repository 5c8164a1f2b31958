"""Every moderation action from the page, as its users do it: an operator's
page and a member's page in the same room (kick, ban, unban, op, voice,
invitations, modes, the ban list), refusals said in words, and an admin's
page (sessions, a kick or ban off the server, address bans, a password
reset, a room closed). Any console error fails a test (the ``pages``
fixture)."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import Page, close_dialog, open_dialog
from test_features import PASSWORD, act, member_menu, register, result

from chatproto import codec
from tests.processes import Server, admin_account

#: Whether the server has the later modes (+m +s +k +l) and voice yet.
LATER_MODES = "moderated" in {f.name for f in dataclasses.fields(codec.Moderate)}


@pytest.fixture
def server(tmp_path):
    """A server with an admin account, root, and room for many requests in a
    row (MODERATE and ADMIN draw on the JOIN bucket)."""
    history = str(tmp_path / "history.sqlite3")
    admin_account(history, "root", PASSWORD)
    running = Server(history, "--admin", "root", "--join-burst", "60", "--join-rate", "5")
    running.start()
    yield running
    running.stop()


def members(page: Page) -> list[str]:
    return sorted(page.lines("#member-list li"))


def errors(page: Page) -> list[str]:
    return page.lines("#transcript li.error")


def in_den(*pages: Page) -> None:
    """Each page joins den, the first one making it (and so its operator)."""
    for page in pages:
        page.say("/join den")
        page.wait(lambda p=page: p.current_room() == "den", "den shown")


def two_in_den(pages) -> tuple[Page, Page]:
    """ann, den's operator, and bob, a member, each on a page of its own."""
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    in_den(ann, bob)
    ann.wait(lambda: members(ann) == ["@ann", "bob"], "bob in den")
    assert members(bob) == ["@ann", "bob"]
    return ann, bob


def room_names(page: Page) -> list[str]:
    """Read in one call: the list may be drawn again between reading its
    items and their attributes (a stale element)."""
    return page.js("return [...document.querySelectorAll('#room-list li')].map(li => li.dataset.room)")


def capture(page: Page) -> None:
    """Keep what the page sends from now on in window.__sent ({type, body} each)."""
    page.js(
        "const s = window.chatApp.session; window.__sent = []; const send = s._send.bind(s);"
        "s._send = (type, body, early) => {"
        " window.__sent.push({type, body}); return send(type, body, early); };"
    )


def sent(page: Page, kind: int) -> list[dict]:
    return [p["body"] for p in page.js("return window.__sent") if p["type"] == kind]


def moderated(page: Page) -> list[dict]:
    """The MODERATE requests that change something, without their refs."""
    said = sent(page, codec.PacketType.MODERATE)
    return [{k: v for k, v in b.items() if k != "ref"} for b in said if b["op"] != "bans"]


# -- an operator and a member ---------------------------------------------------------------


def test_kick_ban_and_unban_from_the_member_menu_and_the_ban_list(pages):
    ann, bob = two_in_den(pages)
    member_menu(ann, "bob")
    ann.find("#member-reason").send_keys("too loud")
    act(ann, "kick")
    bob.wait(lambda: "You were kicked from den: too loud" in errors(bob), "bob told he was kicked")
    assert "den" not in room_names(bob)
    ann.wait(lambda: "kicked bob: too loud" in result(ann, "#member-dialog"), "the record in the menu")
    close_dialog(ann, "#member-dialog")
    ann.wait(lambda: "bob was kicked: too loud" in ann.lines("#transcript li.presence"), "the kick shown")

    in_den(bob)
    ann.wait(lambda: members(ann) == ["@ann", "bob"], "bob back")
    member_menu(ann, "bob")
    ann.find("#member-reason").send_keys("spam")
    act(ann, "ban")
    bob.wait(lambda: any("from den" in e for e in errors(bob)), "bob told he was banned")
    close_dialog(ann, "#member-dialog")
    bob.say("/join den")
    bob.wait(lambda: any(e.startswith("Can't join den:") for e in errors(bob)), "the banned JOIN refused")
    assert "den" not in room_names(bob)

    open_dialog(ann, "#room-button", "#room-dialog")
    ann.wait(lambda: "bob (by ann: spam)" in ann.find("#room-bans").text, "bob in the ban list")
    ann.find("#room-bans button").click()
    ann.wait(lambda: ann.find("#room-bans").text == "nobody", "the ban lifted")
    close_dialog(ann, "#room-dialog")
    in_den(bob)


def test_op_deop_voice_and_devoice_show_on_both_pages(pages):
    ann, bob = two_in_den(pages)
    member_menu(ann, "ann")
    offered = [b.text for b in ann.all("#member-dialog .actions button") if b.is_displayed()]
    assert offered == ["Remove operator", "Give voice"], "no kicking or banning yourself"
    assert not ann.find("#member-reason").is_displayed()
    close_dialog(ann, "#member-dialog")
    member_menu(bob, "ann")
    assert not bob.find("#member-reason").is_displayed(), "no reason to give for a member"
    close_dialog(bob, "#member-dialog")
    member_menu(ann, "bob")
    offered = [b.text for b in ann.all("#member-dialog .actions button") if b.is_displayed()]
    assert offered == ["Whisper", "Make operator", "Give voice", "Kick", "Ban from the room"]
    act(ann, "op")
    for page in (ann, bob):
        page.wait(lambda p=page: members(p) == ["@ann", "@bob"], "bob an operator on both pages")
    assert ann.find("#member-role").text == "Operator of den"
    assert ann.find("#member-dialog [data-act=deop]").is_displayed(), "the menu follows the change"
    close_dialog(ann, "#member-dialog")
    open_dialog(bob, "#room-button", "#room-dialog")
    assert bob.find("#room-modes-apply").is_displayed(), "an operator now: bob's room dialog has the modes"
    assert "You are an operator" in bob.find("#room-dialog-note").text
    member_menu(ann, "bob")
    act(ann, "deop")
    bob.wait(lambda: not bob.find("#room-modes-apply").is_displayed(), "bob's switches gone at once")
    close_dialog(bob, "#room-dialog")
    ann.wait(lambda: members(ann) == ["@ann", "bob"], "bob no longer one")
    if not LATER_MODES:
        close_dialog(ann, "#member-dialog")
        return
    act(ann, "voice")
    for page in (ann, bob):
        page.wait(lambda p=page: members(p) == ["+bob", "@ann"], "bob voiced on both pages")
    assert ann.find("#member-dialog [data-act=devoice]").is_displayed()
    act(ann, "devoice")
    bob.wait(lambda: members(bob) == ["@ann", "bob"], "bob's voice taken")
    close_dialog(ann, "#member-dialog")


def test_an_invitation_lets_a_member_into_an_invite_only_room(pages):
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    in_den(ann)
    open_dialog(ann, "#room-button", "#room-dialog")
    ann.find("#room-invite-only").click()
    ann.find("#room-modes-apply").click()
    ann.wait(lambda: ann.find("#room-modes").text == "invite only", "the header says invite only")
    bob.say("/join den")
    bob.wait(lambda: any("invite-only" in e for e in errors(bob)), "the refusal said")
    assert errors(bob)[-1].startswith("Can't join den:")
    ann.find("#room-nick").send_keys("bob")
    ann.find("#room-invite").click()
    ann.wait(lambda: "invited bob" in result(ann, "#room-dialog"), "the invitation said")
    close_dialog(ann, "#room-dialog")
    bob.wait(lambda: bob.all("#transcript li.invitation"), "the invitation at bob")
    assert "ann invited you to den" in bob.find("#transcript li.invitation").text
    bob.find("#transcript li.invitation .join-invited").click()
    bob.wait(lambda: bob.current_room() == "den", "bob in den by the invitation")
    assert bob.find("#room-modes").text == "invite only", "a member sees the room's modes"


def test_a_locked_topic_is_set_by_operators_only(pages):
    ann, bob = two_in_den(pages)
    open_dialog(ann, "#room-button", "#room-dialog")
    ann.find("#room-topic-lock").click()
    ann.find("#room-modes-apply").click()
    ann.wait(lambda: "locked the topic" in result(ann, "#room-dialog"), "the record in the dialog")
    ann.find("#room-modes-apply").click()
    ann.wait(lambda: result(ann, "#room-dialog") == "Nothing to change.", "an Apply that changes nothing")
    close_dialog(ann, "#room-dialog")
    bob.wait(lambda: bob.find("#room-modes").text == "topic locked", "bob's header")
    bob.say("/topic mine now")
    bob.wait(lambda: errors(bob), "the refusal said")
    assert "only operators may set" in errors(bob)[-1]
    open_dialog(bob, "#room-button", "#room-dialog")
    assert "Its topic is locked." in bob.find("#room-dialog-note").text
    close_dialog(bob, "#room-dialog")
    ann.say("/topic ours")
    bob.wait(lambda: bob.find("#room-topic").text == "ours", "the operator's topic at bob")


def test_mode_commands_and_refusals_in_words(pages):
    ann, bob = two_in_den(pages)
    bob.say("/kick ann")
    bob.wait(lambda: errors(bob), "the refusal")
    assert errors(bob)[-1].startswith("Can't kick: only the room's operators may do that")
    ann.say("/kick nobody")
    ann.wait(lambda: errors(ann), "the refusal")
    assert errors(ann)[-1] == "Can't kick: nobody called 'nobody' is in 'den'"
    ann.say("/mode +it")
    ann.wait(lambda: ann.find("#room-modes").text == "invite only · topic locked", "both modes set")
    ann.say("/mode -i")
    bob.wait(lambda: bob.find("#room-modes").text == "topic locked", "invite only lifted, at bob too")
    ann.say("/mode")
    ann.wait(lambda: "den: topic locked" in ann.lines("#transcript li.notice"), "the modes said")
    ann.say("/mode +x")
    ann.wait(lambda: errors(ann)[-1].startswith("Usage: /mode"), "a bad mode refused by the page")
    assert ann.find("#message-input").get_attribute("value") == "/mode +x", "left in the box to fix"
    ann.find("#message-input").clear()
    member_menu(ann, "bob")
    bob.say("/part")
    ann.wait(lambda: members(ann) == ["@ann"], "bob gone")
    act(ann, "kick")
    ann.wait(lambda: "nobody called 'bob'" in result(ann, "#member-dialog"), "the refusal in the menu")
    assert "error" in ann.find("#member-dialog .result").get_attribute("class")
    close_dialog(ann, "#member-dialog")
    open_dialog(ann, "#room-button", "#room-dialog")
    ann.find("#room-limit").send_keys("1.5")
    ann.find("#room-modes-apply").click()
    ann.wait(lambda: "whole number" in result(ann, "#room-dialog"), "a bad limit refused by the page")
    close_dialog(ann, "#room-dialog")


# -- what the page does with the later modes' fields, whatever the server ------------------------


def test_voice_and_the_later_modes_are_shown_and_sent(pages):
    """The page's side of +m +s +k +l and voice, fed the packets the server
    sends (ROOM's and the records' fields, JOINED's voice): what it shows,
    and that it sends only what changed."""
    ann, _ = two_in_den(pages)
    capture(ann)
    ann.js(
        "const s = window.chatApp.session; const room = s.rooms.get('den');"
        "s._moderated(room, {op: 'voice', target: 'bob'});"
        "s._moderated(room, {op: 'mode', moderated: true, secret: true, key: 'sesame', limit: 5});"
        "s._joined({room: 'den', id: 999999, nick: 'vee', voice: true});"
    )
    assert members(ann) == ["+bob", "+vee", "@ann"]
    assert ann.find("#room-modes").text == "moderated · secret · key · limit 5"
    member_menu(ann, "bob")
    assert ann.find("#member-role").text == "Voiced member of den"
    assert not ann.find("#member-dialog [data-act=voice]").is_displayed()
    act(ann, "devoice")
    close_dialog(ann, "#member-dialog")
    open_dialog(ann, "#room-button", "#room-dialog")
    assert ann.find("#room-moderated").is_selected() and ann.find("#room-secret").is_selected()
    assert ann.find("#room-key").get_attribute("value") == "sesame"
    assert ann.find("#room-limit").get_attribute("value") == "5"
    ann.find("#room-moderated").click()
    ann.find("#room-key").clear()
    ann.find("#room-limit").clear()
    ann.find("#room-limit").send_keys("10")
    ann.find("#room-modes-apply").click()
    ann.wait(lambda: result(ann, "#room-dialog"), "an answer")
    close_dialog(ann, "#room-dialog")
    assert moderated(ann) == [
        {"room": "den", "op": "devoice", "target": "bob"},
        {"room": "den", "op": "mode", "moderated": False, "key": "", "limit": 10},
    ]
    ann.say("/mode +k open-sesame -s +l 3")
    ann.say("/voice bob")
    ann.wait(lambda: len(moderated(ann)) == 4, "the commands sent")
    assert moderated(ann)[2:] == [
        {"room": "den", "op": "mode", "key": "open-sesame", "secret": False, "limit": 3},
        {"room": "den", "op": "voice", "target": "bob"},
    ]


def test_a_refused_key_asks_for_it_and_joins_with_it(pages):
    ann = pages()
    ann.log_in("ann")
    capture(ann)
    ann.js(
        "window.chatApp.session._error("
        " {code: 'bad_key', ref: 'join:keyed', message: \"'keyed' needs its key\"})"
    )
    ann.wait(lambda: ann.js("return document.getElementById('key-dialog').open"), "the key asked for")
    assert ann.find("#key-title").text == "keyed needs a key"
    assert ann.find("#key-note").text == "'keyed' needs its key"
    ann.find("#key-input").send_keys("sesame")
    ann.find("#key-join").click()
    ann.wait(lambda: ann.current_room() == "keyed", "joined with the key")
    assert sent(ann, codec.PacketType.JOIN)[-1] == {"room": "keyed", "key": "sesame", "ref": "join:keyed"}
    ann.find("#message-input").click()  # back from the dialog
    ann.say("/join other secret")
    ann.wait(lambda: ann.current_room() == "other", "joined by /join room key")
    assert sent(ann, codec.PacketType.JOIN)[-1] == {"room": "other", "key": "secret", "ref": "join:other"}


def test_a_notice_is_shown_apart(pages, peers):
    ann = pages()
    ann.log_in("ann")
    bot = peers("bot")
    bot.send(codec.Join("general"))
    bot.expect(codec.RoomState)
    bot.send(codec.Say("maintenance at noon", None, "general", notice=True))
    bot.send(codec.Whisper("ann", "your build passed", notice=True))
    ann.wait(lambda: len(ann.all("#transcript li.notice-message")) == 2, "both notices")
    said, whispered = ann.all("#transcript li.notice-message")
    assert said.find_element("css selector", ".text").text == "-bot- maintenance at noon"
    assert whispered.find_element("css selector", ".from").text == "-bot- → you"
    assert whispered.find_element("css selector", ".text").text == "your build passed"
    ann.here().refresh()  # from the history (and the tab's kept whispers), still notices
    kept = ["-bot- maintenance at noon", "your build passed"]
    ann.wait(lambda: ann.lines("#transcript li.notice-message") == kept, "kept as notices")


@pytest.mark.skipif(not LATER_MODES, reason="the server has no +m +k +l yet")
def test_the_later_modes_against_the_server(pages):
    ann, bob = two_in_den(pages)
    open_dialog(ann, "#room-button", "#room-dialog")
    ann.find("#room-moderated").click()
    ann.find("#room-key").send_keys("sesame")
    ann.find("#room-modes-apply").click()
    bob.wait(lambda: bob.find("#room-modes").text == "moderated · key", "bob's header")
    close_dialog(ann, "#room-dialog")
    placeholder = "return document.getElementById('message-input').placeholder"
    assert bob.js(placeholder).startswith("Moderated: only operators and voiced members talk")
    assert ann.js(placeholder) == "Message"
    bob.say("silenced?")
    bob.wait(lambda: bob.all("#transcript li.failed"), "bob's message refused")
    assert "is moderated" in bob.find("#transcript li.failed .mark").text
    member_menu(ann, "bob")
    act(ann, "voice")
    ann.wait(lambda: members(ann) == ["+bob", "@ann"], "bob voiced")
    bob.wait(lambda: bob.js(placeholder) == "Message", "bob may talk")
    close_dialog(ann, "#member-dialog")
    bob.say("now I may")
    ann.wait(lambda: "now I may" in ann.lines("#transcript li.message"), "a voiced member heard")
    bob.say("/part")
    bob.wait(lambda: "den" not in room_names(bob), "bob out")
    in_den(bob)  # a member was told the key: no prompt
    carol = pages()
    carol.log_in("carol")
    carol.say("/join den")
    carol.wait(lambda: carol.js("return document.getElementById('key-dialog').open"), "the key asked for")
    carol.find("#key-input").send_keys("sesame")
    carol.find("#key-join").click()
    carol.wait(lambda: carol.current_room() == "den", "carol in with the key")
    open_dialog(carol, "#room-button", "#room-dialog")
    assert carol.find("#room-dialog-note").text.endswith("Its key: sesame"), "a member may pass the key on"
    close_dialog(carol, "#room-dialog")
    ann.say("/mode +l 3 -m")
    carol.wait(lambda: carol.find("#room-modes").text == "key · limit 3", "carol's header")
    dave = pages()
    dave.log_in("dave")
    dave.say("/join den sesame")
    dave.wait(lambda: any(e.startswith("Can't join den:") for e in errors(dave)), "den full")


# -- an admin -------------------------------------------------------------------------------


def admin_page(pages) -> Page:
    root = pages()
    root.log_in("root", PASSWORD)
    root.wait(lambda: root.find("#admin-button").is_displayed(), "the admin button")
    return root


def test_an_admin_kicks_off_the_server_from_the_sessions_list(pages):
    bob = pages()
    bob.log_in("bob")
    root = admin_page(pages)
    open_dialog(root, "#admin-button", "#admin-dialog")
    root.wait(lambda: "bob" in root.find("#admin-sessions").text, "bob in the sessions list")
    row = next(li for li in root.all("#admin-sessions li") if li.text.startswith("bob "))
    assert "in general" in row.text
    assert not [b for b in root.all("#admin-sessions li") if b.text.startswith("root ") and "Kick" in b.text]
    root.find("#admin-reason").send_keys("enough")  # the list's buttons take the form's reason
    row.find_element("css selector", "button").click()
    root.wait(lambda: "You kicked bob off the server." in result(root, "#admin-dialog"), "the kick done")
    kicked = "root kicked bob off the server: enough"
    root.wait(lambda: kicked in root.lines("#transcript li.record"), "the record with the reason")
    root.wait(lambda: "bob" not in root.find("#admin-sessions").text, "the list refreshed")
    close_dialog(root, "#admin-dialog")
    bob.wait(lambda: any("An admin disconnected you" in e for e in errors(bob)), "bob told why")
    assert bob.state() == "given_up", "no reconnecting after a kick"


def test_an_admin_bans_a_nick_and_an_address_and_lifts_them(pages, server):
    register(server.port, "dave")
    bob = pages()
    bob.log_in("bob")
    root = admin_page(pages)
    member_menu(root, "bob")
    root.find("#member-reason").send_keys("flooding")
    act(root, "server-ban")
    bob.wait(lambda: bob.state() == "given_up", "bob off the server")
    close_dialog(root, "#member-dialog")
    open_dialog(root, "#admin-button", "#admin-dialog")
    root.wait(lambda: "bob (by root: flooding)" in root.find("#admin-bans").text, "bob's ban listed")
    root.find("#admin-target").send_keys("203.0.113.0/24")
    root.find("#admin-duration").send_keys("60")
    root.find("#admin-reason").send_keys("a bad network")
    root.find("#admin-ban-address").click()
    listed = "203.0.113.0/24 (by root: a bad network, until"
    root.wait(lambda: listed in root.find("#admin-bans").text, "the address ban listed")
    for left in (1, 0):
        root.find("#admin-bans button").click()
        root.wait(lambda n=left: len(root.all("#admin-bans button")) == n, "a ban lifted")
    assert root.find("#admin-bans").text == "nobody is banned"
    root.find("#admin-reset-nick").send_keys("dave")
    root.find("#admin-reset-password").send_keys("a new one for dave")
    root.find("#admin-reset").click()
    root.wait(lambda: "reset dave" in result(root, "#admin-dialog"), "dave's password reset")
    root.find("#admin-target").clear()
    root.find("#admin-target").send_keys("root")
    root.find("#admin-ban").click()
    root.wait(lambda: "Can't ban: an admin can't be banned" in result(root, "#admin-dialog"), "the refusal")
    close_dialog(root, "#admin-dialog")


def test_an_admin_closes_a_room_and_moderates_any_room(pages):
    bob = pages()
    bob.log_in("bob")
    in_den(bob)
    root = admin_page(pages)
    in_den(root)
    open_dialog(root, "#room-button", "#room-dialog")
    assert root.find("#room-modes-apply").is_displayed(), "an admin is an operator of every room"
    close_dialog(root, "#room-dialog")
    open_dialog(root, "#admin-button", "#admin-dialog")
    root.find("#admin-room").send_keys("den")
    root.find("#admin-close").click()
    root.wait(lambda: "You closed the room den." in result(root, "#admin-dialog"), "closed")
    close_dialog(root, "#admin-dialog")
    bob.wait(lambda: "den was closed" in " ".join(errors(bob)), "bob told")
    assert "den" not in room_names(bob)
