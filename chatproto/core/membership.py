"""Membership: the one owner of who is in which room.

Entering and leaving rooms, for JOIN, PART, kicks, bans, closed rooms,
dropped connections and other nodes' changes alike, goes through here: the
room's members change, the room's order gets the JOINED or LEFT (and the
record other nodes apply), read markers and an account's memory of the room
follow, and the observers hear of it. In a big room (docs/protocol.md 22)
a JOINED or LEFT names its followers, and the count goes by COUNT. Nothing
here decides whether a change is allowed: the requests (:mod:`chatproto.core.room_requests`,
:mod:`chatproto.core.moderation`) do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.accounts import AccountStore
from chatproto.backends.accounts import Membership as Remembered
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.assembly import Assembler
from chatproto.core.broadcast import Broadcast, Event
from chatproto.core.connection import Connection, Session
from chatproto.core.counts import Counts
from chatproto.core.following import Following
from chatproto.core.observers import Observers
from chatproto.core.peers import Peers
from chatproto.core.records import MemberJoined, MemberLeft
from chatproto.core.room_rules import RuleKeeper
from chatproto.core.rooms import ChatRoom, Directory
from chatproto.limits import Limits
from chatproto.rules import is_direct

#: Direct conversations an account comes back to at login, the latest
#: joined (docs/protocol.md 19.8); they don't count toward its rooms.
MAX_CONVERSATIONS = 100

log = Logger()


def stored(d: Deferred[Any], what: str, nick: str = "") -> None:
    """Log a store's failure to do ``what``: nothing waits for it."""
    d.addErrback(lambda f: log.failure("could not " + what, f, nick=nick))


