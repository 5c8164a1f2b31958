"""A big room on the page, against a real server process (protocol 22):
5,000 members, the count, the member list paged to its last member in
folded-nick order as it scrolls, and Tab finding a member not listed yet."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatproto.rules import nick_key
from scripts.spawn import server_env

MEMBERS = 5000
#: The crowd's member that sorts last, and is found by completion before it is listed.
LAST = "Quentin"


@pytest.fixture
def server_args() -> tuple[str, ...]:
    """Rooms are big past 10 members; one address may bring the whole crowd."""
    room_for_all = str(MEMBERS + 100)
    return (
        *("--lazy-members", "10", "--max-per-address", room_for_all),
        *("--address-rate", "100000", "--address-burst", room_for_all),
    )


@pytest.fixture
def crowd(server):
    """MEMBERS - 1 members in ``big`` from a process of their own (the page is the last)."""
    argv = [sys.executable, "-m", "tests.crowd", str(server.port), "big", str(MEMBERS - 1), LAST]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=server_env(), text=True)
    try:
        ready = proc.stdout.readline().strip()  # bounded: the crowd gives up after its DEADLINE
        assert ready == f"ready {MEMBERS - 1}", ready
        yield
    finally:
        proc.stdin.close()
        proc.wait(30)


COUNT = "return document.getElementById('member-count').textContent"
LISTED = "return [...document.querySelectorAll('#member-list li[data-nick]')].map(li => li.dataset.nick)"


def test_a_big_room_counts_pages_to_its_last_member_and_completes(pages, crowd):
    from selenium.webdriver.common.keys import Keys

    page = pages()
    page.log_in("alice")
    page.say("/join big")
    page.wait(lambda: page.current_room() == "big", "big shown")
    page.wait(lambda: page.js(COUNT) == f"{MEMBERS} members", "the count")
    page.wait(lambda: page.js(LISTED), "the first page")
    assert LAST not in page.js(LISTED)

    box = page.find("#message-input")
    box.send_keys("hi que")
    box.send_keys(Keys.TAB)
    page.wait(lambda: box.get_attribute("value") == f"hi {LAST} ", "the completion")
    assert page.js("return document.activeElement.id") == "message-input", (
        "Tab completed instead of moving on"
    )
    assert LAST not in page.js(LISTED), "a completion is not a page of the list"
    box.clear()
    box.send_keys("m000")
    box.send_keys(Keys.TAB)
    page.wait(lambda: box.get_attribute("value") == "m0000: ", "the first of several")
    box.send_keys(Keys.TAB)
    page.wait(lambda: box.get_attribute("value") == "m0001: ", "Tab again: the next")
    box.clear()

    # Scroll the list to its end, a page at a time, until no page is left.
    for _ in range(MEMBERS // 200 + 10):
        if not page.all("#member-list .member-more"):
            break
        shown = len(page.js(LISTED))
        page.js("const pane = document.getElementById('members-pane'); pane.scrollTop = pane.scrollHeight")
        page.wait(
            lambda shown=shown: len(page.js(LISTED)) > shown or not page.all("#member-list .member-more"),
            "the next page",
        )
    listed = page.js(LISTED)
    expected = sorted(["alice", LAST, *(f"m{n:04d}" for n in range(MEMBERS - 2))], key=nick_key)
    assert len(listed) == MEMBERS and listed == expected
    assert listed[-1] == LAST
    assert page.js(COUNT) == f"{MEMBERS} members"


def test_a_room_that_turns_big_while_shown_keeps_its_count_and_list(pages, server):
    """Its first COUNT tells the page the room turned big (protocol 22.2):
    from then on its count comes in COUNT and its list by MEMBERS."""
    page = pages()
    page.log_in("alice")
    page.say("/join grow")
    page.wait(lambda: page.current_room() == "grow", "grow shown")
    page.wait(lambda: page.js(COUNT) == "1 member", "alone")
    joiners = 14  # the room is big past 10
    argv = [sys.executable, "-m", "tests.crowd", str(server.port), "grow", str(joiners), LAST]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=server_env(), text=True)
    try:
        assert proc.stdout.readline().strip() == f"ready {joiners}"
        page.wait(lambda: page.js(COUNT) == f"{joiners + 1} members", "the count of the big room")
        expected = sorted(["alice", LAST, *(f"m{n:04d}" for n in range(joiners - 1))], key=nick_key)
        page.wait(lambda: page.js(LISTED) == expected, "every member listed, in order")
    finally:
        proc.stdin.close()
        proc.wait(30)


def test_a_fully_listed_big_room_says_whom_it_misses_and_refreshes(pages, server):
    """Members who join a big room after its list reached its end come
    unfollowed (protocol 22.4): the list says how many it misses, and its
    Refresh lists the room again from the start, them included."""
    page = pages()
    page.log_in("alice")
    page.say("/join late")
    page.wait(lambda: page.current_room() == "late", "late shown")
    first, later = 14, ["Lou", "Zoe", "bea"]  # the room is big past 10
    argv = [sys.executable, "-m", "tests.crowd", str(server.port), "late", str(first)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "env": server_env(), "text": True}
    crowds = [subprocess.Popen(argv, **pipes)]
    try:
        assert crowds[0].stdout.readline().strip() == f"ready {first}"
        listed = sorted(["alice", *(f"m{n:04d}" for n in range(first))], key=nick_key)
        page.wait(lambda: page.js(LISTED) == listed, "every member listed")
        assert not page.all("#member-list .member-behind")
        argv = [sys.executable, "-m", "tests.crowd", str(server.port), "late", "0", *later]
        crowds.append(subprocess.Popen(argv, **pipes))
        assert crowds[1].stdout.readline().strip() == f"ready {len(later)}"
        page.wait(lambda: page.js(COUNT) == f"{first + 1 + len(later)} members", "the count")
        page.wait(lambda: page.all("#member-list .member-behind"), "the list says it is behind")
        behind = page.find("#member-list .member-behind")
        assert behind.text.startswith(f"{len(later)} more not listed"), behind.text
        assert page.js(LISTED) == listed, "joiners nobody followed are not listed on their own"
        behind.find_element("css selector", "button").click()
        everyone = sorted([*listed, *later], key=nick_key)
        page.wait(lambda: page.js(LISTED) == everyone, "listed again, the joiners in their places")
        assert not page.all("#member-list .member-behind")
    finally:
        for proc in crowds:
            proc.stdin.close()
            proc.wait(30)
