"""The Int32 transport: length-prefixed frames over TCP, TLS or a Unix socket.

One connection: pending -> connected -> gone. Parses frames with the codec,
enforces per-connection limits (frame size, rate, login and idle timeouts,
keepalive) and hands valid requests to the hub; the hub answers through
the :class:`~chatproto.core.connection.Connection` calls. One bad packet
gets an ERROR and nothing else; the hub never sees it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.budget import CUT, REFUSAL, Budget, cost
from chatproto.core.connection import Session
from chatproto.core.hub import Hub
from chatproto.core.timers import Deadline
from chatproto.limits import TokenBucket
from chatproto.transports.outbox import Outbox

log = Logger()

#: LOGINs refused for their password (wrong, or locked out) before the connection is closed.
PASSWORD_TRIES = 3

#: After the server decides to close, how long a peer may take to read its
#: last packets before the connection is aborted.
CLOSE_GRACE = 10.0

PENDING, CONNECTED, CLOSING = "pending", "connected", "closing"


def describe_address(address) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(getattr(address, "name", None) or address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_PREFIX = struct.Struct("!I")


def _no_delay(transport) -> None:
    """Chat is small packets that matter now: no Nagle delay on TCP (and TLS
    over it). One write per recipient per turn already batches what can be."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass  # a Unix socket has no Nagle to turn off


class Int32Wire:
    """Frames as Int32StringReceiver writes them: a 4-byte big-endian length."""

    name = "int32"
    frame = staticmethod(codec.frame)


INT32 = Int32Wire()


