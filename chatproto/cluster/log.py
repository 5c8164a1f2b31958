"""A cluster node's event log: history pages read from the rooms' streams."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from chatproto.backends.eventlog import StoreError, Topic
from chatproto.backends.streams import StreamStore
from chatproto.codec import Message
from chatproto.rules import DEFAULT_ROOM


def stream_message(seq: int, data: dict[str, Any]) -> Message:
    """A message as a room's stream keeps it."""
    return Message(seq, data["ts"], data["from"], data["text"], None, data.get("action"))


class ClusterLog:
    """The :class:`~chatproto.backends.eventlog.EventLog` of a cluster node:
    history pages read from the rooms' streams. Appending is the cluster's
    (:meth:`Cluster.append`), which puts presence in the same order."""

    def __init__(self, store: StreamStore) -> None:
        self.store = store
        self._started = False
        self._waiting: list[Deferred] = []

    def started(self) -> None:
        """The node has joined: reads asked for before go now."""
        self._started = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _when_started(self, read) -> Deferred:
        if self._started:
            return read()
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d.addCallback(lambda _: read())

    def append(self, drafts) -> Deferred:
        raise StoreError("a cluster node appends through its Cluster")

    def before(self, seq: int | None, limit: int, room: str = DEFAULT_ROOM) -> Deferred:
        return self._page(self._when_started(lambda: self.store.before(room, seq, limit)))

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred:
        return self._page(self._when_started(lambda: self.store.after(room, seq, limit)))

    def _page(self, d: Deferred) -> Deferred:
        d.addCallback(lambda page: ([stream_message(seq, data) for seq, data in page[0]], page[1]))
        return d.addErrback(_store_error)

    def topic(self, room: str) -> Deferred:
        def parse(t):
            return Topic(t["text"], t["by"], t["ts"]) if t and t["text"] else None

        d = self._when_started(lambda: self.store.topic(room))
        return d.addCallback(parse).addErrback(_store_error)

    def set_topic(self, room: str, topic) -> Deferred:
        return succeed(None)  # a topic entry keeps it (Cluster.append)

    def check(self) -> Deferred:
        return self.store.client.call("PING").addCallback(lambda _: None).addErrback(_store_error)

    def maintain(self) -> None:
        pass  # the store keeps itself (appendfsync, trimming on append)

    def close(self) -> None:
        pass


def _store_error(failure: Failure):
    if failure.check(StoreError):
        return failure
    raise StoreError(f"the cluster store failed: {failure.value}")
