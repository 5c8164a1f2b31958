"""One client connection's policy, whatever frames its bytes.

A connection is two small objects: a framing protocol (a Twisted
``Protocol``: Int32 frames, IRC lines, WebSocket frames) that turns bytes
into units and packets into bytes, and a :class:`ConnectionPolicy` that
holds everything else: its state (pending -> connected -> closing), limits,
fair share (core/budget.py), rate buckets, login and keepalive timers,
outbox (sendq), closing, and the command table's dispatch
(core/commands.py). The policy is what the hub sees as a
:class:`~chatproto.core.connection.Connection`.

The read loop is here, once, for every framing: it takes the framing's
units one at a time, noting whether more wait behind the current one (a
pipelining flood), and stops while paused (the fair share, a password
check) or closing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    ILoggingContext,
    IProtocol,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatproto import codec
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.broadcast import SERVER
from chatproto.core.budget import CUT, REFUSAL, Spender
from chatproto.core.commands import COMMANDS, Bucket, apply
from chatproto.core.connection import Session, Wire
from chatproto.core.timers import Deadline
from chatproto.limits import TokenBucket
from chatproto.transports.outbox import Consumer, Outbox
from chatproto.transports.sockets import LeanServer

if TYPE_CHECKING:
    from chatproto.core.hub import Hub

log = Logger()

#: LOGINs refused for their password (wrong, or locked out) before the connection is closed.
PASSWORD_TRIES = 3

#: After the server decides to close, how long a peer may take to read its
#: last packets before the connection is aborted.
CLOSE_GRACE = 10.0

PENDING, CONNECTED, CLOSING = "pending", "connected", "closing"
#: Handed to another node of a cluster, which runs it (cluster/relays.py).
RELAYED = "relayed"


class ChatTransport(Consumer, Protocol):
    """What a chat connection uses of its transport: the outbox's (a
    :class:`~chatproto.transports.outbox.Consumer`), ITCPTransport's
    abortConnection and getPeer, and IPushProducer's pause and resume (the
    fair share stops reading).

    Twisted types a protocol's transport as ITransport alone; every one a
    chat connection runs on is all of this: TCP, TLS over it, a Unix
    socket, the PROXY wrapper (transports/proxied.py), an upgraded HTTP
    connection, and StringTransport in tests.
    """

    def abortConnection(self) -> None: ...

    def getPeer(self) -> IAddress: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


def chat_transport(transport: ITransport | None) -> ChatTransport:
    """A connected protocol's transport as what chat uses of it: the one
    cast of the transports, for the gap in Twisted's types that
    :class:`ChatTransport` describes."""
    assert transport is not None, "not connected yet"
    return cast(ChatTransport, transport)


def describe_address(address: object) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(getattr(address, "name", None) or address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _no_delay(transport: object) -> None:
    """Chat is small packets that matter now: no Nagle delay on TCP (and TLS
    over it). One write per recipient per turn already batches what can be."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass  # a Unix socket has no Nagle to turn off


