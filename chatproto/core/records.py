"""Replication records: what changed in a room, as other nodes of a cluster
learn it, and the messages one node sends another's inbox.

One frozen class per kind of change, each with its encoding into a room
stream's entry and its decoding from one, here and nowhere else. The core
makes a record for every change it broadcasts; a single server's order
ignores them, a cluster node's puts them in the room's stream
(:mod:`chatproto.cluster`), in the room's order with its messages.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from chatproto import codec
from chatproto.backends.eventlog import Draft
from chatproto.backends.streams import escape, unescape


@dataclass(frozen=True, slots=True)
class MemberJoined:
    """A session entered a room."""

    kind: ClassVar[str] = "j"
    room: str
    id: int
    nick: str
    key: str
    account: bool

    def entry(self, node: str) -> dict[str, Any]:
        key = escape(self.key)
        member = {"node": node, "nick": self.nick, "key": key, "account": self.account}
        data = {"id": self.id, "nick": self.nick, "key": key, "account": self.account}
        return {"t": "j", "id": str(self.id), "key": key, "m": codec.dumps(member), "d": codec.dumps(data)}

    @classmethod
    def decode(cls, room: str, data: dict[str, Any]) -> MemberJoined:
        return cls(room, data["id"], data["nick"], unescape(data["key"]), bool(data.get("account", False)))


@dataclass(frozen=True, slots=True)
class MemberLeft:
    """A session left a room (parted, kicked, quit, lost...)."""

    kind: ClassVar[str] = "l"
    room: str
    id: int
    nick: str
    key: str
    reason: str
    message: str | None
    permanent: bool = False  # the room always exists: the store keeps it when empty

    def entry(self, node: str) -> dict[str, Any]:
        key = escape(self.key)
        data: dict[str, Any] = {"id": self.id, "nick": self.nick, "key": key, "reason": self.reason}
        if self.message is not None:
            data["message"] = self.message
        perm = 1 if self.permanent else 0
        return {"t": "l", "id": str(self.id), "key": key, "perm": perm, "d": codec.dumps(data)}

    @classmethod
    def decode(cls, room: str, data: dict[str, Any]) -> MemberLeft:
        key = unescape(data["key"])
        return cls(room, data["id"], data["nick"], key, data["reason"], data.get("message"))


@dataclass(frozen=True, slots=True)
class TopicSet:
    """A room's topic changed ("" clears it)."""

    kind: ClassVar[str] = "o"
    room: str
    text: str
    by: str
    ts: float

    def entry(self, node: str) -> dict[str, Any]:
        return {"t": "o", "d": codec.dumps({"text": self.text, "by": self.by, "ts": self.ts})}

    @classmethod
    def decode(cls, room: str, data: dict[str, Any]) -> TopicSet:
        return cls(room, data["text"], data["by"], data["ts"])


@dataclass(frozen=True, slots=True)
class RulesSet:
    """A room's rules changed: operators, bans, invitations, modes."""

    kind: ClassVar[str] = "r"
    room: str
    rules: dict[str, Any]
    guest_ops: tuple[int, ...]

    def entry(self, node: str) -> dict[str, Any]:
        return {"t": "r", "d": codec.dumps({"rules": self.rules, "guest_ops": list(self.guest_ops)})}

    @classmethod
    def decode(cls, room: str, data: dict[str, Any]) -> RulesSet:
        return cls(room, data["rules"], tuple(data["guest_ops"]))


@dataclass(frozen=True, slots=True)
class AwaySet:
    """A member went away (``message``, "" for none) or came back (None)."""

    kind: ClassVar[str] = "a"
    room: str
    id: int
    nick: str
    message: str | None

    def entry(self, node: str) -> dict[str, Any]:
        return {"t": "a", "d": codec.dumps({"id": self.id, "nick": self.nick, "away": self.message})}

    @classmethod
    def decode(cls, room: str, data: dict[str, Any]) -> AwaySet:
        return cls(room, data["id"], data["nick"], data.get("away"))


@dataclass(frozen=True, slots=True)
class TypingSent:
    """A member is typing in a room, or stopped: passed on, never stored."""

    kind: ClassVar[str] = "y"
    room: str
    nick: str
    typing: bool

    def entry(self, node: str) -> dict[str, Any]:
        return {"t": "y", "d": codec.dumps({"nick": self.nick, "typing": self.typing})}

    @classmethod
    def decode(cls, room: str, data: dict[str, Any]) -> TypingSent:
        return cls(room, data["nick"], bool(data["typing"]))


