"""The transcript as people expect to read it: messages wrap and keep their
line breaks, only a URL is a link, and a narrow window still leaves the
text most of the width.

A table (time, nick, text) whose rows are as tall as their text: each row's
height is set once when it arrives, and again only when the text column's
width changes, so an append costs the same at 10,000 rows as at 10.
"""

from __future__ import annotations

import re
from typing import Protocol

from PyQt6.QtCore import QEvent, QModelIndex, QPoint, QPointF, QRect, QRectF, Qt, QTimer, QUrl, pyqtSignal
from PyQt6.QtGui import (
    QAbstractTextDocumentLayout,
    QColor,
    QCursor,
    QFont,
    QFontMetrics,
    QImage,
    QPalette,
    QTextDocument,
)
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QToolButton,
    QToolTip,
)

from qtclient.models import HEADING_ROLE, HTML_ROLE, RICH_ROLE, TEXT_COLUMN

#: A message's actions, in the order the hover bar and the menu show them.
ACTIONS = (("reply", "↩ Reply"), ("react", "☺ React"), ("edit", "✎ Edit"), ("delete", "🗑 Delete"))

#: Space around a row's text, in pixels.
PAD_X, PAD_Y = 4, 3
#: Below this viewport width the time column goes (its tooltip keeps it).
NARROW = 480
_CACHE_LIMIT = 20_000
#: An inline image's source in a row's HTML (models.files_html).
_THUMB = re.compile(r'src="thumb:([A-Za-z0-9_-]+)"')
#: Anchors a click on acts inside the window (the rest are URLs to open).
INNER_ANCHORS = ("quote:", "react:", "image:", "file:")


class Images(Protocol):
    """Where the delegate finds inline images: None until loaded (asking is
    what starts the loading)."""

    def image(self, file_id: str) -> QImage | None: ...


def placeholder() -> QImage:
    """What an image shows while its thumbnail is on its way."""
    image = QImage(1, 1, QImage.Format.Format_RGB32)
    image.fill(QColor("#e4e7eb"))
    return image


class MessageDelegate(QStyledItemDelegate):
    """Paints the text column from the model's HTML (escaped text, links,
    line breaks) and says how tall a row must be at a given width."""

    def __init__(self, parent=None, images: Images | None = None) -> None:
        super().__init__(parent)
        self.images = images
        self._placeholder = placeholder()
        self._heights: dict[tuple[str, int, str], int] = {}
        self._metrics: dict[str, QFontMetrics] = {}

    def document(self, index: QModelIndex, width: int) -> QTextDocument:
        doc = QTextDocument()
        doc.setDocumentMargin(0)
        doc.setDefaultFont(self._font(index))
        doc.setDefaultStyleSheet("a { color: #1a55c0; }")
        html = index.data(HTML_ROLE) or ""
        for file_id in _THUMB.findall(html):  # sized in the HTML: the height is the same either way
            image = self.images.image(file_id) if self.images is not None else None
            resource = QTextDocument.ResourceType.ImageResource.value
            doc.addResource(
                resource, QUrl(f"thumb:{file_id}"), image if image is not None else self._placeholder
            )
        doc.setHtml(html)
        doc.setTextWidth(max(1, width))
        return doc

    def _font(self, index: QModelIndex) -> QFont:
        font = index.data(Qt.ItemDataRole.FontRole)
        return font if isinstance(font, QFont) else QApplication.font()

    def height_for(self, index: QModelIndex, width: int) -> int:
        """The row's height with its text wrapped to ``width`` pixels."""
        font = self._font(index)
        metrics = self._metrics.get(font.key())
        if metrics is None:
            metrics = self._metrics[font.key()] = QFontMetrics(font)
        one_line = metrics.lineSpacing() + 2 * PAD_Y
        inner = width - 2 * PAD_X
        text = index.data(Qt.ItemDataRole.DisplayRole) or ""
        plain = not index.data(RICH_ROLE)
        if plain and "\n" not in text and "://" not in text and metrics.horizontalAdvance(text) <= inner:
            return one_line  # most chat: one line, no layout needed
        html = index.data(HTML_ROLE) or ""
        key = (html, inner, font.key())
        height = self._heights.get(key)
        if height is None:
            if len(self._heights) > _CACHE_LIMIT:
                self._heights.clear()
            doc = self.document(index, inner)
            height = self._heights[key] = max(one_line, round(doc.size().height()) + 2 * PAD_Y)
        return height

    def paint(self, painter, option, index: QModelIndex) -> None:
        if index.column() != TEXT_COLUMN:
            super().paint(painter, option, index)
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""  # the panel (background, selection) without the text
        style = opt.widget.style() if opt.widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        doc = self.document(index, opt.rect.width() - 2 * PAD_X)
        context = QAbstractTextDocumentLayout.PaintContext()
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        brush = index.data(Qt.ItemDataRole.ForegroundRole)
        if selected:
            colour = opt.palette.color(QPalette.ColorRole.HighlightedText)
        elif brush is not None:
            colour = brush.color()
        else:
            colour = opt.palette.color(QPalette.ColorRole.Text)
        context.palette.setColor(QPalette.ColorRole.Text, colour)
        painter.save()
        painter.translate(opt.rect.left() + PAD_X, opt.rect.top() + PAD_Y)
        painter.setClipRect(QRectF(0, 0, opt.rect.width() - PAD_X, opt.rect.height()))
        doc.documentLayout().draw(painter, context)
        painter.restore()


