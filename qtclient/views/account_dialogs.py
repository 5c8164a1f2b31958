"""Account → Change password… and Delete account…: the logged-in account's
own ACCOUNT requests, checked here before they go, answered in the window."""

from __future__ import annotations

from collections.abc import Callable

from PyQt6.QtWidgets import (
    QCheckBox,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from chatproto import codec
from qtclient.session import ChatSession
from qtclient.views.windows import SessionDialog

MIN_PASSWORD, MAX_PASSWORD = 8, 1024  # docs/protocol.md 15.2


def _secret() -> QLineEdit:
    edit = QLineEdit()
    edit.setEchoMode(QLineEdit.EchoMode.Password)
    return edit


class _AccountDialog(SessionDialog):
    """Sends one ACCOUNT op at a time and shows its DONE or ERROR."""

    op = ""

    def __init__(self, session: ChatSession, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self._waiting = False
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Close
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        self.listen(session.requestDone, self._done)
        self.listen(session.errorReceived, self._error)

    def submit(self) -> None: ...

    def succeeded(self, done: codec.Done) -> None: ...

    def _send(self, password: str, new_password: str | None = None) -> None:
        if self.sent(self.session.change_account(self.op, password, new_password)):
            self._waiting = True
            self.ok_button.setEnabled(False)
            self.say_outcome("Asking the server…", True)

    def _done(self, done: codec.Done) -> None:
        if self._waiting and done.ref == f"account:{self.op}":
            self._waiting = False
            self.ok_button.setEnabled(True)
            self.succeeded(done)

    def _error(self, code: str, message: str) -> None:
        if self._waiting:
            self._waiting = False
            self.ok_button.setEnabled(True)
            self.say_outcome(f"Refused ({code}): {message}", False)


class ChangePasswordDialog(_AccountDialog):
    """The current password, the new one twice. ``changed`` is told the new
    one once the server has taken it (to update a saved copy)."""

    op = "password"

    def __init__(
        self, session: ChatSession, changed: Callable[[str], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(session, parent)
        self._changed = changed
        self.setWindowTitle("Change password")
        self.current, self.new, self.again = _secret(), _secret(), _secret()
        self.ok_button.setText("&Change password")
        form = QFormLayout()
        form.addRow("&Current password", self.current)
        form.addRow("&New password", self.new)
        form.addRow("Ne&w password again", self.again)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"The password of {session.nick}: at least {MIN_PASSWORD} characters."))
        layout.addLayout(form)
        layout.addWidget(self.outcome)
        layout.addWidget(self.buttons)
        self._new_password = ""

    def problem(self) -> str | None:
        """What is wrong with the input, in words; None if it can go."""
        current, new = self.current.text(), self.new.text()
        if not current:
            return "Enter your current password."
        if len(new) < MIN_PASSWORD:
            return f"The new password needs at least {MIN_PASSWORD} characters."
        if len(new) > MAX_PASSWORD:
            return f"The new password may have at most {MAX_PASSWORD} characters."
        if new != self.again.text():
            return "The two new passwords differ."
        if new == current:
            return "The new password is the current one."
        if self.session.nick and new.casefold() == self.session.nick.casefold():
            return "The password can't be your nick."
        return None

    def submit(self) -> None:
        problem = self.problem()
        if problem is not None:
            self.say_outcome(problem, False)
            return
        self._new_password = self.new.text()
        self._send(self.current.text(), self._new_password)

    def succeeded(self, done: codec.Done) -> None:
        for edit in (self.current, self.new, self.again):
            edit.clear()
        self.say_outcome("Password changed: use the new one from now on.", True)
        self._changed(self._new_password)
        self._new_password = ""


class DeleteAccountDialog(_AccountDialog):
    """The current password and an explicit yes; ``deleted`` is told once
    the server has done it (to forget a saved password)."""

    op = "delete"

    def __init__(
        self, session: ChatSession, deleted: Callable[[], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(session, parent)
        self._deleted = deleted
        self.setWindowTitle("Delete account")
        self.current = _secret()
        self.sure = QCheckBox(
            f"Delete the account {session.nick}: its password, remembered rooms and read markers "
            "go, and anyone may take the nick"
        )
        self.ok_button.setText("&Delete account")
        self.ok_button.setEnabled(False)
        self.sure.toggled.connect(lambda _: self._allow())
        self.current.textChanged.connect(lambda _: self._allow())
        form = QFormLayout()
        form.addRow("&Current password", self.current)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.sure)
        layout.addWidget(self.outcome)
        layout.addWidget(self.buttons)

    def _allow(self) -> None:
        self.ok_button.setEnabled(self.sure.isChecked() and bool(self.current.text()) and not self._waiting)

    def submit(self) -> None:
        if self.sure.isChecked() and self.current.text():
            self._send(self.current.text())

    def succeeded(self, done: codec.Done) -> None:
        self.current.clear()
        self.sure.setChecked(False)
        self.say_outcome(f"Account deleted: you go on as the guest {done.target}.", True)
        self._deleted()
