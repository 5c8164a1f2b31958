"""The desktop client's peer tree as it was, to measure the current one against.

``LinearPeerModel`` scans its branch for every peer it adds or removes (a
WELCOME costs O(n²)), and ``BaselineWindow`` expands the whole tree on every
WELCOME and JOINED. Everything else is the real window.
"""

from __future__ import annotations

from PyQt6.QtGui import QFont, QStandardItem, QStandardItemModel

from chatproto import codec
from qtclient.models import ID_ROLE, NICK_ROLE
from qtclient.views.main_window import MainWindow


class LinearPeerModel(QStandardItemModel):
    """Two branches: Pending (connection ids) and Connected (nicks)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setHorizontalHeaderLabels(["Peers"])
        self.pending_branch = QStandardItem()
        self.connected_branch = QStandardItem()
        for branch in (self.pending_branch, self.connected_branch):
            branch.setEditable(False)
            branch.setSelectable(False)
            self.appendRow(branch)
        self.my_id: int | None = None
        self._relabel()

    def _relabel(self) -> None:
        self.pending_branch.setText(f"Pending ({self.pending_branch.rowCount()})")
        self.connected_branch.setText(f"Connected ({self.connected_branch.rowCount()})")

    def _find(self, branch: QStandardItem, id: int) -> int:
        for row in range(branch.rowCount()):
            if branch.child(row).data(ID_ROLE) == id:
                return row
        return -1

    def _remove(self, branch: QStandardItem, id: int) -> None:
        row = self._find(branch, id)
        if row >= 0:
            branch.removeRow(row)

    def _add_connected(self, id: int, nick: str) -> None:
        self._remove(self.pending_branch, id)
        if self._find(self.connected_branch, id) >= 0:
            return
        mine = id == self.my_id
        item = QStandardItem(f"{nick} (you)" if mine else nick)
        item.setEditable(False)
        item.setData(id, ID_ROLE)
        item.setData(nick, NICK_ROLE)
        if mine:
            font = QFont()
            font.setBold(True)
            item.setFont(font)
        self.connected_branch.appendRow(item)

    def _add_pending(self, id: int) -> None:
        if self._find(self.pending_branch, id) < 0:
            item = QStandardItem(f"#{id}")
            item.setEditable(False)
            item.setData(id, ID_ROLE)
            self.pending_branch.appendRow(item)

    def clear_peers(self) -> None:
        for branch in (self.pending_branch, self.connected_branch):
            branch.removeRows(0, branch.rowCount())
        self._relabel()

    def welcome(self, welcome: codec.Welcome) -> None:
        self.clear_peers()
        self.my_id = welcome.id
        for peer in welcome.peers:
            self._add_connected(peer.id, peer.nick)
        for id in welcome.pending:
            self._add_pending(id)
        self._relabel()

    def joined(self, joined: codec.Joined) -> None:
        self._add_connected(joined.id, joined.nick)
        self._relabel()

    def left(self, left: codec.Left) -> None:
        self._remove(self.connected_branch, left.id)
        self._relabel()

    def pending(self, pending: codec.Pending) -> None:
        if pending.state == "connecting":
            self._add_pending(pending.id)
        else:
            self._remove(self.pending_branch, pending.id)
        self._relabel()

    def connected_nicks(self) -> list[str]:
        branch = self.connected_branch
        return [branch.child(row).data(NICK_ROLE) for row in range(branch.rowCount())]

    def pending_ids(self) -> list[int]:
        branch = self.pending_branch
        return [branch.child(row).data(ID_ROLE) for row in range(branch.rowCount())]


class BaselineWindow(MainWindow):
    """The real window with the old peer tree and the old expandAll calls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.peers = LinearPeerModel(self)
        self.peer_view.setModel(self.peers)

    def _expand_branches(self) -> None:
        self.peer_view.expandAll()

    def _joined(self, joined: codec.Joined) -> None:
        super()._joined(joined)
        self.peer_view.expandAll()
