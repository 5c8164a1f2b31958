"""The interface between the core and where its rooms' messages are ordered and kept.

The core never numbers a message itself: it hands drafts to an
:class:`EventLog`, which gives each the next ``seq`` of its room and makes
it durable before the returned Deferred fires. An embedded log fires at
once; a log shared by several servers fires when the shared store has
answered. The core delivers in the order it appended, whichever way it fires.

Rooms are named here by their key (:func:`chatproto.rules.room_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from chatproto.codec import Message
from chatproto.rules import DEFAULT_ROOM


class StoreError(Exception):
    """The log could not do what was asked; nothing was written, no seq used."""


@dataclass(slots=True)
class Draft:
    """A message before the log has given it a seq in its room (made for
    every message said, so not frozen: a frozen init costs a setattr call
    per field)."""

    ts: float
    sender: str
    text: str
    room: str = DEFAULT_ROOM
    action: dict | None = None  # a moderation record: what was done, to whom


@dataclass(frozen=True, slots=True)
class Topic:
    """A room's topic as stored: kept across restarts for rooms that always
    exist (here), and for rooms whose rules are kept (with them, in the
    account store)."""

    text: str
    by: str
    ts: float


class EventLog(Protocol):
    def append(self, drafts: Sequence[Draft]) -> Deferred[list[Message]]:
        """Number each draft with the next seq of its room, in order, and
        store them all or none. Fires with the stored messages once they
        survive ``kill -9``; fails with StoreError having stored nothing
        and used no seq."""

    def before(
        self, seq: int | None, limit: int, room: str = DEFAULT_ROOM
    ) -> Deferred[tuple[list[Message], bool]]:
        """Up to ``limit`` messages of ``room`` with seq < ``seq`` (the newest
        if None), oldest first, and whether older ones exist."""

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[tuple[list[Message], bool]]:
        """Up to ``limit`` messages of ``room`` with seq > ``seq``, oldest
        first, and whether newer ones exist."""

    def topic(self, room: str) -> Deferred[Topic | None]:
        """The room's stored topic, if any."""

    def set_topic(self, room: str, topic: Topic | None) -> Deferred[None]:
        """Store (or, with None, forget) a room's topic."""

    def check(self) -> Deferred[None]:
        """Fires if the store answers (for health checks); fails with StoreError if not."""

    def maintain(self) -> None:
        """Housekeeping that may block (a checkpoint): run on a worker thread."""

    def close(self) -> None: ...
