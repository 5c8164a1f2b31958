"""What members show besides what they say: typing and away
(docs/protocol.md 19.6, 19.7). Neither is stored."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from chatproto import codec
from chatproto.core.broadcast import Broadcast, Event
from chatproto.core.connection import Connection, Session, logged_in
from chatproto.core.membership import Membership
from chatproto.core.peers import Peers
from chatproto.core.records import AwaySet, TypingSent
from chatproto.limits import Limits
from chatproto.rules import validate_away

#: TYPING true a session may send at once in one room before the interval
#: holds it back: two, so that typing again right after a message shows.
TYPING_BURST = 2.0


class Presence:
    """TYPING and AWAY."""

    def __init__(
        self, clock: IReactorTime, limits: Limits, broadcast: Broadcast, membership: Membership, peers: Peers
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.broadcast = broadcast
        self.membership = membership
        self.peers = peers

    def typing(self, connection: Connection, packet: codec.Typing) -> None:
        """TYPING to the room's version 2 members: ``typing`` true from a
        bucket of TYPING_BURST tokens per session and room, refilled one
        every ``typing_interval``; false only after a true that went out;
        the rest dropped, as redundant. Typing again right after a message
        shows, and a flood of true and false in turn reaches nobody."""
        session = logged_in(connection)
        room = self.membership.member_room(session, packet.room)
        now = self.clock.seconds()
        marks = session.typing
        tokens, stamp, started = (TYPING_BURST, now, False)
        if marks is not None:
            tokens, stamp, started = marks.get(room.key, (TYPING_BURST, now, False))
        tokens = min(TYPING_BURST, tokens + (now - stamp) / self.limits.typing_interval)
        on = packet.typing is not False
        if on:
            if tokens < 1:
                if marks is not None:
                    marks[room.key] = (tokens, now, started)
                return
            tokens -= 1
        elif not started:
            return
        if marks is None:
            marks = session.typing = {}
        marks[room.key] = (tokens, now, on)
        notice = codec.encode(codec.TypingNotice(room.name, session.nick, on))
        record = TypingSent(room.name, session.nick, on)
        self.broadcast.event(Event(room.key, None, notice, record=record))

    def away(self, connection: Connection, packet: codec.Away) -> None:
        """AWAY: the session away (with its message) or back, STATUS to the
        members of each of its rooms, DONE to the requester."""
        session = logged_in(connection)
        message = validate_away(packet.message) if packet.away else None
        session.away = message
        self.peers.save(session)  # a resume on another node keeps it
        for room in list(session.rooms.values()):
            room.refresh(session)
            status = codec.encode(codec.Status(room.name, session.nick, message))
            record = AwaySet(room.name, session.id, session.nick, message)
            self.broadcast.event(Event(room.key, None, status, record=record))
        connection.send(codec.Done("away" if packet.away else "back", session.nick, packet.ref))


def stopped(session: Session, room: str) -> None:
    """The session said something in ``room``: that says it stopped typing
    (no TYPING false needed); its tokens stay spent."""
    marks = session.typing
    if marks is not None and room in marks:
        tokens, stamp, _ = marks[room]
        marks[room] = (tokens, stamp, False)