@dataclass(frozen=True, slots=True)
class MemberRenamed:
    """A member's nick changed (NICK). ``rooms`` are the keys of every room
    of the session, in the order the change went to them: a member of
    several learns it in the first of them it shares."""

    kind: ClassVar[str] = "n"
    room: str
    id: int
    old: str
    nick: str
    old_key: str
    key: str
    rooms: tuple[str, ...]

    def entry(self, node: str) -> dict[str, Any]:
        data = {
            "id": self.id,
            "old": self.old,
            "nick": self.nick,
            "old_key": escape(self.old_key),
            "key": escape(self.key),
            "rooms": [escape(room) for room in self.rooms],
        }
        return {
            "t": "n",
            "id": str(self.id),
            "key": escape(self.key),
            "old": escape(self.old_key),
            "nick": self.nick,
            "d": codec.dumps(data),
        }

    @classmethod
    def decode(cls, room: str, data: dict[str, Any]) -> MemberRenamed:
        rooms = tuple(unescape(key) for key in data["rooms"])
        return cls(
            room,
            data["id"],
            data["old"],
            data["nick"],
            unescape(data["old_key"]),
            unescape(data["key"]),
            rooms,
        )


Record = MemberJoined | MemberLeft | TopicSet | RulesSet | AwaySet | TypingSent | MemberRenamed

_KINDS: dict[str, Any] = {
    cls.kind: cls
    for cls in (MemberJoined, MemberLeft, TopicSet, RulesSet, AwaySet, TypingSent, MemberRenamed)
}


def decode(kind: str, room: str, data: dict[str, Any]) -> Record:
    """A room stream's presence entry as its record; KeyError for an unknown kind."""
    record: Record = _KINDS[kind].decode(room, data)
    return record


def message_entry(draft: Draft) -> dict[str, Any]:
    """A message's entry in its room's stream."""
    return {"t": "m", "d": codec.draft_json(draft)}


# -- a session, as any node finds it -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Where a session is and what it may do: what another node needs to
    resume it (its devices' tokens) or to whisper to it (its node)."""

    node: str
    id: int
    nick: str
    version: int
    account: bool
    admin: bool  # rights come only with a login that gave them
    tokens: tuple[str, ...]
    owner: str | None = None  # an account's: what owns its messages
    away: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "id": self.id,
            "nick": self.nick,
            "version": self.version,
            "account": self.account,
            "admin": self.admin,
            "tokens": list(self.tokens),
            "owner": self.owner,
            "away": self.away,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionRecord:
        """A record as stored; one an older node saved has no admin mark, so no rights."""
        return cls(
            data["node"],
            data["id"],
            data["nick"],
            data["version"],
            bool(data.get("account")),
            bool(data.get("admin")),
            tuple(data["tokens"]),
            data.get("owner"),
            data.get("away"),
        )


# -- one node's inbox --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Whispered:
    """A whisper to a session on the node whose inbox this is."""

    kind: ClassVar[str] = "whisper"
    private: codec.Private

    def to_json(self) -> dict[str, Any]:
        p = self.private
        private: dict[str, Any] = {"ts": p.ts, "sender": p.sender, "to": p.to, "text": p.text}
        if p.notice:
            private["notice"] = True
        return {"kind": self.kind, "private": private}


@dataclass(frozen=True, slots=True)
class Moved:
    """A session of the node's was resumed on another node."""

    kind: ClassVar[str] = "moved"
    key: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key}


@dataclass(frozen=True, slots=True)
class BansChanged:
    """The server-wide bans changed: read them again."""

    kind: ClassVar[str] = "bans"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind}


@dataclass(frozen=True, slots=True)
class SessionsAsked:
    """Node ``node`` wants this node's pending connections and sessions (ADMIN sessions)."""

    kind: ClassVar[str] = "sessions?"
    node: str
    ask: int

    def to_json(self) -> dict[str, Any]:
        return _note_json(self)


@dataclass(frozen=True, slots=True)
class SessionsTold:
    """Node ``node``'s answer to a :class:`SessionsAsked`."""

    kind: ClassVar[str] = "sessions"
    node: str
    ask: int
    pending: list[codec.PendingInfo]
    connected: list[codec.SessionInfo]

    def to_json(self) -> dict[str, Any]:
        return _note_json(
            self,
            pending=[dataclasses.asdict(p) for p in self.pending],
            connected=[dataclasses.asdict(s) for s in self.connected],
        )


@dataclass(frozen=True, slots=True)
class KickAsked:
    """An admin on another node (session ``by_id``) kicks this node's
    session holding nick key ``key`` off the server (ADMIN kick)."""

    kind: ClassVar[str] = "kick"
    key: str
    by_id: int
    by_nick: str
    by_key: str
    by_account: bool
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return _note_json(self)


_KICK_FIELDS = ("key", "by_id", "by_nick", "by_key", "by_account", "reason")


@dataclass(frozen=True, slots=True)
class HandoverAsked:
    """Node ``node`` has a login to the account whose session (nick key
    ``key``) this node holds: may the session move there?"""

    kind: ClassVar[str] = "handover?"
    node: str
    ask: int
    key: str

    def to_json(self) -> dict[str, Any]:
        return _note_json(self)


@dataclass(frozen=True, slots=True)
class HandoverTold:
    """Node ``node``'s answer to a :class:`HandoverAsked`: ``free`` if none
    of the session's devices there answered (or it has none)."""

    kind: ClassVar[str] = "handover"
    node: str
    ask: int
    free: bool

    def to_json(self) -> dict[str, Any]:
        return _note_json(self)


