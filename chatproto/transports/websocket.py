"""The WebSocket transport: one protocol payload per binary message.

A browser speaks the same packets as the Int32 transport; only the framing
differs (docs/protocol.md, section 16). wsproto's handshake answers the
upgrade, as ``twisted.web.websocket`` does; after it the connection is ours:
:class:`WebSocketChatProtocol` feeds what arrives to wsproto's frame parser
and hands its events one at a time to the read loop every transport shares
(transports/policy.py), so everything the connection does (limits, fair
share, sendq, timeouts, the hub) is the same policy as Int32's and the two
can't drift apart.

Why not Twisted's wire protocol: it parses a whole read at once, answers
every Ping straight to the socket and gathers fragments with ``+=``, so a
Ping or 1-byte-fragment flood cost the server work that no fair share saw,
and Pongs nobody read grew the socket's buffer without bound. Here every
frame costs a unit of the fair share (a message costs its packet; Pings,
Pongs and all but a message's last fragment one unit each), reading stops
mid-read when the share is spent (the rest waits in wsproto's buffer, as
Int32's unread bytes do), Pongs go through the outbox and count against
sendq, and fragments are kept as a list and joined once.

Server frames need no mask, so a broadcast is framed once here and the same
bytes are written to every WebSocket recipient, as for Int32.
"""

from __future__ import annotations

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from chatproto.codec import ErrorCode
from chatproto.core.hub import Hub
from chatproto.transports.forwarded import TrustedProxies
from chatproto.transports.policy import CLOSING, Framing, chat_transport

log = Logger()

#: Close codes (RFC 6455, 7.4.1) for the reasons a server ends a stream.
NORMAL, GOING_AWAY, UNSUPPORTED_DATA, POLICY, TOO_BIG = 1000, 1001, 1003, 1008, 1009
NO_STATUS = 1005  # a Close frame without a code: answered with NORMAL
CLOSE_CODES = {
    "quit": NORMAL,
    "server_shutdown": GOING_AWAY,
    "replaced": NORMAL,
    ErrorCode.FRAME_TOO_LARGE: TOO_BIG,
    "text_frame": UNSUPPORTED_DATA,
}
PONG = 0xA

#: What a frame that is not a message's last costs: a Ping, a Pong, a fragment.
FRAME_UNITS = 1.0


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
    reason_bytes = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return ws_frame(code.to_bytes(2, "big") + reason_bytes, opcode=0x8)


class WebSocketWire:
    """Frames as this transport writes them: one binary message each."""

    name = "websocket"
    lazy = True
    relayable = True
    frame = staticmethod(ws_frame)


WEBSOCKET = WebSocketWire()

#: The one copy a fragmented message costs (a name of its own, so tests can count it).
_join = b"".join

#: Fragments smaller than this are copied into a run of their own, not listed
#: one by one: a list entry and a bytes object cost about 40 bytes each, which
#: for 1-byte fragments would hold 40 times the message.
SMALL = 512


class Fragments:
    """A message's fragments until its last: the chunks as they came, in a
    list joined once, so N fragments cost O(N) where ``bytes +=`` costs
    O(N²); runs of small ones are gathered in one bytearray entry (amortised
    O(1) a byte too). Past ``limit`` bytes nothing more is kept."""

    __slots__ = ("chunks", "run", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes | bytearray] = []
        self.run: bytearray | None = None  # the list's last entry, while small ones come
        self.size = 0

    def add(self, chunk: bytes, limit: int) -> bool:
        """Keep ``chunk``; False (and nothing kept) once the message is over ``limit``."""
        self.size += len(chunk)
        if self.size > limit:
            self.chunks, self.run = [], None
            return False
        if len(chunk) >= SMALL:
            self.chunks.append(chunk)
            self.run = None
        elif self.run is not None:
            self.run += chunk
        elif chunk:
            self.run = bytearray(chunk)
            self.chunks.append(self.run)
        return True

    def done(self) -> bytes:
        return _join(self.chunks)


