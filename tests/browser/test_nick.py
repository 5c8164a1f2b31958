"""Nick changes on the page (protocol 15.11): /nick renames a guest, and
RENAMED updates the member lists and the own nick. Real Chromium against a
real server process."""

from __future__ import annotations

from chatproto import codec
from tests.processes import TcpPeer


def members(page) -> list[str]:
    """Read in one script: the list may be redrawn between two element reads."""
    script = "return [...document.querySelectorAll('#member-list li')].map(li => li.dataset.nick ?? null)"
    return sorted(page.js(script), key=lambda nick: (nick is None, nick or ""))


def test_slash_nick_renames_the_user_and_others_see_it(pages, server):
    page = pages()
    page.log_in("ann")
    bob = TcpPeer(server.port, "bob")
    try:
        bob.send(codec.Join("general"))
        bob.expect(codec.RoomState)
        page.wait(lambda: members(page) == ["ann", "bob"], "bob in the member list")
        page.say("/nick annie")
        renamed = bob.expect(codec.Renamed)
        assert (renamed.old, renamed.nick) == ("ann", "annie")
        page.wait(lambda: members(page) == ["annie", "bob"], "the own nick in the member list")
        page.wait(lambda: "connected as annie" in page.find("#status").text, "the status line")
        assert page.find("#member-list li.me").get_attribute("data-nick") == "annie"
        bob.send(codec.Nick("bobby"))
        page.wait(lambda: members(page) == ["annie", "bobby"], "bob's new nick in the member list")
        assert "bob is now known as bobby" in page.lines("#transcript li.status")
        page.say("hello again")
        said = bob.expect(codec.MessagePacket, lambda m: m.text == "hello again")
        assert said.sender == "annie"
        page.say("/nick bobby")
        page.wait(lambda: any("is taken" in t for t in page.lines("#transcript li")), "the refusal said")
        assert members(page) == ["annie", "bobby"]
        page.here().refresh()  # the tab resumes its session by the new nick
        page.wait(lambda: page.state() == "connected", "back after the reload")
        page.wait(lambda: "connected as annie" in page.find("#status").text, "still annie")
        page.wait(lambda: members(page) == ["annie", "bobby"], "annie and bobby again")
        assert not page.errors()
    finally:
        bob.close()
