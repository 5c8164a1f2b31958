"""A real IRC client in the suite: Debian's irssi, driven in tmux (send-keys
to type, capture-pane to read), against a real server process: it joins
#general and exchanges non-ASCII text with a desktop-protocol client.
Skipped, saying why, where irssi or tmux is missing."""

from __future__ import annotations

import shutil

import pytest

from chatproto import codec
from tests.processes import Server, admin_account, join_general

#: An account's password; no space in it: irssi sends PASS without a colon.
SECRET = "Correct-Horse-Battery-9"


@pytest.fixture
def irssi_home(tmp_path):
    missing = [tool for tool in ("irssi", "tmux") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"skipped: no {' or '.join(missing)} (apt-get install irssi tmux)")
    home = tmp_path / "irssi"
    home.mkdir()
    (home / "config").write_text(
        'settings = { core = { real_name = "Ann Tester"; user_name = "ann"; nick = "ann"; };\n'
        '  "fe-common/core" = { autocreate_windows = "yes"; term_charset = "UTF-8"; }; };\n'
    )
    return home


def irssi(home, server: Server, password: str | None = None) -> str:
    """The command line: irssi as ann, with its own home, connecting to the server."""
    command = f"irssi --home={home} -c 127.0.0.1 -p {server.irc_port} -n ann"
    return f"{command} -w {password}" if password else command


def test_irssi_joins_and_chats_with_a_desktop_client(irssi_home, chat_server, desk_in_general, terminal):
    server = chat_server()
    desk = desk_in_general(server)
    tmux = terminal(irssi(irssi_home, server))
    tmux.until("Welcome to")
    join_general(tmux, desk)
    desk.send(codec.Say("héllo från tcp ☃", None, "general"))
    tmux.until("héllo från tcp ☃")
    tmux.type("grüße aus irssi ✓")
    said = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert (said.text, said.room) == ("grüße aus irssi ✓", "general")
    tmux.type("/quit bye")
    left = desk.expect(codec.Left, lambda left: left.nick == "ann")
    assert (left.reason, left.message) == ("quit", "bye")


def test_irssi_sees_edits_deletions_and_away(irssi_home, chat_server, desk_in_general, terminal):
    """Section 17.8 in a real IRC client: an edit is a new line that says
    so, a deletion a NOTICE (irssi has no draft/message-redaction), REDACT
    typed raw deletes, and AWAY goes both ways."""
    server = chat_server()
    desk = desk_in_general(server)
    tmux = terminal(irssi(irssi_home, server))
    tmux.until("Welcome to")
    join_general(tmux, desk)

    desk.send(codec.Say("shiped it", "s1", "general"))
    said = desk.expect(codec.MessagePacket, lambda m: m.ref == "s1")
    tmux.until("shiped it")
    desk.send(codec.Edit("general", said.seq, "shipped it", ref="e1"))
    desk.expect(codec.Changed, lambda c: c.ref == "e1")
    tmux.until("(edited) shipped it")
    desk.send(codec.Delete("general", said.seq, ref="d1"))
    desk.expect(codec.Changed, lambda c: c.ref == "d1")
    tmux.until(f"(deleted message {said.seq} from desk)")

    tmux.type("a line I regret")
    mine = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    tmux.type(f"/quote REDACT #general {mine.seq}")
    gone = desk.expect(codec.Changed, lambda c: c.kind == "delete" and c.message.seq == mine.seq)
    assert (gone.by, gone.message.deleted, gone.message.text) == ("ann", True, "")

    tmux.type("/window 1")  # the status window: where irssi says away and whois
    tmux.type("/away out for lunch")
    status = desk.expect(codec.Status, lambda s: s.nick == "ann")
    assert (status.room, status.away) == ("general", "out for lunch")
    tmux.until("You have been marked as being away")
    desk.send(codec.Away(True, "in a meeting", ref="a1"))
    desk.expect(codec.Done, lambda d: d.ref == "a1")
    tmux.type("/whois desk")
    tmux.until("in a meeting")
    tmux.type("/away")
    back = desk.expect(codec.Status, lambda s: s.nick == "ann")
    assert back.away is None
    tmux.until("You are no longer marked as being away")


