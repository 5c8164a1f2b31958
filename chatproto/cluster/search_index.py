"""A cluster node's search index: its own SQLite FTS5 file, fed from every room's stream.

Each node keeps its own index (``--search-index FILE``), so a search never
loads the shared store. One reader (:class:`SearchFeed`) follows every
room that has ever had a message (announced on ``P:said:new`` by the
append script, :mod:`chatproto.backends.streams`) with blocking XREADs of
bounded batches, and writes each batch, with how far it has read in each
stream, in one transaction on a worker thread: after a restart it goes on
from there, and indexes nothing twice. An edit or a deletion is a change
entry carrying the message's present state, which replaces or removes it.
Under ``--cluster-retention`` a room's messages are its last ``keep``
(history stops there, whatever Redis has yet to trim): the index forgets
older ones as the room's seq moves on, so a search finds what a history
page gives, no more.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends import fts
from chatproto.backends.eventlog import Threads
from chatproto.backends.redis import Commands, StoreLost
from chatproto.backends.streams import StreamStore, parse_entry, unescape
from chatproto.deferreds import every

log = Logger()

_TABLES = """
CREATE TABLE IF NOT EXISTS rooms (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS docs (
    id     INTEGER PRIMARY KEY,
    ts     REAL NOT NULL,
    sender TEXT NOT NULL,
    text   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (stream TEXT PRIMARY KEY, id TEXT NOT NULL)
"""

#: The position of the stream that announces new rooms, in ``positions``.
SAID = ""


class IndexFile:
    """The index's file: messages' searched text by row id (room id times
    SPAN plus seq), the FTS5 index over it, and each stream's position.
    ``keep`` is the streams' retention (0: all)."""

    def __init__(self, path: str, threads: Threads | None = None, keep: int = 0) -> None:
        self.path = path
        self.keep = keep
        self.index = fts.Index("docs")
        self._threads = threads if path != ":memory:" else None
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        for statement in _TABLES.split(";"):
            self._db.execute(statement)
        self.secret = self.index.open(self._db)
        self.index.set_state(self._db, "built", "all")
        fts.prepare(self._db)
        self._ids: dict[str, int] = dict(self._db.execute("SELECT key, id FROM rooms").fetchall())
        self._readers = fts.Readers(path)
        self._lock = threading.Lock()  # the writer's connection: one batch at a time
        self._closed = threading.Event()  # set on close: a batch being written then closes the file

    def positions(self) -> dict[str, str]:
        """How far each stream was indexed: room key (SAID: the announcements) -> entry id."""
        return dict(self._db.execute("SELECT stream, id FROM positions").fetchall())

    def write(self, batch: Sequence[tuple[str, list[Any]]], said: str | None) -> int:
        """Index a batch of rooms' entries and store the positions reached,
        in one transaction (a worker thread's job); the messages, edits and
        deletions it applied."""
        with self._lock:
            count = 0 if self._closed.is_set() else self._write(self._db, batch, said)
        if self._closed.is_set():  # the server stopped while this batch was written
            self._close_when_free()
        return count

    def _write(self, db: sqlite3.Connection, batch: Sequence[tuple[str, list[Any]]], said: str | None) -> int:
        db.execute("BEGIN")
        try:
            count = 0
            for room, entries in batch:
                count += self._apply(db, room, entries)
                db.execute("INSERT OR REPLACE INTO positions VALUES (?, ?)", (room, entries[-1].id))
            if said is not None:
                db.execute("INSERT OR REPLACE INTO positions VALUES (?, ?)", (SAID, said))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return count

    def _room_id(self, db: sqlite3.Connection, room: str) -> int:
        id = self._ids.get(room)
        if id is None:
            db.execute("INSERT OR IGNORE INTO rooms (key) VALUES (?)", (room,))
            (id,) = db.execute("SELECT id FROM rooms WHERE key = ?", (room,)).fetchone()
            self._ids[room] = id
        return id

    def _apply(self, db: sqlite3.Connection, room: str, entries: list[Any]) -> int:
        base = self._room_id(db, room) * fts.SPAN
        count = self._entries(db, base, entries)
        self._trim(db, base, int(entries[-1].id.partition("-")[0]))
        return count

    def _trim(self, db: sqlite3.Connection, base: int, seq: int) -> None:
        """Forget what the stream no longer keeps once its room's seq is
        ``seq`` (an entry's ID starts with it): the messages before its
        last ``keep``, as the append script trims them."""
        if not self.keep or seq <= self.keep:
            return
        gone = (base, base + seq - self.keep)  # row ids in (low, high]
        rows = db.execute("SELECT id, text FROM docs WHERE id > ? AND id <= ?", gone).fetchall()
        for id, text in rows:
            self.index.remove(db, id, text)
        db.execute("DELETE FROM docs WHERE id > ? AND id <= ?", gone)

    def _entries(self, db: sqlite3.Connection, base: int, entries: list[Any]) -> int:
        count = 0
        for entry in entries:
            if entry.kind == "m":
                data = entry.data
                if fts.indexed(data.get("action")):
                    self._put(db, base + entry.seq, data)
                    count += 1
            elif entry.kind == "c":
                change = entry.data
                if change.get("kind") in ("edit", "delete"):
                    state = change["m"]
                    self._drop(db, base + change["seq"])
                    if "deleted" not in state and fts.indexed(state.get("action")):
                        self._put(db, base + change["seq"], state)
                    count += 1
        return count

    def _put(self, db: sqlite3.Connection, id: int, data: dict[str, Any]) -> None:
        self._drop(db, id)  # a batch read again after a crash before its commit
        db.execute("INSERT INTO docs VALUES (?, ?, ?, ?)", (id, data["ts"], data["from"], data["text"]))
        self.index.add(db, [(id, data["text"])])

    def _drop(self, db: sqlite3.Connection, id: int) -> None:
        row = db.execute("SELECT text FROM docs WHERE id = ?", (id,)).fetchone()
        if row is not None:
            self.index.remove(db, id, row[0])
            db.execute("DELETE FROM docs WHERE id = ?", (id,))

    def search(self, query: fts.Query) -> Deferred[fts.Found]:
        if self._threads is None:
            return maybeDeferred(self._search, self._db, query)
        return self._threads(lambda: self._search(self._readers.get(), query))

    def _search(self, db: sqlite3.Connection, query: fts.Query) -> fts.Found:
        marks = ",".join("?" * len(query.rooms))
        ids = dict(db.execute(f"SELECT key, id FROM rooms WHERE key IN ({marks})", query.rooms).fetchall())
        return self.index.search(db, ids, query)

    def close(self) -> None:
        """Close the file, never under a batch being written on a worker
        thread (the server may stop while one is): that batch's writer
        closes it as it ends."""
        self._readers.close()
        self._closed.set()
        self._close_when_free()

    def _close_when_free(self) -> None:
        if self._lock.acquire(blocking=False):
            try:
                self._db.close()  # again is harmless
            finally:
                self._lock.release()


class SearchFeed:
    """Follows every room's stream into an :class:`IndexFile`: one blocking
    XREAD of at most COUNT entries per stream at a time, written off the
    reactor thread before the next is read."""

    BLOCK_MS = 2000
    COUNT = 200
    RETRY = 1.0  # seconds before reading again after a failure
    POLL = 0.5  # a sharded cluster's streams: seconds between reads that found nothing

    def __init__(
        self, client: Commands, store: StreamStore, index: IndexFile, clock: IReactorTime, threads: Threads
    ) -> None:
        self.client = client
        self.store = store
        self.index = index
        self.clock = clock
        self._threads = threads
        self._positions: dict[str, str] = {}  # room key -> the last entry id indexed
        self._said = "0-0"
        self._said_key = store.key("said", "new")
        self.indexed = 0  # messages, edits and deletions applied since the start
        self.running = False
        self._retry: IDelayedCall | None = None  # reading again after a failure
        self._idle: Deferred[None] | None = None  # a sharded cluster's pause between reads

    def start(self) -> None:
        self.running = True
        self.client.start()
        positions = self.index.positions()
        self._said = positions.pop(SAID, "0-0")
        self._positions = positions
        d = self.client.connected().addCallback(lambda _: self._discover())
        d.addCallbacks(lambda _: self._read(), self._failed)

    def stop(self) -> Deferred[None]:
        self.running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._idle is not None and not self._idle.called:
            self._idle.cancel()
        return self.client.stop()

    def _discover(self) -> Deferred[None]:
        """Rooms said in before this reader was told of them: those with
        members now, and those the store remembers were said in."""
        said = self.client.call("SMEMBERS", self.store.key("said"))
        members = said.addCallback(
            lambda keys: self.client.call("HKEYS", self.store.key("rooms")).addCallback(
                lambda more: [*keys, *more]
            )
        )

        def follow(keys: list[bytes]) -> None:
            for raw in keys:
                self._positions.setdefault(unescape(raw.decode()), "0-0")

        return members.addCallback(follow)

    def _read(self) -> None:
        if not self.running:
            return
        rooms = list(self._positions)
        streams = [self._said_key, *(self.store.stream(room) for room in rooms)]
        ids = [self._said, *(self._positions[room] for room in rooms)]
        if self.store.sharded:
            d = self._read_each(streams, ids)
        else:
            d = self.client.call(
                "XREAD", "COUNT", self.COUNT, "BLOCK", self.BLOCK_MS, "STREAMS", *streams, *ids
            )
        d.addCallback(self._got, dict(zip(streams[1:], rooms, strict=True)))
        d.addCallbacks(lambda _: self._read(), self._failed)

    def _read_each(self, streams: list[str], ids: list[str]) -> Deferred[Any]:
        """A sharded cluster's streams, in their slots: each read by itself
        (no read may span slots), a moment later when none had anything new."""
        reads = [
            self.client.call("XREAD", "COUNT", self.COUNT, "STREAMS", s, i)
            for s, i in zip(streams, ids, strict=True)
        ]

        def merged(replies: list[Any]) -> Any:
            found = [pair for reply in replies if reply for pair in reply]
            if found:
                return found
            self._idle = deferLater(self.clock, self.POLL, lambda: None)
            return self._idle

        return every(reads).addCallback(merged)

    def _got(self, reply: Any, rooms: dict[str, str]) -> Deferred[None] | None:
        said = None
        batch: list[tuple[str, list[Any]]] = []
        for raw_key, raw_entries in reply or ():
            room = rooms.get(raw_key.decode())
            if room is None:  # the announcements
                said = raw_entries[-1][0].decode()
                for _, fields in raw_entries:
                    self._positions.setdefault(unescape(fields[1].decode()), "0-0")
                continue
            entries = []
            for raw in raw_entries:
                try:
                    entries.append(parse_entry(raw))
                except (ValueError, TypeError):
                    log.warn("search index: skipped a malformed entry {id} in {room}", id=raw[0], room=room)
            if entries:
                batch.append((room, entries))
        if not batch and said is None:
            return None
        d = self._threads(lambda: self.index.write(batch, said))

        def written(count: int) -> None:
            self.indexed += count
            for room, entries in batch:
                self._positions[room] = entries[-1].id
            if said is not None:
                self._said = said

        return d.addCallback(written)

    def _failed(self, failure: Failure) -> None:
        if not self.running:
            return
        if failure.check(StoreLost):
            log.error("search index: the cluster store lost its data; indexing stopped")
            return
        log.warn("search index: reading the streams failed: {error}; again shortly", error=failure.value)
        self._retry = self.clock.callLater(self.RETRY, self._restart)

    def _restart(self) -> None:
        self._retry = None
        d = self.client.connected().addCallback(lambda _: self._discover())
        d.addCallbacks(lambda _: self._read(), self._failed)
