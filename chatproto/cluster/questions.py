"""Questions to other nodes through their inboxes, answered through ours.

A node asks with a note carrying its name and a number (ADMIN sessions'
:class:`~chatproto.core.records.SessionsAsked`, a login's
:class:`~chatproto.core.records.HandoverAsked`); each node asked answers with
a note naming that number. A node that has not answered within the
question's patience (dead and not yet reaped, or stalled) is left out
rather than waited for: the question fires with the answers that came.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends.streams import StreamStore

log = Logger()


@dataclass
class _Asking:
    what: str  # for the log
    waiting: set[str]  # nodes yet to answer
    done: Deferred[dict[str, Any]]
    timer: IDelayedCall | None = None
    answers: dict[str, Any] = field(default_factory=dict)


class Questions:
    """This node's questions to the others, and their answers as they come."""

    def __init__(self, store: StreamStore, clock: IReactorTime, patience: float = 2.0) -> None:
        self.store = store
        self.clock = clock
        self.patience = patience
        self._asks = 0
        self._asking: dict[int, _Asking] = {}

    def ask(
        self,
        nodes: Iterable[str],
        note: Callable[[int], dict[str, Any]],
        what: str,
        patience: float | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Send ``note(number)`` to each of ``nodes``; fires with the answers
        by node, those that came within ``patience`` (the default's if None)."""
        waiting = set(nodes)
        if not waiting:
            return succeed({})
        self._asks += 1
        ask = self._asks
        asking = self._asking[ask] = _Asking(what, waiting, Deferred())
        wait = self.patience if patience is None else patience
        asking.timer = self.clock.callLater(wait, self._finish, ask)
        sent = note(ask)
        for node in list(waiting):
            self.store.send(node, sent).addErrback(self._unsent, ask, node)
        return asking.done

    def _unsent(self, failure: Failure, ask: int, node: str) -> None:
        asking = self._asking.get(ask)
        what = asking.what if asking is not None else "a question"
        log.warn("could not ask node {node} for {what}: {error}", node=node, what=what, error=failure.value)
        self._gone(ask, node)

    def told(self, ask: int, node: str, answer: Any) -> None:
        """Node ``node``'s answer to question ``ask``."""
        asking = self._asking.get(ask)
        if asking is None or node not in asking.waiting:
            return  # too late, or twice
        asking.answers[node] = answer
        self._gone(ask, node)

    def _gone(self, ask: int, node: str) -> None:
        asking = self._asking.get(ask)
        if asking is not None:
            asking.waiting.discard(node)
            if not asking.waiting:
                self._finish(ask)

    def _finish(self, ask: int) -> None:
        asking = self._asking.pop(ask, None)
        if asking is None:
            return
        if asking.timer is not None and asking.timer.active():
            asking.timer.cancel()
        if asking.waiting:
            late = sorted(asking.waiting)
            log.warn("nodes {nodes} did not answer for {what} in time", nodes=late, what=asking.what)
        asking.done.callback(asking.answers)

    def stop(self) -> None:
        """The node stops: every question ends now with the answers it has."""
        for ask in list(self._asking):
            self._finish(ask)

    def answer(self, node: str, note: dict[str, Any], what: str) -> None:
        """Send node ``node`` our answer ``note``."""
        self.store.send(node, note).addErrback(self._unanswered, node, what)

    def _unanswered(self, failure: Failure, node: str, what: str) -> None:
        log.warn("could not answer node {node} {what}: {error}", node=node, what=what, error=failure.value)
