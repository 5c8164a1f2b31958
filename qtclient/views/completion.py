"""Nick completion in the input: Tab completes the word before the cursor.

In a small room the candidates are the members the tree lists; in a big
room (docs/protocol.md 22) the client lists only what was scrolled to, so
it asks the server: MEMBERS with the word as ``prefix``. Tab again cycles
through the candidates while the input is as the last completion left it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from PyQt6.QtGui import QTextCursor
from PyQt6.QtWidgets import QPlainTextEdit

from chatproto import codec
from chatproto.rules import nick_key
from qtclient.models import PeerModel

#: Candidates asked of the server for one completion: what a user cycles through with Tab.
COMPLETION_LIMIT = 20
_WORD = re.compile(r"@?([^\s@]+)$")


class NickCompleter:
    def __init__(
        self,
        input: QPlainTextEdit,
        peers: PeerModel,
        room: Callable[[], str],
        ask: Callable[[str, str, int], str | None],
    ) -> None:
        self.input = input
        self.peers = peers
        self.room = room  # the room shown
        self.ask = ask  # (room, prefix, limit) -> the MEMBERS ref, None if offline
        self._asked: tuple[str, str, int] | None = None  # (ref, word, where the word starts)
        #: The completion Tab cycles: (candidates, index, where the word starts, the input it left).
        self._cycle: tuple[list[str], int, int, str] | None = None

    def complete(self) -> bool:
        """Tab: whether there was a word to complete (else Tab moves the focus)."""
        text = self.input.toPlainText()
        if self._cycle is not None and self._cycle[3] == text:
            candidates, index, start, _ = self._cycle
            self._apply(candidates, (index + 1) % len(candidates), start)
            return True
        self._cycle = None
        cursor = self.input.textCursor().position()
        match = _WORD.search(text[:cursor])
        if match is None:
            return False
        word, start = match.group(1), match.start(1)
        room = self.room()
        if self.peers.is_lazy(room):
            ref = self.ask(room, word, COMPLETION_LIMIT)
            self._asked = (ref, word, start) if ref is not None else None
            return True
        key = nick_key(word)
        found = sorted((n for n in self.peers.members(room) if nick_key(n).startswith(key)), key=nick_key)
        if found:
            self._apply(found, 0, start)
        return True

    def answered(self, ref: str, page: codec.Members) -> None:
        """MEMBERS with a prefix answered: complete with it if the input still ends in that word."""
        if self._asked is None or self._asked[0] != ref:
            return
        _, word, start = self._asked
        self._asked = None
        text = self.input.toPlainText()
        if text[start : self.input.textCursor().position()] != word or not page.members:
            return
        self._apply([p.nick for p in page.members], 0, start)

    def _apply(self, candidates: list[str], index: int, start: int) -> None:
        nick = candidates[index]
        cursor = self.input.textCursor()
        end = cursor.position()
        text = self.input.toPlainText()
        if self._cycle is not None:  # the previous candidate and its suffix go
            end = start + len(self._cycle[0][self._cycle[1]]) + len(self._suffix(start))
        cursor.setPosition(start)
        cursor.setPosition(min(end, len(text)), QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText(nick + self._suffix(start))
        self.input.setTextCursor(cursor)
        self._cycle = (candidates, index, start, self.input.toPlainText())

    @staticmethod
    def _suffix(start: int) -> str:
        return ": " if start == 0 else " "
