"""The one interface between a transport and the core.

Every transport (Int32 frames over TCP, TLS or a Unix socket; WebSocket;
IRC) gives the core the same object for a client connection: its
:class:`~chatproto.transports.policy.ConnectionPolicy`, which holds the
connection's limits, timers and output and is composed with the framing
protocol that reads and writes its bytes. It calls the core's
:class:`~chatproto.core.hub.Hub` about the connection (``accept``,
``login``, ``leave``, ``overflowed``) and hands it each client packet
through the packet's row of the command table (core/commands.py); the core
calls only what :class:`Connection` lists. Broadcasts are framed once per
:class:`Wire` and the same bytes go to every recipient on it.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.smallmap import SmallMap

if TYPE_CHECKING:
    from chatproto.core.rooms import ChatRoom


def token_text(token: bytes) -> str:
    """A resume token as clients see it: URL-safe base64, 32 characters
    for the 24 bytes a session holds (bytes take a third less memory)."""
    return base64.urlsafe_b64encode(token).decode("ascii")


class Wire(Protocol):
    """A transport's framing. Connections that share a wire share bytes."""

    name: str  # for metrics: "int32", "websocket", "irc"
    # Whether a version 2 client on it gets a big room's members lazily
    # (docs/protocol.md 22); IRC's NAMES stay whole.
    lazy: bool
    # Whether its connections' packets can be relayed to another node of a
    # cluster as payloads (cluster/relays.py): Int32's and WebSocket's can.
    relayable: bool

    def frame(self, payload: bytes) -> bytes:
        """Wire bytes for one payload (type byte + JSON object)."""


class Delivery(Protocol):
    """Where a connection's output goes: its transport's outbox."""

    def deliver(self, data: bytes) -> None:
        """Bytes already framed for the connection's wire; shared with other recipients."""


class Connection(Protocol):
    """What the core needs of one client connection, whatever carries it."""

    id: int  # given by Hub.accept
    address: str  # for the console and the log; never sent to other clients
    host: str  # the peer's IP address; "" for a Unix socket
    opened: float
    session: Session | None  # set by the core on login, cleared when it leaves
    wire: Wire

    @property
    def heard(self) -> float:
        """When the peer last sent anything (the clock's seconds)."""

    @property
    def paused(self) -> bool:
        """Whether its reading is paused (its fair share, a password check):
        what it sent since may be waiting unread."""

    @property
    def outbox(self) -> Delivery:
        """What broadcasts and framed packets are written to, as
        ``outbox.deliver(data)``: reached through the connection, not held
        per connection as a bound method (an object each, and a slower call)."""

    def send(self, packet: Any) -> None:
        """One packet for this connection alone."""

    def disconnect(self, reason: str, *, flush: bool = True) -> None:
        """BYE ``reason``, then close. ``flush=False`` drops queued output."""

    def abort(self) -> None:
        """Drop the connection now, unsent output and all."""

    def relay(self) -> None:
        """From now on its packets go to another node (Peers.forward), whose
        answers come back through its outbox; its own limits still pace it."""

    def end(self) -> None:
        """Close once what was written has gone, with no BYE of its own
        (a relayed connection: the node that ran it said why)."""

    def closed(self) -> Deferred[None]:
        """Fires once the connection is gone."""


@dataclass(eq=False, slots=True)
class Session:
    """A logged-in identity: what presence shows once, however many
    connections (devices) it has. A guest has one; an account may have
    several. Each device has its own resume token, and survives its
    connection being replaced on resume."""

    id: int
    nick: str
    key: str  # what nicks are compared by (rules.nick_key)
    connection: Connection | None  # the device that logged in or resumed last (None: on another node)
    since: float
    version: int = 1  # the protocol version it logged in with
    # Most sessions are in one room, with one device: each mapping is held in
    # two slots until it has a second entry.
    rooms: SmallMap[str, ChatRoom] = field(default_factory=SmallMap)  # key -> the room
    devices: SmallMap[Connection, bytes] = field(default_factory=SmallMap)  # connection -> its resume token
    account: bool = False  # logged in with the nick's password
    admin: bool = False  # an account named by --admin
    marks: SmallMap[str, int] = field(default_factory=SmallMap)  # room key -> read marker (seq)
    away: str | None = None  # its away message ("" for none) while away
    # what owns its messages: an account's (eventlog.owner_of); None for a
    # guest, whose author_of string is made when asked
    owner: str | None = None
    # room key -> (TYPING tokens left, when counted, whether a true went out
    # with no false or message after it); made on first use
    typing: dict[str, tuple[float, float, bool]] | None = None

    @property
    def token(self) -> str:
        """The resume token of the latest device."""
        assert self.connection is not None, "a member on another node has no token here"
        return token_text(self.devices[self.connection])

    def device(self, token: str) -> Connection | None:
        """The device whose resume token this is (compared in constant time)."""
        found = None
        given = token.encode("utf-8")
        for connection, secret in self.devices.items():
            if hmac.compare_digest(given, token_text(secret).encode("ascii")):
                found = connection
        return found


@dataclass(frozen=True)
class HubEvent:
    """For observers such as the server console: what happened to whom.

    ``kind`` is one of pending, pending_gone, joined, left, resumed,
    device_joined, device_left, renamed (``nick`` the new nick, ``reason``
    the old), account (registered or deleted its account), error (the
    session-wide ones) and
    room_joined, room_left, topic, room_gone, moderation (``room`` names
    the room).
    """

    kind: str
    id: int
    nick: str | None = None
    address: str | None = None
    reason: str | None = None
    since: float | None = None
    room: str | None = None


def logged_in(connection: Connection) -> Session:
    """The connection's session: the command table lets only logged-in
    connections' requests through, so none is a bug, answered not_logged_in."""
    session = connection.session
    if session is None:
        raise ProtocolError(ErrorCode.NOT_LOGGED_IN, "log in first")
    return session
