"""The hub: what transports call, tying the registry, the rooms, the ordered
broadcast and the event log together.

A transport hands the hub parsed requests (``accept``, ``login``, ``say``,
``whisper``, ``history``, ``leave``) and the hub answers through the
:class:`~chatproto.core.connection.Connection` interface. Whispers, history
replies and WELCOME wait for everything broadcast before them
(:meth:`Broadcast.after_all`), which is what keeps one total order without a
queue per connection.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.eventlog import Draft, EventLog
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.assembly import Assembler
from chatproto.core.broadcast import Broadcast, Said
from chatproto.core.connection import Connection, HubEvent, Session
from chatproto.core.registry import Registry
from chatproto.core.timers import Timers
from chatproto.limits import DEFAULTS, Limits
from chatproto.rules import clean_reason, normalise_nick, validate_text

log = Logger()

#: How long a shutdown waits for peers to read their BYE before aborting them.
SHUTDOWN_GRACE = 5.0


class Hub:
    def __init__(
        self,
        eventlog: EventLog,
        clock: IReactorTime,
        limits: Limits = DEFAULTS,
        name: str = "chat",
        motd: str = "",
    ) -> None:
        self.eventlog = eventlog
        self.clock = clock
        self.limits = limits
        self.name = name
        self.observers: list[Callable[[HubEvent], None]] = []
        self.timers = Timers(clock)  # every connection's deadlines
        self.registry = Registry(limits.max_clients)
        self.assembler = Assembler(limits.history_replay, limits.max_frame, name, motd, limits.as_wire())
        self.broadcast = Broadcast(
            clock, eventlog, self.assembler.remember, self._refused, self._handle_overflow
        )
        self._overflowed: list[Connection] = []
        # One bound method for every outbox to hold, not one per connection.
        self.overflowed = self.overflowed
        if limits.history_replay:
            d = eventlog.before(None, limits.history_replay)
            d.addCallback(lambda page: self.assembler.remember([(m, codec.message_json(m)) for m in page[0]]))
            d.addErrback(lambda f: log.failure("could not read the recent history for WELCOME", f))

    # -- views for the console and tests ----------------------------------------

    @property
    def pending(self) -> list[Connection]:
        return list(self.registry.pending.values())

    @property
    def sessions(self) -> list[Session]:
        return list(self.registry.sessions.values())

    def session_for(self, nick: str) -> Session | None:
        return self.registry.find(nick)

    def _notify(self, kind: str, id: int, **fields) -> None:
        event = HubEvent(kind, id, **fields)
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                log.failure("room observer failed on {event}", event=event)

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
        self.broadcast.event(codec.Pending(connection.id, "connecting"))
        self._notify("pending", connection.id, address=connection.address, since=connection.opened)
        return True

    def login(self, connection: Connection, packet: codec.Login) -> Session:
        """LOGIN: a new session, or a resumed one; ProtocolError if refused."""
        if packet.proto != codec.PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"this server speaks protocol {codec.PROTOCOL_VERSION}, not {packet.proto}",
            )
        nick, key, held = self.registry.claim(packet.nick, packet.resume)
        now = self.clock.seconds()
        if held is not None:
            return self._resume(connection, held, now)
        session = self.registry.register(connection, nick, key, now)
        self.broadcast.event(codec.Joined(session.id, nick))
        self._join(session)
        log.info(
            "{nick} logged in as {id} from {address}", nick=nick, id=session.id, address=connection.address
        )
        self._notify("joined", session.id, nick=nick, address=connection.address, since=now)
        return session

    def _resume(self, connection: Connection, session: Session, now: float) -> Session:
        self._stop_receiving(session)
        old = self.registry.take_over(connection, session, now)
        old.disconnect("replaced")
        self.broadcast.event(codec.Pending(connection.id, "gone"))
        self._notify("pending_gone", connection.id, reason="resumed")
        self._join(session)
        log.info(
            "{nick} ({id}) resumed from {address}",
            nick=session.nick,
            id=session.id,
            address=connection.address,
        )
        self._notify("resumed", session.id, nick=session.nick, address=connection.address, since=now)
        return session

    def _join(self, session: Session) -> None:
        """WELCOME, then broadcasts from this point of the order on."""
        self.assembler.add_peer(session.id, session.nick)  # WELCOME.peers includes you

        def welcome() -> None:
            connection = session.connection
            if connection.session is not session:
                return  # gone (or replaced) while earlier broadcasts were stored
            payload = self.assembler.welcome(
                session.nick, session.id, session.token, list(self.registry.pending)
            )
            connection.deliver(connection.wire.frame(payload))
            self.broadcast.add(session.id, connection)

        self.broadcast.after_flushed(welcome)

    def _stop_receiving(self, session: Session) -> None:
        self.broadcast.remove(session.id, session.connection)
        self.assembler.remove_peer(session.id)

    def leave(self, connection: Connection, reason: str, message: str | None = None) -> None:
        """The connection is gone or going: announce it once, forget it."""
        gone = self.registry.remove(connection)
        if isinstance(gone, Session):
            self._stop_receiving(gone)
            message = clean_reason(message, self.limits.max_text)
            self.broadcast.event(codec.Left(gone.id, gone.nick, reason, message))
            log.info("{nick} ({id}) left: {reason}", nick=gone.nick, id=gone.id, reason=reason)
            self._notify("left", gone.id, nick=gone.nick, reason=reason)
        elif gone:
            self.broadcast.event(codec.Pending(connection.id, "gone"))
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

    # -- chat -------------------------------------------------------------------

    def say(self, session: Session, text: str, ref: str | None) -> None:
        validate_text(text, self.limits.max_text)
        self.broadcast.message(Draft(self.clock.seconds(), session.nick, text), session.connection, ref)

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

    def history(self, request: codec.HistoryRequest) -> Deferred[codec.HistoryPage]:
        """A HISTORY page, after everything broadcast before the request."""
        if request.before is not None and request.after is not None:
            raise ProtocolError(ErrorCode.BAD_PACKET, "give either 'before' or 'after', not both")
        limit = min(max(request.limit if request.limit is not None else 50, 1), self.limits.history_page)
        answer: Deferred[codec.HistoryPage] = Deferred()

        def read() -> None:
            if request.after is not None:
                d, keep = self.eventlog.after(request.after, limit), "oldest"
            else:
                d, keep = self.eventlog.before(request.before, limit), "newest"
            d.addCallback(lambda page: self.assembler.page(*page, keep=keep)).chainDeferred(answer)

        self.broadcast.after_all(read)
        return answer

    def flush(self) -> None:
        """End the turn now: store the batch, then write it to every recipient."""
        self.broadcast.flush()

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
        self.assembler.clear_peers()
        connections = self.registry.clear()
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
