"""The other nodes: one interface for a single server and a cluster node.

The core asks its :class:`Peers` wherever another node might have a say
(a nick claimed elsewhere, a session to resume from elsewhere, a whisper to
someone elsewhere, the rooms listed elsewhere) and hands them each flushed
batch. A single server's :class:`SingleNode` answers at once, with the same
kind of value a cluster node answers with later, so the core never asks
which mode it is in. (A single server has no members elsewhere, so it is
never asked for a stand-in of one.) The cluster node is
:mod:`chatproto.cluster`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IProtocolFactory

from chatproto import codec
from chatproto.backends.accounts import AccountStore
from chatproto.backends.eventlog import EventLog, Outcome
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.connection import Connection, Session
from chatproto.core.records import Record, SessionRecord
from chatproto.core.registry import Listing
from chatproto.core.rooms import ChatRoom, Directory, RoomRules, load_rules, preload

if TYPE_CHECKING:
    from chatproto.core.broadcast import Flushed

#: A session resumed from another node: its record, and its rooms as (key, name).
Resumed = tuple[SessionRecord, list[tuple[str, str]]]


class HeldElsewhere(ProtocolError):
    """The session a LOGIN is for is in use on node ``node``: a device that
    can be relayed is relayed there (cluster/relays.py), any other gets
    nick_taken. ``vouched``: its password was checked here (a LOGIN that
    resumes is checked there, by its token)."""

    def __init__(self, node: str, message: str, vouched: bool) -> None:
        super().__init__(ErrorCode.NICK_TAKEN, message)
        self.node = node
        self.vouched = vouched


@dataclass(frozen=True, slots=True)
class Seat:
    """A session as the nodes' shared state names it: its id, nick key, and
    whether it is an account's."""

    id: int
    key: str
    account: bool


@dataclass(frozen=True, slots=True)
class SharedRoom:
    """A room and a session as the nodes' shared state has them, for a node
    that may hold neither (files, docs/protocol.md 20): whether the room
    exists (has members, on any node) and its rules, the session's seat
    among its members, and the session that holds the nick key asked about,
    wherever it is."""

    exists: bool
    rules: RoomRules
    member: Seat | None
    session: Seat | None


class Inbound(Protocol):
    """What another node's changes are applied to (the core's side, :mod:`chatproto.core.inbound`)."""

    def renumber(self, base: int) -> None: ...

    def seat(self, room: ChatRoom, member: Session) -> None: ...

    def unseat(self, room: ChatRoom) -> None: ...

    def room(self, key: str) -> ChatRoom | None: ...

    def always(self) -> list[str]:
        """The keys of the rooms that exist while empty (the default room, ``--room``)."""

    def apply(self, room: ChatRoom, record: Record) -> tuple[Any, Callable[[], None] | None]: ...

    def deliver(self, items: list[Any], messages: list[Outcome]) -> None: ...

    def away(self, id: int, key: str) -> str | None:
        """The away message of this node's session ``id`` (holding ``key``), if it is away."""

    def invited(self, key: str, name: str) -> None:
        """A direct conversation opened or said in on another node: this
        node's session of account ``key`` joins it now."""

    def after_all(self, call: Callable[[], None]) -> None: ...

    def whispered(self, private: codec.Private) -> None: ...

    def listing(self) -> Listing:
        """This node's pending connections and sessions, for another node's ADMIN sessions."""

    def kicked(self, by: Session, key: str, reason: str | None) -> None:
        """Admin ``by`` (a stand-in) on another node kicks this node's session holding ``key``."""

    def pending(self, id: int, state: str, v1: bool) -> None:
        """Another node's connection ``id`` is pending (``state`` connecting) or no more (gone)."""

    def pending_gone(self, whose: Callable[[int], bool]) -> None:
        """Another node's pending connections, those ``whose(id)``, are gone
        (that node left or died)."""

    def in_use(self, key: str, patience: float) -> Deferred[bool]:
        """Whether a device of this node's session holding ``key`` answers a
        PING within ``patience`` seconds (False at once if there is no such session)."""

    def moved(self, key: str) -> None: ...

    def reload_bans(self) -> Deferred[None]: ...

    def is_admin(self, key: str, account: bool) -> bool: ...


