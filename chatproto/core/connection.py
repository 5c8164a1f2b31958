"""The one interface between a transport and the core.

A transport (Int32 frames over TCP, TLS or a Unix socket today; WebSocket
and IRC next) adapts its wire format to this: it calls the core's
:class:`~chatproto.core.hub.Hub` (``accept``, ``login``, ``say``,
``whisper``, ``history``, ``leave``, ``overflowed``), and the core calls only
what :class:`Connection` lists. Broadcasts are framed once per :class:`Wire`
and the same bytes go to every recipient on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred


class Wire(Protocol):
    """A transport's framing. Connections that share a wire share bytes."""

    def frame(self, payload: bytes) -> bytes:
        """Wire bytes for one payload (type byte + JSON object)."""


class Connection(Protocol):
    """What the core needs of one client connection, whatever carries it."""

    id: int  # given by Hub.accept
    address: str  # for the console and the log; never sent to other clients
    opened: float
    session: Session | None  # set by the core on login, cleared when it leaves
    wire: Wire

    def deliver(self, data: bytes) -> None:
        """Bytes already framed for ``wire``; shared with other recipients."""

    def send(self, packet) -> None:
        """One packet for this connection alone."""

    def disconnect(self, reason: str, *, flush: bool = True) -> None:
        """BYE ``reason``, then close. ``flush=False`` drops queued output."""

    def abort(self) -> None:
        """Drop the connection now, unsent output and all."""

    def closed(self) -> Deferred:
        """Fires once the connection is gone."""


@dataclass(eq=False, slots=True)
class Session:
    """A logged-in identity; survives its connection being replaced on resume."""

    id: int
    nick: str
    key: str  # what nicks are compared by (rules.nick_key)
    token: str  # the resume secret
    connection: Connection
    since: float
    version: int = 1  # the protocol version it logged in with
    rooms: dict[str, Any] = field(default_factory=dict)  # key -> ChatRoom it is in


@dataclass(frozen=True)
class HubEvent:
    """For observers such as the server console: what happened to whom.

    ``kind`` is one of pending, pending_gone, joined, left, resumed, error
    (the session-wide ones) and room_joined, room_left, topic, room_gone
    (``room`` names the room).
    """

    kind: str
    id: int
    nick: str | None = None
    address: str | None = None
    reason: str | None = None
    since: float | None = None
    room: str | None = None
