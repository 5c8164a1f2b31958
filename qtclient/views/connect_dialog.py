"""Where to connect and as whom; refuses what can't work, and says why."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from chatproto.codec import ProtocolError
from chatproto.rules import normalise_nick
from chatproto.tls import PIN, VERIFY, TLSSettings
from qtclient import saved_passwords

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    nick: str
    tls: TLSSettings | None = None
    password: str | None = field(default=None, repr=False)
    register: bool = False


def check_target(
    host: str,
    port: str,
    nick: str,
    tls: TLSSettings | None = None,
    password: str = "",
    register: bool = False,
) -> Target:
    """The connection target, or ValueError with a message for the user."""
    host = host.strip()
    if not host:
        raise ValueError("Enter the server's host name or address.")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
            raise ValueError(f"{host!r} is not a valid host name or IP address.") from None
    port = port.strip()
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"Port must be a number from 1 to 65535, not {port!r}.")
    try:
        nick = normalise_nick(nick.strip())
    except ProtocolError as e:
        raise ValueError(f"Nickname: {e.message}.") from None
    if tls is not None and tls.ca_file and not os.path.isfile(tls.ca_file):
        raise ValueError(f"CA file {tls.ca_file!r} does not exist.")
    if register and len(password) < 8:
        raise ValueError("To register the nick, choose a password of at least 8 characters.")
    return Target(host.strip("[]"), int(port), nick, tls, password or None, register)


class ConnectDialog(QDialog):
    """Host, port, nick, password and TLS; the password from the keyring or
    this session's memory when one was kept for that nick@host:port."""

    def __init__(
        self,
        parent=None,
        settings: QSettings | None = None,
        memory: saved_passwords.SessionPasswords | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to a chat server")
        self.settings = settings or QSettings()
        self.memory = memory if memory is not None else saved_passwords.remembered
        self.host = QLineEdit(self.settings.value("host", "127.0.0.1"))
        self.port = QLineEdit(str(self.settings.value("port", "7777")))
        self.nick = QLineEdit(self.settings.value("nick", ""))
        self.nick.setPlaceholderText("letters, digits, _ - .")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("empty: a guest nick")
        self.register = QCheckBox("Register this nick (it becomes yours)")
        # Registering: the password twice, as a typo would lose the nick.
        self.password_again = QLineEdit()
        self.password_again.setEchoMode(QLineEdit.EchoMode.Password)
        self.password_again.setPlaceholderText("the password again")
        self.remember = QCheckBox("Save the password in the system keyring")
        self.remember_here = QCheckBox("Remember for this session (in memory, until the app quits)")
        self.keyring_note = QLabel()
        self.keyring_note.setWordWrap(True)
        self.keyring_note.setStyleSheet("color: #555")
        reason = saved_passwords.unavailable_reason()
        if reason is not None:
            self.remember.setEnabled(False)
            self.remember.setToolTip("No system keyring here: the password is never saved elsewhere.")
            self.keyring_note.setText(f"The password can't be saved: {reason}.")
        else:
            self.keyring_note.hide()
        # Files go over the server's web site (its --web), which may be elsewhere.
        self.web_address = QLineEdit()
        self.web_address.setPlaceholderText("default: http://HOST:8080 (https with TLS)")
        self.web_address.setToolTip("Where the server's web site is: files are shared through it")
        self._fill_saved()
        for field_ in (self.host, self.port, self.nick):
            field_.editingFinished.connect(self._fill_saved)
        self.use_tls = QCheckBox("Use TLS")
        self.use_tls.setChecked(self.settings.value("tls", "false") == "true")
        self.trust = QComboBox()
        self.trust.addItem("Verify the certificate (system CAs or CA file)", VERIFY)
        self.trust.addItem("Trust on first use (self-signed servers)", PIN)
        self.trust.setCurrentIndex(max(0, self.trust.findData(self.settings.value("trust", VERIFY))))
        self.ca_file = QLineEdit(self.settings.value("ca_file", ""))
        self.ca_file.setPlaceholderText("optional: a PEM file of CAs to trust")
        self.use_tls.toggled.connect(self._tls_toggled)
        self.trust.currentIndexChanged.connect(lambda _: self._tls_toggled(self.use_tls.isChecked()))
        self.error = QLabel()
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)
        self.error.hide()
        form = QFormLayout()
        form.addRow("&Host", self.host)
        form.addRow("&Port", self.port)
        form.addRow("&Nickname", self.nick)
        form.addRow("Pass&word", self.password)
        form.addRow("", self.register)
        form.addRow("Password a&gain", self.password_again)
        self._again_label = form.labelForField(self.password_again)
        self.register.toggled.connect(self._registering)
        self._registering(self.register.isChecked())
        form.addRow("", self.remember)
        form.addRow("", self.remember_here)
        form.addRow("", self.keyring_note)
        form.addRow("", self.use_tls)
        form.addRow("&Trust", self.trust)
        form.addRow("&CA file", self.ca_file)
        form.addRow("&Web (files)", self.web_address)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Connect")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.target: Target | None = None
        self._tls_toggled(self.use_tls.isChecked())

    def _web_key(self) -> str:
        return f"web_address/{self.host.text().strip().strip('[]')}:{_port(self.port.text())}"

    def _fill_saved(self) -> None:
        """The web address and the password kept for this nick@host:port, if
        any and none is typed."""
        if not self.web_address.text():
            self.web_address.setText(str(self.settings.value(self._web_key(), "")))
        if self.password.text():
            return
        where = (self.host.text().strip(), _port(self.port.text()), self.nick.text().strip())
        in_memory = self.memory.load(*where)
        saved = in_memory or (saved_passwords.load(*where) if self.remember.isEnabled() else None)
        if saved:
            self.password.setText(saved)
            self.remember_here.setChecked(in_memory is not None)
            self.remember.setChecked(in_memory is None)

    def _tls_toggled(self, on: bool) -> None:
        self.trust.setEnabled(on)
        self.ca_file.setEnabled(on and self.trust.currentData() == VERIFY)

    def tls_settings(self) -> TLSSettings | None:
        if not self.use_tls.isChecked():
            return None
        mode = self.trust.currentData()
        ca_file = self.ca_file.text().strip() or None
        return TLSSettings(mode, ca_file if mode == VERIFY else None)

    def _registering(self, on: bool) -> None:
        self.password_again.setVisible(on)
        self._again_label.setVisible(on)

    def accept(self) -> None:
        try:
            if self.register.isChecked() and self.password.text() != self.password_again.text():
                raise ValueError("The two passwords differ: type the same one twice to register.")
            web = self.web_address.text().strip()
            if web and not web.startswith(("http://", "https://")):
                raise ValueError("The web address starts with http:// or https://.")
            self.target = check_target(
                self.host.text(),
                self.port.text(),
                self.nick.text(),
                self.tls_settings(),
                self.password.text(),
                self.register.isChecked(),
            )
        except ValueError as e:
            self.error.setText(str(e))
            self.error.show()
            return
        self.settings.setValue("host", self.target.host)
        self.settings.setValue("port", str(self.target.port))
        self.settings.setValue("nick", self.target.nick)
        self.settings.setValue("tls", "true" if self.use_tls.isChecked() else "false")
        self.settings.setValue("trust", self.trust.currentData())
        self.settings.setValue("ca_file", self.ca_file.text().strip())
        if web:
            self.settings.setValue(self._web_key(), web.rstrip("/"))
        else:
            self.settings.remove(self._web_key())
        if self.remember.isEnabled():  # the keyring, or nowhere: never QSettings
            keep = self.target.password if self.remember.isChecked() else None
            saved_passwords.save(self.target.host, self.target.port, self.target.nick, keep)
        kept_here = self.target.password if self.remember_here.isChecked() else None
        self.memory.save(self.target.host, self.target.port, self.target.nick, kept_here)
        super().accept()


def _port(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0
