"""The menu items that open the moderation, admin and account windows (Room →
Settings…, Room → Ban list…, Server → Connections, Account → …), each window
made once and raised when asked for again."""

from __future__ import annotations

from collections.abc import Callable

from PyQt6.QtCore import QObject
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import QMainWindow, QMenu

from chatproto.rules import room_key
from qtclient import saved_passwords
from qtclient.saved_passwords import SessionPasswords
from qtclient.session import ChatSession
from qtclient.views.account_dialogs import ChangePasswordDialog, DeleteAccountDialog
from qtclient.views.connect_dialog import Target
from qtclient.views.moderation import AdminDialog, BanListDialog
from qtclient.views.room_settings import RoomModes, RoomSettingsDialog
from qtclient.views.windows import SessionDialog, WindowKeeper


def menu_holding(window: QMainWindow, action: QAction) -> QMenu | None:
    """The menu bar's menu that has ``action``."""
    for entry in window.menuBar().actions():
        menu = entry.menu()
        if menu is not None and action in menu.actions():
            return menu
    return None


class DialogMenus(QObject):
    """Adds Room → Settings… and the Account menu to ``window``, and opens
    each window at most once (a room's windows once per room).

    What it needs of the main window comes as callables: the room shown,
    whether we operate a room, and where we are connected (to update a
    saved password)."""

    def __init__(
        self,
        window: QMainWindow,
        session: ChatSession,
        room_menu: QMenu | None,
        current_room: Callable[[], str],
        is_operator: Callable[[str], bool],
        target: Callable[[], Target | None],
        memory: SessionPasswords | None = None,
    ) -> None:
        super().__init__(window)
        self.window, self.session = window, session
        self._current_room, self._is_operator, self._target = current_room, is_operator, target
        self.memory = memory if memory is not None else saved_passwords.remembered
        self.keeper = WindowKeeper(window)
        self.modes = RoomModes(session, self)

        self.settings_action = QAction("Room &settings…", window)
        self.settings_action.triggered.connect(lambda: self.open_room_settings(self._current_room()))
        if room_menu is None:
            room_menu = window.menuBar().addMenu("&Room")
        room_menu.insertAction(room_menu.actions()[0] if room_menu.actions() else None, self.settings_action)

        account = window.menuBar().addMenu("&Account")
        self.change_password_action = QAction("&Change password…", window)
        self.delete_account_action = QAction("&Delete account…", window)
        self.change_password_action.triggered.connect(lambda: self.open_change_password())
        self.delete_account_action.triggered.connect(lambda: self.open_delete_account())
        account.addActions([self.change_password_action, self.delete_account_action])

        session.stateChanged.connect(lambda *_: self._enable())
        session.welcomed.connect(lambda _: self._enable())
        session.requestDone.connect(lambda _: self._enable())
        self._enable()

    def _enable(self) -> None:
        online = self.session.machine.logged_in
        self.settings_action.setEnabled(online)
        for action in (self.change_password_action, self.delete_account_action):
            action.setEnabled(online and self.session.machine.account)

    # -- the windows ----------------------------------------------------------------

    def open_admin(self) -> SessionDialog:
        return self.keeper.show("admin", lambda: AdminDialog(self.session, self.window))

    def open_bans(self, room: str | None) -> SessionDialog | None:
        if not room:
            return None
        return self.keeper.show(
            ("bans", room_key(room)), lambda: BanListDialog(self.session, room, self.window)
        )

    def open_room_settings(self, room: str | None) -> SessionDialog | None:
        if not room:
            return None
        return self.keeper.show(
            ("settings", room_key(room)),
            lambda: RoomSettingsDialog(
                self.session, room, self.modes, self._is_operator(room), self.open_bans, self.window
            ),
        )

    def open_change_password(self) -> SessionDialog:
        return self.keeper.show(
            "password", lambda: ChangePasswordDialog(self.session, self._password_changed, self.window)
        )

    def open_delete_account(self) -> SessionDialog:
        return self.keeper.show(
            "delete", lambda: DeleteAccountDialog(self.session, self._account_deleted, self.window)
        )

    # -- saved passwords follow the account ------------------------------------------------

    def _password_changed(self, password: str) -> None:
        """Reconnecting already uses the new one (the session keeps it); a
        copy in the keyring or in memory is replaced too."""
        target = self._target()
        if target is not None:
            saved_passwords.replace(target.host, target.port, target.nick, password, self.memory)

    def _account_deleted(self) -> None:
        target = self._target()
        if target is not None:
            saved_passwords.replace(target.host, target.port, target.nick, None, self.memory)
