"""Passwords in the desktop client: where none can be saved the connect
dialog says why and can keep it for the session; ``--connect`` takes one
from a file, the environment or the keyring, never from the command line."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import pytest_twisted
from keyring.backend import KeyringBackend
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QDialogButtonBox
from test_console_and_app import ROOT, AppProcess, Raw
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from waiting import signal_fired, until

from chatproto import codec
from qtclient import saved_passwords
from qtclient.app import PASSWORD_ENV, parse_args, startup_password
from qtclient.saved_passwords import SessionPasswords
from qtclient.views.connect_dialog import ConnectDialog, check_target

PASSWORD = "correct horse"


class MemoryKeyring(KeyringBackend):
    """A keyring that works, in a dict."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.kept.get((service, username))

    def set_password(self, service, username, password):
        self.kept[(service, username)] = password

    def delete_password(self, service, username):
        self.kept.pop((service, username), None)


def _use_keyring(backend):
    import keyring

    before = keyring.get_keyring()
    keyring.set_keyring(backend)
    return lambda: keyring.set_keyring(before)


@pytest.fixture
def memory_keyring():
    ring = MemoryKeyring()
    restore = _use_keyring(ring)
    yield ring
    restore()


@pytest.fixture
def no_keyring():
    from keyring.backends import fail

    restore = _use_keyring(fail.Keyring())
    yield
    restore()


def connect_button(dialog):
    return dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)


def test_without_a_keyring_the_dialog_says_why_and_remembers_for_the_session(
    qtbot, settings, tmp_path, no_keyring
):
    memory = SessionPasswords()
    dialog = ConnectDialog(None, settings, memory)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.remember.isEnabled()
    assert not dialog.keyring_note.isHidden()
    assert "keyring backend fail.Keyring" in dialog.keyring_note.text()
    assert "No recommended backend was available" in dialog.keyring_note.text(), "keyring's own words"
    dialog.nick.clear()
    qtbot.keyClicks(dialog.nick, "alice")
    qtbot.keyClicks(dialog.password, PASSWORD)
    qtbot.mouseClick(dialog.remember_here, Qt.MouseButton.LeftButton)
    assert dialog.remember_here.isChecked()
    qtbot.mouseClick(connect_button(dialog), Qt.MouseButton.LeftButton)
    assert dialog.result() == ConnectDialog.DialogCode.Accepted
    assert memory.load("127.0.0.1", 7777, "alice") == PASSWORD
    settings.sync()
    assert PASSWORD not in (tmp_path / "client.ini").read_text(), "memory only, never settings"

    again = ConnectDialog(None, settings, memory)
    qtbot.addWidget(again)
    assert again.password.text() == PASSWORD, "Connect… again does not ask"
    assert again.remember_here.isChecked()
    qtbot.mouseClick(again.remember_here, Qt.MouseButton.LeftButton)  # unticked: forgotten
    again.accept()
    assert memory.load("127.0.0.1", 7777, "alice") is None
    assert ConnectDialog(None, settings, memory).password.text() == ""


def test_with_a_keyring_the_saved_password_is_filled_in(qtbot, settings, memory_keyring):
    saved_passwords.save("127.0.0.1", 7777, "alice", PASSWORD)
    settings.setValue("nick", "alice")
    dialog = ConnectDialog(None, settings, SessionPasswords())
    qtbot.addWidget(dialog)
    assert dialog.remember.isEnabled() and dialog.keyring_note.isHidden()
    assert dialog.password.text() == PASSWORD and dialog.remember.isChecked()
    dialog.nick.setText("bob")
    dialog.password.clear()
    dialog.nick.editingFinished.emit()
    assert dialog.password.text() == "", "bob has nothing saved"


