"""The network session: one chat identity kept connected by a ClientService.

Emits a Qt signal for every server packet and state change; never touches a
widget. Knows how to come back after a drop: reconnect with backoff, log in
with the resume token, fill the gap with HISTORY ``after``, and re-send or
confirm what was typed while the link was down.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass

from OpenSSL import SSL
from PyQt6.QtCore import QObject, pyqtSignal
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatproto import codec
from chatproto.client import ChatClientProtocol
from chatproto.codec import ErrorCode
from chatproto.tls import PIN, TLSSettings, creator_for, fingerprint_of

log = Logger()

DISCONNECTED, CONNECTING, CONNECTED, RECONNECTING = "disconnected", "connecting", "connected", "reconnecting"

#: Messages typed while offline that wait for the link; more are refused.
MAX_QUEUED = 200
PING_EVERY = 15.0
#: BYE reasons after which reconnecting would be wrong.
_FINAL_BYES = {"kicked", "replaced"}
_FINAL_ERRORS = {ErrorCode.BAD_NICK, ErrorCode.NICK_TAKEN, ErrorCode.UNSUPPORTED_VERSION}


def retry_policy(initial: float = 1.0, cap: float = 30.0):
    """1 s doubling to 30 s, plus up to a second of jitter."""
    return backoffPolicy(initialDelay=initial, maxDelay=cap, factor=2.0, jitter=random.random)


@dataclass
class Outgoing:
    ref: str
    packet: object  # codec.Say or codec.Whisper
    sent: bool = False
    failed: bool = False  # refused by the server: waits for the user to retry


@implementer(IHandshakeListener)
class _Link(ChatClientProtocol):
    def __init__(self, session: ChatSession) -> None:
        self.session = session

    def connectionMade(self) -> None:
        self.session._link_made(self)

    def handshakeCompleted(self) -> None:  # TLS only
        self.session._handshake_done(self)

    def packetReceived(self, packet) -> None:
        self.session._packet(self, packet)

    def connectionLost(self, reason) -> None:
        self.session._link_lost(self, reason)


class _ReportingEndpoint:
    """Passes connection failures to the session so the UI can say why."""

    def __init__(self, endpoint, on_failure) -> None:
        self.endpoint = endpoint
        self.on_failure = on_failure

    def connect(self, factory) -> Deferred:
        d = self.endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        self.on_failure(failure.getErrorMessage())
        return failure


class ChatSession(QObject):
    stateChanged = pyqtSignal(str, str)  # state, detail
    reconnectScheduled = pyqtSignal(float)  # seconds until the next attempt
    welcomed = pyqtSignal(object)  # codec.Welcome
    messageReceived = pyqtSignal(object)  # codec.MessagePacket (live, or the own echo)
    historyReceived = pyqtSignal(object, bool, str)  # [codec.Message], more, "before" | "after"
    privateReceived = pyqtSignal(object)  # codec.Private
    peerJoined = pyqtSignal(object)  # codec.Joined
    peerLeft = pyqtSignal(object)  # codec.Left
    pendingChanged = pyqtSignal(object)  # codec.Pending
    sendQueued = pyqtSignal(str, object)  # ref, codec.Say | codec.Whisper
    sendConfirmed = pyqtSignal(str, int)  # ref, seq (0 for whispers)
    sendFailed = pyqtSignal(str, str)  # ref, why
    errorReceived = pyqtSignal(str, str)  # code, message: problems to show the user
    rttMeasured = pyqtSignal(float)
    certificateUnknown = pyqtSignal(str, str)  # host:port, SHA-256 fingerprint: trust it?

    def __init__(self, reactor, parent: QObject | None = None, retry=None) -> None:
        super().__init__(parent)
        self.reactor = reactor
        self.state = DISCONNECTED
        self.nick: str | None = None
        self.my_id: int | None = None
        self.limits: dict = {}
        self.last_seq = 0
        self.oldest_seq: int | None = None
        self.history_reset = False
        self._retry = retry or retry_policy()
        self._service: ClientService | None = None
        self._stopping: Deferred | None = None
        self._link: _Link | None = None
        self._logged_in = False
        self._token: str | None = None
        self._refs = (f"c{n}" for n in itertools.count(1))
        self._outgoing: dict[str, Outgoing] = {}  # in typing order
        self._queued: deque[str] = deque()
        self._catching_up = False
        self._older_requested = False
        self._final_reason: str | None = None
        self._pings: dict[str, float] = {}
        self._ping_tokens = itertools.count(1)
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = reactor
        self._tls: TLSSettings | None = None
        self._pins: MutableMapping[str, str] = {}
        self._where = ""
        self._held: tuple[_Link, str] | None = None  # a link whose certificate awaits the user

    # -- what the window asks ------------------------------------------------------

    def connect_to(
        self,
        host: str,
        port: int,
        nick: str,
        tls: TLSSettings | None = None,
        pins: MutableMapping[str, str] | None = None,
    ) -> None:
        """Start keeping a connection to host:port logged in as ``nick``; over
        TLS if ``tls`` is given (``pins``: host:port -> trusted fingerprint)."""
        if self._service is not None:
            self._stop_service()
        if nick != self.nick:
            self._token = None
            self.last_seq = 0
            self.oldest_seq = None
        self.nick = nick
        self._final_reason = None
        self._tls, self._where = tls, f"{host}:{port}"
        if pins is not None:
            self._pins = pins
        endpoint = HostnameEndpoint(self.reactor, host, port, timeout=10)
        if tls is not None:
            endpoint = wrapClientTLS(creator_for(host, tls), endpoint)
        endpoint = _ReportingEndpoint(endpoint, self._failed)
        factory = Factory.forProtocol(lambda: _Link(self))
        self._service = ClientService(
            endpoint, factory, retryPolicy=self._announcing_retry, clock=self.reactor
        )
        self._set_state(CONNECTING, f"{host}:{port}")
        self._service.startService()

    def disconnect(self) -> Deferred:
        """QUIT and stop reconnecting; fires when the connection is closed."""
        if self._link is not None and self._logged_in:
            self._link.send(codec.Quit("leaving"))
        d = self._stop_service()
        self._set_state(DISCONNECTED, "")
        return d

    def say(self, text: str) -> str | None:
        return self._submit(lambda ref: codec.Say(text, ref))

    def whisper(self, to: str, text: str) -> str | None:
        return self._submit(lambda ref: codec.Whisper(to, text, ref))

    def retry(self, ref: str) -> None:
        """Send a failed message again (same ref, so its row is reused)."""
        item = self._outgoing.get(ref)
        if item is not None and item.failed:
            item.failed = False
            self._queued.append(ref)
            self._drain()

    def request_older(self) -> bool:
        """Ask for the page before the oldest message shown; False if nothing to ask."""
        if not self._logged_in or self._older_requested or self.oldest_seq in (None, 1):
            return False
        self._older_requested = True
        self._link.send(codec.HistoryRequest(before=self.oldest_seq, limit=100))
        return True

    # -- the link ------------------------------------------------------------------

    def _announcing_retry(self, attempt: int) -> float:
        delay = self._retry(attempt)
        self._set_state(RECONNECTING, f"{delay:.0f}")
        self.reconnectScheduled.emit(delay)
        return delay

    def _failed(self, why: str) -> None:
        self.errorReceived.emit("unreachable", f"server not reachable: {why}")

    def trust_certificate(self, accept: bool) -> None:
        """The user's answer to certificateUnknown."""
        if self._held is None:
            return
        link, fingerprint = self._held
        self._held = None
        if not accept:
            self._give_up(f"you did not trust the certificate of {self._where}")
            return
        self._pins[self._where] = fingerprint
        if link is self._link:
            self._log_in(link)
        # else: the link timed out meanwhile; the next attempt finds the pin

    def _link_made(self, link: _Link) -> None:
        self._link = link
        if self._tls is None:
            self._log_in(link)
        else:
            self._set_state(CONNECTING, "TLS handshake")

    def _handshake_done(self, link: _Link) -> None:
        if link is not self._link:
            return
        if self._tls.mode == PIN:
            seen = fingerprint_of(link.transport.getPeerCertificate())
            trusted = self._pins.get(self._where)
            if trusted is None:
                self._held = (link, seen)
                self.certificateUnknown.emit(self._where, seen)
                return
            if trusted != seen:
                self._give_up(
                    f"the certificate of {self._where} has CHANGED since you trusted it "
                    f"(was {trusted}, now {seen}): refusing to connect"
                )
                return
        self._log_in(link)

    def _log_in(self, link: _Link) -> None:
        self._set_state(CONNECTING, "logging in")
        link.send(codec.Login(self.nick, codec.PROTOCOL_VERSION, self._token))

    def _give_up(self, why: str, code: str = "tls", message: str | None = None) -> None:
        """A problem retrying can't fix: say so and stop."""
        self._final_reason = why
        self.errorReceived.emit(code, message or why)
        self._stop_service()
        self._set_state(DISCONNECTED, why)

    def _link_lost(self, link: _Link, reason) -> None:
        if link is not self._link:
            return
        self._link = None
        if self._held is not None and self._held[0] is link:
            self._held = (None, self._held[1])  # still answerable: the pin helps the next try
        if reason is not None and reason.check(SSL.Error) and self._final_reason is None:
            self._give_up(
                f"TLS with {self._where} failed: the server's certificate was not accepted "
                f"({reason.getErrorMessage()})"
            )
            return
        was_logged_in, self._logged_in = self._logged_in, False
        self._catching_up = self._older_requested = False
        if self._pinger.running:
            self._pinger.stop()
        for item in self._outgoing.values():  # unacknowledged: settled after catch-up
            item.sent = False
        if self._final_reason is not None:
            self._stop_service()
            self._set_state(DISCONNECTED, self._final_reason)
        elif self._service is not None and was_logged_in:
            self._set_state(RECONNECTING, "connection lost")

    def _stop_service(self) -> Deferred:
        """Stop reconnecting and close the link; a second caller (the app's
        shutdown trigger after the window's close) waits for the same stop."""
        service, self._service = self._service, None
        if self._pinger.running:
            self._pinger.stop()
        if service is not None and service.running:
            self._stopping = service.stopService()
        if self._stopping is None or self._stopping.called:
            return succeed(None)
        waiter: Deferred = Deferred()

        def release(result):
            waiter.callback(None)
            return result

        self._stopping.addBoth(release)
        return waiter

    # -- packets -------------------------------------------------------------------

    def _packet(self, link: _Link, packet) -> None:
        handler = getattr(self, "_on_" + type(packet).__name__, None)
        if handler is not None:
            handler(packet)

    def _on_Welcome(self, welcome: codec.Welcome) -> None:
        self._logged_in = True
        self.nick = welcome.nick
        self.my_id = welcome.id
        self._token = welcome.resume
        self.limits = dict(welcome.limits)
        newest = welcome.history[-1].seq if welcome.history else 0
        # A server that lost its history (":memory:") numbers from 1 again.
        self.history_reset = newest < self.last_seq
        if self.history_reset:
            self.last_seq, self.oldest_seq = 0, None
        resumed_gap = self.last_seq > 0
        self._set_state(CONNECTED, welcome.server)
        self.welcomed.emit(welcome)
        if welcome.history and self.oldest_seq is None:
            self.oldest_seq = welcome.history[0].seq
        if resumed_gap:
            self._catching_up = True
            self._link.send(codec.HistoryRequest(after=self.last_seq, limit=200))
        else:
            self._note_seqs(welcome.history)
            self._resend_unacknowledged()
        self._pinger.start(PING_EVERY, now=True)

    def _on_MessagePacket(self, message: codec.MessagePacket) -> None:
        self._note_seqs([message])
        if message.ref is not None and self._outgoing.pop(message.ref, None) is not None:
            self.sendConfirmed.emit(message.ref, message.seq)
        self.messageReceived.emit(message)

    def _on_HistoryPage(self, page: codec.HistoryPage) -> None:
        if self._catching_up:
            self._note_seqs(page.messages)
            self.historyReceived.emit(page.messages, page.more, "after")
            self._settle_against(page.messages)
            if page.more:
                self._link.send(codec.HistoryRequest(after=self.last_seq, limit=200))
            else:
                self._catching_up = False
                self._resend_unacknowledged()
            return
        self._older_requested = False
        if page.messages:
            self.oldest_seq = page.messages[0].seq
        elif not page.more:
            self.oldest_seq = 1
        self.historyReceived.emit(page.messages, page.more, "before")

    def _on_Private(self, private: codec.Private) -> None:
        if private.ref is not None and self._outgoing.pop(private.ref, None) is not None:
            self.sendConfirmed.emit(private.ref, 0)
        self.privateReceived.emit(private)

    def _on_Joined(self, joined: codec.Joined) -> None:
        self.peerJoined.emit(joined)

    def _on_Left(self, left: codec.Left) -> None:
        self.peerLeft.emit(left)

    def _on_Pending(self, pending: codec.Pending) -> None:
        self.pendingChanged.emit(pending)

    def _on_ServerPing(self, ping: codec.ServerPing) -> None:
        self._link.send(codec.Pong(ping.token))

    def _on_PongReply(self, pong: codec.PongReply) -> None:
        sent = self._pings.pop(pong.token, None)
        if sent is not None:
            self.rttMeasured.emit(self.reactor.seconds() - sent)

    def _on_Bye(self, bye: codec.Bye) -> None:
        if bye.reason in _FINAL_BYES:
            self._final_reason = bye.reason
        self.errorReceived.emit("bye", f"server closed the connection: {bye.reason}")

    def _on_Error(self, error: codec.Error) -> None:
        if error.ref is not None and error.ref in self._outgoing:
            item = self._outgoing[error.ref]
            item.sent, item.failed = False, True
            self.sendFailed.emit(error.ref, error.message)
            return
        if not self._logged_in and error.code in _FINAL_ERRORS:
            # A login the user must fix: retrying the same nick can't help.
            self._give_up(f"{error.code}: {error.message}", error.code, error.message)
            return
        self.errorReceived.emit(error.code, error.message)

    # -- sending ---------------------------------------------------------------------

    def _submit(self, make) -> str | None:
        if len(self._queued) >= MAX_QUEUED:
            self.errorReceived.emit("queue_full", f"{MAX_QUEUED} messages are already waiting to be sent")
            return None
        ref = next(self._refs)
        item = Outgoing(ref, make(ref))
        self._outgoing[ref] = item
        self._queued.append(ref)
        self.sendQueued.emit(ref, item.packet)
        self._drain()
        return ref

    def _drain(self) -> None:
        if not self._logged_in or self._catching_up:
            return
        while self._queued:
            item = self._outgoing.get(self._queued.popleft())
            if item is not None and not item.sent:
                item.sent = True
                self._link.send(item.packet)

    def _settle_against(self, messages: list[codec.Message]) -> None:
        """Messages sent before a drop whose echo never came: if the server
        stored them, history shows them under our nick; confirm those."""
        for message in messages:
            if message.sender != self.nick:
                continue
            for ref, item in list(self._outgoing.items()):
                if (
                    not item.sent
                    and not item.failed
                    and ref not in self._queued
                    and isinstance(item.packet, codec.Say)
                    and item.packet.text == message.text
                ):
                    del self._outgoing[ref]
                    self.sendConfirmed.emit(ref, message.seq)
                    break

    def _resend_unacknowledged(self) -> None:
        for ref, item in self._outgoing.items():
            if not item.sent and not item.failed and ref not in self._queued:
                self._queued.append(ref)
        self._drain()

    def _note_seqs(self, messages) -> None:
        for message in messages:
            if message.seq > self.last_seq:
                self.last_seq = message.seq

    def _ping(self) -> None:
        if self._link is None:
            return
        token = f"p{next(self._ping_tokens)}"
        self._pings = {token: self.reactor.seconds()}  # only the newest matters
        self._link.send(codec.Ping(token))

    def _set_state(self, state: str, detail: str) -> None:
        self.state = state
        self.stateChanged.emit(state, detail)
