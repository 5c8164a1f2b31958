"""PENDING: which connections still logging in each session hears of.

PENDING is server-wide, so in a login storm it is per-login work for every
session. On a busy server (docs/protocol.md 22.8) version 2 hears of a
connection only once it has been pending for ``QUIET`` seconds, and of its
going only if it heard of its coming: the connections that log in at once
cost the others nothing. Version 1 hears of every one at once, as it always
has.

In a cluster the server is every node: each node's news goes to the others
(:meth:`~chatproto.core.peers.Peers.pending`) and theirs comes here
(:meth:`PendingNews.elsewhere`). Another node's news travels on a channel
that may lose it, so a connection pending elsewhere is believed pending for
no longer than a login may take (``patience``), then announced gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatproto import codec
from chatproto.core.broadcast import COALESCE_AT, SERVER, Broadcast, Event
from chatproto.core.peers import Peers

#: How long a connection is pending before version 2 hears of it, on a busy server.
QUIET = 1.0

CONNECTING = "connecting"
GONE = "gone"


def _take_due(due: dict[int, float], now: float) -> tuple[list[int], float | None]:
    """Take out the ids of ``due`` (in the order their times come) whose
    time is ``now`` or before; and when the next one falls due, if any."""
    ids = []
    for id, when in due.items():
        if when > now:
            break
        ids.append(id)
    for id in ids:
        del due[id]
    return ids, next(iter(due.values()), None)


class PendingNews:
    """Announces pending connections, this node's and the others'; remembers
    those version 2 has not heard of yet (a busy server's), in the order they
    came, which is the order they fall due."""

    def __init__(self, clock: IReactorTime, broadcast: Broadcast, peers: Peers, patience: float) -> None:
        self.clock = clock
        self.broadcast = broadcast
        self.peers = peers
        self.patience = patience
        self._quiet: dict[int, float] = {}  # connection id -> when version 2 hears of it
        self._call: IDelayedCall | None = None
        self._elsewhere: dict[int, float] = {}  # another node's connection id -> when it is taken for gone
        self._quiet_here: set[int] = set()  # our connections nobody hears of (relayed devices)
        self._expiry: IDelayedCall | None = None

    def connecting(self, id: int) -> None:
        self.peers.pending(id, CONNECTING, True)
        self._connecting(id)

    def quiet(self, id: int) -> None:
        """Connection ``id`` is pending, and nobody hears of it (a device
        relayed here: the node it reached announced it)."""
        self._quiet_here.add(id)

    def gone(self, id: int, v1: bool = True) -> None:
        """Connection ``id`` is pending no more (logged in, resumed, or
        closed); ``v1``: version 1 hears of it as a PENDING (not when it
        sees the login as a JOINED)."""
        if self._quiet_here and id in self._quiet_here:
            self._quiet_here.discard(id)
            return
        self.peers.pending(id, GONE, v1)
        self._gone(id, v1)

    def elsewhere(self, id: int, state: str, v1: bool) -> None:
        """Another node's news of its connection ``id``."""
        if state == CONNECTING:
            if id in self._elsewhere:
                return
            self._elsewhere[id] = self.clock.seconds() + self.patience
            if self._expiry is None:
                self._expiry = self.clock.callLater(self.patience, self._expire)
            self._connecting(id)
        elif state == GONE and self._elsewhere.pop(id, None) is not None:
            self._gone(id, v1)

    def gone_elsewhere(self, whose: Callable[[int], bool]) -> None:
        """Another node's connections ``whose(id)`` are gone (their node left)."""
        for id in [id for id in self._elsewhere if whose(id)]:
            del self._elsewhere[id]
            self._gone(id, True)

    def ids(self, here: Iterable[int], version: int) -> list[int]:
        """WELCOME.pending: the connections pending here and elsewhere that a
        session of ``version`` has heard of."""
        ids = [*here, *self._elsewhere]
        hidden = self._quiet_here
        if hidden:
            ids = [id for id in ids if id not in hidden]
        return ids if version == 1 or not self._quiet else [id for id in ids if id not in self._quiet]

    def _connecting(self, id: int) -> None:
        payload = codec.pending_payload(id, CONNECTING)
        if self.broadcast.sessions() < COALESCE_AT:
            self.broadcast.event(Event(SERVER, payload, payload))
            return
        self.broadcast.event(Event(SERVER, payload, None))
        self._quiet[id] = self.clock.seconds() + QUIET
        if self._call is None:
            self._call = self.clock.callLater(QUIET, self._announce)

    def _gone(self, id: int, v1: bool) -> None:
        heard = self._quiet.pop(id, None) is None
        if not (v1 or heard):
            return
        payload = codec.pending_payload(id, GONE)
        self.broadcast.event(Event(SERVER, payload if v1 else None, payload if heard else None))

    def _announce(self) -> None:
        now = self.clock.seconds()
        ids, then = _take_due(self._quiet, now)
        self._call = None if then is None else self.clock.callLater(then - now, self._announce)
        for id in ids:
            self.broadcast.event(Event(SERVER, None, codec.pending_payload(id, CONNECTING)))

    def _expire(self) -> None:
        """Connections elsewhere whose going never came (the channel lost it,
        or their node died): gone, for everyone who heard of them."""
        now = self.clock.seconds()
        ids, then = _take_due(self._elsewhere, now)
        self._expiry = None if then is None else self.clock.callLater(then - now, self._expire)
        for id in ids:
            self._gone(id, True)

    def stop(self) -> None:
        for call in (self._call, self._expiry):
            if call is not None and call.active():
                call.cancel()
        self._call = self._expiry = None