class CellDelegate(QStyledItemDelegate):
    """Time and nick: beside the message's text, below its day's heading."""

    def paint(self, painter, option, index: QModelIndex) -> None:
        if not index.data(HEADING_ROLE):
            super().paint(painter, option, index)
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        style = opt.widget.style() if opt.widget is not None else QApplication.style()
        text, opt.text = opt.text, ""
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        shift = QFontMetrics(opt.font).lineSpacing() + 4  # the heading's line and its margin
        opt.text = text
        opt.rect = opt.rect.adjusted(0, shift, 0, 0)
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)


class HoverBar(QFrame):
    """The actions of the message under the mouse, over its top right corner."""

    triggered = pyqtSignal(str, int)  # action, row

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setStyleSheet("HoverBar { background: #ffffff; border: 1px solid #cccccc; border-radius: 4px; }")
        row = QHBoxLayout(self)
        row.setContentsMargins(2, 1, 2, 1)
        row.setSpacing(1)
        self.row = -1
        self.buttons: dict[str, QToolButton] = {}
        for name, label in ACTIONS:
            button = self.buttons[name] = QToolButton(self)
            button.setText(label.split(" ", 1)[0])
            button.setToolTip(label.split(" ", 1)[1])
            button.setAutoRaise(True)
            button.clicked.connect(lambda _=False, name=name: self.triggered.emit(name, self.row))
            row.addWidget(button)
        self.hide()

    def show_for(self, row: int, actions: list[str]) -> None:
        self.row = row
        for name, button in self.buttons.items():
            button.setVisible(name in actions)
        self.adjustSize()


