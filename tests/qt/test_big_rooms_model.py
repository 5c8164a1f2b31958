"""A big room's member tree and nick completion, fed packets by hand (no
server): pages in folded-nick order, JOINED and LEFT placed or not by
where the listing stands, the count, and Tab completion asking MEMBERS."""

from __future__ import annotations

from PyQt6.QtCore import QEvent, Qt
from PyQt6.QtGui import QKeyEvent
from PyQt6.QtWidgets import QApplication

from chatproto import codec
from qtclient.models import PeerModel
from qtclient.views.completion import NickCompleter
from qtclient.views.main_window import ChatInput


def big(count=5000, members=()) -> codec.RoomState:
    return codec.RoomState(
        "Big", "", [codec.Peer(i, n, op) for i, n, op in members], [], count=count, lazy=True
    )


def peers(*nicks: str, start: int = 100) -> list[codec.Peer]:
    return [codec.Peer(start + i, nick) for i, nick in enumerate(nicks)]


def model():
    asked: list[tuple[str, str | None]] = []

    def ask(room, after):
        asked.append((room, after))
        return f"m{len(asked)}"

    m = PeerModel(ask_members=ask)
    m.my_id = 1
    return m, asked


def test_pages_list_in_order_and_the_tree_asks_for_the_next():
    m, asked = model()
    m.room_state(big(members=[(1, "me", False), (2, "Boss", True)]))
    assert m.members("Big") == [], "the shown set is known, not listed out of order"
    assert m.room_item("Big").text() == "Big (5000 members)"
    assert m.is_op("Big", 2) and not m.is_op("Big", 1)
    m.fetch_first("Big")
    m.fetch_first("Big")
    assert asked == [("Big", None)], "one page under way at a time"
    index = m.room_item("Big").index()
    assert not m.canFetchMore(index)
    m.members_page("m1", codec.Members("Big", peers("adam", "Bea"), 5001, "bea", "m1"), None)
    assert m.members("Big") == ["adam", "Bea"]
    assert m.room_item("Big").text() == "Big (5001 members)"
    assert m.canFetchMore(index)
    m.fetchMore(index)
    assert asked[-1] == ("Big", "bea")
    m.members_page("m2", codec.Members("Big", peers("carl", start=200), 5001, None, "m2"), None)
    assert m.members("Big") == ["adam", "Bea", "carl"]
    assert not m.canFetchMore(index), "the last page came"


def test_joined_and_left_in_a_big_room_follow_the_listing():
    m, _asked = model()
    m.room_state(big())
    m.fetch_first("Big")
    m.members_page("m1", codec.Members("Big", peers("adam", "carl"), 5000, "carl", "m1"), None)
    m.joined(codec.Joined(7, "Bob", "Big"))
    m.joined(codec.Joined(8, "zed", "Big"))
    assert m.members("Big") == ["adam", "Bob", "carl"], "zed comes with a later page, in its place"
    m.left(codec.Left(7, "Bob", "quit", room="Big"))
    m.left(codec.Left(100, "adam", "quit", room="Big"))
    assert m.members("Big") == ["carl"]
    m.set_count("Big", 4998)
    assert m.room_item("Big").text() == "Big (4998 members)"
    m.members_page("x", codec.Members("Big", peers("zara", start=300), 4998, None, "x"), "za")
    assert m.members("Big") == ["carl"], "a completion's answer is not the next rows"
    assert "zara" in m.known_nicks("Big")


def test_a_small_room_is_listed_whole_and_counts_its_rows():
    m, asked = model()
    m.room_state(codec.RoomState("small", "", peers("ann", "bob"), [], count=2))
    m.fetch_first("small")
    assert asked == [] and m.members("small") == ["ann", "bob"]
    m.joined(codec.Joined(9, "cy", "small"))
    assert m.room_item("small").text() == "small (3 members)"
    assert not m.canFetchMore(m.room_item("small").index())


def test_a_small_room_lists_its_members_by_nick_as_they_come_go_and_rename():
    m, _asked = model()
    m.room_state(codec.RoomState("small", "", peers("bob", "Ann", "cy"), [], count=3))
    assert m.members("small") == ["Ann", "bob", "cy"]
    m.joined(codec.Joined(9, "abe", "small"))
    m.joined(codec.Joined(10, "Bo", "small"))
    assert m.members("small") == ["abe", "Ann", "Bo", "bob", "cy"]
    m.left(codec.Left(101, "Ann", "quit", room="small"))
    assert m.renamed("abe", "zed") == ["small"]
    assert m.members("small") == ["Bo", "bob", "cy", "zed"]


