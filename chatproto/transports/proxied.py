"""Behind a load balancer that speaks the PROXY protocol (HAProxy, nginx
``proxy_protocol``, AWS NLB): ``--listen proxy:tcp:7777``.

Twisted's own ``haproxy:`` endpoint starts the wrapped protocol before the
PROXY header has arrived, so a chat connection would be counted under the
proxy's address and closed under the client's. Here the chat connection is
made only once the header has said who the client is: every per-address
limit, ban and log line sees the client, never the proxy. A connection
whose header does not come within ``HEADER_DEADLINE`` seconds, or is not a
PROXY header, is closed without ever being a chat connection (the deadline
is the server's ``login_timeout``: a pending connection's).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from chatproto.transports.policy import chat_transport
from chatproto.transports.sockets import ListeningReactor

#: The prefix of an endpoint string served this way.
PREFIX = "proxy:"


# A ProtocolWrapper is its wrapped protocol's transport (Twisted's says so
# only at run time, with directlyProvides): declared here for the type checker.
@implementer(ITransport)
class ProxiedConnection(HAProxyProtocolWrapper):
    """The PROXY header first; the chat connection once it is read."""

    _deadline: IDelayedCall | None = None

    def makeConnection(self, transport: ITransport) -> None:
        """As a ProtocolWrapper does, except that the chat connection waits for the header."""
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        factory = self.factory
        self._deadline = factory.clock.callLater(factory.deadline, chat_transport(transport).abortConnection)

    def dataReceived(self, data: bytes) -> None:
        if self._proxyInfo is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._parser is None:
            if len(data) >= 16 and data[:12] == V2Parser.PREFIX:
                self._parser = V2Parser()
            elif data[:5] == V1Parser.PROXYSTR:
                self._parser = V1Parser()
            else:
                chat_transport(self.transport).abortConnection()  # not a PROXY header: nothing to trust
                return
        try:
            self._proxyInfo, rest = self._parser.feed(data)
        except InvalidProxyHeader:
            chat_transport(self.transport).abortConnection()
            return
        if self._proxyInfo is None:
            return  # the header is not whole yet
        self._stop_deadline()
        self.wrappedProtocol.makeConnection(self)
        if rest:
            self.wrappedProtocol.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_deadline()
        if self._proxyInfo is None:  # never a chat connection
            self.factory.unregisterProtocol(self)
            # As ProtocolWrapper.connectionLost drops it, though Twisted types
            # the attribute without None.
            self.wrappedProtocol = None  # type: ignore[assignment]
            return
        super().connectionLost(reason)

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


class ProxiedFactory(WrappingFactory):
    protocol = ProxiedConnection

    def __init__(self, wrapped: IProtocolFactory, clock: IReactorTime, deadline: float) -> None:
        super().__init__(wrapped)
        self.clock = clock
        self.deadline = deadline


@implementer(IStreamServerEndpoint)
class ProxiedEndpoint:
    """An endpoint whose connections start with a PROXY header."""

    def __init__(self, wrapped: IStreamServerEndpoint, clock: IReactorTime, deadline: float) -> None:
        self.wrapped = wrapped
        self.clock = clock
        self.deadline = deadline

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.wrapped.listen(ProxiedFactory(factory, self.clock, self.deadline))


def server_endpoint(reactor, description: str, deadline: float) -> IStreamServerEndpoint:
    """``serverFromString``, with ``proxy:`` before any endpoint string
    meaning its connections start with a PROXY header, due within ``deadline`` seconds."""
    listening = ListeningReactor(reactor)
    if description.startswith(PREFIX):
        return ProxiedEndpoint(serverFromString(listening, description[len(PREFIX) :]), reactor, deadline)
    return serverFromString(listening, description)