class Peers(Protocol):
    """The other nodes, as the core sees them."""

    def start(self, inbound: Inbound, protocols: IProtocolFactory) -> Deferred[Any]:
        """Join the others; fires when connections may be accepted.
        ``protocols`` makes the connection of a device relayed here from
        another node (Int32's)."""

    def stop(self) -> Deferred[None]:
        """Leave the others: this node's sessions leave their rooms for them."""

    # -- the order: a flushed batch's room items, in each room's order

    def append(self, flushed: Flushed) -> Deferred[list[Outcome]] | None:
        """Put the batch's room items in their rooms' shared order; fires
        with its messages, numbered. None: nothing of it goes to the others
        (the event log stores its messages)."""

    def delivered(self, flushed: Flushed) -> None:
        """The batch went out here: what waited behind it may follow."""

    # -- rooms

    def load(self, room: ChatRoom) -> Deferred[Any]:
        """Read a room's topic, rules, members elsewhere and recent history."""

    def dropped(self, room: ChatRoom) -> None:
        """No member here any more."""

    def listing(self, directory: Directory) -> Deferred[str]:
        """Every room there is, here and elsewhere, as LIST's JSON array."""

    # -- sessions

    def relay(self, connection: Connection, login: bytes, node: str, vouched: bool) -> None:
        """Hand ``connection`` to node ``node``, which holds the session its
        LOGIN (``login``, the payload, without its password) is for: its
        packets go there, and what that node writes comes back
        (cluster/relays.py). ``vouched``: its password was checked here."""

    def forward(self, connection: Connection, payload: bytes) -> None:
        """A packet from a relayed connection."""

    def relaying(self) -> bool:
        """Whether the connection being accepted now is a device relayed here
        from another node (which announced it as pending already)."""

    def vouched(self, key: str) -> bool:
        """Whether the LOGIN being read now is a relayed device's for the
        session of nick key ``key``, whose password the node it reached
        has checked."""

    def unrelay(self, connection: Connection) -> None:
        """A relayed connection is gone."""

    def pending(self, id: int, state: str, v1: bool) -> None:
        """This node's connection ``id`` is pending or no more (PENDING's
        ``state``; ``v1``: whether version 1 hears of its going): for the
        others' PENDING."""

    def claim(self, key: str, nick: str, account: bool = False) -> Deferred[Resumed | None]:
        """The nick is this node's now (None); or, for the login of an
        ``account`` whose session another node holds and nobody there uses,
        that session moved here. Fails with nick_taken if another node's
        session has the nick."""

    def release(self, key: str) -> Deferred[None]:
        """The nick is free again (fires once the others know)."""

    def save(self, session: Session) -> None:
        """The session's record, for a resume on another node."""

    def resume(self, key: str, token: str, version: int) -> Deferred[Resumed | None]:
        """A session held elsewhere whose resume token this is, moved here; or None."""

    def whisper(self, key: str, private: codec.Private) -> Deferred[bool]:
        """To the session with this nick key elsewhere: False if there is none."""

    def stand_in(self, id: int, nick: str, key: str, account: bool) -> Session:
        """The one Session object standing for a member on another node."""

    def forget(self, session: Session) -> None:
        """A stand-in in no room any more."""

    def bans_changed(self) -> Deferred[Any]:
        """The server-wide bans changed here: the others read them again."""

    def sessions(self) -> Deferred[Listing]:
        """Every other node's pending connections and sessions (ADMIN sessions)."""

    def kick(self, key: str, by: Session, reason: str | None) -> Deferred[bool]:
        """ADMIN kick of the session holding nick key ``key`` on another
        node, by admin ``by``: False if nobody there has the nick."""

    # -- files

    def shared_room(self, room: str, id: int, key: str) -> Deferred[SharedRoom | None]:
        """Room ``room`` (a key; "" for none) as every node knows it, with
        session ``id``'s seat in it (0: the seat of ``key``'s session) and
        the session holding nick key ``key``; None where there are no other
        nodes (this node's own state is all there is)."""


class SingleNode:
    """A server on its own: nobody else to ask, every answer at once."""

    def __init__(self, eventlog: EventLog, store: AccountStore | None, replay: int) -> None:
        self.eventlog = eventlog
        self.store = store
        self.replay = replay

    def start(self, inbound: Inbound, protocols: IProtocolFactory) -> Deferred[Any]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def append(self, flushed: Flushed) -> None:
        return None

    def delivered(self, flushed: Flushed) -> None:
        pass

    def load(self, room: ChatRoom) -> Deferred[Any]:
        """Rules from the account store, the topic of a room that always
        exists from the log, and at least the newest message: its seq is
        where unread counts start."""
        reads: list[Deferred[Any]] = []
        if room.permanent:  # only rooms that always exist keep their topic in the log
            topic = self.eventlog.topic(room.key)
            topic.addCallback(lambda topic: setattr(room, "topic", topic))
            reads.append(topic)
        if self.store is not None:
            rules = self.store.rules(room.key)
            rules.addCallback(lambda data: load_rules(room, data))
            reads.append(rules)
        page = self.eventlog.before(None, max(1, self.replay), room.key)
        page.addCallback(lambda page: preload(room, page[0]))
        reads.append(page)
        rev = self.eventlog.last_rev(room.key)
        rev.addCallback(lambda rev: setattr(room, "rev", max(room.rev, rev)))
        reads.append(rev)
        return gatherResults(reads, consumeErrors=True)

    def dropped(self, room: ChatRoom) -> None:
        pass

    def listing(self, directory: Directory) -> Deferred[str]:
        return succeed(directory.listing_json())

    def pending(self, id: int, state: str, v1: bool) -> None:
        pass

    def relay(self, connection: Connection, login: bytes, node: str, vouched: bool) -> None:
        raise AssertionError("a single server holds every session")

    def forward(self, connection: Connection, payload: bytes) -> None:
        pass

    def relaying(self) -> bool:
        return False

    def vouched(self, key: str) -> bool:
        return False

    def unrelay(self, connection: Connection) -> None:
        pass

    def claim(self, key: str, nick: str, account: bool = False) -> Deferred[Resumed | None]:
        return succeed(None)

    def release(self, key: str) -> Deferred[None]:
        return succeed(None)

    def save(self, session: Session) -> None:
        pass

    def resume(self, key: str, token: str, version: int) -> Deferred[Resumed | None]:
        return succeed(None)

    def whisper(self, key: str, private: codec.Private) -> Deferred[bool]:
        return succeed(False)

    def stand_in(self, id: int, nick: str, key: str, account: bool) -> Session:
        raise RuntimeError("a single server has no members elsewhere")

    def forget(self, session: Session) -> None:
        pass

    def bans_changed(self) -> Deferred[Any]:
        return succeed(None)

    def sessions(self) -> Deferred[Listing]:
        return succeed(([], []))

    def kick(self, key: str, by: Session, reason: str | None) -> Deferred[bool]:
        return succeed(False)

    def shared_room(self, room: str, id: int, key: str) -> Deferred[SharedRoom | None]:
        return succeed(None)  # every room there is, and every session, is in this node's own state
