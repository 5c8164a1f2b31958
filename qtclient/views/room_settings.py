"""Room → Settings…: an operator's switches (invite-only, topic lock,
moderated, secret), the room's key and member limit, inviting a nick, and
the room's ban list; and what the client knows of each room's modes (from
ROOM, then from the mode records said in the room)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from PyQt6.QtCore import QObject
from PyQt6.QtWidgets import (
    QCheckBox,
    QDialogButtonBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from chatproto import codec
from chatproto.codec import ProtocolError
from chatproto.rules import normalise_nick, room_key
from qtclient.session import ChatSession
from qtclient.views.windows import SessionDialog

#: The largest member limit a server takes (docs/protocol.md 15.5).
MAX_LIMIT = 100_000

#: The modes a ROOM and a mode record carry, as Modes fields.
_FIELDS = ("invite_only", "topic_lock", "moderated", "secret", "key", "limit")


@dataclass(frozen=True)
class Modes:
    invite_only: bool = False
    topic_lock: bool = False
    moderated: bool = False
    secret: bool = False
    key: str = ""
    limit: int = 0

    def describe(self) -> str:
        said = [
            "invite-only" if self.invite_only else "open to everyone",
            "topic set by operators only" if self.topic_lock else "anyone may set the topic",
        ]
        if self.moderated:
            said.append("moderated: only voiced members and operators speak")
        if self.secret:
            said.append("secret: not listed")
        if self.key:
            said.append(f"key {self.key!r}")
        if self.limit:
            said.append(f"at most {self.limit} members")
        return ", ".join(said)


class RoomModes(QObject):
    """Each room's modes as last said by the server: a ROOM carries them (a
    version 2 server), and a ``mode`` record in the room changes them."""

    def __init__(self, session: ChatSession, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._modes: dict[str, Modes] = {}
        session.roomJoined.connect(self._room)
        session.messageReceived.connect(self._message)

    def get(self, room: str) -> Modes | None:
        """None: the server never said (it sends no modes in ROOM)."""
        return self._modes.get(room_key(room))

    def _room(self, state: codec.RoomState, _reset: bool = False) -> None:
        if state.invite_only is None and state.topic_lock is None:
            return
        self._modes[room_key(state.room)] = Modes(
            bool(state.invite_only),
            bool(state.topic_lock),
            bool(state.moderated),
            bool(state.secret),
            state.key or "",
            state.limit or 0,
        )

    def _message(self, message: codec.MessagePacket) -> None:
        action = message.action or {}
        if action.get("op") != "mode" or not message.room:
            return
        key = room_key(message.room)
        modes = self._modes.get(key, Modes())
        changed = {name: action[name] for name in _FIELDS if action.get(name) is not None}
        self._modes[key] = replace(modes, **changed)


class RoomSettingsDialog(SessionDialog):
    """One room's settings. Anyone may look; the server refuses a change
    from a non-operator, and the window says so beforehand."""

    def __init__(
        self,
        session: ChatSession,
        room: str,
        modes: RoomModes,
        is_operator: bool,
        open_bans: Callable[[str], object],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(session, parent)
        self.room, self.modes = room, modes
        self._asked: str | None = None
        self.setWindowTitle(f"Settings of {room}")
        self.current = QLabel()
        self.current.setWordWrap(True)
        self.invite_only = QCheckBox("&Invite-only: operators, invited nicks and its accounts may join")
        self.topic_lock = QCheckBox("&Lock the topic: only operators may set it")
        self.moderated = QCheckBox("&Moderated: only voiced members and operators may speak")
        self.secret = QCheckBox("&Secret: listed only to its members")
        self.key = QLineEdit()
        self.key.setPlaceholderText("none")
        self.key.setMaxLength(23)
        self.limit = QSpinBox()
        self.limit.setRange(0, MAX_LIMIT)
        self.limit.setSpecialValueText("none")
        key_row = QHBoxLayout()
        for text, field in (("&Key to join:", self.key), ("Member &limit:", self.limit)):
            label = QLabel(text)
            label.setBuddy(field)
            key_row.addWidget(label)
            key_row.addWidget(field, 1 if field is self.key else 0)
        self.apply_button = QPushButton("&Apply")
        self.apply_button.clicked.connect(self.apply)
        modes_box = QGroupBox("Modes")
        column = QVBoxLayout(modes_box)
        column.addWidget(self.current)
        column.addWidget(self.invite_only)
        column.addWidget(self.topic_lock)
        column.addWidget(self.moderated)
        column.addWidget(self.secret)
        column.addLayout(key_row)
        column.addWidget(self.apply_button)

        self.invitee = QLineEdit()
        self.invitee.setPlaceholderText("nick")
        self.invite_button = QPushButton("In&vite")
        self.invite_button.clicked.connect(self.invite)
        self.invitee.returnPressed.connect(self.invite)
        invite_row = QHBoxLayout()
        invite_row.addWidget(QLabel("Invite a nick:"))
        invite_row.addWidget(self.invitee, 1)
        invite_row.addWidget(self.invite_button)

        self.bans_button = QPushButton("&Ban list…")
        self.bans_button.clicked.connect(lambda: open_bans(self.room))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        if not is_operator:
            note = QLabel(f"You are not an operator of {room}: the server will refuse changes.")
            note.setWordWrap(True)
            layout.addWidget(note)
        layout.addWidget(modes_box)
        layout.addLayout(invite_row)
        layout.addWidget(self.bans_button)
        layout.addWidget(self.outcome)
        layout.addWidget(buttons)
        self.listen(session.messageReceived, self._record)
        self.listen(session.errorReceived, self._error)
        self.show_modes()

    def show_modes(self) -> None:
        known = self.modes.get(self.room)
        if known is None:
            self.current.setText("The server has not said this room's modes; what you apply here is set.")
            return
        self.current.setText(f"Now: {known.describe()}.")
        self.invite_only.setChecked(known.invite_only)
        self.topic_lock.setChecked(known.topic_lock)
        self.moderated.setChecked(known.moderated)
        self.secret.setChecked(known.secret)
        self.key.setText(known.key)
        self.limit.setValue(known.limit)

    def apply(self) -> None:
        key = self.key.text().strip()
        if any(c in " ," or not c.isprintable() for c in key):
            self.say_outcome("Not sent: a key has no spaces, commas or control characters.", False)
            return
        modes = {
            "invite_only": self.invite_only.isChecked(),
            "topic_lock": self.topic_lock.isChecked(),
            "moderated": self.moderated.isChecked(),
            "secret": self.secret.isChecked(),
            "key": key,
            "limit": self.limit.value(),
        }
        known = self.modes.get(self.room)
        if known is not None:  # only what the user changed: never undo another operator's change
            modes = {name: value for name, value in modes.items() if getattr(known, name) != value}
        if not modes:
            self.say_outcome("Nothing to apply: these are the room's modes already.", False)
            return
        if self.sent(self.session.moderate(self.room, "mode", **modes)):
            self._asked = "mode"

    def invite(self) -> None:
        try:
            nick = normalise_nick(self.invitee.text().strip())
        except ProtocolError as e:
            self.say_outcome(f"Not sent: {e.message}.", False)
            return
        if self.sent(self.session.moderate(self.room, "invite", nick)):
            self._asked = "invite"

    def _record(self, message: codec.MessagePacket) -> None:
        action = message.action or {}
        if not message.room or room_key(message.room) != room_key(self.room):
            return
        if action.get("op") == "mode":  # ours or another operator's: what is shown follows
            self.show_modes()
        if self._asked is not None and message.ref == f"moderate:{self._asked}":
            if self._asked == "invite":
                self.invitee.clear()
            self._asked = None
            self.say_outcome(f"Done: {message.text}", True)

    def _error(self, code: str, message: str) -> None:
        if self._asked is not None:
            self._asked = None
            self.say_outcome(f"Refused ({code}): {message}", False)
