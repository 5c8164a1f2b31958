"""The lean TCP and Unix connections (transports/sockets.py) behave as
Twisted's: bytes both ways with buffering and a producer, half-close, the
peer's address after the close. Real sockets on 127.0.0.1 and a Unix socket."""

from __future__ import annotations

import _socket
import os
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from chatproto.transports.proxied import server_endpoint
from chatproto.transports.sockets import LeanServer, LeanUNIXServer

#: Larger than any socket buffer: some of it waits in the transport.
BIG = 8 * 1024 * 1024


@implementer(IHalfCloseableProtocol)
class Replier(Protocol):
    """Answers a peer's half-close with BIG bytes, then closes."""

    def __init__(self, made: list[Replier]) -> None:
        made.append(self)
        self.received = b""
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.peer_after_close = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.write(b"x" * BIG)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: object = None) -> None:
        self.peer_after_close = self.transport.getPeer()
        self.lost.callback(None)


class Reader(Protocol):
    def __init__(self) -> None:
        self.count = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(None)


class LeanConnections(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def listen(self, description: str, accepted: defer.DeferredQueue | None = None):
        """A listening port and the list of its Repliers (each also put on
        ``accepted`` as it is made)."""
        made: list[Replier] = []

        def replier() -> Replier:
            made_now = Replier(made)
            if accepted is not None:
                accepted.put(made_now)
            return made_now

        port = yield server_endpoint(reactor, description, 10.0).listen(Factory.forProtocol(replier))
        self.addCleanup(port.stopListening)
        return port, made

    @defer.inlineCallbacks
    def exchange(self, endpoint, made: list[Replier], kind: type):
        reader = yield connectProtocol(endpoint, Reader())
        reader.transport.write(b"hello")
        reader.transport.loseWriteConnection()
        yield reader.done
        (replier,) = made
        yield replier.lost
        self.assertIsInstance(replier.transport, kind)
        self.assertEqual(replier.received, b"hello")
        self.assertEqual(reader.count, BIG, "every byte, through the transport's buffer")
        self.assertEqual(replier.transport.fileno(), -1)
        repr(replier.transport)
        replier.transport.logPrefix()
        return replier

    @defer.inlineCallbacks
    def test_tcp(self):
        port, made = yield self.listen("tcp:0:interface=127.0.0.1")
        sockets: list[object] = []
        original = port.transport

        def spy(sock, *args):
            sockets.append(sock)
            return original(sock, *args)

        port.transport = spy
        replier = yield self.exchange(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), made, LeanServer
        )
        self.assertIs(type(sockets[0]), _socket.socket, "the C socket, not socket.socket")
        self.assertEqual(replier.peer_after_close.host, "127.0.0.1")
        self.assertNotIn("logstr", vars(replier.transport))
        self.assertNotIn("_tempDataBuffer", vars(replier.transport))

    @defer.inlineCallbacks
    def test_connections_from_one_host_share_its_string(self):
        accepted: defer.DeferredQueue = defer.DeferredQueue()
        port, _ = yield self.listen("tcp:0:interface=127.0.0.1", accepted)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        readers = []
        for _ in range(2):
            reader = yield connectProtocol(endpoint, Reader())
            readers.append(reader)
        repliers = [(yield accepted.get()), (yield accepted.get())]
        first, second = (replier.transport.client for replier in repliers)
        self.assertNotEqual(first[1], second[1])
        self.assertIs(first[0], second[0], "one host string for both")
        for reader in readers:
            reader.transport.loseConnection()
            yield reader.done

    @defer.inlineCallbacks
    def test_unix(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        path = os.path.join(folder, "chat.sock")
        _, made = yield self.listen(f"unix:{path}")
        yield self.exchange(UNIXClientEndpoint(reactor, path), made, LeanUNIXServer)