class ChatProtocol(Int32StringReceiver):
    # Slots keep the per-connection footprint small: 10,000 idle connections
    # are 10,000 of these. Every attribute is a slot (Twisted's too), so no
    # instance dict is ever made: our own frame loop (dataReceived) is why.
    __slots__ = (
        "MAX_LENGTH",
        "_authenticating",
        "_bucket",
        "_budget",
        "_handled",
        "_is_lost",
        "_joins",
        "_last_heard",
        "_lost",
        "_more_waiting",
        "_password_refusals",
        "_pinged",
        "_throttle",
        "_timer",
        "_unprocessed",
        "clock",
        "connected",
        "deliver",
        "factory",
        "hub",
        "id",
        "opened",
        "outbox",
        "paused",
        "session",
        "state",
        "transport",
    )

    def __init__(self, hub: Hub) -> None:
        self.id = 0
        self.session: Session | None = None
        self.hub = hub
        self.clock: IReactorTime = hub.clock
        # A LOGIN is small: a pending connection can't make the server hold
        # a large partial frame. max_frame once logged in.
        self.MAX_LENGTH = min(hub.limits.pending_frame, hub.limits.max_frame)
        self.state = PENDING
        self.opened = 0.0
        self._timer: Deadline | None = None
        self._last_heard = 0.0
        self._pinged = False  # a PING is out and nothing was heard since
        self._bucket: TokenBucket | None = None
        self._joins: TokenBucket | None = None
        self._lost: list[Deferred] | None = None
        self._is_lost = False
        self._budget: Budget | None = None
        self._handled = 0  # packets handled in this read (this reactor turn)
        self._throttle: IDelayedCall | None = None
        self._authenticating: Deferred | None = None  # a password check: reading waits
        self._password_refusals = 0
        self.paused = False  # the frame loop stops while set
        self._unprocessed = b""
        self._more_waiting = False  # bytes came after the frame being handled
        self.transport = None
        self.connected = 0
        self.factory = None

    wire = INT32

    # -- what the hub calls (core.connection.Connection) -------------------------
    # ``deliver`` is the outbox's own write, set in connectionMade: a broadcast
    # costs one call per recipient.

    def send(self, packet) -> None:
        self.outbox.write(self.wire.frame(codec.encode(packet)))

    @property
    def host(self) -> str:
        """The peer's IP address ("" for a Unix socket): what per-address limits count."""
        peer = self.transport.getPeer() if self.transport is not None else None
        return getattr(peer, "host", "") or ""

    def disconnect(self, reason: str, *, flush: bool = True) -> None:
        """BYE ``reason``, then close. The hub has already been told (or never
        knew). ``flush=False`` drops queued output (a slow consumer won't read it)."""
        self._close(self.wire.frame(codec.encode(codec.Bye(reason))), flush=flush, why=reason)

    def closed(self) -> Deferred:
        d: Deferred = Deferred()
        if self._is_lost:
            d.callback(None)
        else:
            self._lost = (self._lost or []) + [d]
        return d

    # -- Twisted callbacks -----------------------------------------------------

    @property
    def address(self) -> str:
        """The peer's address, for the console and the log (derived, not stored)."""
        return describe_address(self.transport.getPeer()) if self.transport is not None else "?"

    def connectionMade(self) -> None:
        self.opened = self.clock.seconds()
        self._last_heard = self.opened
        limits = self.hub.limits
        self._budget = Budget(limits.packet_rate, limits.packet_burst, self.opened)
        self.outbox = Outbox(self.transport, limits.sendq, self.hub.overflowed, self)
        self.deliver = self.outbox.write
        refused = self._accept()
        if refused is not None:
            self.hub.counters.disconnects[refused] += 1
            self._close(self.wire.frame(codec.encode(codec.Bye(refused))), why=refused)
            return
        _no_delay(self.transport)
        self._schedule(limits.login_timeout, self._login_timed_out)

    def _accept(self) -> str | None:
        """Ask the hub for a place: None, or the BYE reason it is refused with."""
        return self.hub.accept(self)

    def dataReceived(self, data: bytes) -> None:
        """Int32 frames to stringReceived, stopping while paused (the fair
        share) or closing. IntNStringReceiver's loop, less its compatibility
        hook, which would cost every connection a dict."""
        if self.state == CLOSING:
            return
        self._handled = 0
        buffer = self._unprocessed + data if self._unprocessed else data
        offset, size = 0, len(buffer)
        while size - offset >= 4 and not self.paused and self.state != CLOSING:
            (length,) = _PREFIX.unpack_from(buffer, offset)
            if length > self.MAX_LENGTH:
                self._unprocessed = b""
                self.lengthLimitExceeded(length)
                return
            end = offset + 4 + length
            if end > size:
                break
            self._more_waiting = end < size
            offset = end
            self.stringReceived(buffer[end - length : end])
        self._unprocessed = buffer[offset:] if offset else buffer

    def stringReceived(self, payload: bytes) -> None:
        if self.state == CLOSING:
            return  # frames that arrived in the same read as QUIT or a fatal error
        try:
            packet = codec.decode_client(
                payload, self.session.version if self.session else codec.PROTOCOL_VERSION
            )
        except ProtocolError as e:
            now = self._heard()
            self._refused(e, None)
            self._pace(1.0 + REFUSAL, now)
            return
        self.packetReceived(packet)

    def packetReceived(self, packet) -> None:
        """A well-formed client packet, however it was framed: handled within
        the connection's limits (a transport that builds packets itself, such
        as IRC's, calls this directly)."""
        if self.state == CLOSING:
            return
        now = self._heard()
        units = 1.0
        try:
            units = cost(packet, self.hub.limits.history_page, len(self.hub.directory.rooms))
            _HANDLERS[type(packet)](self, packet)
        except ProtocolError as e:
            units += REFUSAL
            self._refused(e, packet)
        except Exception:
            units += REFUSAL
            # The packet's type only: message text never goes to the log.
            log.failure("connection {id}: failed handling {kind}", id=self.id, kind=type(packet).__name__)
            self._refuse(ErrorCode.INTERNAL, "the server failed on this packet", getattr(packet, "ref", None))
        self._pace(units, now)

    def _heard(self) -> float:
        """The peer said something: now, which keepalive counts from."""
        now = self._last_heard = self.clock.seconds()
        self._pinged = False
        return now

    # -- fair share (core/budget.py) ------------------------------------------------

    def _pace(self, units: float, now: float) -> None:
        """Do what the budget says after this packet: go on, stop reading for
        a while, or cut the connection."""
        if self.state == CLOSING:
            return
        self._handled += 1
        limits = self.hub.limits
        delay = self._budget.settle(units, now, self._handled, self._more_waiting, limits)
        if delay is None:
            return
        if delay == CUT:
            log.warn("connection {id}: past its budget for {t:.0f}s, cut", id=self.id, t=limits.flood_cut)
            self.hub.leave(self, "kicked")
            self.disconnect("kicked")
            return
        self.pauseProducing()  # the frame loop stops; the transport stops reading
        # A reactor call of its own, not the shared deadline heap: with no
        # delay it must still wait for the next turn. Only while throttled.
        self._throttle = self.clock.callLater(delay, self._unthrottle)

    def _unthrottle(self) -> None:
        """Read again, and handle what is buffered (nothing, once closing),
        unless a LOGIN is still being checked."""
        self._cancel_throttle()
        if self._authenticating is None or self.state == CLOSING:
            self.resumeProducing()

    def _refused(self, e: ProtocolError, packet) -> None:
        ref = e.ref if e.ref is not None else getattr(packet, "ref", None)
        self._refuse(e.code, e.message, ref, e.retry_after)

    def _cancel_throttle(self) -> None:
        if self._throttle is not None and self._throttle.active():
            self._throttle.cancel()
        self._throttle = None

    def lengthLimitExceeded(self, length: int) -> None:
        log.info("connection {id}: frame of {length} bytes refused", id=self.id, length=length)
        self._fatal(
            ErrorCode.FRAME_TOO_LARGE,
            f"a frame of {length} bytes exceeds the limit of {self.MAX_LENGTH}",
        )

    def connectionLost(self, reason: Failure = None) -> None:
        was = self.state
        self.state = CLOSING
        self._cancel_timer()
        self._cancel_throttle()
        if self._authenticating is not None:
            self._authenticating.cancel()
        self.hub.leave(self, "connection_lost")
        log.info(
            "connection {id} from {address} closed ({was}): {why}",
            id=self.id,
            address=self.address,
            was=was,
            why=reason.getErrorMessage() if reason is not None else "done",
        )
        self._is_lost = True
        waiting, self._lost = self._lost or [], None
        for d in waiting:
            d.callback(None)

    # -- packet handlers ---------------------------------------------------------

    def _require_login(self) -> Session:
        if self.session is None:
            raise ProtocolError(ErrorCode.NOT_LOGGED_IN, "log in first")
        return self.session

    def _on_login(self, packet: codec.Login) -> None:
        if self.state == CONNECTED:
            raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN, "this connection is already logged in")
        try:
            d = self.hub.login(self, packet)
        except ProtocolError as e:
            self._login_refused(e, packet)
            return
        d.addCallbacks(self._logged_in, self._login_failed, errbackArgs=(packet,))
        self.checking_password(d)

    def checking_password(self, d: Deferred) -> None:
        """Nothing else is read while a password is checked; a connection
        that goes away meanwhile cancels the check (a hash still queued is
        dropped, not run for nobody)."""
        self._authenticating = d
        d.addBoth(self._authenticated)
        if self._authenticating is d:  # not over at once (a chained check counts too)
            self.pauseProducing()

    def _authenticated(self, result):
        self._authenticating = None
        if self.paused and self._throttle is None and self.state != CLOSING:
            self.resumeProducing()
        return result

    def _login_failed(self, failure: Failure, packet: codec.Login) -> None:
        if failure.check(CancelledError):
            return  # the connection went away while its password was checked
        if failure.check(ProtocolError):
            self._login_refused(failure.value, packet)
        else:
            log.failure("connection {id}: login failed", failure, id=self.id)
            self._refuse(ErrorCode.INTERNAL, "the server failed on this login", packet.ref)

    def _login_refused(self, e: ProtocolError, packet: codec.Login) -> None:
        self.hub.counters.logins[e.code] += 1
        if e.code == ErrorCode.UNSUPPORTED_VERSION:
            self._fatal(e.code, e.message, packet.ref)
            return
        if self.state == CLOSING:
            return
        self._refused(e, packet)
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
        self._schedule(self.hub.limits.ping_interval, self._keepalive)

    def _rate_limit(self) -> None:
        now = self.clock.seconds()
        limits = self.hub.limits
        if self._bucket is None:  # made at the first SAY or WHISPER: most connections mostly listen
            self._bucket = TokenBucket(limits.rate, limits.burst, now)
        _spend(self._bucket, now, "messages")

    def _join_rate_limit(self) -> None:
        now = self.clock.seconds()
        limits = self.hub.limits
        if self._joins is None:
            self._joins = TokenBucket(limits.join_rate, limits.join_burst, now)
        _spend(self._joins, now, "JOIN, PART, TOPIC, ACCOUNT, MODERATE or ADMIN")

    def _on_say(self, packet: codec.Say) -> None:
        self._require_login()
        self._rate_limit()
        self.hub.say(self, packet.text, packet.ref, packet.room)

    def _on_whisper(self, packet: codec.Whisper) -> None:
        self._require_login()
        self._rate_limit()
        d = self.hub.whisper(self, packet)
        if d is not None:  # to another node of a cluster
            d.addErrback(self._request_failed, packet, "could not pass the whisper on")

    def _on_list(self, packet: codec.ListRooms) -> None:
        self._require_login()
        d = self.hub.list_rooms(self, packet)
        if d is not None:  # a cluster node asks the store
            d.addErrback(self._request_failed, packet, "could not list the rooms")

    def _on_mark(self, packet: codec.Mark) -> None:
        self._require_login()
        self.hub.mark(self, packet)

    def _on_history(self, packet: codec.HistoryRequest) -> None:
        self._require_login()
        d = self.hub.history(self, packet)
        d.addCallback(self.send)
        d.addErrback(self._request_failed, packet, "could not read its history")

    def _request_failed(self, failure: Failure, packet, what: str) -> None:
        """A request answered later failed: its own ERROR, or internal."""
        if self.state == CLOSING:
            return
        if failure.check(ProtocolError):
            self._refused(failure.value, packet)
            return
        log.failure("connection {id}: {kind} failed", failure, id=self.id, kind=type(packet).__name__)
        self._refuse(ErrorCode.INTERNAL, f"the server {what}", packet.ref)

    def _presence(self, packet) -> None:
        """JOIN, PART, TOPIC, ACCOUNT, MODERATE and ADMIN: one bucket, then
        the hub; an answer that comes later may still be refused."""
        self._require_login()
        self._join_rate_limit()
        d = _PRESENCE[type(packet)](self.hub, self, packet)
        if isinstance(d, Deferred):
            d.addErrback(self._request_failed, packet, "failed on this request")

    def _on_ping(self, packet: codec.Ping) -> None:
        self.send(codec.PongReply(packet.token))

    def _on_pong(self, packet: codec.Pong) -> None:
        pass  # hearing anything is what keeps the connection alive

    def _on_quit(self, packet: codec.Quit) -> None:
        # A cluster node frees the nick first: the client may log in elsewhere at once.
        released = self.hub.leave(self, "quit", packet.reason)
        self._close(None, why="quit", after=released)

    # -- timers ------------------------------------------------------------------

    def _schedule(self, delay: float, call: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.hub.timers.call_later(delay, call)

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
        self._schedule(due - now, self._keepalive)

    # -- closing -------------------------------------------------------------------

    def _refuse(self, code: str, message: str, ref: str | None, retry_after: float | None = None) -> None:
        self.hub.counters.refusals[code] += 1
        self.send(codec.Error(code, message, ref, retry_after))

    def _fatal(self, code: str, message: str, ref: str | None = None, why: str = "") -> None:
        """An ERROR after which the stream can't continue: it is the last packet.
        Others see the peer leave as ``connection_lost``."""
        self.hub.leave(self, "connection_lost")
        self.hub.counters.refusals[code] += 1
        self._close(self.wire.frame(codec.encode(codec.Error(code, message, ref))), why=why or code)

    def _close(
        self, final: bytes | None, *, flush: bool = True, why: str = "", after: Deferred | None = None
    ) -> None:
        """Stop, and end the stream after ``final`` (a BYE or a fatal ERROR),
        once ``after`` (if given) has fired; ``why`` is its reason or code,
        for transports that close with one."""
        if self.state == CLOSING:
            return
        # Input is ignored from now on, but still read: a TLS close needs the
        # peer's close_notify, and a FIN tells us the peer is gone.
        self.state = CLOSING
        if self.paused:  # throttled: read again, so the peer's close is seen
            self._unthrottle()
        words = self._last_words(final, why)
        if after is None:
            self.outbox.close(words, flush=flush)
        else:
            after.addBoth(lambda _: self.outbox.close(words, flush=flush))
        self._schedule(CLOSE_GRACE, self._abort)

    def _last_words(self, final: bytes | None, why: str) -> bytes | None:
        """What ends the stream: for Int32 framing, the BYE or ERROR itself."""
        return final

    def _abort(self) -> None:
        self._timer = None
        log.info("connection {id}: not closed after {t}s, aborting", id=self.id, t=CLOSE_GRACE)
        self.abort()

    def abort(self) -> None:
        """Drop the connection now, unsent output and all."""
        if not self._is_lost:
            self.transport.abortConnection()


def _spend(bucket: TokenBucket, now: float, what: str) -> None:
    """A token from ``bucket``, or ``rate_limited`` naming ``what`` it limits."""
    if not bucket.take(now):
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"slow down: at most {bucket.rate:g} {what} a second "
            f"(burst {bucket.burst}); this one was dropped",
        )


