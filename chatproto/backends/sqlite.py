"""The embedded event log: one SQLite file (``:memory:`` keeps nothing).

Calls run on the reactor thread and their Deferreds fire at once, on
purpose: a WAL append without fsync takes microseconds, and a message must
be durable before it is broadcast, so a thread hop would only add latency.
The fsync (the checkpoint) runs on a worker thread through :meth:`maintain`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed

from chatproto import codec
from chatproto.backends import fts
from chatproto.backends.changes import apply_change, quote_of, reactions_of
from chatproto.backends.eventlog import (
    DELETE,
    EDIT,
    Around,
    Change,
    Draft,
    Outcome,
    StoreError,
    Threads,
    Topic,
    around,
)
from chatproto.backends.eventlog import Unchanged as _Unchanged
from chatproto.codec import ErrorCode, Message, ProtocolError, dumps
from chatproto.rules import DEFAULT_ROOM

#: A store locked by another process must refuse messages, not stall the
#: reactor for sqlite3's default 5 s.
BUSY_TIMEOUT = 0.1

#: PRAGMA user_version of the layout below. 0 is version 1's layout (one
#: room, no version recorded) or an empty file; 2 had rooms but no accounts;
#: 3 had accounts with no admin mark; 4 had no replies, edits, deletions or
#: reactions; 5 had no files.
SCHEMA_VERSION = 6

#: A message's row id is its room's id times SPAN plus its seq: one integer
#: key, so an append is a rowid insert at the end of its room's range (as
#: fast as version 1's table) and a page is a range scan. A room holds up
#: to SPAN - 1 messages, and a file 2**23 - 2 rooms ever named.
SPAN = 2**40
ROOM_BITS = 40  # a row's room id is its id >> ROOM_BITS

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


#: Schema 5: what a message became (docs/protocol.md 19). ``deleted`` is
#: who deleted it ("" its author); ``rev`` the room's change that last
#: touched it, indexed by room for catching up.
_CONVERSATIONS = f"""
ALTER TABLE messages ADD COLUMN author TEXT;
ALTER TABLE messages ADD COLUMN reply INTEGER;
ALTER TABLE messages ADD COLUMN edited REAL;
ALTER TABLE messages ADD COLUMN deleted TEXT;
ALTER TABLE messages ADD COLUMN reactions TEXT;
ALTER TABLE messages ADD COLUMN rev INTEGER;
CREATE INDEX messages_changes ON messages (id >> {ROOM_BITS}, rev) WHERE rev IS NOT NULL
"""


#: Schema 6: the files a message carries (docs/protocol.md 20), as JSON.
_FILES = """
ALTER TABLE messages ADD COLUMN files TEXT
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
        if version < 4:
            _run_script(db, _ADMIN_MARK)
        if version < 5:
            _run_script(db, _CONVERSATIONS)
        _run_script(db, _FILES)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


#: A message's columns as read, with what its reply quotes (``o``): the
#: alias ``m`` is the message; ``{base}`` its room's first row id.
_COLUMNS = (
    "m.id - {base}, m.ts, m.sender, m.text, m.action, m.reply, m.edited, m.deleted, m.reactions,"
    " m.rev, o.sender, o.text, o.deleted, m.files"
    " FROM messages m LEFT JOIN messages o ON m.reply IS NOT NULL AND o.id = {base} + m.reply"
)


def _message(row: tuple) -> Message:
    seq, ts, sender, text, action, reply, edited, deleted, reactions, rev = row[:10]
    q_sender, q_text, q_deleted, files = row[10:]
    if (
        reply is None
        and edited is None
        and deleted is None
        and reactions is None
        and rev is None
        and files is None
    ):
        return Message(seq, ts, sender, text, None, None if action is None else json.loads(action))
    return Message(
        seq,
        ts,
        sender,
        text,
        None,
        None if action is None else json.loads(action),
        None if reply is None else quote_of(reply, q_sender, q_text, q_deleted is not None),
        edited,
        True if deleted is not None else None,
        deleted or None,
        reactions_of(reactions),
        rev,
        None if files is None else codec.files_of(json.loads(files)),
    )


#: New messages listed before they go into FTS5 together (backends/fts.py).
PENDING = 256

