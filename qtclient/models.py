"""Qt item models: who is here, and what was said. No sockets, no widgets."""

from __future__ import annotations

import bisect
import dataclasses
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from PyQt6.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer
from PyQt6.QtGui import QBrush, QColor, QFont, QStandardItem, QStandardItemModel

from chatproto import codec
from chatproto.codec import ACTION_PREFIX
from chatproto.rules import nick_key, room_key
from qtclient.transfers import size_words

_ROOT = QModelIndex()
ID_ROLE = Qt.ItemDataRole.UserRole + 1
NICK_ROLE = Qt.ItemDataRole.UserRole + 2
ROOM_ROLE = Qt.ItemDataRole.UserRole + 3
OP_ROLE = Qt.ItemDataRole.UserRole + 4
#: The text column as rich text: escaped, line breaks kept, URLs as links.
HTML_ROLE = Qt.ItemDataRole.UserRole + 5
#: Whether the row is more than its text on one line (a quote, reactions, a
#: day's heading, formatting): its height needs a layout.
RICH_ROLE = Qt.ItemDataRole.UserRole + 6
#: The member's away message ("" for none), None when present.
AWAY_ROLE = Qt.ItemDataRole.UserRole + 7
#: A room's kind ("direct" for a direct conversation).
KIND_ROLE = Qt.ItemDataRole.UserRole + 8
#: Whether the row opens its day (a heading above its text).
HEADING_ROLE = Qt.ItemDataRole.UserRole + 9
#: Whether a member is voiced: may speak in a moderated room (shown "+nick").
VOICE_ROLE = Qt.ItemDataRole.UserRole + 10
TEXT_COLUMN = 2
#: Messages by one author this close together share the author's name.
GROUP_SECONDS = 5 * 60


def nick_colour(nick: str) -> QColor:
    """The same colour for a nick everywhere and every time (a hash, not a
    table), dark enough to read on white."""
    hue = zlib.crc32(nick_key(nick).encode("utf-8")) % 360
    return QColor.fromHsv(hue, 200, 150)


def direct_title(name: str, own_nick: str | None) -> str:
    """A direct conversation as people name it: its other participants."""
    names = [part for part in name.lstrip("@").split("+") if part]
    others = [n for n in names if own_nick is None or nick_key(n) != nick_key(own_nick)]
    return ", ".join(others or names)


#: Members of a big room the client knows of besides the rows it lists (ROOM's
#: shown set, JOINED of someone followed, completion answers), most recent
#: kept: the server follows at most follow_limit nicks per room for us anyway,
#: so what is older than that would no longer be kept up to date.
KNOWN_CACHE = 500


def members_words(count: int) -> str:
    return f"{count} member" if count == 1 else f"{count} members"


