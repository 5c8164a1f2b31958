"""Files and search in the window (protocol sections 20, 21), against a real
in-process server with its web site and a files folder on 127.0.0.1: a
pasted screenshot seen inline in another window, a text file attached and
downloaded, an upload over the limit refused in words, and a search hit
that opens its room at the message."""

from __future__ import annotations

import io

import pytest
import pytest_twisted
from PyQt6.QtCore import QMimeData, QPointF, Qt, QUrl
from PyQt6.QtGui import QColor, QDropEvent, QImage
from test_client import log_in
from twisted.internet.defer import succeed
from waiting import member_of, signal_fired, until

from qtclient.models import HTML_ROLE
from qtclient.views.search import SEQ_ROLE
from qtclient.views.transcript import TEXT_COLUMN

MAX_UPLOAD = 200_000


@pytest.fixture
def files_server(reactor, tmp_path):
    """A server with its web site (where /files is) and a files folder."""
    from chatproto.limits import Limits
    from chatproto.server import build_server

    server = build_server(
        reactor,
        ["tcp:0:interface=127.0.0.1"],
        str(tmp_path / "history.sqlite3"),
        Limits(max_upload=MAX_UPLOAD, history_replay=10),
        web=["tcp:0:interface=127.0.0.1"],
        files=str(tmp_path / "files"),
    )
    server.start()
    # The files' signing secret is read from the store after the start: until
    # then the server answers FILES with no_files.
    pytest_twisted.blockon(until(lambda: server.hub.files.ready))
    yield server
    pytest_twisted.blockon(server.stopService())


def windows(qtbot, reactor, settings, sessions, files_server, count=2):
    from qtclient.views.main_window import MainWindow

    settings.setValue(
        f"web_address/127.0.0.1:{files_server.port}", f"http://127.0.0.1:{files_server.web_port}"
    )
    made = []
    for _ in range(count):
        window = MainWindow(reactor, settings, session=sessions())
        qtbot.addWidget(window)
        window.show()
        made.append(window)
    return made


def lines_with_files(window):
    window.transcript.flush()
    return [line for line in window.transcript.lines if line.files]


def system_lines(window):
    window.transcript.flush()
    return [line.text for line in window.transcript.lines if line.kind == "system"]


@pytest_twisted.inlineCallbacks
def test_a_pasted_screenshot_is_seen_inline_in_the_other_window(
    qtbot, reactor, settings, sessions, files_server
):
    alice, bob = windows(qtbot, reactor, settings, sessions, files_server)
    yield log_in(alice, files_server, "alice")
    yield log_in(bob, files_server, "bob")
    screenshot = QImage(800, 400, QImage.Format.Format_RGB32)
    screenshot.fill(QColor("#3366cc"))
    mime = QMimeData()
    mime.setImageData(screenshot)
    alice.input.setPlainText("look at this")
    assert alice.input.canInsertFromMimeData(mime)
    alice.input.insertFromMimeData(mime)  # what Ctrl+V does with an image on the clipboard
    assert alice.input.toPlainText() == "", "the text typed goes with the image"
    yield until(lambda: lines_with_files(bob))
    (line,) = lines_with_files(bob)
    (file,) = line.files
    assert line.text == "look at this" and line.nick == "alice"
    assert (file.name, file.type, file.width, file.height, file.thumb) == (
        "screenshot.png",
        "image/png",
        800,
        400,
        True,
    )
    row = bob.transcript.lines.index(line)
    html = bob.transcript.data(bob.transcript.index(row, TEXT_COLUMN), HTML_ROLE)
    assert f'src="thumb:{file.id}"' in html and 'width="240" height="120"' in html
    bob.transcript_view.delegate.document(bob.transcript.index(row, TEXT_COLUMN), 600)  # as painting does
    yield until(lambda: file.id in bob.files.thumbnails.images)
    thumb = bob.files.thumbnails.images[file.id]
    assert 0 < thumb.width() <= 320 and thumb.pixelColor(10, 10).name() == "#3366cc"
    dialog = bob.open_image(file)  # a click on the thumbnail
    yield until(lambda: dialog.label.pixmap() is not None and not dialog.label.pixmap().isNull())
    assert dialog.label.pixmap().width() <= 800
    assert bob.transcript_view.rowHeight(row) > 120, "the row is as tall as its picture"


