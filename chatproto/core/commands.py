"""The client packets, one row each: what handles it and what it must pass first.

Every transport (Int32, WebSocket, IRC) hands each well-formed client
packet to :func:`apply`, which checks a row's conditions in one place and
in one order:

1. ``login``: the connection must be logged in (``not_logged_in``);
2. ``versions``: the session's protocol version must have the packet
   (``unknown_type``, as the codec says it for a packet it can't read);
3. ``bucket``: a token from the connection's rate bucket (``rate_limited``):
   ``messages`` (SAY, WHISPER, EDIT, DELETE, REACT, FILES) or ``presence`` (JOIN,
   PART, TOPIC, ACCOUNT, MODERATE, ADMIN, AWAY, OPEN, NICK), or none;
4. the handler. A Deferred it returns gets one errback: a ProtocolError
   becomes that ERROR, anything else is logged and answered ``internal``.
   A refusal the Deferred holds already (a single server answers at once
   where a cluster node asks the others) is raised as if the handler had
   raised it, so it costs the same on every server.

``cost`` is what the packet costs in the connection's fair share
(core/budget.py), charged whether or not it is refused.

A new client packet is its class in the codec, a row here and its handler.
What the table needs of a connection is :class:`CommandTarget`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.budget import follow_cost, history_cost, list_cost, unit
from chatproto.core.connection import Connection
from chatproto.limits import Limits, TokenBucket

if TYPE_CHECKING:
    from chatproto.core.hub import Hub

log = Logger()

#: Protocol versions a packet exists in.
EVERY_VERSION = frozenset(codec.VERSIONS)
SINCE_2 = frozenset(v for v in codec.VERSIONS if v >= 2)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A rate limit some packets share: made at a connection's first such packet."""

    name: str
    what: str  # what the ERROR says it limits
    make: Callable[[Limits, float], TokenBucket]


BUCKETS = {
    bucket.name: bucket
    for bucket in (
        Bucket(
            "messages",
            "messages, edits, deletions, reactions or file tokens",
            lambda limits, now: TokenBucket(limits.rate, limits.burst, now),
        ),
        Bucket(
            "presence",
            "JOIN, PART, TOPIC, ACCOUNT, MODERATE, ADMIN, AWAY, OPEN or NICK",
            lambda limits, now: TokenBucket(limits.join_rate, limits.join_burst, now),
        ),
    )
}


class CommandTarget(Connection, Protocol):
    """What the table needs of a connection, besides what the core does."""

    hub: Hub

    @property
    def clock(self) -> IReactorTime:
        """The hub's clock."""

    @property
    def closing(self) -> bool:
        """Once closing, nothing more is answered."""

    def bucket(self, bucket: Bucket, now: float) -> TokenBucket:
        """The connection's own TokenBucket for ``bucket`` (made on first use)."""

    def log_in(self, packet: codec.Login) -> None:
        """LOGIN: the connection's state changes with it."""

    def quit(self, reason: str | None) -> None:
        """QUIT: leave, then close."""

    def refused(self, error: ProtocolError, packet: Any) -> None:
        """Send the ERROR for ``error``, with the packet's ref unless it has one."""

    def refuse(self, code: str, message: str, ref: str | None) -> None:
        """Send an ERROR."""

    def charge(self, units: float = 1.0) -> None:
        """Spend more of the fair share than the packet's row said (what a
        search returned)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One client packet's row."""

    packet: type
    handler: Callable[[CommandTarget, Any], Deferred[Any] | None]
    login: bool = True
    versions: frozenset[int] = SINCE_2
    bucket: str | None = None  # a key of BUCKETS
    cost: Callable[[Any, int, int], float] = unit  # (packet, history_page, rooms)
    failed: str = "failed on this request"  # "the server ..." when a later answer fails


# -- handlers: the core's parts do the work -------------------------------------------


def _login(connection: CommandTarget, packet: codec.Login) -> None:
    connection.log_in(packet)  # its own errback: refusals are counted, passwords tried