class _RoomBranch:
    """A room in the tree: its item, its members' items by id, its unread count.

    Every room lists its members in folded-nick order (``keys`` holds the
    rows' keys in that order); a big room (docs/protocol.md 22) a page at a
    time as the view scrolls: ``after`` is where the next page starts,
    ``known`` the bounded cache of members met otherwise."""

    __slots__ = (
        "after",
        "complete",
        "count",
        "fetching",
        "item",
        "keys",
        "kind",
        "known",
        "lazy",
        "members",
        "mentioned",
        "name",
        "title",
        "unread",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind: str | None = None
        self.title = name  # what the tree shows: a direct conversation's other participants
        self.item = QStandardItem()
        self.item.setEditable(False)
        self.item.setData(room_key(name), ROOM_ROLE)
        self.members: dict[int, QStandardItem] = {}
        self.unread = 0
        self.mentioned = False
        self.count = 0
        self.lazy = False
        self.keys: list[str] = []  # the rows' folded nicks, in their (nick) order
        self.after: str | None = None  # the next page starts after this key
        self.complete = True  # a big room: every member listed (the last page came)
        self.fetching: str | None = None  # the ref of the page under way
        self.known: OrderedDict[int, codec.Peer] = OrderedDict()

    def remember(self, peer: codec.Peer) -> None:
        self.known[peer.id] = peer
        self.known.move_to_end(peer.id)
        while len(self.known) > KNOWN_CACHE:
            self.known.popitem(last=False)

    def clear_rows(self) -> None:
        """No member listed (its known cache stays)."""
        self.item.removeRows(0, self.item.rowCount())
        self.members.clear()
        self.keys.clear()

    @property
    def behind(self) -> bool:
        """A big room listed to its end whose count says otherwise: members
        who joined since, unfollowed, have no row (docs/protocol.md 22.4)."""
        return self.lazy and self.complete and self.fetching is None and len(self.keys) != self.count

    def listed(self, key: str) -> bool:
        """Whether a member with this key belongs among the rows listed so far."""
        return self.complete or (self.after is not None and key <= nick_key(self.after))


class PeerModel(QStandardItemModel):
    """The left tree: the server-wide Pending branch (connection ids), then
    each room the user is in, with its members under it.

    Each branch keeps its items by id, so a JOINED or LEFT costs the same in
    a room of 10 or 10,000, and a ROOM inserts all its members in one call.
    """

    def __init__(
        self, parent=None, ask_members: Callable[[str, str | None], str | None] | None = None
    ) -> None:
        super().__init__(parent)
        #: MEMBERS for a big room's next page: (room, after) -> its ref, None if offline.
        self.ask_members = ask_members
        self.pending_branch = QStandardItem()
        self.pending_branch.setEditable(False)
        self.pending_branch.setSelectable(False)
        self.appendRow(self.pending_branch)
        self._pending: dict[int, QStandardItem] = {}
        self.rooms: dict[str, _RoomBranch] = {}  # by room key
        self.my_id: int | None = None
        self.own_nick: str | None = None
        self._relabel_pending()

    # -- labels --------------------------------------------------------------------

    def _relabel_pending(self) -> None:
        self.pending_branch.setText(f"Pending ({self.pending_branch.rowCount()})")

    def _relabel(self, branch: _RoomBranch) -> None:
        if branch.kind == "direct":
            text = f"✉ {branch.title}"
        else:
            text = f"{branch.name} ({members_words(branch.count if branch.lazy else len(branch.members))}"
            text += f", {len(branch.keys)} listed)" if branch.behind else ")"
        if branch.unread:
            text += f" — {branch.unread} unread"
        branch.item.setText(text)
        # The whole label, for a pane too narrow to show it, and what to do about a late list.
        if branch.kind == "direct":
            branch.item.setToolTip(f"direct conversation with {branch.title}")
        else:
            branch.item.setToolTip(f"{text}\nRight-click: Refresh member list" if branch.behind else text)
        font = QFont()
        font.setBold(branch.unread > 0)
        branch.item.setFont(font)
        branch.item.setForeground(QBrush(QColor("#c62828") if branch.mentioned else QColor("#000000")))

    def _member_item(
        self, id: int, nick: str, op: bool = False, away: str | None = None, voice: bool = False
    ) -> QStandardItem:
        mine = id == self.my_id
        shown = ("@" if op else "+" if voice else "") + nick  # the higher mark, as IRC shows it
        item = QStandardItem(f"{shown} (you)" if mine else shown)
        item.setData(bool(op), OP_ROLE)
        item.setData(bool(voice), VOICE_ROLE)
        item.setEditable(False)
        item.setData(id, ID_ROLE)
        item.setData(nick, NICK_ROLE)
        item.setData(away, AWAY_ROLE)
        if away is None:
            item.setForeground(QBrush(nick_colour(nick)))
        else:  # away: dimmed, the message in the tooltip
            item.setForeground(QBrush(QColor("#9e9e9e")))
            item.setToolTip(f"{nick} is away" + (f": {away}" if away else ""))
        font = QFont()
        font.setBold(mine)
        font.setItalic(away is not None)
        item.setFont(font)
        return item

    def set_away(self, room: str, nick: str, away: str | None) -> None:
        """A member went away (``away`` its message) or came back (None)."""
        branch = self.rooms.get(room_key(room))
        if branch is None:
            return
        for id, item in list(branch.members.items()):
            if nick_key(item.data(NICK_ROLE)) == nick_key(nick) and item.data(AWAY_ROLE) != away:
                fresh = self._member_item(
                    id, item.data(NICK_ROLE), bool(item.data(OP_ROLE)), away, bool(item.data(VOICE_ROLE))
                )
                branch.members[id] = fresh
                branch.item.setChild(item.row(), fresh)

    def renamed(self, old: str, nick: str) -> list[str]:
        """A member took another nick: shown by it in every room it is in
        (its id, operator status and away kept); the rooms it was in."""
        rooms = []
        for branch in self.rooms.values():
            for id, peer in list(branch.known.items()):
                if nick_key(peer.nick) == nick_key(old):
                    branch.known[id] = dataclasses.replace(peer, nick=nick)
            for id, item in list(branch.members.items()):
                if nick_key(item.data(NICK_ROLE)) == nick_key(old):
                    fresh = self._member_item(
                        id, nick, bool(item.data(OP_ROLE)), item.data(AWAY_ROLE), bool(item.data(VOICE_ROLE))
                    )
                    row = item.row()  # its row moves to its new place in the order, if listed there
                    del branch.keys[row]
                    branch.item.removeRow(row)
                    del branch.members[id]
                    if branch.listed(nick_key(nick)):
                        self._insert_sorted(branch, fresh)
                    rooms.append(branch.name)
        if self.own_nick is not None and nick_key(self.own_nick) == nick_key(old):
            self.own_nick = nick
        return rooms

    def away(self, room: str, nick: str) -> str | None:
        branch = self.rooms.get(room_key(room))
        for item in branch.members.values() if branch is not None else ():
            if nick_key(item.data(NICK_ROLE)) == nick_key(nick):
                return item.data(AWAY_ROLE)
        return None

    def title(self, room: str) -> str:
        branch = self.rooms.get(room_key(room))
        return branch.title if branch is not None else room

    def kind(self, room: str) -> str | None:
        branch = self.rooms.get(room_key(room))
        return branch.kind if branch is not None else None

    def _pending_item(self, id: int) -> QStandardItem:
        item = QStandardItem(f"#{id}")
        item.setEditable(False)
        item.setData(id, ID_ROLE)
        return item

    # -- what the window feeds in ---------------------------------------------------

    def welcome(self, welcome: codec.Welcome) -> None:
        """A new login: pending from WELCOME; rooms come with their ROOMs."""
        self.my_id = welcome.id
        self.clear_members()
        self._add_pending(welcome.pending)

    def clear_members(self) -> None:
        """Offline, or a new login: nobody is known to be anywhere until the
        server says so again."""
        self.pending_branch.removeRows(0, self.pending_branch.rowCount())
        self._pending.clear()
        self._relabel_pending()
        for branch in self.rooms.values():
            branch.clear_rows()
            branch.known.clear()
            # A big room is listed again from its next ROOM: never "behind" meanwhile.
            branch.after, branch.complete, branch.fetching = None, not branch.lazy, None
            self._relabel(branch)

    def room_state(self, state: codec.RoomState) -> QStandardItem:
        """A room joined (or its state again): its members replace what was shown."""
        branch = self.rooms.get(room_key(state.room))
        if branch is None:
            branch = self.rooms[room_key(state.room)] = _RoomBranch(state.room)
            self.appendRow(branch.item)
        branch.kind = state.kind
        branch.item.setData(state.kind, KIND_ROLE)
        if state.kind == "direct":
            branch.title = direct_title(state.room, self.own_nick)
        branch.clear_rows()
        branch.known.clear()
        branch.lazy = bool(state.lazy)
        branch.count = state.count if state.count is not None else len(state.members)
        branch.after, branch.complete, branch.fetching = None, not branch.lazy, None
        if branch.lazy:  # the shown members are known; the rows come a page at a time, in order
            for peer in state.members:
                branch.remember(peer)
            self._relabel(branch)
            return branch.item
        items = []
        for peer in sorted(state.members, key=lambda peer: nick_key(peer.nick)):  # by nick, as a big room
            if peer.id not in branch.members:
                item = self._member_item(peer.id, peer.nick, bool(peer.op), peer.away, bool(peer.voice))
                branch.members[peer.id] = item
                branch.keys.append(nick_key(peer.nick))
                items.append(item)
        if items:
            branch.item.appendRows(items)
        self._relabel(branch)
        return branch.item

    def set_op(self, room: str, nick: str, op: bool) -> None:
        """A member's operator status changed (a MESSAGE with an op or deop action)."""
        self._set_status(room, nick, op=op)

    def set_voice(self, room: str, nick: str, voice: bool) -> None:
        """A member's voice changed (a MESSAGE with a voice or devoice action)."""
        self._set_status(room, nick, voice=voice)

    def _set_status(self, room: str, nick: str, op: bool | None = None, voice: bool | None = None) -> None:
        branch = self.rooms.get(room_key(room))
        if branch is None:
            return
        for id, peer in list(branch.known.items()):
            if nick_key(peer.nick) == nick_key(nick):
                branch.known[id] = dataclasses.replace(
                    peer, op=peer.op if op is None else op, voice=peer.voice if voice is None else voice
                )
        for id, item in branch.members.items():
            if room_key(item.data(NICK_ROLE)) == room_key(nick):
                fresh = self._member_item(
                    id,
                    item.data(NICK_ROLE),
                    bool(item.data(OP_ROLE)) if op is None else op,
                    item.data(AWAY_ROLE),
                    bool(item.data(VOICE_ROLE)) if voice is None else voice,
                )
                branch.members[id] = fresh
                branch.item.setChild(item.row(), fresh)

    def is_op(self, room: str, id: int | None) -> bool:
        branch = self.rooms.get(room_key(room))
        if branch is None:
            return False
        item = branch.members.get(id) if id is not None else None
        if item is not None:
            return bool(item.data(OP_ROLE))
        peer = branch.known.get(id) if id is not None else None  # a big room's member not listed
        return bool(peer is not None and peer.op)

    def room_gone(self, room: str) -> None:
        branch = self.rooms.pop(room_key(room), None)
        if branch is not None:
            self.removeRow(branch.item.row())

    def joined(self, joined: codec.Joined) -> None:
        self.pending(codec.Pending(joined.id, "gone"))
        branch = self.rooms.get(room_key(joined.room)) if joined.room else None
        if branch is not None and branch.lazy:
            branch.remember(codec.Peer(joined.id, joined.nick, joined.op, joined.away, joined.voice))
            if joined.id not in branch.members:
                branch.count += 1  # its COUNT may come later: it says the same or corrects this
                if branch.listed(nick_key(joined.nick)):
                    item = self._member_item(
                        joined.id, joined.nick, bool(joined.op), joined.away, bool(joined.voice)
                    )
                    self._insert_sorted(branch, item)
                self._relabel(branch)
        elif branch is not None and joined.id not in branch.members:
            item = self._member_item(joined.id, joined.nick, bool(joined.op), joined.away, bool(joined.voice))
            self._insert_sorted(branch, item)
            self._relabel(branch)

    def left(self, left: codec.Left) -> None:
        branch = self.rooms.get(room_key(left.room)) if left.room else None
        if branch is not None:
            branch.known.pop(left.id, None)
            item = branch.members.pop(left.id, None)
            if item is not None:
                row = item.row()
                del branch.keys[row]
                branch.item.removeRow(row)
                if branch.lazy:
                    branch.count -= 1  # as a JOINED's
                self._relabel(branch)

    # -- big rooms: a page at a time (docs/protocol.md 22) --------------------------------

    def _insert_sorted(self, branch: _RoomBranch, item: QStandardItem) -> None:
        key = nick_key(item.data(NICK_ROLE))
        row = bisect.bisect_left(branch.keys, key)
        branch.keys.insert(row, key)
        branch.members[item.data(ID_ROLE)] = item
        branch.item.insertRow(row, item)

    def _branch_at(self, parent: QModelIndex) -> _RoomBranch | None:
        key = parent.data(ROOM_ROLE) if parent.isValid() else None
        return self.rooms.get(key) if key else None

    def canFetchMore(self, parent: QModelIndex) -> bool:
        branch = self._branch_at(parent)
        if branch is None:
            return super().canFetchMore(parent)
        return (
            branch.lazy and not branch.complete and branch.fetching is None and self.ask_members is not None
        )

    def fetchMore(self, parent: QModelIndex) -> None:
        branch = self._branch_at(parent)
        if branch is None:
            super().fetchMore(parent)
        elif self.canFetchMore(parent) and self.ask_members is not None:
            branch.fetching = self.ask_members(branch.name, branch.after)

    def fetch_first(self, room: str) -> None:
        """A big room's first page, asked at once: the tree shows its start."""
        branch = self.rooms.get(room_key(room))
        if branch is not None and branch.lazy and not branch.keys:
            self.fetchMore(branch.item.index())

    def members_page(self, ref: str, page: codec.Members, prefix: str | None) -> None:
        """MEMBERS answered: the next rows of the page the tree asked for, in
        order; a completion's members are remembered only."""
        branch = self.rooms.get(room_key(page.room))
        if branch is None or not branch.lazy:
            return
        branch.count = page.count
        for peer in page.members:
            branch.remember(peer)
        if ref != branch.fetching:  # a completion's, or FOLLOW's: not the next rows
            self._relabel(branch)
            return
        branch.fetching = None
        items = []
        for peer in page.members:
            key = nick_key(peer.nick)
            if peer.id in branch.members or (branch.keys and key <= branch.keys[-1]):
                continue  # listed already (a JOINED placed it)
            item = self._member_item(peer.id, peer.nick, bool(peer.op), peer.away, bool(peer.voice))
            branch.members[peer.id] = item
            branch.keys.append(key)
            items.append(item)
        if items:
            branch.item.appendRows(items)
        branch.after = page.next
        branch.complete = page.next is None
        self._relabel(branch)

    def members_failed(self, ref: str) -> None:
        for branch in self.rooms.values():
            if branch.fetching == ref:
                branch.fetching = None  # asked again when the view next wants more

    def set_count(self, room: str, count: int) -> None:
        branch = self.rooms.get(room_key(room))
        if branch is not None and branch.lazy and branch.count != count:
            branch.count = count
            self._relabel(branch)

    def relist(self, room: str) -> bool:
        """A big room's rows again from its first page (the room's Refresh
        member list); False if it is no big room or a page is under way."""
        branch = self.rooms.get(room_key(room))
        if branch is None or not branch.lazy or branch.fetching is not None or self.ask_members is None:
            return False
        ref = self.ask_members(branch.name, None)
        if ref is None:
            return False  # offline: the rows stay as they were
        branch.clear_rows()
        branch.after, branch.complete, branch.fetching = None, False, ref
        self._relabel(branch)
        return True

    def turn_big(self, room: str, count: int) -> None:
        """The room went over the server's lazy_members while we were in it
        (its first COUNT says so, docs/protocol.md 22.2): its rows are listed
        again a page at a time in nick order, as a big room's ROOM starts."""
        branch = self.rooms.get(room_key(room))
        if branch is None or branch.lazy:
            return
        branch.clear_rows()
        branch.lazy, branch.count = True, count
        branch.after, branch.complete, branch.fetching = None, False, None
        self._relabel(branch)
        self.fetch_first(branch.name)

    def count(self, room: str) -> int:
        branch = self.rooms.get(room_key(room))
        if branch is None:
            return 0
        return branch.count if branch.lazy else len(branch.members)

    def fully_listed(self, room: str) -> bool:
        """Whether every member of the room is in the tree (a big room's last page came)."""
        branch = self.rooms.get(room_key(room))
        return branch is not None and branch.complete

    def is_lazy(self, room: str) -> bool:
        branch = self.rooms.get(room_key(room))
        return branch is not None and branch.lazy

    def known_nicks(self, room: str) -> list[str]:
        """The nicks of a room's listed rows and of its cache."""
        branch = self.rooms.get(room_key(room))
        if branch is None:
            return []
        nicks = {nick_key(p.nick): p.nick for p in branch.known.values()}
        nicks.update(
            (nick_key(item.data(NICK_ROLE)), item.data(NICK_ROLE)) for item in branch.members.values()
        )
        return list(nicks.values())

    def pending(self, pending: codec.Pending) -> None:
        if pending.state == "connecting":
            self._add_pending([pending.id])
        else:
            item = self._pending.pop(pending.id, None)
            if item is not None:
                self.pending_branch.removeRow(item.row())
                self._relabel_pending()

    def _add_pending(self, ids) -> None:
        fresh = []
        for id in ids:
            if id not in self._pending:
                self._pending[id] = item = self._pending_item(id)
                fresh.append(item)
        if fresh:
            self.pending_branch.appendRows(fresh)
        self._relabel_pending()

    def set_unread(self, room: str, unread: int, mentioned: bool) -> None:
        branch = self.rooms.get(room_key(room))
        if branch is not None and (branch.unread, branch.mentioned) != (unread, mentioned):
            branch.unread, branch.mentioned = unread, mentioned
            self._relabel(branch)

    # -- views for the window and tests ------------------------------------------------

    def room_item(self, room: str) -> QStandardItem | None:
        branch = self.rooms.get(room_key(room))
        return branch.item if branch is not None else None

    def unread(self, room: str) -> tuple[int, bool]:
        branch = self.rooms[room_key(room)]
        return branch.unread, branch.mentioned

    def room_names(self) -> list[str]:
        return [branch.name for branch in self.rooms.values()]

    def members(self, room: str) -> list[str]:
        branch = self.rooms.get(room_key(room))
        if branch is None:
            return []
        return [branch.item.child(row).data(NICK_ROLE) for row in range(branch.item.rowCount())]

    def connected_nicks(self) -> list[str]:
        """Everyone in any of the user's rooms, once each."""
        seen: dict[str, None] = {}
        for branch in self.rooms.values():
            for item in branch.members.values():
                seen.setdefault(item.data(NICK_ROLE), None)
        return list(seen)

    def pending_ids(self) -> list[int]:
        branch = self.pending_branch
        return [branch.child(row).data(ID_ROLE) for row in range(branch.rowCount())]


# -- transcript ----------------------------------------------------------------

MESSAGE, PRIVATE, SYSTEM, OWN, ACTION = "message", "private", "system", "own", "action"
SENDING, CONFIRMED, FAILED = "sending", "confirmed", "failed"


_URL = re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")


def mentions(text: str, nick: str | None) -> bool:
    """Whether ``text`` names ``nick`` as a word, in any case."""
    if not nick:
        return False
    return re.search(rf"(?<![\w-]){re.escape(nick)}(?![\w-])", text, re.IGNORECASE) is not None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def to_html(text: str) -> str:
    """``text`` as rich text: escaped, every URL a link (and only the URL),
    line breaks and runs of spaces kept."""
    parts, end = [], 0
    for match in _URL.finditer(text):
        parts.append(_escape(text[end : match.start()]))
        url = _escape(match.group())
        parts.append(f'<a href="{url}">{url}</a>')
        end = match.end()
    parts.append(_escape(text[end:]))
    return "".join(parts).replace("\n", "<br>").replace("  ", "&nbsp; ")


def _linked(text: str) -> str:
    """Escaped, URLs as links, **bold** and *italic* outside them."""
    parts, end = [], 0
    for match in _URL.finditer(text):
        parts.append(_emphasis(_escape(text[end : match.start()])))
        url = _escape(match.group())
        parts.append(f'<a href="{url}">{url}</a>')
        end = match.end()
    parts.append(_emphasis(_escape(text[end:])))
    return "".join(parts)


_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_CODE = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"```(?:[\w+-]*\n)?(.*?)```", re.DOTALL)
CODE_STYLE = "background-color:#eeeeee; font-family:monospace;"