def _note_json(note: Any, **encoded: Any) -> dict[str, Any]:
    """An inbox note as JSON: its kind, then each field as it is, unless
    ``encoded`` gives the field's JSON form."""
    out: dict[str, Any] = {"kind": note.kind}
    for f in dataclasses.fields(note):
        out[f.name] = encoded[f.name] if f.name in encoded else getattr(note, f.name)
    return out


def _b64(payloads: tuple[bytes, ...]) -> list[str]:
    return [base64.b64encode(p).decode("ascii") for p in payloads]


def _unb64(items: list[str]) -> tuple[bytes, ...]:
    return tuple(base64.b64decode(item, validate=True) for item in items)


@dataclass(frozen=True, slots=True)
class RelayOpened:
    """A device reached node ``node`` (its connection ``conn`` there, from
    ``host``:``port``) and logs in to a session this node holds: this node
    runs the connection, starting with its LOGIN (``payload``, without a
    password); ``vouched``: node ``node`` checked its password."""

    kind: ClassVar[str] = "relay"
    node: str
    conn: int
    host: str
    port: int
    payload: bytes
    vouched: bool = False

    def to_json(self) -> dict[str, Any]:
        return _note_json(self, payload=_b64((self.payload,))[0])


@dataclass(frozen=True, slots=True)
class RelayIn:
    """What relayed connection ``conn`` of node ``node`` sent: packets' payloads."""

    kind: ClassVar[str] = "relay in"
    node: str
    conn: int
    payloads: tuple[bytes, ...]
    n: int = 0  # its number among this relay's RelayIn notes, from 1

    def to_json(self) -> dict[str, Any]:
        return _note_json(self, payloads=_b64(self.payloads))


@dataclass(frozen=True, slots=True)
class RelayOut:
    """What node ``node`` wrote to our relayed connection ``conn``: its
    bytes as Int32 frames, then ``end``: "" (more may come), "close" (after
    these) or "abort"."""

    kind: ClassVar[str] = "relay out"
    node: str
    conn: int
    data: bytes
    end: str = ""
    n: int = 0  # its number among this relay's RelayOut notes, from 1

    def to_json(self) -> dict[str, Any]:
        return _note_json(self, data=_b64((self.data,))[0])


@dataclass(frozen=True, slots=True)
class RelayClosed:
    """Relayed connection ``conn`` of node ``node`` is gone (or that node never had it)."""

    kind: ClassVar[str] = "relay closed"
    node: str
    conn: int

    def to_json(self) -> dict[str, Any]:
        return _note_json(self)


Relay = RelayOpened | RelayIn | RelayOut | RelayClosed

Note = (
    Whispered
    | Moved
    | BansChanged
    | SessionsAsked
    | SessionsTold
    | KickAsked
    | HandoverAsked
    | HandoverTold
    | Relay
)


def read_note(message: dict[str, Any]) -> Note | None:
    """An inbox message as its class; None for a kind this node doesn't know
    (a newer node's), KeyError or TypeError if malformed."""
    kind = message["kind"]
    if kind == Whispered.kind:
        return Whispered(codec.Private(**message["private"]))
    if kind == Moved.kind:
        return Moved(message["key"])
    if kind == BansChanged.kind:
        return BansChanged()
    if kind == KickAsked.kind:
        return KickAsked(**{f: message[f] for f in _KICK_FIELDS})
    if kind == SessionsAsked.kind:
        return SessionsAsked(str(message["node"]), int(message["ask"]))
    if kind == SessionsTold.kind:
        pending = [codec.PendingInfo(**p) for p in message["pending"]]
        connected = [codec.SessionInfo(**s) for s in message["connected"]]
        return SessionsTold(str(message["node"]), int(message["ask"]), pending, connected)
    if kind == HandoverAsked.kind:
        return HandoverAsked(str(message["node"]), int(message["ask"]), str(message["key"]))
    if kind == HandoverTold.kind:
        return HandoverTold(str(message["node"]), int(message["ask"]), bool(message["free"]))
    return _relay(kind, message)


def _relay(kind: str, message: dict[str, Any]) -> Relay | None:
    if kind not in (RelayIn.kind, RelayOut.kind, RelayClosed.kind, RelayOpened.kind):
        return None
    node, conn = str(message["node"]), int(message["conn"])
    if kind == RelayIn.kind:
        return RelayIn(node, conn, _unb64(message["payloads"]), int(message["n"]))
    if kind == RelayOut.kind:
        return RelayOut(node, conn, _unb64([message["data"]])[0], str(message["end"]), int(message["n"]))
    if kind == RelayClosed.kind:
        return RelayClosed(node, conn)
    if kind == RelayOpened.kind:
        payload = _unb64([message["payload"]])[0]
        vouched = bool(message.get("vouched"))
        return RelayOpened(node, conn, str(message["host"]), int(message["port"]), payload, vouched)
    return None
