"""The server console: a hosted server's connections and rooms, its log, kick, start/stop."""

from __future__ import annotations

import time

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from twisted.logger import formatEvent, globalLogPublisher

from chatproto.core.connection import HubEvent
from chatproto.rules import room_key
from qtclient.host import HostedServer

ID_ROLE = Qt.ItemDataRole.UserRole + 1


def _since(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


class ServerConsole(QWidget):
    started = pyqtSignal(str)  # the address it listens on
    stopped = pyqtSignal()

    def __init__(self, reactor, endpoint: str = "tcp:7777:interface=127.0.0.1", history: str = ":memory:"):
        super().__init__()
        self.setWindowTitle("Server console")
        self.resize(720, 520)
        self.server = HostedServer(reactor)
        self.history = history
        self.endpoint = QLineEdit(endpoint)
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.kick_button = QPushButton("Kick")
        self.status = QLabel("stopped")
        self.pending = QTreeWidget()
        self.pending.setHeaderLabels(["Id", "Address", "Since"])
        self.connected = QTreeWidget()
        self.connected.setHeaderLabels(["Nick", "Id", "Address", "Since"])
        for tree in (self.pending, self.connected):
            tree.setRootIsDecorated(False)
            tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.rooms = QTreeWidget()
        self.rooms.setHeaderLabels(["Room / member", "Members", "Topic"])
        self.rooms.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self._room_rows: dict[str, QTreeWidgetItem] = {}
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)

        top = QHBoxLayout()
        top.addWidget(QLabel("Listen on"))
        top.addWidget(self.endpoint, 1)
        top.addWidget(self.start_button)
        top.addWidget(self.stop_button)
        trees = QSplitter()
        for title, tree in (("Pending", self.pending), ("Connected", self.connected), ("Rooms", self.rooms)):
            box = QWidget()
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            label = QLabel(title)
            column.addWidget(label)
            column.addWidget(tree)
            setattr(self, f"{title.lower()}_label", label)
            trees.addWidget(box)
        actions = QHBoxLayout()
        actions.addWidget(self.status, 1)
        actions.addWidget(self.kick_button)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(trees)
        split.addWidget(self.log)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)
        layout.addLayout(actions)

        self._rows: dict[QTreeWidget, dict[int, QTreeWidgetItem]] = {self.pending: {}, self.connected: {}}
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.kick_button.clicked.connect(self.kick_selected)
        globalLogPublisher.addObserver(self._log_event)
        self._update_buttons()

    # -- control --------------------------------------------------------------------

    def start(self) -> bool:
        try:
            address = self.server.start(self.endpoint.text().strip(), history=self.history)
        except Exception as e:
            self.append_log(f"error: {e}")
            self.status.setText("stopped")
            return False
        self.server.hub.observers.append(self._hub_event)
        self.status.setText(f"listening on {address}")
        self._update_buttons()
        self.refresh()
        self.started.emit(address)
        return True

    def stop(self):
        d = self.server.stop()
        self.status.setText("stopped")
        self._update_buttons()
        self.refresh()
        self.stopped.emit()
        return d

    def kick_selected(self) -> None:
        hub = self.server.hub
        for tree in (self.connected, self.pending):
            for item in tree.selectedItems():
                if hub is not None:
                    hub.kick(item.data(0, ID_ROLE))

    # -- display --------------------------------------------------------------------

    def _hub_event(self, event: HubEvent) -> None:
        """Apply one event to the trees: a row added, moved or removed, never a rebuild."""
        if event.kind == "pending":
            self._put(self.pending, event.id, [str(event.id), event.address, _since(event.since)])
        elif event.kind == "pending_gone":
            self._drop(self.pending, event.id)
        elif event.kind in ("joined", "resumed"):
            self._drop(self.pending, event.id)
            self._put(
                self.connected, event.id, [event.nick, str(event.id), event.address, _since(event.since)]
            )
        elif event.kind == "left":
            self._drop(self.connected, event.id)
        elif event.kind == "renamed":
            self._renamed(event.id, event.nick or "")
        elif event.room is not None:  # room_joined, room_left, topic, room_gone
            self._show_room(event.room)
        self._relabel()

    def _renamed(self, id: int, nick: str) -> None:
        """A guest took another nick: its row, and its rooms' members."""
        item = self._rows[self.connected].get(id)
        if item is not None:
            item.setText(0, nick)
        hub = self.server.hub
        session = hub.registry.sessions.get(id) if hub is not None else None
        for room in list(session.rooms.values()) if session is not None else ():
            self._show_room(room.name)

    def _show_room(self, name: str) -> None:
        """One room's row and its members, as the hub has them now."""
        hub = self.server.hub
        room = hub.room_for(name) if hub is not None else None
        item = self._room_rows.get(room_key(name))
        if room is None:
            if item is not None:
                del self._room_rows[room_key(name)]
                self.rooms.takeTopLevelItem(self.rooms.indexOfTopLevelItem(item))
            return
        if item is None:
            item = self._room_rows[room_key(name)] = QTreeWidgetItem()
            self.rooms.addTopLevelItem(item)
        for column, text in enumerate((room.name, str(len(room.members)), room.topic_text)):
            item.setText(column, text)
        item.takeChildren()
        item.addChildren(
            [QTreeWidgetItem([session.nick, f"#{session.id}", ""]) for session in room.members.values()]
        )
        item.setExpanded(True)

    def _put(self, tree: QTreeWidget, id: int, columns: list[str]) -> None:
        item = self._rows[tree].get(id)
        if item is None:
            item = self._rows[tree][id] = QTreeWidgetItem(columns)
            item.setData(0, ID_ROLE, id)
            tree.addTopLevelItem(item)
        else:
            for column, text in enumerate(columns):
                item.setText(column, text)

    def _drop(self, tree: QTreeWidget, id: int) -> None:
        item = self._rows[tree].pop(id, None)
        if item is not None:
            tree.takeTopLevelItem(tree.indexOfTopLevelItem(item))

    def _relabel(self) -> None:
        self.pending_label.setText(f"Pending ({self.pending.topLevelItemCount()})")
        self.connected_label.setText(f"Connected ({self.connected.topLevelItemCount()})")
        self.rooms_label.setText(f"Rooms ({self.rooms.topLevelItemCount()})")

    def refresh(self) -> None:
        """Rebuild the trees from the hub: when it starts or stops."""
        room = self.server.hub
        for tree, rows in self._rows.items():
            tree.clear()
            rows.clear()
        self.rooms.clear()
        self._room_rows.clear()
        if room is not None:
            for client in room.pending:
                self._put(self.pending, client.id, [str(client.id), client.address, _since(client.opened)])
            for session in room.sessions:
                row = [session.nick, str(session.id), session.connection.address, _since(session.since)]
                self._put(self.connected, session.id, row)
            for chat_room in room.rooms:
                self._show_room(chat_room.name)
        self._relabel()

    def _log_event(self, event: dict) -> None:
        namespace = event.get("log_namespace", "")
        if not namespace.startswith("chatproto"):
            return
        level = event.get("log_level")
        text = formatEvent(event)
        if event.get("log_failure") is not None:
            text += f" ({event['log_failure'].getErrorMessage()})"
        self.append_log(f"{_since(event.get('log_time', time.time()))} {level.name if level else ''}: {text}")

    def append_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def _update_buttons(self) -> None:
        running = self.server.running
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.kick_button.setEnabled(running)
        self.endpoint.setEnabled(not running)

    def closeEvent(self, event) -> None:
        globalLogPublisher.removeObserver(self._log_event)
        self.stop()
        super().closeEvent(event)
