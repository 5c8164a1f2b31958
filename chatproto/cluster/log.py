"""A cluster node's event log: history pages, catch-up by rev, read from
the rooms' streams and what the scripts keep beside them
(:mod:`chatproto.backends.streams`): each message in its present state."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from chatproto.backends import fts
from chatproto.backends.changes import quote_of, reactions_of
from chatproto.backends.eventlog import Around, Change, Draft, Outcome, StoreError, Topic, around
from chatproto.backends.streams import Found, StreamStore
from chatproto.codec import Message, Quote, files_of
from chatproto.rules import DEFAULT_ROOM

if TYPE_CHECKING:
    from chatproto.cluster.search_index import IndexFile

T = TypeVar("T")


def quote_from(seq: int, source: dict[str, Any] | None) -> Quote:
    """What a reply to message ``seq`` quotes, from that message's present
    state (None: the room has it no more)."""
    if source is None:
        return quote_of(seq, None, None, True)
    return quote_of(seq, source["from"], source["text"], "deleted" in source)


def carried_quote(q: dict[str, Any]) -> Quote:
    """A quote as an entry carries it (its JSON as the wire has it)."""
    return Quote(q["seq"], q.get("from"), q.get("text"), q.get("deleted"))


def stream_message(seq: int, data: dict[str, Any], quote: Quote | None = None) -> Message:
    """A message in its present state as the store keeps it: a stream
    entry's data (ts, from, text, action, author, reply, q) or a changed
    message's state (also edited, deleted, reactions, rev)."""
    if len(data) <= 4 and "reply" not in data and "rev" not in data and "files" not in data:  # plain
        return Message(seq, data["ts"], data["from"], data["text"], None, data.get("action"))
    reply = data.get("reply")
    if reply is not None and quote is None:
        q = data.get("q")
        quote = carried_quote(q) if q else quote_of(reply, None, None, True)
    deleted = data.get("deleted")
    return Message(
        seq,
        data["ts"],
        data["from"],
        data["text"],
        None,
        data.get("action"),
        quote if reply is not None else None,
        data.get("edited"),
        True if deleted is not None else None,
        deleted or None,
        reactions_of(data.get("reactions")),
        data.get("rev"),
        None if deleted is not None else files_of(data.get("files")),
    )


def found_message(found: Found) -> Message:
    """A page's message, its quote computed from the answered message's present state."""
    seq, data, source = found
    reply = data.get("reply")
    return stream_message(seq, data, None if reply is None else quote_from(reply, source))


Page = tuple[list[Message], bool]


class ClusterLog:
    """The :class:`~chatproto.backends.eventlog.EventLog` of a cluster node:
    history pages read from the rooms' streams. Appending is the node's
    (:meth:`ClusterNode.append`), which puts presence in the same order."""

    def __init__(self, store: StreamStore, index: IndexFile | None = None) -> None:
        self.store = store
        self.index = index  # this node's search index (cluster/search_index.py); None: no search
        self._started = False
        self._waiting: list[Deferred[None]] = []
        self._page_key: bytes | None = None  # the cluster's: a page is good on every node

    def prepare(self) -> Deferred[None]:
        """Read the key search pages are signed with, which every node
        shares (the first makes it), before the node takes connections."""
        if self.index is None:
            return succeed(None)

        def keep(key: bytes) -> None:
            self._page_key = key

        return self.store.secret("search").addCallback(keep)

    def started(self) -> None:
        """The node has joined: reads asked for before go now."""
        self._started = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _when_started(self, read: Callable[[], Deferred[T]]) -> Deferred[T]:
        if self._started:
            return read()
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d.addCallback(lambda _: read())

    def append(self, drafts: Sequence[Draft | Change]) -> Deferred[list[Outcome]]:
        return fail(StoreError("a cluster node appends through its ClusterNode"))

    def before(self, seq: int | None, limit: int, room: str = DEFAULT_ROOM) -> Deferred[Page]:
        return self._page(self._when_started(lambda: self.store.before(room, seq, limit)))

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[Page]:
        return self._page(self._when_started(lambda: self.store.after(room, seq, limit)))

    def _page(self, d: Deferred[tuple[list[Found], bool]]) -> Deferred[Page]:
        page = d.addCallback(lambda page: ([found_message(found) for found in page[0]], page[1]))
        return page.addErrback(_store_error)

    def around(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[Around]:
        return around(self, seq, limit, room)

    def search_key(self) -> bytes | None:
        return None if self.index is None else self._page_key

    def search(self, query: fts.Query) -> Deferred[fts.Found]:
        """From this node's own index, as far as it has read the streams."""
        if self.index is None:
            return fail(StoreError("search is off"))
        return self.index.search(query)

    def changed_after(self, rev: int, limit: int, room: str) -> Deferred[Page]:
        read = self._when_started(lambda: self.store.changed_after(room, rev, limit))
        page: Deferred[Page] = read.addCallback(
            lambda got: ([found_message(found) for found in got[0]], got[1])
        )
        return page.addErrback(_store_error)

    def last_rev(self, room: str) -> Deferred[int]:
        return self._when_started(lambda: self.store.last_rev(room)).addErrback(_store_error)

    def topic(self, room: str) -> Deferred[Topic | None]:
        def parse(t: dict[str, Any] | None) -> Topic | None:
            return Topic(t["text"], t["by"], t["ts"]) if t and t["text"] else None

        d = self._when_started(lambda: self.store.topic(room))
        return d.addCallback(parse).addErrback(_store_error)

    def set_topic(self, room: str, topic: Topic | None) -> Deferred[None]:
        return succeed(None)  # a topic entry keeps it (ClusterNode.append)

    def check(self) -> Deferred[None]:
        return self.store.client.call("PING").addCallback(lambda _: None).addErrback(_store_error)

    def maintain(self) -> None:
        pass  # the store keeps itself (appendfsync, trimming on append)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


def compact(value: Any) -> str:
    """JSON as the store keeps it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _store_error(failure: Failure) -> Failure:
    if failure.check(StoreError):
        return failure
    raise StoreError(f"the cluster store failed: {failure.value}")