#: Which messages are searched: not moderation records (a notice is a
#: message), not deleted ones.
_SEARCHED = "deleted IS NULL AND (action IS NULL OR json_extract(action, '$.op') = 'notice')"


class _Full(Exception):
    """A room's seqs ran out: the append stores nothing."""


def _action(draft: Draft) -> str | None:
    return None if draft.action is None else dumps(draft.action)


def _rest(draft: Draft) -> tuple[int | None, str | None]:
    """A draft's reply and files, as their columns hold them."""
    return draft.reply, codec.files_json(draft.files) if draft.files else None


class SQLiteLog:
    """SQLite in WAL mode with ``synchronous=NORMAL``.

    A committed transaction is in the WAL file, which the OS keeps when the
    process dies; only a power cut can lose the last transactions. Each
    room's seqs continue from its highest stored one, and a failed append
    uses none.
    """

    def __init__(
        self, path: str, default_room: str = DEFAULT_ROOM, search: bool = True, threads: Threads | None = None
    ) -> None:
        self.path = path
        # The full-text index (backends/fts.py), written in each append's
        # transaction; searches run through ``threads`` (a worker thread with
        # its own read connection), or here for a file in memory.
        self.index: fts.Index | None = fts.Index("messages", _SEARCHED, PENDING) if search else None
        self._threads = threads if path != ":memory:" else None
        self._readers = fts.Readers(path)
        self._checkpointer: sqlite3.Connection | None = None
        self._next: dict[str, int] = {}  # room -> its next seq, once looked up
        self._revs: dict[str, int] = {}  # room -> its latest rev, once looked up
        self._purge = False  # a deletion's old text may linger in the WAL until a checkpoint
        self._ids: dict[str, int] = {}  # room -> its id in the file
        self._refusing: str | None = None  # why the last write failed, until one goes in
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # A deleted message's text is overwritten in the file, not only unlinked.
            self._db.execute("PRAGMA secure_delete=ON")
            # Checkpoints fsync; they run off the reactor thread (maintain()).
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            _migrate(self._db, default_room)
            self._search_index()
        except sqlite3.Error as e:
            raise StoreError(f"can't open history {path!r}: {e}") from e

    def _search_index(self) -> None:
        """The index made (and filled from an older file's history) or, with
        search off, dropped: it would miss what is said meanwhile."""
        if self.index is None:
            fts.Index("messages").drop(self._db)
            return
        self._search_secret = self.index.open(self._db)
        self.index.build(self._db)
        fts.prepare(self._db)

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

    def append(self, drafts: Sequence[Draft | Change]) -> Deferred[list[Outcome]]:
        try:
            if all(type(d) is Draft and d.reply is None and d.files is None for d in drafts):
                outcomes: list[Outcome] = list(self._append_plain(drafts))  # type: ignore[arg-type]
            else:
                outcomes = self._append_each(drafts)
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._refusing = f"history {self.path!r} refuses writes: {e}"
            return fail(StoreError(f"can't write history {self.path!r}: {e}"))
        except _Full as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return fail(StoreError(str(e)))
        self._refusing = None
        return succeed(outcomes)

    def _append_plain(self, drafts: Sequence[Draft]) -> list[Message]:
        """The usual batch, messages only: one insert of them all."""
        seqs, following = self._number(drafts)
        messages = [
            Message(seq, d.ts, d.sender, d.text, None, d.action) for seq, d in zip(seqs, drafts, strict=True)
        ]
        bases = {room: self._ids[room] * SPAN for room in following}
        if any(seq >= SPAN for seq in following.values()):
            raise _Full(f"a room's history in {self.path!r} is full")
        rows = [
            (bases[d.room] + seq, d.ts, d.sender, d.text, _action(d), d.author)
            for seq, d in zip(seqs, drafts, strict=True)
        ]
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO messages (id, ts, sender, text, action, author) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
        if self.index is not None:
            searched = [(r[0], r[3]) for r, d in zip(rows, drafts, strict=True) if fts.indexed(d.action)]
            self.index.add(self._db, searched)
        self._db.execute("COMMIT")
        self._next.update(following)
        return messages

    def _append_each(self, items: Sequence[Draft | Change]) -> list[Outcome]:
        """A batch with replies or changes: each in turn, in one transaction,
        each seeing those before it."""
        nexts: dict[str, int] = {}
        revs: dict[str, int] = {}
        outcomes: list[Outcome] = []
        purge: list[bool] = []
        for item in items:
            if type(item) is Draft:
                self._next_seq(item.room)  # its room made, outside the transaction
        self._db.execute("BEGIN")
        for item in items:
            room_id = self._room_id(item.room)
            base = None if room_id is None else room_id * SPAN
            try:
                if type(item) is Draft:
                    assert base is not None  # made
                    outcomes.append(self._insert(item, base, nexts))
                else:
                    assert isinstance(item, Change)
                    outcomes.append(self._change(item, base, revs, purge))
            except ProtocolError as e:
                outcomes.append(e)
        self._db.execute("COMMIT")
        self._next.update(nexts)
        self._revs.update(revs)
        if purge:
            self._purge = True
        return outcomes

    def _insert(self, draft: Draft, base: int, nexts: dict[str, int]) -> Message:
        if draft.reply is not None and self._row(base, draft.reply) is None:
            raise ProtocolError(
                ErrorCode.NO_SUCH_MESSAGE, f"there is no message {draft.reply} to answer here"
            )
        seq = nexts.get(draft.room) or self._next_seq(draft.room)
        if seq >= SPAN:
            raise _Full(f"a room's history in {self.path!r} is full")
        self._db.execute(
            "INSERT INTO messages (id, ts, sender, text, action, author, reply, files)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (base + seq, draft.ts, draft.sender, draft.text, _action(draft), draft.author, *_rest(draft)),
        )
        if self.index is not None and fts.indexed(draft.action):
            self.index.add(self._db, [(base + seq, draft.text)])
        nexts[draft.room] = seq + 1
        return self._read(base, seq)

    def _row(self, base: int, seq: int) -> tuple | None:
        if not 0 < seq < SPAN:
            return None
        return self._db.execute(
            "SELECT ts, sender, text, action, author, deleted, reactions, edited FROM messages WHERE id = ?",
            (base + seq,),
        ).fetchone()

    def _read(self, base: int, seq: int) -> Message:
        row = self._db.execute(
            f"SELECT {_COLUMNS.format(base=base)} WHERE m.id = ?", (base + seq,)
        ).fetchone()
        return _message(row)

    def _change(self, change: Change, base: int | None, revs: dict[str, int], purge: list[bool]) -> Outcome:
        row = None if base is None else self._row(base, change.seq)
        if base is None or row is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MESSAGE, f"there is no message {change.seq} here")
        update = apply_change(change, *row)
        if update is None:
            return _Unchanged(self._read(base, change.seq))
        rev = (revs.get(change.room) or self._last_rev(change.room)) + 1
        revs[change.room] = rev
        text, edited, deleted, reactions = update
        self._db.execute(
            "UPDATE messages SET text = ?, edited = ?, deleted = ?, reactions = ?, rev = ? WHERE id = ?",
            (text, edited, deleted, reactions, rev, base + change.seq),
        )
        if change.kind == DELETE:  # a deleted message's files go with its text (20.5)
            self._db.execute("UPDATE messages SET files = NULL WHERE id = ?", (base + change.seq,))
        if change.kind in (EDIT, DELETE):
            purge.append(True)  # the old text may linger in the WAL
            self._reindex(base + change.seq, row, text if change.kind == EDIT else None)
        return self._read(base, change.seq)

    def _reindex(self, id: int, row: tuple, text: str | None) -> None:
        """The index follows an edit (``text``) or a deletion (None), in the
        change's transaction."""
        old, action, deleted = row[2], row[3], row[5]
        if self.index is None or deleted is not None or not fts.indexed(json.loads(action or "null")):
            return
        self.index.remove(self._db, id, old)
        if text is not None:
            self.index.add(self._db, [(id, text)])

    def search_key(self) -> bytes | None:
        return None if self.index is None else self._search_secret

    def search(self, query: fts.Query) -> Deferred[fts.Found]:
        """A page of hits (backends/fts.py), read off the reactor thread."""
        if self.index is None:
            return fail(StoreError("search is off"))
        if self._threads is None:
            return maybeDeferred(self._search, self._db, query)
        return self._threads(lambda: self._search(self._readers.get(), query))

    def _search(self, db: sqlite3.Connection, query: fts.Query) -> fts.Found:
        """One read transaction: FTS5 and the messages listed for it as of
        one moment (a worker's connection), or the writer's own."""
        assert self.index is not None
        marks = ",".join("?" * len(query.rooms))
        snapshot = db is not self._db
        if snapshot:
            db.execute("BEGIN")
        try:
            ids = dict(
                db.execute(f"SELECT key, id FROM rooms WHERE key IN ({marks})", query.rooms).fetchall()
            )
            return self.index.search(db, ids, query)
        finally:
            if snapshot:
                db.execute("COMMIT")

    def around(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[Around]:
        return around(self, seq, limit, room)

    def _last_rev(self, room: str) -> int:
        rev = self._revs.get(room)
        if rev is None:
            base = self._base(room)
            row = (
                (None,)
                if base is None
                else self._db.execute(
                    f"SELECT max(rev) FROM messages WHERE (id >> {ROOM_BITS}) = ? AND rev IS NOT NULL",
                    (base // SPAN,),
                ).fetchone()
            )
            rev = self._revs[room] = row[0] or 0
        return rev

    def last_rev(self, room: str) -> Deferred[int]:
        try:
            return succeed(self._last_rev(room))
        except sqlite3.Error as e:
            return fail(StoreError(f"can't read history {self.path!r}: {e}"))

    def changed_after(self, rev: int, limit: int, room: str) -> Deferred[tuple[list[Message], bool]]:
        base = self._base(room)
        if base is None:
            return succeed(([], False))
        rows = self._db.execute(
            f"SELECT {_COLUMNS.format(base=base)} WHERE (m.id >> {ROOM_BITS}) = ? AND m.rev > ?"
            " ORDER BY m.rev LIMIT ?",
            (base // SPAN, rev, limit + 1),
        ).fetchall()
        return succeed(([_message(row) for row in rows[:limit]], len(rows) > limit))

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
        rows = self._select(
            base, "m.id > ? AND m.id < ? ORDER BY m.id DESC LIMIT ?", base, base + bound, limit + 1
        )
        return succeed(([_message(row) for row in reversed(rows[:limit])], len(rows) > limit))

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[tuple[list[Message], bool]]:
        base = self._base(room)
        if base is None:
            return succeed(([], False))
        start = base + max(0, min(seq, SPAN))
        rows = self._select(
            base, "m.id > ? AND m.id < ? ORDER BY m.id LIMIT ?", start, base + SPAN, limit + 1
        )
        return succeed(([_message(row) for row in rows[:limit]], len(rows) > limit))

    def _base(self, room: str) -> int | None:
        id = self._room_id(room)
        return None if id is None else id * SPAN

    def _select(self, base: int, where: str, *args) -> list[tuple]:
        query = f"SELECT {_COLUMNS.format(base=base)} WHERE {where}"
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
        """Every second or so, on a worker thread: after a deletion, empty
        the WAL; otherwise copy it into the database."""
        if not self.purge():
            self.checkpoint()

    def purge(self) -> bool:
        """After a deletion, empty the WAL (a TRUNCATE checkpoint, on a worker
        thread): the deleted text is then gone from every file, not only
        from the database. Whether there was anything to purge."""
        if not self._purge or self.path == ":memory:":
            return False
        self._purge = False
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.path, check_same_thread=False, timeout=BUSY_TIMEOUT)
        busy, frames, copied = self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or frames != copied:
            self._purge = True  # a reader or writer held it: the next round tries again
        return True

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
        self._readers.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._db.close()


T = TypeVar("T")


def on_history_file(
    log: SQLiteLog, work: Callable[[sqlite3.Connection], T], refused: Callable[[str], Exception]
) -> Deferred[T]:
    """``work`` on the history file's own connection (the stores that share
    the file): what SQLite refuses is rolled back and fails with
    ``refused(reason)``."""
    db = log._db
    try:
        return succeed(work(db))
    except sqlite3.Error as e:
        if db.in_transaction:
            db.execute("ROLLBACK")
        return fail(refused(f"{log.path!r}: {e}"))
