"""A real-socket test client: packets arrive in a queue the test awaits."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from chatproto import codec
from chatproto.client import ChatClientProtocol

TIMEOUT = 20.0


class QueueClient(ChatClientProtocol):
    def __init__(self) -> None:
        self.inbox: defer.DeferredQueue = defer.DeferredQueue()
        self.lost: defer.Deferred = defer.Deferred()

    def packetReceived(self, packet) -> None:
        self.inbox.put(packet)

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)

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


@defer.inlineCallbacks
def connect(reactor, port: int, nick: str | None = None, version: int = 1):
    client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), QueueClient())
    if nick is not None:
        yield client.login(nick, version=version)
    return client