class TranscriptView(QTableView):
    """The transcript table; ``linkActivated`` carries a clicked URL,
    ``anchorClicked`` (row, href) a quote or a reaction chip clicked, and
    ``actionRequested`` (action, row) a message's action from the hover bar."""

    linkActivated = pyqtSignal(str)
    anchorClicked = pyqtSignal(int, str)
    actionRequested = pyqtSignal(str, int)

    def __init__(self, parent=None, images: Images | None = None) -> None:
        super().__init__(parent)
        self.delegate = MessageDelegate(self, images)
        self.setItemDelegateForColumn(TEXT_COLUMN, self.delegate)
        self.cells = CellDelegate(self)
        for column in range(TEXT_COLUMN):
            self.setItemDelegateForColumn(column, self.cells)
        self.setShowGrid(False)
        self.setWordWrap(True)
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMouseTracking(True)
        rows = self.verticalHeader()
        rows.hide()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().lineSpacing() + 2 * PAD_Y)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        header.setHighlightSections(False)
        header.sectionResized.connect(self._section_resized)
        self._fitted_width = -1
        self._refit = QTimer(self)
        self._refit.setSingleShot(True)
        self._refit.setInterval(0)
        self._refit.timeout.connect(self.fit_all_rows)
        #: row -> the actions that apply to it (the window decides); none by default.
        self.actions_for = lambda row: []
        #: (row, href) -> a tooltip for an anchor (who reacted), or None.
        self.anchor_tooltip = lambda row, href: None
        self.hover_bar = HoverBar(self.viewport())
        self.hover_bar.triggered.connect(self._hover_action)
        self.verticalScrollBar().valueChanged.connect(lambda _: self.hover_bar.hide())

    def _hover_action(self, action: str, row: int) -> None:
        self.hover_bar.hide()
        self.actionRequested.emit(action, row)

    def show_actions_at(self, position: QPoint) -> None:
        """The hover bar for the message under ``position`` (viewport coordinates)."""
        index = self.indexAt(position)
        actions = self.actions_for(index.row()) if index.isValid() else []
        if not actions:
            self.hover_bar.hide()
            return
        self.hover_bar.show_for(index.row(), actions)
        rect = self.visualRect(index.siblingAtColumn(TEXT_COLUMN))
        bar = self.hover_bar
        x = max(0, rect.right() - bar.width() - 4)
        y = max(0, rect.top() - bar.height() // 2) if rect.top() > bar.height() else rect.top()
        bar.move(x, y)
        bar.show()
        bar.raise_()

    # -- the model ---------------------------------------------------------------------

    def setModel(self, model) -> None:
        old = self.model()
        if old is not None:
            for signal, slot in self._model_signals(old):
                try:
                    signal.disconnect(slot)
                except TypeError:  # never connected
                    pass
        super().setModel(model)
        self.hover_bar.hide()
        for signal, slot in self._model_signals(model):
            signal.connect(slot)
        self._size_columns()
        self.fit_all_rows()

    def _model_signals(self, model):
        return (
            (model.rowsInserted, self._rows_inserted),
            (model.modelReset, self.fit_all_rows),
            (model.dataChanged, self._data_changed),
        )

    def _rows_inserted(self, parent, first: int, last: int) -> None:
        self.fit_rows(first, last)

    def _data_changed(self, top_left, bottom_right, roles=()) -> None:
        self.fit_rows(top_left.row(), bottom_right.row())

    # -- row heights -------------------------------------------------------------------

    def text_width(self) -> int:
        return self.columnWidth(TEXT_COLUMN) or self.viewport().width()

    def fit_rows(self, first: int, last: int) -> None:
        model, rows, width = self.model(), self.verticalHeader(), self.text_width()
        for row in range(first, last + 1):
            rows.resizeSection(row, self.delegate.height_for(model.index(row, TEXT_COLUMN), width))

    def fit_all_rows(self) -> None:
        model = self.model()
        self._fitted_width = self.text_width()
        if model is not None and model.rowCount():
            self.fit_rows(0, model.rowCount() - 1)

    def _section_resized(self, column: int, old: int, new: int) -> None:
        if column == TEXT_COLUMN and new != self._fitted_width:
            self._refit.start()

    # -- columns for the width there is ---------------------------------------------------

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._size_columns()

    def _size_columns(self) -> None:
        if self.model() is None:
            return
        width = self.viewport().width()
        metrics = self.fontMetrics()
        self.setColumnHidden(0, width < NARROW)
        self.setColumnWidth(0, metrics.horizontalAdvance("00:00:00") + 2 * PAD_X + 8)
        self.setColumnWidth(1, max(70, min(140, width // 5)))

    # -- links -------------------------------------------------------------------------

    def link_at(self, position: QPoint) -> str | None:
        """The URL under ``position`` (viewport coordinates), if any."""
        index = self.indexAt(position)
        if not index.isValid() or index.column() != TEXT_COLUMN:
            return None
        rect: QRect = self.visualRect(index)
        doc = self.delegate.document(index, rect.width() - 2 * PAD_X)
        point = QPointF(position.x() - rect.left() - PAD_X, position.y() - rect.top() - PAD_Y)
        return doc.documentLayout().anchorAt(point) or None

    def mouseMoveEvent(self, event) -> None:
        position = event.position().toPoint()
        link = self.link_at(position)
        shape = Qt.CursorShape.PointingHandCursor if link else Qt.CursorShape.ArrowCursor
        self.viewport().setCursor(shape)
        self.show_actions_at(position)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        super().mouseReleaseEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            position = event.position().toPoint()
            link = self.link_at(position)
            if link and link.startswith(INNER_ANCHORS):
                self.anchorClicked.emit(self.indexAt(position).row(), link)
            elif link:
                self.linkActivated.emit(link)

    def viewportEvent(self, event) -> bool:
        if event.type() == QEvent.Type.Leave:
            self.viewport().unsetCursor()
            inside = self.hover_bar.geometry().contains(self.viewport().mapFromGlobal(QCursor.pos()))
            if not inside:
                self.hover_bar.hide()
        elif event.type() == QEvent.Type.ToolTip:
            position = event.pos()
            link = self.link_at(position)
            tip = self.anchor_tooltip(self.indexAt(position).row(), link) if link else None
            if tip:
                QToolTip.showText(event.globalPos(), tip, self.viewport())
                return True
        return super().viewportEvent(event)
