"""Qt item models: who is here, and what was said. No sockets, no widgets."""

from __future__ import annotations

import time
from dataclasses import dataclass

from PyQt6.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer
from PyQt6.QtGui import QBrush, QColor, QFont, QStandardItem, QStandardItemModel

from chatproto import codec

_ROOT = QModelIndex()
ID_ROLE = Qt.ItemDataRole.UserRole + 1
NICK_ROLE = Qt.ItemDataRole.UserRole + 2


class PeerModel(QStandardItemModel):
    """Two branches: Pending (connection ids) and Connected (nicks).

    Each branch keeps its items by id, so a JOINED or LEFT costs the same in
    a room of 10 or 10,000, and a WELCOME inserts all its peers in one call.
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setHorizontalHeaderLabels(["Peers"])
        self.pending_branch = QStandardItem()
        self.connected_branch = QStandardItem()
        for branch in (self.pending_branch, self.connected_branch):
            branch.setEditable(False)
            branch.setSelectable(False)
            self.appendRow(branch)
        # branch -> its items by id (QStandardItem is not hashable: keyed by row)
        self._items: dict[int, dict[int, QStandardItem]] = {0: {}, 1: {}}
        self.my_id: int | None = None
        self._relabel()

    def _relabel(self) -> None:
        self.pending_branch.setText(f"Pending ({self.pending_branch.rowCount()})")
        self.connected_branch.setText(f"Connected ({self.connected_branch.rowCount()})")

    def _connected_item(self, id: int, nick: str) -> QStandardItem:
        mine = id == self.my_id
        item = QStandardItem(f"{nick} (you)" if mine else nick)
        item.setData(id, ID_ROLE)
        item.setData(nick, NICK_ROLE)
        if mine:
            font = QFont()
            font.setBold(True)
            item.setFont(font)
        return item

    def _pending_item(self, id: int) -> QStandardItem:
        item = QStandardItem(f"#{id}")
        item.setData(id, ID_ROLE)
        return item

    def _add(self, branch: QStandardItem, items: list[QStandardItem]) -> None:
        known = self._items[branch.row()]
        fresh = []
        for item in items:
            id = item.data(ID_ROLE)
            if id not in known:
                known[id] = item
                fresh.append(item)
        if fresh:
            branch.appendRows(fresh)

    def _remove(self, branch: QStandardItem, id: int) -> None:
        item = self._items[branch.row()].pop(id, None)
        if item is not None:
            branch.removeRow(item.row())

    def clear_peers(self) -> None:
        for branch in (self.pending_branch, self.connected_branch):
            branch.removeRows(0, branch.rowCount())
            self._items[branch.row()].clear()
        self._relabel()

    def welcome(self, welcome: codec.Welcome) -> None:
        self.clear_peers()
        self.my_id = welcome.id
        self._add(self.connected_branch, [self._connected_item(p.id, p.nick) for p in welcome.peers])
        self._add(self.pending_branch, [self._pending_item(id) for id in welcome.pending])
        self._relabel()

    def joined(self, joined: codec.Joined) -> None:
        self._remove(self.pending_branch, joined.id)
        self._add(self.connected_branch, [self._connected_item(joined.id, joined.nick)])
        self._relabel()

    def left(self, left: codec.Left) -> None:
        self._remove(self.connected_branch, left.id)
        self._relabel()

    def pending(self, pending: codec.Pending) -> None:
        if pending.state == "connecting":
            self._add(self.pending_branch, [self._pending_item(pending.id)])
        else:
            self._remove(self.pending_branch, pending.id)
        self._relabel()

    def connected_nicks(self) -> list[str]:
        branch = self.connected_branch
        return [branch.child(row).data(NICK_ROLE) for row in range(branch.rowCount())]

    def pending_ids(self) -> list[int]:
        branch = self.pending_branch
        return [branch.child(row).data(ID_ROLE) for row in range(branch.rowCount())]


# -- transcript ----------------------------------------------------------------

MESSAGE, PRIVATE, SYSTEM, OWN = "message", "private", "system", "own"
SENDING, CONFIRMED, FAILED = "sending", "confirmed", "failed"


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
                return line.nick
            text = line.text.replace("\n", " ⏎ ")
            if line.state == SENDING:
                return f"{text}  (sending…)"
            if line.state == FAILED:
                return f"{text}  (not sent: {line.why}; double-click to retry)"
            return text
        if role == Qt.ItemDataRole.ToolTipRole and column == 2:
            return line.text
        if role == Qt.ItemDataRole.ForegroundRole:
            if line.state == FAILED:
                return QBrush(QColor("#b00020"))
            if line.kind == SYSTEM or line.state == SENDING:
                return QBrush(QColor("#777777"))
            if line.kind == PRIVATE:
                return QBrush(QColor("#6a1b9a"))
        if role == Qt.ItemDataRole.FontRole and (line.kind == SYSTEM or line.state == SENDING):
            font = QFont()
            font.setItalic(True)
            return font
        return None

    # what the window feeds in

    def add_message(self, message: codec.MessagePacket | codec.Message, own_nick: str | None = None) -> None:
        if message.seq in self._seqs:
            return
        kind = OWN if message.sender == own_nick else MESSAGE
        self._queue(Line(kind, message.ts, message.sender, message.text, seq=message.seq))

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
        fresh = [
            Line(OWN if m.sender == own_nick else MESSAGE, m.ts, m.sender, m.text, seq=m.seq)
            for m in messages
            if m.seq not in self._seqs
        ]
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

    def _unplace(self, line: Line) -> None:
        row = self._row_of(line)
        if row >= 0:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self.lines[row]
            self.endRemoveRows()

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