def _emphasis(escaped: str) -> str:
    escaped = _BOLD.sub(r"<b>\1</b>", escaped)
    return _ITALIC.sub(r"<i>\1</i>", escaped)


def _inline(line: str) -> str:
    """One line: `code` verbatim, the rest linked and emphasised."""
    parts, end = [], 0
    for match in _CODE.finditer(line):
        parts.append(_linked(line[end : match.start()]))
        parts.append(f'<code style="{CODE_STYLE}">{_escape(match.group(1))}</code>')
        end = match.end()
    parts.append(_linked(line[end:]))
    return "".join(parts).replace("  ", "&nbsp; ")


def _blocks(text: str) -> str:
    """Lines outside code blocks: each run of ``> `` lines a quote."""
    items: list[str] = []
    quoted: list[str] = []
    for line in text.split("\n"):
        if line.startswith(">"):
            quoted.append(_inline(line[1:].removeprefix(" ")))
            continue
        if quoted:
            items.append(_quote(quoted))
            quoted = []
        items.append(_inline(line))
    if quoted:
        items.append(_quote(quoted))
    return "<br>".join(items)


def _quote(lines: list[str]) -> str:
    return '<span style="color:#555555">' + "<br>".join(f"▎ {line}" for line in lines) + "</span>"


def format_html(text: str) -> str:
    """A message's text as rich text, safely: everything escaped (no HTML of
    the sender's), URLs as links, **bold**, *italic*, `code`, ```code
    blocks``` and ``> `` quotes."""
    parts, end = [], 0
    for match in _FENCE.finditer(text):
        before = text[end : match.start()]
        if before.endswith("\n"):
            before = before[:-1]
        if before:
            parts.append(_blocks(before))
        code = _escape(match.group(1).strip("\n")).replace("\n", "<br>").replace(" ", "&nbsp;")
        parts.append(f'<table width="100%" style="{CODE_STYLE}"><tr><td>{code}</td></tr></table>')
        end = match.end()
        if text[end : end + 1] == "\n":
            end += 1
    rest = text[end:]
    if rest or not parts:
        parts.append(_blocks(rest))
    return "".join(parts)


