"""Waiting for a condition on the real reactor, bounded in time."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

TIMEOUT = 10.0


def until(condition, timeout: float = TIMEOUT, every: float = 0.01) -> Deferred:
    """Fires once ``condition()`` is true: for state that has no signal of its own."""
    from twisted.internet import reactor

    d: Deferred = Deferred()

    def check():
        if condition() and not d.called:
            loop.stop()
            d.callback(None)

    loop = LoopingCall(check)
    loop.clock = reactor
    loop.start(every).addErrback(lambda failure: d.called or d.errback(failure))

    def give_up(failure):
        if loop.running:
            loop.stop()
        return failure

    return d.addTimeout(timeout, reactor).addErrback(give_up)
