"""Operators' and admins' windows: a room's ban list (to unban), and the
server's pending and connected lists, its bans, and the admin's actions on
them, fed over the protocol."""

from __future__ import annotations

import ipaddress
import time

from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QShowEvent, QStandardItem, QStandardItemModel
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QAbstractScrollArea,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from chatproto import codec
from chatproto.rules import room_key
from qtclient.session import ChatSession
from qtclient.views.windows import ConfirmDialog, Field, SessionDialog

#: The item data role holding a row's raw value (a nick, an address, a SessionInfo).
VALUE_ROLE = Qt.ItemDataRole.UserRole + 1


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def _table(model: QStandardItemModel) -> QTableView:
    """A read-only table of whole rows whose columns fit their text."""
    view = QTableView()
    view.setModel(model)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setWordWrap(False)
    view.verticalHeader().hide()
    view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    view.horizontalHeader().setStretchLastSection(False)  # a stretched column ignores its text
    view.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
    return view


def _fit(view: QTableView) -> None:
    """Columns as wide as their text now, and the table's size hint with them."""
    view.horizontalHeader().resizeSections(QHeaderView.ResizeMode.ResizeToContents)
    view.updateGeometry()


def _fill(model: QStandardItemModel, rows: list[tuple[object, list[str]]]) -> None:
    """Rows of (value, texts): the value is kept on the first cell."""
    model.removeRows(0, model.rowCount())
    for value, texts in rows:
        items = [QStandardItem(text) for text in texts]
        items[0].setData(value, VALUE_ROLE)
        model.appendRow(items)


def _refill(view: QTableView, rows: list[tuple[object, list[str]]], key=lambda value: value) -> None:
    """New rows in the view's table, the same one selected as before (by
    ``key`` of its value): a refresh must not take the row from under the
    user's next click."""
    chosen = _selected(view)
    _fill(view.model(), rows)
    _fit(view)  # columns as wide as the new text (an address, a room list)
    if chosen is None:
        return
    for row, (value, _texts) in enumerate(rows):
        if key(value) == key(chosen):
            view.selectRow(row)
            return


def _selected(view: QTableView):
    """The value of the selected row, or None."""
    rows = view.selectionModel().selectedRows() if view.selectionModel() is not None else []
    return rows[0].data(VALUE_ROLE) if rows else None


def _ban_rows(bans: list[codec.BanInfo]) -> list[tuple[object, list[str]]]:
    return [
        (
            ban.target,
            [ban.target, ban.by, _when(ban.ts), _when(ban.until) or "until lifted", ban.reason or ""],
        )
        for ban in bans
    ]


class BanListDialog(SessionDialog):
    """A room's bans as a table that fits its text; the selected one can be
    lifted. Asked for when shown and after each unban, not otherwise."""

    def __init__(self, session: ChatSession, room: str, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.room = room
        self.setWindowTitle(f"Bans in {room}")
        self.model = QStandardItemModel(0, 5, self)
        self.model.setHorizontalHeaderLabels(["Nick", "By", "When", "Until", "Reason"])
        self.view = _table(self.model)
        self.unban_button = QPushButton("&Unban")
        self.unban_button.setEnabled(False)
        self.unban_button.clicked.connect(self.unban_selected)
        self.view.selectionModel().selectionChanged.connect(
            lambda *_: self.unban_button.setEnabled(_selected(self.view) is not None)
        )
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.summary = QLabel(f"Nicks banned from {room}:")
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.view)
        layout.addWidget(self.unban_button)
        layout.addWidget(self.outcome)
        layout.addWidget(buttons)
        self.listen(session.bansListed, self.show_bans)
        self.listen(session.messageReceived, self._record)
        self.listen(session.errorReceived, self._error)
        self._asked: str | None = None

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not event.spontaneous():
            self.session.moderate(self.room, "bans")

    def show_bans(self, bans: codec.BanList) -> None:
        if bans.room is None or room_key(bans.room) != room_key(self.room):
            return
        _fill(self.model, _ban_rows(bans.bans))
        count = len(bans.bans)
        self.summary.setText(
            f"{count} nick{'' if count == 1 else 's'} banned from {self.room}:"
            if count
            else "Nobody is banned."
        )
        self.unban_button.setEnabled(_selected(self.view) is not None)
        _fit(self.view)
        self._fit_window()

    def _fit_window(self) -> None:
        """As big as the table's text needs, up to the screen (adjustSize
        would stop at two thirds of it)."""
        wanted = self.sizeHint()
        screen = self.screen()
        if screen is not None:
            wanted = wanted.boundedTo(screen.availableGeometry().size())
        self.resize(wanted.expandedTo(self.size()))

    def nicks(self) -> list[str]:
        return [self.model.item(row, 0).text() for row in range(self.model.rowCount())]

    def unban_selected(self) -> None:
        nick = _selected(self.view)
        if nick and self.sent(self.session.moderate(self.room, "unban", nick)):
            self._asked = "unban"
            self.session.moderate(self.room, "bans")

    def _record(self, message: codec.MessagePacket) -> None:
        if message.ref == f"moderate:{self._asked}" and room_key(message.room or "") == room_key(self.room):
            self._asked = None
            self.say_outcome(f"Done: {message.text}", True)

    def _error(self, code: str, message: str) -> None:
        if self._asked is not None:
            self._asked = None
            self.say_outcome(f"Refused: {message}", False)


