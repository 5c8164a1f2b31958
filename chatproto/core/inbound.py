"""Other nodes' changes, applied here: what a cluster node
(:mod:`chatproto.cluster`) calls on the core when it reads them.

Each record changes the room as it says, through the same owners a local
change goes through (membership, the rules, the broadcast), and gives back
what to deliver to the room's members here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from chatproto import codec
from chatproto.backends.eventlog import Outcome, Topic
from chatproto.core.broadcast import Broadcast, Event
from chatproto.core.connection import Session
from chatproto.core.logins import Logins
from chatproto.core.membership import Membership
from chatproto.core.messages import Messages
from chatproto.core.moderation import Moderation
from chatproto.core.observers import Observers
from chatproto.core.pending_news import PendingNews
from chatproto.core.records import (
    AwaySet,
    MemberJoined,
    MemberLeft,
    MemberRenamed,
    Record,
    RulesSet,
    TopicSet,
    TypingSent,
)
from chatproto.core.registry import Listing, Registry
from chatproto.core.renames import v1_left
from chatproto.core.rooms import ChatRoom, Directory, RoomRules


class Inbound:
    """Applies another node's records and inbox messages."""

    def __init__(
        self,
        registry: Registry,
        directory: Directory,
        broadcast: Broadcast,
        membership: Membership,
        logins: Logins,
        messages: Messages,
        observers: Observers,
        moderation: Moderation,
        news: PendingNews,
    ) -> None:
        self.moderation = moderation  # an admin's kick from another node
        self.news = news  # other nodes' pending connections
        self.registry = registry
        self.directory = directory
        self.broadcast = broadcast
        self.membership = membership
        self.logins = logins
        self.messages = messages
        self.observers = observers

    def renumber(self, base: int) -> None:
        """Ids from ``base`` on: unique across the nodes."""
        self.registry.renumber(base)

    def seat(self, room: ChatRoom, member: Session) -> None:
        """A member on another node, as the room's snapshot has it."""
        self.membership.seat(room, member)

    def unseat(self, room: ChatRoom) -> None:
        """The room is gone here: forget its members on other nodes."""
        self.membership.unseat(room)

    def always(self) -> list[str]:
        return [key for key, room in self.directory.rooms.items() if room.permanent]

    def room(self, key: str) -> ChatRoom | None:
        return self.directory.rooms.get(key)

    def apply(
        self, room: ChatRoom, record: Record
    ) -> tuple[Event | list[Event] | None, Callable[[], None] | None]:
        """The room changes as ``record`` says: the Event (or Events) to
        deliver, and what to do once it is delivered."""
        if isinstance(record, MemberJoined):
            return self.membership.remote_joined(room, record), None
        if isinstance(record, MemberLeft):
            return self.membership.remote_left(room, record)
        if isinstance(record, TopicSet):
            return self._topic(room, record), None
        if isinstance(record, AwaySet):
            return self._away(room, record), None
        if isinstance(record, MemberRenamed):
            return self._renamed(room, record), None
        if isinstance(record, TypingSent):
            notice = codec.TypingNotice(room.name, record.nick, record.typing)
            return Event(room.key, None, codec.encode(notice)), None
        self._rules(room, record)
        return None, None

    def _away(self, room: ChatRoom, record: AwaySet) -> Event | None:
        """A member on another node went away or came back."""
        member = room.members.get(record.id)
        if member is None:
            return None
        if member.connection is None:  # one of ours has it already
            member.away = record.message
            room.refresh(member)
        return Event(room.key, None, codec.encode(codec.Status(room.name, record.nick, record.message)))

    def _renamed(self, room: ChatRoom, record: MemberRenamed) -> list[Event]:
        """A member on another node took a new nick: its stand-in's nick
        changes (once, for all its rooms here), and the room's members who
        are in none of its rooms before this one get RENAMED (version 1:
        LEFT of the old nick, JOINED of the new)."""
        member = room.members.get(record.id)
        if member is None:
            return []
        if member.connection is None and member.nick != record.nick:  # a change of case too
            member.nick, member.key = record.nick, record.key
            for each in member.rooms.values():
                each.refresh(member)
            self.membership.following.renamed(record.old_key, record.key, list(member.rooms))
        told: set[int] = set()
        for key in record.rooms:
            if key == room.key:
                break
            earlier = self.directory.rooms.get(key)
            if earlier is not None:
                told.update(earlier.members)
        events = []
        v1 = None
        if room is self.directory.default:
            events.append(Event(room.key, v1_left(record.id, record.old, record.nick), None))
            v1 = codec.encode(codec.Joined(record.id, record.nick))
        renamed = codec.encode(codec.Renamed(record.old, record.nick))
        events.append(Event(room.key, v1, renamed, skip=frozenset(told) or None))
        return events

    def _topic(self, room: ChatRoom, record: TopicSet) -> Event:
        room.topic = Topic(record.text, record.by, record.ts) if record.text else None
        changed = codec.TopicChanged(room.name, record.text, record.by, record.ts)
        self.observers.notify("topic", 0, nick=record.by, room=room.name, reason=record.text)
        return Event(room.key, None, codec.encode(changed))

    def _rules(self, room: ChatRoom, record: RulesSet) -> None:
        """An operator on another node changed the room's rules."""
        room.rules = RoomRules.from_json(record.rules)  # guests' voices too: RoomRules.shared_json
        room.rules.guest_ops = set(record.guest_ops)
        for member in room.members.values():
            room.refresh(member)

    def away(self, id: int, key: str) -> str | None:
        session = self.registry.held(key)
        return session.away if session is not None and session.id == id else None

    def invited(self, key: str, name: str) -> None:
        """A direct conversation opened (or said in) on another node: this
        node's session of the account joins it, as Conversations brings in a
        participant online here (docs/protocol.md 19.8)."""
        session = self.registry.held(key)
        if session is None or not session.account or session.connection is None:
            return  # its account remembers the conversation for its next login
        room = self.directory.conversation(name)
        membership = self.membership

        def enter(_: object) -> None:
            # entered once the room is read (as JOIN does): a cluster node
            # reads a room's stream from its snapshot on, so the join must follow it
            if session.rooms.get(room.key) is room or session.connection is None:
                return
            membership.enter(session, room)
            membership.remember(session, room)
            membership.when_ready([room], lambda: membership.send_room(session, room, None))

        room.ready.addCallback(enter)

    def deliver(self, items: list[Any], messages: list[Outcome]) -> None:
        """Other nodes' items, already stored: to the rooms' recipients now."""
        self.broadcast.deliver_now(items, messages)

    def after_all(self, call: Callable[[], None]) -> None:
        self.broadcast.after_all(call)

    def whispered(self, private: codec.Private) -> None:
        self.messages.whispered(private)

    def listing(self) -> Listing:
        return self.registry.listing()

    def kicked(self, by: Session, key: str, reason: str | None) -> None:
        self.moderation.kicked(by, key, reason)

    def pending(self, id: int, state: str, v1: bool) -> None:
        self.news.elsewhere(id, state, v1)

    def pending_gone(self, whose: Callable[[int], bool]) -> None:
        self.news.gone_elsewhere(whose)

    def in_use(self, key: str, patience: float) -> Deferred[bool]:
        return self.logins.in_use(key, patience)

    def moved(self, key: str) -> None:
        self.logins.moved(key)

    def reload_bans(self) -> Deferred[None]:
        return self.logins.reload_bans()

    def is_admin(self, key: str, account: bool) -> bool:
        return self.logins.is_admin(key, account)
