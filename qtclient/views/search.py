"""Finding messages (protocol section 21): words, optionally in the room
shown or from one nick; hits newest first, each with its room, author, time
and a snippet with the matches marked, paged with "More"; a hit clicked is
``opened`` (room, seq) for the window to show it in its room."""

from __future__ import annotations

import time
from collections.abc import Callable

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from chatproto import codec

SEQ_ROLE = Qt.ItemDataRole.UserRole + 1
ROOM_ROLE = Qt.ItemDataRole.UserRole + 2
#: Hits asked for at a time.
PAGE = 20
MARK_STYLE = "background-color:#ffe066; font-weight:bold"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def marked_html(snippet: str, marks: list[list[int]]) -> str:
    """The snippet escaped, each [start, length] (code points) highlighted;
    marks out of range or overlapping are ignored, never trusted."""
    parts, end = [], 0
    for mark in sorted(m for m in marks if len(m) == 2):
        start, length = mark
        if start < end or length <= 0 or start + length > len(snippet):
            continue
        parts.append(_escape(snippet[end:start]))
        parts.append(f'<span style="{MARK_STYLE}">{_escape(snippet[start : start + length])}</span>')
        end = start + length
    parts.append(_escape(snippet[end:]))
    return "".join(parts).replace("\n", " ")


def hit_html(hit: codec.Hit, room_title: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.ts))
    return (
        f'<span style="color:#555555"><b>{_escape(room_title)}</b> · {_escape(hit.sender)} · {when}</span>'
        f"<br>{marked_html(hit.snippet, hit.marks)}"
    )


class SearchPanel(QDockWidget):
    """The search box and its hits, docked beside the transcript."""

    opened = pyqtSignal(str, int)  # room, seq

    def __init__(
        self, session, current_room: Callable[[], str], title: Callable[[str], str], parent=None
    ) -> None:
        super().__init__("Search", parent)
        self.setObjectName("search")
        self.session = session
        self.current_room = current_room
        self.title = title
        self.ref: str | None = None  # the SEARCH whose RESULTS are awaited
        self.next_query: codec.Search | None = None  # "More" sends this with the page

        body = QWidget()
        column = QVBoxLayout(body)
        self.words = QLineEdit()
        self.words.setPlaceholderText('Search messages: words, prefix*, "a phrase"')
        self.words.setClearButtonEnabled(True)
        self.this_room = QCheckBox("This room only")
        self.sender = QLineEdit()
        self.sender.setPlaceholderText("from nick")
        self.sender.setMaximumWidth(120)
        filters = QHBoxLayout()
        filters.addWidget(self.this_room)
        filters.addWidget(self.sender)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color:#555555")
        self.hits = QListWidget()
        self.hits.setWordWrap(True)
        self.hits.setAlternatingRowColors(True)
        self.more = QPushButton("More")
        self.more.hide()
        column.addWidget(self.words)
        column.addLayout(filters)
        column.addWidget(self.status)
        column.addWidget(self.hits, 1)
        column.addWidget(self.more)
        self.setWidget(body)

        self.words.returnPressed.connect(self.run)
        self.sender.returnPressed.connect(self.run)
        self.more.clicked.connect(self.fetch_more)
        self.hits.itemActivated.connect(self._open)
        self.hits.itemClicked.connect(self._open)
        session.resultsReceived.connect(self._results)
        session.searchFailed.connect(self._failed)

    def start(self) -> None:
        """Shown, the words selected for typing over."""
        self.show()
        self.raise_()
        self.words.setFocus()
        self.words.selectAll()

    def run(self) -> None:
        words = self.words.text().strip()
        if not words:
            self.status.setText("Type what to look for.")
            return
        self.hits.clear()
        self.more.hide()
        room = self.current_room() if self.this_room.isChecked() else None
        self._ask(words, room, self.sender.text().strip() or None, None)

    def fetch_more(self) -> None:
        query = self.next_query
        if query is not None:
            self._ask(query.words, query.room, query.sender, query.page)

    def _ask(self, words: str, room: str | None, sender: str | None, page: str | None) -> None:
        self.next_query = None
        self.more.hide()
        self.ref = self.session.search(words, room, sender, page, PAGE)
        self.status.setText("Searching…" if self.ref is not None else "Not connected: search when back.")

    def _results(self, ref: str, query: codec.Search, results: codec.Results) -> None:
        if ref != self.ref:
            return  # an answer to a search since replaced
        self.ref = None
        for hit in results.hits:
            item = QListWidgetItem()
            item.setData(SEQ_ROLE, hit.seq)
            item.setData(ROOM_ROLE, hit.room)
            item.setToolTip(f"{hit.room} #{hit.seq}: click to open it there")
            label = QLabel(hit_html(hit, self.title(hit.room)))
            label.setWordWrap(True)
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            label.setContentsMargins(4, 3, 4, 3)
            self.hits.addItem(item)
            item.setSizeHint(label.sizeHint())
            self.hits.setItemWidget(item, label)
        count = self.hits.count()
        self.status.setText(
            f"{count} found" + (", more below" if results.more else "") if count else "Nothing found."
        )
        if results.more and results.page:
            self.next_query = codec.Search(query.words, query.room, query.sender, page=results.page)
            self.more.show()

    def _failed(self, ref: str, code: str, message: str) -> None:
        if ref == self.ref:
            self.ref = None
            self.status.setText(f"Can't search: {message}")

    def _open(self, item: QListWidgetItem) -> None:
        self.opened.emit(item.data(ROOM_ROLE), item.data(SEQ_ROLE))