def _say(connection: CommandTarget, packet: codec.Say) -> Deferred[None] | None:
    messages = connection.hub.messages
    return messages.say(
        connection, packet.text, packet.ref, packet.room, packet.reply, packet.notice, packet.files
    )


def _files(connection: CommandTarget, packet: codec.Files) -> None:
    files = connection.hub.files
    if files is None:
        raise ProtocolError(ErrorCode.NO_FILES, "this server keeps no files")
    files.token(connection, packet)


def _change(connection: CommandTarget, packet: codec.Edit | codec.Delete | codec.React) -> None:
    connection.hub.messages.change(connection, packet)


def _typing(connection: CommandTarget, packet: codec.Typing) -> None:
    connection.hub.presence.typing(connection, packet)


def _away(connection: CommandTarget, packet: codec.Away) -> None:
    connection.hub.presence.away(connection, packet)


def _open(connection: CommandTarget, packet: codec.Open) -> Deferred[None]:
    return connection.hub.conversations.open(connection, packet)


def _nick(connection: CommandTarget, packet: codec.Nick) -> Deferred[None] | None:
    return connection.hub.renames.rename(connection, packet)


def _whisper(connection: CommandTarget, packet: codec.Whisper) -> Deferred[None]:
    return connection.hub.messages.whisper(connection, packet)


def _ping(connection: CommandTarget, packet: codec.Ping) -> None:
    connection.send(codec.PongReply(packet.token))


def _pong(connection: CommandTarget, packet: codec.Pong) -> None:
    pass  # hearing anything is what keeps the connection alive


def _quit(connection: CommandTarget, packet: codec.Quit) -> None:
    connection.quit(packet.reason)


def _history(connection: CommandTarget, packet: codec.HistoryRequest) -> Deferred[None]:
    return connection.hub.messages.history(connection, packet).addCallback(connection.send)


def _join(connection: CommandTarget, packet: codec.Join) -> None:
    connection.hub.room_requests.join(connection, packet)


def _part(connection: CommandTarget, packet: codec.Part) -> None:
    connection.hub.room_requests.part(connection, packet)


def _list(connection: CommandTarget, packet: codec.ListRooms) -> Deferred[None]:
    return connection.hub.room_requests.list_rooms(connection, packet)


def _topic(connection: CommandTarget, packet: codec.SetTopic) -> None:
    connection.hub.room_requests.set_topic(connection, packet)


def _account(connection: CommandTarget, packet: codec.AccountRequest) -> Deferred[None]:
    return connection.hub.account_requests.account(connection, packet)


def _mark(connection: CommandTarget, packet: codec.Mark) -> None:
    connection.hub.room_requests.mark(connection, packet)


def _moderate(connection: CommandTarget, packet: codec.Moderate) -> None:
    connection.hub.moderation.moderate(connection, packet)


def _admin(connection: CommandTarget, packet: codec.AdminRequest) -> Deferred[None] | None:
    return connection.hub.moderation.admin(connection, packet)


def _search(connection: CommandTarget, packet: codec.Search) -> Deferred[None]:
    return connection.hub.searches.search(connection, packet)


def _members(connection: CommandTarget, packet: codec.MembersRequest) -> Deferred[None]:
    return connection.hub.member_requests.members(connection, packet)


def _follow(connection: CommandTarget, packet: codec.Follow) -> Deferred[None]:
    return connection.hub.member_requests.follow(connection, packet)