def is_plain(text: str) -> bool:
    """Whether ``text`` renders as itself (no formatting to lay out)."""
    return not any(mark in text for mark in ("*", "`", "\n")) and not text.startswith(">")


#: A thumbnail shown inline is at most this many pixels wide or high.
THUMB_SIDE = 240
#: The media types shown inline as images (20.4: never SVG or HTML).
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def shown_inline(file: codec.File) -> bool:
    """Whether ``file`` is an image shown in the transcript (its thumbnail)."""
    return bool(file.thumb) and file.type in INLINE_TYPES


def thumb_size(file: codec.File) -> tuple[int, int]:
    """The inline picture's size: the image's, scaled to fit THUMB_SIDE, so
    the row's height is known before the thumbnail arrives."""
    width, height = file.width or THUMB_SIDE, file.height or THUMB_SIDE
    scale = min(1.0, THUMB_SIDE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


DOWNLOAD_STYLE = "background-color:#1a55c0; color:#ffffff; text-decoration:none"


def files_html(files: tuple[codec.File, ...]) -> str:
    """Images as their thumbnails (a click opens the image), other files as
    a card: name, size and a Download link (``file:`` and ``image:`` anchors
    carry the file's index)."""
    parts = []
    for number, file in enumerate(files):
        if shown_inline(file):
            width, height = thumb_size(file)
            parts.append(
                f'<br><a href="image:{number}"><img src="thumb:{_escape(file.id)}" '
                f'width="{width}" height="{height}" alt="{_escape(file.name)}"></a>'
            )
        else:
            parts.append(
                '<br><table cellpadding="6" style="background-color:#f1f3f6; border:1px solid #d0d4da">'
                f'<tr><td>📄 <b>{_escape(file.name)}</b><br><span style="color:#555555">'
                f"{size_words(file.size)} · {_escape(file.type)}</span></td>"
                f'<td valign="middle"><a href="file:{number}" style="{DOWNLOAD_STYLE}">'
                "&nbsp;Download&nbsp;</a></td></tr></table>"
            )
    return "".join(parts)


def day_words(ts: float) -> str:
    return time.strftime("%A %d %B %Y", time.localtime(ts))


def quote_of(message) -> codec.Quote:
    """The quote a reply to ``message`` shows, from its present state."""
    if message.deleted:
        return codec.Quote(message.seq, deleted=True)
    return codec.Quote(message.seq, message.sender, message.text[:100])


@dataclass
class Line:
    kind: str
    ts: float
    nick: str
    text: str
    seq: int | None = None
    ref: str | None = None
    state: str = CONFIRMED
    why: str = ""
    mention: bool = False
    sender: str = ""  # who said it (``nick`` may be "*" for an action)
    reply: codec.Quote | None = None
    edited: float | None = None
    deleted: bool = False
    deleted_by: str | None = None
    reactions: tuple[codec.Reaction, ...] = ()
    rev: int = 0
    record: bool = False  # a moderation record: nobody's to edit
    files: tuple[codec.File, ...] = ()  # what the message carries (section 20)


class TranscriptModel(QAbstractTableModel):
    """Time, nick, text; ordered by ``seq`` and capped.

    Incoming lines are buffered and inserted in one batch per ``batch_ms``,
    so a busy room costs one view update per batch, not per message
    (``batch_ms=0`` inserts each line at once). Lines
    older than ``max_lines`` are dropped from the top; HISTORY brings them back.
    """

    COLUMNS = ("Time", "Nick", "Text")

    def __init__(self, parent=None, max_lines: int = 10_000, batch_ms: int = 50) -> None:
        super().__init__(parent)
        self.max_lines = max_lines
        self.own_nick: str | None = None  # whose mentions are highlighted
        self.lines: list[Line] = []
        self._seqs: set[int] = set()
        self._max_seq = 0
        self._by_ref: dict[str, Line] = {}
        self._incoming: list[Line] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(batch_ms)
        self._timer.timeout.connect(self.flush)

    # Qt model API

    def rowCount(self, parent=_ROOT) -> int:
        return 0 if parent.isValid() else len(self.lines)

    def columnCount(self, parent=_ROOT) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        line = self.lines[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 0:
                return time.strftime("%H:%M:%S", time.localtime(line.ts))
            if column == 1:
                return "" if self.continues(index.row()) else line.nick
            if line.deleted:
                return self._deleted_words(line)
            return line.text + self._status(line)
        if role == HTML_ROLE and column == TEXT_COLUMN:
            return self._html(index.row(), line)
        if role == RICH_ROLE:
            return bool(
                line.reply
                or line.reactions
                or line.files
                or self.day_starts(index.row())
                or not is_plain(line.text)
            )
        if role == HEADING_ROLE:
            return self.day_starts(index.row())
        if role == Qt.ItemDataRole.TextAlignmentRole and column < TEXT_COLUMN:
            return Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop
        if role == Qt.ItemDataRole.ToolTipRole and column == 0:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line.ts))
        if role == Qt.ItemDataRole.ToolTipRole and column == TEXT_COLUMN and line.edited:
            return "edited " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line.edited))
        if role == Qt.ItemDataRole.ForegroundRole:
            if line.state == FAILED:
                return QBrush(QColor("#b00020"))
            if line.kind == SYSTEM or line.state == SENDING:
                return QBrush(QColor("#777777"))
            if line.kind == PRIVATE:
                return QBrush(QColor("#6a1b9a"))
            if column == 1 and line.kind != ACTION:
                return QBrush(nick_colour(line.nick))
        if role == Qt.ItemDataRole.BackgroundRole and line.mention:
            return QBrush(QColor("#fff3c4"))
        if role == Qt.ItemDataRole.FontRole:
            if line.kind in (SYSTEM, ACTION) or line.state == SENDING:
                font = QFont()
                font.setItalic(True)
                return font
            if line.mention or (column == 1 and line.kind == OWN):
                font = QFont()
                font.setBold(True)
                return font
        return None

    # -- how a row reads -------------------------------------------------------------

    def day_starts(self, row: int) -> bool:
        """Whether the row is the first of its day (the transcript's first row too)."""
        if row == 0:
            return True
        previous = self.lines[row - 1]
        return time.localtime(previous.ts)[:3] != time.localtime(self.lines[row].ts)[:3]

    def continues(self, row: int) -> bool:
        """Whether the row goes on from the one above by the same author
        (shortly after, the same day): its name is not repeated."""
        if row == 0 or self.day_starts(row):
            return False
        line, previous = self.lines[row], self.lines[row - 1]
        return (
            line.kind in (MESSAGE, OWN)
            and previous.kind == line.kind
            and previous.nick == line.nick
            and not line.reply
            and 0 <= line.ts - previous.ts <= GROUP_SECONDS
        )

    @staticmethod
    def _deleted_words(line: Line) -> str:
        return "message deleted" + (f" by {line.deleted_by}" if line.deleted_by else "")

    def _html(self, row: int, line: Line) -> str:
        parts = []
        if self.day_starts(row):
            parts.append(
                f'<p align="center" style="color:#777777; margin-bottom:4px">── {day_words(line.ts)} ──</p>'
            )
        if line.reply is not None:
            quote = line.reply
            if quote.deleted or quote.text is None:
                said = "<i>original deleted</i>"
            else:
                said = f"<b>{_escape(quote.sender or '?')}</b>: {_escape(quote.text.replace(chr(10), ' '))}"
            parts.append(
                f'<a href="quote:{quote.seq}" style="color:#555555; text-decoration:none">↪ {said}</a><br>'
            )
        if line.deleted:
            parts.append(f'<i style="color:#777777">{_escape(self._deleted_words(line))}</i>')
        else:
            parts.append(format_html(line.text))
            if line.edited:
                parts.append(' <span style="color:#777777">(edited)</span>')
            if line.files:
                shown = files_html(line.files)
                parts.append(shown if line.text else shown.removeprefix("<br>"))
        status = self._status(line)
        if status:
            parts.append(f'<span style="color:#777777">{_escape(status)}</span>')
        if line.reactions:
            mine = nick_key(self.own_nick or "")
            chips = []
            for number, reaction in enumerate(line.reactions):
                own = any(nick_key(nick) == mine for nick in reaction.by)
                colour = "#cfe3ff" if own else "#eeeeee"
                chips.append(
                    f'<a href="react:{number}" style="background-color:{colour}; color:#000000; '
                    f'text-decoration:none">&nbsp;{_escape(reaction.emoji)} {len(reaction.by)}&nbsp;</a>'
                )
            parts.append("<br>" + "&nbsp; ".join(chips))
        return "".join(parts)

    @staticmethod
    def _status(line: Line) -> str:
        if line.state == SENDING:
            return "  (sending…)"
        if line.state == FAILED:
            return f"  (not sent: {line.why}; double-click to retry)"
        return ""

    # what the window feeds in

    def add_message(self, message: codec.MessagePacket | codec.Message, own_nick: str | None = None) -> bool:
        """A message (once per seq); whether it mentions the user. A copy
        of one shown that changed since replaces it."""
        if message.seq in self._seqs:
            if message.rev:
                self.flush()
                line = self._line_of_seq(message.seq)
                if line is not None and message.rev > line.rev:
                    self.apply_change(message)
            return False
        line = self._line(message, own_nick)
        self._queue(line)
        return line.mention

    def _line(self, m: codec.MessagePacket | codec.Message, own_nick: str | None) -> Line:
        line = self._bare_line(m, own_nick)
        line.sender, line.reply, line.edited = m.sender, m.reply, m.edited
        line.deleted, line.deleted_by = bool(m.deleted), m.deleted_by
        line.reactions, line.rev = tuple(m.reactions or ()), m.rev or 0
        line.files = tuple(m.files or ())
        if line.deleted:
            line.text, line.mention, line.files = "", False, ()
        return line

    def _bare_line(self, m: codec.MessagePacket | codec.Message, own_nick: str | None) -> Line:
        own = own_nick or self.own_nick
        if m.action is not None:  # a moderation record: who did what
            line = Line(SYSTEM, m.ts, "*", f"{m.sender} {m.text}", seq=m.seq)
            line.record = True
            return line
        if m.text.startswith(ACTION_PREFIX) and len(m.text) > len(ACTION_PREFIX):
            text = f"{m.sender} {m.text[len(ACTION_PREFIX) :]}"
            return Line(ACTION, m.ts, "*", text, seq=m.seq, mention=m.sender != own and mentions(text, own))
        if own is not None and nick_key(m.sender) == nick_key(own):
            return Line(OWN, m.ts, m.sender, m.text, seq=m.seq)
        return Line(MESSAGE, m.ts, m.sender, m.text, seq=m.seq, mention=mentions(m.text, own))

    def apply_change(self, message: codec.Message | codec.MessagePacket) -> bool:
        """A message's present state (CHANGED, or a catch-up page): the line
        with its seq takes it, and replies to it update their quote. Whether
        the message is shown here."""
        self.flush()
        line = self._line_of_seq(message.seq)
        if line is not None and (message.rev or 0) >= line.rev:
            fresh = self._line(message, None)
            for name in ("kind", "nick", "text", "mention", "sender", "reply", "edited", "deleted"):
                setattr(line, name, getattr(fresh, name))
            line.deleted_by, line.reactions, line.rev = fresh.deleted_by, fresh.reactions, fresh.rev
            line.files = fresh.files
            self._touch(self._row_of(line))
        quote = quote_of(message)
        for row, other in enumerate(self.lines):
            if other.reply is not None and other.reply.seq == message.seq and other.reply != quote:
                other.reply = quote
                self._touch(row)
        return line is not None

    def _line_of_seq(self, seq: int) -> Line | None:
        if seq not in self._seqs:
            return None
        row = self.row_of_seq(seq)
        return self.lines[row] if row >= 0 else None

    def row_of_seq(self, seq: int) -> int:
        """The row showing message ``seq``, or -1."""
        for row in range(len(self.lines) - 1, -1, -1):
            if self.lines[row].seq == seq:
                return row
        return -1

    def last_own_row(self) -> int:
        """The row of the user's newest message still to be edited, or -1."""
        for row in range(len(self.lines) - 1, -1, -1):
            line = self.lines[row]
            if line.kind == OWN and line.seq is not None and not line.deleted and line.state == CONFIRMED:
                return row
        return -1

    def touch_file(self, file_id: str) -> None:
        """A thumbnail arrived: the rows that show it are painted again."""
        for row, line in enumerate(self.lines):
            if any(f.id == file_id for f in line.files):
                self._touch(row)

    def _touch(self, row: int) -> None:
        if 0 <= row < len(self.lines):
            self.dataChanged.emit(self.index(row, 0), self.index(row, TEXT_COLUMN))

    def newest_seq_through(self, row: int) -> int:
        """The newest seq among rows 0..``row``: what a reader who sees down to ``row`` has read."""
        for line in reversed(self.lines[: row + 1]):
            if line.seq is not None:
                return line.seq
        return 0

    def add_private(self, private: codec.Private) -> None:
        self._queue(Line(PRIVATE, private.ts, f"{private.sender} → {private.to}", private.text))

    def add_system(self, text: str, ts: float | None = None) -> None:
        self._queue(Line(SYSTEM, ts if ts is not None else time.time(), "*", text))

    def add_sending(self, ref: str, nick: str, text: str, to: str | None = None) -> None:
        self.flush()
        line = Line(OWN, time.time(), nick if to is None else f"{nick} → {to}", text, ref=ref, state=SENDING)
        self._by_ref[ref] = line
        self._place(len(self.lines), [line])

    def mark_failed(self, ref: str, why: str) -> None:
        self._restate(ref, FAILED, why)

    def mark_sending(self, ref: str) -> None:
        self._restate(ref, SENDING, "")

    def confirm(self, ref: str) -> None:
        """The server has it: the pending line goes, the echo (or the history
        copy, if the echo was lost with the connection) takes its place."""
        line = self._by_ref.pop(ref, None)
        if line is not None:
            self._unplace(line)

    def add_history(self, messages: list[codec.Message], own_nick: str | None, older: bool) -> None:
        """Older pages go on top; catch-up pages are merged by seq."""
        if not older:
            for message in messages:
                self.add_message(message, own_nick)
            return
        self.flush()
        fresh = [self._line(m, own_nick) for m in messages if m.seq not in self._seqs]
        if fresh:
            self._place(0, fresh)

    def clear(self) -> None:
        self.flush()
        self.beginResetModel()
        self.lines = []
        self._seqs.clear()
        self._max_seq = 0
        self._by_ref.clear()
        self.endResetModel()

    def failed_ref_at(self, row: int) -> str | None:
        line = self.lines[row]
        return line.ref if line.state == FAILED else None

    # batching and placement

    def _queue(self, line: Line) -> None:
        if line.seq is not None:
            self._seqs.add(line.seq)
        self._incoming.append(line)
        if self._timer.interval() <= 0:  # unbatched: the benchmark's baseline
            self.flush()
        elif not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Insert everything buffered now (the timer does this every batch_ms)."""
        self._timer.stop()
        incoming, self._incoming = self._incoming, []
        if not incoming:
            return
        tail: list[Line] = []
        for line in incoming:
            if line.seq is None or line.seq > self._max_seq:
                tail.append(line)
                if line.seq is not None:
                    self._max_seq = line.seq
            else:  # older than what is shown: merge it where it belongs
                self._place(self._position_for(line.seq), [line])
        if tail:
            self._place(self._append_position(), tail)
        excess = len(self.lines) - self.max_lines
        if excess > 0:
            self.beginRemoveRows(QModelIndex(), 0, excess - 1)
            for line in self.lines[:excess]:
                if line.seq is not None:
                    self._seqs.discard(line.seq)
            del self.lines[:excess]
            self.endRemoveRows()
            self._touch(0)  # the new first row heads its day

    def _append_position(self) -> int:
        """Before any lines still being sent, so they stay at the bottom."""
        position = len(self.lines)
        while position > 0 and self.lines[position - 1].state in (SENDING, FAILED):
            position -= 1
        return position

    def _position_for(self, seq: int) -> int:
        for row in range(len(self.lines) - 1, -1, -1):
            other = self.lines[row].seq
            if other is not None and other < seq:
                return row + 1
        return 0

    def _place(self, row: int, lines: list[Line]) -> None:
        self.beginInsertRows(QModelIndex(), row, row + len(lines) - 1)
        self.lines[row:row] = lines
        for line in lines:
            if line.seq is not None:
                self._seqs.add(line.seq)
                self._max_seq = max(self._max_seq, line.seq)
        self.endInsertRows()
        self._touch(row + len(lines))  # the row below may now go on from these, or not

    def _unplace(self, line: Line) -> None:
        row = self._row_of(line)
        if row >= 0:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self.lines[row]
            self.endRemoveRows()
            self._touch(row)

    def _row_of(self, line: Line) -> int:
        for row in range(len(self.lines) - 1, -1, -1):
            if self.lines[row] is line:
                return row
        return -1

    def _restate(self, ref: str, state: str, why: str) -> None:
        line = self._by_ref.get(ref)
        if line is None:
            return
        line.state, line.why = state, why
        row = self._row_of(line)
        if row >= 0:
            self.dataChanged.emit(self.index(row, 0), self.index(row, 2))
