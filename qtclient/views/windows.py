"""What the moderation, admin and account windows share: listening to the
session only while open, asking before acting, showing the server's answer,
and one window of each kind (one per room for room windows)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from PyQt6.QtCore import QEvent, QObject
from PyQt6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from qtclient.session import ChatSession

_OK_STYLE = "color: #1b5e20"
_ERROR_STYLE = "color: #b00020"


class SessionDialog(QDialog):
    """A window fed by the session's signals. It listens only while open:
    closing it disconnects every slot, so a closed window asks the server
    nothing and is not kept alive by the session."""

    def __init__(self, session: ChatSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._listening: list[tuple[object, Callable]] = []
        self.outcome = QLabel()
        self.outcome.setWordWrap(True)
        self.outcome.hide()

    def listen(self, signal, slot: Callable) -> None:
        signal.connect(slot)
        self._listening.append((signal, slot))

    def stop_listening(self) -> None:
        for signal, slot in self._listening:
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):  # already gone with the session
                pass
        self._listening.clear()

    def done(self, result: int) -> None:
        self.stop_listening()
        super().done(result)

    def sent(self, went: bool) -> bool:
        """``went``: whether the session sent the request; if not (offline), say so here."""
        if not went:
            self.say_outcome("Not sent: not connected. Try again when the connection is back.", False)
        return went

    def say_outcome(self, text: str, ok: bool) -> None:
        """The server's answer (or why nothing was sent), in the window."""
        self.outcome.setStyleSheet(_OK_STYLE if ok else _ERROR_STYLE)
        self.outcome.setText(text)
        self.outcome.show()


@dataclass(frozen=True)
class Field:
    """One input a confirmation asks for along with the yes."""

    name: str
    label: str
    default: str = ""
    secret: bool = False
    required: bool = False
    min_length: int = 0


class ConfirmDialog(QDialog):
    """Asks before an action the user can't take back with a click, and
    takes its details (a reason, an address, a password) at the same time.
    Not modal to the app: the chat goes on while it is open."""

    def __init__(
        self,
        parent: QWidget | None,
        title: str,
        question: str,
        action: str,
        fields: Sequence[Field],
        on_confirm: Callable[[dict[str, str]], None],
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self._on_confirm = on_confirm
        self._specs = list(fields)
        self.fields: dict[str, QLineEdit] = {}
        form = QFormLayout()
        for spec in self._specs:
            edit = QLineEdit(spec.default)
            if spec.secret:
                edit.setEchoMode(QLineEdit.EchoMode.Password)
            self.fields[spec.name] = edit
            form.addRow(spec.label, edit)
        self.error = QLabel()
        self.error.setStyleSheet(_ERROR_STYLE)
        self.error.setWordWrap(True)
        self.error.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = QPushButton(action)
        self.ok_button.setDefault(True)
        buttons.addButton(self.ok_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        text = QLabel(question)
        text.setWordWrap(True)
        layout.addWidget(text)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def accept(self) -> None:
        values = {name: edit.text().strip() for name, edit in self.fields.items()}
        for spec in self._specs:
            value = values[spec.name]
            if spec.required and not value:
                self._refuse(f"{spec.label.replace('&', '')} is needed.")
                return
            if value and len(value) < spec.min_length:
                self._refuse(f"{spec.label.replace('&', '')}: at least {spec.min_length} characters.")
                return
        super().accept()
        self._on_confirm(values)

    def _refuse(self, why: str) -> None:
        self.error.setText(why)
        self.error.show()


class WindowKeeper(QObject):
    """One window per key: asked again, the open one is raised instead of a
    second made. Closing the owner (the main window) closes them all."""

    def __init__(self, owner: QWidget) -> None:
        super().__init__(owner)
        self._open: dict[Hashable, QDialog] = {}
        owner.installEventFilter(self)

    def show(self, key: Hashable, make: Callable[[], QDialog]) -> QDialog:
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = make()
            window.finished.connect(lambda _result, key=key, window=window: self._forget(key, window))
        window.show()
        window.raise_()
        window.activateWindow()
        return window

    def get(self, key: Hashable) -> QDialog | None:
        return self._open.get(key)

    def _forget(self, key: Hashable, window: QDialog) -> None:
        if self._open.get(key) is window:
            del self._open[key]
            window.deleteLater()

    def close_all(self) -> None:
        for window in list(self._open.values()):
            window.close()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close and watched is self.parent():
            self.close_all()
        return False
