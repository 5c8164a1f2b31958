"""PENDING: which connections still logging in each session hears of.

PENDING is server-wide, so in a login storm it is per-login work for every
session. On a busy server (docs/protocol.md 22.8) version 2 hears of a
connection only once it has been pending for ``QUIET`` seconds, and of its
going only if it heard of its coming: the connections that log in at once
cost the others nothing. Version 1 hears of every one at once, as it always
has.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatproto import codec
from chatproto.core.broadcast import COALESCE_AT, SERVER, Broadcast, Event

#: How long a connection is pending before version 2 hears of it, on a busy server.
QUIET = 1.0


def _payload(id: int, state: str) -> bytes:
    return codec.encode(codec.Pending(id, state))


class PendingNews:
    """Announces pending connections; remembers those version 2 has not
    heard of yet (a busy server's), in the order they came, which is the
    order they fall due."""

    def __init__(self, clock: IReactorTime, broadcast: Broadcast) -> None:
        self.clock = clock
        self.broadcast = broadcast
        self._quiet: dict[int, float] = {}  # connection id -> when version 2 hears of it
        self._call: IDelayedCall | None = None

    def connecting(self, id: int) -> None:
        payload = _payload(id, "connecting")
        if self.broadcast.sessions() < COALESCE_AT:
            self.broadcast.event(Event(SERVER, payload, payload))
            return
        self.broadcast.event(Event(SERVER, payload, None))
        self._quiet[id] = self.clock.seconds() + QUIET
        if self._call is None:
            self._call = self.clock.callLater(QUIET, self._announce)

    def gone(self, id: int, v1: bool = True) -> None:
        """Connection ``id`` is pending no more (logged in, resumed, or
        closed); ``v1``: version 1 hears of it as a PENDING (not when it
        sees the login as a JOINED)."""
        heard = self._quiet.pop(id, None) is None
        if not (v1 or heard):
            return
        payload = _payload(id, "gone")
        self.broadcast.event(Event(SERVER, payload if v1 else None, payload if heard else None))

    def heard(self, ids: list[int]) -> list[int]:
        """Of the pending connections ``ids``, those version 2 has heard of
        (what its WELCOME lists)."""
        return [id for id in ids if id not in self._quiet] if self._quiet else ids

    def _announce(self) -> None:
        self._call = None
        now = self.clock.seconds()
        while self._quiet:
            id, due = next(iter(self._quiet.items()))
            if due > now:
                self._call = self.clock.callLater(due - now, self._announce)
                return
            del self._quiet[id]
            self.broadcast.event(Event(SERVER, None, _payload(id, "connecting")))

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