def test_irssi_queries_are_direct_conversations(irssi_home, chat_server, peers, terminal):
    """An account's /query with another account is their direct
    conversation (17.8), both ways, kept in history."""
    server = chat_server()
    for nick in ("ann", "bob"):
        peer = peers(server.port, nick)
        peer.send(codec.AccountRequest("register", SECRET, ref="r"))
        peer.expect(codec.Done)
        peer.send(codec.Quit())
    bob = peers(server.port, "bob", password=SECRET)
    tmux = terminal(irssi(irssi_home, server, SECRET))
    tmux.until("Welcome to")
    tmux.type("/query bob")
    tmux.type("hello bob, privately")
    room = bob.expect(codec.RoomState)
    assert (room.room, room.kind) == ("@ann+bob", "direct")
    said = bob.expect(codec.MessagePacket)
    assert (said.room, said.sender, said.text) == ("@ann+bob", "ann", "hello bob, privately")
    bob.send(codec.Say("hi ann, just us", "b1", "@ann+bob"))
    screen = tmux.until("hi ann, just us")
    assert "<bob> hi ann, just us" in screen, screen


def test_irssi_changes_its_nick_and_sees_others_change_theirs(
    irssi_home, chat_server, desk_in_general, terminal
):
    """NICK after registration (17.4) in a real IRC client: irssi's /nick
    is a rename every client sees, and another's rename is irssi's NICK."""
    server = chat_server()
    desk = desk_in_general(server)
    tmux = terminal(irssi(irssi_home, server))
    tmux.until("Welcome to")
    join_general(tmux, desk)
    tmux.type("/nick annie")
    renamed = desk.expect(codec.Renamed)
    assert (renamed.old, renamed.nick) == ("ann", "annie")
    tmux.until("You're now known as annie")
    desk.send(codec.Nick("desk2", ref="n"))
    desk.expect(codec.Renamed, lambda r: r.ref == "n")
    tmux.until("desk is now known as desk2")
    tmux.type("said as annie")
    said = desk.expect(codec.MessagePacket, lambda m: m.text == "said as annie")
    assert said.sender == "annie"


def test_irssi_as_an_operator(history, irssi_home, chat_server, desk_in_general, terminal):
    """An admin in irssi: /oper, /notice, /whois, /who, /invite into an
    invite-only room, /mode +k and +m with /voice, each seen by a
    desktop-protocol member and shown by irssi as a real server's would be."""
    admin_account(history, "ann", SECRET)
    server = chat_server("--admin", "ann")
    desk = desk_in_general(server)
    tmux = terminal(irssi(irssi_home, server, SECRET))
    tmux.until("Welcome to")
    tmux.type(f"/oper ann {SECRET}")
    tmux.until("You are now an IRC operator")
    join_general(tmux, desk)

    tmux.type("/notice #general heads up")
    notice = desk.expect(codec.MessagePacket, lambda m: m.text == "heads up")
    assert (notice.sender, (notice.action or {}).get("op")) == ("ann", "notice")
    desk.send(codec.Say("a notice back", "n1", "general", notice=True))
    tmux.until("a notice back")

    tmux.type("/window 1")  # the status window: where irssi shows WHOIS and WHO
    tmux.type("/whois desk")
    tmux.until("End of WHOIS")
    tmux.type("/who #general")
    screen = tmux.until("End of /WHO")
    assert "H*@" in screen, screen  # ann: here, an IRC operator, a channel operator
    tmux.type("/window 2")

    tmux.type("/mode #general +k sesame")
    keyed = desk.expect(codec.MessagePacket, lambda m: (m.action or {}).get("op") == "mode")
    assert keyed.action["key"] == "sesame"
    tmux.type("/mode #general +m")
    desk.expect(codec.MessagePacket, lambda m: (m.action or {}).get("moderated") is True)
    desk.send(codec.Say("muted?", "m1", "general"))
    refused = desk.expect(codec.Error, lambda e: e.ref == "m1")
    assert refused.code == codec.ErrorCode.MODERATED
    tmux.type("/voice desk")
    desk.expect(codec.MessagePacket, lambda m: (m.action or {}).get("op") == "voice")
    desk.send(codec.Say("voiced now", "m2", "general"))
    desk.expect(codec.MessagePacket, lambda m: m.ref == "m2")
    tmux.until("voiced now")

    tmux.type("/join #den")
    tmux.until("#den")
    tmux.type("/mode #den +i")
    tmux.type("/invite desk #den")
    invited = desk.expect(codec.Invited)
    assert (invited.room, invited.by) == ("den", "ann")
    tmux.type("/window 1")  # irssi says 341 in the status window
    tmux.until("Inviting desk to #den")
    desk.send(codec.Join("den", ref="j"))
    assert desk.expect(codec.RoomState, lambda r: r.ref == "j").room == "den"