class WebSocketChatProtocol(Framing):
    """A chat connection whose bytes arrive as WebSocket frames.

    Its units are wsproto's events, taken one at a time by the policy's
    read loop until the fair share stops reading or the connection closes.
    One event is parsed ahead of the one being handled: that is how the
    fair share knows more is waiting behind it (a pipelining flood), as
    Int32 knows from the bytes after a frame.
    """

    __slots__ = ("_ahead", "_forwarded", "_fragments", "_reply", "_reserved", "_ws")

    wire = WEBSOCKET

    def __init__(
        self, hub: Hub, ws: Connection | None = None, reserved: bool = False, forwarded: str | None = None
    ) -> None:
        self._forwarded = forwarded  # the client a trusted proxy named
        # Past the handshake (the handshake's own, or a fresh one for tests).
        self._ws = ws if ws is not None else Connection(ConnectionType.SERVER)
        self._reserved = reserved  # its HTTP connection already holds its place in the limits
        self._ahead: Event | None = None  # the event parsed ahead, not yet handled
        self._fragments: Fragments | None = None  # only while a message is fragmented
        self._reply: bytes | None = None  # the Close frame answering the peer's
        super().__init__(hub)

    def accept(self) -> str | None:
        return self.connection.hub.accept(self.connection, reserved=self._reserved)

    @property
    def host(self) -> str:
        return self._forwarded if self._forwarded is not None else super().host

    @property
    def address(self) -> str:
        if self._forwarded is None:
            return super().address
        return f"{self._forwarded} (by {super().address})"

    # -- reading: the policy's loop ----------------------------------------------------

    def feed(self, data: bytes) -> None:
        if data:
            self._ws.receive_data(data)

    def next_unit(self) -> Event | None:
        event = self._ahead if self._ahead is not None else self._parse()
        if event is not None:
            self._ahead = self._parse()
        return event

    def waiting(self) -> bool:
        return self._ahead is not None

    def read_done(self) -> None:
        if self.connection.state == CLOSING:
            self._ahead = self._fragments = None

    def _parse(self) -> Event | None:
        """wsproto's next event, or None until more bytes come."""
        for event in self._ws.events():
            return event
        return None

    def handle(self, event: Event) -> None:
        connection = self.connection
        if type(event) is BytesMessage:
            self._message(event)
        elif type(event) is Ping:
            # Behind whatever is queued, counted against sendq like any output.
            connection.outbox.write(ws_frame(bytes(event.payload), PONG))
            connection.charge(FRAME_UNITS)
        elif type(event) is Pong:
            connection.charge(FRAME_UNITS)
        elif type(event) is TextMessage:
            log.info("connection {id}: a text message, closed", id=connection.id)
            connection.fatal(ErrorCode.BAD_PACKET, "binary messages only: one packet each", why="text_frame")
        elif type(event) is CloseConnection:
            self._peer_closed(event)

    def _message(self, event: BytesMessage) -> None:
        """A binary frame, or the part of one that has come: a packet once
        its message is complete, within MAX_LENGTH (1009 past it)."""
        connection = self.connection
        data = bytes(event.data)  # bytes already (wsproto's type says bytearray too): not copied
        fragments = self._fragments
        if fragments is None and event.message_finished:  # the usual: one frame, one read
            if len(data) > connection.MAX_LENGTH:
                connection.too_long(len(data))
            else:
                connection.payload(data)  # costs what its packet costs
            return
        if fragments is None:
            fragments = self._fragments = Fragments()
        if not fragments.add(data, connection.MAX_LENGTH):
            self._fragments = None
            connection.too_long(fragments.size)
        elif event.message_finished:
            self._fragments = None
            connection.payload(fragments.done())
        elif event.frame_finished:  # a whole fragment, not the last
            connection.charge(FRAME_UNITS)

    def _peer_closed(self, event: CloseConnection) -> None:
        """The peer's Close, answered with its code; or a frame wsproto
        refused (a protocol error), answered with wsproto's code and reason."""
        connection = self.connection
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            self._reply = close_frame(NORMAL if event.code == NO_STATUS else event.code, "")
        else:
            log.info("connection {id}: {reason}, closed", id=connection.id, reason=event.reason)
            self._reply = close_frame(event.code, event.reason or "")
        connection.hub.leave(connection, "connection_lost")
        connection.close(None, why="closed")

    def last_words(self, final: bytes | None, why: str) -> bytes:
        """The BYE or ERROR, then a Close frame with a code and the reason."""
        if self._reply is not None:
            return (final or b"") + self._reply
        code = CLOSE_CODES.get(why, POLICY if why else NORMAL)
        return (final or b"") + close_frame(code, why)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._ahead = self._fragments = None
        super().connectionLost(reason)


