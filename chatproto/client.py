"""The client side of one connection: frames in, typed server packets out.

Shared by the Qt client's network session, the tests and the load generator,
so every client speaks the protocol through the same codec.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from chatproto import codec
from chatproto.codec import ProtocolError

log = Logger()

#: WELCOME lists every peer and may outgrow the server's max_frame (which
#: bounds what the *server* accepts); a client accepts far larger frames.
CLIENT_MAX_FRAME = 16 * 1024 * 1024


class ChatClientProtocol(Int32StringReceiver):
    MAX_LENGTH = CLIENT_MAX_FRAME

    def send(self, packet) -> None:
        self.sendString(codec.encode(packet))

    def stringReceived(self, payload: bytes) -> None:
        try:
            packet = codec.decode_server(payload)
        except ProtocolError as e:
            log.warn("ignoring a malformed server packet: {error}", error=e.message)
            return
        self.packetReceived(packet)

    def packetReceived(self, packet) -> None:
        """Override: one decoded server packet."""

    def lengthLimitExceeded(self, length: int) -> None:
        log.error("server sent a frame of {length} bytes; closing", length=length)
        assert self.transport is not None  # connected: a frame came in
        self.transport.loseConnection()
