"""A member's requests about rooms: JOIN, PART, TOPIC, LIST and MARK.

Each checks what it must (docs/protocol.md gives the order) and leaves the
change itself to :class:`~chatproto.core.membership.Membership` and the
rooms' :class:`~chatproto.core.room_rules.RuleKeeper`.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.eventlog import EventLog, Topic
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.broadcast import Broadcast, Event
from chatproto.core.connection import Connection, Session, logged_in
from chatproto.core.membership import Membership
from chatproto.core.observers import Observers
from chatproto.core.peers import Peers
from chatproto.core.records import TopicSet
from chatproto.core.room_rules import RuleKeeper
from chatproto.core.rooms import ChatRoom, Directory
from chatproto.limits import Limits
from chatproto.rules import clean_reason, is_direct, room_key, validate_topic

log = Logger()


class RoomRequests:
    """JOIN, PART, TOPIC, LIST and MARK."""

    def __init__(
        self,
        clock: IReactorTime,
        limits: Limits,
        eventlog: EventLog,
        directory: Directory,
        broadcast: Broadcast,
        membership: Membership,
        keeper: RuleKeeper,
        peers: Peers,
        observers: Observers,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.eventlog = eventlog
        self.directory = directory
        self.broadcast = broadcast
        self.membership = membership
        self.keeper = keeper
        self.peers = peers
        self.observers = observers

    def join(self, connection: Connection, packet: codec.Join) -> None:
        """JOIN: ROOM to the joiner (with the JOIN's ref) and its other
        devices, JOINED to the members."""
        session = logged_in(connection)
        key = self.directory.key_of(packet.room)
        room = session.rooms.get(key)
        if room is None and is_direct(packet.room):
            raise ProtocolError(ErrorCode.BAD_ROOM, "a direct conversation is opened with OPEN, not joined")
        if room is not None:  # already in: its state again, nothing announced
            joined = room
            self.broadcast.after_all(
                lambda: self.membership.send_room(
                    session, joined, packet.ref, listen=False, devices=[connection]
                )
            )
            return
        count = sum(1 for room in session.rooms.values() if not room.direct)
        if count >= self.limits.rooms_per_connection:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"you are in {count} rooms, the limit is {self.limits.rooms_per_connection}: part one first",
            )
        room = self.directory.get_or_create(packet.room)
        if room.ready.called:
            self._join_ready(connection, session, room, packet.ref, packet.key)
            return
        new = room

        def ready(_: object) -> None:
            try:
                self._join_ready(connection, session, new, packet.ref, packet.key)
            except ProtocolError as e:
                if connection.session is session:
                    connection.send(codec.Error(e.code, e.message, packet.ref))

        room.ready.addCallback(ready)

    def _join_ready(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        ref: str | None,
        key: str | None = None,
    ) -> None:
        if connection.session is not session or session.rooms.get(room.key) is room:
            return
        refusal = self.keeper.refusal(session, room, key=key)
        if refusal is not None:
            self.directory.drop_if_empty(room)
            raise refusal
        self.keeper.claim(session, room)
        self.membership.enter(session, room)
        self.membership.remember(session, room)
        self.membership.when_ready(
            [room], lambda: self.membership.send_room(session, room, ref, requester=connection)
        )

    def part(self, connection: Connection, packet: codec.Part) -> None:
        """PART: LEFT ``part`` to the members, and to the leaver with its ref
        once it has had everything said in the room before."""
        session = logged_in(connection)
        room = self.membership.member_room(session, packet.room)
        message = clean_reason(packet.reason, self.limits.max_text)
        self.membership.remove(session, room, "part", message, connection, packet.ref)

    def set_topic(self, connection: Connection, packet: codec.SetTopic) -> None:
        session = logged_in(connection)
        room = self.membership.member_room(session, packet.room)
        if room.rules.topic_lock and not room.rules.is_op(session):  # who may, before what
            raise ProtocolError(ErrorCode.TOPIC_LOCKED, f"only operators may set {room.name!r}'s topic")
        text = validate_topic(packet.topic, self.limits.topic_length)
        now = self.clock.seconds()
        room.topic = Topic(text, session.nick, now) if text else None
        if room.permanent:
            d = self.eventlog.set_topic(room.key, room.topic)
            d.addErrback(lambda f: log.failure("could not store room {room}'s topic", f, room=room.name))
        elif room.rules.kept:  # kept with its rules, as long as they are
            self.keeper.keep(room)
        changed = codec.TopicChanged(room.name, text, session.nick, now)
        own = codec.TopicChanged(room.name, text, session.nick, now, packet.ref)
        record = TopicSet(room.name, text, session.nick, now)
        event = Event(room.key, None, codec.encode(changed), connection, codec.encode(own), record)
        self.broadcast.event(event)
        self.observers.notify("topic", session.id, nick=session.nick, room=room.name, reason=text)

    def list_rooms(self, connection: Connection, packet: codec.ListRooms) -> Deferred[None]:
        """LIST: the rooms there are, here and on any other node, but secret
        ones only to their members and to admins."""

        def answer(rooms_json: str) -> None:
            session = connection.session
            if session is not None:
                hidden = self.hidden_from(session)
                if hidden:
                    rooms = json.loads(rooms_json)
                    rooms_json = codec.dumps([r for r in rooms if room_key(r["room"]) not in hidden])
                payload = codec.room_list_payload(rooms_json, packet.ref)
                connection.outbox.deliver(connection.wire.frame(payload))

        return self.peers.listing(self.directory).addCallback(answer)

    def hidden_from(self, session: Session) -> set[str]:
        """The keys of the secret rooms ``session`` is not in (none for an admin)."""
        if session.admin:
            return set()
        return {
            key
            for key, room in self.directory.rooms.items()
            if room.rules.secret and session.rooms.get(key) is not room
        }

    def mark(self, connection: Connection, packet: codec.Mark) -> None:
        """MARK: the read marker moves forward (never back), on every device."""
        session = logged_in(connection)
        room = self.membership.member_room(session, packet.room)
        seq = max(0, min(packet.seq, room.last_seq))
        if seq > session.marks.get(room.key, 0):
            session.marks[room.key] = seq
            self.membership.remember(session, room)
        seq = session.marks.get(room.key, 0)
        unread = max(0, room.last_seq - seq)
        for device in session.devices:
            device.send(codec.Marked(room.name, seq, unread, packet.ref if device is connection else None))
