"""Shared files' records in the event log's SQLite file: the embedded
server's :class:`~chatproto.backends.files.FileRecords`.

Same connection, same thread, same rule as the accounts: a record is a
row, written in microseconds in WAL mode, so calls run on the reactor
thread and their Deferreds fire at once. The ``files`` table is made when
first needed (``IF NOT EXISTS``): a history file without it is simply one
that never had files, and a server without files never adds it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred

from chatproto.backends.files import FileStoreError, StoredFile
from chatproto.backends.sqlite import SQLiteLog, on_history_file

T = TypeVar("T")

#: ``place`` is a file's position in its message. The partial indexes hold
#: only what their queries look for: the attached (a message's files), the
#: unattached (the sweep of old uploads), the thumbnails. ``file_totals``
#: is the bytes of every upload and ``file_owner_totals`` each owner's,
#: kept by triggers in the transaction that writes the record: both quotas
#: are checked at each upload, and a sum over rows would grow with them.
#: A file from before a total was kept has it counted once, when its
#: table is made (``_FILL``).
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS files (
        id       TEXT PRIMARY KEY,
        digest   TEXT    NOT NULL,
        room     TEXT    NOT NULL,
        name     TEXT    NOT NULL,
        type     TEXT    NOT NULL,
        size     INTEGER NOT NULL,
        owner    TEXT    NOT NULL,
        uploaded REAL    NOT NULL,
        width    INTEGER,
        height   INTEGER,
        thumb    TEXT,
        seq      INTEGER,
        place    INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS files_message ON files (room, seq, place) WHERE seq IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS files_owner ON files (owner, size)",
    "CREATE INDEX IF NOT EXISTS files_unattached ON files (uploaded) WHERE seq IS NULL",
    "CREATE INDEX IF NOT EXISTS files_digest ON files (digest)",
    "CREATE INDEX IF NOT EXISTS files_thumb ON files (thumb) WHERE thumb IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS file_totals (
        one   INTEGER PRIMARY KEY CHECK (one = 1),
        bytes INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO file_totals VALUES (1, (SELECT coalesce(sum(size), 0) FROM files))",
    """CREATE TRIGGER IF NOT EXISTS files_added AFTER INSERT ON files
       BEGIN UPDATE file_totals SET bytes = bytes + NEW.size; END""",
    """CREATE TRIGGER IF NOT EXISTS files_removed AFTER DELETE ON files
       BEGIN UPDATE file_totals SET bytes = bytes - OLD.size; END""",
    """CREATE TRIGGER IF NOT EXISTS files_owner_added AFTER INSERT ON files
       BEGIN
         INSERT INTO file_owner_totals VALUES (NEW.owner, NEW.size)
           ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes;
       END""",
    """CREATE TRIGGER IF NOT EXISTS files_owner_removed AFTER DELETE ON files
       BEGIN
         UPDATE file_owner_totals SET bytes = bytes - OLD.size WHERE owner = OLD.owner;
         DELETE FROM file_owner_totals WHERE owner = OLD.owner AND bytes <= 0;
       END""",
]

#: Each owner's total, made with its first count where the table is new.
_OWNER_TOTALS = """CREATE TABLE file_owner_totals (
    owner TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID"""
_FILL = "INSERT INTO file_owner_totals SELECT owner, sum(size) FROM files GROUP BY owner"

_FIELDS = "id, digest, room, name, type, size, owner, uploaded, width, height, thumb, seq"


def _record(row: tuple) -> StoredFile:
    return StoredFile(*row)


class SQLiteFileRecords:
    """The ``files`` table of an :class:`SQLiteLog`'s file."""

    def __init__(self, log: SQLiteLog) -> None:
        self._log = log
        db = log._db
        try:
            db.execute("BEGIN IMMEDIATE")
            counting = not _has_table(db, "file_owner_totals")
            for statement in _SCHEMA:
                db.execute(statement)
            if counting:
                db.execute(_OWNER_TOTALS)
                db.execute(_FILL)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise FileStoreError(f"can't keep file records in {log.path!r}: {e}") from e

    def _do(self, work: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        return on_history_file(
            self._log, work, lambda why: FileStoreError(f"can't use file records in {why}")
        )

    def add(self, record: StoredFile) -> Deferred[None]:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO files ({_FIELDS}, place) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    record.id,
                    record.digest,
                    record.room,
                    record.name,
                    record.type,
                    record.size,
                    record.owner,
                    record.uploaded,
                    record.width,
                    record.height,
                    record.thumb,
                    record.seq,
                ),
            )

        return self._do(insert)

    def get(self, id: str) -> Deferred[StoredFile | None]:
        def read(db: sqlite3.Connection) -> StoredFile | None:
            row = db.execute(f"SELECT {_FIELDS} FROM files WHERE id = ?", (id,)).fetchone()
            return _record(row) if row else None

        return self._do(read)

    def attach(self, ids: list[str], room: str, seq: int) -> Deferred[None]:
        """Only uploads of ``room`` not yet attached are attached: an upload
        belongs to one message."""

        def update(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            db.executemany(
                "UPDATE files SET seq = ?, place = ? WHERE id = ? AND room = ? AND seq IS NULL",
                [(seq, place, id, room) for place, id in enumerate(ids)],
            )
            db.execute("COMMIT")

        return self._do(update)

    def of_message(self, room: str, seq: int) -> Deferred[list[StoredFile]]:
        return self._do(
            lambda db: [
                _record(row)
                for row in db.execute(
                    f"SELECT {_FIELDS} FROM files WHERE room = ? AND seq = ? ORDER BY place", (room, seq)
                )
            ]
        )

    def remove(self, ids: list[str]) -> Deferred[list[str]]:
        """In one transaction: the records go, and each of their digests is
        looked for in what remains."""

        def delete(db: sqlite3.Connection) -> list[str]:
            db.execute("BEGIN")
            candidates: dict[str, None] = {}  # in order, once each
            for id in ids:
                row = db.execute("SELECT digest, thumb FROM files WHERE id = ?", (id,)).fetchone()
                if row is None:
                    continue
                db.execute("DELETE FROM files WHERE id = ?", (id,))
                candidates.update(dict.fromkeys(d for d in row if d is not None))
            orphans = [digest for digest in candidates if not _named(db, digest)]
            db.execute("COMMIT")
            return orphans

        return self._do(delete)

    def unattached_before(self, ts: float, limit: int) -> Deferred[list[StoredFile]]:
        return self._do(
            lambda db: [
                _record(row)
                for row in db.execute(
                    f"SELECT {_FIELDS} FROM files WHERE seq IS NULL AND uploaded < ?"
                    " ORDER BY uploaded LIMIT ?",
                    (ts, limit),
                )
            ]
        )

    def used(self, owner: str) -> Deferred[int]:
        def read(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT bytes FROM file_owner_totals WHERE owner = ?", (owner,)).fetchone()
            return row[0] if row else 0

        return self._do(read)

    def used_by_all(self) -> Deferred[int]:
        return self._do(lambda db: db.execute("SELECT bytes FROM file_totals").fetchone()[0])


def _named(db: sqlite3.Connection, digest: str) -> bool:
    """Whether a record names ``digest``, as its file or its thumbnail."""
    return bool(
        db.execute("SELECT 1 FROM files WHERE digest = ? LIMIT 1", (digest,)).fetchone()
        or db.execute("SELECT 1 FROM files WHERE thumb = ? LIMIT 1", (digest,)).fetchone()
    )


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    """Whether the file has this table yet (a new one is counted once)."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return db.execute(query, (name,)).fetchone() is not None
