"""A second real IRC client in the suite: Debian's WeeChat, driven in tmux
(tests/processes.py's Tmux) against a real server process, beside irssi.
WeeChat asks for every capability it knows (``capabilities = "*"``), so
this also shows a real client taking extended-join, away-notify,
userhost-in-names and the rest. Skipped, saying why, where weechat or
tmux is missing."""

from __future__ import annotations

import shutil

import pytest

from chatproto import codec
from tests.processes import join_general


@pytest.fixture
def weechat_home(tmp_path):
    missing = [tool for tool in ("weechat", "tmux") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"skipped: no {' or '.join(missing)} (apt-get install weechat-curses tmux)")
    home = tmp_path / "weechat"
    home.mkdir()
    return home


def weechat(home, port: int) -> str:
    """The command line: WeeChat with its own home, told at start to add
    the server and connect as ann, "Ann Tester"."""
    commands = ";".join(
        [
            f"/server add chat 127.0.0.1/{port} -notls",
            "/set irc.server.chat.nicks ann",
            "/set irc.server.chat.username ann",
            "/set irc.server.chat.realname Ann Tester",
            "/set irc.server.chat.capabilities *",
            # No pause between the lines it sends (WeeChat 3's options; 4 has one, anti_flood).
            "/set irc.server.chat.anti_flood_prio_high 0",
            "/set irc.server.chat.anti_flood_prio_low 0",
            "/set irc.server.chat.anti_flood 0",
            "/connect chat",
        ]
    )
    return f"weechat --dir {home} -r '{commands}'"


def test_weechat_joins_chats_and_asks_the_server(weechat_home, chat_server, desk_in_general, terminal):
    server = chat_server()
    desk = desk_in_general(server)
    tmux = terminal(weechat(weechat_home, server.irc_port), width=220)
    screen = tmux.until("Welcome to chat, ann")  # not WeeChat's own "Welcome to WeeChat!"
    assert "enabled: account-notify away-notify" in screen, screen
    join_general(tmux, desk, "ann (Ann Tester) (ann@chat) has joined #general")  # extended-join

    desk.send(codec.Say("héllo från tcp ☃", None, "general"))
    tmux.until("héllo från tcp ☃")
    tmux.type("grüße aus weechat ✓")
    said = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert (said.text, said.room) == ("grüße aus weechat ✓", "general")
    tmux.type("/notice #general a notice for all")
    noticed = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert noticed.text == "a notice for all"
    tmux.until("Notice -> #general: a notice for all")

    desk.send(codec.Away(True, "in a meeting", ref="a1"))
    desk.expect(codec.Done, lambda d: d.ref == "a1")
    tmux.type("/buffer 1")  # the server buffer: where WeeChat says whois, who and away
    tmux.type("/whois desk")
    tmux.until("[desk] (desk@chat): desk")
    tmux.until("in a meeting")
    tmux.type("/who #general")
    tmux.until("[#general] ann (ann@chat) H 0 (Ann Tester)")
    tmux.until("[#general] desk (desk@chat) G 0 (desk)")

    tmux.type("/away out for lunch")
    status = desk.expect(codec.Status, lambda s: s.nick == "ann")
    assert (status.room, status.away) == ("general", "out for lunch")
    tmux.until("You have been marked as being away")
    tmux.type("/away")
    back = desk.expect(codec.Status, lambda s: s.nick == "ann")
    assert back.away is None
    tmux.until("You are no longer marked as being away")

    tmux.type("/quit bye")
    left = desk.expect(codec.Left, lambda left: left.nick == "ann")
    assert (left.reason, left.message) == ("quit", "bye")