class Membership:
    """Enters and takes sessions out of rooms, and tells whom it concerns."""

    def __init__(
        self,
        directory: Directory,
        broadcast: Broadcast,
        assembler: Assembler,
        store: AccountStore | None,
        peers: Peers,
        observers: Observers,
        keeper: RuleKeeper,
        limits: Limits,
        following: Following,
        counts: Counts,
    ) -> None:
        self.directory = directory
        self.broadcast = broadcast
        self.assembler = assembler
        self.store = store
        self.peers = peers
        self.observers = observers
        self.keeper = keeper
        self.limits = limits
        self.following = following  # who follows whom in big rooms
        self.counts = counts

    def member_room(self, session: Session, name: str | None) -> ChatRoom:
        """The room a request names (None: the default room) if the session
        is in it; bad_room, no_such_room or not_a_member."""
        room = self.directory.find(name)
        if session.rooms.get(room.key) is not room:
            raise ProtocolError(ErrorCode.NOT_A_MEMBER, f"you are not in {room.name!r}: join it first")
        return room

    # -- in --------------------------------------------------------------------------

    def _add(self, room: ChatRoom, member: Session) -> None:
        """``member`` is in ``room``. A room that just became big: its
        version 2 members knew every member, and go on hearing of them."""
        if room.add(member):
            keys = list(room.keys)
            for other in room.members.values():
                if other is member or other.connection is None or other.version < 2:
                    continue
                for device in other.devices:
                    if device.wire.lazy:
                        self.following.follow(device, room.key, keys)
        self.counts.changed(room)

    def _remove(self, room: ChatRoom, member: Session) -> None:
        room.remove(member)
        self.counts.changed(room)

    def enter(self, session: Session, room: ChatRoom) -> None:
        """Make ``session`` a member and tell the room's members."""
        self._add(room, session)
        session.marks.setdefault(room.key, room.last_seq)
        record = MemberJoined(room.name, session.id, session.nick, session.key, session.account)
        self.broadcast.event(self.joined(room, session, record))
        self.observers.notify("room_joined", session.id, nick=session.nick, room=room.name)

    def joined(self, room: ChatRoom, session: Session, record: MemberJoined | None = None) -> Event:
        """JOINED, telling version 2 whether the joiner runs the room (an
        account operator coming back, an admin), as its ROOM.members does."""
        op = True if room.rules.is_op(session) else None
        voice = True if room.rules.is_voiced(session) else None
        v2 = codec.encode(codec.Joined(session.id, session.nick, room.name, op, session.away, voice))
        v1 = codec.encode(codec.Joined(session.id, session.nick)) if room is self.directory.default else None
        return Event(room.key, v1, v2, record=record, followers=self._followers(room, session.key))

    def _followers(self, room: ChatRoom, key: str) -> frozenset[Connection] | None:
        """Who hears a member of a big room come or go (None: everyone)."""
        return self.following.followers(room.key, key) if room.big else None

    def remember(self, session: Session, room: ChatRoom) -> None:
        """An account's membership and read marker, for its next login."""
        if self.store is None or not session.account:
            return
        membership = Remembered(room.name, session.marks.get(room.key, room.last_seq))
        stored(
            self.store.remember(session.key, room.key, membership), "remember a room of {nick}", session.nick
        )

    def rejoin(self, memberships: list[Remembered], session: Session) -> Deferred[None]:
        """An account is back in the rooms it was in (as many as a session
        may be in), those the rules still let it enter."""
        rooms = []
        plain = [m for m in memberships if not is_direct(m.room)][: self.limits.rooms_per_connection]
        direct = [m for m in memberships if is_direct(m.room)][-MAX_CONVERSATIONS:]
        for membership in plain + direct:
            try:
                room = self.directory.remembered(membership.room)
            except ProtocolError:
                continue  # the server has no room for it now
            rooms.append((room, membership.read))

        def enter(_: object) -> None:
            for room, read in rooms:
                if session.rooms.get(room.key) is room or not session.devices:
                    continue
                if self.keeper.refusal(session, room, remembered=True) is not None:
                    self.forget(session, room)
                    self.directory.drop_if_empty(room)
                    continue
                session.marks[room.key] = read
                self.enter(session, room)

        waiting = [room.ready for room, _ in rooms if not room.ready.called]
        return gatherResults(waiting).addCallback(enter)

    # -- out -------------------------------------------------------------------------

    def exit(self, session: Session, room: ChatRoom, reason: str, message: str | None) -> None:
        """Take ``session`` out of ``room`` and tell the room's members."""
        self._remove(room, session)
        room.rules.guest_ops.discard(session.id)
        room.rules.guest_voices.discard(session.id)
        record = MemberLeft(room.name, session.id, session.nick, session.key, reason, message, room.permanent)
        self.broadcast.event(self.left(room, session, reason, message, record))
        self.observers.notify("room_left", session.id, nick=session.nick, reason=reason, room=room.name)
        self.drop_if_empty(room)

    def left(
        self,
        room: ChatRoom,
        member: Session,
        reason: str,
        message: str | None,
        record: MemberLeft | None = None,
    ) -> Event:
        id, nick = member.id, member.nick
        v2 = codec.encode(codec.Left(id, nick, reason, message, room.name))
        v1 = None
        if room is self.directory.default:
            # Version 1 has no PART: to it, leaving its one room is quitting.
            v1 = codec.encode(codec.Left(id, nick, "quit" if reason == "part" else reason, message))
        return Event(room.key, v1, v2, record=record, followers=self._followers(room, member.key))

    def remove(
        self,
        session: Session,
        room: ChatRoom,
        reason: str,
        message: str | None,
        requester: Connection | None = None,
        ref: str | None = None,
    ) -> None:
        """Out of the room, by PART or by an operator: the member's devices
        get everything said in the room before, then nothing more of it, and
        their own LEFT (the requester's with ``ref``) once the leave is
        recorded, so that what they ask next (a LIST on any node) sees it;
        the other members get LEFT. An account forgets the room."""
        self.broadcast.flush()  # what was said before reaches the leaver too
        devices = list(session.devices)

        def detach() -> None:
            for connection in devices:
                self.broadcast.remove(room.key, connection.id, connection)
                self.following.forget(connection, room.key)

        def told() -> None:
            for connection in devices:
                if connection.session is session:
                    own = ref if connection is requester else None
                    connection.send(codec.Left(session.id, session.nick, reason, message, room.name, own))

        self.broadcast.after_flushed(detach)
        self.exit(session, room, reason, message)
        self.broadcast.after_all(told)
        self.forget(session, room)

    def forget(self, session: Session, room: ChatRoom) -> None:
        """Put out of a room: its read marker goes, and an account's memory of it."""
        session.marks.pop(room.key, None)
        if session.account and self.store is not None:
            stored(self.store.forget(session.key, room.key), "forget a room of {nick}", session.nick)

    def drop_if_empty(self, room: ChatRoom) -> None:
        if self.directory.drop_if_empty(room):
            self.observers.notify("room_gone", 0, room=room.name)

    # -- other nodes' members --------------------------------------------------------

    def remote_joined(self, room: ChatRoom, record: MemberJoined) -> Event | None:
        """A member on another node entered ``room``."""
        if record.id in room.members:
            return None  # in the snapshot already
        member = self.peers.stand_in(record.id, record.nick, record.key, record.account)
        self._add(room, member)
        self.observers.notify("room_joined", member.id, nick=member.nick, room=room.name)
        return self.joined(room, member)

    def remote_left(
        self, room: ChatRoom, record: MemberLeft
    ) -> tuple[Event | None, Callable[[], None] | None]:
        """A member left ``room`` on another node, or one of ours was put out
        by another node: the Event to deliver, and what to do after it."""
        member = room.members.get(record.id)
        if member is None:
            return None, None
        event = self.left(room, member, record.reason, record.message)
        self._remove(room, member)
        room.rules.guest_ops.discard(member.id)
        room.rules.guest_voices.discard(member.id)
        self.observers.notify("room_left", member.id, nick=member.nick, reason=record.reason, room=room.name)
        then = None
        if member.connection is None:
            self.peers.forget(member)
        else:  # one of ours: its devices get this LEFT, then nothing more of the room
            self.forget(member, room)
            devices = list(member.devices)

            def then() -> None:
                for connection in devices:
                    self.broadcast.remove(room.key, connection.id, connection)
                    self.following.forget(connection, room.key)

        self.drop_if_empty(room)
        return event, then

    # -- sessions moving between nodes: no JOINED, no LEFT ------------------------------

    def seat(self, room: ChatRoom, member: Session) -> None:
        """A member elsewhere that the room's snapshot says is in it."""
        if member.id not in room.members:
            self._add(room, member)

    def unseat(self, room: ChatRoom) -> None:
        """The room is gone here: its members elsewhere are forgotten with it."""
        for member in list(room.members.values()):
            if member.connection is None:
                self._remove(room, member)
                self.peers.forget(member)

    def arrive(self, session: Session, room: ChatRoom) -> None:
        """A session resumed here from another node takes its stand-in's
        place in ``room`` (it never left it)."""
        stand_in = room.members.get(session.id)
        if stand_in is not None and stand_in is not session:
            room.remove(stand_in)
            self.peers.forget(stand_in)
        room.add(session)
        session.marks.setdefault(room.key, room.last_seq)

    def depart(self, session: Session, stand_in: Session) -> None:
        """A session of ours resumed on another node: ``stand_in`` takes its
        place in each of its rooms (it never left them)."""
        for room in list(session.rooms.values()):
            room.remove(session)
            room.add(stand_in)

    def clear(self) -> None:
        """Nobody is in any room any more: the server is shutting down."""
        for room in self.directory.rooms.values():
            room.members.clear()
            room.peers.clear()

    # -- what a member's devices receive -------------------------------------------------

    def when_ready(self, rooms: list[ChatRoom], call: Callable[[], None]) -> None:
        """``call`` after every batch flushed so far, once the rooms' topics
        and recent history are read (at once, for a log that answers at once)."""
        waiting = [room.ready for room in rooms if not room.ready.called]
        if not waiting:
            self.broadcast.after_flushed(call)
        else:
            gatherResults(waiting).addCallback(lambda _: self.broadcast.after_flushed(call))

    def send_room(
        self,
        session: Session,
        room: ChatRoom,
        ref: str | None,
        listen: bool = True,
        devices: list[Connection] | None = None,
        requester: Connection | None = None,
    ) -> None:
        """ROOM to a member's devices (the requester's with ``ref``), then
        (``listen``) the room's broadcasts from here on."""
        if session.rooms.get(room.key) is not room:
            return  # left the room while earlier broadcasts were stored
        shown: list[int] | None = None
        keys: list[str] = []
        for connection in list(session.devices) if devices is None else devices:
            if connection.session is not session:
                continue  # gone, or replaced
            own = ref if devices is not None or connection is requester else None
            if room.big and session.version >= 2 and connection.wire.lazy:
                if shown is None:
                    shown = self.assembler.shown(room, session, self.limits.members_shown)
                    keys = [room.members[id].key for id in shown]
                self.following.follow(connection, room.key, keys)
                payload = self.assembler.room_state(room, own, session, shown)
            else:
                payload = self.assembler.room_state(room, own, session)
            connection.outbox.deliver(connection.wire.frame(payload))
            if listen:
                self.broadcast.add(room.key, connection.id, connection, session.version)
