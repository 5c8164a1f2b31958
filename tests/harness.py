"""Drive the server without sockets: a Hub on task.Clock, peers on StringTransport."""

from __future__ import annotations

import itertools

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.sqlite import SQLiteLog
from chatproto.limits import Limits
from chatproto.server import build_server
from chatproto.transports.policy import Framing
from chatproto.transports.websocket import WebSocketChatProtocol

_ports = itertools.count(40000)


def parse_frames(data: bytes) -> list:
    """Every frame in ``data``, decoded; asserts nothing is left over."""
    payloads, rest = codec.split_frames(data)
    assert rest == b"", f"a truncated frame: {rest[:40]!r}"
    return [codec.decode_server(payload) for payload in payloads]


class WebSocketFrames:
    """What a browser reads: server frames parsed by wsproto; the Close
    frame, once it came, as ``close`` (code, reason). ``frames`` makes what
    a browser sends: masked frames."""

    def __init__(self) -> None:
        from wsproto.connection import Connection, ConnectionType

        self.parser = Connection(ConnectionType.CLIENT)
        self.close: tuple[int, str] | None = None

    def frames(self, *events) -> bytes:
        """Masked client frames for wsproto events (Message, Ping, ...)."""
        return b"".join(bytes(self.parser.send(event)) for event in events)

    def parse(self, data: bytes) -> list:
        from wsproto.events import BytesMessage, CloseConnection

        self.parser.receive_data(data)
        packets = []
        for event in self.parser.events():
            if isinstance(event, BytesMessage):
                assert event.message_finished, "the server never fragments"
                packets.append(codec.decode_server(bytes(event.data)))
            elif isinstance(event, CloseConnection):
                self.close = (event.code, event.reason)
        return packets


class Peer:
    """One client connection, in memory: Int32 frames, or WebSocket messages
    (past the handshake) when ``websocket``."""

    def __init__(self, server: Server, host: str = "127.0.0.1", websocket: bool = False) -> None:
        self.server = server
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, next(_ports)))
        self.websocket = WebSocketFrames() if websocket else None
        if websocket:
            self.protocol: Framing = WebSocketChatProtocol(server.hub)
        else:
            self.protocol = server.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    @property
    def connection(self):
        """What the hub sees of this peer: its connection's policy."""
        return self.protocol.connection

    def send_payload(self, payload: bytes) -> None:
        if self.websocket is not None:
            from wsproto.events import Message

            self.protocol.dataReceived(self.websocket.frames(Message(data=payload)))
        else:
            self.protocol.dataReceived(codec.frame(payload))

    def send(self, packet) -> None:
        self.send_payload(codec.encode(packet))

    def received(self, flush: bool = True) -> list:
        """Packets written to this peer since the last call, after the server
        has finished its turn (``flush=False``: before it has)."""
        if flush:
            self.server.flush()
        data = self.transport.value()
        self.transport.clear()
        return self.websocket.parse(data) if self.websocket is not None else parse_frames(data)

    def only(self, kind, flush: bool = True):
        """The single packet received since the last call, checked to be ``kind``."""
        packets = self.received(flush)
        assert len(packets) == 1 and isinstance(packets[0], kind), packets
        return packets[0]

    def error(self) -> codec.Error:
        """The ERROR just written (errors are sent at once, not at the end of the turn)."""
        return self.only(codec.Error, flush=False)

    def login(
        self, nick: str, resume: str | None = None, version: int = 1, password: str | None = None
    ) -> codec.Welcome:
        self.send(codec.Login(nick, version, resume, password=password))
        return self.received(flush=False)[0]  # WELCOME is sent at once (then ROOMs on a resume)

    def join(self, room: str, ref: str | None = None) -> codec.RoomState:
        """JOIN; the ROOM that answers it (sent at once)."""
        self.send(codec.Join(room, ref))
        return self.only(codec.RoomState, flush=False)

    def say(self, text: str, ref: str | None = None) -> None:
        self.send(codec.Say(text, ref))

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def drop(self) -> None:
        """The TCP connection ends (as the reactor would report it)."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


def result(d):
    """The result of a Deferred that has already fired (the SQLite log's do)."""
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class Server:
    """The server ``build_server`` makes, on a task.Clock, with no listener."""

    def __init__(
        self, store=None, rooms=(), default_room="general", admins=(), hasher=None, files=None, **limits
    ) -> None:
        self.clock = Clock()
        self.store = store if store is not None else SQLiteLog(":memory:")
        server = build_server(
            self.clock,
            history=self.store,
            limits=Limits(**limits),
            name="test",
            motd="hello",
            default_room=default_room,
            rooms=list(rooms),
            admins=list(admins),
            hasher=hasher,
            files=files,
        )
        self.hub = server.hub
        self.factory = server.factory

    def stored(self, room: str = "general") -> list[codec.Message]:
        """Every message of a room in the log, oldest first."""
        return result(self.store.after(0, 1_000_000, room))[0]

    def peer(self, host: str = "127.0.0.1", websocket: bool = False) -> Peer:
        return Peer(self, host, websocket)

    def logged_in(self, *nicks: str, version: int = 1) -> list[Peer]:
        """Peers logged in one after another, their inboxes emptied."""
        peers = []
        for nick in nicks:
            peer = self.peer()
            peer.login(nick, version=version)
            peers.append(peer)
        for peer in peers:
            peer.received()
        return peers

    def flush(self) -> None:
        """Run the end-of-turn batch (store, then broadcast)."""
        self.clock.advance(0)
