"""The chat window: rooms and their members on the left; the current room's
topic, transcript and input on the right."""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping

from PyQt6.QtCore import QEvent, QSettings, Qt, QTimer, QUrl, pyqtSignal
from PyQt6.QtGui import QAction, QDesktopServices, QImage, QKeyEvent, QKeySequence
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QSystemTrayIcon,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from chatproto import codec
from chatproto.limits import DEFAULTS
from chatproto.rules import DEFAULT_ROOM, nick_key, room_key
from qtclient import session as states
from qtclient.models import (
    ACTION_PREFIX,
    NICK_ROLE,
    OWN,
    ROOM_ROLE,
    PeerModel,
    TranscriptModel,
)
from qtclient.session import ChatSession
from qtclient.transfers import Transfers
from qtclient.views.completion import NickCompleter
from qtclient.views.connect_dialog import ConnectDialog, Target
from qtclient.views.conversation import ComposerNote, EmojiPicker, typing_words
from qtclient.views.files import FileShare, ImageDialog, TransfersPanel, web_address_for
from qtclient.views.join_dialog import JoinDialog
from qtclient.views.search import SearchPanel
from qtclient.views.transcript import TranscriptView

_LEAVE_WORDS = {
    "quit": "left",
    "connection_lost": "lost the connection",
    "timeout": "timed out",
    "kicked": "was kicked",
    "slow_consumer": "fell too far behind",
    "server_shutdown": "left: server shutting down",
    "part": "left the room",
    "closed": "left: the room was closed",
}


def removed(left: codec.Left) -> str:
    """Why the user is no longer in a room it didn't leave (a kick, a ban,
    the room closed), in words, with the reason given."""
    said = {"kicked": "You were removed from {}", "closed": "{} was closed"}.get(
        left.reason, "You are no longer in {}"
    )
    return said.format(left.room) + (f": {left.message}" if left.message else "")


COMMANDS = (
    "/join ROOM [key], /part [reason], /topic TEXT, /list, /msg NICK text, /me action, /away [message], "
    "/back, /nick NEWNICK, /quit; operators: "
    "/kick NICK [reason], /ban NICK [reason], /unban NICK, /op NICK, /deop NICK, /voice NICK, /devoice NICK, "
    "/invite NICK, /bans"
)
#: The room tree's width in a window wide enough for it, pixels.
TREE_WIDTH = 200
#: Commands that are a MODERATE of the room shown, with a target.
_MODERATION_COMMANDS = ("kick", "ban", "unban", "op", "deop", "voice", "devoice", "invite")


#: What a DONE says, in words: ACCOUNT's ops on the user's own account, ADMIN's on others.
_DONE_WORDS = {
    "register": "the nick {target} is registered: it is yours now",
    "password": "the password of {target} is changed",
    "delete": "the account {target} is deleted",
    "close": "connection {target} closed",
    "kick": "{target} disconnected from the server",
    "ban": "{target} banned from the server",
    "unban": "{target} may use the server again",
    "ban_address": "address {target} banned",
    "unban_address": "address {target} may connect again",
    "reset": "the password of {target} is reset",
    "away": "you are away (/back when you are back)",
    "back": "you are back",
}


def done_words(done: codec.Done) -> str:
    return _DONE_WORDS.get(done.op, "done: {op} {target}").format(op=done.op, target=done.target)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def local_paths(mime) -> list[str]:
    """The local files a drop or a paste carries (none if any is not local)."""
    if not mime.hasUrls():
        return []
    urls = mime.urls()
    return [url.toLocalFile() for url in urls] if all(url.isLocalFile() for url in urls) else []


class ChatInput(QPlainTextEdit):
    """Enter sends; Shift+Enter starts a new line; Up in an empty input edits
    the user's last message; Esc cancels a reply or an edit. A pasted image
    (a screenshot) or pasted or dropped files are shared, not typed."""

    submitted = pyqtSignal(str)
    editLast = pyqtSignal()
    cancelled = pyqtSignal()
    imagePasted = pyqtSignal(QImage)
    filesGiven = pyqtSignal(list)  # [path]
    #: Tab: complete the nick before the cursor; returns whether it did (else Tab moves the focus).
    complete: Callable[[], bool] | None = None

    def canInsertFromMimeData(self, source) -> bool:
        return source.hasImage() or bool(local_paths(source)) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source) -> None:
        paths = local_paths(source)
        if paths:
            self.filesGiven.emit(paths)
        elif source.hasImage() and not source.hasText():
            image = source.imageData()
            if isinstance(image, QImage) and not image.isNull():
                self.imagePasted.emit(image)
        else:
            super().insertFromMimeData(source)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setPlaceholderText(
            "Message (Enter sends, Shift+Enter for a new line, Up edits your last; "
            "/join, /part, /topic, /list, /msg, /me, /away, /back, /nick)"
        )
        self.setMaximumHeight(self.fontMetrics().lineSpacing() * 4 + 12)
        self.setTabChangesFocus(True)

    def event(self, event) -> bool:
        # Tab moves the focus before keyPressEvent sees it: a nick to complete comes first.
        if (
            event.type() == QEvent.Type.KeyPress
            and event.key() == Qt.Key.Key_Tab
            and not event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
            and self.complete is not None
            and self.complete()
        ):
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            text = self.toPlainText()
            if text.strip():
                self.submitted.emit(text)
            return
        if enter:
            self.insertPlainText("\n")
            return
        if event.key() == Qt.Key.Key_Up and not self.toPlainText():
            self.editLast.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.cancelled.emit()
            return
        super().keyPressEvent(event)


class SettingsPins(MutableMapping):
    """Trusted certificate fingerprints, per host:port, kept in QSettings."""

    def __init__(self, settings: QSettings) -> None:
        self.settings = settings

    def _key(self, where: str) -> str:
        return "tls_pins/" + where.replace("/", "_")

    def __getitem__(self, where: str) -> str:
        value = self.settings.value(self._key(where))
        if value is None:
            raise KeyError(where)
        return value

    def __setitem__(self, where: str, fingerprint: str) -> None:
        self.settings.setValue(self._key(where), fingerprint)
        self.settings.sync()

    def __delitem__(self, where: str) -> None:
        self.settings.remove(self._key(where))

    def __iter__(self):
        self.settings.beginGroup("tls_pins")
        keys = self.settings.childKeys()
        self.settings.endGroup()
        return iter(keys)

    def __len__(self) -> int:
        return len(list(iter(self)))