_HANDLERS: dict[type, Callable] = {
    codec.Login: ChatProtocol._on_login,
    codec.Say: ChatProtocol._on_say,
    codec.Whisper: ChatProtocol._on_whisper,
    codec.Ping: ChatProtocol._on_ping,
    codec.Pong: ChatProtocol._on_pong,
    codec.Quit: ChatProtocol._on_quit,
    codec.HistoryRequest: ChatProtocol._on_history,
    codec.Join: ChatProtocol._presence,
    codec.Part: ChatProtocol._presence,
    codec.SetTopic: ChatProtocol._presence,
    codec.AccountRequest: ChatProtocol._presence,
    codec.Moderate: ChatProtocol._presence,
    codec.AdminRequest: ChatProtocol._presence,
    codec.ListRooms: ChatProtocol._on_list,
    codec.Mark: ChatProtocol._on_mark,
}

#: What the hub does for each packet of the JOIN bucket.
_PRESENCE: dict[type, Callable] = {
    codec.Join: Hub.join,
    codec.Part: Hub.part,
    codec.SetTopic: Hub.set_topic,
    codec.AccountRequest: Hub.account,
    codec.Moderate: lambda hub, connection, packet: hub.moderation.moderate(connection, packet),
    codec.AdminRequest: lambda hub, connection, packet: hub.moderation.admin(connection, packet),
}


class ChatFactory(Factory):
    """Builds a ``protocol`` per connection, all sharing one hub."""

    noisy = False  # the listener logs its own address
    protocol = ChatProtocol

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def buildProtocol(self, addr) -> ChatProtocol:
        protocol = self.protocol(self.hub)
        protocol.factory = self
        return protocol
