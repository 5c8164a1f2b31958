"""The WebSocket transport: one protocol payload per binary message.

A browser speaks the same packets as the Int32 transport; only the framing
differs (docs/protocol.md, section 16). Twisted's ``twisted.web.websocket``
does the handshake and parses what the browser sends; everything the
connection does after that (limits, fair share, timeouts, the hub) is the
Int32 connection's own, so the two can't drift apart. Server frames need no
mask, so a broadcast is framed once here and the same bytes are written to
every WebSocket recipient, as for Int32.
"""

from __future__ import annotations

from collections import deque

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from twisted.web.websocket import WebSocketResource

from chatproto.codec import ErrorCode
from chatproto.core.hub import Hub
from chatproto.transports.int32 import CLOSING, ChatProtocol

log = Logger()

#: Close codes (RFC 6455, 7.4.1) for the reasons a server ends a stream.
NORMAL, GOING_AWAY, UNSUPPORTED_DATA, POLICY, TOO_BIG = 1000, 1001, 1003, 1008, 1009
CLOSE_CODES = {
    "quit": NORMAL,
    "server_shutdown": GOING_AWAY,
    "replaced": NORMAL,
    ErrorCode.FRAME_TOO_LARGE: TOO_BIG,
    "text_frame": UNSUPPORTED_DATA,
}


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One unmasked, unfragmented server frame (binary unless told)."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


def close_frame(code: int, reason: str) -> bytes:
    """A Close frame; its reason is cut to the 123 bytes a control frame allows."""
    return ws_frame(code.to_bytes(2, "big") + reason.encode("utf-8")[:123], opcode=0x8)


class WebSocketWire:
    """Frames as this transport writes them: one binary message each."""

    name = "websocket"
    frame = staticmethod(ws_frame)


WEBSOCKET = WebSocketWire()


class _CappedBuffer:
    """Where a message's fragments gather until it is complete: past the
    connection's frame limit it is told, and the rest is thrown away, so a
    browser can't make the server hold an endless message."""

    __slots__ = ("connection", "data", "size")

    def __init__(self, empty, connection: WebSocketChatProtocol) -> None:
        self.data = empty
        self.size = 0
        self.connection = connection

    def add(self, new) -> None:
        self.size += len(new)
        if self.size <= self.connection.MAX_LENGTH:
            self.data += new
        elif self.size - len(new) <= self.connection.MAX_LENGTH:  # only once
            self.data = self.data[0:0]
            self.connection.too_big(self.size)

    def done(self):
        result, self.data, self.size = self.data, self.data[0:0], 0
        return result


class WebSocketChatProtocol(ChatProtocol):
    """A chat connection whose bytes arrive as WebSocket messages.

    The Int32 connection's frame loop (``dataReceived``) becomes a loop over
    the messages waiting in ``_inbox``: they wait there only while the fair
    share has stopped reading, exactly as Int32's unread bytes do.
    """

    __slots__ = ("_inbox", "_ws")

    wire = WEBSOCKET

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self._ws = None
        self._inbox: deque[bytes] = deque()

    # -- twisted.web.websocket.WebSocketProtocol -----------------------------------

    def negotiationStarted(self, transport) -> None:
        self._ws = transport
        # Twisted gathers each message whole before handing it over; gather
        # into buffers of ours instead, which refuse one over max_frame.
        transport._bytesBuffer = _CappedBuffer(b"", self)
        transport._textBuffer = _CappedBuffer("", self)

    def negotiationFinished(self) -> None:
        tcp = self._ws.transport
        tcp.unregisterProducer()  # the HTTP channel's; the outbox takes its place
        self.makeConnection(tcp)

    def bytesMessageReceived(self, data: bytes) -> None:
        if self.state == CLOSING:
            return
        self._inbox.append(bytes(data))
        self.dataReceived(b"")

    def textMessageReceived(self, message: str) -> None:
        log.info("connection {id}: a text message, closed", id=self.id)
        self._fatal(ErrorCode.BAD_PACKET, "binary messages only: one packet each", why="text_frame")

    def pongReceived(self, payload: bytes) -> None:
        pass  # the chat protocol's PING and PONG keep connections alive

    def too_big(self, size: int) -> None:
        if self.state != CLOSING:
            self.lengthLimitExceeded(size)

    # -- ChatProtocol's reading, over messages -------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Handle waiting messages until the fair share stops reading
        (``resumeProducing`` calls this again) or the connection closes."""
        inbox = self._inbox
        while inbox and not self.paused and self.state != CLOSING:
            payload = inbox.popleft()  # within MAX_LENGTH: _CappedBuffer saw to it
            self._more_waiting = bool(inbox)
            self.stringReceived(payload)
        if self.state == CLOSING:
            inbox.clear()
        elif not inbox:
            self._handled = 0  # caught up: the next message starts a new turn's count

    def _last_words(self, final: bytes | None, why: str) -> bytes:
        """The BYE or ERROR, then a Close frame with a code and the reason."""
        code = CLOSE_CODES.get(why, POLICY if why else NORMAL)
        return (final or b"") + close_frame(code, why)

    def connectionLost(self, reason: Failure = None) -> None:
        self._inbox.clear()
        super().connectionLost(reason)


class ChatSocketFactory:
    """Builds a WebSocketChatProtocol per upgraded request, on one hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def buildProtocol(self, request: Request) -> WebSocketChatProtocol:
        request.channel.setTimeout(None)  # the chat protocol has its own timeouts now
        return WebSocketChatProtocol(self.hub)


class ChatSocketResource(WebSocketResource):
    """``/ws``: refuses a browser page from another origin (cross-site
    WebSocket hijacking) with 403 before the handshake."""

    isLeaf = True

    def __init__(self, hub: Hub, origins: frozenset[str] = frozenset()) -> None:
        super().__init__(ChatSocketFactory(hub))
        self.origins = origins

    def render_GET(self, request: Request):
        origin = request.getHeader("origin")
        if origin is not None and not self.allowed(origin, request):
            log.info("WebSocket from origin {origin} refused", origin=origin)
            request.setResponseCode(403)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return b"origin not allowed: serve the page from this server or list it with --web-origin\n"
        return super().render_GET(request)

    def allowed(self, origin: str, request: Request) -> bool:
        """The page's own origin, or one of ``--web-origin``. A client that is
        no browser sends no Origin and has no cookies to abuse."""
        own = f"{'https' if request.isSecure() else 'http'}://{request.getHeader('host') or ''}"
        return origin.lower() == own.lower() or origin.lower() in self.origins
