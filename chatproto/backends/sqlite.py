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

from chatproto.backends.eventlog import Draft, StoreError
from chatproto.codec import Message

#: A store locked by another process must refuse messages, not stall the
#: reactor for sqlite3's default 5 s.
BUSY_TIMEOUT = 0.1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq    INTEGER PRIMARY KEY,
    ts     REAL    NOT NULL,
    sender TEXT    NOT NULL,
    text   TEXT    NOT NULL
)
"""


class SQLiteLog:
    """SQLite in WAL mode with ``synchronous=NORMAL``.

    A committed transaction is in the WAL file, which the OS keeps when the
    process dies; only a power cut can lose the last transactions. Seqs
    continue from the highest stored one, and a failed append uses none.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._checkpointer: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints fsync; they run off the reactor thread (maintain()).
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(_SCHEMA)
            (last,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"can't open history {path!r}: {e}") from e
        self._next_seq = last + 1

    @property
    def last_seq(self) -> int:
        """The highest seq stored so far (0 for none)."""
        return self._next_seq - 1

    def append(self, drafts: Sequence[Draft]) -> Deferred[list[Message]]:
        first = self._next_seq
        messages = [Message(first + i, d.ts, d.sender, d.text) for i, d in enumerate(drafts)]
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO messages VALUES (?, ?, ?, ?)",
                [(m.seq, m.ts, m.sender, m.text) for m in messages],
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return fail(StoreError(f"can't write history {self.path!r}: {e}"))
        self._next_seq = first + len(messages)
        return succeed(messages)

    def before(self, seq: int | None, limit: int) -> Deferred[tuple[list[Message], bool]]:
        if seq is None:
            rows = self._select("ORDER BY seq DESC LIMIT ?", limit + 1)
        else:
            rows = self._select("WHERE seq < ? ORDER BY seq DESC LIMIT ?", seq, limit + 1)
        return succeed(([Message(*row) for row in reversed(rows[:limit])], len(rows) > limit))

    def after(self, seq: int, limit: int) -> Deferred[tuple[list[Message], bool]]:
        rows = self._select("WHERE seq > ? ORDER BY seq LIMIT ?", seq, limit + 1)
        return succeed(([Message(*row) for row in rows[:limit]], len(rows) > limit))

    def _select(self, where: str, *args) -> list[tuple]:
        return self._db.execute(f"SELECT seq, ts, sender, text FROM messages {where}", args).fetchall()

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
