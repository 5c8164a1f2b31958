"""Sharing files from the window: uploads and downloads with their progress
(each cancellable), thumbnails for the transcript, and an image shown whole.

The bytes move through :class:`~qtclient.transfers.Transfers` on the
reactor; images are decoded and screenshots encoded on worker threads, so
the window never waits for a large one.
"""

from __future__ import annotations

import io
import mimetypes
import os
from collections import deque
from typing import IO

from PyQt6 import sip
from PyQt6.QtCore import QBuffer, QIODevice, QObject, Qt, pyqtSignal
from PyQt6.QtGui import QGuiApplication, QImage, QPixmap
from PyQt6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from qtclient.session_machine import FilesUnavailable
from qtclient.transfers import HttpRefusal, Transfers, refusal_words, size_words

log = Logger()

#: Thumbnails fetched at once; the rest wait their turn.
THUMBS_AT_ONCE = 4
#: Uploads under way at once: the server refuses a session more than its
#: uploads_at_once (2 by default, not told to clients) with 429.
UPLOADS_AT_ONCE = 1
#: The default port of the server's web site (``--web``), where /files is.
WEB_PORT = 8080


def web_address_for(host: str, port: int, tls: bool, configured: str | None = None) -> str:
    """The web site files are on: the one configured for this server, else
    the chat host on the web site's default port."""
    if configured:
        return configured.rstrip("/")
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{WEB_PORT}"


#: Bytes of a file looked at to tell text from binary.
SNIFF = 4096


def media_type(name: str, head: bytes = b"") -> str:
    """A guess from the name, else text/plain for a start that is UTF-8 (a
    log, source code); the server checks images by their bytes anyway."""
    guessed, _ = mimetypes.guess_type(name)
    if guessed:
        return guessed
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not merely a character cut at the end
            return "application/octet-stream"
    return "text/plain" if head and b"\0" not in head else "application/octet-stream"


def encode_png(image: QImage) -> bytes:
    """An image (a pasted screenshot) as PNG bytes; run on a worker thread."""
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise ValueError("the image could not be saved as PNG")
    return bytes(buffer.data())


def decode_image(data: bytes) -> QImage:
    """An image from its bytes; run on a worker thread (QImage, not QPixmap, may be made there)."""
    image = QImage.fromData(data)
    if image.isNull():
        raise ValueError("not an image this client can show")
    return image


def failure_words(failure: Failure, max_upload: int | None = None) -> str:
    """Why a transfer failed, for the user."""
    if failure.check(HttpRefusal):
        return refusal_words(failure.value, max_upload)
    if failure.check(FilesUnavailable):
        return failure.value.message
    if failure.check(OSError):
        return f"{failure.value.strerror or failure.getErrorMessage()}"
    return failure.getErrorMessage() or failure.type.__name__


