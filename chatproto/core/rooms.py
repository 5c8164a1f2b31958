"""The rooms: who is in which, each room's topic and recent history.

A room exists from its first JOIN until its last member leaves, unless the
server was told it always exists (``--room``, and the default room). A
room's key (:func:`~chatproto.rules.room_key`) is what names it to the
broadcast and the event log; its name is what clients see. Nothing here
sends a packet: the hub does that.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.accounts import Ban
from chatproto.backends.changes import quote_of
from chatproto.backends.eventlog import Topic
from chatproto.codec import ErrorCode, Message, ProtocolError
from chatproto.core.connection import Session
from chatproto.limits import Limits
from chatproto.rules import direct_members, is_direct, normalise_room, room_key

log = Logger()

#: Spellings of room names remembered (then forgotten all at once).
_NAMES_KEPT = 4096


@dataclass(slots=True)
class RoomRules:
    """Who runs a room and who may come in. Operators who are accounts,
    bans, invites and modes are stored; a room that has an account among
    its operators keeps them (and its topic with them) while empty and
    across restarts, any other room's go with its last member. A guest is
    an operator only while its session lasts."""

    ops: set[str] = field(default_factory=set)  # account keys
    bans: dict[str, Ban] = field(default_factory=dict)  # nick key -> ban
    invites: set[str] = field(default_factory=set)  # nick keys
    topic_lock: bool = False
    invite_only: bool = False
    guest_ops: set[int] = field(default_factory=set)  # session ids
    voices: set[str] = field(default_factory=set)  # account keys
    key: str = ""  # "" for none: JOIN must give it (+k)
    limit: int = 0  # 0 for none: JOIN refused at this many members (+l)
    moderated: bool = False  # only voiced members and operators speak (+m)
    secret: bool = False  # LIST shows it to its members only (+s)
    guest_voices: set[int] = field(default_factory=set)  # session ids

    def is_op(self, session: Session) -> bool:
        if session.admin:
            return True
        return (session.key in self.ops) if session.account else (session.id in self.guest_ops)

    def is_voiced(self, session: Session) -> bool:
        """Voice is kept as operator status is: an account's by its key, for
        good; a guest's by its session, while it lasts and stays in the room."""
        return (session.key in self.voices) if session.account else (session.id in self.guest_voices)

    def may_speak(self, session: Session) -> bool:
        """Whether the member may post text: anyone unless the room is moderated."""
        return not self.moderated or self.is_voiced(session) or self.is_op(session)

    @property
    def unclaimed(self) -> bool:
        return not self.ops and not self.guest_ops

    @property
    def kept(self) -> bool:
        """Whether these rules are worth keeping: then the room's topic is kept with them."""
        return bool(
            self.ops
            or self.bans
            or self.invites
            or self.topic_lock
            or self.invite_only
            or self.voices
            or self.key
            or self.limit
            or self.moderated
            or self.secret
        )

    def to_json(self) -> dict[str, Any]:
        """What is stored (guests' operator status and voice are not)."""
        return {
            "ops": sorted(self.ops),
            "bans": [[b.target, b.by, b.ts, b.reason, b.until] for b in self.bans.values()],
            "invites": sorted(self.invites),
            "topic_lock": self.topic_lock,
            "invite_only": self.invite_only,
            "voices": sorted(self.voices),
            "key": self.key,
            "limit": self.limit,
            "moderated": self.moderated,
            "secret": self.secret,
        }

    def shared_json(self) -> dict[str, Any]:
        """What other nodes are told: the stored rules and guests' voice
        (guests' operator status travels beside it, as it always has)."""
        return {**self.to_json(), "guest_voices": sorted(self.guest_voices)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoomRules:
        return cls(
            set(data.get("ops", ())),
            {item[0]: Ban(*item) for item in data.get("bans", ())},
            set(data.get("invites", ())),
            bool(data.get("topic_lock")),
            bool(data.get("invite_only")),
            voices=set(data.get("voices", ())),
            key=str(data.get("key") or ""),
            limit=int(data.get("limit") or 0),
            moderated=bool(data.get("moderated")),
            secret=bool(data.get("secret")),
            guest_voices=set(data.get("guest_voices", ())),
        )


class ChatRoom:
    """One room: its members (with their cached Peer JSON, and their nick
    keys in order for MEMBERS' pages), its topic, its rules and the most
    recent messages, encoded, for the next joiner."""

    __slots__ = (
        "big",
        "counted",
        "counted_at",
        "direct",
        "ids",
        "key",
        "keys",
        "last_seq",
        "lazy_at",
        "made",
        "members",
        "name",
        "peers",
        "permanent",
        "ranked",
        "ready",
        "recent",
        "rev",
        "rules",
        "topic",
    )

    def __init__(self, name: str, permanent: bool, replay: int, made: float = 0.0, lazy_at: int = 0) -> None:
        self.name = name
        # When this server (this node) made it: the creation time IRC's 329
        # gives. No store keeps it; a room kept while empty is made again.
        self.made = made
        self.key = room_key(name)
        self.permanent = permanent
        self.topic: Topic | None = None
        self.rules = RoomRules()
        self.members: dict[int, Session] = {}
        self.peers: dict[int, str] = {}  # session id -> its JSON in ROOM.members
        self.recent: deque[tuple[Message, str]] = deque(maxlen=replay)
        self.last_seq = 0  # of the newest message stored, once ready
        self.rev = 0  # of the latest change to one of its messages, once ready
        self.direct = is_direct(name)  # a direct conversation (docs/protocol.md 19.8)
        # Big rooms (docs/protocol.md 22): past ``lazy_at`` members (0: never)
        # the room is big, and stays so while it exists.
        self.lazy_at = lazy_at
        self.big = False
        self.counted: int | None = None  # what the last COUNT said (None: none went)
        self.counted_at = float("-inf")  # when it went
        # Every member's nick key and id, side by side in (key, id) order: a
        # page costs a bisect, not a sort, and a member two slots of a list
        # (a tuple each, and a map back from the id, cost it ten times that).
        self.keys: list[str] = []
        self.ids: list[int] = []
        # Operators and voiced members (id -> op), found without a walk over the members.
        self.ranked: dict[int, bool] = {}
        # Fires once the topic, rules and recent history are read (the directory reads them).
        self.ready: Deferred[Any] = succeed(None)

    @property
    def topic_text(self) -> str:
        return self.topic.text if self.topic is not None else ""

    def add(self, session: Session) -> bool:
        """``session`` is a member; whether that made the room big."""
        fresh = session.id not in self.members
        self.members[session.id] = session
        self.refresh(session, fresh)
        session.rooms[self.key] = self
        if self.big or not self.lazy_at or len(self.members) <= self.lazy_at:
            return False
        self.big = True
        return True

    def refresh(self, session: Session, fresh: bool = False) -> None:
        """The member's Peer JSON again (its operator status, away or nick
        changed); ``fresh``: it was not a member (nothing to look for in the
        index)."""
        if not fresh and session.id not in self.members:
            return  # not a member: nothing of it is kept here
        rules = self.rules
        voice = bool((rules.voices or rules.guest_voices) and rules.is_voiced(session))
        op = rules.is_op(session)
        id = session.id
        self.peers[id] = codec.peer_json(id, session.nick, op, session.away, voice)
        if op or voice:
            self.ranked[id] = op
        else:
            self.ranked.pop(id, None)
        if not fresh:
            if self._index(session.key, id) is not None:
                return
            self._unindex(id, None)  # a new nick: the old key goes
        keys = self.keys
        first = bisect_left(keys, session.key)
        at = bisect_right(self.ids, id, first, bisect_right(keys, session.key, first))
        keys.insert(at, session.key)
        self.ids.insert(at, id)

    def _index(self, key: str, id: int) -> int | None:
        """Where member ``id`` is in ``keys`` under ``key``, if it is."""
        keys, ids = self.keys, self.ids
        at, end = bisect_left(keys, key), len(keys)
        while at < end and keys[at] == key:  # a key twice: in a cluster, for a moment
            if ids[at] == id:
                return at
            at += 1
        return None

    def _unindex(self, id: int, key: str | None) -> None:
        """Member ``id`` out of the index: found by ``key`` or, after a nick
        change (or None), by a walk over the ids."""
        at = self._index(key, id) if key is not None else None
        if at is None:
            try:
                at = self.ids.index(id)
            except ValueError:
                return
        del self.keys[at]
        del self.ids[at]

    def remove(self, session: Session) -> None:
        id = session.id
        self.members.pop(id, None)
        self.peers.pop(id, None)
        self.ranked.pop(id, None)
        self._unindex(id, session.key)
        session.rooms.pop(self.key, None)

    def member_by_key(self, key: str) -> Session | None:
        """The member whose nick key is ``key``, if any."""
        index = bisect_left(self.keys, key)
        if index < len(self.keys) and self.keys[index] == key:
            return self.members.get(self.ids[index])
        return None

    def page(self, after: str | None, prefix: str, limit: int) -> tuple[list[int], str | None]:
        """Up to ``limit`` members' ids in key order, after the key ``after``
        and with keys starting with ``prefix`` (folded already); and the key
        the next page starts after (None: no more)."""
        keys = self.keys
        start = 0 if after is None else bisect_right(keys, after)
        if prefix:
            start = max(start, bisect_left(keys, prefix))
        ids: list[int] = []
        index = start
        end = len(keys)
        while index < end and len(ids) < limit:
            if not keys[index].startswith(prefix):
                return ids, None
            ids.append(self.ids[index])
            index += 1
        more = index < end and keys[index].startswith(prefix)
        return ids, keys[index - 1] if more and ids else None

    def info(self) -> codec.RoomInfo:
        return codec.RoomInfo(self.name, self.topic_text, len(self.members))

    def kept_state(self) -> dict[str, Any]:
        """What the account store keeps of the room: its rules and its topic,
        in one record, so that the topic lives exactly as long as the rules."""
        topic = self.topic
        return {**self.rules.to_json(), "topic": None if topic is None else [topic.text, topic.by, topic.ts]}


class RoomSource(Protocol):
    """Where a room's state is read from when it is made, and who is told
    when it is dropped (:class:`chatproto.core.peers.Peers`)."""

    def load(self, room: ChatRoom) -> Deferred[Any]: ...

    def dropped(self, room: ChatRoom) -> None: ...


class Directory:
    """Every room there is, by key, within the server's limits."""

    def __init__(
        self,
        limits: Limits,
        default: str,
        permanent: list[str],
        source: RoomSource,
        clock: IReactorTime | None = None,
    ) -> None:
        self.limits = limits
        self.source = source
        self.clock = clock  # for each room's time made
        self.rooms: dict[str, ChatRoom] = {}
        self._keys: dict[str, str] = {}  # names as clients wrote them -> keys
        self._listed: list[tuple[str, int, str]] | None = None  # what listing_json last showed
        self._listing_json = "[]"
        self.default = self._create(self.normalise(default), permanent=True)
        for name in permanent:
            self.get_or_create(name, permanent=True)

    def normalise(self, name: str) -> str:
        return normalise_room(name, self.limits.room_name_length)

    def key_of(self, name: str) -> str:
        """A valid name's key; bad_room otherwise. Every SAY names its room,
        so the names seen are remembered rather than normalised each time."""
        key = self._keys.get(name)
        if key is None:
            key = room_key(name if is_direct(name) and direct_members(name) else self.normalise(name))
            if len(self._keys) >= _NAMES_KEPT:
                self._keys.clear()
            self._keys[name] = key
        return key

    def find(self, name: str | None) -> ChatRoom:
        """The room a request names (None: the default room); bad_room or
        no_such_room."""
        if name is None:
            return self.default
        room = self.rooms.get(self.key_of(name))
        if room is None:
            raise ProtocolError(ErrorCode.NO_SUCH_ROOM, f"there is no room called {name!r}")
        return room

    def get_or_create(self, name: str, permanent: bool = False) -> ChatRoom:
        """The room called ``name``, made if it doesn't exist and the server
        has room for it; bad_room or too_many_rooms."""
        name = self.normalise(name)
        room = self.rooms.get(room_key(name))
        if room is not None:
            room.permanent = room.permanent or permanent
            return room
        if len(self.rooms) >= self.limits.max_rooms and not permanent:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"the server has its limit of {self.limits.max_rooms} rooms: join an existing one",
            )
        return self._create(name, permanent)

    def remembered(self, name: str) -> ChatRoom:
        """A room or conversation a session was in, by its name as stored,
        made if need be; bad_room or too_many_rooms."""
        if is_direct(name):
            direct_members(name)
            return self.conversation(name)
        return self.get_or_create(name)

    def conversation(self, name: str) -> ChatRoom:
        """The direct conversation called ``name`` (a valid one), made if
        need be: conversations don't count toward the rooms' limit."""
        room = self.rooms.get(room_key(name))
        return room if room is not None else self._create(name, False)

    def _create(self, name: str, permanent: bool) -> ChatRoom:
        made = self.clock.seconds() if self.clock is not None else 0.0
        room = ChatRoom(name, permanent, self.limits.history_replay, made, self.limits.lazy_members)
        self.rooms[room.key] = room
        room.ready = self.source.load(room)
        room.ready.addErrback(lambda f: log.failure("could not read room {room}", f, room=name))
        return room

    def drop_if_empty(self, room: ChatRoom) -> bool:
        """Forget a room nobody is in, unless it always exists (its history
        stays in the log; its rules and topic stay in the store, and come
        back with it only if an account runs it: :func:`kept_rules`)."""
        if room.permanent or self.rooms.get(room.key) is not room:
            return False
        if any(member.connection is not None for member in room.members.values()):
            return False  # (members on other nodes of a cluster are not this node's to keep)
        del self.rooms[room.key]
        self.source.dropped(room)
        return True

    def listing(self) -> list[codec.RoomInfo]:
        return sorted(
            (room.info() for room in self.rooms.values() if not room.direct),
            key=lambda info: room_key(info.room),
        )

    def listing_json(self) -> str:
        """LIST's rooms as a JSON array, built again only when what it shows
        changed: comparing each room's name, member count and topic costs a
        small part of building and encoding the listing."""
        shown = [
            (room.key, len(room.members), room.topic_text) for room in self.rooms.values() if not room.direct
        ]
        if shown != self._listed:
            self._listed = shown
            self._listing_json = codec.dumps([codec.body_of(info) for info in self.listing()])
        return self._listing_json