@implementer(IProtocol, ILoggingContext)
class Framing:
    """A framing protocol: what its :class:`ConnectionPolicy` asks of it,
    with the defaults. Subclasses read units (``feed``, ``next_unit``,
    ``waiting``, ``handle``, ``read_done``) and may render packets their own
    way (``render``, ``last_words``).

    It is Twisted's ``Protocol`` without its base class: that one has no
    slots, so each instance would carry a dict, its values and a weak
    reference slot. 100,000 idle connections are 100,000 of these."""

    __slots__ = ("connected", "connection", "factory", "transport")

    connected: int
    transport: Any  # ITransport once connected (a lean TCP connection, TLS, a relay's)
    factory: Any  # the ChatFactory that built it

    #: The wire of its connections (IRC's depends on the capabilities a
    #: client asks for: it passes its own to ``__init__``).
    wire: Wire

    def __init__(self, hub: Hub, wire: Wire | None = None) -> None:
        self.transport = None
        self.connected = 0
        self.factory = None
        self.connection = ConnectionPolicy(hub, self, self.wire if wire is None else wire)

    # -- Twisted ---------------------------------------------------------------------

    def makeConnection(self, transport: ITransport | None) -> None:
        self.connected = 1
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        self.connection.made()

    def logPrefix(self) -> str:
        return type(self).__name__

    def make_outbox(
        self,
        transport: Consumer,
        sendq: int,
        overflowed: Callable[[ConnectionPolicy], None],
        owner: ConnectionPolicy,
    ) -> Outbox[ConnectionPolicy]:
        """The connection's outbox (IRC's renders the core's payloads for its
        connection and can hold a labeled request's answer)."""
        return Outbox(transport, sendq, overflowed, owner)

    def dataReceived(self, data: bytes) -> None:
        self.connection.read(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connection.lost(reason)

    # -- reading: the policy's loop asks ------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes that came (b"" when reading resumes)."""
        raise NotImplementedError

    def next_unit(self) -> Any:
        """The next whole unit (frame, line, event), or None until more bytes come."""
        raise NotImplementedError

    def waiting(self) -> bool:
        """Whether more input waits behind the unit just taken."""
        raise NotImplementedError

    def handle(self, unit: Any) -> None:
        """One unit: a packet for :meth:`ConnectionPolicy.payload` or
        :meth:`ConnectionPolicy.packetReceived`, or the framing's own."""
        raise NotImplementedError

    def read_done(self) -> None:
        """The loop stopped (nothing whole left, paused or closing)."""

    # -- writing and the hub -----------------------------------------------------------

    def accept(self) -> str | None:
        """Ask the hub for a place: None, or the BYE reason it is refused with."""
        return self.connection.hub.accept(self.connection)

    def render(self, packet: Any) -> None:
        """One packet for this connection alone."""
        connection = self.connection
        connection.outbox.write(connection.wire.frame(codec.encode(packet)))

    def last_words(self, final: bytes | None, why: str) -> bytes | None:
        """What ends the stream: by default the BYE or ERROR itself."""
        return final

    @property
    def host(self) -> str:
        transport: Any = self.transport
        if type(transport) is LeanServer:  # its peer as accepted: no IPv4Address made
            return transport.client[0]
        peer = transport.getPeer() if transport is not None else None
        return getattr(peer, "host", "") or ""

    @property
    def address(self) -> str:
        transport: Any = self.transport
        if type(transport) is LeanServer:
            host, port = transport.client
            return f"{host}:{port}"
        return describe_address(transport.getPeer()) if transport is not None else "?"


class ConnectionPolicy(Spender):
    """One connection's policy: what the hub sees as a Connection.

    ``protocol`` is its framing; a broadcast costs one call per recipient,
    its outbox's ``deliver``. The outbox and the fair share's budget are
    set when the connection is made (they need its transport and its
    time); nothing uses them before. The policy is its
    own fair-share budget (a :class:`~chatproto.core.budget.Spender`, its
    numbers in three slots here): one object fewer per connection.
    """

    __slots__ = (
        "MAX_LENGTH",
        "_authenticating",
        "_buckets",
        "_handled",
        "_is_lost",
        "_last_heard",
        "_lost",
        "_more_waiting",
        "_over_since",
        "_password_refusals",
        "_pinged",
        "_stamp",
        "_throttle",
        "_timer",
        "_tokens",
        "hub",
        "id",
        "opened",
        "outbox",
        "paused",
        "protocol",
        "session",
        "state",
        "wire",
    )

    # Slots set when the connection is made (``made``), not in ``__init__``.
    outbox: Outbox[ConnectionPolicy]

    def __init__(self, hub: Hub, protocol: Framing, wire: Wire) -> None:
        self.id = 0
        self.session: Session | None = None
        self.hub = hub
        self.protocol = protocol
        self.wire = wire
        # A LOGIN is small: a pending connection can't make the server hold
        # a large partial frame. max_frame once logged in.
        self.MAX_LENGTH = min(hub.limits.pending_frame, hub.limits.max_frame)
        self.state = PENDING
        self.opened = 0.0
        self._timer: Deadline | None = None
        self._last_heard = 0.0
        self._pinged = False  # a PING is out and nothing was heard since
        self._buckets: dict[str, TokenBucket] | None = None  # made at the first rate-limited packet
        self._lost: list[Deferred[None]] | None = None
        self._is_lost = False
        self._handled = 0  # packets handled in this read (this reactor turn)
        self._throttle: IDelayedCall | None = None
        self._authenticating: Deferred[Any] | None = None  # a password check: reading waits
        self._password_refusals = 0
        self.paused = False  # the read loop stops while set
        self._more_waiting = False  # input came after the unit being handled

    # -- what the hub calls (core.connection.Connection) -------------------------

    def send(self, packet: Any) -> None:
        self.protocol.render(packet)

    @property
    def heard(self) -> float:
        return self._last_heard

    # The hub's, read when needed rather than held in a slot per connection.

    @property
    def clock(self) -> IReactorTime:
        return self.hub.clock

    @property
    def rate(self) -> float:  # type: ignore[override]
        """The fair share's units a second (Spender)."""
        return self.hub.limits.packet_rate

    @property
    def burst(self) -> float:  # type: ignore[override]
        """The fair share's units at once (Spender)."""
        return self.hub.limits.packet_burst

    # Connection (core/connection.py) lists host and address as attributes;
    # here they are derived from the transport, never stored (a slot each
    # would cost every connection), so setting one is refused, as for a
    # property without a setter.

    @property
    def host(self) -> str:
        """The peer's IP address ("" for a Unix socket): what per-address limits count."""
        return self.protocol.host

    @host.setter
    def host(self, value: str) -> None:
        raise AttributeError("a connection's host is its transport's")

    @property
    def address(self) -> str:
        """The peer's address, for the console and the log (derived, not stored)."""
        return self.protocol.address

    @address.setter
    def address(self, value: str) -> None:
        raise AttributeError("a connection's address is its transport's")

    @property
    def transport(self) -> ITransport | None:
        """The framing's transport (what metrics ask: TLS or not)."""
        return self.protocol.transport

    @property
    def closing(self) -> bool:
        return self.state == CLOSING

    def disconnect(self, reason: str, *, flush: bool = True) -> None:
        """BYE ``reason``, then close. The hub has already been told (or never
        knew). ``flush=False`` drops queued output (a slow consumer won't read it)."""
        self.close(self.wire.frame(codec.encode(codec.Bye(reason))), flush=flush, why=reason)

    def closed(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._is_lost:
            d.callback(None)
        else:
            self._lost = (self._lost or []) + [d]
        return d

    def abort(self) -> None:
        """Drop the connection now, unsent output and all."""
        if not self._is_lost:
            chat_transport(self.protocol.transport).abortConnection()

    def end(self) -> None:
        self.close(None, why="relayed")

    def relay(self) -> None:
        self.state = RELAYED
        self._cancel_timer()  # the node running it keeps it alive
        self.MAX_LENGTH = self.hub.limits.max_frame

    def rewire(self, wire: Wire) -> None:
        """The framing's wire changed (IRC capabilities): once logged in,
        the broadcasts it receives move to the new wire too."""
        old, self.wire = self.wire, wire
        session = self.session
        if old is not wire and session is not None and self.state == CONNECTED:
            self.hub.broadcast.rewire([SERVER, *session.rooms], self.id, self, wire)

    # -- the framing's Twisted events --------------------------------------------------

    def made(self) -> None:
        """The connection is up: a place at the hub, or a BYE."""
        self.opened = self.clock.seconds()
        self._last_heard = self.opened
        limits = self.hub.limits
        transport = chat_transport(self.protocol.transport)
        self.start(self.opened)
        self.outbox = self.protocol.make_outbox(transport, limits.sendq, self.hub.overflowed, self)
        refused = self.protocol.accept()
        if refused is not None:
            self.hub.counters.disconnects[refused] += 1
            self.close(self.wire.frame(codec.encode(codec.Bye(refused))), why=refused)
            return
        _no_delay(transport)
        self._schedule(limits.login_timeout)

    def read(self, data: bytes) -> None:
        """The read loop: the framing's units one at a time, stopping while
        paused (the fair share, a password check) or closing."""
        if self.state == CLOSING:
            return  # still read (a FIN or TLS close must be seen), never parsed
        self._handled = 0
        framing = self.protocol
        framing.feed(data)
        outbox = self.outbox
        holding = outbox.hold()  # this read's answers leave in one write
        try:
            while not self.paused and self.state != CLOSING:
                unit = framing.next_unit()
                if unit is None:
                    break
                self._more_waiting = framing.waiting()
                framing.handle(unit)
            framing.read_done()
        finally:
            if holding:
                outbox.release()

    def lost(self, reason: Failure | None = None) -> None:
        was = self.state
        self.state = CLOSING
        self._cancel_timer()
        self._cancel_throttle()
        if self._authenticating is not None:
            self._authenticating.cancel()
        self.hub.leave(self, "connection_lost")
        why = reason.getErrorMessage() if reason is not None else "done"
        self.hub.connection_log.closed(self.id, self.address, was, why)
        self._is_lost = True
        waiting, self._lost = self._lost or [], None
        for d in waiting:
            d.callback(None)

    # -- packets --------------------------------------------------------------------------

    def payload(self, payload: bytes) -> None:
        """One packet's bytes (type byte + JSON), as Int32 and WebSocket carry them."""
        if self.state == CLOSING:
            return  # units that arrived in the same read as QUIT or a fatal error
        if self.state == RELAYED:
            now = self._heard()
            try:
                self.hub.relayed(self, payload)
            except ProtocolError as e:
                self.refused(e, None)
            self._pace(1.0, now)
            return
        try:
            packet = codec.decode_client(
                payload, self.session.version if self.session else codec.PROTOCOL_VERSION
            )
        except ProtocolError as e:
            now = self._heard()
            self.refused(e, None)
            self._pace(1.0 + REFUSAL, now)
            return
        self.packetReceived(packet)

    def packetReceived(self, packet: Any) -> None:
        """A well-formed client packet, however it was framed: its row of the
        command table (core/commands.py) checked and handled, within the
        connection's limits (IRC, which builds packets itself, calls this)."""
        if self.state == CLOSING:
            return
        now = self._heard()
        units = 1.0
        try:
            command = COMMANDS[type(packet)]
            units = command.cost(packet, self.hub.limits.history_page, len(self.hub.directory.rooms))
            apply(command, self, packet)
        except ProtocolError as e:
            units += REFUSAL
            self.refused(e, packet)
        except Exception:
            units += REFUSAL
            # The packet's type only: message text never goes to the log.
            log.failure("connection {id}: failed handling {kind}", id=self.id, kind=type(packet).__name__)
            self.refuse(ErrorCode.INTERNAL, "the server failed on this packet", getattr(packet, "ref", None))
        self._pace(units, now)

    def charge(self, units: float = 1.0) -> None:
        """What a packet costs, for a unit the framing handles itself (a
        WebSocket Ping, an IRC command that is no packet)."""
        self._pace(units, self._heard())

    def too_long(self, length: int) -> None:
        """A unit over MAX_LENGTH: a fatal ERROR."""
        log.info("connection {id}: frame of {length} bytes refused", id=self.id, length=length)
        self.fatal(
            ErrorCode.FRAME_TOO_LARGE,
            f"a frame of {length} bytes exceeds the limit of {self.MAX_LENGTH}",
        )

    def _heard(self) -> float:
        """The peer said something: now, which keepalive counts from."""
        now = self._last_heard = self.clock.seconds()
        self._pinged = False
        return now

    def bucket(self, kind: Bucket, now: float) -> TokenBucket:
        """The rate bucket a command row names (core/commands.py), made at
        its first use: most connections mostly listen."""
        if self._buckets is None:
            self._buckets = {}
        bucket = self._buckets.get(kind.name)
        if bucket is None:
            bucket = self._buckets[kind.name] = kind.make(self.hub.limits, now)
        return bucket

    # -- fair share (core/budget.py) ------------------------------------------------

    def _pace(self, units: float, now: float) -> None:
        """Do what the budget says after this packet: go on, stop reading for
        a while, or cut the connection."""
        if self.state == CLOSING:
            return
        self._handled += 1
        limits = self.hub.limits
        delay = self.settle(units, now, self._handled, self._more_waiting, limits)
        if delay is None:
            return
        if delay == CUT:
            log.warn("connection {id}: past its budget for {t:.0f}s, cut", id=self.id, t=limits.flood_cut)
            self.hub.leave(self, "kicked")
            self.disconnect("kicked")
            return
        self.pauseProducing()  # the read loop stops; the transport stops reading
        # A reactor call of its own, not the shared deadline heap: with no
        # delay it must still wait for the next turn. Only while throttled.
        self._throttle = self.clock.callLater(delay, self._unthrottle)

    def pauseProducing(self) -> None:
        self.paused = True
        chat_transport(self.protocol.transport).pauseProducing()

    def resumeProducing(self) -> None:
        """Read again, and handle what is buffered."""
        self.paused = False
        chat_transport(self.protocol.transport).resumeProducing()
        self.read(b"")

    def _unthrottle(self) -> None:
        """Read again, and handle what is buffered (nothing, once closing),
        unless a LOGIN is still being checked."""
        self._cancel_throttle()
        if self._authenticating is None or self.state == CLOSING:
            self.resumeProducing()

    def _cancel_throttle(self) -> None:
        if self._throttle is not None and self._throttle.active():
            self._throttle.cancel()
        self._throttle = None

    # -- LOGIN and QUIT (rows of the command table) ------------------------------------

    def log_in(self, packet: codec.Login) -> None:
        if self.state == CONNECTED:
            raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN, "this connection is already logged in")
        try:
            d = self.hub.login(self, packet)
        except ProtocolError as e:
            self._login_refused(e, packet)
            return
        d.addCallbacks(self._logged_in, self._login_failed, errbackArgs=(packet,))
        self.checking_password(d)

    def checking_password(self, d: Deferred[Any]) -> None:
        """Nothing else is read while a password is checked; a connection
        that goes away meanwhile cancels the check (a hash still queued is
        dropped, not run for nobody)."""
        self._authenticating = d
        d.addBoth(self._authenticated)
        if self._authenticating is d:  # not over at once (a chained check counts too)
            self.pauseProducing()

    def _authenticated(self, result: object) -> object:
        self._authenticating = None
        if self.paused and self._throttle is None and self.state != CLOSING:
            self.resumeProducing()
        return result

    def _login_failed(self, failure: Failure, packet: codec.Login) -> None:
        if failure.check(CancelledError):
            return  # the connection went away while its password was checked
        if isinstance(failure.value, ProtocolError):
            self._login_refused(failure.value, packet)
        else:
            log.failure("connection {id}: login failed", failure, id=self.id)
            self.refuse(ErrorCode.INTERNAL, "the server failed on this login", packet.ref)

    def _login_refused(self, e: ProtocolError, packet: codec.Login) -> None:
        self.hub.counters.logins[e.code] += 1
        if e.code == ErrorCode.UNSUPPORTED_VERSION:
            self.fatal(e.code, e.message, packet.ref)
            return
        if self.state == CLOSING:
            return
        self.refused(e, packet)
        if e.code in (ErrorCode.BAD_PASSWORD, ErrorCode.LOCKED_OUT):
            self._password_refusals += 1
            if self._password_refusals >= PASSWORD_TRIES:
                # A guesser opens connections to try again, which the address limits pace.
                self.disconnect("too_many_attempts")

    def _logged_in(self, session: Session | None) -> None:
        if session is None or self.state == CLOSING:
            return  # gone while its password was checked
        self.hub.counters.logins["ok"] += 1
        self.state = CONNECTED
        self.MAX_LENGTH = self.hub.limits.max_frame
        self._schedule(self.hub.limits.ping_interval)

    def quit(self, reason: str | None) -> None:
        # A cluster node frees the nick first: the client may log in elsewhere at once.
        released = self.hub.leave(self, "quit", reason)
        self.close(None, why="quit", after=released)

    # -- timers ------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        """The connection's one deadline, ``delay`` from now: what it does
        is the state's (:meth:`__call__`)."""
        self._cancel_timer()
        self._timer = self.hub.timers.call_later(delay, self)

    def __call__(self) -> None:
        """The deadline came: the login's while pending, the keepalive's
        once logged in, the close's grace once closing. The policy is its
        own deadline's callback: a bound method held per connection for
        as long as it is up would cost each one an object."""
        if self.state == PENDING:
            self._login_timed_out()
        elif self.state == CONNECTED:
            self._keepalive()
        else:
            self._abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _login_timed_out(self) -> None:
        self._timer = None
        log.info("connection {id}: no login within {t}s", id=self.id, t=self.hub.limits.login_timeout)
        self.hub.leave(self, "login_timeout")
        self.disconnect("login_timeout")

    def _keepalive(self) -> None:
        """One timer per connection, re-armed from when we last heard from the
        peer, so a busy connection costs a float store per packet, not a timer reset."""
        self._timer = None
        limits = self.hub.limits
        now = self.clock.seconds()
        silent = now - self._last_heard
        if silent >= limits.idle_timeout:
            log.info("connection {id}: silent for {t:.0f}s, timed out", id=self.id, t=silent)
            self.hub.leave(self, "timeout")
            self.disconnect("timeout")
            return
        if silent >= limits.ping_interval and not self._pinged:
            self._pinged = True
            self.send(codec.ServerPing(f"{int(now)}"))
        if self._pinged:  # look again when an answer would make us due to ping
            due = min(self._last_heard + limits.idle_timeout, now + limits.ping_interval)
        else:
            due = self._last_heard + limits.ping_interval
        self._schedule(due - now)

    # -- refusing and closing ----------------------------------------------------------

    def refused(self, e: ProtocolError, packet: Any) -> None:
        """The ERROR for ``e``, with the packet's ref unless ``e`` has one."""
        ref = e.ref if e.ref is not None else getattr(packet, "ref", None)
        self.refuse(e.code, e.message, ref, e.retry_after)

    def refuse(self, code: str, message: str, ref: str | None, retry_after: float | None = None) -> None:
        self.hub.counters.refusals[code] += 1
        self.send(codec.Error(code, message, ref, retry_after))

    def fatal(self, code: str, message: str, ref: str | None = None, why: str = "") -> None:
        """An ERROR after which the stream can't continue: it is the last packet.
        Others see the peer leave as ``connection_lost``."""
        self.hub.leave(self, "connection_lost")
        self.hub.counters.refusals[code] += 1
        self.close(self.wire.frame(codec.encode(codec.Error(code, message, ref))), why=why or code)

    def close(
        self,
        final: bytes | None,
        *,
        flush: bool = True,
        why: str = "",
        after: Deferred[None] | None = None,
    ) -> None:
        """Stop, and end the stream after ``final`` (a BYE or a fatal ERROR),
        once ``after`` (if given) has fired; ``why`` is its reason or code,
        for framings that close with one."""
        if self.state == CLOSING:
            return
        # Input is ignored from now on, but still read: a TLS close needs the
        # peer's close_notify, and a FIN tells us the peer is gone.
        self.state = CLOSING
        if self.paused:  # throttled: read again, so the peer's close is seen
            self._unthrottle()
        words = self.protocol.last_words(final, why)
        if after is None:
            self.outbox.close(words, flush=flush)
        else:
            after.addBoth(lambda _: self.outbox.close(words, flush=flush))
        self._schedule(CLOSE_GRACE)

    def _abort(self) -> None:
        self._timer = None
        log.info("connection {id}: not closed after {t}s, aborting", id=self.id, t=CLOSE_GRACE)
        self.abort()
