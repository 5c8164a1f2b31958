"""A cluster node's event log: history pages read from the rooms' streams."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from chatproto.backends.eventlog import Draft, StoreError, Topic
from chatproto.backends.streams import StreamStore
from chatproto.codec import Message
from chatproto.rules import DEFAULT_ROOM

T = TypeVar("T")


def stream_message(seq: int, data: dict[str, Any]) -> Message:
    """A message as a room's stream keeps it."""
    return Message(seq, data["ts"], data["from"], data["text"], None, data.get("action"))


Page = tuple[list[Message], bool]


class ClusterLog:
    """The :class:`~chatproto.backends.eventlog.EventLog` of a cluster node:
    history pages read from the rooms' streams. Appending is the node's
    (:meth:`ClusterNode.append`), which puts presence in the same order."""

    def __init__(self, store: StreamStore) -> None:
        self.store = store
        self._started = False
        self._waiting: list[Deferred[None]] = []

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

    def append(self, drafts: Sequence[Draft]) -> Deferred[list[Message]]:
        raise StoreError("a cluster node appends through its ClusterNode")

    def before(self, seq: int | None, limit: int, room: str = DEFAULT_ROOM) -> Deferred[Page]:
        return self._page(self._when_started(lambda: self.store.before(room, seq, limit)))

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred[Page]:
        return self._page(self._when_started(lambda: self.store.after(room, seq, limit)))

    def _page(self, d: Deferred[tuple[list[tuple[int, dict[str, Any]]], bool]]) -> Deferred[Page]:
        page = d.addCallback(lambda page: ([stream_message(seq, data) for seq, data in page[0]], page[1]))
        return page.addErrback(_store_error)

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
        pass


def _store_error(failure: Failure) -> Failure:
    if failure.check(StoreError):
        return failure
    raise StoreError(f"the cluster store failed: {failure.value}")
