"""NICK: a guest takes another nick while connected (docs/protocol.md 15.11).

The session keeps its id, its rooms, its operator status (a guest's is by
session), its away message and what it owns (a guest owns its messages by
session, not by nick); only the name it is shown by changes, everywhere the
core keeps it. RENAMED goes in each room's order, once to every session
sharing a room with the renamed one (in the first of its rooms that they
share) and to the renamed session itself; version 1 sees, in its one room,
the old nick leave and the new one join.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.accounts import AccountRecord, AccountStore
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.accounts import Accounts
from chatproto.core.broadcast import Broadcast, Event
from chatproto.core.connection import Connection, Session, logged_in
from chatproto.core.following import Following
from chatproto.core.observers import Observers
from chatproto.core.peers import Peers
from chatproto.core.records import MemberRenamed
from chatproto.core.registry import Registry
from chatproto.core.rooms import ChatRoom, Directory
from chatproto.rules import nick_key, normalise_nick

log = Logger()


def v1_left_message(nick: str) -> str:
    """What version 1 is told of a rename, as the old nick's LEFT ``quit`` message."""
    return f"now known as {nick}"


class Renames:
    """Checks and carries out NICK."""

    def __init__(
        self,
        clock: IReactorTime,
        registry: Registry,
        accounts: Accounts | None,
        store: AccountStore | None,
        directory: Directory,
        broadcast: Broadcast,
        peers: Peers,
        observers: Observers,
        following: Following,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.accounts = accounts
        self.store = store
        self.directory = directory
        self.broadcast = broadcast
        self.peers = peers
        self.observers = observers
        self.following = following  # a follow of the old nick moves to the new (docs/protocol.md 22)

    def rename(self, connection: Connection, packet: codec.Nick) -> Deferred[None] | None:
        """NICK, after the command table's login and rate checks: the checks
        of 15.11 in their order, then the change. A nick equal to the
        session's own (case and all) changes nothing: RENAMED to the
        requester alone."""
        session = logged_in(connection)
        if session.account:
            raise ProtocolError(
                ErrorCode.NOT_PERMITTED, f"{session.nick!r} is an account: an account's nick is its name"
            )
        nick = normalise_nick(packet.nick)
        key = nick_key(nick)
        if nick == session.nick:
            connection.send(codec.Renamed(nick, nick, packet.ref))
            return None
        self._not_held(session, nick, key)
        registered: Deferred[AccountRecord | None] = (
            self.store.account(key) if self.store is not None and key != session.key else succeed(None)
        )
        d: Deferred[Any] = registered.addCallback(self._checked, session, nick, key)
        if key != session.key:
            d.addCallback(lambda _: self.peers.claim(key, nick))
        return d.addCallback(lambda _: self._apply(connection, session, nick, key, packet.ref))

    def _not_held(self, session: Session, nick: str, key: str) -> None:
        held = self.registry.held(key)
        if held is not None and held is not session:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {held.nick!r} is taken")

    def _checked(self, record: AccountRecord | None, session: Session, nick: str, key: str) -> None:
        """After the account store's answer: registered, then the server's
        bans, then the bans of the session's rooms."""
        if record is not None:
            raise ProtocolError(
                ErrorCode.NICK_REGISTERED, f"nick {record.nick!r} is registered: it is its account's"
            )
        if self.accounts is not None:
            self.accounts.check_ban(key)
        now = self.clock.seconds()
        for room in session.rooms.values():
            ban = room.rules.bans.get(key)
            if ban is not None and ban.active(now) and not session.admin:
                raise ProtocolError(ErrorCode.BANNED, f"{nick!r} is banned from {room.name!r}, where you are")

    def _apply(self, connection: Connection, session: Session, nick: str, key: str, ref: str | None) -> None:
        """The session is ``nick`` now, if it is still here and nobody took
        the nick while the store was asked."""
        if connection.session is not session or not session.devices:
            self._unclaim(session, key)
            return
        held = self.registry.held(key)
        if held is not None and held is not session:
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {held.nick!r} is taken")
        if session.account:  # registered while the store was asked
            self._unclaim(session, key)
            raise ProtocolError(
                ErrorCode.NOT_PERMITTED, f"{session.nick!r} is an account: an account's nick is its name"
            )
        old, old_key = session.nick, session.key
        self.registry.rename(session, nick, key)
        rooms = list(session.rooms.values())
        for room in rooms:
            room.refresh(session)
        self.peers.save(session)  # a resume on another node finds it by its new nick
        if old_key != key:
            self.peers.release(old_key)
            self.following.renamed(old_key, key, [room.key for room in rooms])
        log.info("{old} ({id}) is now known as {nick}", old=old, id=session.id, nick=nick)
        self.observers.notify("renamed", session.id, nick=nick, reason=old)
        if not rooms:
            self._tell_devices(connection, session, old, ref)
            return
        self._broadcast(connection, session, rooms, old, old_key, ref)

    def _unclaim(self, session: Session, key: str) -> None:
        """A claim made for a rename that was not made (the session went
        meanwhile): let it go, unless a session here holds the nick now."""
        if key != session.key and self.registry.held(key) is None:
            self.peers.release(key)

    def _broadcast(
        self,
        connection: Connection,
        session: Session,
        rooms: list[ChatRoom],
        old: str,
        old_key: str,
        ref: str | None,
    ) -> None:
        """RENAMED in each room's order; each member gets it in the first of
        the session's rooms it is in, the renamed session in its first."""
        nick, key = session.nick, session.key
        shared = codec.encode(codec.Renamed(old, nick))
        own = codec.encode(codec.Renamed(old, nick, ref))
        keys = tuple(room.key for room in rooms)
        told: set[int] = set()
        for room in rooms:
            first = not told
            record = MemberRenamed(room.name, session.id, old, nick, old_key, key, keys)
            v1 = None
            if room is self.directory.default:
                self.broadcast.event(Event(room.key, v1_left(session.id, old, nick), None))
                v1 = codec.encode(codec.Joined(session.id, nick))
            skip = frozenset(told) or None
            sender = connection if first else None
            self.broadcast.event(
                Event(room.key, v1, shared, sender, own if first else None, record=record, skip=skip)
            )
            told.update(room.members)

    def _tell_devices(self, connection: Connection, session: Session, old: str, ref: str | None) -> None:
        """A session in no room: only its own devices learn its new nick."""
        shared = codec.encode(codec.Renamed(old, session.nick))
        for device in list(session.devices):
            if device is connection:
                device.send(codec.Renamed(old, session.nick, ref))
            else:
                device.outbox.deliver(device.wire.frame(shared))


def v1_left(id: int, old: str, nick: str) -> bytes:
    """Version 1's view of a rename begins with the old nick quitting."""
    return codec.encode(codec.Left(id, old, "quit", v1_left_message(nick)))
