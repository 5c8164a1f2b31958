"""A new user's session with the desktop client, minutes long, in the real
app: ``python -m tests.e2e.desktop_session --shots DIR --work DIR``.

Run by ``tests/e2e/test_desktop.py`` on a real X server (Xvfb). The app is
built as ``chat-client`` builds it (:class:`qtclient.app.ClientApp`: the
reactor inside Qt, the safety net, the window shown), then driven through
its widgets: menus, dialogs, typing, clicks, resizing, a server killed with
SIGKILL and started again. Another user, bob, is a session machine in the
same process. A screenshot of the screen is saved after every step.

The last line printed is ``E2E OK`` or ``E2E FAILED: ...``; the exit status
says the same. Any exception the safety net caught fails the run.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback

#: Seconds any one condition may take before the step fails.
WAIT = 30.0
#: Seconds the user spends reading, as people do: timers fire meanwhile
#: (the read marker, the client's keepalive PING every 15 s).
READING = 40.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shots", required=True, help="folder for the screenshots")
    parser.add_argument("--work", required=True, help="folder for the server's history")
    options = parser.parse_args()
    os.makedirs(options.shots, exist_ok=True)
    from qtclient.app import ClientApp, parse_args

    client = ClientApp(parse_args([]))
    outcome: list[str] = []

    def finished(result):
        outcome.append("E2E OK" if result is None else f"E2E FAILED: {result}")
        # Chat → Quit, as the user leaves: the last window closing stops the reactor.
        quit_action = next(
            a for a in client.window.menuBar().actions()[0].menu().actions() if "Quit" in a.text()
        )
        quit_action.trigger()

    def failed(failure):
        outcome.append(f"E2E FAILED: {failure.getTraceback()}")
        client.qt.closeAllWindows()

    def begin():
        session = Session(client, options.shots, options.work)
        session.run().addCallbacks(finished, failed)

    client.reactor.callWhenRunning(begin)
    client.run()
    if client.errors.count and outcome == ["E2E OK"]:
        outcome[0] = f"E2E FAILED: {client.errors.count} unexpected error(s): {client.errors.summaries}"
    print(outcome[0] if outcome else "E2E FAILED: the app stopped before the session ended", flush=True)
    return 0 if outcome == ["E2E OK"] else 1


def dashboard(image):
    """``image`` painted as a small dashboard (a title and a bar chart), as
    the screenshot someone pastes would be: the README shows it."""
    from PyQt6.QtCore import QRect, Qt
    from PyQt6.QtGui import QColor, QFont, QPainter

    width, height = image.width(), image.height()
    image.fill(QColor("#f5f7fa"))
    painter = QPainter(image)
    painter.setPen(QColor("#1f2933"))
    font = QFont()
    font.setPixelSize(22)
    font.setBold(True)
    painter.setFont(font)
    painter.drawText(QRect(24, 12, width - 48, 36), Qt.AlignmentFlag.AlignLeft, "Deploys per day")
    bars, base = 8, height - 24
    for n in range(bars):
        left = 24 + n * (width - 48) // bars
        top = base - (height - 96) * (n % 5 + 2) // 6
        painter.fillRect(left + 8, top, (width - 48) // bars - 16, base - top, QColor("#2f6fde"))
    painter.fillRect(24, base, width - 48, 2, QColor("#9aa5b1"))
    painter.end()
    return image


class Bob:
    """The other user: a session machine (no window) that records what it hears."""

    def __init__(self, reactor) -> None:
        from qtclient.session_machine import ClientSession, SessionEvents

        heard = self

        class Events(SessionEvents):
            def message_received(self, message):
                heard.messages.append(message)

            def private_received(self, private):
                heard.privates.append(private)

            def error_received(self, code, message):
                heard.errors.append((code, message))

            def message_changed(self, room, message, kind, by):
                heard.changes.append((kind, by, message))

            def typing_changed(self, room, nicks):
                heard.typing.append((room, list(nicks)))

            def status_changed(self, status):
                heard.statuses.append(status)

            def room_joined(self, state, reset):
                heard.rooms.append(state)

        self.messages: list = []
        self.privates: list = []
        self.errors: list = []
        self.changes: list = []  # (kind, by, codec.Message)
        self.typing: list = []  # (room, [nick])
        self.statuses: list = []
        self.rooms: list = []  # codec.RoomState
        self.machine = ClientSession(reactor, Events(), retry=lambda attempt: 0.2)

    def texts(self) -> list[str]:
        return [m.text for m in self.messages]


class Session:
    """The scripted session; each step waits for what a user would see."""

    def __init__(self, client, shots: str, work: str) -> None:
        self.client, self.shots, self.work = client, shots, work
        self.reactor = client.reactor
        self.window = client.window
        self.step = 0
        self.server = None
        self.port = 0
        self.web_port = 0
        self.bob = Bob(self.reactor)

    def run(self):
        from twisted.internet.defer import ensureDeferred

        return ensureDeferred(self._run())

    # -- tools ----------------------------------------------------------------------

    async def until(self, condition, what: str, timeout: float = WAIT) -> None:
        """Wait until ``condition()`` holds, checking every 20 ms; fail saying ``what``."""
        from twisted.internet.task import deferLater

        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"step {self.step}: {what} did not happen within {timeout:.0f} s")
            await deferLater(self.reactor, 0.02, lambda: None)

    async def pause(self, seconds: float) -> None:
        """The user reads for a while (timers such as the read marker fire meanwhile)."""
        from twisted.internet.task import deferLater

        await deferLater(self.reactor, seconds, lambda: None)

    async def shot(self, name: str) -> None:
        """The whole screen, dialogs and menus included, as the user sees it
        (once what changed has been laid out and painted)."""
        from PyQt6.QtWidgets import QApplication

        self.step += 1
        await self.pause(0.15)
        QApplication.processEvents()
        screen = QApplication.primaryScreen()
        base = os.path.join(self.shots, f"{self.step:02d}-{name}")
        screen.grabWindow(0).save(base + ".png")
        frame = self.window.frameGeometry()  # the window with its title bar, for README
        screen.grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height()).save(base + ".window.png")

    def text_rows(self) -> list[str]:
        self.window.transcript.flush()
        return [line.text for line in self.window.transcript.lines]

    def type_and_send(self, text: str) -> None:
        """Typed into the message box as a user types, Shift+Enter between lines, Enter to send."""
        from PyQt6.QtCore import Qt
        from PyQt6.QtTest import QTest

        box = self.window.input
        box.setFocus()
        for i, line in enumerate(text.split("\n")):
            if i:
                QTest.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
            QTest.keyClicks(box, line)
        QTest.keyClick(box, Qt.Key.Key_Return)

    def click(self, widget, position=None) -> None:
        from PyQt6.QtCore import Qt
        from PyQt6.QtTest import QTest

        if position is None:
            QTest.mouseClick(widget, Qt.MouseButton.LeftButton)
        else:
            QTest.mouseClick(widget, Qt.MouseButton.LeftButton, pos=position)

    async def hover_action(self, text: str, action: str, shot: str | None = None) -> None:
        """Hover over the message ``text`` and click ``action`` on its hover bar."""
        from PyQt6.QtTest import QTest

        view, transcript = self.window.transcript_view, self.window.transcript
        bar = view.hover_bar

        def hovered() -> bool:
            # Again until it shows: an echo arriving meanwhile scrolls a
            # reader at the bottom down to it, away from the message.
            row = self.row_of(text)
            if bar.isVisible() and bar.row == row:
                return True
            view.scrollTo(transcript.index(row, 2))
            rect = view.visualRect(transcript.index(row, 2))
            QTest.mouseMove(view.viewport(), rect.topLeft())  # from elsewhere: the mouse moves onto it
            QTest.mouseMove(view.viewport(), rect.center())
            return False

        await self.until(hovered, f"the hover bar over {text!r}")
        button = bar.buttons[action]
        assert button.isVisible(), f"{action} not offered on {text!r}"
        if shot is not None:
            await self.shot(shot)
        self.click(button)

    def row_of(self, text: str) -> int:
        self.window.transcript.flush()
        return next(i for i, line in enumerate(self.window.transcript.lines) if line.text == text)

    def anchor_point(self, row: int, href: str):
        """Where in the row's text the link ``href`` is (a quote or a reaction chip)."""
        from PyQt6.QtCore import QPoint

        view = self.window.transcript_view
        rect = view.visualRect(self.window.transcript.index(row, 2))
        for y in range(rect.top() + 2, rect.bottom(), 3):
            for x in range(rect.left() + 2, rect.right(), 4):
                if view.link_at(QPoint(x, y)) == href:
                    return QPoint(x, y)
        raise AssertionError(f"no {href} in row {row}")

    def click_room(self, name: str) -> None:
        view = self.window.peer_view
        index = self.window.peers.room_item(name).index()
        view.scrollTo(index)
        self.click(view.viewport(), view.visualRect(index).center())

    async def open_menu(self, title: str) -> None:
        """Click a menu in the menu bar, look at it, close it."""
        from PyQt6.QtCore import Qt
        from PyQt6.QtTest import QTest

        bar = self.window.menuBar()
        menu = next(a.menu() for a in bar.actions() if a.text().replace("&", "") == title)
        self.click(bar, bar.actionGeometry(menu.menuAction()).center())
        await self.until(menu.isVisible, f"the {title} menu opening")
        await self.shot(f"menu-{title.lower()}")
        QTest.keyClick(menu, Qt.Key.Key_Escape)
        await self.until(lambda: not menu.isVisible(), f"the {title} menu closing")

    async def connect_as(self, nick: str, password: str) -> None:
        """Chat → Disconnect, then Chat → Connect… as ``nick`` with ``password``."""
        from PyQt6.QtCore import Qt
        from PyQt6.QtTest import QTest

        from qtclient import session as states

        w = self.window
        w.disconnect_action.trigger()
        await self.until(lambda: w.session.state is states.DISCONNECTED, "disconnected")
        assert not w.join_action.isEnabled() and not w.part_action.isEnabled(), "no joining offline"
        assert all(not w.peers.members(room) for room in w.peers.room_names()), "nobody shown offline"
        w.connect_action.trigger()
        await self.until(lambda: w.connect_dialog is not None and w.connect_dialog.isVisible(), "Connect…")
        dialog = w.connect_dialog
        assert dialog.port.text() == str(self.port), "the dialog forgot the server"
        dialog.nick.clear()
        QTest.keyClicks(dialog.nick, nick)
        dialog.password.clear()
        QTest.keyClicks(dialog.password, password)
        QTest.keyClick(dialog, Qt.Key.Key_Return)
        await self.until(lambda: w.session.state is states.CONNECTED and w.session.nick == nick, nick)

    async def _conversations(self) -> None:
        """Reply, react, edit (Up), delete, typing, away, formatting and a direct conversation."""
        from PyQt6.QtCore import Qt
        from PyQt6.QtTest import QTest

        from qtclient.models import HTML_ROLE

        w, bob = self.window, self.bob
        box = w.input

        # Reply to bob's question from the hover bar.
        await self.hover_action("who has the release notes?", "reply", shot="hover-actions")
        await self.until(lambda: w.composer_note.isVisible(), "the 'Replying to' note")
        assert w.composer_note.label.text().startswith("Replying to bob: who has"), (
            w.composer_note.label.text()
        )
        QTest.keyClicks(box, "they are in the wiki")
        await self.shot("replying")
        QTest.keyClick(box, Qt.Key.Key_Return)
        await self.until(
            lambda: any(m.text == "they are in the wiki" and m.reply for m in bob.messages),
            "bob getting alice's reply with its quote",
        )
        answer = next(m for m in bob.messages if m.text == "they are in the wiki")
        assert answer.reply.sender == "bob" and answer.reply.text == "who has the release notes?"
        assert not w.composer_note.isVisible(), "the note goes once the reply is sent"

        # React with the picker; bob reacts too; a click on the chip takes alice's back.
        await self.hover_action("who has the release notes?", "react")
        await self.until(
            lambda: w.emoji_picker is not None and w.emoji_picker.isVisible(), "the emoji picker"
        )
        await self.shot("emoji-picker")
        self.click(w.emoji_picker.buttons["🎉"])
        await self.until(
            lambda: any(kind == "react" for kind, by, m in bob.changes), "bob seeing the reaction"
        )
        question = next(m for m in bob.messages if m.text == "who has the release notes?")
        bob.machine.react(question.room or "general", question.seq, "🎉")
        await self.until(
            lambda: (
                sum(
                    len(r.by) for r in w.transcript.lines[self.row_of("who has the release notes?")].reactions
                )
                == 2
            ),
            "both reactions shown",
        )
        await self.shot("reactions")
        row = self.row_of("who has the release notes?")
        view = w.transcript_view
        self.click(view.viewport(), self.anchor_point(row, "react:0"))
        await self.until(
            lambda: (
                [r.by for r in w.transcript.lines[self.row_of("who has the release notes?")].reactions]
                == [["bob"]]
            ),
            "alice's reaction taken back by clicking the chip",
        )

        # Up in the empty input edits the last message.
        box.clear()
        box.setFocus()
        QTest.keyClick(box, Qt.Key.Key_Up)
        await self.until(lambda: box.toPlainText() == "they are in the wiki", "the last message in the input")
        assert w.composing is not None and w.composing[0] == "edit"
        box.selectAll()
        QTest.keyClicks(box, "they are in the wiki, page Releases")
        await self.shot("editing")
        QTest.keyClick(box, Qt.Key.Key_Return)
        await self.until(
            lambda: any(k == "edit" and m.text.endswith("page Releases") for k, by, m in bob.changes),
            "bob seeing the edit",
        )
        await self.until(lambda: "they are in the wiki, page Releases" in self.text_rows(), "the edit shown")
        edited_row = self.row_of("they are in the wiki, page Releases")
        assert w.transcript.lines[edited_row].edited, "(edited) marked"

        # A message sent by mistake, deleted from the hover bar.
        self.type_and_send("oops, wrong room")
        await self.until(lambda: "oops, wrong room" in bob.texts(), "bob getting the mistake")
        await self.until(lambda: w.transcript.lines[self.row_of("oops, wrong room")].seq, "its echo")
        await self.hover_action("oops, wrong room", "delete")
        await self.until(lambda: w.confirm_box is not None and w.confirm_box.isVisible(), "'Delete message?'")
        await self.shot("delete-confirm")
        self.click(w.confirm_box.button(w.confirm_box.StandardButton.Yes))
        await self.until(lambda: any(k == "delete" for k, by, m in bob.changes), "bob seeing the deletion")
        await self.until(
            lambda: any(line.deleted and line.sender == "alice" for line in w.transcript.lines),
            "'message deleted' shown",
        )

        # Typing, both ways.
        box.setFocus()
        QTest.keyClicks(box, "let me")
        await self.until(lambda: ("general", ["alice"]) in bob.typing, "bob seeing alice typing")
        box.clear()
        await self.until(lambda: bob.typing[-1] == ("general", []), "bob seeing alice stop")
        bob.machine.typing("general")
        await self.until(lambda: w.typing_label.text() == "bob is typing…", "'bob is typing…'")
        await self.shot("bob-typing")
        bob.machine.say("found them", "general")
        await self.until(lambda: w.typing_label.text() == "", "the typing line gone with bob's message")

        # Away and back: /away, the menu, and bob's away shown in the member list.
        self.type_and_send("/away at lunch")
        await self.until(
            lambda: any(s.nick == "alice" and s.away == "at lunch" for s in bob.statuses),
            "bob seeing alice away",
        )
        await self.until(w.back_action.isEnabled, "Chat → I'm back enabled")
        w.back_action.trigger()
        await self.until(lambda: bob.statuses[-1].nick == "alice" and bob.statuses[-1].away is None, "back")
        bob.machine.set_away("in a meeting")
        await self.until(lambda: w.peers.away("general", "bob") == "in a meeting", "bob shown away")
        await self.shot("bob-away")
        bob.machine.set_back()
        await self.until(lambda: w.peers.away("general", "bob") is None, "bob shown back")
        formatted = (
            "> the deploy is at 3\n**moved** to *4pm*: run `make test` first\n```\nmake test-desktop\n```"
        )
        bob.machine.say(formatted, "general")
        await self.until(lambda: formatted in self.text_rows(), "bob's formatted message")
        html = w.transcript.data(w.transcript.index(self.row_of(formatted), 2), HTML_ROLE)
        assert "<b>moved</b>" in html and "<i>4pm</i>" in html and "<code" in html and "<table" in html, html
        bob.machine.typing("general")
        await self.until(lambda: w.typing_label.text() == "bob is typing…", "bob typing again")
        w.transcript_view.clearSelection()
        await self.shot("conversation")  # README's picture: a reply, reactions, an edit, a deletion

        # A direct conversation: /msg to an account opens it, on both sides.
        self.type_and_send("/msg bob are you coming to the demo?")
        await self.until(lambda: any(r.kind == "direct" for r in bob.rooms), "bob getting the conversation")
        direct = next(r.room for r in bob.rooms if r.kind == "direct")
        assert direct == "@alice+bob", direct
        await self.until(
            lambda: any(m.text == "are you coming to the demo?" and m.room == direct for m in bob.messages),
            "bob getting the message in the conversation",
        )
        await self.until(lambda: w.room_names.get(w.current) == direct, "the conversation shown")
        assert w.peers.room_item(direct).text() == "✉ bob", w.peers.room_item(direct).text()
        bob.machine.say("yes, see you there", direct)
        await self.until(lambda: "yes, see you there" in self.text_rows(), "bob's answer in the conversation")
        await self.shot("direct-conversation")
        self.click_room("general")
        await self.until(lambda: w.room_names.get(w.current) == "general", "general shown again")
        bob.machine.say("one more thing", direct)
        await self.until(lambda: w.peers.unread(direct)[0] == 1, "the conversation's unread count")
        self.click_room(direct)
        await self.until(lambda: w.peers.unread(direct)[0] == 0, "the conversation read")
        self.click_room("general")
        await self.until(lambda: w.room_names.get(w.current) == "general", "back in general")

    async def _files_and_search(self) -> None:
        """A screenshot pasted, a file attached and downloaded, a search hit opened."""
        from PyQt6.QtCore import QMimeData, Qt
        from PyQt6.QtGui import QImage
        from PyQt6.QtTest import QTest
        from PyQt6.QtWidgets import QApplication

        w, bob = self.window, self.bob
        # Ctrl+V with a screenshot on the clipboard: shared as a PNG with the text typed.
        picture = dashboard(QImage(640, 360, QImage.Format.Format_RGB32))
        clipboard = QMimeData()
        clipboard.setImageData(picture)
        QApplication.clipboard().setMimeData(clipboard)
        box = w.input
        box.setFocus()
        QTest.keyClicks(box, "the new dashboard")
        QTest.keyClick(box, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
        await self.until(lambda: any(m.files for m in bob.messages), "bob getting the screenshot")
        shared = next(m for m in bob.messages if m.files)
        assert shared.text == "the new dashboard" and shared.files[0].name == "screenshot.png", shared
        picture_id = shared.files[0].id
        await self.until(lambda: picture_id in w.files.thumbnails.images, "the screenshot's thumbnail shown")
        await self.shot("screenshot-pasted")

        # The 📎 button: a text file chosen in the file dialog.
        notes = os.path.join(self.work, "notes.txt")
        with open(notes, "w", encoding="utf-8") as f:
            f.write("".join(f"{n}. check the release\n" for n in range(1, 200)))
        self.click(w.attach_button)
        chooser = await self.file_dialog("the Share files dialog")
        chooser.selectFile(notes)
        await self.shot("attach-dialog")
        chooser.accept()
        await self.until(
            lambda: any(f.name == "notes.txt" for m in bob.messages for f in m.files or ()), "notes"
        )
        w.transcript.flush()
        row = next(
            i for i, line in enumerate(w.transcript.lines) if any(f.name == "notes.txt" for f in line.files)
        )
        w.transcript_view.scrollTo(w.transcript.index(row, 2))
        await self.shot("file-card")

        # Its card's Download: saved where the user says.
        self.click(w.transcript_view.viewport(), self.anchor_point(row, "file:0"))
        saver = await self.file_dialog("the Save dialog")
        copy = os.path.join(self.work, "notes-copy.txt")
        saver.selectFile(copy)
        saver.accept()
        await self.until(
            lambda: any(t.startswith("saved notes.txt") for t in self.text_rows()), "the download"
        )
        with open(notes, "rb") as original, open(copy, "rb") as downloaded:
            assert original.read() == downloaded.read(), "the download differs from the upload"

        # Ctrl+F: search, then open a hit in its room.
        w.transcript_view.clearSelection()  # the card's row, selected by its Download
        QTest.keyClick(w, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
        panel = w.search_panel
        await self.until(lambda: panel.isVisible() and panel.words.hasFocus(), "the search panel")
        QTest.keyClicks(panel.words, "deploy")
        QTest.keyClick(panel.words, Qt.Key.Key_Return)
        await self.until(lambda: panel.hits.count() >= 1, "a search hit")
        await self.shot("search")
        hit = panel.hits.item(0)
        self.click(panel.hits.viewport(), panel.hits.visualItemRect(hit).center())
        wanted = "the deploy is at 3"
        await self.until(
            lambda: (
                [w.transcript.lines[i.row()].text for i in w.transcript_view.selectionModel().selectedRows()]
                == [wanted]
            ),
            "the hit selected in its room",
        )
        await self.shot("search-hit-opened")
        panel.close()
        w.transcript_view.clearSelection()
        w.transcript_view.scrollToBottom()
        scroll = w.transcript_view.verticalScrollBar()
        await self.until(lambda: scroll.value() == scroll.maximum(), "the transcript back at its newest line")

    async def file_dialog(self, what: str):
        """The file dialog the window just opened."""
        from PyQt6.QtWidgets import QApplication, QFileDialog

        def shown():
            return [d for d in QApplication.topLevelWidgets() if isinstance(d, QFileDialog) and d.isVisible()]

        await self.until(shown, what)
        return shown()[0]

    def start_server(self, port: int = 0, web_port: int = 0):
        """The server, with its web site (files go through it): fires with both ports."""
        from scripts.spawn import listening_ports, spawn_server

        history = os.path.join(self.work, "history.sqlite3")
        self.server = spawn_server(
            self.reactor,
            "--history",
            history,
            "--name",
            "e2e-chat",
            "--admin",
            "boss",
            "--web",
            f"tcp:{web_port}:interface=127.0.0.1",
            listen=f"tcp:{port}:interface=127.0.0.1",
            ready=lambda output: listening_ports(output)[:2] if len(listening_ports(output)) >= 2 else None,
        )
        return self.server.listening

    # -- the session --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._script()
        finally:
            self.bob.machine.disconnect()
            if self.server is not None and self.server.transport.pid is not None:
                self.server.signal("TERM")
                await self.server.ended

    async def _script(self) -> None:
        from PyQt6.QtCore import Qt
        from PyQt6.QtTest import QTest

        from qtclient import session as states
        from qtclient.views.connect_dialog import ConnectDialog
        from qtclient.views.join_dialog import JoinDialog

        w, bob = self.window, self.bob
        self.port, self.web_port = await self.start_server()
        # The operator reads the admin account's one-time password in the server's log.
        made = re.compile(rb"admin account boss made, with the one-time password (\S+):")
        await self.until(lambda: made.search(self.server.output), "the admin's one-time password logged")
        self.boss_password = made.search(self.server.output).group(1).decode()
        w.resize(1000, 640)
        w.activateWindow()
        await self.until(w.isActiveWindow, "the window coming to the front")
        await self.shot("start")

        # A room with history before alice arrives (the first login of a new user).
        # bob has an account too: the two talk in a direct conversation later.
        bob.machine.connect_to("127.0.0.1", self.port, "bob", password="bob's password", register=True)
        await self.until(lambda: bob.machine.state is states.CONNECTED, "bob logging in")
        await self.until(lambda: bob.machine.account, "bob's account registered")
        for text in ("morning!", "the deploy is at 3", "who has the release notes?"):
            bob.machine.say(text)
        await self.until(lambda: len(bob.messages) >= 3, "bob's messages being stored")

        # Listening from the start: the first MARK may go while alice registers.
        marked: list = []
        w.session.markMoved.connect(marked.append)

        # Chat → Connect…: register alice with a password.
        w.connect_action.trigger()
        await self.until(lambda: w.connect_dialog is not None and w.connect_dialog.isVisible(), "Connect…")
        dialog: ConnectDialog = w.connect_dialog
        for field, value in (
            (dialog.host, "127.0.0.1"),
            (dialog.port, str(self.port)),
            (dialog.nick, "alice"),
            (dialog.web_address, f"http://127.0.0.1:{self.web_port}"),
        ):
            field.clear()
            QTest.keyClicks(field, value)
        QTest.keyClicks(dialog.password, "correct horse battery")
        self.click(dialog.register)
        QTest.keyClicks(dialog.password_again, "correct horse battery")
        await self.shot("connect-dialog")
        QTest.keyClick(dialog, Qt.Key.Key_Return)
        await self.until(lambda: w.session.state is states.CONNECTED, "alice connected")
        await self.until(lambda: "who has the release notes?" in self.text_rows(), "the room's history shown")
        await self.until(lambda: w.session.machine.account, "alice's account registered")
        rows = self.text_rows()
        assert rows.index("who has the release notes?") < next(
            i for i, t in enumerate(rows) if t.startswith("connected to e2e-chat as alice")
        ), f"the 'connected' line is above the history it follows: {rows}"
        assert "e2e-chat" in w.state_label.text(), w.state_label.text()
        await self.shot("connected-with-history")

        # The user reads for a while: the read marker's timer fires (the crash
        # was here, half a second in), and the keepalive's PINGs go round.
        rtt = []
        w.session.rttMeasured.connect(rtt.append)
        await self.pause(READING)
        await self.until(lambda: marked, "the room marked read")
        assert len(rtt) >= 2, f"keepalive PINGs answered while reading: {rtt}"

        # Messages: one line, several lines, a long one that wraps, a link, an emoji, an action.
        self.type_and_send("hi bob, I have them")
        self.type_and_send("release notes:\n- rooms\n- accounts")
        long = "This is a long message that has to wrap in the transcript " * 5
        self.type_and_send(long.strip())
        self.type_and_send("/me waves")
        await self.until(lambda: "* waves" in bob.texts(), "bob hearing alice's /me")
        assert "release notes:\n- rooms\n- accounts" in bob.texts(), bob.texts()
        bob.machine.say("notes: https://example.org/notes 🎉 thanks")
        await self.until(
            lambda: any(t.startswith("notes: https://example.org/notes") for t in self.text_rows()),
            "bob's link shown",
        )
        await self.until(lambda: "alice waves" in self.text_rows(), "the action shown as an action")
        view = w.transcript_view
        transcript = w.transcript
        row = next(
            i for i, line in enumerate(transcript.lines) if line.text == "release notes:\n- rooms\n- accounts"
        )
        one_line = view.fontMetrics().lineSpacing()
        assert view.rowHeight(row) >= 3 * one_line, f"a 3-line message is {view.rowHeight(row)} px tall"
        await self.shot("messages")
        await self._files_and_search()
        await self._conversations()

        # A whisper from bob still shows as one.
        bob.machine.whisper("alice", "yes, in 5")
        await self.until(lambda: "yes, in 5" in self.text_rows(), "bob's whisper shown")

        # Chat → Join room…: the dialog lists the rooms; join a new one.
        w.join_action.trigger()
        await self.until(lambda: w.join_dialog is not None and w.join_dialog.isVisible(), "Join room…")
        dialog: JoinDialog = w.join_dialog
        await self.until(lambda: dialog.table.rowCount() >= 1, "the room list in the dialog")
        QTest.keyClicks(dialog.name, "release")
        await self.shot("join-dialog")
        QTest.keyClick(dialog.name, Qt.Key.Key_Return)
        await self.until(lambda: w.peers.room_item("release") is not None, "the room release joined")
        await self.until(lambda: w.room_names.get(w.current) == "release", "release shown")
        assert "you joined release" in self.text_rows(), "a room joined says so, not 'connected'"
        bob.machine.join("release")
        await self.until(lambda: "bob" in w.peers.members("release"), "bob in release")
        self.type_and_send("/topic v2.0 on Friday")
        await self.until(lambda: "v2.0 on Friday" in w.topic_label.text(), "the topic shown")

        # Switching rooms by clicking them; messages in the other room count as unread.
        self.click_room("general")
        await self.until(lambda: w.room_names.get(w.current) == "general", "general shown")
        bob.machine.say("in release: tag it?", "release")
        await self.until(lambda: w.peers.unread("release")[0] == 1, "release's unread count")
        await self.shot("unread-in-other-room")
        self.click_room("release")
        await self.until(lambda: w.peers.unread("release")[0] == 0, "release read once shown")

        # An operator's menu on a member: only what applies to them.
        bob_id = bob.machine.my_id
        menu = w.member_menu(w.peers.rooms["release"].members[bob_id].index())
        labels = [a.text() for a in menu.actions()]
        assert "Make operator bob" in labels and "Message bob…" in labels, labels
        make = next(a for a in menu.actions() if a.text() == "Make operator bob")
        assert make.isEnabled(), "alice made the room: she runs it"
        make.trigger()
        await self.until(lambda: w.peers.is_op("release", bob_id), "bob made an operator")

        # Room → Ban list…
        w.bans_action.trigger()
        bans = w.open_bans("release")
        await self.until(bans.isVisible, "the ban list")
        await self.shot("ban-list")
        bans.close()

        # Room → Room settings…: invite-only and topic lock, an invitation.
        w.dialogs.settings_action.trigger()
        settings = w.dialogs.keeper.get(("settings", "release"))
        await self.until(lambda: settings is not None and settings.isVisible(), "Room settings")
        self.click(settings.invite_only)
        self.click(settings.topic_lock)
        self.click(settings.apply_button)
        await self.until(lambda: "invite-only" in settings.current.text(), "the modes applied")
        QTest.keyClicks(settings.invitee, "carol")
        self.click(settings.invite_button)
        invited = "the invitation recorded"
        await self.until(lambda: any("invited carol" in t for t in self.text_rows()), invited)
        await self.shot("room-settings")
        settings.close()

        # Server → Host a server…: the console opens (not started), and closes.
        w.host_action.trigger()
        await self.until(lambda: w.console is not None and w.console.isVisible(), "the server console")
        await self.shot("host-console")
        w.console.close()

        # Every menu, opened and looked at.
        for title in ("Chat", "Room", "Server", "Account"):
            await self.open_menu(title)
        w.activateWindow()

        # Small and large windows: the text keeps most of the width.
        w.resize(520, 380)
        await self.until(lambda: w.width() <= 600, "the window made small")
        await self.pause(0.3)
        await self.shot("small-window")
        assert view.columnWidth(2) >= 200, f"text column {view.columnWidth(2)} px wide at 520×380"
        w.resize(1400, 900)
        await self.until(lambda: w.width() >= 1300, "the window made large")
        await self.shot("large-window")
        w.resize(1000, 640)

        # Leave the room: Chat → Leave room.
        w.part_action.trigger()
        await self.until(lambda: w.peers.room_item("release") is None, "release left")
        await self.until(lambda: w.room_names.get(w.current) == "general", "back in general")

        # The server dies (SIGKILL) and comes back on the same port.
        self.server.signal("KILL")
        await self.server.ended
        await self.until(lambda: "connection lost" in self.text_rows(), "the outage marked in the transcript")
        await self.until(lambda: w.session.state is states.RECONNECTING, "reconnecting")
        await self.pause(3)  # a few retries fail meanwhile
        await self.shot("server-down")
        unreachable = [t for t in self.text_rows() if t.startswith("server not reachable")]
        assert len(unreachable) <= 1, f"one outage line expected, got {unreachable}"
        await self.start_server(self.port, self.web_port)
        await self.until(lambda: w.session.state is states.CONNECTED, "reconnected", timeout=60)
        await self.until(
            lambda: any(t.startswith("reconnected") for t in self.text_rows()), "'reconnected' said"
        )
        assert "e2e-chat" in w.state_label.text(), f"status after reconnecting: {w.state_label.text()!r}"
        await self.until(lambda: bob.machine.state is states.CONNECTED, "bob back")
        self.type_and_send("back again")
        await self.until(lambda: "back again" in bob.texts(), "bob hearing alice after the restart")
        await self.shot("reconnected")

        await self.pause(READING / 4)  # reading after the outage

        # Chat → Disconnect, then Chat → Connect… again, now with the account's password.
        w.disconnect_action.trigger()
        await self.until(lambda: w.session.state is states.DISCONNECTED, "disconnected")
        await self.shot("disconnected")
        # Meanwhile bob edits his message and reacts to alice's: she catches up by rev.
        found = next(m for m in bob.messages if m.text == "found them")
        hi = next(m for m in bob.messages if m.text == "hi bob, I have them")
        changes = len(bob.changes)
        bob.machine.edit("general", found.seq, "found them, in the wiki")
        bob.machine.react("general", hi.seq, "👍")
        await self.until(lambda: len(bob.changes) >= changes + 2, "bob's changes stored")
        caught: list[str] = []
        w.session.messageChanged.connect(lambda room, message, kind, by: caught.append(kind))
        w.connect_action.trigger()
        await self.until(
            lambda: w.connect_dialog is not None and w.connect_dialog.isVisible(), "Connect… again"
        )
        dialog = w.connect_dialog
        assert dialog.nick.text() == "alice" and dialog.port.text() == str(self.port), "the dialog forgot"
        dialog.password.clear()
        QTest.keyClicks(dialog.password, "correct horse battery")
        QTest.keyClick(dialog, Qt.Key.Key_Return)
        await self.until(lambda: w.session.state is states.CONNECTED, "alice logged in with her password")
        await self.until(lambda: "found them, in the wiki" in self.text_rows(), "bob's edit caught up")
        await self.until(
            lambda: (
                [r.emoji for r in w.transcript.lines[self.row_of("hi bob, I have them")].reactions] == ["👍"]
            ),
            "bob's reaction caught up",
        )
        await self.until(lambda: "catch_up" in caught, "the changes fetched by HISTORY changed_after")

        # A minimised window reads nothing.
        w.showMinimized()
        await self.until(w.isMinimized, "the window minimised")
        count = len(marked)
        bob.machine.say("anyone there?")
        await self.until(lambda: "anyone there?" in self.text_rows(), "the message arriving")
        await self.pause(1.5)
        assert len(marked) == count, "a minimised window marked the room read"
        w.showNormal()
        w.activateWindow()
        await self.until(lambda: len(marked) > count, "the room read once the window is back")
        await self.shot("back-from-minimised")

        # Account → Delete account… (alice's).
        w.dialogs.delete_account_action.trigger()
        delete = w.dialogs.keeper.get("delete")
        await self.until(lambda: delete is not None and delete.isVisible(), "Delete account")
        QTest.keyClicks(delete.current, "correct horse battery")
        self.click(delete.sure)
        self.click(delete.ok_button)
        await self.until(lambda: "Account deleted" in delete.outcome.text(), "the account deleted")
        await self.until(lambda: not w.session.machine.account, "a guest again")
        await self.shot("account-deleted")
        delete.close()

        # The server's operator: Connect… as boss with the one-time password from
        # the log, Server → Connections (admins)…, Account → Change password….
        self.type_and_send("/join scratch")  # a room of alice's (a guest now) that boss is not in
        await self.until(lambda: w.peers.room_item("scratch") is not None, "scratch joined")
        await self.connect_as("boss", self.boss_password)
        await self.until(lambda: w.peers.room_names() == ["general"], "only boss's rooms")
        await self.until(w.admin_action.isEnabled, "the admin menu enabled for the admin")
        w.admin_action.trigger()
        admin = w.open_admin()
        await self.until(lambda: admin.isVisible() and admin.texts(admin.connected), "Connections, filled")
        table, model = admin.connected_view, admin.connected_view.model()
        for row in range(model.rowCount()):
            for column in range(model.columnCount()):
                text = model.item(row, column).text()
                width = table.fontMetrics().horizontalAdvance(text)
                assert table.columnWidth(column) >= width, f"{text!r} cut to {table.columnWidth(column)} px"
        await self.shot("admin-connections")
        admin.close()
        w.dialogs.change_password_action.trigger()
        change = w.dialogs.keeper.get("password")
        await self.until(lambda: change is not None and change.isVisible(), "Change password")
        QTest.keyClicks(change.current, "not the password")
        QTest.keyClicks(change.new, "staple battery horse")
        QTest.keyClicks(change.again, "staple battery horse")
        self.click(change.ok_button)
        await self.until(lambda: "Refused" in change.outcome.text(), "a wrong current password refused")
        assert not w.banner.isVisible(), "the dialog says it; no 'can't log in' over the chat"
        for field in (change.current, change.new, change.again):
            field.clear()
        QTest.keyClicks(change.current, self.boss_password)
        QTest.keyClicks(change.new, "staple battery horse")
        QTest.keyClicks(change.again, "staple battery horse")
        self.click(change.ok_button)
        await self.until(lambda: "Password changed" in change.outcome.text(), "the password changed")
        await self.shot("password-changed")
        change.close()
        assert self.client.errors.count == 0, self.client.errors.summaries


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        print("E2E FAILED: the driver itself broke", flush=True)
        sys.exit(1)
