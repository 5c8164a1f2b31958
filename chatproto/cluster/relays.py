"""A device whose session is on another node: its connection, relayed.

An account's session is held by one node at a time (the one its nick's
claim in Redis names). A second device that reaches another node (the load
balancer's choice) while the session is in use there is relayed: the node
it reached (the *near* node) passes the connection's packets to the
session's node (the *far* node) through that node's inbox, and writes what
comes back through its own inbox to the device. The far node runs the
connection as one of its own, on a :class:`RelayTransport` instead of a
socket, so every rule (login, devices, resume, limits, keepalive) is the one
code path it is on a single server. Only packet transports (Int32,
WebSocket) are relayed: they carry the same payloads, which the near node
frames for its connection's wire.

What each side sends is gathered for a reactor turn and goes as one inbox
note per connection, in order. A node that dies takes its side with it:
the survivor notices when it sees that node gone (docs/cluster.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.streams import StreamStore
from chatproto.core import records
from chatproto.core.connection import Connection
from chatproto.rules import nick_key, normalise_nick

log = Logger()


def payloads_of(data: bytes) -> list[bytes]:
    """The payloads of whole Int32 frames (what a far node's outbox wrote)."""
    out, at = [], 0
    while at + 4 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        out.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return out


def _port_of(address: str) -> int:
    """The port of a connection's ``address`` ("h:p" or "[h]:p"; 0 for a Unix socket's)."""
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


def _peer(host: str, port: int) -> IAddress:
    """The device's address as the near node saw it."""
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host or "0.0.0.0", port)


@dataclass
class _Note:
    """One note being gathered for a node this turn."""

    kind: type[records.Relay]
    conn: int
    parts: list[bytes] = field(default_factory=list)
    end: str = ""
    opened: tuple[str, str, bool] | None = None  # RelayOpened's host, address, and vouched
    n: int = 0  # its number in its direction of its relay (RelayIn, RelayOut)


@dataclass
class _Near:
    """A connection of ours relayed to node ``far``."""

    far: str
    connection: Connection
    heard: float  # when the far node last wrote to it (or the relay began)
    sent: int = 0  # RelayIn notes sent
    got: int = 0  # RelayOut notes received