def _address_host(address: str) -> str:
    """The host of "host:port" or "[v6]:port" (an address to ban)."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    return host.strip("[]")


def _is_address(target: str) -> bool:
    try:
        ipaddress.ip_network(target, strict=False)
    except ValueError:
        return False
    return True


def _duration(values: dict[str, str]) -> dict:
    """ADMIN's ``duration`` from a field in hours; empty: for good."""
    text = values.get("hours", "")
    return {"duration": float(text) * 3600} if text else {}


#: What each ADMIN op makes stale, to be asked for again.
_STALE_AFTER = {
    "kick": {"sessions"},
    "ban": {"sessions", "bans"},
    "unban": {"bans"},
    "ban_address": {"sessions", "bans"},
    "unban_address": {"bans"},
    "close": {"sessions"},
    "reset": set(),
}


class AdminDialog(SessionDialog):
    """The server's pending and connected lists and its bans, for an admin
    connected from anywhere, with the admin's actions on the selected row.

    A PENDING makes the lists stale; they are asked for again at most once
    per ``every`` seconds (by default half the rate the server allows such
    requests, so the admin's own actions are never refused as too fast),
    and only while the window is shown."""

    def __init__(
        self, session: ChatSession, parent: QWidget | None = None, every: float | None = None
    ) -> None:
        super().__init__(session, parent)
        self.setWindowTitle("Server connections")
        self.resize(640, 560)
        rate = float(session.limits.get("join_rate") or 1.0)
        self.every = every if every is not None else max(1.0, 2.0 / rate)
        self._last = float("-inf")
        self._stale: set[str] = set()
        self._asked: str | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)  # a coarse one may fire 5% early
        self._timer.timeout.connect(self._refresh_stale)

        self.pending = QStandardItemModel(0, 3, self)
        self.pending.setHorizontalHeaderLabels(["Pending", "Address", "Waiting"])
        self.connected = QStandardItemModel(0, 4, self)
        self.connected.setHorizontalHeaderLabels(["Connected", "Address", "Rooms", "Devices"])
        self.bans = QStandardItemModel(0, 5, self)
        self.bans.setHorizontalHeaderLabels(["Banned", "By", "When", "Until", "Reason"])
        self.pending_view, self.connected_view, self.bans_view = map(
            _table, (self.pending, self.connected, self.bans)
        )

        self.kick_button = QPushButton("&Kick…")
        self.ban_button = QPushButton("&Ban nick…")
        self.ban_address_button = QPushButton("Ban &address…")
        self.reset_button = QPushButton("Reset &password…")
        self.close_room_button = QPushButton("&Close a room…")
        self.unban_button = QPushButton("&Unban…")
        self.refresh_button = QPushButton("&Refresh")
        self.kick_button.clicked.connect(self.ask_kick)
        self.ban_button.clicked.connect(self.ask_ban)
        self.ban_address_button.clicked.connect(self.ask_ban_address)
        self.reset_button.clicked.connect(self.ask_reset)
        self.close_room_button.clicked.connect(self.ask_close_room)
        self.unban_button.clicked.connect(self.ask_unban)
        self.refresh_button.clicked.connect(self.refresh)
        self.connected_view.selectionModel().selectionChanged.connect(lambda *_: self._enable())
        self.bans_view.selectionModel().selectionChanged.connect(lambda *_: self._enable())
        self.confirmation: ConfirmDialog | None = None

        on_session = QHBoxLayout()
        for button in (self.kick_button, self.ban_button, self.ban_address_button, self.reset_button):
            on_session.addWidget(button)
        on_session.addStretch()
        on_bans = QHBoxLayout()
        on_bans.addWidget(self.unban_button)
        on_bans.addStretch()
        on_bans.addWidget(self.close_room_button)
        on_bans.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.pending_view, 1)
        layout.addWidget(self.connected_view, 2)
        layout.addLayout(on_session)
        layout.addWidget(QLabel("Server bans (nicks and addresses):"))
        layout.addWidget(self.bans_view, 1)
        layout.addLayout(on_bans)
        layout.addWidget(self.outcome)
        self.listen(session.sessionsListed, self.show_sessions)
        self.listen(session.bansListed, self.show_bans)
        self.listen(session.pendingChanged, self._pending_changed)
        self.listen(session.requestDone, self._done)
        self.listen(session.errorReceived, self._error)
        self._enable()

    # -- keeping the lists fresh, gently ----------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not event.spontaneous():
            self.refresh()

    def done(self, result: int) -> None:
        self._timer.stop()
        super().done(result)

    def refresh(self) -> None:
        """Both lists, now (the user asked)."""
        self._stale = {"sessions", "bans"}
        self._refresh_stale()

    def _pending_changed(self, _pending: codec.Pending) -> None:
        self._soon({"sessions"})

    def _soon(self, stale: set[str]) -> None:
        """Ask again for what is stale: now if nothing was asked for in the
        last ``every`` seconds, else once that long has passed."""
        self._stale |= stale
        if not self.isVisible() or self._timer.isActive() or not self._stale:
            return
        wait = self._last + self.every - time.monotonic()
        if wait <= 0:
            self._refresh_stale()
        else:
            self._timer.start(int(wait * 1000) + 1)

    def _refresh_stale(self) -> None:
        if not self.isVisible():
            return
        self._last = time.monotonic()
        for what in sorted(self._stale):
            self.session.administer(what)
        self._stale.clear()

    def show_sessions(self, sessions: codec.Sessions) -> None:
        now = time.time()
        _fill(
            self.pending, [(p, [f"#{p.id}", p.address, f"{now - p.since:.0f} s"]) for p in sessions.pending]
        )
        _refill(
            self.connected_view,
            [
                (
                    s,
                    [
                        s.nick + (" (account)" if s.account else ""),
                        s.address,
                        ", ".join(s.rooms),
                        str(s.devices),
                    ],
                )
                for s in sessions.connected
            ],
            key=lambda info: info.id,
        )
        self._enable()

    def show_bans(self, bans: codec.BanList) -> None:
        if bans.room is None:  # a room's bans are the ban list dialog's
            _refill(self.bans_view, _ban_rows(bans.bans))
            self._enable()

    def texts(self, model: QStandardItemModel, column: int = 0) -> list[str]:
        return [model.item(row, column).text() for row in range(model.rowCount())]

    # -- actions -------------------------------------------------------------------

    def selected_session(self) -> codec.SessionInfo | None:
        return _selected(self.connected_view)

    def _enable(self) -> None:
        chosen = self.selected_session() is not None
        for button in (self.kick_button, self.ban_button, self.ban_address_button, self.reset_button):
            button.setEnabled(chosen)
        self.unban_button.setEnabled(_selected(self.bans_view) is not None)

    def _confirm(self, title: str, question: str, action: str, fields, send) -> ConfirmDialog:
        """One confirmation at a time: a new question replaces an open one."""
        if self.confirmation is not None:
            self.confirmation.close()
            self.confirmation.deleteLater()
        self.confirmation = ConfirmDialog(self, title, question, action, fields, send)
        self.confirmation.open()
        return self.confirmation

    def _send(self, op: str, **fields) -> None:
        if self.sent(self.session.administer(op, **fields)):
            self._asked = op
            self.say_outcome(f"Asked the server to {op.replace('_', ' ')}…", True)

    def ask_kick(self) -> None:
        chosen = self.selected_session()
        if chosen is None:
            return
        self._confirm(
            "Kick",
            f"Disconnect {chosen.nick} (every device) from the server? They may come back.",
            "Kick",
            [Field("reason", "&Reason")],
            lambda v: self._send("kick", target=chosen.nick, reason=v["reason"] or None),
        )

    def ask_ban(self) -> None:
        chosen = self.selected_session()
        if chosen is None:
            return
        self._confirm(
            "Ban from the server",
            f"Ban the nick {chosen.nick} from the server and disconnect it?",
            "Ban",
            [Field("reason", "&Reason"), Field("hours", "For &hours (empty: until lifted)")],
            lambda v: self._with_duration(
                v, lambda d: self._send("ban", target=chosen.nick, reason=v["reason"] or None, **d)
            ),
        )

    def ask_ban_address(self) -> None:
        chosen = self.selected_session()
        if chosen is None:
            return
        self._confirm(
            "Ban an address",
            f"Refuse new connections from this address (or network) and close the open ones "
            f"(now: {chosen.nick} at {chosen.address})?",
            "Ban address",
            [
                Field("address", "&Address or network", _address_host(chosen.address), required=True),
                Field("reason", "&Reason"),
                Field("hours", "For &hours (empty: until lifted)"),
            ],
            lambda v: self._with_duration(
                v, lambda d: self._send_address("ban_address", v["address"], reason=v["reason"] or None, **d)
            ),
        )

    def ask_reset(self) -> None:
        chosen = self.selected_session()
        if chosen is None:
            return
        self._confirm(
            "Reset a password",
            f"Set a new password for the account {chosen.nick}? Tell them the new one another way.",
            "Reset password",
            [Field("password", "New &password", secret=True, required=True, min_length=8)],
            lambda v: self._send("reset", target=chosen.nick, password=v["password"]),
        )

    def ask_close_room(self) -> None:
        chosen = self.selected_session()
        default = chosen.rooms[0] if chosen is not None and chosen.rooms else ""
        self._confirm(
            "Close a room",
            "Close a room: everyone in it is taken out, and its operators, bans and topic are forgotten.",
            "Close room",
            [Field("room", "&Room", default, required=True)],
            lambda v: self._send("close", room=v["room"]),
        )

    def ask_unban(self) -> None:
        target = _selected(self.bans_view)
        if not target:
            return
        kind = "address" if _is_address(target) else "nick"
        self._confirm(
            "Lift a ban",
            f"Lift the server ban on the {kind} {target}?",
            "Unban",
            [],
            lambda v: (
                self._send_address("unban_address", target)
                if kind == "address"
                else self._send("unban", target=target)
            ),
        )

    def _send_address(self, op: str, address: str, **fields) -> None:
        if not _is_address(address):
            self.say_outcome(f"Not sent: {address!r} is not an IP address or network.", False)
            return
        self._send(op, address=address, **fields)

    def _with_duration(self, values: dict[str, str], send) -> None:
        try:
            duration = _duration(values)
        except ValueError:
            self.say_outcome(f"Not sent: {values['hours']!r} is not a number of hours.", False)
            return
        if duration and not 0 < duration["duration"] < 1e9:
            self.say_outcome("Not sent: the number of hours must be more than 0 (and finite).", False)
            return
        send(duration)

    def _done(self, done: codec.Done) -> None:
        op = (done.ref or "").removeprefix("admin:")
        if not (done.ref or "").startswith("admin:") or op not in _STALE_AFTER:
            return
        self._asked = None
        self.say_outcome(f"Done: {op.replace('_', ' ')} {done.target}", True)
        self._soon(_STALE_AFTER[op])

    def _error(self, code: str, message: str) -> None:
        if self._asked is not None:
            self._asked = None
            self.say_outcome(f"Refused ({code}): {message}", False)