@pytest_twisted.inlineCallbacks
def test_an_attached_text_file_is_a_card_that_downloads(
    qtbot, reactor, settings, sessions, files_server, tmp_path
):
    alice, bob = windows(qtbot, reactor, settings, sessions, files_server)
    yield log_in(alice, files_server, "alice")
    yield log_in(bob, files_server, "bob")
    log = tmp_path / "build.log"
    content = "".join(f"line {n}: ok\n" for n in range(5000)).encode()
    log.write_bytes(content)
    pasted = QMimeData()  # files copied in a file manager, pasted into the message box
    pasted.setUrls([QUrl.fromLocalFile(str(log))])
    assert alice.input.canInsertFromMimeData(pasted)
    alice.input.insertFromMimeData(pasted)
    assert alice.transfers_panel.isVisible(), "its progress is shown while it goes"
    yield until(lambda: lines_with_files(bob))
    (line,) = lines_with_files(bob)
    (file,) = line.files
    assert (file.name, file.size, file.type) == ("build.log", len(content), "text/plain")
    row = bob.transcript.lines.index(line)
    html = bob.transcript.data(bob.transcript.index(row, TEXT_COLUMN), HTML_ROLE)
    assert "build.log" in html and 'href="file:0"' in html and "Download" in html and "<img" not in html
    saved = signal_fired(bob.files.notice, lambda words: words.startswith("saved"))
    dialog = bob.ask_download(file)  # the card's Download
    target = tmp_path / "downloaded.log"
    dialog.fileSelected.emit(str(target))  # the user chose where
    yield saved
    assert target.read_bytes() == content
    assert not (tmp_path / "downloaded.log.part").exists()
    yield until(lambda: not alice.transfers_panel.rows and not bob.transfers_panel.rows)


@pytest_twisted.inlineCallbacks
def test_several_files_chosen_at_once_go_in_one_message(
    qtbot, reactor, settings, sessions, files_server, tmp_path
):
    alice, bob = windows(qtbot, reactor, settings, sessions, files_server)
    yield log_in(alice, files_server, "alice")
    yield log_in(bob, files_server, "bob")
    paths = []
    for n in range(4):  # more than the server's uploads_at_once: they take turns
        path = tmp_path / f"part{n}.txt"
        path.write_text(f"part {n}\n" * 1000)
        paths.append(str(path))
    alice.input.setPlainText("all four parts")
    alice.share_paths(paths)
    assert len(alice.transfers_panel.rows) == 4, "each shown from the start, waiting its turn"
    yield until(lambda: lines_with_files(bob))
    (line,) = lines_with_files(bob)
    assert line.text == "all four parts"
    assert [f.name for f in line.files] == ["part0.txt", "part1.txt", "part2.txt", "part3.txt"]
    assert not [t for t in system_lines(alice) if "not uploaded" in t]


@pytest_twisted.inlineCallbacks
def test_an_upload_over_the_limit_is_refused_in_words(
    qtbot, reactor, settings, sessions, files_server, tmp_path
):
    (alice,) = windows(qtbot, reactor, settings, sessions, files_server, count=1)
    yield log_in(alice, files_server, "alice")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (MAX_UPLOAD + 1))
    alice.input.setPlainText("the dump")
    problem = signal_fired(alice.files.problem)
    dropped = QMimeData()  # dropped on the window from a file manager
    dropped.setUrls([QUrl.fromLocalFile(str(big))])
    drop = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        dropped,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    alice.dropEvent(drop)
    assert drop.isAccepted()
    (words,) = yield problem
    assert words == "big.bin was not uploaded: the file is too large (the server takes files up to 195.3 KB)"
    yield until(lambda: words in system_lines(alice))
    yield until(lambda: alice.input.toPlainText() == "the dump")
    assert not lines_with_files(alice), "nothing was said"


@pytest_twisted.inlineCallbacks
def test_a_search_hit_opens_its_room_at_the_message(qtbot, reactor, settings, sessions, files_server):
    alice, bob = windows(qtbot, reactor, settings, sessions, files_server)
    yield log_in(alice, files_server, "alice")
    yield log_in(bob, files_server, "bob")
    yield member_of(bob.session, "ops")
    confirmed = signal_fired(bob.session.sendConfirmed)
    bob.session.say("the deploy key rotates on Fridays", "ops")
    (_ref, needle) = yield confirmed
    for n in range(20):  # more than a join's history: the hit must be fetched around
        last = signal_fired(bob.session.sendConfirmed)
        bob.session.say(f"filler {n}", "ops")
    yield last
    yield member_of(alice.session, "ops")
    alice.show_room("general")
    alice.transcripts["ops"].flush()
    assert alice.transcripts["ops"].row_of_seq(needle) < 0, "not loaded yet"
    alice.search_action.trigger()
    assert alice.search_panel.isVisible()
    alice.search_panel.words.setText("deploy rotat*")
    alice.search_panel.run()
    yield until(lambda: alice.search_panel.hits.count() == 1)
    item = alice.search_panel.hits.item(0)
    label = alice.search_panel.hits.itemWidget(item)
    assert "ops" in label.text() and "bob" in label.text() and "background-color:#ffe066" in label.text()
    alice.search_panel.hits.itemClicked.emit(item)
    assert item.data(SEQ_ROLE) == needle
    yield until(lambda: alice.current == "ops" and alice.transcript.row_of_seq(needle) >= 0)
    row = alice.transcript.row_of_seq(needle)
    yield until(lambda: [i.row() for i in alice.transcript_view.selectionModel().selectedRows()] == [row])
    assert alice.transcript.lines[row].text == "the deploy key rotates on Fridays"
    assert alice.transcript_view.visualRect(alice.transcript.index(row, TEXT_COLUMN)).intersects(
        alice.transcript_view.viewport().rect()
    ), "scrolled into view"


