"""The interface between the room and where its messages are ordered and kept.

The room never numbers a message itself: it hands drafts to an
:class:`EventLog`, which gives each the next ``seq`` and makes it durable
before the returned Deferred fires. An embedded log fires at once; a log
shared by several servers fires when the shared store has answered. The
room delivers in the order it appended, whichever way it fires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from chatproto.codec import Message


class StoreError(Exception):
    """The log could not do what was asked; nothing was written, no seq used."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A message before the log has given it a seq."""

    ts: float
    sender: str
    text: str


class EventLog(Protocol):
    def append(self, drafts: Sequence[Draft]) -> Deferred[list[Message]]:
        """Number the drafts with the next seqs, in order, and store them all
        or none. Fires with the stored messages once they survive ``kill -9``;
        fails with StoreError having stored nothing and used no seq."""

    def before(self, seq: int | None, limit: int) -> Deferred[tuple[list[Message], bool]]:
        """Up to ``limit`` messages with seq < ``seq`` (the newest if None),
        oldest first, and whether older ones exist."""

    def after(self, seq: int, limit: int) -> Deferred[tuple[list[Message], bool]]:
        """Up to ``limit`` messages with seq > ``seq``, oldest first, and
        whether newer ones exist."""

    def maintain(self) -> None:
        """Housekeeping that may block (a checkpoint): run on a worker thread."""

    def close(self) -> None: ...