_ROWS = (
    Command(codec.Login, _login, login=False, versions=EVERY_VERSION),
    Command(codec.Say, _say, versions=EVERY_VERSION, bucket="messages", failed="could not take the files"),
    Command(
        codec.Whisper,
        _whisper,
        versions=EVERY_VERSION,
        bucket="messages",
        failed="could not pass the whisper on",
    ),
    Command(codec.Ping, _ping, login=False, versions=EVERY_VERSION),
    Command(codec.Quit, _quit, login=False, versions=EVERY_VERSION),
    Command(
        codec.HistoryRequest,
        _history,
        versions=EVERY_VERSION,
        cost=history_cost,
        failed="could not read its history",
    ),
    Command(codec.Pong, _pong, login=False, versions=EVERY_VERSION),
    Command(codec.Join, _join, bucket="presence"),
    Command(codec.Part, _part, bucket="presence"),
    Command(codec.ListRooms, _list, cost=list_cost, failed="could not list the rooms"),
    Command(codec.SetTopic, _topic, bucket="presence"),
    Command(codec.AccountRequest, _account, bucket="presence"),
    Command(codec.Mark, _mark),
    Command(codec.Moderate, _moderate, bucket="presence"),
    Command(codec.AdminRequest, _admin, bucket="presence"),
    Command(codec.Edit, _change, bucket="messages"),
    Command(codec.Delete, _change, bucket="messages"),
    Command(codec.React, _change, bucket="messages"),
    Command(codec.Typing, _typing),
    Command(codec.Away, _away, bucket="presence"),
    Command(codec.Open, _open, bucket="presence", failed="could not open the conversation"),
    Command(codec.Nick, _nick, bucket="presence", failed="could not change the nick"),
    Command(codec.Files, _files, bucket="messages"),
    Command(codec.Search, _search, bucket="messages", failed="could not search"),
    # MEMBERS is charged by the members it lists, as SEARCH by its hits.
    Command(codec.MembersRequest, _members, failed="could not list the members"),
    Command(codec.Follow, _follow, cost=follow_cost, failed="could not list the members"),
)

#: Packet class -> its row.
COMMANDS: dict[type, Command] = {row.packet: row for row in _ROWS}
assert len(COMMANDS) == len(_ROWS), "one row per packet"


def apply(command: Command, connection: CommandTarget, packet: Any) -> None:
    """``packet``, of ``command``'s type, past the row's checks to its
    handler; a refusal is raised as a ProtocolError."""
    session = connection.session
    if session is None:
        if command.login:
            raise ProtocolError(ErrorCode.NOT_LOGGED_IN, "log in first")
    elif session.version not in command.versions:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"packet type 0x{packet.TYPE:02X} is not a version {session.version} client-to-server packet",
        )
    if command.bucket is not None:
        spend(connection, BUCKETS[command.bucket])
    result = command.handler(connection, packet)
    if not isinstance(result, Deferred):
        return
    held = _held_failure(result)
    if held is None:
        result.addErrback(_failed, connection, packet, command.failed)
    elif isinstance(held.value, ProtocolError):
        raise held.value  # refused at once (a single server's answer): charged as any refusal is
    else:
        _failed(held, connection, packet, command.failed)


def _held_failure(result: Deferred[Any]) -> Failure | None:
    """The failure a Deferred already holds, taken out of it; None if it has
    none yet (it succeeded, or will answer later)."""
    if not result.called or result.paused or not isinstance(result.result, Failure):
        return None
    failure: Failure = result.result
    result.addErrback(lambda _: None)
    return failure


def spend(connection: CommandTarget, kind: Bucket) -> None:
    """A token from the connection's ``kind`` bucket, or ``rate_limited``."""
    now = connection.clock.seconds()
    bucket = connection.bucket(kind, now)
    if not bucket.take(now):
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"slow down: at most {bucket.rate:g} {kind.what} a second "
            f"(burst {bucket.burst}); this one was dropped",
        )


def _failed(failure: Failure, connection: CommandTarget, packet: Any, what: str) -> None:
    """A request answered later failed: its own ERROR, or internal."""
    if connection.closing:
        return
    if isinstance(failure.value, ProtocolError):
        connection.refused(failure.value, packet)
        return
    log.failure("connection {id}: {kind} failed", failure, id=connection.id, kind=type(packet).__name__)
    connection.refuse(ErrorCode.INTERNAL, f"the server {what}", packet.ref)
