"""The Int32 transport: length-prefixed frames over TCP, TLS or a Unix socket.

:class:`ChatProtocol` only splits frames (a 4-byte big-endian length, then
the payload); everything else about the connection (limits, fair share,
timeouts, the hub) is its :class:`~chatproto.transports.policy.ConnectionPolicy`'s,
shared with every other transport. One bad packet gets an ERROR and
nothing else; the hub never sees it.
"""

from __future__ import annotations

import struct

from twisted.internet.interfaces import IAddress, ILoggingContext, IProtocolFactory
from zope.interface import implementer

from chatproto import codec
from chatproto.core.hub import Hub
from chatproto.transports.policy import (
    CLOSE_GRACE,
    CLOSING,
    CONNECTED,
    PASSWORD_TRIES,
    PENDING,
    ConnectionPolicy,
    Framing,
    describe_address,
)

__all__ = [
    "CLOSE_GRACE",
    "CLOSING",
    "CONNECTED",
    "INT32",
    "PASSWORD_TRIES",
    "PENDING",
    "ChatFactory",
    "ChatProtocol",
    "ConnectionPolicy",
    "Int32Protocol",
    "Int32Wire",
    "describe_address",
]

_PREFIX = struct.Struct("!I")


class Int32Wire:
    """Frames as Int32StringReceiver writes them: a 4-byte big-endian length."""

    name = "int32"
    lazy = True
    relayable = True
    frame = staticmethod(codec.frame)


INT32 = Int32Wire()


class Int32Protocol(Framing):
    """Int32 frames in, one payload each for the policy.

    The buffer is kept whole through a read and cut once at its end
    (``_offset`` is where the next frame starts), as IntNStringReceiver's
    loop does, less its compatibility hook, which would cost every
    connection a dict.
    """

    __slots__ = ("_buffer", "_offset")

    wire = INT32

    def __init__(self, hub: Hub) -> None:
        self._buffer = b""
        self._offset = 0
        super().__init__(hub)

    def feed(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        self._offset = 0

    def next_unit(self) -> bytes | None:
        buffer, offset = self._buffer, self._offset
        size = len(buffer)
        if size - offset < 4:
            return None
        (length,) = _PREFIX.unpack_from(buffer, offset)
        if length > self.connection.MAX_LENGTH:
            self._buffer, self._offset = b"", 0
            self.connection.too_long(length)
            return None
        end = offset + 4 + length
        if end > size:
            return None
        self._offset = end
        return buffer[end - length : end]

    def waiting(self) -> bool:
        return self._offset < len(self._buffer)

    def handle(self, payload: bytes) -> None:
        self.connection.payload(payload)

    def read_done(self) -> None:
        if self._offset:
            self._buffer = self._buffer[self._offset :]
            self._offset = 0


#: The name other modules import.
ChatProtocol = Int32Protocol


@implementer(IProtocolFactory, ILoggingContext)
class ChatFactory:
    """Builds a ``protocol`` per connection, all sharing one hub. (Twisted's
    ``Factory`` would build them, but it types its protocols as Twisted
    ``Protocol`` subclasses, which ours are not: see :class:`Framing`.)"""

    protocol: type[Framing] = ChatProtocol

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def doStart(self) -> None:
        """Nothing to start: the listener logs its own address."""

    def doStop(self) -> None:
        """Nothing to stop: the hub outlives its listeners."""

    def logPrefix(self) -> str:
        return type(self).__name__

    def buildProtocol(self, addr: IAddress | None) -> Framing:
        protocol = self.protocol(self.hub)
        protocol.factory = self
        return protocol
