"""Connections and sessions: accepting, LOGIN, resuming, devices, leaving.

A connection is pending from its accept until its LOGIN is admitted; then
it is a device of a session (a guest has one, an account may have several).
A session's WELCOME, then (version 2) a ROOM for each of its rooms, go out
after everything broadcast before (:meth:`Broadcast.after_flushed`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.accounts import AccountRecord, AccountStore
from chatproto.backends.eventlog import owner_of
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.accounts import Accounts, AddressGate, exempt
from chatproto.core.assembly import Assembler
from chatproto.core.broadcast import SERVER, Broadcast
from chatproto.core.connection import Connection, Session, token_text
from chatproto.core.connection_log import ConnectionLog
from chatproto.core.membership import Membership
from chatproto.core.observers import Observers
from chatproto.core.peers import HeldElsewhere, Peers, Resumed
from chatproto.core.pending_news import PendingNews
from chatproto.core.records import SessionRecord
from chatproto.core.registry import Registry
from chatproto.core.room_rules import RuleKeeper
from chatproto.core.rooms import ChatRoom, Directory
from chatproto.limits import Limits
from chatproto.metrics import Counters
from chatproto.rules import clean_reason, nick_key, normalise_nick

log = Logger()


class Logins:
    """Who is connected, and as whom."""

    def __init__(
        self,
        clock: IReactorTime,
        limits: Limits,
        registry: Registry,
        gate: AddressGate,
        accounts: Accounts | None,
        store: AccountStore | None,
        directory: Directory,
        broadcast: Broadcast,
        news: PendingNews,
        assembler: Assembler,
        membership: Membership,
        keeper: RuleKeeper,
        peers: Peers,
        counters: Counters,
        observers: Observers,
        connection_log: ConnectionLog,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.registry = registry
        self.gate = gate
        self.accounts = accounts
        self.store = store
        self.directory = directory
        self.broadcast = broadcast
        self.news = news
        self.assembler = assembler
        self.membership = membership
        self.keeper = keeper
        self.peers = peers
        self.counters = counters
        self.observers = observers
        self.connection_log = connection_log
        self._overflowed: list[Connection] = []
        self._overflow_call: IDelayedCall | None = None

    # -- accepting -------------------------------------------------------------------

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
        if self.peers.relaying():  # a device relayed here: the node it reached announced it
            self.news.quiet(connection.id)
        else:
            self.news.connecting(connection.id)
        self.observers.notify("pending", connection.id, address=connection.address, since=connection.opened)
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

    # -- LOGIN -----------------------------------------------------------------------

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
        if held is None and packet.resume is not None:
            moving: Deferred[Any] = self.peers.resume(key, packet.resume, packet.proto)
            d = moving.addCallback(self._resumed_here, connection, packet, nick, key)
        else:
            d = self._log_in(connection, packet, nick, key, held)
        return d.addErrback(self._elsewhere, connection, packet)

    def _resumed_here(
        self, moved: Any, connection: Connection, packet: codec.Login, nick: str, key: str
    ) -> Deferred[Session | None] | Session | None:
        """A session resumed from another node, or a login after all."""
        if moved is None:
            return self._log_in(connection, packet, nick, key, self.registry.held(key))
        return self._adopt(connection, packet.proto, key, *moved)

    def _log_in(
        self, connection: Connection, packet: codec.Login, nick: str, key: str, held: Session | None
    ) -> Deferred[Session | None]:
        password = packet.password if packet.proto >= 2 else None
        if held is not None and held.account and packet.proto == held.version and self.peers.vouched(key):
            return succeed(self._add_device(connection, held))  # another node checked its password
        if held is not None and not (held.account and password is not None):
            if held.account and packet.proto >= 2:
                raise ProtocolError(
                    ErrorCode.NICK_REGISTERED, f"nick {held.nick!r} is registered: log in with its password"
                )
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {held.nick!r} is taken")
        if self.accounts is None:
            d: Deferred[Any] = succeed(None)
        else:
            d = self.accounts.authenticate(key, password, connection.host, packet.proto, packet.resume)
        return d.addCallback(self._claimed, connection, packet.proto, nick, key)

    def _elsewhere(self, failure: Failure, connection: Connection, packet: codec.Login) -> None:
        """The session is in use on another node: a connection whose packets
        can travel there is relayed to it (cluster/relays.py), from this LOGIN
        on; any other gets nick_taken."""
        failure.trap(HeldElsewhere)
        held = failure.value
        assert isinstance(held, HeldElsewhere)
        if not connection.wire.relayable:
            raise ProtocolError(ErrorCode.NICK_TAKEN, held.message)
        if self.registry.pending.get(connection.id) is not connection:
            return None  # it went away meanwhile
        self.registry.relay(connection)
        self.news.gone(connection.id)
        self.observers.notify("pending_gone", connection.id, reason="relayed")
        connection.relay()
        # Its password (if that is what was checked here) goes no further: the
        # other node takes our word for it (Peers.vouched).
        self.peers.relay(connection, codec.encode(replace(packet, password=None)), held.node, held.vouched)
        log.info("connection {id} relayed to node {node}", id=connection.id, node=held.node)
        return None

    def _claimed(
        self, record: AccountRecord | None, connection: Connection, version: int, nick: str, key: str
    ) -> Deferred[Session | None]:
        """The nick is this node's, unless a session on another node has it;
        an account's session there that nobody uses moves here."""

        def admit(moved: Resumed | None) -> Session | None:
            if moved is not None:
                return self._adopt(connection, version, key, *moved)
            return self._admit(record, connection, version, nick, key)

        return self.peers.claim(key, nick, record is not None).addCallback(admit)

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
        if record is not None and self.accounts is not None:
            session.account = True
            session.admin = self.accounts.is_admin(record)
            session.owner = owner_of(record.key, record.created)
        if session.version == 1:
            # Version 1 sees a login as JOINED in its one room.
            self.news.gone(connection.id, v1=False)
            self.membership.enter(session, self.directory.default)
        else:
            self.news.gone(connection.id)
        self.peers.save(session)
        self.connection_log.logged_in(
            session.nick, session.id, session.version, session.account, connection.address
        )
        self.observers.notify("joined", session.id, nick=session.nick, address=connection.address, since=now)
        if session.account and self.store is not None:
            d = self.store.memberships(key)
            d.addCallback(self.membership.rejoin, session)
            d.addErrback(lambda f: log.failure("could not read {nick}'s rooms", f, nick=session.nick))
            d.addCallback(lambda _: self._start(session, connection))
        else:
            self._start(session, connection)
        return session

    def _adopt(
        self,
        connection: Connection,
        version: int,
        key: str,
        record: SessionRecord,
        rooms: list[tuple[str, str]],
    ) -> Session | None:
        """A session another node had, resumed here: in its rooms without a
        JOINED (it never left them), its devices there told to go."""
        if self.registry.pending.get(connection.id) is not connection:
            return None
        now = self.clock.seconds()
        session = self.registry.register(connection, record.nick, key, now, id=record.id)
        session.version = version
        session.account = record.account
        # An admin's session is one on every node; no other session becomes
        # one by moving (docs/protocol.md 15.7), whatever this node last read.
        session.admin = record.admin and self.is_admin(key, session.account)
        session.owner = record.owner if session.account else None
        session.away = record.away
        self.news.gone(connection.id)
        targets: list[ChatRoom] = []
        for _, name in rooms:
            try:
                targets.append(self.directory.remembered(name))
            except ProtocolError:
                continue

        def enter(_: object) -> None:
            for room in targets:
                if connection.session is not session:
                    return
                self.membership.arrive(session, room)
            self._start(session, connection)

        gatherResults([room.ready for room in targets if not room.ready.called]).addCallback(enter)
        self.peers.save(session)
        self._resumed(session, connection, now, " (from another node)")
        return session

    def is_admin(self, key: str, account: bool) -> bool:
        """Whether the session of an account (not a guest's) is one of the
        server's admins: asked wherever a session is made, so that its
        operator status is the same on every node and after a resume."""
        return account and self.accounts is not None and key in self.accounts.confirmed

    def reload_bans(self) -> Deferred[None]:
        """Another node changed the server-wide bans. Read them again; the
        sessions and connections of ours they name go."""
        accounts = self.accounts
        if accounts is None:
            return succeed(None)

        def loaded(_: object) -> None:
            for connection in list(self.registry.open.values()):
                session = connection.session
                if self.gate.banned(connection.host) is not None:
                    self.leave(connection, "kicked")
                    connection.disconnect("kicked")
                elif session is not None and accounts.banned(session.key) is not None:
                    self.kick(session.id)

        return accounts.load_bans(self.gate).addCallback(loaded)

    def in_use(self, key: str, patience: float) -> Deferred[bool]:
        """Whether a device of our session holding ``key`` answers a PING
        within ``patience`` seconds: a connection that dropped without our
        noticing does not, so another node's login to the account may take
        the session over."""
        session = self.registry.held(key)
        if session is None or not session.devices:
            return succeed(False)
        devices = list(session.devices)
        asked = self.clock.seconds()
        for connection in devices:
            connection.send(codec.ServerPing(f"{int(asked)}"))
        d: Deferred[bool] = Deferred()

        def look() -> None:
            d.callback(any(c in session.devices and (c.heard >= asked or c.paused) for c in devices))

        self.clock.callLater(patience, look)
        return d

    def moved(self, key: str) -> None:
        """One of our sessions was resumed on another node. Its devices here
        go (BYE replaced); its rooms keep it, as a member elsewhere."""
        session = self.registry.held(key)
        if session is None:
            return
        for connection in list(session.devices):
            self.stop_receiving(session, connection)
            self.membership.following.forget(connection)
            self.registry.remove(connection)
            self.gate.closed(connection.host)
            self.counters.disconnects["replaced"] += 1
            connection.disconnect("replaced")
        stand_in = self.peers.stand_in(session.id, session.nick, session.key, session.account)
        self.membership.depart(session, stand_in)
        log.info("{nick} ({id}) resumed on another node", nick=session.nick, id=session.id)
        self.observers.notify("left", session.id, nick=session.nick, reason="resumed elsewhere")

    def _add_device(self, connection: Connection, session: Session) -> Session:
        now = self.clock.seconds()
        self.registry.add_device(connection, session, now)
        self.news.gone(connection.id)
        self.peers.save(session)
        log.info(
            "{nick} ({id}) added a device from {address}",
            nick=session.nick,
            id=session.id,
            address=connection.address,
        )
        self.observers.notify(
            "device_joined", session.id, nick=session.nick, address=connection.address, since=now
        )
        self._start(session, connection)
        return session

    def _resume(self, connection: Connection, session: Session, old: Connection) -> Session:
        now = self.clock.seconds()
        self.stop_receiving(session, old)
        self.membership.following.moved(old, connection)  # the device keeps its follows
        self.registry.take_over(connection, session, old, now)
        self.peers.save(session)
        self.gate.closed(old.host)
        old.disconnect("replaced")
        self.counters.disconnects["replaced"] += 1
        self.news.gone(connection.id)
        self.observers.notify("pending_gone", connection.id, reason="resumed")
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
        self.observers.notify("resumed", session.id, nick=session.nick, address=connection.address, since=now)

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
                token_text(session.devices[connection]),
                self.news.ids(self.registry.pending, session.version),
                self.directory.default,
                [room.name for room in rooms],
                session,
            )
            connection.outbox.deliver(connection.wire.frame(payload))
            self.broadcast.add(SERVER, connection.id, connection, session.version)
            for room in rooms:
                if session.version == 1:
                    self.broadcast.add(room.key, connection.id, connection, 1)
                else:
                    self.membership.send_room(session, room, None, devices=[connection])

        self.membership.when_ready(rooms, welcome)

    def stop_receiving(self, session: Session, connection: Connection) -> None:
        self.broadcast.remove(SERVER, connection.id, connection)
        for key in session.rooms:
            self.broadcast.remove(key, connection.id, connection)

    # -- leaving ---------------------------------------------------------------------

    def leave(self, connection: Connection, reason: str, message: str | None = None) -> Deferred[None]:
        """The connection is gone or going: announce it once in each of its
        rooms, forget it. Fires once its nick is free on every node."""
        session = connection.session
        token = session.devices.get(connection) if session is not None else None
        relayed = self.registry.relayed.get(connection.id) is connection
        gone = self.registry.remove(connection)
        if gone:
            self.counters.disconnects[reason] += 1
            self.gate.closed(connection.host)
        if relayed:
            self.peers.unrelay(connection)
            return succeed(None)
        if isinstance(gone, Session):
            self.stop_receiving(gone, connection)
            self.membership.following.forget(connection)
            if gone.devices:  # the account is still here on its other devices
                self.peers.save(gone)  # its tokens, for a resume on another node
                log.info("{nick} ({id}) lost a device: {reason}", nick=gone.nick, id=gone.id, reason=reason)
                self.observers.notify("device_left", gone.id, nick=gone.nick, reason=reason)
                return succeed(None)
            if gone.account and token is not None and reason in ("connection_lost", "timeout"):
                if self.accounts is not None:
                    self.accounts.session_ended(gone.key, token_text(token))  # a reloaded page comes back
            message = clean_reason(message, self.limits.max_text)
            for room in list(gone.rooms.values()):
                self.membership.exit(gone, room, reason, message)
            self.connection_log.left(gone.nick, gone.id, reason)
            self.observers.notify("left", gone.id, nick=gone.nick, reason=reason)
            return self.peers.release(gone.key)
        if gone:
            self.news.gone(connection.id)
            self.observers.notify("pending_gone", connection.id, reason=reason)
        return succeed(None)

    def kick(self, id: int, reason: str = "kicked") -> bool:
        """Disconnect a connected session (every device) or a pending connection by id."""
        session = self.registry.sessions.get(id)
        pending = self.registry.pending.get(id)
        connections = list(session.devices) if session is not None else [pending] if pending else []
        if not connections:
            return False
        for connection in connections:
            self.leave(connection, reason)
            connection.disconnect(reason)
        return True

    # -- slow consumers --------------------------------------------------------------

    def overflowed(self, connection: Connection) -> None:
        """A connection's output passed sendq; handled once the write loop
        ends, or on the next turn if it was no broadcast's (a PONG's)."""
        self._overflowed.append(connection)
        if self._overflow_call is None:
            self._overflow_call = self.clock.callLater(0, self.handle_overflow)

    def handle_overflow(self) -> None:
        call, self._overflow_call = self._overflow_call, None
        if call is not None and call.active():
            call.cancel()
        while self._overflowed:
            connection = self._overflowed.pop()
            log.warn("{id} is not reading: disconnected as slow consumer", id=connection.id)
            self.leave(connection, "slow_consumer")
            connection.disconnect("slow_consumer", flush=False)