def _negotiation_error(request: Request) -> bytes:
    request.setResponseCode(400)
    request.setHeader("content-type", "text/plain")
    return b"websocket protocol negotiation error"


class ChatSocketResource(Resource):
    """``/ws``: refuses a browser page from another origin (cross-site
    WebSocket hijacking) with 403 before the handshake; otherwise answers
    the upgrade and hands the connection to a :class:`WebSocketChatProtocol`."""

    isLeaf = True

    def __init__(
        self, hub: Hub, origins: frozenset[str] = frozenset(), proxies: TrustedProxies | None = None
    ) -> None:
        super().__init__()
        self.hub = hub
        self.origins = origins
        self.proxies = proxies if proxies is not None else TrustedProxies()

    def render_GET(self, request: Request) -> bytes | int:
        from chatproto.transports.web import ChatChannel  # web.py imports this module

        origin = request.getHeader("origin")
        if origin is not None and not self.allowed(origin, request):
            log.info("WebSocket from origin {origin} refused", origin=origin)
            request.setResponseCode(403)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return b"origin not allowed: serve the page from this server or list it with --web-origin\n"
        if (request.getHeader("upgrade") or "").lower() != "websocket":
            return self._why(request)
        channel = request.channel
        if not isinstance(channel, ChatChannel):  # can't pass the bytes on
            return _negotiation_error(request)
        handshake = H11Handshake(ConnectionType.SERVER)
        headers = [
            (name, value) for name, values in request.requestHeaders.getAllRawHeaders() for value in values
        ]
        try:
            handshake.initiate_upgrade_connection(headers, request.path)
        except RemoteProtocolError as e:
            log.info("WebSocket handshake refused: {error}", error=e)
            return _negotiation_error(request)
        accept = handshake.send(AcceptConnection())
        # The HTTP connection's place in the limits passes to the chat
        # connection (web.ChatChannel); its request deadline ends here.
        reserved = channel.upgraded()
        transport = chat_transport(channel.transport)
        peer = getattr(transport.getPeer(), "host", "") or ""
        client = self.proxies.client(peer, request.getHeader("x-forwarded-for"))
        if client != peer and reserved:
            # Counted under no address while the proxy spoke; the client's own
            # limits apply now, as to any new connection.
            self.hub.release("")
            reserved = False
        protocol = WebSocketChatProtocol(
            self.hub, handshake.connection, reserved, client if client != peer else None
        )
        transport.unregisterProducer()  # the HTTP channel's; the outbox takes its place
        transport.write(accept)  # before anything the connection says (a refusal's BYE)
        channel.hand_over(protocol)  # from now on the channel's bytes go to the protocol
        return NOT_DONE_YET

    def _why(self, request: Request) -> bytes:
        """A plain GET of ``/ws``: the page asks why its WebSocket was refused
        at the door (a browser shows the script only a 1006). 503 and the
        reason if a connection from here would be refused now; else 426."""
        peer = getattr(chat_transport(request.channel.transport).getPeer(), "host", "") or ""
        reason = self.hub.door(self.proxies.client(peer, request.getHeader("x-forwarded-for")))
        request.setHeader("content-type", "text/plain; charset=utf-8")
        request.setHeader("cache-control", "no-store")
        if reason is None:
            request.setResponseCode(426)
            request.setHeader("upgrade", "websocket")
            return b"this is the chat's WebSocket: open it with new WebSocket(...)\n"
        request.setResponseCode(503)
        return f"{reason}\n".encode()

    def allowed(self, origin: str, request: Request) -> bool:
        """The page's own origin, or one of ``--web-origin``. A client that is
        no browser sends no Origin and has no cookies to abuse."""
        own = f"{'https' if request.isSecure() else 'http'}://{request.getHeader('host') or ''}"
        return origin.lower() == own.lower() or origin.lower() in self.origins
