"""Join room…: the server's rooms with their topics and member counts, or a new name."""

from __future__ import annotations

from PyQt6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from chatproto import codec
from chatproto.codec import ProtocolError
from chatproto.limits import DEFAULTS
from chatproto.rules import normalise_room


class JoinDialog(QDialog):
    """Pick a listed room or type a new name; ``room`` holds the choice."""

    def __init__(self, parent=None, max_length: int = DEFAULTS.room_name_length) -> None:
        super().__init__(parent)
        self.setWindowTitle("Join room")
        self.resize(520, 360)
        self.max_length = max_length
        self.room = ""
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Room", "Members", "Topic"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.status = QLabel("Asking the server for its rooms…")
        self.name = QLineEdit()
        self.name.setPlaceholderText("a room's name, or a new one")
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #b00020")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Join")
        layout = QVBoxLayout(self)
        for widget in (self.status, self.table, self.name, self.problem, self.buttons):
            layout.addWidget(widget)
        self.table.itemSelectionChanged.connect(self._picked)
        self.table.doubleClicked.connect(lambda _: self.accept())
        self.name.textChanged.connect(self._check)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._check("")

    def fill(self, rooms: list[codec.RoomInfo]) -> None:
        """The server's answer to LIST."""
        self.table.setRowCount(len(rooms))
        for row, info in enumerate(rooms):
            members = QTableWidgetItem(str(info.members))
            for column, item in enumerate(
                (QTableWidgetItem(info.room), members, QTableWidgetItem(info.topic))
            ):
                self.table.setItem(row, column, item)
        self.status.setText(f"{len(rooms)} room{'' if len(rooms) == 1 else 's'} on this server")

    def _picked(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.name.setText(self.table.item(rows[0].row(), 0).text())

    def _check(self, text: str) -> None:
        """The room rules, checked as the user types: no round trip to learn a name is bad."""
        ok = False
        if text:
            try:
                normalise_room(text, self.max_length)
                ok = True
                self.problem.setText("")
            except ProtocolError as e:
                self.problem.setText(e.message)
        else:
            self.problem.setText("")
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)

    def accept(self) -> None:
        if self.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled():
            self.room = self.name.text()
            super().accept()
