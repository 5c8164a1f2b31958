"""Real-socket test clients, over Int32 frames or a WebSocket: packets
arrive in a queue the test awaits."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from chatproto import codec
from chatproto.client import ChatClientProtocol

TIMEOUT = 20.0


class Inbox:
    """Awaiting packets: ``next``, ``expect`` a kind, ``login``."""

    def _start_inbox(self) -> None:
        self.inbox: defer.DeferredQueue = defer.DeferredQueue()
        self.lost: defer.Deferred = defer.Deferred()

    def next(self, timeout: float = TIMEOUT) -> defer.Deferred:
        from twisted.internet import reactor

        return self.inbox.get().addTimeout(timeout, reactor)

    @defer.inlineCallbacks
    def expect(self, kind, timeout: float = TIMEOUT):
        """The next packet of ``kind``, skipping others (presence noise)."""
        while True:
            packet = yield self.next(timeout)
            if isinstance(packet, kind):
                return packet

    @defer.inlineCallbacks
    def login(self, nick: str, resume: str | None = None, version: int = 1):
        self.send(codec.Login(nick, version, resume))
        welcome = yield self.expect(codec.Welcome)
        return welcome


class QueueClient(ChatClientProtocol, Inbox):
    def __init__(self) -> None:
        self._start_inbox()

    def packetReceived(self, packet) -> None:
        self.inbox.put(packet)

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)


class WebSocketClient(Protocol, Inbox):
    """A browser's side of ``/ws``, with wsproto: ``accepted`` fires on the
    handshake (with the HTTP status if refused); ``close`` is the server's
    Close frame as (code, reason), once it came."""

    def __init__(self, origin: str | None = None, path: str = "/ws", headers=()) -> None:
        self._start_inbox()
        self.headers = list(headers)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.origin, self.path = origin, path
        self.accepted: defer.Deferred = defer.Deferred()
        self.close: tuple[int, str] | None = None
        self.texts: list[str] = []
        self.pongs = 0  # WebSocket Pong frames received
        self._gathering = b""

    def connectionMade(self) -> None:
        headers = [(b"origin", self.origin.encode())] if self.origin else []
        headers += self.headers
        host = f"127.0.0.1:{self.transport.getPeer().port}"  # as a browser sends it
        self.transport.write(self.ws.send(Request(host=host, target=self.path, extra_headers=headers)))

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted.callback(101)
            elif isinstance(event, RejectConnection):
                self.accepted.callback(event.status_code)
            elif isinstance(event, RejectData) and event.body_finished:
                self.transport.loseConnection()
            elif isinstance(event, BytesMessage):
                self._gathering += event.data
                if event.message_finished:
                    payload, self._gathering = self._gathering, b""
                    self.inbox.put(codec.decode_server(payload))
            elif isinstance(event, TextMessage):
                self.texts.append(event.data)
            elif isinstance(event, Pong):
                self.pongs += 1
            elif isinstance(event, CloseConnection):
                self.close = (event.code, event.reason)
                if self.ws.state.name == "REMOTE_CLOSING":
                    self.transport.write(self.ws.send(event.response()))

    def connectionLost(self, reason) -> None:
        if not self.accepted.called:
            self.accepted.callback(None)
        self.lost.callback(self.close)

    def send(self, packet) -> None:
        self.send_payload(codec.encode(packet))

    def send_payload(self, payload: bytes) -> None:
        self.transport.write(self.ws.send(Message(data=payload)))

    def send_text(self, text: str) -> None:
        self.transport.write(self.ws.send(Message(data=text)))


class RawClient(Protocol):
    """Bytes in and out, nothing parsed: ``received`` holds what came,
    ``lost`` fires when the connection is gone."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)


class IrcClient(Protocol):
    """A raw IRC client: ``expect`` the next line a predicate accepts."""

    def __init__(self) -> None:
        self.inbox: defer.DeferredQueue = defer.DeferredQueue()
        self.lost: defer.Deferred = defer.Deferred()
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\r\n")
        for raw in lines:
            self.inbox.put(raw.decode("utf-8"))

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)

    def send(self, *lines: str) -> None:
        self.transport.write("".join(text + "\r\n" for text in lines).encode("utf-8"))

    @defer.inlineCallbacks
    def expect(self, predicate, timeout: float = TIMEOUT):
        from twisted.internet import reactor

        while True:
            text = yield self.inbox.get().addTimeout(timeout, reactor)
            if predicate(text):
                return text

    @defer.inlineCallbacks
    def register(self, nick: str):
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        welcome = yield self.expect(lambda text: " 001 " in text)
        return welcome


@defer.inlineCallbacks
def connect_irc(reactor, port: int, nick: str | None = None):
    client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), IrcClient())
    if nick is not None:
        yield client.register(nick)
    return client


@defer.inlineCallbacks
def connect(reactor, port: int, nick: str | None = None, version: int = 1):
    client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), QueueClient())
    if nick is not None:
        yield client.login(nick, version=version)
    return client


@defer.inlineCallbacks
def connect_ws(
    reactor, port: int, nick: str | None = None, version: int = 2, origin: str | None = None, headers=()
):
    """A WebSocket client on ``/ws``, logged in if ``nick`` is given."""
    client = yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), WebSocketClient(origin, headers=headers)
    )
    status = yield client.accepted
    if status != 101:
        raise AssertionError(f"WebSocket handshake refused: {status}")
    if nick is not None:
        yield client.login(nick, version=version)
    return client
