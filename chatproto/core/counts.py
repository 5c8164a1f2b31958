"""COUNT: a big room's member count, to its version 2 members, coalesced.

In a big room (docs/protocol.md 22) members hear JOINED and LEFT only of
those they follow, so the count travels on its own: at most one COUNT per
``count_interval`` per room (and per ``SPREAD`` members: each COUNT is a
write to every member), in the room's order, carrying the count when it
goes; none if the count is back where the last one said.
"""

from __future__ import annotations

import math

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatproto import codec
from chatproto.core.broadcast import Broadcast, Event
from chatproto.core.rooms import ChatRoom, Directory

#: A room's COUNTs go at most once per ``count_interval`` for every this
#: many members (docs/protocol.md 22.5).
SPREAD = 5000


class Counts:
    """Each big room's last COUNT, and the one due."""

    def __init__(
        self, clock: IReactorTime, interval: float, broadcast: Broadcast, directory: Directory
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.broadcast = broadcast
        self.directory = directory
        self._due: dict[str, IDelayedCall] = {}  # room key -> its COUNT's call

    def changed(self, room: ChatRoom) -> None:
        """``room``'s member count changed: a COUNT goes as soon as the
        interval since the last one allows."""
        if not room.big or room.key in self._due:
            return
        interval = self.interval * max(1, math.ceil(len(room.members) / SPREAD))
        wait = max(0.0, room.counted_at + interval - self.clock.seconds())
        self._due[room.key] = self.clock.callLater(wait, self._send, room)

    def _send(self, room: ChatRoom) -> None:
        del self._due[room.key]
        if self.directory.rooms.get(room.key) is not room:
            return  # gone meanwhile
        count = len(room.members)
        if count == room.counted:
            return
        room.counted, room.counted_at = count, self.clock.seconds()
        self.broadcast.event(Event(room.key, None, codec.encode(codec.Count(room.name, count))))

    def stop(self) -> None:
        """No more COUNTs: the server is shutting down."""
        for call in self._due.values():
            if call.active():
                call.cancel()
        self._due.clear()
