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

from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.accounts import AccountRecord, AccountStore, Membership
from chatproto.backends.eventlog import Draft, EventLog, Topic
from chatproto.codec import ErrorCode, ProtocolError, required
from chatproto.core.accounts import Accounts, AddressGate, exempt
from chatproto.core.assembly import Assembler
from chatproto.core.broadcast import SERVER, Broadcast, Event, Said
from chatproto.core.connection import Connection, HubEvent, Session
from chatproto.core.registry import Registry
from chatproto.core.rooms import ChatRoom, Directory, RoomRules
from chatproto.core.timers import Timers
from chatproto.limits import DEFAULTS, Limits
from chatproto.metrics import Counters
from chatproto.passwords import Hasher
from chatproto.rules import (
    DEFAULT_ROOM,
    clean_reason,
    nick_key,
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
        store: AccountStore | None = None,
        hasher: Hasher | None = None,
        admins: tuple[str, ...] | list[str] = (),
    ) -> None:
        from chatproto.core.moderation import Moderation

        self.eventlog = eventlog
        self.clock = clock
        self.limits = limits
        self.name = name
        self.observers: list[Callable[[HubEvent], None]] = []
        self.timers = Timers(clock)  # every connection's deadlines
        self.registry = Registry(limits.max_clients)
        self.gate = AddressGate(clock, limits)
        self.store = store
        self.accounts: Accounts | None = None
        if store is not None:
            names = [normalise_nick(admin) for admin in admins]
            self.accounts = Accounts(store, hasher or Hasher.for_reactor(clock), clock, limits, names)
            self.accounts.load_bans(self.gate).addErrback(
                lambda f: log.failure("could not read the server's bans", f)
            )
            self.accounts.ensure_admins().addErrback(
                lambda f: log.failure("could not check the admins' accounts", f)
            )
        self.moderation = Moderation(self)
        self.directory = Directory(eventlog, limits, default_room, list(rooms), store)
        self.assembler = Assembler(
            limits.max_frame, name, motd, {v: limits.as_wire(v) for v in codec.VERSIONS}
        )
        self.counters = Counters()  # for /metrics (chatproto.metrics)
        self.broadcast = Broadcast(
            clock, eventlog, self._remember, self._refused, self._handle_overflow, self.counters
        )
        self._overflowed: list[Connection] = []
        self._overflow_call: IDelayedCall | None = None
        self.cluster = None  # the node's Cluster, when it is one of several (chatproto.core.cluster)
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

    def accept(self, connection: Connection, reserved: bool = False) -> str | None:
        """Register a new connection as pending; or the BYE reason it is
        refused with (server_full, too_many_connections, banned).
        ``reserved``: its place was held for it (:meth:`reserve`) when its
        HTTP connection was accepted, and passes to it."""
        if not reserved:
            refused = self.gate.refuse(connection.host)
            if refused is not None:
                log.info("refused {address}: {reason}", address=connection.address, reason=refused)
                return refused
        if not self.registry.admit(connection, reserved):
            log.warn(
                "refused {address}: server full ({count} connections)",
                address=connection.address,
                count=len(self.registry.open) + self.registry.reserved,
            )
            return "server_full"
        if not reserved:
            self.gate.opened(connection.host)
        self.broadcast.event(_both(codec.Pending(connection.id, "connecting")))
        self._notify("pending", connection.id, address=connection.address, since=connection.opened)
        return None

    def reserve(self, host: str, address: str) -> str | None:
        """Hold a place for a connection that is no chat connection yet (an
        HTTP request before its WebSocket upgrade): counted in ``max_clients``
        and ``max_per_address`` from its accept, as a chat connection is, but
        not announced. None, or the reason it is refused with."""
        refused = self.gate.refuse(host)
        if refused is None and not self.registry.reserve():
            refused = "server_full"
        if refused is not None:
            log.info("refused {address}: {reason}", address=address, reason=refused)
            return refused
        self.gate.opened(host)
        return None

    def door(self, host: str) -> str | None:
        """Why a new connection from ``host`` would be refused now (banned,
        too_many_connections, server_full), without taking anything: what a
        page asks when its WebSocket was refused before the handshake."""
        if self.gate.banned(host) is not None:
            return "banned"
        if not exempt(host) and self.gate.open.get(host, 0) >= self.limits.max_per_address:
            return "too_many_connections"
        return "server_full" if self.registry.full else None

    def release(self, host: str) -> None:
        """A place held with :meth:`reserve` given back: the connection closed."""
        self.registry.release()
        self.gate.closed(host)

    def login(self, connection: Connection, packet: codec.Login) -> Deferred[Session | None]:
        """LOGIN: a new session, one more device of an account's session, or
        a resumed device; fails with a ProtocolError if refused. None if the
        connection went away while its password was being checked."""
        if packet.proto not in codec.VERSIONS:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"this server speaks protocol versions {codec.VERSIONS}, not {packet.proto}",
            )
        nick = normalise_nick(packet.nick)
        key = nick_key(nick)
        held = self.registry.held(key)
        if held is not None and packet.resume is not None:
            device = held.device(packet.resume)
            if device is not None:
                if held.version != packet.proto:
                    raise ProtocolError(
                        ErrorCode.NICK_TAKEN,
                        f"nick {held.nick!r} is held by a protocol {held.version} session: "
                        "resume with that version",
                    )
                return succeed(self._resume(connection, held, device))
        if held is None and packet.resume is not None and self.cluster is not None:
            d = self.cluster.resume(key, packet.resume, packet.proto)
            return d.addCallback(self._resumed_here, connection, packet, nick, key)
        return self._log_in(connection, packet, nick, key, held)

    def _resumed_here(self, moved, connection: Connection, packet: codec.Login, nick: str, key: str):
        """A cluster node: a session resumed from another node, or a login after all."""
        if moved is None:
            return self._log_in(connection, packet, nick, key, self.registry.held(key))
        return self._adopt(connection, packet.proto, key, *moved)

    def _log_in(
        self, connection: Connection, packet: codec.Login, nick: str, key: str, held: Session | None
    ) -> Deferred[Session | None]:
        password = packet.password if packet.proto >= 2 else None
        if held is not None and not (held.account and password is not None):
            if held.account and packet.proto >= 2:
                raise ProtocolError(
                    ErrorCode.NICK_REGISTERED, f"nick {held.nick!r} is registered: log in with its password"
                )
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {held.nick!r} is taken")
        if self.accounts is None:
            if self.cluster is None:
                return succeed(self._admit(None, connection, packet.proto, nick, key))
            d = succeed(None)
        else:
            d = self.accounts.authenticate(key, password, connection.host, packet.proto, packet.resume)
        if self.cluster is not None:
            d.addCallback(self._claimed, key, nick)
        return d.addCallback(self._admit, connection, packet.proto, nick, key)

    def _claimed(self, record: AccountRecord | None, key: str, nick: str) -> Deferred:
        """A cluster node: the nick is this node's, unless a session elsewhere has it."""
        return self.cluster.claim(key, nick).addCallback(lambda _: record)

    def _admit(
        self, record: AccountRecord | None, connection: Connection, version: int, nick: str, key: str
    ) -> Session | None:
        """After the password (if any) was checked: who the connection is now."""
        if self.registry.pending.get(connection.id) is not connection:
            return None  # it went away meanwhile
        held = self.registry.held(key)
        if held is not None:
            if record is None or not held.account or held.version != version:
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {held.nick!r} is taken")
            return self._add_device(connection, held)
        now = self.clock.seconds()
        session = self.registry.register(connection, record.nick if record else nick, key, now)
        session.version = version
        gone = codec.encode(codec.Pending(connection.id, "gone"))
        if record is not None:
            session.account = True
            session.admin = self.accounts.is_admin(record)
        if session.version == 1:
            # Version 1 sees a login as JOINED in its one room.
            self.broadcast.event(Event(SERVER, None, gone))
            self._enter(session, self.directory.default)
        else:
            self.broadcast.event(Event(SERVER, gone, gone))
        if self.cluster is not None:
            self.cluster.save(session)
        log.info(
            "{nick} logged in as {id} (protocol {version}{account}) from {address}",
            nick=session.nick,
            id=session.id,
            version=session.version,
            account=", account" if session.account else "",
            address=connection.address,
        )
        self._notify("joined", session.id, nick=session.nick, address=connection.address, since=now)
        if session.account:
            d = self.store.memberships(key)
            d.addCallback(self._rejoin, session)
            d.addErrback(lambda f: log.failure("could not read {nick}'s rooms", f, nick=session.nick))
            d.addCallback(lambda _: self._start(session, connection))
        else:
            self._start(session, connection)
        return session

    def _adopt(
        self, connection: Connection, version: int, key: str, record: dict, rooms: list[tuple[str, str]]
    ) -> Session | None:
        """A session another cluster node had, resumed here: in its rooms
        without a JOINED (it never left them), its devices there told to go."""
        if self.registry.pending.get(connection.id) is not connection:
            return None
        now = self.clock.seconds()
        session = self.registry.register(connection, record["nick"], key, now, id=record["id"])
        session.version = version
        session.account = bool(record.get("account"))
        # An admin's session is one on every node; no other session becomes
        # one by moving (docs/protocol.md 15.7), whatever this node last read.
        session.admin = bool(record.get("admin")) and self.is_admin(key, session.account)
        self.broadcast.event(_both(codec.Pending(connection.id, "gone")))
        targets = []
        for _, name in rooms[: self.limits.rooms_per_connection]:
            try:
                targets.append(self.directory.get_or_create(name))
            except ProtocolError:
                continue

        def enter(_) -> None:
            for room in targets:
                if connection.session is not session:
                    return
                stand_in = room.members.get(session.id)
                if stand_in is not None and stand_in is not session:
                    room.remove(stand_in)
                    self.cluster.forget(stand_in)
                room.add(session)
                session.marks.setdefault(room.key, room.last_seq)
            self._start(session, connection)

        gatherResults([room.ready for room in targets if not room.ready.called]).addCallback(enter)
        self.cluster.save(session)
        self._resumed(session, connection, now, " (from another node)")
        return session

    def is_admin(self, key: str, account: bool) -> bool:
        """Whether the session of an account (not a guest's) is one of the
        server's admins: asked wherever a session is made, so that its
        operator status is the same on every node and after a resume."""
        return account and self.accounts is not None and key in self.accounts.confirmed

    def reload_bans(self) -> Deferred:
        """A cluster node: another node changed the server-wide bans. Read
        them again; the sessions and connections of ours they name go."""

        def loaded(_) -> None:
            for connection in list(self.registry.open.values()):
                session = connection.session
                if self.gate.banned(connection.host) is not None:
                    self.leave(connection, "kicked")
                    connection.disconnect("kicked")
                elif session is not None and self.accounts.banned(session.key) is not None:
                    self.kick(session.id)

        if self.accounts is None:
            return succeed(None)
        return self.accounts.load_bans(self.gate).addCallback(loaded)

    def moved(self, key: str) -> None:
        """A cluster node: one of our sessions was resumed on another node. Its
        devices here go (BYE replaced); its rooms keep it, as a member elsewhere."""
        session = self.registry.held(key)
        if session is None:
            return
        for connection in list(session.devices):
            self._stop_receiving(session, connection)
            self.registry.remove(connection)
            self.gate.closed(connection.host)
            self.counters.disconnects["replaced"] += 1
            connection.disconnect("replaced")
        stand_in = self.cluster.remote(session.id, session.nick, session.key, session.account)
        for room in list(session.rooms.values()):
            room.remove(session)
            room.add(stand_in)
        log.info("{nick} ({id}) resumed on another node", nick=session.nick, id=session.id)
        self._notify("left", session.id, nick=session.nick, reason="resumed elsewhere")

    def _rejoin(self, memberships: list[Membership], session: Session) -> Deferred:
        """An account is back in the rooms it was in, those it may still enter."""
        rooms = []
        for membership in memberships[: self.limits.rooms_per_connection]:
            try:
                rooms.append((self.directory.get_or_create(membership.room), membership.read))
            except ProtocolError:
                continue  # the server has no room for it now

        def enter(_) -> None:
            for room, read in rooms:
                if session.rooms.get(room.key) is room or not session.devices:
                    continue
                if self.moderation.refusal(session, room, remembered=True) is not None:
                    self._stored(
                        self.store.forget(session.key, room.key), "forget a room of {nick}", session.nick
                    )
                    self.directory.drop_if_empty(room)
                    continue
                session.marks[room.key] = read
                self._enter(session, room)

        waiting = [room.ready for room, _ in rooms if not room.ready.called]
        return gatherResults(waiting).addCallback(enter)

    def _add_device(self, connection: Connection, session: Session) -> Session:
        now = self.clock.seconds()
        self.registry.add_device(connection, session, now)
        self.broadcast.event(_both(codec.Pending(connection.id, "gone")))
        log.info(
            "{nick} ({id}) added a device from {address}",
            nick=session.nick,
            id=session.id,
            address=connection.address,
        )
        self._notify("device_joined", session.id, nick=session.nick, address=connection.address, since=now)
        self._start(session, connection)
        return session

    def _resume(self, connection: Connection, session: Session, old: Connection) -> Session:
        now = self.clock.seconds()
        self._stop_receiving(session, old)
        self.registry.take_over(connection, session, old, now)
        self.gate.closed(old.host)
        old.disconnect("replaced")
        self.counters.disconnects["replaced"] += 1
        self.broadcast.event(_both(codec.Pending(connection.id, "gone")))
        self._notify("pending_gone", connection.id, reason="resumed")
        self._start(session, connection)
        self._resumed(session, connection, now)
        return session

    def _resumed(self, session: Session, connection: Connection, now: float, where: str = "") -> None:
        log.info(
            "{nick} ({id}) resumed from {address}{where}",
            nick=session.nick,
            id=session.id,
            address=connection.address,
            where=where,
        )
        self._notify("resumed", session.id, nick=session.nick, address=connection.address, since=now)

    def _start(self, session: Session, connection: Connection) -> None:
        """WELCOME to the device, then (version 2) a ROOM for each room the
        session is in, then broadcasts from this point of each one's order on."""
        rooms = list(session.rooms.values())

        def welcome() -> None:
            if connection.session is not session:
                return  # gone (or replaced) while earlier broadcasts were stored
            payload = self.assembler.welcome(
                session.version,
                session.nick,
                session.id,
                session.devices[connection],
                list(self.registry.pending),
                self.directory.default,
                [room.name for room in rooms],
                session,
            )
            connection.deliver(connection.wire.frame(payload))
            self.broadcast.add(SERVER, connection.id, connection, session.version)
            for room in rooms:
                if session.version == 1:
                    self.broadcast.add(room.key, connection.id, connection, 1)
                else:
                    self._send_room(session, room, None, devices=[connection])

        self._when_ready(rooms, welcome)

    def _when_ready(self, rooms: list[ChatRoom], call: Callable[[], None]) -> None:
        """``call`` after every batch flushed so far, once the rooms' topics
        and recent history are read (at once, for a log that answers at once)."""
        waiting = [room.ready for room in rooms if not room.ready.called]
        if not waiting:
            self.broadcast.after_flushed(call)
        else:
            gatherResults(waiting).addCallback(lambda _: self.broadcast.after_flushed(call))

    def _send_room(
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
        for connection in list(session.devices) if devices is None else devices:
            if connection.session is not session:
                continue  # gone, or replaced
            own = ref if devices is not None or connection is requester else None
            connection.deliver(connection.wire.frame(self.assembler.room_state(room, own, session)))
            if listen:
                self.broadcast.add(room.key, connection.id, connection, session.version)

    def _stop_receiving(self, session: Session, connection: Connection) -> None:
        self.broadcast.remove(SERVER, connection.id, connection)
        for key in session.rooms:
            self.broadcast.remove(key, connection.id, connection)

    def leave(self, connection: Connection, reason: str, message: str | None = None) -> Deferred | None:
        """The connection is gone or going: announce it once in each of its
        rooms, forget it. On a cluster node, fires once its nick is free."""
        session = connection.session
        token = session.devices.get(connection) if session is not None else None
        gone = self.registry.remove(connection)
        if gone:
            self.counters.disconnects[reason] += 1
            self.gate.closed(connection.host)
        if isinstance(gone, Session):
            self._stop_receiving(gone, connection)
            if gone.devices:  # the account is still here on its other devices
                log.info("{nick} ({id}) lost a device: {reason}", nick=gone.nick, id=gone.id, reason=reason)
                self._notify("device_left", gone.id, nick=gone.nick, reason=reason)
                return
            if gone.account and token is not None and reason in ("connection_lost", "timeout"):
                self.accounts.session_ended(gone.key, token)  # a reloaded page comes back
            message = clean_reason(message, self.limits.max_text)
            for room in list(gone.rooms.values()):
                self._exit(gone, room, reason, message)
            if self.cluster is not None:
                return self.cluster.release(gone.key)
            log.info("{nick} ({id}) left: {reason}", nick=gone.nick, id=gone.id, reason=reason)
            self._notify("left", gone.id, nick=gone.nick, reason=reason)
        elif gone:
            self.broadcast.event(_both(codec.Pending(connection.id, "gone")))
            self._notify("pending_gone", connection.id, reason=reason)

    def kick(self, id: int, reason: str = "kicked") -> bool:
        """Disconnect a connected session (every device) or a pending connection by id."""
        session = self.registry.sessions.get(id)
        connections = list(session.devices) if session is not None else [self.registry.pending.get(id)]
        if connections[0] is None:
            return False
        for connection in connections:
            self.leave(connection, reason)
            connection.disconnect(reason)
        return True

    # -- rooms --------------------------------------------------------------------

    def _enter(self, session: Session, room: ChatRoom) -> None:
        """Make ``session`` a member and tell the room's members."""
        room.add(session)
        session.marks.setdefault(room.key, room.last_seq)
        record = None
        if self.cluster is not None:
            record = {"t": "j", "id": session.id, "nick": session.nick, "key": session.key, "room": room.name}
            record["account"] = session.account
        self.broadcast.event(self._joined(room, session, record))
        self._notify("room_joined", session.id, nick=session.nick, room=room.name)

    def _joined(self, room: ChatRoom, session: Session, record: dict | None = None) -> Event:
        """JOINED, telling version 2 whether the joiner runs the room (an
        account operator coming back, an admin), as its ROOM.members does."""
        op = True if room.rules.is_op(session) else None
        v2 = codec.encode(codec.Joined(session.id, session.nick, room.name, op))
        v1 = codec.encode(codec.Joined(session.id, session.nick)) if room is self.directory.default else None
        return Event(room.key, v1, v2, record=record)

    def _exit(self, session: Session, room: ChatRoom, reason: str, message: str | None) -> None:
        """Take ``session`` out of ``room`` and tell the room's members."""
        room.remove(session)
        room.rules.guest_ops.discard(session.id)
        record = None
        if self.cluster is not None:
            record = {"t": "l", "id": session.id, "nick": session.nick, "key": session.key, "room": room.name}
            record.update(reason=reason, message=message, permanent=room.permanent)
        self.broadcast.event(self._left(room, session.id, session.nick, reason, message, record))
        self._notify("room_left", session.id, nick=session.nick, reason=reason, room=room.name)
        if self.directory.drop_if_empty(room):
            self._notify("room_gone", 0, room=room.name)

    def _left(
        self, room: ChatRoom, id: int, nick: str, reason: str, message: str | None, record: dict | None = None
    ) -> Event:
        v2 = codec.encode(codec.Left(id, nick, reason, message, room.name))
        v1 = None
        if room is self.directory.default:
            # Version 1 has no PART: to it, leaving its one room is quitting.
            v1 = codec.encode(codec.Left(id, nick, "quit" if reason == "part" else reason, message))
        return Event(room.key, v1, v2, record=record)

    def apply_remote(self, room: ChatRoom, kind: str, data: dict) -> tuple[Event | None, Callable | None]:
        """Another cluster node's presence entry in ``room``: the room changes
        as it says; the Event to deliver, and what to do once it is delivered."""
        if kind == "r":  # an operator on another node changed the room's rules
            room.rules = RoomRules.from_json(data["rules"])
            room.rules.guest_ops = set(data["guest_ops"])
            for member in room.members.values():
                room.refresh(member)
            return None, None
        if kind == "o":
            room.topic = Topic(data["text"], data["by"], data["ts"]) if data["text"] else None
            changed = codec.TopicChanged(room.name, data["text"], data["by"], data["ts"])
            self._notify("topic", 0, nick=data["by"], room=room.name, reason=data["text"])
            return Event(room.key, None, codec.encode(changed)), None
        member = room.members.get(data["id"])
        if kind == "j":
            if member is not None:
                return None, None  # in the snapshot already
            member = self.cluster.member(data)
            room.add(member)
            self._notify("room_joined", member.id, nick=member.nick, room=room.name)
            return self._joined(room, member), None
        if member is None:
            return None, None
        reason, message = data["reason"], data.get("message")
        event = self._left(room, member.id, member.nick, reason, message)
        room.remove(member)
        room.rules.guest_ops.discard(member.id)
        self._notify("room_left", member.id, nick=member.nick, reason=reason, room=room.name)
        if member.connection is None:
            self.cluster.forget(member)
            then = None
        else:  # one of ours, put out by another node: its devices get this LEFT, then nothing more
            self._forget_room(member, room)
            devices = list(member.devices)

            def then() -> None:
                for connection in devices:
                    self.broadcast.remove(room.key, connection.id, connection)

        if self.directory.drop_if_empty(room):
            self._notify("room_gone", 0, room=room.name)
        return event, then

    def remove_member(
        self,
        session: Session,
        room: ChatRoom,
        reason: str,
        message: str | None,
        requester: Connection | None = None,
        ref: str | None = None,
    ) -> None:
        """Out of the room, by PART or by an operator: the member's devices
        get everything said in the room before, then their own LEFT (the
        requester's with ``ref``), then nothing more of it; the other
        members get LEFT. An account forgets the room."""
        self.broadcast.flush()  # what was said before reaches the leaver too
        devices = list(session.devices)

        def gone() -> None:
            for connection in devices:
                self.broadcast.remove(room.key, connection.id, connection)
                if connection.session is session:
                    own = ref if connection is requester else None
                    connection.send(codec.Left(session.id, session.nick, reason, message, room.name, own))

        self.broadcast.after_flushed(gone)
        self._exit(session, room, reason, message)
        self._forget_room(session, room)

    def _forget_room(self, session: Session, room: ChatRoom) -> None:
        """Put out of a room: its read marker goes, and an account's memory of it."""
        session.marks.pop(room.key, None)
        if session.account:
            self._stored(self.store.forget(session.key, room.key), "forget a room of {nick}", session.nick)

    def _stored(self, d: Deferred, what: str, nick: str = "") -> None:
        d.addErrback(lambda f: log.failure("could not " + what, f, nick=nick))

    def join(self, connection: Connection, packet: codec.Join) -> None:
        """JOIN: ROOM to the joiner (with the JOIN's ref) and its other
        devices, JOINED to the members."""
        session = connection.session
        key = self.directory.key_of(packet.room)
        room = session.rooms.get(key)
        if room is not None:  # already in: its state again, nothing announced
            self.broadcast.after_all(
                lambda: self._send_room(session, room, packet.ref, listen=False, devices=[connection])
            )
            return
        if len(session.rooms) >= self.limits.rooms_per_connection:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"you are in {len(session.rooms)} rooms, the limit is "
                f"{self.limits.rooms_per_connection}: part one first",
            )
        room = self.directory.get_or_create(packet.room)
        if room.ready.called:
            self._join_ready(connection, session, room, packet.ref)
            return

        def ready(_) -> None:
            try:
                self._join_ready(connection, session, room, packet.ref)
            except ProtocolError as e:
                if connection.session is session:
                    connection.send(codec.Error(e.code, e.message, packet.ref))

        room.ready.addCallback(ready)

    def _join_ready(self, connection: Connection, session: Session, room: ChatRoom, ref: str | None) -> None:
        if connection.session is not session or session.rooms.get(room.key) is room:
            return
        refusal = self.moderation.refusal(session, room)
        if refusal is not None:
            self.directory.drop_if_empty(room)
            raise refusal
        self.moderation.claim(session, room)
        self._enter(session, room)
        if session.account:
            self._remember_room(session, room)
        self._when_ready([room], lambda: self._send_room(session, room, ref, requester=connection))

    def _remember_room(self, session: Session, room: ChatRoom) -> None:
        membership = Membership(room.name, session.marks.get(room.key, room.last_seq))
        self._stored(
            self.store.remember(session.key, room.key, membership), "remember a room of {nick}", session.nick
        )

    def part(self, connection: Connection, packet: codec.Part) -> None:
        """PART: LEFT ``part`` to the members, and to the leaver with its ref
        once it has had everything said in the room before."""
        session = connection.session
        room = self.member_room(session, packet.room)
        message = clean_reason(packet.reason, self.limits.max_text)
        self.remove_member(session, room, "part", message, connection, packet.ref)

    def set_topic(self, connection: Connection, packet: codec.SetTopic) -> None:
        session = connection.session
        room = self.member_room(session, packet.room)
        if room.rules.topic_lock and not room.rules.is_op(session):  # who may, before what
            raise ProtocolError(ErrorCode.TOPIC_LOCKED, f"only operators may set {room.name!r}'s topic")
        text = validate_topic(packet.topic, self.limits.topic_length)
        now = self.clock.seconds()
        room.topic = Topic(text, session.nick, now) if text else None
        if room.permanent:
            d = self.eventlog.set_topic(room.key, room.topic)
            d.addErrback(lambda f: log.failure("could not store room {room}'s topic", f, room=room.name))
        elif room.rules.kept:  # kept with its rules, as long as they are
            self.moderation.keep(room)
        changed = codec.TopicChanged(room.name, text, session.nick, now)
        own = codec.TopicChanged(room.name, text, session.nick, now, packet.ref)
        record = None
        if self.cluster is not None:
            record = {"t": "o", "text": text, "by": session.nick, "ts": now, "room": room.name}
        event = Event(room.key, None, codec.encode(changed), connection, codec.encode(own), record)
        self.broadcast.event(event)
        self._notify("topic", session.id, nick=session.nick, room=room.name, reason=text)

    def list_rooms(self, connection: Connection, packet: codec.ListRooms) -> Deferred | None:
        """LIST: the rooms there are (on a cluster node: on every node)."""
        if self.cluster is None:
            payload = codec.room_list_payload(self.directory.listing_json(), packet.ref)
            connection.deliver(connection.wire.frame(payload))
            return None
        d = self.cluster.listing(self.directory.listing())
        return d.addCallback(lambda rooms: connection.send(codec.RoomList(rooms, packet.ref)))

    def member_room(self, session: Session, name: str | None) -> ChatRoom:
        """The room a request names (None: the default room) if the session
        is in it; bad_room, no_such_room or not_a_member."""
        room = self.directory.find(name)
        if session.rooms.get(room.key) is not room:
            raise ProtocolError(ErrorCode.NOT_A_MEMBER, f"you are not in {room.name!r}: join it first")
        return room

    def mark(self, connection: Connection, packet: codec.Mark) -> None:
        """MARK: the read marker moves forward (never back), on every device."""
        session = connection.session
        room = self.member_room(session, packet.room)
        seq = max(0, min(packet.seq, room.last_seq))
        if seq > session.marks.get(room.key, 0):
            session.marks[room.key] = seq
            if session.account:
                self._remember_room(session, room)
        seq = session.marks.get(room.key, 0)
        unread = max(0, room.last_seq - seq)
        for device in session.devices:
            device.send(codec.Marked(room.name, seq, unread, packet.ref if device is connection else None))

    # -- accounts -------------------------------------------------------------------

    def account(self, connection: Connection, packet: codec.AccountRequest) -> Deferred[None]:
        """ACCOUNT register, password or delete, for the session's own nick."""
        session = connection.session
        if self.accounts is None:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "this server keeps no accounts")
        if packet.op == "register":
            if session.account:
                raise ProtocolError(ErrorCode.ALREADY_REGISTERED, f"{session.nick!r} is already registered")
            d = self.accounts.register(
                session.key,
                session.nick,
                required(packet.password, "password", f"ACCOUNT {packet.op}"),
                connection.host,
            )
            d.addCallback(self._registered, session)
        elif packet.op == "password":
            self._require_account(session)
            d = self.accounts.change(
                session.key,
                required(packet.password, "password", f"ACCOUNT {packet.op}"),
                required(packet.new_password, "new_password", f"ACCOUNT {packet.op}"),
                connection.host,
            )
        elif packet.op == "delete":
            self._require_account(session)
            d = self.accounts.delete(
                session.key, required(packet.password, "password", f"ACCOUNT {packet.op}"), connection.host
            )
            d.addCallback(self._unregistered, session)
        else:
            raise ProtocolError(
                ErrorCode.BAD_PACKET, f"unknown ACCOUNT op {packet.op!r}: register, password, delete"
            )

        def done(_) -> None:
            log.info("{nick}: account {op}", nick=session.nick, op=packet.op)
            if connection.session is session:
                connection.send(codec.Done(packet.op, session.nick, packet.ref))

        return d.addCallback(done)

    def _require_account(self, session: Session) -> None:
        if not session.account:
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "log in to your account first")

    def _registered(self, record: AccountRecord, session: Session) -> None:
        session.account = True
        session.admin = self.accounts.is_admin(record)  # never a registration's: see ensure_admins
        if self.cluster is not None:  # a resume on another node finds an account's session
            self.cluster.save(session)
        for room in session.rooms.values():
            if session.id in room.rules.guest_ops:  # a guest's operator status becomes the account's
                room.rules.guest_ops.discard(session.id)
                room.rules.ops.add(session.key)
                self.moderation.save_rules(room)
            room.refresh(session)
            self._remember_room(session, room)

    def _unregistered(self, record: AccountRecord, session: Session) -> None:
        """Rights die with the account: its admin mark went with its record,
        and no room keeps the nick as an operator for the next registrant."""
        session.account = False
        session.admin = False
        self.accounts.confirmed.discard(record.key)
        for room in self.directory.rooms.values():
            if record.key in room.rules.ops:
                room.rules.ops.discard(record.key)
                self.moderation.save_rules(room)
        self.store.forget_operator(record.key).addErrback(
            lambda f: log.failure("could not take {nick}'s operator status away", f, nick=record.nick)
        )
        if self.cluster is not None:
            self.cluster.save(session)
        for room in session.rooms.values():
            room.refresh(session)

    # -- chat -------------------------------------------------------------------

    def say(self, connection: Connection, text: str, ref: str | None, room: str | None = None) -> None:
        session = connection.session
        # version 1 is always in the default room: no lookup for it
        target = self.directory.default if session.version == 1 else self.member_room(session, room)
        validate_text(text, self.limits.max_text)
        draft = Draft(self.clock.seconds(), session.nick, text, target.key)
        self.broadcast.message(draft, target.name, connection, ref)

    def record(
        self,
        room: ChatRoom,
        session: Session,
        connection: Connection | None,
        action: dict,
        text: str,
        ref=None,
    ) -> None:
        """A moderation action, announced to the room and kept in its history
        as a MESSAGE from whoever did it, with ``action`` saying what."""
        draft = Draft(self.clock.seconds(), session.nick, text, room.key, action)
        self.broadcast.message(draft, room.name, connection, ref)
        self._notify("moderation", session.id, nick=session.nick, room=room.name, reason=text)

    def whisper(self, connection: Connection, packet: codec.Whisper) -> Deferred | None:
        session = connection.session
        validate_text(packet.text, self.limits.max_text)
        normalise_nick(packet.to)  # a malformed name is bad_nick, not no_such_nick
        target = self.registry.find(packet.to)
        if target is None and self.cluster is not None:
            return self._whisper_elsewhere(connection, packet)
        if target is None:
            raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody here is called {packet.to!r}")
        private = codec.Private(self.clock.seconds(), session.nick, target.nick, packet.text)

        def send() -> None:
            # every device of both, the sender's own copy with its ref
            for device in {**target.devices, **session.devices}:
                if device.session is not None and device is not connection:
                    device.send(private)
            if connection.session is session:
                connection.send(
                    codec.Private(private.ts, private.sender, private.to, private.text, packet.ref)
                )
            self._handle_overflow()

        self.broadcast.after_all(send)

    def _whisper_elsewhere(self, connection: Connection, packet: codec.Whisper) -> Deferred:
        """A cluster node: to whoever has the nick on another node, through
        that node's inbox; the sender's copy once the store has taken it."""
        session = connection.session
        private = codec.Private(self.clock.seconds(), session.nick, packet.to, packet.text)

        def sent(found: bool) -> None:
            if not found:
                raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody here is called {packet.to!r}")
            for device in session.devices:
                if device is not connection:
                    device.send(private)
            if connection.session is session:
                own = codec.Private(private.ts, private.sender, private.to, private.text, packet.ref)
                connection.send(own)

        return self.cluster.whisper(nick_key(normalise_nick(packet.to)), private).addCallback(sent)

    def whispered(self, private: codec.Private) -> None:
        """A whisper from a session on another cluster node, to one of ours."""
        target = self.registry.find(private.to)
        if target is None:
            return  # gone meanwhile
        private = codec.Private(private.ts, private.sender, target.nick, private.text)
        for device in target.devices:
            device.send(private)

    def history(self, connection: Connection, request: codec.HistoryRequest) -> Deferred[codec.HistoryPage]:
        """A HISTORY page of one of the session's rooms, after everything
        broadcast before the request."""
        session = connection.session
        if request.before is not None and request.after is not None:
            raise ProtocolError(ErrorCode.BAD_PACKET, "give either 'before' or 'after', not both")
        room = self.member_room(session, request.room)
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
                room.last_seq = item.message.seq

    def _refused(self, said: list[Said], failure: Failure) -> None:
        """The log could not store a batch: nobody sees it, the senders are told."""
        log.error(
            "history store failed, {count} messages refused: {error}", count=len(said), error=failure.value
        )
        self._notify("error", 0, reason=str(failure.value))
        for item in said:
            if item.sender is not None and item.sender.session is not None:
                item.sender.send(
                    codec.Error(ErrorCode.INTERNAL, "the server could not store your message", item.ref)
                )

    def overflowed(self, connection: Connection) -> None:
        """A connection's output passed sendq; handled once the write loop
        ends, or on the next turn if it was no broadcast's (a PONG's)."""
        self._overflowed.append(connection)
        if self._overflow_call is None:
            self._overflow_call = self.clock.callLater(0, self._handle_overflow)

    def _handle_overflow(self) -> None:
        call, self._overflow_call = self._overflow_call, None
        if call is not None and call.active():
            call.cancel()
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
