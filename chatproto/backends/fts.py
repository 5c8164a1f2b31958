"""Full-text search over stored messages: SQLite FTS5 beside the text it indexes.

One module for both stores: the embedded log indexes its ``messages``
table, a cluster node its own file's ``docs`` table. The index is
contentless and holds each word only as :class:`Encoder` makes it (keyed
digests of its prefixes), never the text. Both name a message by one row
id, its room's id times ``SPAN`` plus its seq, so a room is a range of
row ids and a search in one room is a range scan of the index.

What a client types never reaches FTS5's query syntax: it is cut into
words and phrases here (:func:`parse_words`), folded and encoded as the
index's words are, and each is quoted. Snippets and their marks are
computed here from the present text, never from FTS5's highlight markers,
which could collide with the text itself.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import hmac
import json
import os
import re
import sqlite3
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from twisted.logger import Logger

from chatproto.codec import NOTICE, ErrorCode, Hit, ProtocolError
from chatproto.rules import nick_key

log = Logger()

#: A message's row id is its room's id times SPAN plus its seq (backends/sqlite.py).
SPAN = 2**40

#: The FTS5 table. Its words are already cut, folded and encoded here
#: (:class:`Encoder`: lowercase hex, one space between), so the plain
#: ``ascii`` tokenizer cuts them as any would, for less; no column sizes
#: (``columnsize=0``: one write fewer a message), as nothing ranks by them.
#: A file made with ``unicode61`` and its sizes keeps its table: the same
#: encoded words give it the same tokens, so the same answers.
TABLE = "fts5(text, content='', tokenize='ascii', columnsize=0)"

#: Longest ``words`` a SEARCH may have, in characters.
MAX_WORDS = 200
#: Longest snippet, in characters, with its ellipses.
SNIPPET = 200
#: Characters of context kept before the first match, when the text is cut.
LEAD = 60
ELLIPSIS = "…"
#: Hits per page: the default and the most.
DEFAULT_LIMIT, MAX_LIMIT = 20, 50
#: Rows indexed per transaction while an old history file gets its index.
BUILD_BATCH = 20_000


def _marks() -> str:
    """A regex class of the combining marks of planes 0 and 1 and the
    variation selectors: part of a word, as unicode61 has them (a vowel
    sign of an Indic script does not split its word)."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x300, 0x20000):
        if unicodedata.category(chr(code)).startswith("M"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    ranges.append((0xE0100, 0xE01EF))
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


#: A word: a run of letters, digits and combining marks (``_`` is punctuation, as for unicode61).
_TOKEN = re.compile(f"(?:[^\\W_]|[{_marks()}])+")
#: An ASCII text's bytes with letters lowered and all but letters and
#: digits made spaces: split, they are the words ``_TOKEN`` finds there,
#: folded, for a third of its cost (most messages are ASCII).
_ASCII_WORDS = bytes.maketrans(
    bytes(range(128)), bytes(c if chr(c).isalnum() else 0x20 for c in range(128)).lower()
)


def fold(word: str) -> str:
    """A token as the index keeps it: case folded, accents removed (as
    ``remove_diacritics 2`` does, for the Latin, Greek and Cyrillic scripts)."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[tuple[int, int, str]]:
    """Each word of ``text`` as (start, end, folded) in code points: runs of
    letters and digits, as unicode61 cuts them."""
    return [(m.start(), m.end(), fold(m.group())) for m in _TOKEN.finditer(text)]


#: Characters of a token that are encoded (a longer one is matched on these).
TOKEN_CHARS = 32


class Encoder:
    """Each word as the index keeps it: a keyed digest of every one of its
    prefixes, chained, so that the index holds no word in clear (a deleted
    message's words would otherwise stay readable in the file until FTS5
    merges its segments) and a prefix of a word still encodes to a prefix
    of its encoding (``word*`` searches work)."""

    def __init__(self, key: bytes) -> None:
        self._key = key[:32]
        self.token = functools.lru_cache(maxsize=100_000)(self._token)
        # a word as written -> its encoding: what a message's words cost,
        # mostly, is a lookup here
        self._written = functools.lru_cache(maxsize=100_000)(self._fold_and_encode)

    def _fold_and_encode(self, word: str) -> str:
        return self.token(fold(word))

    def _token(self, token: str) -> str:
        out = []
        for i in range(1, min(len(token), TOKEN_CHARS) + 1):
            digest = hashlib.blake2s(token[:i].encode("utf-8"), key=self._key, digest_size=2)
            out.append(digest.hexdigest())
        return "".join(out)

    def text(self, text: str) -> str:
        """A message's text as the index is given it."""
        if text.isascii():
            token = self.token
            return " ".join([token(word) for word in text.encode().translate(_ASCII_WORDS).decode().split()])
        written = self._written
        return " ".join([written(word) for word in _TOKEN.findall(text)])

    def term(self, term: Term) -> str:
        """A term in FTS5's syntax: its words encoded, inside double quotes."""
        phrase = '"' + " ".join(self.token(word) for word in term.words) + '"'
        return phrase + " *" if term.prefix else phrase


@dataclass(frozen=True, slots=True)
class Term:
    """A word, a prefix (``word*``) or a phrase (``"two words"``): folded
    words that must follow each other; the last may be a prefix."""

    words: tuple[str, ...]
    prefix: bool = False


_PIECE = re.compile(r'"([^"]*)"|(\S+)')


def parse_words(words: str) -> list[Term]:
    """SEARCH's ``words`` as terms, or ``bad_search``: quoted phrases, words,
    a trailing ``*`` a prefix; nothing else is syntax."""
    if not words.strip() or len(words) > MAX_WORDS:
        raise ProtocolError(ErrorCode.BAD_SEARCH, f"words must be 1 to {MAX_WORDS} characters")
    terms = []
    for match in _PIECE.finditer(words):
        phrase, word = match.groups()
        text = phrase if phrase is not None else word
        prefix = phrase is None and word.endswith("*")
        folded = tuple(t for _, _, t in tokens(text))
        if folded:
            terms.append(Term(folded, prefix))
    if not terms:
        raise ProtocolError(ErrorCode.BAD_SEARCH, "words holds no word to look for (letters or digits)")
    return terms


def match_query(encoder: Encoder, terms: Sequence[Term]) -> str:
    """The FTS5 MATCH expression: every term must be there."""
    return " AND ".join(encoder.term(term) for term in terms)


def _at(words: Sequence[tuple[int, int, str]], i: int, term: Term) -> bool:
    """Whether ``term`` occurs in ``words`` from the ``i``-th on."""
    n = len(term.words)
    if i + n > len(words):
        return False
    if any(words[i + k][2] != term.words[k] for k in range(n - 1)):
        return False
    last = words[i + n - 1][2]
    return last.startswith(term.words[-1]) if term.prefix else last == term.words[-1]


def matches(text: str, terms: Sequence[Term]) -> bool:
    """Whether every term is in ``text`` (what FTS5 answers, for the
    messages not yet in its table)."""
    words = tokens(text)
    return all(any(_at(words, i, term) for i in range(len(words))) for term in terms)


def find_marks(text: str, terms: Sequence[Term]) -> list[tuple[int, int]]:
    """Where each term occurs in ``text``: (start, end) code point spans,
    in order, none overlapping."""
    words = tokens(text)
    spans = []
    for i in range(len(words)):
        for term in terms:
            if _at(words, i, term):
                spans.append((words[i][0], words[i + len(term.words) - 1][1]))
                break
    kept: list[tuple[int, int]] = []
    for start, end in spans:
        if not kept or start >= kept[-1][1]:
            kept.append((start, end))
    return kept


def snippet(text: str, terms: Sequence[Term]) -> tuple[str, list[list[int]]]:
    """The present text cut around its first match to at most SNIPPET
    characters, at word boundaries, with ``…`` where cut; each match in it
    as [start, length]."""
    spans = find_marks(text, terms)
    start, end = 0, len(text)
    if len(text) > SNIPPET:
        first = spans[0][0] if spans else 0
        start = _word_start(text, max(0, first - LEAD)) if first > LEAD else 0
        room = SNIPPET - (1 if start > 0 else 0)
        end = start + room
        if end < len(text):
            end = _word_end(text, start, end - 1)  # leave room for the closing ellipsis
    cut = text[start:end]
    lead = ELLIPSIS if start > 0 else ""
    tail = ELLIPSIS if end < len(text) else ""
    offset = len(lead) - start
    marks = [[s + offset, min(e, end) - s] for s, e in spans if s >= start and s < end]
    return lead + cut + tail, marks


def _word_start(text: str, at: int) -> int:
    """``at`` moved forward to the start of a word, unless none is near."""
    for i in range(at, min(len(text), at + 20)):
        if i == 0 or (not text[i - 1].isalnum() and text[i].isalnum()):
            return i
    return at


def _word_end(text: str, start: int, end: int) -> int:
    """``end`` moved back to the end of a word (trailing spaces dropped),
    unless that would lose most of the snippet."""
    for i in range(end, max(start + 1, end - 30), -1):
        if text[i - 1].isalnum() and not text[i].isalnum():
            while i > start + 1 and text[i - 1].isspace():
                i -= 1
            return i
    return end


# -- the query a SEARCH asks, and its pages --------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """A SEARCH as the index answers it: terms, the rooms in scope (keys),
    filters, and where the previous page stopped."""

    terms: tuple[Term, ...]
    rooms: tuple[str, ...]
    sender: str | None = None  # a nick's key
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT
    bounds: dict[str, int] = field(default_factory=dict)  # room -> the seq to continue below
    asof: float | None = None  # when the first page was asked: later messages wait for a new search


@dataclass(frozen=True, slots=True)
class Found:
    """A search's page: the hits, newest first, and where the next starts
    (None: no more)."""

    hits: list[Hit]
    bounds: dict[str, int] | None


class Cursor:
    """Opaque ``page`` strings: where a search stopped, bound to the search's
    other fields and signed with the server's key (a cluster's: every
    node's), so a page it did not give is ``bad_search`` and one it gave
    needs nothing remembered."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self.secret, body, hashlib.sha256).digest()[:16]

    def encode(self, about: str, bounds: dict[str, int], asof: float) -> str:
        body = json.dumps({"a": _digest(about), "b": bounds, "t": asof}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._sign(body) + body).decode().rstrip("=")

    def decode(self, about: str, page: str) -> tuple[dict[str, int], float]:
        """The bounds and time a page holds; ``bad_search`` for any page this
        server did not give for a search with these fields."""
        try:
            raw = base64.urlsafe_b64decode(page + "=" * (-len(page) % 4))
            mac, body = raw[:16], raw[16:]
            if not hmac.compare_digest(mac, self._sign(body)):
                raise ValueError("signature")
            value = json.loads(body)
            if value["a"] != _digest(about):
                raise ValueError("another search's page")
            bounds = {str(k): int(v) for k, v in value["b"].items()}
            return bounds, float(value["t"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ProtocolError(
                ErrorCode.BAD_SEARCH, "page is not one this server gave for this search"
            ) from e


def _digest(about: str) -> str:
    return hashlib.sha256(about.encode("utf-8")).hexdigest()[:16]


# -- the index ------------------------------------------------------------------------


def indexed(action: dict | None) -> bool:
    """Whether a message is searched: messages and notices, not moderation records."""
    return action is None or action.get("op") == NOTICE


#: SQLite from which FTS5 can delete in place (its ``secure-delete`` option).
SECURE_DELETE = (3, 42, 0)


class Index:
    """The FTS5 table ``search`` beside a content table (``messages`` or
    ``docs``) with columns id, ts, sender, text: the index holds no text
    (contentless) and its words only as :class:`Encoder` makes them. Every
    write to it is made inside the writer's own transaction, so it commits
    or rolls back with the rows it mirrors."""

    def __init__(self, content: str, where: str = "1", pending: int = 0) -> None:
        self.content = content
        self.where = where  # which content rows are searched (not records, not deleted)
        self.encoder = Encoder(b"")
        # FTS5 writes a segment at every commit (tens of microseconds): with
        # ``pending``, new messages are only listed in ``search_pending``
        # (a rowid insert) and go into FTS5 that many at a time, in the
        # transaction of the append that fills the list; searches read both.
        self.pending = pending
        self._listed = 0
        # Each listed message's words, encoded when it was listed: the flush
        # then only inserts, where encoding them all at once held the
        # reactor for one long turn every ``pending`` messages. By id, with
        # the text they encode: an edit of a listed message whose
        # transaction rolls back leaves the new text's encoding here and
        # the old text in the list.
        self._encoded: dict[int, tuple[str, str]] = {}

    def open(self, db: sqlite3.Connection) -> bytes:
        """Make the index and its state if they are missing; the file's
        secret (it keys the words and signs search pages)."""
        exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'search'").fetchone()
        if not exists:
            db.execute(f"CREATE VIRTUAL TABLE search USING {TABLE}")
            if sqlite3.sqlite_version_info >= SECURE_DELETE:
                db.execute("INSERT INTO search (search, rank) VALUES ('secure-delete', 1)")
            db.execute("CREATE TABLE IF NOT EXISTS search_state (key TEXT PRIMARY KEY, value)")
        db.execute("CREATE TABLE IF NOT EXISTS search_pending (id INTEGER PRIMARY KEY)")
        (self._listed,) = db.execute("SELECT count(*) FROM search_pending").fetchone()
        self._encoded = {}
        secret = self.secret(db)
        self.encoder = Encoder(secret)
        return secret

    def drop(self, db: sqlite3.Connection) -> None:
        """Forget the index (a server run without search): it is built again
        from the history when search is back."""
        db.execute("DROP TABLE IF EXISTS search")
        db.execute("DROP TABLE IF EXISTS search_state")
        db.execute("DROP TABLE IF EXISTS search_pending")

    def state(self, db: sqlite3.Connection, key: str) -> object:
        row = db.execute("SELECT value FROM search_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, db: sqlite3.Connection, key: str, value: object) -> None:
        db.execute("INSERT OR REPLACE INTO search_state VALUES (?, ?)", (key, value))

    def secret(self, db: sqlite3.Connection) -> bytes:
        """The key pages are signed with: made once, kept in the file, so a
        page stays good across restarts."""
        value = self.state(db, "secret")
        if not isinstance(value, bytes):
            value = os.urandom(32)
            self.set_state(db, "secret", value)
        return value

    def add(self, db: sqlite3.Connection, rows: Sequence[tuple[int, str]]) -> None:
        """Index new messages (row id, text), inside the caller's transaction."""
        if not self.pending:
            self._insert(db, rows)
            return
        db.executemany("INSERT OR IGNORE INTO search_pending (id) VALUES (?)", [(id,) for id, _ in rows])
        text = self.encoder.text
        for id, t in rows:
            self._encoded[id] = (t, text(t))
        self._listed += len(rows)
        if self._listed >= self.pending:
            self.flush(db)

    def _insert(self, db: sqlite3.Connection, rows: Iterable[tuple[int, str]]) -> None:
        encoding = self._encoding
        encoded = [(id, encoding(id, t)) for id, t in rows]
        db.executemany("INSERT INTO search (rowid, text) VALUES (?, ?)", encoded)

    def _encoding(self, id: int, text: str) -> str:
        """``text``'s words as the index is given them: as kept when the
        message was listed, unless that was another text."""
        kept = self._encoded.get(id)
        return kept[1] if kept is not None and kept[0] == text else self.encoder.text(text)

    def flush(self, db: sqlite3.Connection) -> None:
        """The listed messages into FTS5 (their present text), inside the
        caller's transaction (CROSS JOIN: from the short list, never a scan
        of the messages)."""
        listed = db.execute(
            f"SELECT c.id, c.text FROM search_pending p CROSS JOIN {self.content} c ON c.id = p.id"
            f" WHERE ({self.where})"
        ).fetchall()
        self._insert(db, listed)
        db.execute("DELETE FROM search_pending")
        self._encoded = {}
        self._listed = 0

    def remove(self, db: sqlite3.Connection, id: int, old: str) -> None:
        """Take a message out: its text as it was indexed is what FTS5 needs
        (a message still listed only leaves the list)."""
        self._encoded.pop(id, None)
        if self.pending and db.execute("DELETE FROM search_pending WHERE id = ?", (id,)).rowcount:
            return
        db.execute(
            "INSERT INTO search (search, rowid, text) VALUES ('delete', ?, ?)", (id, self.encoder.text(old))
        )

    def build(self, db: sqlite3.Connection, batch: int = BUILD_BATCH) -> int:
        """Index what an older file holds, in batches (each its own
        transaction), from where an interrupted build stopped; logs progress.
        Returns the rows indexed."""
        done = self.state(db, "built")
        if done == "all":
            return 0
        after = int(done) if isinstance(done, int) else 0
        (total,) = db.execute(f"SELECT count(*) FROM {self.content} WHERE id > ?", (after,)).fetchone()
        count = 0
        while True:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(
                f"SELECT id, text FROM {self.content} WHERE id > ? ORDER BY id LIMIT ?", (after, batch)
            ).fetchall()
            wanted = db.execute(
                f"SELECT id, text FROM {self.content}"
                f" WHERE id > ? AND id <= ? AND ({self.where}) ORDER BY id",
                (after, rows[-1][0] if rows else after),
            ).fetchall()
            self._insert(db, wanted)
            if rows:
                after = rows[-1][0]
                self.set_state(db, "built", after)
            else:
                self.set_state(db, "built", "all")
            db.execute("COMMIT")
            count += len(wanted)
            if not rows:
                break
            log.info(
                "search index: {done} of {total} stored messages read", done=min(total, count), total=total
            )
        return count

    def search(self, db: sqlite3.Connection, room_ids: dict[str, int], query: Query) -> Found:
        """One page of hits, newest first, merged from each room's newest
        matches below its bound."""
        match = match_query(self.encoder, query.terms)
        heads = []
        for room in query.rooms:
            room_id = room_ids.get(room)
            if room_id is None:
                continue
            base = room_id * SPAN
            rows = self._room(db, match, base, base + query.bounds.get(room, SPAN), query)
            heads.append(
                [(-ts, _backwards(room), -seq, room, seq, ts, sender, text) for seq, ts, sender, text in rows]
            )
        hits: list[Hit] = []
        bounds = dict(query.bounds)
        for _, _, _, room, seq, ts, sender, text in heapq.merge(*heads):
            if len(hits) == query.limit:
                return Found(hits, bounds)
            cut, marks = snippet(text, query.terms)
            hits.append(Hit(room, seq, sender, ts, cut, marks))
            bounds[room] = seq
        return Found(hits, None)

    def _room(self, db: sqlite3.Connection, match: str, low: int, high: int, query: Query) -> list[tuple]:
        """A room's newest matches with row ids in (low, high), filtered:
        from FTS5, and from the messages listed for it."""
        filters = [f"({self.where})"]
        args: list[object] = []
        if query.sender is not None:
            filters.append("nick_key(c.sender) = ?")
            args.append(query.sender)
        if query.since is not None:
            filters.append("c.ts >= ?")
            args.append(query.since)
        if query.until is not None:
            filters.append("c.ts < ?")
            args.append(query.until)
        if query.asof is not None:
            filters.append("c.ts <= ?")
            args.append(query.asof)
        where = " AND ".join(filters)
        indexed = db.execute(
            f"SELECT search.rowid - {low}, c.ts, c.sender, c.text FROM search"
            f" JOIN {self.content} c ON c.id = search.rowid"
            f" WHERE search MATCH ? AND search.rowid > ? AND search.rowid < ? AND {where}"
            " ORDER BY search.rowid DESC LIMIT ?",
            [match, low, high, *args, query.limit + 1],
        ).fetchall()
        if not self.pending:
            return indexed
        listed = db.execute(
            f"SELECT p.id - {low}, c.ts, c.sender, c.text FROM search_pending p"
            f" CROSS JOIN {self.content} c ON c.id = p.id WHERE p.id > ? AND p.id < ? AND {where}",
            [low, high, *args],
        ).fetchall()
        found = [row for row in listed if matches(row[3], query.terms)]
        return sorted(indexed + found, reverse=True)[: query.limit + 1]


def _backwards(room: str) -> tuple[int, ...]:
    """A room key ordered backwards, for merging newest first."""
    return tuple(-ord(c) for c in room)


def reader(path: str) -> sqlite3.Connection:
    """A read connection for a worker thread (WAL lets it read while the
    reactor's connection writes); knows nick keys for ``from``."""
    db = sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=1.0, isolation_level=None
    )
    prepare(db)
    return db


class Readers:
    """One read connection (:func:`reader`) per worker thread on an index
    file, each made on its first search there, all closed together."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []

    def get(self) -> sqlite3.Connection:
        """This worker thread's read connection."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = reader(self.path)
            self._opened.append(db)
        return db

    def close(self) -> None:
        for db in self._opened:
            db.close()


def prepare(db: sqlite3.Connection) -> None:
    """What a connection that searches needs: nick keys in SQL."""
    db.create_function("nick_key", 1, _nick_key, deterministic=True)


def _nick_key(nick: str | None) -> str | None:
    try:
        return None if nick is None else nick_key(nick)
    except Exception:
        return nick
