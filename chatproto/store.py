"""History: where every MESSAGE is written before anyone sees it.

The room talks to a :class:`HistoryStore`; the embedded default is SQLite
(``:memory:`` for a store that keeps nothing across restarts). Calls are
synchronous on purpose: a WAL append without fsync takes microseconds, and a
message must be durable before it is broadcast, so a thread hop would only add
latency and reordering to the hot path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Protocol

from chatproto.codec import Message

BUSY_TIMEOUT = 0.1


class StoreError(Exception):
    """The store could not do what was asked; nothing was written."""


class HistoryStore(Protocol):
    def last_seq(self) -> int:
        """The highest seq ever stored (0 for none): seq continues from here."""

    def append(self, messages: Iterable[Message]) -> None:
        """Store all of them atomically; when it returns they survive ``kill -9``."""

    def before(self, seq: int | None, limit: int) -> tuple[list[Message], bool]:
        """Up to ``limit`` messages with seq < ``seq`` (newest if None), oldest first,
        and whether older ones exist."""

    def after(self, seq: int, limit: int) -> tuple[list[Message], bool]:
        """Up to ``limit`` messages with seq > ``seq``, oldest first, and whether
        newer ones exist."""

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq    INTEGER PRIMARY KEY,
    ts     REAL    NOT NULL,
    sender TEXT    NOT NULL,
    text   TEXT    NOT NULL
)
"""


class SQLiteHistory:
    """SQLite in WAL mode with ``synchronous=NORMAL``.

    A committed transaction is in the WAL file, which the OS keeps when the
    process dies; only a power cut can lose the last transactions.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._checkpointer: sqlite3.Connection | None = None
        try:
            # A short busy timeout: a store locked by another process must
            # refuse messages, not stall the reactor for sqlite3's default 5 s.
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints fsync; they run off the reactor thread (checkpoint()).
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"can't open history {path!r}: {e}") from e

    def last_seq(self) -> int:
        (seq,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()
        return seq

    def append(self, messages: Iterable[Message]) -> None:
        rows = [(m.seq, m.ts, m.sender, m.text) for m in messages]
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreError(f"can't write history {self.path!r}: {e}") from e

    def before(self, seq: int | None, limit: int) -> tuple[list[Message], bool]:
        if seq is None:
            rows = self._db.execute(
                "SELECT seq, ts, sender, text FROM messages ORDER BY seq DESC LIMIT ?",
                (limit + 1,),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT seq, ts, sender, text FROM messages WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (seq, limit + 1),
            ).fetchall()
        more = len(rows) > limit
        return [Message(*row) for row in reversed(rows[:limit])], more

    def after(self, seq: int, limit: int) -> tuple[list[Message], bool]:
        rows = self._db.execute(
            "SELECT seq, ts, sender, text FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit + 1),
        ).fetchall()
        return [Message(*row) for row in rows[:limit]], len(rows) > limit

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