def changed(room: ChatRoom, message: Message, message_json: str) -> None:
    """A message of the room changed: its newest messages show its present
    state, and replies among them their quote of it."""
    room.rev = max(room.rev, message.rev or 0)
    for index, (held, _) in enumerate(room.recent):
        if held.seq == message.seq:
            room.recent[index] = (message, message_json)
        elif held.reply is not None and held.reply.seq == message.seq:
            quote = quote_of(message.seq, message.sender, message.text, bool(message.deleted))
            again = dataclasses.replace(held, reply=quote)
            room.recent[index] = (again, codec.message_json(again))


def preload(room: ChatRoom, page: list[Message]) -> None:
    """The log's newest messages, before any stored since the room was made."""
    newer = list(room.recent)
    room.recent.clear()
    if room.recent.maxlen:
        room.recent.extend((m, codec.message_json(m)) for m in page)
    last = page[-1].seq if page else 0
    room.recent.extend(item for item in newer if item[0].seq > last)
    room.last_seq = max(room.last_seq, last)


def kept_rules(data: dict[str, Any] | None, permanent: bool) -> RoomRules | None:
    """Stored rules that still hold, or None. A room that always exists keeps
    its rules; any other only while an account is its operator: rules that no
    operator can come back to enforce (a guest operator's, whose nick went
    with its session) went with the room's last member (docs/protocol.md 14.2)."""
    if data is None:
        return None
    rules = RoomRules.from_json(data)
    return rules if permanent or rules.ops else None


def load_rules(room: ChatRoom, data: dict[str, Any] | None) -> None:
    """A room's stored rules (if they still hold: :func:`kept_rules`), its
    guest operators kept; and, while the rules are kept, the topic stored
    with them (a room that always exists has its topic in the event log
    instead)."""
    rules = kept_rules(data, room.permanent)
    if rules is None or data is None:
        return
    guests, guest_voices = room.rules.guest_ops, room.rules.guest_voices
    room.rules = rules
    room.rules.guest_ops = guests
    room.rules.guest_voices = guest_voices
    topic = data.get("topic")
    if topic and room.rules.kept and not room.permanent and room.topic is None:
        room.topic = Topic(*topic)