class MainWindow(QMainWindow):
    def __init__(
        self,
        reactor,
        settings: QSettings | None = None,
        session: ChatSession | None = None,
        batch_ms: int = 50,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.settings = settings or QSettings()
        self.setWindowTitle("Chat")
        self.resize(900, 560)
        self.session = session or ChatSession(reactor)
        self.session.setParent(self)
        self.peers = PeerModel(self, ask_members=lambda room, after: self.session.members(room, after=after))
        self.batch_ms = batch_ms
        # One transcript per room, by key; ``current`` is the one shown.
        self.transcripts: dict[str, TranscriptModel] = {}
        self.room_names: dict[str, str] = {}
        self.topics: dict[str, str] = {}
        # Shown before the server has named its default room.
        self.current = room_key(DEFAULT_ROOM)
        self.transcript = self._transcript_for(DEFAULT_ROOM)
        self.join_dialog: JoinDialog | None = None
        self.connect_dialog: ConnectDialog | None = None
        self.tray: QSystemTrayIcon | None = None
        self.target: Target | None = None
        self.console = None
        self._reconnect_at = 0.0
        self._connected_note = ""
        self._login_rooms: set[str] = set()  # rooms whose ROOM the login brings (room keys)
        self._marked: dict[str, int] = {}  # room key -> the seq last marked read
        self._unreachable_said = False  # one line per outage, not one per retry
        #: What the composer does with the next Enter: ("reply" | "edit", room key, seq), or None.
        self.composing: tuple[str, str, int] | None = None
        self.typing_now: dict[str, list[str]] = {}  # room key -> who is typing there
        self.emoji_picker = None
        self.confirm_box = None
        self.away_dialog = None
        self.nick_dialog = None
        from twisted.web.client import Agent

        self.transfers_panel = TransfersPanel()
        web = web_address_for("127.0.0.1", 0, False)
        self.files = FileShare(
            self.session, Transfers(Agent(reactor), self.session.files_token, web), self.transfers_panel, self
        )
        self._open_after_join: dict[str, int] = {}  # room key -> the seq to show once joined
        self._build()
        self._wire()
        self._show_state(states.DISCONNECTED, "")

    # -- layout -------------------------------------------------------------------

    def _build(self) -> None:
        self.peer_view = QTreeView()
        self.peer_view.setModel(self.peers)
        self.peer_view.setHeaderHidden(True)
        self._expand_branches()
        self.peer_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)

        # A table, not a tree: each row's height is set once, when it
        # arrives, so an append costs the same at 10,000 rows as at 10.
        self.transcript_view = TranscriptView(images=self.files.thumbnails)
        self.transcript_view.setModel(self.transcript)

        self.topic_label = QLabel()
        self.topic_label.setWordWrap(True)
        self.topic_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.topic_label.setStyleSheet("padding: 4px 2px; border-bottom: 1px solid #ddd;")

        self.input = ChatInput()
        self.completer = NickCompleter(
            self.input,
            self.peers,
            lambda: self.room_names.get(self.current, ""),
            lambda room, prefix, limit: self.session.members(room, prefix=prefix, limit=limit),
        )
        self.input.complete = self.completer.complete
        self.composer_note = ComposerNote()
        self.typing_label = QLabel()
        self.typing_label.setStyleSheet("color: #777777; font-style: italic; padding: 0 4px;")
        self.typing_label.setFixedHeight(self.typing_label.fontMetrics().lineSpacing() + 2)
        self.send_button = QPushButton("Send")
        self.attach_button = QPushButton("📎")
        self.attach_button.setToolTip("Share files (or paste a screenshot, or drop files on the window)")
        self.attach_button.setFixedWidth(self.attach_button.sizeHint().height() + 8)
        row = QHBoxLayout()
        row.addWidget(self.attach_button, alignment=Qt.AlignmentFlag.AlignBottom)
        row.addWidget(self.input)
        row.addWidget(self.send_button, alignment=Qt.AlignmentFlag.AlignBottom)
        self.setAcceptDrops(True)

        self.key_prompt: QInputDialog | None = None  # asks for a room's key (+k)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(
            "background: #fdecea; color: #8a1c1c; border: 1px solid #f5c2c0; padding: 6px;"
        )
        self.banner.hide()

        right = QWidget()
        column = QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.banner)
        column.addWidget(self.topic_label)
        column.addWidget(self.transcript_view)
        column.addWidget(self.typing_label)
        column.addWidget(self.composer_note)
        column.addWidget(self.transfers_panel)
        column.addLayout(row)

        self.splitter = splitter = QSplitter()
        splitter.addWidget(self.peer_view)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([TREE_WIDTH, 700])
        self._tree_squeezed = False  # narrowed by a small window, to grow back with it
        self.peer_view.setMinimumWidth(110)
        self.setCentralWidget(splitter)

        self.state_label = QLabel()
        self.rtt_label = QLabel()
        self.statusBar().addWidget(self.state_label, 1)
        self.statusBar().addPermanentWidget(self.rtt_label)

        chat = self.menuBar().addMenu("&Chat")
        self.connect_action = QAction("&Connect…", self, shortcut=QKeySequence("Ctrl+K"))
        self.disconnect_action = QAction("&Disconnect", self)
        self.join_action = QAction("&Join room…", self, shortcut=QKeySequence("Ctrl+J"))
        self.part_action = QAction("&Leave room", self)
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        chat.addActions([self.connect_action, self.disconnect_action])
        chat.addSeparator()
        chat.addActions([self.join_action, self.part_action])
        chat.addSeparator()
        self.away_action = QAction("Set &away…", self)
        self.back_action = QAction("I'm &back", self)
        self.back_action.setEnabled(False)
        chat.addActions([self.away_action, self.back_action])
        self.nick_action = QAction("Change &nick…", self)
        self.nick_action.setEnabled(False)
        chat.addAction(self.nick_action)
        chat.addSeparator()
        self.search_action = QAction("&Search messages…", self, shortcut=QKeySequence.StandardKey.Find)
        self.attach_action = QAction("Share &files…", self)
        chat.addActions([self.search_action, self.attach_action])
        self.search_panel = SearchPanel(
            self.session, lambda: self.room_names.get(self.current, ""), self.peers.title, self
        )
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.search_panel)
        self.search_panel.hide()
        chat.addSeparator()
        chat.addAction(quit_action)
        room = self.menuBar().addMenu("&Room")
        self.bans_action = QAction("&Ban list…", self)
        room.addAction(self.bans_action)
        server = self.menuBar().addMenu("&Server")
        self.host_action = QAction("&Host a server…", self)
        self.admin_action = QAction("&Connections (admins)…", self)
        self.admin_action.setEnabled(False)
        server.addActions([self.host_action, self.admin_action])
        self.peer_view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self._mark_timer = QTimer(self)
        self._mark_timer.setSingleShot(True)
        self._mark_timer.setInterval(500)
        self._mark_timer.timeout.connect(self.mark_current_read)
        quit_action.triggered.connect(self.close)

        self._countdown = QTimer(self)
        self._countdown.setInterval(1000)
        self._countdown.timeout.connect(self._tick)
        self._build_admin_menus()

    def _wire(self) -> None:
        s = self.session
        s.stateChanged.connect(self._show_state)
        s.reconnectScheduled.connect(self._reconnect_in)
        s.welcomed.connect(self._welcomed)
        s.roomJoined.connect(self._room_joined)
        s.roomLeft.connect(self._room_left)
        s.topicChanged.connect(self._topic_changed)
        s.roomsListed.connect(self._rooms_listed)
        s.messageReceived.connect(self._message)
        s.historyReceived.connect(self._history)
        s.privateReceived.connect(lambda private: self.transcript.add_private(private))
        s.peerJoined.connect(self._joined)
        s.peerLeft.connect(self._left)
        s.pendingChanged.connect(self.peers.pending)
        s.countChanged.connect(self.peers.set_count)
        s.roomTurnedBig.connect(self.peers.turn_big)
        s.membersReceived.connect(self._members_page)
        s.membersFailed.connect(lambda ref, _room, _code, _message: self.peers.members_failed(ref))
        self.peer_view.verticalScrollBar().valueChanged.connect(self._fetch_shown_members)
        self.peer_view.expanded.connect(self._fetch_shown_members)
        s.sendQueued.connect(self._queued)
        s.sendConfirmed.connect(self._confirmed)
        s.sendFailed.connect(self._send_failed)
        s.errorReceived.connect(self._error)
        s.certificateUnknown.connect(self._certificate_unknown)
        s.connectionLost.connect(self._connection_lost)
        s.reconnected.connect(self._reconnected)
        self.banner.linkActivated.connect(self._banner_link)
        s.rttMeasured.connect(lambda rtt: self.rtt_label.setText(f"RTT {rtt * 1000:.0f} ms"))
        self.input.submitted.connect(self.submit)
        self.send_button.clicked.connect(lambda: self.submit(self.input.toPlainText()))
        self.connect_action.triggered.connect(self.ask_connect)
        self.disconnect_action.triggered.connect(self.session.disconnect)
        self.join_action.triggered.connect(self.ask_join)
        self.part_action.triggered.connect(lambda: self.session.part(self.room_names.get(self.current, "")))
        self.peer_view.clicked.connect(self._tree_clicked)
        self.host_action.triggered.connect(lambda: self.open_console())
        self.admin_action.triggered.connect(lambda: self.open_admin())
        self.bans_action.triggered.connect(lambda: self.open_bans(self.room_names.get(self.current, "")))
        self.peer_view.customContextMenuRequested.connect(self._member_menu)
        s.markMoved.connect(self._mark_moved)
        s.requestDone.connect(lambda done: self.transcript.add_system(done_words(done)))
        s.invitedTo.connect(
            lambda inv: self.transcript.add_system(f"{inv.by} invited you to {inv.room}: /join {inv.room}")
        )
        self.peer_view.doubleClicked.connect(self._peer_double_clicked)
        self.transcript_view.doubleClicked.connect(self._transcript_double_clicked)
        self.transcript_view.linkActivated.connect(lambda url: QDesktopServices.openUrl(QUrl(url)))
        self.transcript_view.verticalScrollBar().valueChanged.connect(self._scrolled)
        self.transcript_view.actions_for = self.message_actions
        self.transcript_view.anchor_tooltip = self._anchor_tooltip
        self.transcript_view.actionRequested.connect(self.message_action)
        self.transcript_view.anchorClicked.connect(self._anchor_clicked)
        self.transcript_view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.transcript_view.customContextMenuRequested.connect(self._transcript_menu)
        self.input.editLast.connect(self.edit_last)
        self.input.cancelled.connect(self.cancel_composing)
        self.input.textChanged.connect(self._input_changed)
        self.composer_note.cancelled.connect(self.cancel_composing)
        s.messageChanged.connect(self._message_changed)
        s.typingChanged.connect(self._typing_changed)
        s.statusChanged.connect(self._status_changed)
        s.keyNeeded.connect(self._key_needed)
        s.requestDone.connect(self._away_done)
        self.away_action.triggered.connect(self.ask_away)
        self.nick_action.triggered.connect(self.ask_nick)
        s.requestDone.connect(self._account_done)
        s.nickChanged.connect(self._renamed)
        self.back_action.triggered.connect(lambda: self.session.set_back())
        self._wire_sharing()

    # -- rooms ---------------------------------------------------------------------------

    def _transcript_for(self, name: str) -> TranscriptModel:
        key = room_key(name)
        self.room_names.setdefault(key, name)
        transcript = self.transcripts.get(key)
        if transcript is None:
            transcript = self.transcripts[key] = TranscriptModel(self, batch_ms=self.batch_ms)
            transcript.own_nick = self.session.nick
            transcript.rowsInserted.connect(self._rows_inserted)
        return transcript

    def show_room(self, name: str) -> None:
        """Make ``name``'s transcript the one shown; its unread count goes."""
        key = room_key(name)
        if key != self.current:
            self.cancel_composing()
        self.current = key
        self.transcript = self._transcript_for(name)
        self.transcript_view.setModel(self.transcript)
        self.transcript_view.scrollToBottom()
        self.peers.set_unread(name, 0, False)
        self._mark_timer.start()
        item = self.peers.room_item(name)
        if item is not None:
            self.peer_view.setCurrentIndex(item.index())
        self._show_topic()
        self._show_typing()

    def _show_topic(self) -> None:
        name = self.room_names.get(self.current, "")
        topic = self.topics.get(self.current, "")
        if self.peers.kind(name) == "direct":
            title = self.peers.title(name)
            self.topic_label.setText(f"<b>✉ {_html(title)}</b> — direct conversation")
            return
        self.topic_label.setText(f"<b>{_html(name)}</b>" + (f" — {_html(topic)}" if topic else " — no topic"))

    def ask_join(self) -> None:
        """The Join room… dialog, filled from the server's LIST."""
        limit = self.session.limits.get("room_name_length", DEFAULTS.room_name_length)
        dialog = self.join_dialog = JoinDialog(self, limit)
        dialog.accepted.connect(lambda: dialog.room and self.session.join(dialog.room))
        dialog.finished.connect(lambda _: self._dialog_closed("join_dialog", dialog))
        self.session.list_rooms()
        dialog.open()  # window-modal, without a nested event loop

    def _dialog_closed(self, name: str, dialog) -> None:
        if getattr(self, name) is dialog:
            setattr(self, name, None)
        dialog.deleteLater()

    # -- actions --------------------------------------------------------------------

    def ask_connect(self) -> None:
        dialog = self.connect_dialog = ConnectDialog(self, self.settings)
        dialog.accepted.connect(lambda: self.connect_to(dialog.target))
        dialog.finished.connect(lambda _: self._dialog_closed("connect_dialog", dialog))
        dialog.open()

    def connect_to(self, target: Target) -> None:
        if self.target is not None and (target.host, target.port, target.nick) != (
            self.target.host,
            self.target.port,
            self.target.nick,
        ):
            self._forget_rooms()  # another account or server: nothing of the last one stays
        self.target = target
        configured = self.settings.value(f"web_address/{target.host}:{target.port}")
        self.files.transfers.web_address = web_address_for(
            target.host,
            target.port,
            target.tls is not None,
            configured if isinstance(configured, str) else None,
        )
        self.session.connect_to(
            target.host,
            target.port,
            target.nick,
            target.tls,
            SettingsPins(self.settings),
            password=target.password,
            register=target.register,
        )

    def submit(self, text: str) -> None:
        """What the user typed: a command or a message. Kept in the input if it can't go."""
        if not text.strip():
            return
        if text.startswith("/"):
            command, _, rest = text[1:].partition(" ")
            if command == "quit":
                self.close()
                return
            if command == "me":
                if not rest.strip():
                    self.transcript.add_system("usage: /me does something")
                    return
                if self.session.say(ACTION_PREFIX + rest, self.room_names.get(self.current)) is not None:
                    self.input.clear()
                return
            if command == "msg":
                to, _, body = rest.partition(" ")
                if not to or not body:
                    self.transcript.add_system("usage: /msg NICK text")
                    return
                if self.session.message_to(to, body) is not None:
                    self.input.clear()
                return
            if command == "away":
                if self.session.set_away(rest.strip()):
                    self.input.clear()
                return
            if command == "back":
                if self.session.set_back():
                    self.input.clear()
                return
            if command == "nick":
                if self.change_nick(rest.strip()):
                    self.input.clear()
                return
            if self._room_command(command, rest.strip()):
                self.input.clear()
            return
        limit = self.session.limits.get("max_text", DEFAULTS.max_text)
        if len(text) > limit:
            self.transcript.add_system(f"message is {len(text)} characters; the limit is {limit}")
            return
        room = self.room_names.get(self.current)
        mode, key, seq = self.composing or ("", "", 0)
        if mode == "edit" and key == self.current:
            if self.session.edit(room or "", seq, text):
                self.cancel_composing()
                self.input.clear()
            return
        reply = seq if mode == "reply" and key == self.current else None
        if self.session.say(text, room, reply) is not None:
            self.cancel_composing()
            self.input.clear()

    def _room_command(self, command: str, rest: str) -> bool:
        """/join, /part, /topic, /list; False (and a hint) if not understood."""
        here = self.room_names.get(self.current, "")
        if command == "join" and rest:
            words = rest.split()
            return self.session.join(words[0], words[1] if len(words) > 1 else None)
        if command == "part":
            return self.session.part(here, rest or None)
        if command == "topic":
            if not rest:
                self.transcript.add_system(f"topic of {here}: {self.topics.get(self.current) or '(none)'}")
                return True
            return self.session.set_topic(here, rest)
        if command == "list":
            return self.session.list_rooms()
        if command in _MODERATION_COMMANDS:
            target, _, reason = rest.partition(" ")
            if not target:
                self.transcript.add_system(
                    f"usage: /{command} NICK" + (" [reason]" if command in ("kick", "ban") else "")
                )
                return False
            return self.session.moderate(here, command, target, reason.strip() or None)
        if command == "bans":
            self.open_bans(here)
            return True
        usage = {"join": "usage: /join ROOM"}.get(command, f"unknown command /{command} (try {COMMANDS})")
        self.transcript.add_system(usage)
        return False

    def open_console(self, endpoint: str | None = None, start: bool = False):
        from qtclient.views.console import ServerConsole

        if self.console is None:
            self.console = ServerConsole(self.reactor, endpoint or "tcp:7777:interface=127.0.0.1")
            self.console.started.connect(self._hosted_started)
        self.console.show()
        self.console.raise_()
        if start:
            self.console.start()
        return self.console

    def _hosted_started(self, address: str) -> None:
        if self.session.state in (states.DISCONNECTED, states.GIVEN_UP) and self.target is None:
            host, _, port = address.rpartition(":")
            self.settings.setValue("host", host if host not in ("0.0.0.0", "::") else "127.0.0.1")
            self.settings.setValue("port", port)

    # -- session events ---------------------------------------------------------------

    def _show_state(self, state: states.State, detail: str) -> None:
        if state is not states.RECONNECTING:
            self._countdown.stop()
        text = {
            states.DISCONNECTED: "Disconnected",
            states.GIVEN_UP: f"Disconnected ({detail})",
            states.CONNECTING: f"Connecting to {detail}…",
            states.TLS_CHECK: "Checking the server's certificate…",
            states.LOGGING_IN: "Logging in…",
            states.CATCHING_UP: "Catching up…",
            states.CONNECTED: f"Connected to {detail} as {self.session.nick}",
            states.RECONNECTING: "Reconnecting…",
        }[state]
        self.state_label.setText(text)
        online = state is states.CONNECTED
        if online:
            self.banner.hide()
            self._unreachable_said = False
        # Typing is allowed whenever a session exists: messages queue until login.
        offline = state in (states.DISCONNECTED, states.GIVEN_UP)
        logged_in = state in (states.CONNECTED, states.CATCHING_UP)
        self.join_action.setEnabled(logged_in)  # a join asked offline would never be made
        self.nick_action.setEnabled(logged_in and not self.session.machine.account)
        self.part_action.setEnabled(logged_in)
        if state in (states.DISCONNECTED, states.GIVEN_UP, states.RECONNECTING):
            self.peers.clear_members()  # nobody is known to be there until the rooms come back
        self.input.setEnabled(not offline)
        self.send_button.setEnabled(not offline)
        self.disconnect_action.setEnabled(not offline)
        if not online:
            self.rtt_label.setText("")
        if state is states.GIVEN_UP and detail:
            self.transcript.add_system(f"disconnected: {detail}")

    def _message(self, message: codec.MessagePacket) -> None:
        name = message.room or self.session.default_room
        key = room_key(name)
        mention = self._transcript_for(name).add_message(message, self.session.nick)
        if self.peers.kind(name) == "direct" and message.sender != self.session.nick:
            mention = True  # a direct message is for the user, as a mention is
        action = message.action or {}
        if action.get("op") in ("op", "deop") and action.get("target"):
            self.peers.set_op(name, action["target"], action["op"] == "op")
        if action.get("op") in ("voice", "devoice") and action.get("target"):
            self.peers.set_voice(name, action["target"], action["op"] == "voice")
        if key == self.current and self.reading():
            self._mark_timer.start()  # seen: the read marker follows, shortly
        else:
            unread, mentioned = self.peers.unread(name) if key in self.peers.rooms else (0, False)
            self.peers.set_unread(name, unread + 1, mentioned or mention)
        if mention:
            self._notify_mention(name, message)

    def _notify_mention(self, room: str, message: codec.MessagePacket) -> None:
        """A mention while the window is not in front: the desktop is told."""
        if self.isActiveWindow():
            return
        QApplication.alert(self)
        if QSystemTrayIcon.isSystemTrayAvailable():
            if self.tray is None:
                self.tray = QSystemTrayIcon(self.windowIcon(), self)
                self.tray.show()
            where = "to you" if self.peers.kind(room) == "direct" else f"in {room}"
            self.tray.showMessage(f"{message.sender} {where}", message.text[:200])

    def _room_joined(self, state: codec.RoomState, reset: bool) -> None:
        transcript = self._transcript_for(state.room)
        self.room_names[room_key(state.room)] = state.room
        if reset:
            transcript.clear()
        transcript.own_nick = self.session.nick
        self.peers.room_state(state)
        self.peer_view.setExpanded(self.peers.room_item(state.room).index(), True)
        self.peers.fetch_first(state.room)
        self.topics[room_key(state.room)] = state.topic
        transcript.add_history(state.history, self.session.nick, older=False)
        key = room_key(state.room)
        if key in self._login_rooms:  # a room the login brought back: it goes on from here
            self._login_rooms.discard(key)
            if self._connected_note:
                transcript.add_system(self._connected_note)
        elif state.kind == "direct":
            transcript.add_system(f"direct conversation with {self.peers.title(state.room)}")
        else:
            transcript.add_system(f"you joined {state.room}")
        if key in self._open_after_join:  # joined to open a search hit
            self.open_at(state.room, self._open_after_join.pop(key))
        elif state.ref is not None or room_key(state.room) == self.current:
            self.show_room(state.room)  # the user asked to join: take them there
        elif state.unread:
            self.peers.set_unread(state.room, state.unread, False)  # the server's count

    def _room_left(self, left: codec.Left) -> None:
        self.peers.room_gone(left.room)
        key = room_key(left.room)
        self.transcripts.pop(key, None)
        if key == self.current:
            names = self.peers.room_names()
            self.show_room(names[0] if names else self.session.default_room)
            self.transcript.add_system(f"you left {left.room}")
        if left.reason != "part":  # put out, not leaving: say so where it is seen at once
            self.show_problem(removed(left))

    def _forget_rooms(self) -> None:
        """Another account or server: its rooms, transcripts and topics go;
        the room shown stays, empty, until the new login's rooms come."""
        for name in self.peers.room_names():
            self.peers.room_gone(name)
        shown = self.transcripts.get(self.current)
        self.transcripts = {self.current: shown} if shown is not None else {}
        for transcript in self.transcripts.values():
            transcript.clear()
        self.topics.clear()
        self._marked.clear()
        self._show_topic()

    def _topic_changed(self, topic: codec.TopicChanged) -> None:
        key = room_key(topic.room)
        self.topics[key] = topic.topic
        what = f"set the topic: {topic.topic}" if topic.topic else "cleared the topic"
        self._transcript_for(topic.room).add_system(f"{topic.by} {what}", topic.ts)
        if key == self.current:
            self._show_topic()

    def _rooms_listed(self, rooms: list) -> None:
        if self.join_dialog is not None:
            self.join_dialog.fill(rooms)
            return
        self.transcript.add_system(f"{len(rooms)} room{'' if len(rooms) == 1 else 's'}:")
        for info in rooms:
            topic = f" — {info.topic}" if info.topic else ""
            self.transcript.add_system(f"  {info.room} ({info.members}){topic}")

    def _confirmed(self, ref: str, seq: int) -> None:
        for transcript in self.transcripts.values():
            transcript.confirm(ref)

    def _reconnected(self, missed: int) -> None:
        plural = "" if missed == 1 else "s"
        self.transcript.add_system(f"reconnected ({missed} missed message{plural} fetched)")

    def _reconnect_in(self, delay: float) -> None:
        self._reconnect_at = time.monotonic() + delay
        self._tick()
        self._countdown.start()

    def _tick(self) -> None:
        left = max(0, round(self._reconnect_at - time.monotonic()))
        self.state_label.setText(f"Reconnecting in {left} s")

    def reading(self) -> bool:
        """Whether the user can be reading: the window shown, in front, not minimised."""
        return self.isVisible() and self.isActiveWindow() and not self.isMinimized()

    def mark_current_read(self) -> None:
        """What the user can see of the room shown is read: the server's
        marker moves, on every device of the account. Nothing is read in a
        hidden, minimised or background window."""
        machine = self.session.machine
        track = machine.rooms.get(self.current)
        if track is None or not track.last_seq or not machine.logged_in or not self.reading():
            return
        view = self.transcript_view
        bottom = view.rowAt(view.viewport().height() - 1)
        seen = self.transcript.newest_seq_through(self.transcript.rowCount() - 1 if bottom < 0 else bottom)
        if seen > self._marked.get(self.current, 0):
            self._marked[self.current] = seen
            self.session.mark_read(track.name, min(seen, track.last_seq))

    def changeEvent(self, event) -> None:
        """Coming to the front (or back from minimised): what is shown is read now."""
        super().changeEvent(event)
        if event.type() in (QEvent.Type.ActivationChange, QEvent.Type.WindowStateChange):
            if self.reading():
                self.peers.set_unread(self.room_names.get(self.current, ""), 0, False)
                self._mark_timer.start()

    def _connection_lost(self) -> None:
        self.transcript.add_system("connection lost")
        self._marked.clear()  # the server may have lost what was marked

    def show_internal_error(self, summary: str) -> None:
        """The safety net caught a bug: say so, and keep going."""
        self.show_problem(f"Something went wrong inside the client ({summary}); details are in its log.")

    def _mark_moved(self, marked: codec.Marked) -> None:
        if room_key(marked.room) != self.current:
            _, mentioned = (
                self.peers.unread(marked.room) if room_key(marked.room) in self.peers.rooms else (0, 0)
            )
            self.peers.set_unread(marked.room, marked.unread, bool(mentioned and marked.unread))

    def open_bans(self, room: str):
        """Room → Ban list… (or /bans): the room's one ban list, shown."""
        return self.dialogs.open_bans(room)

    def open_admin(self):
        """Server → Connections (admins)…: the one admin window, shown."""
        return self.dialogs.open_admin()

    def _key_needed(self, room: str, why: str) -> None:
        """A JOIN refused for want of the room's key: ask for it (one question
        at a time, not blocking the window) and JOIN again with it."""
        self.transcript.add_system(why)
        if self.key_prompt is not None:
            self.key_prompt.close()
        prompt = self.key_prompt = QInputDialog(self)
        prompt.setWindowTitle(f"Key of {room}")
        prompt.setLabelText(f"{room} has a key. Enter it to join:")
        prompt.textValueSelected.connect(lambda key: key.strip() and self.session.join(room, key.strip()))
        prompt.open()

    def _member_menu(self, position) -> None:
        menu = self.member_menu(self.peer_view.indexAt(position))
        if menu is not None:
            menu.popup(self.peer_view.viewport().mapToGlobal(position))

    def member_menu(self, index) -> QMenu | None:
        """A message to the member (a direct conversation between accounts, a
        whisper otherwise); then kick, ban, make or remove operator, enabled
        for operators of the room, only what applies to that member (no
        kicking yourself, no making an operator of an operator), and none in
        a direct conversation, which has no operators."""
        from qtclient.models import ID_ROLE, OP_ROLE, VOICE_ROLE

        nick, room_key_ = index.data(NICK_ROLE), index.parent().data(ROOM_ROLE)
        if not nick and index.data(ROOM_ROLE):
            return self.room_menu(self.room_names.get(index.data(ROOM_ROLE), index.data(ROOM_ROLE)))
        if not nick or not room_key_:
            return None
        room = self.room_names.get(room_key_, room_key_)
        yourself = index.data(ID_ROLE) == self.session.my_id
        menu = QMenu(self)
        if not yourself:
            message = menu.addAction(f"Message {nick}…")
            message.triggered.connect(lambda: self._peer_double_clicked(index))
        if self.peers.kind(room) == "direct":
            return menu if menu.actions() else None
        if not yourself:
            menu.addSeparator()
        operator = self.peers.is_op(room, self.session.my_id)
        for label, op in (
            *(() if yourself else (("Kick", "kick"), ("Ban", "ban"))),
            ("Remove operator", "deop") if index.data(OP_ROLE) else ("Make operator", "op"),
            ("Take voice from", "devoice") if index.data(VOICE_ROLE) else ("Give voice to", "voice"),
        ):
            action = menu.addAction(f"{label} {nick}")
            action.setEnabled(operator)
            action.triggered.connect(lambda _, op=op: self.session.moderate(room, op, nick))
        return menu

    def room_menu(self, room: str) -> QMenu | None:
        """A big room's row: list its members again from the start (members
        who joined unfollowed since its list reached its end are missing)."""
        if not self.peers.is_lazy(room):
            return None
        menu = QMenu(self)
        refresh = menu.addAction("Refresh member list")
        refresh.triggered.connect(lambda: self.peers.relist(room))
        return menu

    def _welcomed(self, welcome: codec.Welcome) -> None:
        if welcome.default_room and not self.peers.rooms and self.current == room_key(DEFAULT_ROOM):
            # Before the first ROOM: what was shown belongs to the server's default room.
            transcript = self.transcripts.pop(self.current)
            self.current = room_key(welcome.default_room)
            self.transcripts[self.current] = transcript
            self.room_names[self.current] = welcome.default_room
        for transcript in self.transcripts.values():
            transcript.own_nick = welcome.nick
        self.peers.own_nick = welcome.nick
        self.peers.welcome(welcome)
        self._expand_branches()
        self._login_rooms = set(self.session.machine.rooms)
        # Said in each room after its history, where the user reads on from.
        self._connected_note = f"connected to {welcome.server} as {welcome.nick}" + (
            f" — {welcome.motd}" if welcome.motd else ""
        )
        self.setWindowTitle(f"Chat — {welcome.nick} @ {welcome.server}")
        self.admin_action.setEnabled(bool(welcome.admin))

    def _expand_branches(self) -> None:
        """The two branches open (their rows alone: not every peer under them)."""
        self.peer_view.setExpanded(self.peers.pending_branch.index(), True)
        for name in self.peers.room_names():
            self.peer_view.setExpanded(self.peers.room_item(name).index(), True)

    def _history(self, room: str, messages, more: bool, direction: str) -> None:
        older = direction == "before"
        transcript = self._transcript_for(room)
        transcript.add_history(messages, self.session.nick, older=older)
        if (
            older and messages and transcript is self.transcript
        ):  # keep the line the user was looking at in view
            self.transcript_view.scrollTo(
                self.transcript.index(len(messages), 0), QAbstractItemView.ScrollHint.PositionAtTop
            )

    def _members_page(self, ref: str, page: codec.Members, prefix: str | None) -> None:
        self.peers.members_page(ref, page, prefix)
        if prefix is not None:
            self.completer.answered(ref, page)
        QTimer.singleShot(0, self._fetch_shown_members)  # a page that doesn't fill the tree: the next

    def _fetch_shown_members(self, *_) -> None:
        """A big room's next page once the end of its rows is in view (the
        tree itself asks only for the branch at its very bottom)."""
        view = self.peer_view
        for name in self.peers.room_names():
            item = self.peers.room_item(name)
            if item is None or not self.peers.canFetchMore(item.index()):
                continue
            if not view.isExpanded(item.index()):
                continue
            last = item.child(item.rowCount() - 1) if item.rowCount() else item
            if view.visualRect(last.index()).intersects(view.viewport().rect()):
                self.peers.fetchMore(item.index())

    def _joined(self, joined: codec.Joined) -> None:
        self.peers.joined(joined)
        if joined.room:
            self._transcript_for(joined.room).add_system(f"{joined.nick} joined")

    def _left(self, left: codec.Left) -> None:
        self.peers.left(left)
        why = _LEAVE_WORDS.get(left.reason, f"left ({left.reason})")
        if left.room:
            transcript = self._transcript_for(left.room)
            transcript.add_system(f"{left.nick} {why}" + (f": {left.message}" if left.message else ""))

    def _queued(self, ref: str, packet) -> None:
        to = packet.to if isinstance(packet, codec.Whisper) else None
        room = getattr(packet, "room", None)
        transcript = self._transcript_for(room) if room else self.transcript
        files = getattr(packet, "files", None)
        note = f"📎 {len(files)} file(s)" if files else ""
        text = "\n".join(part for part in (packet.text, note) if part)
        transcript.add_sending(ref, self.session.nick or "me", text, to)

    def _send_failed(self, ref: str, why: str) -> None:
        for transcript in self.transcripts.values():
            transcript.mark_failed(ref, why)

    def _error(self, code: str, message: str) -> None:
        if code == "tls":
            self.show_problem(f"Not connected: {message}.")
        elif code in ("nick_taken", "bad_nick", "unsupported_version"):
            self.show_problem(f"Can't log in: {message}. Choose another nickname in Chat → Connect….")
        elif code in ("nick_registered", "bad_password", "locked_out", "banned"):
            if not self.session.machine.logged_in:  # else an account dialog's refusal: it says so
                self.show_problem(f"Can't log in: {message}. Check the nick and password in Chat → Connect…")
        elif code == "unreachable":
            self.show_problem(f"{message[:1].upper()}{message[1:].rstrip('.')}; retrying.")
            if self._unreachable_said:
                return  # the banner says it; the transcript said it once
            self._unreachable_said = True
        self.transcript.add_system(message)

    def _certificate_unknown(self, where: str, fingerprint: str) -> None:
        self.banner.setTextFormat(Qt.TextFormat.RichText)
        self.banner.setText(
            f"<b>{where}</b> presents a certificate that nobody vouches for. Trust it only if "
            f"this is the server's SHA-256 fingerprint:<br><code>{fingerprint}</code><br>"
            '<a href="trust">Trust and connect</a> &nbsp; <a href="refuse">Refuse</a>'
        )
        self.banner.show()

    def _banner_link(self, href: str) -> None:
        self.banner.hide()
        self.session.trust_certificate(href == "trust")

    def show_problem(self, text: str) -> None:
        """A banner over the transcript: seen at once, and it doesn't block."""
        self.banner.setTextFormat(Qt.TextFormat.PlainText)
        self.banner.setText(text)
        self.banner.show()

    # -- view behaviour --------------------------------------------------------------------

    def _tree_clicked(self, index) -> None:
        key = index.data(ROOM_ROLE)
        if key:
            self.show_room(self.room_names.get(key, key))

    def _peer_double_clicked(self, index) -> None:
        nick = index.data(NICK_ROLE)
        if nick:
            self.input.setPlainText(f"/msg {nick} ")
            self.input.setFocus()
            cursor = self.input.textCursor()
            cursor.movePosition(cursor.MoveOperation.End)
            self.input.setTextCursor(cursor)

    def _transcript_double_clicked(self, index) -> None:
        ref = self.transcript.failed_ref_at(index.row())
        if ref is not None:
            self.transcript.mark_sending(ref)
            self.session.retry(ref)

    def _rows_inserted(self, parent, first: int, last: int) -> None:
        """Follow the conversation if the user was at the bottom (the scroll
        bar's range is not updated yet, so it still says where they were)."""
        if self.sender() is not self.transcript:
            return  # a room not shown
        bar = self.transcript_view.verticalScrollBar()
        appended = last == self.transcript.rowCount() - 1
        if appended and bar.value() >= bar.maximum() - 2 * self.transcript_view.sizeHintForRow(0):
            QTimer.singleShot(0, self.transcript_view.scrollToBottom)

    def _scrolled(self, value: int) -> None:
        bar = self.transcript_view.verticalScrollBar()
        if value == bar.minimum() and bar.maximum() > 0:
            self.session.request_older(self.room_names.get(self.current))
        self._mark_timer.start()  # what came into view is read, shortly

    def resizeEvent(self, event) -> None:
        """A narrow window keeps most of its width for the text: the room
        tree gives up what it has beyond a quarter of it."""
        super().resizeEvent(event)
        tree, rest = self.splitter.sizes()
        share = max(self.peer_view.minimumWidth(), min(TREE_WIDTH, self.width() // 4))
        if tree > share or (tree < share and self._tree_squeezed):
            self._tree_squeezed = share < TREE_WIDTH
            self.splitter.setSizes([share, tree + rest - share])

    # -- conversations: replies, edits, deletion, reactions, typing, away ---------------

    def _line(self, row: int):
        lines = self.transcript.lines
        return lines[row] if 0 <= row < len(lines) else None

    def can_delete(self, line) -> bool:
        """Own messages; any but a moderation record for a room's operator;
        any for a server admin (19.4)."""
        room = self.room_names.get(self.current, "")
        if self.session.machine.admin:
            return True
        if line.record:
            return False
        if line.kind == OWN:
            return True
        return self.peers.kind(room) != "direct" and self.peers.is_op(room, self.session.my_id)

    def message_actions(self, row: int) -> list[str]:
        """What the user may do with the message at ``row`` of the room shown."""
        line = self._line(row)
        if line is None or line.seq is None or line.deleted or not self.session.machine.logged_in:
            return []
        actions = [] if line.record else ["reply", "react"]
        if line.kind == OWN:
            actions.append("edit")
        if self.can_delete(line):
            actions.append("delete")
        return actions

    def message_action(self, action: str, row: int) -> None:
        line = self._line(row)
        if line is None or action not in self.message_actions(row):
            return
        if action == "reply":
            self.start_reply(row)
        elif action == "edit":
            self.start_edit(row)
        elif action == "react":
            self.open_emoji_picker(row)
        elif action == "delete":
            self.ask_delete(row)

    def message_menu(self, row: int) -> QMenu | None:
        """The context menu of the message at ``row``: its actions, and its reactions to take back."""
        from qtclient.views.transcript import ACTIONS

        actions = self.message_actions(row)
        if not actions:
            return None
        menu = QMenu(self)
        for name, label in ACTIONS:
            if name in actions:
                item = menu.addAction(label.split(" ", 1)[1])
                item.triggered.connect(lambda _=False, name=name: self.message_action(name, row))
        line = self._line(row)
        for reaction in line.reactions:
            if self.session.machine.my_reaction(line, reaction.emoji):
                item = menu.addAction(f"Take back {reaction.emoji}")
                item.triggered.connect(lambda _=False, e=reaction.emoji: self.toggle_reaction(row, e))
        return menu

    def _transcript_menu(self, position) -> None:
        view = self.transcript_view
        menu = self.message_menu(view.rowAt(position.y()))
        if menu is not None:
            menu.popup(view.viewport().mapToGlobal(position))

    def start_reply(self, row: int) -> None:
        line = self._line(row)
        if line is None or line.seq is None:
            return
        self.composing = ("reply", self.current, line.seq)
        said = line.text.replace("\n", " ")
        self.composer_note.say(f"Replying to {line.sender or line.nick}: {said[:80]}")
        self.input.setFocus()

    def start_edit(self, row: int) -> None:
        line = self._line(row)
        if line is None or line.seq is None:
            return
        self.composing = ("edit", self.current, line.seq)
        self.composer_note.say("Editing your message — Enter saves, Esc cancels")
        self.input.setPlainText(line.text)
        self.input.setFocus()
        cursor = self.input.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.input.setTextCursor(cursor)

    def edit_last(self) -> None:
        """Up in an empty input: edit the user's last message in the room shown."""
        row = self.transcript.last_own_row()
        if row >= 0:
            self.start_edit(row)
            self.transcript_view.scrollTo(self.transcript.index(row, 0))

    def cancel_composing(self) -> None:
        if self.composing is None:
            return
        editing = self.composing[0] == "edit"
        self.composing = None
        self.composer_note.hide()
        if editing:
            self.input.clear()

    def ask_delete(self, row: int) -> None:
        """Delete the message, once the user says so (window-modal, no nested loop)."""
        from PyQt6.QtWidgets import QMessageBox

        line = self._line(row)
        if line is None or line.seq is None:
            return
        room, seq = self.room_names.get(self.current, ""), line.seq
        box = self.confirm_box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Delete message")
        whose = "your message" if line.kind == OWN else f"this message of {line.sender or line.nick}"
        box.setText(f"Delete {whose} for everyone?")
        box.setInformativeText(line.text[:200])
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.accepted.connect(lambda: self.session.delete(room, seq))
        box.finished.connect(lambda _: self._dialog_closed("confirm_box", box))
        box.open()

    def open_emoji_picker(self, row: int) -> None:
        line = self._line(row)
        if line is None or line.seq is None:
            return
        picker = self.emoji_picker = EmojiPicker(self)
        picker.picked.connect(lambda emoji: self.toggle_reaction(row, emoji))
        picker.aboutToHide.connect(lambda: picker.deleteLater())
        view = self.transcript_view
        rect = view.visualRect(self.transcript.index(row, 2))
        picker.popup(view.viewport().mapToGlobal(rect.bottomLeft()))

    def toggle_reaction(self, row: int, emoji: str) -> None:
        """Add ``emoji`` to the message at ``row``, or take it back if it is ours."""
        line = self._line(row)
        if line is None or line.seq is None:
            return
        on = not self.session.machine.my_reaction(line, emoji)
        self.session.react(self.room_names.get(self.current, ""), line.seq, emoji, on)

    def _anchor_clicked(self, row: int, href: str) -> None:
        kind, _, value = href.partition(":")
        line = self._line(row)
        if line is None or not value.isdigit():
            return
        if kind in ("image", "file"):
            self._file_anchor(line, kind, int(value))
        elif kind == "quote":
            self.show_message(int(value))
        elif kind == "react" and int(value) < len(line.reactions):
            self.toggle_reaction(row, line.reactions[int(value)].emoji)

    def show_message(self, seq: int) -> bool:
        """Scroll to message ``seq`` of the room shown and select it, if loaded."""
        row = self.transcript.row_of_seq(seq)
        if row < 0:
            self.transcript.add_system("the original message is not loaded (scroll up for older ones)")
            return False
        self.transcript_view.scrollTo(
            self.transcript.index(row, 0), QAbstractItemView.ScrollHint.PositionAtCenter
        )
        self.transcript_view.selectRow(row)
        return True

    def _anchor_tooltip(self, row: int, href: str) -> str | None:
        line = self._line(row)
        kind, _, value = href.partition(":")
        if line is None or not value.isdigit():
            return None
        if kind == "react" and int(value) < len(line.reactions):
            reaction = line.reactions[int(value)]
            return f"{', '.join(reaction.by)} reacted with {reaction.emoji}"
        if kind == "quote":
            return "show the original message"
        return None

    def _message_changed(self, room: str, message: codec.Message, kind: str, by: str) -> None:
        transcript = self.transcripts.get(room_key(room))
        if transcript is None:
            return  # a room not shown anywhere: nothing to change
        transcript.apply_change(message)
        composing = self.composing
        if message.deleted and composing and composing[1:] == (room_key(room), message.seq):
            self.cancel_composing()  # nothing left to answer or edit

    def _input_changed(self) -> None:
        room = self.room_names.get(self.current)
        if not room or not self.session.machine.logged_in:
            return
        text = self.input.toPlainText()
        editing = self.composing is not None and self.composing[0] == "edit"
        if not text.strip():
            self.session.typing(room, False)
        elif not text.startswith("/") and not editing:
            self.session.typing(room, True)

    def _typing_changed(self, room: str, nicks: list) -> None:
        self.typing_now[room_key(room)] = list(nicks)
        self._show_typing()

    def _show_typing(self) -> None:
        self.typing_label.setText(typing_words(self.typing_now.get(self.current, [])))

    def _status_changed(self, status: codec.Status) -> None:
        self.peers.set_away(status.room, status.nick, status.away)

    def change_nick(self, nick: str) -> bool:
        """/nick NEWNICK (a guest's); False, with a word why, if it can't go."""
        if not nick:
            self.transcript.add_system("usage: /nick NEWNICK")
            return False
        if " " in nick:
            self.transcript.add_system("a nick has no spaces: /nick NEWNICK")
            return False
        if self.session.machine.account:
            self.transcript.add_system("an account's nick is its name: log in as another account instead")
            return False
        return self.session.change_nick(nick)

    def ask_nick(self) -> None:
        """Chat → Change nick…: a guest's new nick."""
        from PyQt6.QtWidgets import QInputDialog

        dialog = self.nick_dialog = QInputDialog(self)
        dialog.setWindowTitle("Change nick")
        dialog.setLabelText("New nick:")
        dialog.setTextValue(self.session.nick or "")
        dialog.textValueSelected.connect(lambda text: self.change_nick(text.strip()))
        dialog.finished.connect(lambda _: self._dialog_closed("nick_dialog", dialog))
        dialog.open()

    def _account_done(self, done: codec.Done) -> None:
        """Registered (or deleted): a guest may rename, an account may not."""
        if done.op in ("register", "delete"):
            self.nick_action.setEnabled(self.session.machine.logged_in and not self.session.machine.account)

    def _renamed(self, renamed: codec.Renamed) -> None:
        """RENAMED: the member's new nick everywhere it shows; ours in the
        title, the status bar and what our messages are matched by."""
        if renamed.old == renamed.nick:
            return  # our own nick again: nothing changed
        ours = renamed.ref is not None or nick_key(renamed.nick) == nick_key(self.session.nick or "")
        rooms = self.peers.renamed(renamed.old, renamed.nick)
        if ours:
            self.peers.own_nick = renamed.nick
            for transcript in self.transcripts.values():
                transcript.own_nick = renamed.nick
            self.setWindowTitle(f"Chat — {renamed.nick} @ {self.session.machine.server}")
            self.state_label.setText(f"Connected to {self.session.machine.server} as {renamed.nick}")
            self.transcript.add_system(f"you are now known as {renamed.nick}")
            return
        for room in rooms:
            self._transcript_for(room).add_system(f"{renamed.old} is now known as {renamed.nick}")

    def ask_away(self) -> None:
        """Chat → Set away…: the message others see (optional)."""
        from PyQt6.QtWidgets import QInputDialog

        dialog = self.away_dialog = QInputDialog(self)
        dialog.setWindowTitle("Away")
        dialog.setLabelText("Away message (optional):")
        dialog.textValueSelected.connect(lambda text: self.session.set_away(text.strip()))
        dialog.finished.connect(lambda _: self._dialog_closed("away_dialog", dialog))
        dialog.open()

    def _away_done(self, done: codec.Done) -> None:
        if done.op in ("away", "back"):
            self.away_action.setText("Change &away message…" if done.op == "away" else "Set &away…")
            self.back_action.setEnabled(done.op == "away")

    # -- closing -------------------------------------------------------------------------

    # -- files and search (sections 20, 21) ------------------------------------------------

    def _wire_sharing(self) -> None:
        self.attach_button.clicked.connect(self.ask_attach)
        self.attach_action.triggered.connect(self.ask_attach)
        self.search_action.triggered.connect(self.search_panel.start)
        self.search_panel.opened.connect(self.open_at)
        self.input.imagePasted.connect(self.share_image)
        self.input.filesGiven.connect(self.share_paths)
        self.files.thumbnails.loaded.connect(self._thumbnail_loaded)
        self.files.problem.connect(self._file_problem)
        self.files.notice.connect(lambda words: self.transcript.add_system(words))
        self.files.unsent.connect(self._unsent)
        self.session.historyAround.connect(self._history_around)
        self.session.welcomed.connect(lambda _: self.files.thumbnails.retry_failed())

    def _room_for_files(self) -> str | None:
        """The room shown, if files can go there now; else says why and None."""
        if not self.session.machine.logged_in:
            self.transcript.add_system("not connected: share files when the connection is back")
            return None
        return self.room_names.get(self.current) or self.session.default_room

    def _take_text(self) -> str:
        """The text typed goes with the files (a command does not)."""
        text = self.input.toPlainText()
        if text.startswith("/") or not text.strip():
            return ""
        self.input.clear()
        return text

    def ask_attach(self) -> None:
        """The file dialog (window-modal, no nested loop); the files chosen are shared."""
        dialog = QFileDialog(self, "Share files")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dialog.filesSelected.connect(self.share_paths)
        dialog.finished.connect(lambda _: dialog.deleteLater())
        dialog.open()

    def share_paths(self, paths: list) -> None:
        room = self._room_for_files()
        if room is not None and paths:
            self.files.share_paths(room, list(paths), self._take_text())

    def share_image(self, image: QImage) -> None:
        room = self._room_for_files()
        if room is not None:
            self.files.share_image(room, image, self._take_text())

    def dragEnterEvent(self, event) -> None:
        if local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = local_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.share_paths(paths)

    def _file_problem(self, words: str) -> None:
        self.transcript.add_system(words)
        self.statusBar().showMessage(words, 10_000)

    def _unsent(self, text: str) -> None:
        if text and not self.input.toPlainText():
            self.input.setPlainText(text)

    def _thumbnail_loaded(self, file_id: str) -> None:
        for transcript in self.transcripts.values():
            transcript.touch_file(file_id)

    def _file_anchor(self, line, kind: str, number: int) -> None:
        if number >= len(line.files):
            return
        file = line.files[number]
        if kind == "image":
            self.open_image(file)
        else:
            self.ask_download(file)

    def open_image(self, file: codec.File) -> ImageDialog:
        dialog = ImageDialog(file.name, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        self.files.show_image(file, dialog)
        return dialog

    def ask_download(self, file: codec.File) -> QFileDialog:
        """Where to save it (window-modal, no nested loop); then it streams there."""
        dialog = QFileDialog(self, f"Save {file.name}")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.selectFile(file.name)
        dialog.fileSelected.connect(lambda path: self.files.download(file, path))
        dialog.finished.connect(lambda _: dialog.deleteLater())
        dialog.open()
        return dialog

    def open_at(self, room: str, seq: int) -> None:
        """A search hit: its room shown, the message selected in view (fetched
        around it if not loaded; the room joined first if need be)."""
        key = room_key(room)
        if key not in self.session.machine.rooms:
            self._open_after_join[key] = seq
            self.session.join(room)
            return
        self.show_room(self.room_names.get(key, room))
        self.transcript.flush()
        if self.transcript.row_of_seq(seq) >= 0:
            self.show_message(seq)
        elif not self.session.open_around(room, seq):
            self.transcript.add_system("not connected: open the message when the connection is back")

    def _history_around(self, room: str, seq: int, messages, more: bool) -> None:
        transcript = self._transcript_for(room)
        transcript.add_history(messages, self.session.nick, older=False)
        transcript.flush()
        if transcript is self.transcript and not self.show_message(seq):
            transcript.add_system("that message is gone (deleted since?)")

    def closeEvent(self, event) -> None:
        self.session.disconnect()
        if self.console is not None:
            self.console.close()  # the dialogs' keeper closes the others
        super().closeEvent(event)

    def _build_admin_menus(self) -> None:
        """Room settings, the Account menu, and one window of each kind (qtclient/views/dialog_menus.py)."""
        from qtclient.views.dialog_menus import DialogMenus, menu_holding

        self.dialogs = DialogMenus(
            self,
            self.session,
            menu_holding(self, self.bans_action),
            current_room=lambda: self.room_names.get(self.current, ""),
            is_operator=lambda room: self.peers.is_op(room, self.session.my_id),
            target=lambda: self.target,
        )
