"""ADMIN sessions across a cluster: every node's lists, through the inboxes.

The asking node sends each live node a :class:`~chatproto.core.records.SessionsAsked`
and gathers their :class:`~chatproto.core.records.SessionsTold` answers;
a node that has not answered within ``patience`` (dead, not yet reaped) is
left out rather than waited for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends.streams import StreamStore
from chatproto.core.records import SessionsAsked, SessionsTold
from chatproto.core.registry import Listing

log = Logger()


@dataclass
class _Gathering:
    waiting: set[str]  # nodes yet to answer
    done: Deferred[Listing]
    timer: IDelayedCall | None = None
    listing: Listing = field(default_factory=lambda: ([], []))


class Listings:
    """Asks the other nodes for their lists and gathers the answers."""

    def __init__(self, store: StreamStore, clock: IReactorTime, patience: float = 2.0) -> None:
        self.store = store
        self.clock = clock
        self.patience = patience
        self._asks = 0
        self._gathering: dict[int, _Gathering] = {}

    def gather(self, me: str) -> Deferred[Listing]:
        """Every other live node's lists, as node ``me`` asks for them."""
        return self.store.nodes().addCallback(self._ask, me)

    def _ask(self, nodes: list[str], me: str) -> Deferred[Listing]:
        others = {node for node in nodes if node != me}
        if not others:
            return succeed(([], []))
        self._asks += 1
        ask = self._asks
        gathering = self._gathering[ask] = _Gathering(others, Deferred())
        gathering.timer = self.clock.callLater(self.patience, self._finish, ask)
        note = SessionsAsked(me, ask).to_json()
        for node in others:
            self.store.send(node, note).addErrback(self._unsent, ask, node)
        return gathering.done

    def _unsent(self, failure: Failure, ask: int, node: str) -> None:
        log.warn("could not ask node {node} for its sessions: {error}", node=node, error=failure.value)
        self._gone(ask, node)

    def told(self, note: SessionsTold) -> None:
        gathering = self._gathering.get(note.ask)
        if gathering is None or note.node not in gathering.waiting:
            return  # too late, or twice
        gathering.listing[0].extend(note.pending)
        gathering.listing[1].extend(note.connected)
        self._gone(note.ask, note.node)

    def _gone(self, ask: int, node: str) -> None:
        gathering = self._gathering.get(ask)
        if gathering is not None:
            gathering.waiting.discard(node)
            if not gathering.waiting:
                self._finish(ask)

    def _finish(self, ask: int) -> None:
        gathering = self._gathering.pop(ask, None)
        if gathering is None:
            return
        if gathering.timer is not None and gathering.timer.active():
            gathering.timer.cancel()
        if gathering.waiting:
            log.warn("nodes {nodes} did not list their sessions in time", nodes=sorted(gathering.waiting))
        gathering.done.callback(gathering.listing)

    def stop(self) -> None:
        """The node stops: every gathering ends now with what it has."""
        for ask in list(self._gathering):
            self._finish(ask)

    def answer(self, asked: SessionsAsked, me: str, listing: Listing) -> None:
        told = SessionsTold(me, asked.ask, listing[0], listing[1])
        self.store.send(asked.node, told.to_json()).addErrback(
            lambda f: log.warn(
                "could not list sessions for node {node}: {error}", node=asked.node, error=f.value
            )
        )
