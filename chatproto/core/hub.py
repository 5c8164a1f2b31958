"""The hub: what transports call, tying the registry, the rooms, the ordered
broadcast and the event log together.

A transport hands the hub parsed requests (``accept``, ``login``, ``join``,
``part``, ``say``, ``whisper``, ``history``, ``leave``...) and the hub
answers through the :class:`~chatproto.core.connection.Connection`
interface. Whispers, history replies, WELCOME and ROOM wait for everything
broadcast before them (:meth:`Broadcast.after_all`), which is what keeps
each room's total order without a queue per connection.

A version 1 session is in the default room from login to leaving, and sees
it as version 1's one room: its packets carry no room, and it gets nothing
of other rooms.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter

from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.eventlog import Draft, EventLog, Topic
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.assembly import Assembler
from chatproto.core.broadcast import SERVER, Broadcast, Event, Said
from chatproto.core.connection import Connection, HubEvent, Session
from chatproto.core.registry import Registry
from chatproto.core.rooms import ChatRoom, Directory
from chatproto.core.timers import Timers
from chatproto.limits import DEFAULTS, Limits
from chatproto.metrics import Counters
from chatproto.rules import (
    DEFAULT_ROOM,
    clean_reason,
    normalise_nick,
    room_key,
    validate_text,
    validate_topic,
)

log = Logger()

#: How long a shutdown waits for peers to read their BYE before aborting them.
SHUTDOWN_GRACE = 5.0


def _both(packet) -> Event:
    """A server-wide item every version gets alike."""
    payload = codec.encode(packet)
    return Event(SERVER, payload, payload)


class Hub:
    def __init__(
        self,
        eventlog: EventLog,
        clock: IReactorTime,
        limits: Limits = DEFAULTS,
        name: str = "chat",
        motd: str = "",
        default_room: str = DEFAULT_ROOM,
        rooms: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.eventlog = eventlog
        self.clock = clock
        self.limits = limits
        self.name = name
        self.observers: list[Callable[[HubEvent], None]] = []
        self.timers = Timers(clock)  # every connection's deadlines
        self.registry = Registry(limits.max_clients)
        self.directory = Directory(eventlog, limits, default_room, list(rooms))
        self.assembler = Assembler(
            limits.max_frame, name, motd, {v: limits.as_wire(v) for v in codec.VERSIONS}
        )
        self.counters = Counters()  # for /metrics (chatproto.metrics)
        self.broadcast = Broadcast(
            clock, eventlog, self._remember, self._refused, self._handle_overflow, self.counters
        )
        self._overflowed: list[Connection] = []
        # One bound method for every outbox to hold, not one per connection.
        self.overflowed = self.overflowed

    # -- views for the console and tests ----------------------------------------

    @property
    def pending(self) -> list[Connection]:
        return list(self.registry.pending.values())

    @property
    def sessions(self) -> list[Session]:
        return list(self.registry.sessions.values())

    @property
    def rooms(self) -> list[ChatRoom]:
        return list(self.directory.rooms.values())

    @property
    def default_room(self) -> ChatRoom:
        return self.directory.default

    def session_for(self, nick: str) -> Session | None:
        return self.registry.find(nick)

    def room_for(self, name: str) -> ChatRoom | None:
        return self.directory.rooms.get(room_key(name))

    def _notify(self, kind: str, id: int, **fields) -> None:
        event = HubEvent(kind, id, **fields)
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                log.failure("hub observer failed on {event}", event=event)

    # -- connection lifecycle -----------------------------------------------------

    def accept(self, connection: Connection) -> bool:
        """Register a new connection as pending; False if the server is full."""
        if not self.registry.admit(connection):
            log.warn(
                "refused {address}: server full ({count} connections)",
                address=connection.address,
                count=len(self.registry.open),
            )
            return False
        self.broadcast.event(_both(codec.Pending(connection.id, "connecting")))
        self._notify("pending", connection.id, address=connection.address, since=connection.opened)
        return True

    def login(self, connection: Connection, packet: codec.Login) -> Session:
        """LOGIN: a new session, or a resumed one; ProtocolError if refused."""
        if packet.proto not in codec.VERSIONS:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"this server speaks protocol versions {codec.VERSIONS}, not {packet.proto}",
            )
        nick, key, held = self.registry.claim(packet.nick, packet.resume)
        now = self.clock.seconds()
        if held is not None:
            if held.version != packet.proto:
                raise ProtocolError(
                    ErrorCode.NICK_TAKEN,
                    f"nick {held.nick!r} is held by a protocol {held.version} session: "
                    "resume with that version",
                )
            return self._resume(connection, held, now)
        session = self.registry.register(connection, nick, key, now)
        session.version = packet.proto
        gone = codec.encode(codec.Pending(connection.id, "gone"))
        if session.version == 1:
            # Version 1 sees a login as JOINED in its one room.
            self.broadcast.event(Event(SERVER, None, gone))
            self._enter(session, self.directory.default)
        else:
            self.broadcast.event(Event(SERVER, gone, gone))
        self._start(session)
        log.info(
            "{nick} logged in as {id} (protocol {version}) from {address}",
            nick=nick,
            id=session.id,
            version=session.version,
            address=connection.address,
        )
        self._notify("joined", session.id, nick=nick, address=connection.address, since=now)
        return session

    def _resume(self, connection: Connection, session: Session, now: float) -> Session:
        self._stop_receiving(session)
        old = self.registry.take_over(connection, session, now)
        old.disconnect("replaced")
        self.counters.disconnects["replaced"] += 1
        self.broadcast.event(_both(codec.Pending(connection.id, "gone")))
        self._notify("pending_gone", connection.id, reason="resumed")
        self._start(session)
        log.info(
            "{nick} ({id}) resumed from {address}",
            nick=session.nick,
            id=session.id,
            address=connection.address,
        )
        self._notify("resumed", session.id, nick=session.nick, address=connection.address, since=now)
        return session

    def _start(self, session: Session) -> None:
        """WELCOME, then (version 2) a ROOM for each room the session is in,
        then broadcasts from this point of each one's order on."""
        rooms = list(session.rooms.values())

        def welcome() -> None:
            connection = session.connection
            if connection.session is not session:
                return  # gone (or replaced) while earlier broadcasts were stored
            payload = self.assembler.welcome(
                session.version,
                session.nick,
                session.id,
                session.token,
                list(self.registry.pending),
                self.directory.default,
                [room.name for room in rooms],
            )
            connection.deliver(connection.wire.frame(payload))
            self.broadcast.add(SERVER, session.id, connection, session.version)
            for room in rooms:
                if session.version == 1:
                    self.broadcast.add(room.key, session.id, connection, 1)
                else:
                    self._send_room(session, room, None)

        self._when_ready(rooms, welcome)

    def _when_ready(self, rooms: list[ChatRoom], call: Callable[[], None]) -> None:
        """``call`` after every batch flushed so far, once the rooms' topics
        and recent history are read (at once, for a log that answers at once)."""
        waiting = [room.ready for room in rooms if not room.ready.called]
        if not waiting:
            self.broadcast.after_flushed(call)
        else:
            gatherResults(waiting).addCallback(lambda _: self.broadcast.after_flushed(call))

    def _send_room(self, session: Session, room: ChatRoom, ref: str | None, listen: bool = True) -> None:
        """ROOM to a member, then (``listen``) the room's broadcasts from here on."""
        connection = session.connection
        if connection.session is not session or session.rooms.get(room.key) is not room:
            return  # gone, or left the room, while earlier broadcasts were stored
        connection.deliver(connection.wire.frame(self.assembler.room_state(room, ref)))
        if listen:
            self.broadcast.add(room.key, session.id, connection, session.version)

    def _stop_receiving(self, session: Session) -> None:
        self.broadcast.remove(SERVER, session.id, session.connection)
        for key in session.rooms:
            self.broadcast.remove(key, session.id, session.connection)

    def leave(self, connection: Connection, reason: str, message: str | None = None) -> None:
        """The connection is gone or going: announce it once in each of its
        rooms, forget it."""
        gone = self.registry.remove(connection)
        if gone:
            self.counters.disconnects[reason] += 1
        if isinstance(gone, Session):
            self._stop_receiving(gone)
            message = clean_reason(message, self.limits.max_text)
            for room in list(gone.rooms.values()):
                self._exit(gone, room, reason, message)
            log.info("{nick} ({id}) left: {reason}", nick=gone.nick, id=gone.id, reason=reason)
            self._notify("left", gone.id, nick=gone.nick, reason=reason)
        elif gone:
            self.broadcast.event(_both(codec.Pending(connection.id, "gone")))
            self._notify("pending_gone", connection.id, reason=reason)

    def kick(self, id: int) -> bool:
        """Disconnect a connected session or a pending connection by id."""
        session = self.registry.sessions.get(id)
        connection = session.connection if session is not None else self.registry.pending.get(id)
        if connection is None:
            return False
        self.leave(connection, "kicked")
        connection.disconnect("kicked")
        return True

    # -- rooms --------------------------------------------------------------------

    def _enter(self, session: Session, room: ChatRoom) -> None:
        """Make ``session`` a member and tell the room's members."""
        room.add(session)
        v2 = codec.encode(codec.Joined(session.id, session.nick, room.name))
        v1 = codec.encode(codec.Joined(session.id, session.nick)) if room is self.directory.default else None
        self.broadcast.event(Event(room.key, v1, v2))
        self._notify("room_joined", session.id, nick=session.nick, room=room.name)

    def _exit(self, session: Session, room: ChatRoom, reason: str, message: str | None) -> None:
        """Take ``session`` out of ``room`` and tell the room's members."""
        room.remove(session)
        v2 = codec.encode(codec.Left(session.id, session.nick, reason, message, room.name))
        v1 = None
        if room is self.directory.default:
            # Version 1 has no PART: to it, leaving its one room is quitting.
            v1 = codec.encode(
                codec.Left(session.id, session.nick, "quit" if reason == "part" else reason, message)
            )
        self.broadcast.event(Event(room.key, v1, v2))
        self._notify("room_left", session.id, nick=session.nick, reason=reason, room=room.name)
        if self.directory.drop_if_empty(room):
            self._notify("room_gone", 0, room=room.name)

    def join(self, session: Session, packet: codec.Join) -> None:
        """JOIN: ROOM to the joiner (with the JOIN's ref), JOINED to the members."""
        key = self.directory.key_of(packet.room)
        room = session.rooms.get(key)
        if room is not None:  # already in: its state again, nothing announced
            self.broadcast.after_all(lambda: self._send_room(session, room, packet.ref, listen=False))
            return
        if len(session.rooms) >= self.limits.rooms_per_connection:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"you are in {len(session.rooms)} rooms, the limit is "
                f"{self.limits.rooms_per_connection}: part one first",
            )
        room = self.directory.get_or_create(packet.room)
        self._enter(session, room)
        self._when_ready([room], lambda: self._send_room(session, room, packet.ref))

    def part(self, session: Session, packet: codec.Part) -> None:
        """PART: LEFT ``part`` to the members, and to the leaver with its ref
        once it has had everything said in the room before."""
        room = self._member_room(session, packet.room)
        connection = session.connection
        message = clean_reason(packet.reason, self.limits.max_text)
        self.broadcast.flush()  # what was said before reaches the leaver too

        def gone() -> None:
            self.broadcast.remove(room.key, session.id, connection)
            if connection.session is session:
                connection.send(codec.Left(session.id, session.nick, "part", message, room.name, packet.ref))

        self.broadcast.after_flushed(gone)
        self._exit(session, room, "part", message)

    def set_topic(self, session: Session, packet: codec.SetTopic) -> None:
        room = self._member_room(session, packet.room)
        text = validate_topic(packet.topic, self.limits.topic_length)
        now = self.clock.seconds()
        room.topic = Topic(text, session.nick, now) if text else None
        if room.permanent:
            d = self.eventlog.set_topic(room.key, room.topic)
            d.addErrback(lambda f: log.failure("could not store room {room}'s topic", f, room=room.name))
        changed = codec.TopicChanged(room.name, text, session.nick, now)
        own = codec.TopicChanged(room.name, text, session.nick, now, packet.ref)
        self.broadcast.event(
            Event(room.key, None, codec.encode(changed), session.connection, codec.encode(own))
        )
        self._notify("topic", session.id, nick=session.nick, room=room.name, reason=text)

    def list_rooms(self, session: Session, packet: codec.ListRooms) -> None:
        session.connection.send(codec.RoomList(self.directory.listing(), packet.ref))

    def _member_room(self, session: Session, name: str | None) -> ChatRoom:
        """The room a request names (None: the default room) if the session
        is in it; bad_room, no_such_room or not_a_member."""
        room = self.directory.find(name)
        if session.rooms.get(room.key) is not room:
            raise ProtocolError(ErrorCode.NOT_A_MEMBER, f"you are not in {room.name!r}: join it first")
        return room

    # -- chat -------------------------------------------------------------------

    def say(self, session: Session, text: str, ref: str | None, room: str | None = None) -> None:
        # version 1 is always in the default room: no lookup for it
        target = self.directory.default if session.version == 1 else self._member_room(session, room)
        validate_text(text, self.limits.max_text)
        draft = Draft(self.clock.seconds(), session.nick, text, target.key)
        self.broadcast.message(draft, target.name, session.connection, ref)

    def whisper(self, session: Session, packet: codec.Whisper) -> None:
        validate_text(packet.text, self.limits.max_text)
        normalise_nick(packet.to)  # a malformed name is bad_nick, not no_such_nick
        target = self.registry.find(packet.to)
        if target is None:
            raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody here is called {packet.to!r}")
        private = codec.Private(self.clock.seconds(), session.nick, target.nick, packet.text)

        def send() -> None:
            if target is not session and target.connection.session is target:
                target.connection.send(private)
            if session.connection.session is session:
                session.connection.send(
                    codec.Private(private.ts, private.sender, private.to, private.text, packet.ref)
                )
            self._handle_overflow()

        self.broadcast.after_all(send)

    def history(self, session: Session, request: codec.HistoryRequest) -> Deferred[codec.HistoryPage]:
        """A HISTORY page of one of the session's rooms, after everything
        broadcast before the request."""
        if request.before is not None and request.after is not None:
            raise ProtocolError(ErrorCode.BAD_PACKET, "give either 'before' or 'after', not both")
        room = self._member_room(session, request.room)
        named = room.name if session.version >= 2 else None
        limit = min(max(request.limit if request.limit is not None else 50, 1), self.limits.history_page)
        answer: Deferred[codec.HistoryPage] = Deferred()

        def read() -> None:
            started = perf_counter()
            if request.after is not None:
                d, keep = self.eventlog.after(request.after, limit, room.key), "oldest"
            else:
                d, keep = self.eventlog.before(request.before, limit, room.key), "newest"
            d.addCallback(self._timed_read, started)
            d.addCallback(lambda page: self.assembler.page(*page, keep=keep, room=named))
            d.chainDeferred(answer)

        self.broadcast.after_all(read)
        return answer

    def _timed_read(self, page, started: float):
        self.counters.store["read"].observe(perf_counter() - started)
        return page

    def flush(self) -> None:
        """End the turn now: store the batch, then write it to every recipient."""
        self.broadcast.flush()

    def _remember(self, stored: list[Said]) -> None:
        """Messages just stored: each room keeps its newest for its next joiner."""
        rooms = self.directory.rooms
        for item in stored:
            room = rooms.get(item.channel)
            if room is not None:
                room.recent.append((item.message, item.json))

    def _refused(self, said: list[Said], failure: Failure) -> None:
        """The log could not store a batch: nobody sees it, the senders are told."""
        log.error(
            "history store failed, {count} messages refused: {error}", count=len(said), error=failure.value
        )
        self._notify("error", 0, reason=str(failure.value))
        for item in said:
            if item.sender.session is not None:
                item.sender.send(
                    codec.Error(ErrorCode.INTERNAL, "the server could not store your message", item.ref)
                )

    def overflowed(self, connection: Connection) -> None:
        """A connection's output passed sendq; handled once the write loop ends."""
        self._overflowed.append(connection)

    def _handle_overflow(self) -> None:
        while self._overflowed:
            connection = self._overflowed.pop()
            log.warn("{id} is not reading: disconnected as slow consumer", id=connection.id)
            self.leave(connection, "slow_consumer")
            connection.disconnect("slow_consumer", flush=False)

    # -- shutdown -----------------------------------------------------------------

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> Deferred:
        """BYE server_shutdown to everyone, after storing what was said; fires
        when every connection is closed (or ``grace`` has passed)."""
        self.flush()
        self.broadcast.clear()
        for room in self.directory.rooms.values():
            room.members.clear()
            room.peers.clear()
        connections = self.registry.clear()
        self.counters.disconnects["server_shutdown"] += len(connections)
        closing = [connection.closed() for connection in connections]
        for connection in connections:
            connection.disconnect("server_shutdown")
        log.info("shutting down: {count} connections closed", count=len(connections))
        done = DeferredList(closing, consumeErrors=True)

        def abort_stragglers() -> None:
            for connection in connections:  # peers that didn't read their BYE in time
                connection.abort()

        timer = self.clock.callLater(grace, abort_stragglers)
        done.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return done.addBoth(lambda _: None)

    def close(self) -> None:
        self.eventlog.close()
