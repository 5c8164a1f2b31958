"""Writes confirmed on a number of replicas (Redis ``WAIT``) before they count.

A primary that dies takes with it what it had not sent to a replica; the
replica Sentinel promotes then hands out the same seqs again. So with
``--cluster-min-replicas N`` a message is acknowledged only once ``N``
replicas have it, and a node delivers what it read from a stream only
once ``N`` replicas have that too (the entry may be another node's whose
writer was never answered); so does every read a member is shown (a
room's recent history, a page). ``WAIT`` waits for the writes made on its
own connection, so a reader first makes a write of its own (a mark),
after the entries it read, on the connection it read them on, and waits
for that. ``min-replicas-to-write`` on the servers is
no substitute (it counts replicas that answered within seconds, not this
write) but a good companion: a primary left without replicas refuses
writes at once instead of taking them and leaving them unconfirmed.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends.redis import RedisClient, RedisProtocol, RedisUnavailable

log = Logger()


class NotReplicated(RedisUnavailable):
    """Written on the primary but not confirmed by enough replicas in time:
    the outcome is unknown (replicated later, or lost in a failover)."""


class Replicas:
    """``confirm()`` fires once every write sent on ``client`` before it has
    reached ``count`` replicas. One ``WAIT`` is in flight at a time and
    answers for every confirmation asked for before it was sent; a
    confirmation still unanswered after ``patience`` seconds fails with
    :class:`NotReplicated`."""

    WAIT_MS = 1000

    def __init__(
        self,
        client: RedisClient,
        count: int,
        clock: IReactorTime,
        patience: float = 10.0,
        mark_key: str = "chat:mark",
    ) -> None:
        self.client = client
        self.count = count
        self.clock = clock
        self.patience = patience
        self.mark_key = mark_key  # what a mark writes: any key will do, every node shares it
        self._asked: list[tuple[Deferred[None], float]] = []  # covered by the WAIT in flight
        self._next: list[tuple[Deferred[None], float]] = []  # for the WAIT after it
        self._waiting = False
        self._short = False  # the last WAIT found too few replicas (logged once)

    def confirm(self) -> Deferred[None]:
        if self.count <= 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._next.append((d, self.clock.seconds() + self.patience))
        if not self._waiting:
            self._wait()
        return d

    def after(self, d: Deferred) -> Deferred:
        """``d``'s answer, once the write that gave it is on the replicas."""
        if self.count <= 0:
            return d
        return d.addCallback(lambda answer: self.confirm().addCallback(lambda _: answer))

    def seen(self, read: Callable[[], Deferred]) -> Deferred:
        """``read()``'s answer, once what it read is on the replicas."""
        if self.count <= 0:
            return read()
        on = self.client.connection
        return read().addCallback(lambda answer: self.mark(on).addCallback(lambda _: answer))

    def mark(self, on: RedisProtocol | None) -> Deferred[None]:
        """A write after whatever was read on the connection ``on``,
        confirmed: once it fires, what was read is on the replicas too.
        Fails if the client is on another connection now (perhaps to
        another primary, which never had what was read)."""
        if self.count <= 0:
            return succeed(None)
        if on is None or self.client.connection is not on:
            return fail(RedisUnavailable("the connection to Redis changed after the read: unconfirmed"))
        d = self.client.call("SET", self.mark_key, "1", "PX", int(self.patience * 1000) + 60_000)
        return d.addCallback(lambda _: self.confirm())

    def _wait(self) -> None:
        self._asked, self._next = self._next, []
        self._waiting = True
        d = self.client.call("WAIT", self.count, self.WAIT_MS)
        d.addCallbacks(self._answered, self._failed)

    def _answered(self, acked: int) -> None:
        self._waiting = False
        asked, self._asked = self._asked, []
        if acked >= self.count:
            if self._short:
                log.info("writes reach {count} replicas again", count=self.count)
                self._short = False
            for d, _ in asked:
                d.callback(None)
        else:
            if not self._short:
                log.warn(
                    "only {acked} of {count} replicas confirm the cluster's writes: messages wait",
                    acked=acked,
                    count=self.count,
                )
                self._short = True
            now = self.clock.seconds()
            expired = [d for d, due in asked if due <= now]
            self._next[:0] = [(d, due) for d, due in asked if due > now]
            why = f"not confirmed by {self.count} replicas in {self.patience:g} s"
            if expired:  # perhaps a primary cut off from the rest: ask Sentinel again
                self.client.drop(f"writes {why}")
            for d in expired:
                d.errback(NotReplicated(why))
        if self._next and not self._waiting:  # a callback above may have sent one
            self._wait()

    def _failed(self, failure: Failure) -> None:
        """The connection went, or WAIT failed: every write waiting is unconfirmed."""
        self._waiting = False
        waiting, self._asked, self._next = self._asked + self._next, [], []
        for d, _ in waiting:
            d.errback(failure)
