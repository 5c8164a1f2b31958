"""The interface between the core and where its rooms' messages are ordered and kept.

The core never numbers a message itself: it hands drafts to an
:class:`EventLog`, which gives each the next ``seq`` of its room and makes
it durable before the returned Deferred fires. An embedded log fires at
once; a log shared by several servers fires when the shared store has
answered. The core delivers in the order it appended, whichever way it fires.

Rooms are named here by their key (:func:`chatproto.rules.room_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from chatproto.codec import File, Message, ProtocolError
from chatproto.rules import DEFAULT_ROOM

if TYPE_CHECKING:
    from chatproto.backends.fts import Found, Query

#: Runs a blocking call on a worker thread: a Deferred of its result.
Threads = Callable[[Callable[[], Any]], Deferred[Any]]

#: A page around a message: oldest first, whether older and newer ones exist.
Around = tuple[list[Message], bool, bool]


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
    author: str | None = None  # who owns it (:func:`author_of`); None for a record
    reply: int | None = None  # the seq it answers
    files: list[File] | None = None  # what it carries (docs/protocol.md 20)


def owner_of(key: str, created: float) -> str:
    """What an account's messages and reactions are owned by: its key and
    when it was made, so that a name deleted and registered again owns
    none of them."""
    return f"{key}:{created!r}"


def author_of(owner: str | None, id: int, epoch: str = "") -> str:
    """Who owns a message: an account (:func:`owner_of`) for good, a guest
    (``~``, the server run's epoch and its session id) only while its
    session lasts."""
    return owner if owner is not None else f"~{epoch}{id}"


#: The kinds of :class:`Change`; "unreact" shows as "react" on the wire.
EDIT, DELETE, REACT, UNREACT = "edit", "delete", "react", "unreact"

#: Who may delete someone else's message: nobody, a room operator, an admin.
NOBODY, OPERATOR, ADMIN = 0, 1, 2


@dataclass(slots=True)
class Change:
    """A change to a stored message (docs/protocol.md 19): checked against
    the message and applied by the log, in the room's order, atomically;
    the limits it is checked by travel with it."""

    kind: str  # EDIT, DELETE, REACT or UNREACT
    room: str
    seq: int
    ts: float
    by: str  # the nick of whoever changes it
    author: str  # theirs, as :func:`author_of`
    text: str | None = None  # EDIT's
    emoji: str | None = None  # REACT's and UNREACT's
    rights: int = NOBODY  # DELETE: NOBODY, OPERATOR or ADMIN
    edit_window: float = 0.0
    max_reactions: int = 20
    user_reactions: int = 10


@dataclass(frozen=True, slots=True)
class Unchanged:
    """A change that changed nothing (a reaction the session already had):
    only its sender hears of it."""

    message: Message


#: What the log answers for each item it was given: a Draft's stored
#: message; a Change's message in its present state, Unchanged, or the
#: ProtocolError refusing it (nothing stored, no seq or rev used).
Outcome = Message | Unchanged | ProtocolError


@dataclass(frozen=True, slots=True)
class Topic:
    """A room's topic as stored: kept across restarts for rooms that always
    exist (here), and for rooms whose rules are kept (with them, in the
    account store)."""

    text: str
    by: str
    ts: float


class EventLog(Protocol):
    def append(self, drafts: Sequence[Draft | Change]) -> Deferred[list[Outcome]]:
        """Number each draft with the next seq of its room and apply each
        change, in order, and store them all or none. Fires with each
        item's outcome once they survive ``kill -9``; fails with StoreError
        having stored nothing and used no seq. A draft whose reply names
        no message of its room, or a change its message refuses, is
        answered with its ProtocolError and takes no seq or rev."""

    def changed_after(self, rev: int, limit: int, room: str) -> Deferred[tuple[list[Message], bool]]:
        """Up to ``limit`` messages of ``room`` whose last change has a rev
        above ``rev``, in the order of their revs, and whether more follow."""

    def last_rev(self, room: str) -> Deferred[int]:
        """The room's latest rev (0 before any change)."""

    def before(
        self, seq: int | None, limit: int, room: str = DEFAULT_ROOM
    ) -> Deferred[tuple[list[Message], bool]]:
        """Up to ``limit`` messages of ``room`` with seq < ``seq`` (the newest
        if None), oldest first, and whether older ones exist."""

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[tuple[list[Message], bool]]:
        """Up to ``limit`` messages of ``room`` with seq > ``seq``, oldest
        first, and whether newer ones exist."""

    def around(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[Around]:
        """About ``limit`` messages of ``room`` centred on ``seq`` (itself,
        up to half older, the rest newer), oldest first, and whether older
        and newer ones exist (docs/protocol.md 21.4)."""

    def search_key(self) -> bytes | None:
        """The key search pages are signed with, kept across restarts (a
        cluster's, by every node alike: known once the node has joined);
        None: this log keeps no index (``--no-search``)."""

    def search(self, query: Query) -> Deferred[Found]:
        """A page of the messages that match, newest first (backends/fts.py);
        StoreError if the log keeps no index. Never blocks the reactor long."""

    def topic(self, room: str) -> Deferred[Topic | None]:
        """The room's stored topic, if any."""

    def set_topic(self, room: str, topic: Topic | None) -> Deferred[None]:
        """Store (or, with None, forget) a room's topic."""

    def check(self) -> Deferred[None]:
        """Fires if the store answers (for health checks); fails with StoreError if not."""

    def maintain(self) -> None:
        """Housekeeping that may block (a checkpoint): run on a worker thread."""

    def close(self) -> None: ...


def around(log: EventLog, seq: int, limit: int, room: str) -> Deferred[Around]:
    """HISTORY ``around`` from two pages any log gives: up to half of
    ``limit`` before ``seq``, then the rest from ``seq`` on."""
    half = limit // 2

    def newer(older: tuple[list[Message], bool]) -> Deferred[Around]:
        messages, more = older
        if len(messages) > half:  # asked for one to learn whether older ones exist
            messages, more = messages[len(messages) - half :] if half else [], True
        rest = log.after(seq - 1, limit - len(messages), room)
        return rest.addCallback(lambda page: (messages + page[0], more, page[1]))

    return log.before(seq, max(half, 1), room).addCallback(newer)
