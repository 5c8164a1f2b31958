"""Finding a Redis primary through Sentinel.

:class:`SentinelEndpoint` asks the sentinels, in turn, where the primary
they monitor by a name is now, and connects there. ClientService connects
through it each time, so a failover is followed by the next connection: the
one a demoted primary closes (Sentinel kills its clients when it makes it a
replica), or one the client drops itself (a ``READONLY`` or
``NOREPLICAS`` answer, a command unanswered past its deadline, writes the
replicas do not confirm). The ROLE a RedisClient asks first on the new
connection catches a sentinel that has not heard of the failover yet; the
connection is dropped and the next attempt asks again. This is the
procedure of Redis's "Sentinel client spec".
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from zope.interface import implementer

from chatproto.backends.redis import RedisAddress, RedisProtocol, RedisUnavailable


class _Asking(Factory):
    """A one-question connection to a sentinel: no AUTH, no name."""

    noisy = False

    def __init__(self, clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr) -> RedisProtocol:
        proto = RedisProtocol(self.clock, self.timeout)
        proto.factory = self
        return proto

    def prepare(self, proto: RedisProtocol) -> Deferred:
        return succeed(proto)

    def lost(self, proto: RedisProtocol) -> None:
        pass


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Connects to the primary that ``sentinels`` know as ``name``."""

    def __init__(
        self,
        reactor,
        sentinels: Sequence[tuple[str, int]],
        name: str,
        tls: bool = False,
        timeout: float = 3.0,
    ) -> None:
        self._reactor = reactor
        self._sentinels = list(sentinels)
        self._name = name
        self._tls = tls
        self._timeout = timeout

    def connect(self, protocolFactory) -> Deferred:
        d = self.primary()
        d.addCallback(lambda where: self._server(*where).connect(protocolFactory))
        return d

    def _server(self, host: str, port: int) -> IStreamClientEndpoint:
        return clientFromString(self._reactor, RedisAddress(host, port, tls=self._tls).endpoint())

    @inlineCallbacks
    def primary(self):
        """(host, port) of the primary, from the first sentinel that knows
        it; that sentinel is asked first from then on."""
        errors = []
        for sentinel in list(self._sentinels):
            try:
                where = yield self._ask(*sentinel)
            except CancelledError:
                raise  # the service stopped: ask no other
            except Exception as e:  # refused, timed out, or an error answer: the next one
                errors.append(f"{sentinel[0]}:{sentinel[1]}: {e}")
                continue
            if where is None:
                errors.append(f"{sentinel[0]}:{sentinel[1]}: does not monitor {self._name!r}")
                continue
            self._sentinels.remove(sentinel)
            self._sentinels.insert(0, sentinel)
            return where[0].decode(), int(where[1])
        raise RedisUnavailable(f"no sentinel named the primary {self._name!r}: " + "; ".join(errors))

    def _ask(self, host: str, port: int) -> Deferred:
        return ask(
            self._reactor, host, port, self._timeout, "SENTINEL", "get-master-addr-by-name", self._name
        )


@inlineCallbacks
def ask(reactor, host: str, port: int, timeout: float, *command):
    """One command's answer on a connection of its own (to a sentinel: no AUTH)."""
    where = RedisAddress(host, port).endpoint() + f":timeout={max(1, round(timeout))}"
    proto = yield clientFromString(reactor, where).connect(_Asking(reactor, timeout))
    try:
        return (yield proto.execute(*command))
    finally:
        assert proto.transport is not None
        proto.transport.loseConnection()