def test_a_room_that_turns_big_is_listed_again_a_page_at_a_time():
    m, asked = model()
    m.room_state(codec.RoomState("small", "", peers("bob", "ann"), [], count=2))
    m.set_count("small", 2)
    assert not m.is_lazy("small"), "a small room's count changing is no news"
    m.turn_big("small", 12)
    assert m.is_lazy("small"), "its first COUNT says it turned big (docs/protocol.md 22.2)"
    assert m.room_item("small").text() == "small (12 members)"
    assert asked == [("small", None)] and m.members("small") == []
    m.members_page("m1", codec.Members("small", peers("ann", "bob", "cy"), 12, "cy", "m1"), None)
    assert m.members("small") == ["ann", "bob", "cy"]


def test_a_fully_listed_room_says_whom_it_misses_and_lists_again_on_refresh():
    m, asked = model()
    m.room_state(big(count=3))
    m.fetch_first("Big")
    m.members_page("m1", codec.Members("Big", peers("adam", "Bea", "me"), 3, None, "m1"), None)
    assert m.room_item("Big").text() == "Big (3 members)"
    m.set_count("Big", 5)  # two joined whom nobody follows (docs/protocol.md 22.4)
    assert m.room_item("Big").text() == "Big (5 members, 3 listed)"
    assert m.room_item("Big").toolTip() == "Big (5 members, 3 listed)\nRight-click: Refresh member list"
    assert m.relist("Big")
    assert asked[-1] == ("Big", None) and m.members("Big") == []
    assert not m.relist("Big"), "one page under way at a time"
    m.members_page("m2", codec.Members("Big", peers("adam", "Bea", "cy", "me", "Zed"), 5, None, "m2"), None)
    assert m.members("Big") == ["adam", "Bea", "cy", "me", "Zed"]
    assert m.room_item("Big").text() == "Big (5 members)"


def test_a_followed_join_or_leave_moves_the_count_before_its_count_comes():
    m, _asked = model()
    m.room_state(big(count=3))
    m.fetch_first("Big")
    m.members_page("m1", codec.Members("Big", peers("adam", "Bea", "me"), 3, None, "m1"), None)
    m.joined(codec.Joined(7, "Bob", "Big"))
    assert m.room_item("Big").text() == "Big (4 members)", "not behind while its COUNT is on its way"
    m.left(codec.Left(100, "adam", "quit", room="Big"))
    assert m.room_item("Big").text() == "Big (3 members)"
    m.set_count("Big", 3)
    assert m.members("Big") == ["Bea", "Bob", "me"]


def test_offline_a_big_room_is_not_behind_and_refresh_keeps_its_rows():
    online = [True]

    def ask(room, after):
        return "m1" if online[0] else None

    m = PeerModel(ask_members=ask)
    m.my_id = 1
    m.room_state(big(count=3))
    m.fetch_first("Big")
    m.members_page("m1", codec.Members("Big", peers("adam", "Bea", "me"), 3, None, "m1"), None)
    m.set_count("Big", 5)
    online[0] = False
    assert not m.relist("Big"), "offline: nothing to ask"
    assert m.members("Big") == ["adam", "Bea", "me"]
    m.clear_members()
    assert m.room_item("Big").text() == "Big (5 members)", "disconnected: listed again from its next ROOM"


def tab(widget) -> None:
    event = QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Tab, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def test_tab_completes_locally_in_a_small_room_and_asks_in_a_big_one(qtbot):
    m, _asked = model()
    m.room_state(codec.RoomState("small", "", peers("Anna", "andy", "bob"), [], count=3))
    m.room_state(big())
    asked: list[tuple[str, str, int]] = []
    room = ["small"]
    line = ChatInput()
    qtbot.addWidget(line)
    completer = NickCompleter(line, m, lambda: room[0], lambda r, p, n: asked.append((r, p, n)) or "c1")
    line.complete = completer.complete
    line.setPlainText("an")
    line.moveCursor(line.textCursor().MoveOperation.End)
    tab(line)
    assert line.toPlainText() == "andy: "
    tab(line)
    assert line.toPlainText() == "Anna: ", "Tab again: the next candidate"
    room[0] = "Big"
    line.setPlainText("hi zo")
    line.moveCursor(line.textCursor().MoveOperation.End)
    tab(line)
    assert asked == [("Big", "zo", 20)] and line.toPlainText() == "hi zo"
    completer.answered("c1", codec.Members("Big", peers("Zoë", "zoltan"), 5000, "zoltan", "c1"))
    assert line.toPlainText() == "hi Zoë "
    tab(line)
    assert line.toPlainText() == "hi zoltan "