class RelayTransport:
    """The far node's transport for a relayed connection: what it writes
    goes to the near node; what it reads comes from there (:meth:`Relays.came_in`)."""

    def __init__(self, relays: Relays, near: str, conn: int, peer: IAddress) -> None:
        self.relays = relays
        self.near = near
        self.conn = conn
        self.peer = peer
        self.disconnecting = False
        self.producer: IProducer | None = None
        self.protocol: IProtocol | None = None
        self.sent = 0  # RelayOut notes sent
        self.got = 0  # RelayIn notes received

    def write(self, data: bytes) -> None:
        if not self.disconnecting:
            self.relays.out(self, data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._end("close")

    def abortConnection(self) -> None:
        self._end("abort")

    def _end(self, how: str) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.relays.end(self, how)
        elif how == "abort":
            self.relays.lose(self)  # an abort is at once

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def getPeer(self) -> IAddress:
        return self.peer

    def getHost(self) -> IAddress:
        return self.peer

    # Reading is the inbox's: the policy's read loop holds what comes while paused.

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.abortConnection()


class Relays:
    """This node's relayed connections, near and far. Each direction of a
    relay numbers its notes: a note missing (an inbox trimmed, a write that
    failed) ends the relay rather than leave a hole in a connection."""

    def __init__(self, store: StreamStore, clock: IReactorTime, silence: float = 120.0) -> None:
        self.store = store
        self.clock = clock
        self.silence = silence  # a far node that wrote nothing for this long is gone
        self.me = ""
        self.protocols: IProtocolFactory | None = None
        self.near: dict[int, _Near] = {}  # by our connection id
        self.far: dict[tuple[str, int], RelayTransport] = {}  # (near node, its connection id) -> ours
        self._notes: dict[str, dict[int, list[_Note]]] = {}  # node -> connection -> its notes, in order
        self._ended: list[RelayTransport] = []
        self._call: IDelayedCall | None = None
        # The nick key of the relayed LOGIN being read now, if the near node
        # checked its password (which it did not send).
        self.vouching: str | None = None
        self.accepting = False  # while a relayed device's connection is made here

    def start(self, me: str, protocols: IProtocolFactory) -> None:
        """Node ``me`` runs far connections with ``protocols`` (Int32's)."""
        self.me = me
        self.protocols = protocols

    # -- the near side -------------------------------------------------------------------

    def relay(self, connection: Connection, login: bytes, far: str, vouched: bool) -> None:
        """Hand ``connection``, whose LOGIN (``login``, a payload without its
        password) is for a session node ``far`` holds, to that node;
        ``vouched``: we checked its password."""
        self.near[connection.id] = _Near(far, connection, self.clock.seconds())
        note = self._add(far, records.RelayOpened, connection.id, login)
        note.opened = (connection.host, connection.address, vouched)

    def forward(self, connection: Connection, payload: bytes) -> None:
        """A packet the device sent."""
        near = self.near.get(connection.id)
        if near is not None:
            self._add(near.far, records.RelayIn, connection.id, payload, counter=near)

    def unrelay(self, connection: Connection) -> None:
        """The device's connection is gone: the far node drops its side."""
        near = self.near.pop(connection.id, None)
        if near is not None:
            self._add(near.far, records.RelayClosed, connection.id)

    def came_out(self, note: records.RelayOut) -> None:
        """What the far node wrote: to the device, framed for its wire."""
        near = self.near.get(note.conn)
        if near is None or near.far != note.node:
            if not note.end:
                self._add(note.node, records.RelayClosed, note.conn)  # the device is gone here
            return
        connection = near.connection
        if note.n != near.got + 1:
            if note.n:  # (0: the far node's answer to a note for a connection it does not know)
                log.warn(
                    "relay of connection {id}: a note from node {node} is missing",
                    id=note.conn,
                    node=note.node,
                )
            self.unrelay(connection)
            connection.abort()
            return
        near.got = note.n
        near.heard = self.clock.seconds()
        wire = connection.wire
        for payload in payloads_of(note.data):
            connection.outbox.deliver(wire.frame(payload))
        if note.end:
            del self.near[note.conn]
            if note.end == "close":
                connection.end()
            else:
                connection.abort()

    def check(self) -> None:
        """Our devices whose far node wrote nothing for ``silence`` seconds
        (its keepalive PINGs stopped: it is gone, or has lost them) go."""
        limit = self.clock.seconds() - self.silence
        for near in [near for near in self.near.values() if near.heard < limit]:
            log.info(
                "relay of connection {id} to node {node}: silent, closed",
                id=near.connection.id,
                node=near.far,
            )
            self.unrelay(near.connection)
            near.connection.disconnect("timeout")

    # -- the far side --------------------------------------------------------------------

    def opened(self, note: records.RelayOpened) -> None:
        """A device on node ``note.node`` logs in to one of our sessions:
        its connection is one of ours from here on, starting with its LOGIN.
        If that LOGIN does not make it one of the session's devices at once
        (the session left meanwhile), it ends: the device logs in again."""
        key = (note.node, note.conn)
        if key in self.far or self.protocols is None:
            return
        peer = _peer(note.host, note.port)
        transport = RelayTransport(self, note.node, note.conn, peer)
        protocol = self.protocols.buildProtocol(peer)
        if protocol is None:
            return
        self.far[key] = transport
        transport.protocol = protocol
        self.accepting = True
        try:
            protocol.makeConnection(transport)  # type: ignore[arg-type]
        finally:
            self.accepting = False
        if transport.disconnecting:
            return
        try:
            login = codec.decode_client(note.payload, 2)
        except codec.ProtocolError:
            login = None
        if note.vouched and isinstance(login, codec.Login):
            self.vouching = nick_key(normalise_nick(login.nick))
        try:
            protocol.dataReceived(codec.frame(note.payload))
        finally:
            self.vouching = None
        # The framing's policy is the connection (transports/policy.py).
        if getattr(getattr(protocol, "connection", None), "session", None) is None:
            transport.loseConnection()

    def came_in(self, note: records.RelayIn) -> None:
        """What the device sent, to its connection here."""
        transport = self.far.get((note.node, note.conn))
        if transport is None:
            self._add(note.node, records.RelayOut, note.conn, end="abort")  # not ours (any more)
            return
        if transport.disconnecting or transport.protocol is None:
            return
        if note.n != transport.got + 1:
            log.warn(
                "relay of connection {id}: a note from node {node} is missing", id=note.conn, node=note.node
            )
            transport.abortConnection()
            return
        transport.got = note.n
        transport.protocol.dataReceived(b"".join(codec.frame(p) for p in note.payloads))

    def closed(self, note: records.RelayClosed) -> None:
        """The device went: its connection here is lost."""
        transport = self.far.pop((note.node, note.conn), None)
        if transport is not None:
            transport.disconnecting = True
            self._lose(transport)

    def out(self, transport: RelayTransport, data: bytes) -> None:
        self._add(transport.near, records.RelayOut, transport.conn, data, counter=transport)

    def end(self, transport: RelayTransport, how: str) -> None:
        """Our side ends: the near node ends its connection after what was written."""
        self._add(transport.near, records.RelayOut, transport.conn, end=how, counter=transport)
        self._ended.append(transport)

    def lose(self, transport: RelayTransport) -> None:
        """Our connection on ``transport`` is lost now."""
        key = (transport.near, transport.conn)
        if self.far.get(key) is transport:
            del self.far[key]
        self._lose(transport)

    def _lose(self, transport: RelayTransport) -> None:
        if transport.protocol is not None:
            protocol, transport.protocol = transport.protocol, None
            protocol.connectionLost(Failure(ConnectionDone("the relayed device is gone")))

    # -- both sides ----------------------------------------------------------------------

    def gone(self, node: str) -> None:
        """Node ``node`` died or left: our devices relayed to it go (they log
        in again, wherever), and our connections for its devices are lost."""
        for id, near in list(self.near.items()):
            if near.far == node:
                del self.near[id]
                near.connection.disconnect("server_shutdown")
        for key in [key for key in self.far if key[0] == node]:
            transport = self.far.pop(key)
            transport.disconnecting = True
            self._lose(transport)
        self._notes.pop(node, None)

    def nodes(self) -> set[str]:
        """The nodes we relay with."""
        return {near.far for near in self.near.values()} | {node for node, _ in self.far}

    def _add(
        self,
        node: str,
        kind: type[records.Relay],
        conn: int,
        part: bytes | None = None,
        end: str = "",
        counter: _Near | RelayTransport | None = None,
    ) -> _Note:
        """Gather for this turn: a part joins the connection's last note if
        it is of the same kind (and has not ended); a new note is numbered
        by ``counter``, the relay's side that sends it."""
        notes = self._notes.setdefault(node, {}).setdefault(conn, [])
        last = notes[-1] if notes else None
        if last is None or last.kind is not kind or last.end or kind is records.RelayOpened:
            last = _Note(kind, conn)
            notes.append(last)
            if counter is not None:
                counter.sent += 1
                last.n = counter.sent
        if part is not None:
            last.parts.append(part)
        last.end = end or last.end
        if self._call is None:
            self._call = self.clock.callLater(0, self._flush)
        return last

    def _flush(self) -> None:
        self._call = None
        notes, self._notes = self._notes, {}
        for node, by_connection in notes.items():
            for gathered in by_connection.values():
                for note in gathered:
                    self.store.send(node, self._json(note)).addErrback(self._unsent, node)
        ended, self._ended = self._ended, []
        for transport in ended:
            self.lose(transport)

    def _json(self, note: _Note) -> dict[str, Any]:
        """The note as it goes, numbered in its direction of its relay."""
        me = self.me
        if note.kind is records.RelayIn:
            return records.RelayIn(me, note.conn, tuple(note.parts), note.n).to_json()
        if note.kind is records.RelayOut:
            return records.RelayOut(me, note.conn, b"".join(note.parts), note.end, note.n).to_json()
        if note.kind is records.RelayClosed:
            return records.RelayClosed(me, note.conn).to_json()
        host, address, vouched = note.opened or ("", "", False)
        return records.RelayOpened(me, note.conn, host, _port_of(address), note.parts[0], vouched).to_json()

    def _unsent(self, failure: Failure, node: str) -> None:
        """A note that did not go leaves its connection's stream with a hole:
        every relay with that node ends (its devices log in again)."""
        log.warn("could not relay to node {node}: {error}", node=node, error=failure.value)
        self.gone(node)

    def stop(self) -> None:
        """The node stops: the far nodes hear that our devices are gone, what
        was gathered goes now, and our connections for other nodes' devices
        are lost (the hub has said BYE on them)."""
        for id, near in list(self.near.items()):
            self._add(near.far, records.RelayClosed, id)
        self.near.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
            self._flush()
        for transport in list(self.far.values()):
            transport.disconnecting = True
            self.lose(transport)