def test_the_startup_password_comes_from_a_file_the_environment_or_the_keyring(tmp_path, memory_keyring):
    target = check_target("127.0.0.1", "7777", "alice")
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\nignored\n")
    secret.chmod(0o600)
    environ = {PASSWORD_ENV: "from the environment", "HOME": "/"}
    args = parse_args(["--connect", "127.0.0.1:7777", "--nick", "alice", "--password-file", str(secret)])
    assert startup_password(args, target, environ, saved_passwords.find) == PASSWORD
    assert PASSWORD_ENV not in environ, "read once, then gone from the environment"
    plain = parse_args(["--connect", "127.0.0.1:7777", "--nick", "alice"])
    environ = {PASSWORD_ENV: "from the environment"}
    assert startup_password(plain, target, environ, saved_passwords.find) == "from the environment"
    assert startup_password(plain, target, {}, saved_passwords.find) is None
    saved_passwords.save("127.0.0.1", 7777, "alice", "from the keyring")
    assert startup_password(plain, target, {}, saved_passwords.find) == "from the keyring"
    missing = parse_args(["--connect", "h:1", "--nick", "alice", "--password-file", str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="can't read the password file"):
        startup_password(missing, target, {}, saved_passwords.find)
    with pytest.raises(SystemExit):
        parse_args(["--password", PASSWORD])  # not an option: ps would show it
    with pytest.raises(SystemExit):
        parse_args(["--password-file", str(secret)])  # without --connect it would do nothing


@pytest_twisted.inlineCallbacks
def test_connect_at_start_with_a_password_file_logs_in_to_the_account(server, sessions, reactor, tmp_path):
    first = sessions()
    registered = signal_fired(first.requestDone, lambda done: done.op == "register")
    first.connect_to("127.0.0.1", server.port, "alice", password=PASSWORD, register=True)
    yield registered
    yield first.disconnect()
    watcher = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), Raw())
    watcher.send(codec.Login("watcher", 1))
    yield until(lambda: any(isinstance(p, codec.Welcome) for p in watcher.packets))
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    env.update(
        QT_QPA_PLATFORM="offscreen", PYTHONPATH=ROOT, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path)
    )
    app = AppProcess()
    argv = [sys.executable, "-m", "qtclient", "--connect", f"127.0.0.1:{server.port}", "--nick", "alice"]
    argv += ["--password-file", str(secret)]
    process = reactor.spawnProcess(app, sys.executable, argv, env=env, path=ROOT)
    try:
        yield until(
            lambda: any(isinstance(p, codec.Joined) and p.nick == "alice" for p in watcher.packets),
            timeout=20,
        )
    finally:
        process.signalProcess(signal.SIGTERM)
        code = yield app.ended.addTimeout(10, reactor)
        watcher.transport.loseConnection()
    assert code == 0, app.output.decode(errors="replace")
    assert b"nick_registered" not in app.output


# -- Account → Change password… and Delete account… -------------------------------------


@pytest_twisted.inlineCallbacks
def test_change_password_checks_the_input_and_updates_the_saved_copies(
    window, server, sessions, qtbot, memory_keyring
):
    from test_accounts_ui import account

    assert not window.dialogs.change_password_action.isEnabled(), "a guest has no password to change"
    yield account(window, server)
    assert window.dialogs.change_password_action.isEnabled()
    where = ("127.0.0.1", server.port, "alice")
    saved_passwords.save(*where, PASSWORD)
    saved_passwords.remembered.save(*where, PASSWORD)
    window.dialogs.change_password_action.trigger()
    dialog = window.dialogs.keeper.get("password")
    assert dialog.isVisible()

    def type_in(current, new, again):
        for edit, text in ((dialog.current, current), (dialog.new, new), (dialog.again, again)):
            edit.clear()
            qtbot.keyClicks(edit, text)
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)

    type_in(PASSWORD, "battery", "battery")
    assert "at least 8" in dialog.outcome.text()
    type_in(PASSWORD, "battery staple", "battery stapel")
    assert "differ" in dialog.outcome.text()
    type_in("not my password", "battery staple", "battery staple")
    yield until(lambda: dialog.outcome.text().startswith("Refused (bad_password)"))
    assert saved_passwords.load(*where) == PASSWORD, "nothing changed"
    type_in(PASSWORD, "battery staple", "battery staple")
    yield until(lambda: dialog.outcome.text().startswith("Password changed"))
    assert dialog.current.text() == "" and dialog.new.text() == ""
    assert saved_passwords.load(*where) == "battery staple", "the keyring's copy follows"
    assert saved_passwords.remembered.load(*where) == "battery staple", "so does the session's"
    saved_passwords.remembered.save(*where, None)

    old = sessions()
    refused = signal_fired(old.errorReceived, lambda code, message: code == "bad_password")
    old.connect_to("127.0.0.1", server.port, "alice", password=PASSWORD)
    yield refused
    new = sessions()
    welcomed = signal_fired(new.welcomed)
    new.connect_to("127.0.0.1", server.port, "alice", password="battery staple")
    (welcome,) = yield welcomed
    assert welcome.account


@pytest_twisted.inlineCallbacks
def test_delete_account_needs_the_password_and_an_explicit_yes(window, server, sessions, qtbot):
    from test_accounts_ui import account

    yield account(window, server)
    memory = window.dialogs.memory
    memory.save("127.0.0.1", server.port, "alice", PASSWORD)
    window.dialogs.delete_account_action.trigger()
    dialog = window.dialogs.keeper.get("delete")
    assert dialog.isVisible() and not dialog.ok_button.isEnabled()
    qtbot.keyClicks(dialog.current, PASSWORD)
    assert not dialog.ok_button.isEnabled(), "not without the explicit yes"
    qtbot.mouseClick(dialog.sure, Qt.MouseButton.LeftButton)
    assert dialog.ok_button.isEnabled()
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    yield until(lambda: dialog.outcome.text().startswith("Account deleted"))
    assert memory.load("127.0.0.1", server.port, "alice") is None, "a deleted account's password is forgotten"
    assert not window.dialogs.delete_account_action.isEnabled(), "a guest now"
    yield window.session.disconnect()  # the guest lets the nick go
    other = sessions()
    refused = signal_fired(other.errorReceived)
    other.connect_to("127.0.0.1", server.port, "alice", password=PASSWORD)
    (code, _message) = yield refused
    assert code == "bad_password", "no account by that name any more"
