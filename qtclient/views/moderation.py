"""Operators' and admins' windows: a room's ban list (to unban), and the
server's pending and connected lists fed over the protocol."""

from __future__ import annotations

import time

from PyQt6.QtGui import QStandardItem, QStandardItemModel
from PyQt6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTreeView,
    QVBoxLayout,
)

from chatproto import codec


class BanListDialog(QDialog):
    """A room's bans; the selected one can be lifted."""

    def __init__(self, session, room: str, parent=None) -> None:
        super().__init__(parent)
        self.session, self.room = session, room
        self.setWindowTitle(f"Bans in {room}")
        self.list = QListWidget()
        self.unban_button = QPushButton("&Unban")
        self.unban_button.clicked.connect(self.unban_selected)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Nicks banned from {room}:"))
        layout.addWidget(self.list)
        layout.addWidget(self.unban_button)
        layout.addWidget(buttons)
        session.bansListed.connect(self.show_bans)
        session.moderate(room, "bans")

    def show_bans(self, bans: codec.BanList) -> None:
        if bans.room is None or bans.room.casefold() != self.room.casefold():
            return
        self.list.clear()
        for ban in bans.bans:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(ban.ts))
            item = QListWidgetItem(
                f"{ban.target} — by {ban.by}, {when}" + (f": {ban.reason}" if ban.reason else "")
            )
            item.setData(256, ban.target)
            self.list.addItem(item)
        self.unban_button.setEnabled(self.list.count() > 0)

    def unban_selected(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.session.moderate(self.room, "unban", item.data(256))
            self.session.moderate(self.room, "bans")


class AdminDialog(QDialog):
    """The server's pending and connected lists, as the host's console shows
    them, for an admin connected from anywhere: asked for again whenever a
    connection comes or goes (PENDING), or on Refresh."""

    def __init__(self, session, parent=None) -> None:
        super().__init__(parent)
        self.session = session
        self.setWindowTitle("Server connections")
        self.resize(520, 420)
        self.pending = QStandardItemModel(0, 3, self)
        self.pending.setHorizontalHeaderLabels(["Pending", "Address", "Waiting"])
        self.connected = QStandardItemModel(0, 4, self)
        self.connected.setHorizontalHeaderLabels(["Connected", "Address", "Rooms", "Devices"])
        layout = QVBoxLayout(self)
        for model in (self.pending, self.connected):
            view = QTreeView()
            view.setModel(model)
            view.setRootIsDecorated(False)
            view.setEditTriggers(QTreeView.EditTrigger.NoEditTriggers)
            layout.addWidget(view)
        session.sessionsListed.connect(self.show_sessions)
        session.pendingChanged.connect(self._pending_changed)
        refresh = QPushButton("&Refresh")
        refresh.clicked.connect(self.refresh)
        layout.addWidget(refresh)
        self.refresh()

    def _pending_changed(self, _pending) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.session.administer("sessions")

    def show_sessions(self, sessions: codec.Sessions) -> None:
        now = time.time()
        _fill(self.pending, [[f"#{p.id}", p.address, f"{now - p.since:.0f} s"] for p in sessions.pending])
        _fill(
            self.connected,
            [
                [s.nick + (" (account)" if s.account else ""), s.address, ", ".join(s.rooms), str(s.devices)]
                for s in sessions.connected
            ],
        )

    def texts(self, model: QStandardItemModel, column: int = 0) -> list[str]:
        return [model.item(row, column).text() for row in range(model.rowCount())]


def _fill(model: QStandardItemModel, rows: list[list[str]]) -> None:
    model.removeRows(0, model.rowCount())
    for row in rows:
        model.appendRow([QStandardItem(text) for text in row])
