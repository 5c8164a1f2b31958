"""The widgets of a conversation around the transcript: what the composer
is doing (replying, editing), who is typing, and the emoji picker."""

from __future__ import annotations

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QWidgetAction,
)

#: The picker's grid: what people react with most.
COMMON_EMOJI = (
    "👍", "👎", "😄", "🎉", "❤️", "😮", "😢", "🙏",
    "👀", "🚀", "✅", "❌", "🔥", "💯", "🤔", "😂",
)  # fmt: skip


def typing_words(nicks: list[str]) -> str:
    """ "bob is typing…", for one, two, three or more people."""
    if not nicks:
        return ""
    if len(nicks) == 1:
        return f"{nicks[0]} is typing…"
    if len(nicks) == 2:
        return f"{nicks[0]} and {nicks[1]} are typing…"
    if len(nicks) == 3:
        return f"{nicks[0]}, {nicks[1]} and {nicks[2]} are typing…"
    return "several people are typing…"


class ComposerNote(QWidget):
    """ "Replying to bob: …" or "Editing your message" over the input, with ✕."""

    cancelled = pyqtSignal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 2, 4, 0)
        self.label = QLabel()
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setStyleSheet("color: #1a55c0;")
        self.cancel_button = QToolButton()
        self.cancel_button.setText("✕")
        self.cancel_button.setToolTip("Cancel (Esc)")
        self.cancel_button.setAutoRaise(True)
        self.cancel_button.clicked.connect(self.cancelled.emit)
        row.addWidget(self.label, 1)
        row.addWidget(self.cancel_button)
        self.hide()

    def say(self, text: str) -> None:
        self.label.setText(text)
        self.show()


class EmojiPicker(QMenu):
    """A grid of common emoji and a field for any other (or a :name:)."""

    picked = pyqtSignal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        panel = QWidget(self)
        column = QVBoxLayout(panel)
        column.setContentsMargins(4, 4, 4, 4)
        grid = QGridLayout()
        grid.setSpacing(1)
        self.buttons: dict[str, QToolButton] = {}
        for i, emoji in enumerate(COMMON_EMOJI):
            button = self.buttons[emoji] = QToolButton(panel)
            button.setText(emoji)
            button.setAutoRaise(True)
            button.clicked.connect(lambda _=False, emoji=emoji: self._pick(emoji))
            grid.addWidget(button, i // 8, i % 8)
        column.addLayout(grid)
        self.field = QLineEdit(panel)
        self.field.setPlaceholderText("another emoji or :name:, then Enter")
        self.field.returnPressed.connect(lambda: self._pick(self.field.text().strip()))
        column.addWidget(self.field)
        action = QWidgetAction(self)
        action.setDefaultWidget(panel)
        self.addAction(action)

    def _pick(self, emoji: str) -> None:
        if emoji:
            self.picked.emit(emoji)
        self.close()
