"""The embedded event log: one SQLite file (``:memory:`` keeps nothing).

Calls run on the reactor thread and their Deferreds fire at once, on
purpose: a WAL append without fsync takes microseconds, and a message must
be durable before it is broadcast, so a thread hop would only add latency.
The fsync (the checkpoint) runs on a worker thread through :meth:`maintain`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, succeed

from chatproto.backends.eventlog import Draft, StoreError, Topic
from chatproto.codec import Message
from chatproto.rules import DEFAULT_ROOM

#: A store locked by another process must refuse messages, not stall the
#: reactor for sqlite3's default 5 s.
BUSY_TIMEOUT = 0.1

#: PRAGMA user_version of the layout below. 0 is version 1's layout (one
#: room, no version recorded) or an empty file.
SCHEMA_VERSION = 2

_TABLES = """
CREATE TABLE messages (
    room   TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    ts     REAL    NOT NULL,
    sender TEXT    NOT NULL,
    text   TEXT    NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE topics (
    room   TEXT PRIMARY KEY,
    topic  TEXT NOT NULL,
    sender TEXT NOT NULL,
    ts     REAL NOT NULL
);
"""


def _migrate(db: sqlite3.Connection, default_room: str) -> None:
    """Bring the file to SCHEMA_VERSION in one transaction: a version 1
    history becomes ``default_room``'s, with its seqs."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"it was written by a newer server (schema {version})")
    db.execute("BEGIN IMMEDIATE")
    try:
        old = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='messages'").fetchone()
        if old:
            db.execute("ALTER TABLE messages RENAME TO messages_v1")
        for statement in _TABLES.split(";"):
            if statement.strip():
                db.execute(statement)
        if old:
            db.execute(
                "INSERT INTO messages SELECT ?, seq, ts, sender, text FROM messages_v1", (default_room,)
            )
            db.execute("DROP TABLE messages_v1")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class SQLiteLog:
    """SQLite in WAL mode with ``synchronous=NORMAL``.

    A committed transaction is in the WAL file, which the OS keeps when the
    process dies; only a power cut can lose the last transactions. Each
    room's seqs continue from its highest stored one, and a failed append
    uses none.
    """

    def __init__(self, path: str, default_room: str = DEFAULT_ROOM) -> None:
        self.path = path
        self._checkpointer: sqlite3.Connection | None = None
        self._next: dict[str, int] = {}  # room -> its next seq, once looked up
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints fsync; they run off the reactor thread (maintain()).
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            _migrate(self._db, default_room)
        except sqlite3.Error as e:
            raise StoreError(f"can't open history {path!r}: {e}") from e

    def _next_seq(self, room: str) -> int:
        seq = self._next.get(room)
        if seq is None:
            (last,) = self._db.execute(
                "SELECT coalesce(max(seq), 0) FROM messages WHERE room = ?", (room,)
            ).fetchone()
            seq = self._next[room] = last + 1
        return seq

    def last_seq(self, room: str = DEFAULT_ROOM) -> int:
        """The highest seq stored in ``room`` so far (0 for none)."""
        return self._next_seq(room) - 1

    def append(self, drafts: Sequence[Draft]) -> Deferred[list[Message]]:
        try:
            taken: dict[str, int] = {}  # each room's next seq in this batch
            messages, rows = [], []
            known = self._next
            for d in drafts:
                room = d.room
                seq = taken.get(room) or known.get(room) or self._next_seq(room)
                taken[room] = seq + 1
                messages.append(Message(seq, d.ts, d.sender, d.text))
                rows.append((room, seq, d.ts, d.sender, d.text))
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return fail(StoreError(f"can't write history {self.path!r}: {e}"))
        self._next.update(taken)
        return succeed(messages)

    def before(
        self, seq: int | None, limit: int, room: str = DEFAULT_ROOM
    ) -> Deferred[tuple[list[Message], bool]]:
        if seq is None:
            rows = self._select("room = ? ORDER BY seq DESC LIMIT ?", room, limit + 1)
        else:
            rows = self._select("room = ? AND seq < ? ORDER BY seq DESC LIMIT ?", room, seq, limit + 1)
        return succeed(([Message(*row) for row in reversed(rows[:limit])], len(rows) > limit))

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[tuple[list[Message], bool]]:
        rows = self._select("room = ? AND seq > ? ORDER BY seq LIMIT ?", room, seq, limit + 1)
        return succeed(([Message(*row) for row in rows[:limit]], len(rows) > limit))

    def _select(self, where: str, *args) -> list[tuple]:
        return self._db.execute(f"SELECT seq, ts, sender, text FROM messages WHERE {where}", args).fetchall()

    def topic(self, room: str) -> Deferred[Topic | None]:
        row = self._db.execute("SELECT topic, sender, ts FROM topics WHERE room = ?", (room,)).fetchone()
        return succeed(Topic(*row) if row else None)

    def set_topic(self, room: str, topic: Topic | None) -> Deferred[None]:
        try:
            if topic is None:
                self._db.execute("DELETE FROM topics WHERE room = ?", (room,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO topics VALUES (?, ?, ?, ?)",
                    (room, topic.text, topic.by, topic.ts),
                )
        except sqlite3.Error as e:
            return fail(StoreError(f"can't write topic to {self.path!r}: {e}"))
        return succeed(None)

    def maintain(self) -> None:
        self.checkpoint()

    def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL into the database file; returns (frames in the WAL,
        frames copied). For a worker thread: it has its own connection, and a
        PASSIVE checkpoint never blocks the writer."""
        if self.path == ":memory:":
            return 0, 0
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.path, check_same_thread=False, timeout=BUSY_TIMEOUT)
        _, frames, copied = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, copied

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._db.close()