class TransferRow(QWidget):
    """One upload or download under way: what, how far, and a way to stop it."""

    cancelled = pyqtSignal()

    def __init__(self, words: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        self.label = QLabel(words)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setMaximumWidth(220)
        self.bar.setFormat("%p%")
        self.cancel_button = QToolButton()
        self.cancel_button.setText("✕")
        self.cancel_button.setToolTip("Cancel")
        self.cancel_button.clicked.connect(self.cancelled.emit)
        row.addWidget(self.label, 1)
        row.addWidget(self.bar)
        row.addWidget(self.cancel_button)

    def progress(self, done: int, total: int) -> None:
        self.bar.setValue(round(1000 * done / total) if total > 0 else 0)


class TransfersPanel(QWidget):
    """The transfers under way, over the message box; hidden when there are none."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.column = QVBoxLayout(self)
        self.column.setContentsMargins(0, 0, 0, 0)
        self.column.setSpacing(1)
        self.rows: list[TransferRow] = []
        self.hide()

    def add(self, words: str) -> TransferRow:
        """A row for a transfer about to start (its ✕ is connected to it by the caller)."""
        row = TransferRow(words, self)
        self.rows.append(row)
        self.column.addWidget(row)
        self.show()
        return row

    def remove(self, row: TransferRow) -> None:
        if row in self.rows:
            self.rows.remove(row)
            self.column.removeWidget(row)
            row.deleteLater()
        self.setVisible(bool(self.rows))


class Thumbnails(QObject):
    """Inline images by file id: asking for one not here starts fetching it
    (a few at a time); ``loaded`` says one arrived."""

    loaded = pyqtSignal(str)

    def __init__(self, transfers: Transfers, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.transfers = transfers
        self.images: dict[str, QImage] = {}
        self._waiting: deque[str] = deque()
        self._fetching: set[str] = set()
        self._failed: set[str] = set()

    def image(self, file_id: str) -> QImage | None:
        image = self.images.get(file_id)
        if image is None and file_id not in self._fetching and file_id not in self._failed:
            if file_id not in self._waiting:
                self._waiting.append(file_id)
            self._next()
        return image

    def retry_failed(self) -> None:
        """Back online: the ones that failed may be asked again."""
        self._failed.clear()

    def _next(self) -> None:
        while self._waiting and len(self._fetching) < THUMBS_AT_ONCE:
            file_id = self._waiting.popleft()
            self._fetching.add(file_id)
            d = self.transfers.fetch(codec.File(file_id, "thumb", 0, ""), thumb=True)
            d.addCallback(self._decode)
            d.addCallbacks(self._arrived, self._not_arrived, callbackArgs=(file_id,), errbackArgs=(file_id,))

    @staticmethod
    def _decode(data: bytes) -> Deferred[QImage]:
        from twisted.internet.threads import deferToThread

        return deferToThread(decode_image, data)

    def _arrived(self, image: QImage, file_id: str) -> None:
        self._fetching.discard(file_id)
        self.images[file_id] = image
        self.loaded.emit(file_id)
        self._next()

    def _not_arrived(self, failure: Failure, file_id: str) -> None:
        self._fetching.discard(file_id)
        self._failed.add(file_id)
        log.info("thumbnail {id} not shown: {why}", id=file_id, why=failure.getErrorMessage())
        self._next()


class ImageDialog(QDialog):
    """An image whole, as large as fits the screen (scrolling past that)."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(name)
        self.label = QLabel("Loading…")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        area = QScrollArea()
        area.setWidget(self.label)
        area.setWidgetResizable(True)
        area.setAlignment(Qt.AlignmentFlag.AlignCenter)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(area)
        self.resize(360, 240)

    def show_image(self, image: QImage) -> None:
        screen = self.screen() or QGuiApplication.primaryScreen()
        room = screen.availableGeometry().size() * 0.9 if screen is not None else image.size()
        pixmap = QPixmap.fromImage(image)
        if pixmap.width() > room.width() or pixmap.height() > room.height():
            pixmap = pixmap.scaled(
                room, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
        self.label.setPixmap(pixmap)
        self.resize(pixmap.width() + 4, pixmap.height() + 4)

    def show_problem(self, words: str) -> None:
        self.label.setText(f"Can't show the image: {words}")


class FileShare(QObject):
    """What the window asks about files: share some in a room (then SAY
    them with the text typed), download one, open an image. ``problem``
    carries a failure in words, ``notice`` a success."""

    problem = pyqtSignal(str)
    notice = pyqtSignal(str)
    #: A message's text whose files could not go: back to the input.
    unsent = pyqtSignal(str)

    def __init__(
        self, session, transfers: Transfers, panel: TransfersPanel, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.transfers = transfers
        self.panel = panel
        self.thumbnails = Thumbnails(transfers, self)
        self._turns = DeferredSemaphore(UPLOADS_AT_ONCE)  # the rest wait, their rows shown

    def max_upload(self) -> int | None:
        value = self.session.limits.get("max_upload")
        return value if isinstance(value, int) else None

    # -- sharing -------------------------------------------------------------------

    def share_paths(self, room: str, paths: list[str], text: str = "") -> Deferred | None:
        """Upload the files at ``paths`` and say them in ``room`` with ``text``."""
        items: list[tuple[str, IO[bytes], str]] = []
        for path in paths:
            try:
                source = open(path, "rb")
            except OSError as e:
                self.problem.emit(f"can't read {os.path.basename(path)}: {e.strerror}")
                continue
            name = os.path.basename(path) or "file"
            try:
                head = source.read(SNIFF)
            except OSError as e:
                source.close()
                self.problem.emit(f"can't read {name}: {e.strerror}")
                continue
            items.append((name, source, media_type(name, head)))
        return self.share(room, items, text) if items else None

    def share_image(self, room: str, image: QImage, text: str = "") -> Deferred:
        """A pasted image (a screenshot): made a PNG on a worker thread, then shared."""
        from twisted.internet.threads import deferToThread

        d = deferToThread(encode_png, image.copy())
        d.addCallback(
            lambda data: self.share(room, [("screenshot.png", io.BytesIO(data), "image/png")], text)
        )
        d.addErrback(self._share_failed, text)
        return d

    def share(self, room: str, items: list[tuple[str, IO[bytes], str]], text: str = "") -> Deferred:
        """Upload each (name, open file, type) with its own progress row; once
        all have ended, SAY those that went (with ``text``) in ``room``."""
        limit = self.session.limits.get("max_files")
        if isinstance(limit, int) and len(items) > limit:
            for _name, source, _type in items:
                source.close()
            self.problem.emit(f"a message carries at most {limit} files: choose fewer")
            self.unsent.emit(text)
            return DeferredList([])
        uploads = [self._upload(room, *item) for item in items]
        done = DeferredList(uploads, consumeErrors=True)
        done.addCallback(self._say, room, text)
        done.addErrback(self._share_failed, text)
        return done

    def _upload(self, room: str, name: str, source: IO[bytes], kind: str) -> Deferred:
        row = self.panel.add(f"Uploading {name}")
        d = self._turns.run(self.transfers.upload, room, name, source, kind, row.progress)
        row.cancelled.connect(d.cancel)  # waiting its turn, or under way

        def ended(result):
            source.close()
            self.panel.remove(row)
            if isinstance(result, Failure):
                if result.check(CancelledError):
                    self.notice.emit(f"upload of {name} cancelled")
                else:
                    self.problem.emit(f"{name} was not uploaded: {failure_words(result, self.max_upload())}")
            return result

        return d.addBoth(ended)

    def _say(self, results: list, room: str, text: str) -> None:
        ids = [file.id for ok, file in results if ok]
        if not ids:
            self.unsent.emit(text)
            return
        if self.session.say(text, room, files=ids) is None:
            self.unsent.emit(text)

    def _share_failed(self, failure: Failure, text: str) -> None:
        self.problem.emit(f"the file was not shared: {failure_words(failure, self.max_upload())}")
        self.unsent.emit(text)

    # -- downloads and images ----------------------------------------------------------

    def download(self, file: codec.File, path: str) -> Deferred:
        """Stream ``file`` to ``path`` with a progress row."""
        row = self.panel.add(f"Downloading {file.name} ({size_words(file.size)})")
        d = self.transfers.download(file, path, row.progress)
        row.cancelled.connect(d.cancel)

        def ended(result):
            self.panel.remove(row)
            if not isinstance(result, Failure):
                self.notice.emit(f"saved {file.name} to {path}")
            elif result.check(CancelledError):
                self.notice.emit(f"download of {file.name} cancelled")
            else:
                self.problem.emit(f"{file.name} was not downloaded: {failure_words(result)}")

        return d.addBoth(ended)

    def show_image(self, file: codec.File, dialog: ImageDialog) -> Deferred:
        """Fetch the whole image into ``dialog`` (decoded on a worker thread)."""
        d = self.transfers.fetch(file).addCallback(Thumbnails._decode)

        def ended(result):
            if sip.isdeleted(dialog):
                return None  # closed before the image came
            if isinstance(result, Failure):
                dialog.show_problem(failure_words(result))
            else:
                dialog.show_image(result)

        return d.addBoth(ended)
