"""The embedded event log: one SQLite file (``:memory:`` keeps nothing).

Calls run on the reactor thread and their Deferreds fire at once, on
purpose: a WAL append without fsync takes microseconds, and a message must
be durable before it is broadcast, so a thread hop would only add latency.
The fsync (the checkpoint) runs on a worker thread through :meth:`maintain`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, succeed

from chatproto.backends.eventlog import Draft, StoreError, Topic
from chatproto.codec import Message, dumps
from chatproto.rules import DEFAULT_ROOM

#: A store locked by another process must refuse messages, not stall the
#: reactor for sqlite3's default 5 s.
BUSY_TIMEOUT = 0.1

#: PRAGMA user_version of the layout below. 0 is version 1's layout (one
#: room, no version recorded) or an empty file; 2 had rooms but no accounts;
#: 3 had accounts with no admin mark.
SCHEMA_VERSION = 4

#: A message's row id is its room's id times SPAN plus its seq: one integer
#: key, so an append is a rowid insert at the end of its room's range (as
#: fast as version 1's table) and a page is a range scan. A room holds up
#: to SPAN - 1 messages, and a file 2**23 - 2 rooms ever named.
SPAN = 2**40

_TABLES = """
CREATE TABLE rooms (
    id  INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE
);
CREATE TABLE messages (
    id     INTEGER PRIMARY KEY,
    ts     REAL    NOT NULL,
    sender TEXT    NOT NULL,
    text   TEXT    NOT NULL
);
CREATE TABLE topics (
    room   TEXT PRIMARY KEY,
    topic  TEXT NOT NULL,
    sender TEXT NOT NULL,
    ts     REAL NOT NULL
);
"""

#: Schema 3: moderation records in the history, accounts and their rooms,
#: room rules, server bans (backends/sqlite_accounts.py).
_ACCOUNT_TABLES = """
ALTER TABLE messages ADD COLUMN action TEXT;
CREATE TABLE accounts (
    key     TEXT PRIMARY KEY,
    nick    TEXT NOT NULL,
    secret  TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE memberships (
    account TEXT NOT NULL,
    room    TEXT NOT NULL,
    name    TEXT NOT NULL,
    read    INTEGER NOT NULL,
    joined  INTEGER NOT NULL,
    PRIMARY KEY (account, room)
);
CREATE TABLE room_rules (
    room  TEXT PRIMARY KEY,
    rules TEXT NOT NULL
);
CREATE TABLE server_bans (
    kind   TEXT NOT NULL,
    target TEXT NOT NULL,
    by     TEXT NOT NULL,
    ts     REAL NOT NULL,
    reason TEXT,
    until  REAL,
    PRIMARY KEY (kind, target)
);
"""


#: Schema 4: an account made by the operator for an --admin name is marked.
_ADMIN_MARK = """
ALTER TABLE accounts ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
"""


def _run_script(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


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
        if version < 2:
            old = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='messages'").fetchone()
            if old:
                db.execute("ALTER TABLE messages RENAME TO messages_v1")
            _run_script(db, _TABLES)
            if old:
                db.execute("INSERT INTO rooms VALUES (1, ?)", (default_room,))
                db.execute(f"INSERT INTO messages SELECT {SPAN} + seq, ts, sender, text FROM messages_v1")
                db.execute("DROP TABLE messages_v1")
        if version < 3:
            _run_script(db, _ACCOUNT_TABLES)
        _run_script(db, _ADMIN_MARK)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _message(row: tuple) -> Message:
    seq, ts, sender, text, action = row
    return Message(seq, ts, sender, text, None, None if action is None else json.loads(action))


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
        self._ids: dict[str, int] = {}  # room -> its id in the file
        self._refusing: str | None = None  # why the last write failed, until one goes in
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

    def _room_id(self, room: str, create: bool = False) -> int | None:
        """The room's id in the file (made if ``create``); None if it has none."""
        id = self._ids.get(room)
        if id is None:
            row = self._db.execute("SELECT id FROM rooms WHERE key = ?", (room,)).fetchone()
            if row is None:
                if not create:
                    return None
                new_id = self._db.execute("INSERT INTO rooms (key) VALUES (?)", (room,)).lastrowid
                assert new_id is not None  # an INSERT's
                row = (new_id,)
                if (row[0] + 1) * SPAN >= 2**63:  # its rows' ids would not fit in 64 bits
                    self._db.execute("DELETE FROM rooms WHERE id = ?", row)
                    raise sqlite3.DatabaseError(f"no room for another room's history in {self.path!r}")
            id = self._ids[room] = row[0]
        return id

    def _next_seq(self, room: str) -> int:
        seq = self._next.get(room)
        if seq is None:
            room_id = self._room_id(room, create=True)
            assert room_id is not None  # made if it had none
            base = room_id * SPAN
            (last,) = self._db.execute(
                "SELECT max(id) FROM messages WHERE id > ? AND id < ?", (base, base + SPAN)
            ).fetchone()
            seq = self._next[room] = (last - base if last is not None else 0) + 1
        return seq

    def last_seq(self, room: str = DEFAULT_ROOM) -> int:
        """The highest seq stored in ``room`` so far (0 for none)."""
        return self._next_seq(room) - 1

    def append(self, drafts: Sequence[Draft]) -> Deferred[list[Message]]:
        try:
            seqs, following = self._number(drafts)
            messages = [
                Message(seq, d.ts, d.sender, d.text, None, d.action)
                for seq, d in zip(seqs, drafts, strict=True)
            ]
            bases = {room: self._ids[room] * SPAN for room in following}
            if any(seq >= SPAN for seq in following.values()):
                return fail(StoreError(f"a room's history in {self.path!r} is full"))
            rows = [
                (bases[d.room] + seq, d.ts, d.sender, d.text, None if d.action is None else dumps(d.action))
                for seq, d in zip(seqs, drafts, strict=True)
            ]
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._refusing = f"history {self.path!r} refuses writes: {e}"
            return fail(StoreError(f"can't write history {self.path!r}: {e}"))
        self._refusing = None
        self._next.update(following)
        return succeed(messages)

    def _number(self, drafts: Sequence[Draft]) -> tuple[list[int], dict[str, int]]:
        """Each draft's seq (the next of its room, in order), and each room's
        next seq after them."""
        rooms = {d.room for d in drafts}
        if len(rooms) == 1:  # the usual batch: one room
            (room,) = rooms
            first = self._next_seq(room)
            return list(range(first, first + len(drafts))), {room: first + len(drafts)}
        taken: dict[str, int] = {}
        seqs = []
        for d in drafts:
            seq = taken.get(d.room) or self._next_seq(d.room)
            taken[d.room] = seq + 1
            seqs.append(seq)
        return seqs, taken

    def before(
        self, seq: int | None, limit: int, room: str = DEFAULT_ROOM
    ) -> Deferred[tuple[list[Message], bool]]:
        base = self._base(room)
        if base is None:
            return succeed(([], False))
        bound = SPAN if seq is None else max(0, min(seq, SPAN))
        rows = self._select(base, "id > ? AND id < ? ORDER BY id DESC LIMIT ?", base, base + bound, limit + 1)
        return succeed(([_message(row) for row in reversed(rows[:limit])], len(rows) > limit))

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[tuple[list[Message], bool]]:
        base = self._base(room)
        if base is None:
            return succeed(([], False))
        start = base + max(0, min(seq, SPAN))
        rows = self._select(base, "id > ? AND id < ? ORDER BY id LIMIT ?", start, base + SPAN, limit + 1)
        return succeed(([_message(row) for row in rows[:limit]], len(rows) > limit))

    def _base(self, room: str) -> int | None:
        id = self._room_id(room)
        return None if id is None else id * SPAN

    def _select(self, base: int, where: str, *args) -> list[tuple]:
        query = f"SELECT id - {base}, ts, sender, text, action FROM messages WHERE {where}"
        return self._db.execute(query, args).fetchall()

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

    def check(self) -> Deferred[None]:
        """It answers a read, and its last write (if any) went in: a full
        disk lets reads through and refuses every write."""
        try:
            self._db.execute("SELECT count(*) FROM rooms").fetchone()
        except sqlite3.Error as e:
            return fail(StoreError(f"history {self.path!r} does not answer: {e}"))
        if self._refusing is not None:
            return fail(StoreError(self._refusing))
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
