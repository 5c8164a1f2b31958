"""The desktop client's member tree as it was, to measure the current one against.

``LinearPeerModel`` scans a room's branch for every member it adds or
removes (a ROOM of n members costs O(n²), one row inserted at a time), and
``BaselineWindow`` expands the whole tree on every ROOM and JOINED.
Everything else is the real model and the real window.
"""

from __future__ import annotations

from PyQt6.QtGui import QStandardItem

from chatproto import codec
from chatproto.rules import room_key
from qtclient.models import ID_ROLE, PeerModel, _RoomBranch
from qtclient.views.main_window import MainWindow


class LinearPeerModel(PeerModel):
    """PeerModel, finding each member by a scan of its branch."""

    @staticmethod
    def _find(branch: QStandardItem, id: int) -> int:
        for row in range(branch.rowCount()):
            if branch.child(row).data(ID_ROLE) == id:
                return row
        return -1

    def _branch(self, room: str) -> _RoomBranch:
        branch = self.rooms.get(room_key(room))
        if branch is None:
            branch = self.rooms[room_key(room)] = _RoomBranch(room)
            self.appendRow(branch.item)
        return branch

    def room_state(self, state: codec.RoomState) -> QStandardItem:
        branch = self._branch(state.room)
        branch.item.removeRows(0, branch.item.rowCount())
        branch.members.clear()
        for peer in state.members:
            self._add(branch, peer.id, peer.nick)
        self._relabel(branch)
        return branch.item

    def _add(self, branch: _RoomBranch, id: int, nick: str) -> None:
        if self._find(branch.item, id) < 0:
            branch.members[id] = item = self._member_item(id, nick)
            branch.item.appendRow(item)

    def joined(self, joined: codec.Joined) -> None:
        self.pending(codec.Pending(joined.id, "gone"))
        if joined.room:
            branch = self._branch(joined.room)
            self._add(branch, joined.id, joined.nick)
            self._relabel(branch)

    def left(self, left: codec.Left) -> None:
        branch = self.rooms.get(room_key(left.room)) if left.room else None
        if branch is not None:
            row = self._find(branch.item, left.id)
            if row >= 0:
                branch.item.removeRow(row)
                branch.members.pop(left.id, None)
            self._relabel(branch)


class BaselineWindow(MainWindow):
    """The real window with the old member tree and the old expandAll calls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.peers = LinearPeerModel(self)
        self.peer_view.setModel(self.peers)

    def _expand_branches(self) -> None:
        self.peer_view.expandAll()

    def _room_joined(self, state: codec.RoomState, reset: bool) -> None:
        super()._room_joined(state, reset)
        self.peer_view.expandAll()

    def _joined(self, joined: codec.Joined) -> None:
        super()._joined(joined)
        self.peer_view.expandAll()