@pytest_twisted.inlineCallbacks
def test_an_upload_refused_for_its_token_is_tried_once_more_with_a_new_one(
    qtbot, reactor, settings, sessions, files_server
):
    from twisted.web.client import Agent

    from chatproto import codec
    from qtclient.transfers import HttpRefusal, Transfers

    (alice,) = windows(qtbot, reactor, settings, sessions, files_server, count=1)
    yield log_in(alice, files_server, "alice")
    asked = []
    bogus = codec.FilesToken("x" * 43, 2e9, "/files", MAX_UPLOAD)

    def tokens(fresh, good=True):
        asked.append(fresh)
        return alice.session.files_token(fresh) if fresh and good else succeed(bogus)

    web = f"http://127.0.0.1:{files_server.web_port}"
    transfers = Transfers(Agent(reactor), tokens, web)
    file = yield transfers.upload("general", "a.txt", io.BytesIO(b"hello"), "text/plain", lambda *_: None)
    assert (file.name, file.size, asked) == ("a.txt", 5, [False, True])
    asked.clear()
    refused = Transfers(Agent(reactor), lambda fresh: tokens(fresh, good=False), web)
    with pytest.raises(HttpRefusal) as caught:
        yield refused.upload("general", "b.txt", io.BytesIO(b"hello"), "text/plain", lambda *_: None)
    assert (caught.value.status, caught.value.code, asked) == (401, "bad_token", [False, True])


@pytest_twisted.inlineCallbacks
def test_a_cancelled_upload_says_so_and_sends_nothing(
    qtbot, reactor, settings, sessions, files_server, tmp_path
):
    (alice,) = windows(qtbot, reactor, settings, sessions, files_server, count=1)
    yield log_in(alice, files_server, "alice")
    path = tmp_path / "notes.txt"
    path.write_text("draft\n")
    alice.input.setPlainText("my notes")
    cancelled = signal_fired(alice.files.notice, lambda words: "cancelled" in words)
    alice.share_paths([str(path)])
    (row,) = alice.transfers_panel.rows
    row.cancel_button.click()
    (words,) = yield cancelled
    assert words == "upload of notes.txt cancelled"
    yield until(lambda: alice.input.toPlainText() == "my notes" and not alice.transfers_panel.rows)
    assert not lines_with_files(alice)


def test_the_web_address_for_files_is_kept_per_server_and_checked(qtbot, settings):
    from qtclient.views.connect_dialog import ConnectDialog

    dialog = ConnectDialog(None, settings)
    qtbot.addWidget(dialog)
    dialog.host.setText("chat.example.org")
    dialog.port.setText("7777")
    dialog.nick.setText("alice")
    dialog.web_address.setText("chat.example.org/files")
    dialog.accept()
    assert "http:// or https://" in dialog.error.text() and dialog.target is None
    dialog.web_address.setText("https://chat.example.org/")
    dialog.accept()
    assert settings.value("web_address/chat.example.org:7777") == "https://chat.example.org"
    again = ConnectDialog(None, settings)
    qtbot.addWidget(again)
    assert again.web_address.text() == "https://chat.example.org"


def test_search_marks_are_highlighted_and_the_snippet_escaped():
    from qtclient.views.search import MARK_STYLE, marked_html

    assert marked_html("a <b> deploy & ship", [[6, 6]]) == (
        f'a &lt;b&gt; <span style="{MARK_STYLE}">deploy</span> &amp; ship'
    )
    assert marked_html("short", [[3, 10], [-1, 2], [0, 0]]) == "short", "marks out of range are ignored"
    assert marked_html("é✓ word", [[3, 4]]) == f'é✓ <span style="{MARK_STYLE}">word</span>', "code points"


def test_file_cards_and_images_escape_their_names():
    from chatproto import codec
    from qtclient.models import files_html, thumb_size

    card = files_html((codec.File("A" * 22, '<img src=x onerror="1">.txt', 2048, "text/plain"),))
    assert (
        "&lt;img src=x onerror=&quot;1&quot;&gt;.txt" in card and "2.0 KB" in card and 'href="file:0"' in card
    )
    svg = files_html((codec.File("B" * 22, "logo.svg", 10, "image/svg+xml", 10, 10, True),))
    assert "<img" not in svg, "SVG is never shown inline"
    assert thumb_size(codec.File("C" * 22, "tall.png", 1, "image/png", 100, 1000, True)) == (24, 240)
