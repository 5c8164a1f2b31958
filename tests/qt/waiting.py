"""Deferreds for Qt signals and model conditions, bounded in time."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from tests.waiting import TIMEOUT, until

__all__ = ["TIMEOUT", "member_of", "signal_fired", "until"]


def signal_fired(signal, predicate=lambda *args: True, timeout: float = TIMEOUT) -> Deferred:
    """Fires with the arguments of the first emission that matches. Connect
    before doing what makes it fire."""
    from twisted.internet import reactor

    d: Deferred = Deferred()

    def slot(*args):
        if not d.called and predicate(*args):
            signal.disconnect(slot)
            # On the next turn: the test resumes after every slot has run.
            reactor.callLater(0, lambda: d.called or d.callback(args))

    signal.connect(slot)
    return d.addTimeout(timeout, reactor)


def member_of(session, room: str, *key: str) -> Deferred:
    """``session`` joins ``room`` (with its key, if given); fires with the
    roomJoined arguments once the server has let it in."""
    arrived = signal_fired(session.roomJoined, lambda state, reset: state.room == room)
    session.join(room, *key)
    return arrived
