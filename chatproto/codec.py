"""Bytes <-> typed packets for protocol versions 1 and 2 (docs/protocol.md).

Pure: no I/O, no Twisted. The server and any client share it, so both sides
agree on what a well-formed packet is. Framing (the 4-byte length prefix) is
added by :func:`frame`; everything else here works on payloads
(``type byte + compact JSON object``). The only JSON built by hand anywhere
is here too: the fragments the server caches and splices so that a broadcast
or a WELCOME is encoded once (:func:`message_json`, :func:`peer_json`,
:func:`with_ref`, :func:`welcome_payload`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
import types
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote

#: The newest version; the server speaks every one of VERSIONS.
PROTOCOL_VERSION = 2
VERSIONS = (1, 2)

_LENGTH = struct.Struct("!I")
#: The largest payload a 4-byte length prefix can describe.
MAX_WIRE_PAYLOAD = 2**32 - 1


class PacketType(IntEnum):
    # client -> server
    LOGIN = 0x01
    SAY = 0x02
    WHISPER = 0x03
    PING = 0x04
    QUIT = 0x05
    HISTORY = 0x06
    PONG = 0x07
    JOIN = 0x08  # version 2 on
    PART = 0x09
    LIST = 0x0A
    TOPIC = 0x0B
    ACCOUNT = 0x0C  # version 2: accounts and moderation
    MARK = 0x0D
    MODERATE = 0x0E
    ADMIN = 0x0F
    EDIT = 0x10  # version 2: conversations
    DELETE = 0x11
    REACT = 0x12
    TYPING = 0x13
    AWAY = 0x14
    OPEN = 0x15
    NICK = 0x16  # version 2: nick changes
    FILES = 0x17  # version 2: files
    SEARCH = 0x18  # version 2: search
    MEMBERS = 0x19  # version 2: big rooms
    FOLLOW = 0x1A
    # server -> client
    WELCOME = 0x81
    MESSAGE = 0x82
    PRIVATE = 0x83
    JOINED = 0x84
    LEFT = 0x85
    PENDING = 0x86
    PONG_REPLY = 0x87
    ERROR = 0x88
    HISTORY_PAGE = 0x89
    BYE = 0x8A
    SERVER_PING = 0x8B
    ROOM = 0x8C  # version 2 on
    TOPIC_CHANGED = 0x8D
    ROOMS = 0x8E
    DONE = 0x8F  # version 2: accounts and moderation
    MARKED = 0x90
    BANS = 0x91
    SESSIONS = 0x92
    INVITED = 0x93
    CHANGED = 0x94  # version 2: conversations
    TYPING_NOTICE = 0x95
    STATUS = 0x96
    RENAMED = 0x97  # version 2: nick changes
    FILES_TOKEN = 0x98  # version 2: files
    RESULTS = 0x99  # version 2: search
    MEMBER_PAGE = 0x9A  # version 2: big rooms (MEMBERS, server to client)
    COUNT = 0x9B


#: Every integer field holds a signed 64-bit value; anything outside is
#: bad_packet (so no store or client ever sees a number it can't hold).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class ErrorCode:
    """The error codes of docs/protocol.md; clients match on these strings."""

    FRAME_TOO_LARGE = "frame_too_large"
    BAD_PACKET = "bad_packet"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_NICK = "bad_nick"
    NICK_TAKEN = "nick_taken"
    ALREADY_LOGGED_IN = "already_logged_in"
    NOT_LOGGED_IN = "not_logged_in"
    BAD_TEXT = "bad_text"
    NO_SUCH_NICK = "no_such_nick"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    # version 2 on
    BAD_ROOM = "bad_room"
    NO_SUCH_ROOM = "no_such_room"
    NOT_A_MEMBER = "not_a_member"
    TOO_MANY_ROOMS = "too_many_rooms"
    BAD_TOPIC = "bad_topic"
    # version 2: accounts and moderation
    NICK_REGISTERED = "nick_registered"
    BAD_PASSWORD = "bad_password"
    LOCKED_OUT = "locked_out"
    BANNED = "banned"
    WEAK_PASSWORD = "weak_password"
    NOT_REGISTERED = "not_registered"
    ALREADY_REGISTERED = "already_registered"
    NO_SUCH_ACCOUNT = "no_such_account"
    NOT_OPERATOR = "not_operator"
    NOT_ADMIN = "not_admin"
    NO_SUCH_MEMBER = "no_such_member"
    INVITE_ONLY = "invite_only"
    TOPIC_LOCKED = "topic_locked"
    NOT_PERMITTED = "not_permitted"
    BAD_KEY = "bad_key"
    ROOM_FULL = "room_full"
    MODERATED = "moderated"
    # version 2: conversations
    NO_SUCH_MESSAGE = "no_such_message"
    MESSAGE_DELETED = "message_deleted"
    NOT_YOURS = "not_yours"
    TOO_LATE = "too_late"
    BAD_EMOJI = "bad_emoji"
    TOO_MANY_REACTIONS = "too_many_reactions"
    # version 2: files
    NO_FILES = "no_files"
    BAD_FILE = "bad_file"
    # version 2: search
    BAD_SEARCH = "bad_search"
    NO_SEARCH = "no_search"


class ProtocolError(Exception):
    """A packet the receiver refuses; ``code`` is the wire error code."""

    def __init__(
        self, code: str, message: str, ref: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after  # seconds, for locked_out and timed bans

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, ref={self.ref!r})"


def required(value, name: str, what: str):
    """``value``, unless it is missing: then bad_packet, saying ``what`` needs ``name``."""
    if value is None:
        raise ProtocolError(ErrorCode.BAD_PACKET, f"{what} needs {name!r}")
    return value


# A field whose string is checked by its own rule (rules.py) rather than here:
# a lone surrogate there is bad_text / bad_nick, not bad_packet.
_TEXT = {"kind": "text"}
_NICK = {"kind": "nick"}
_ROOM = {"kind": "room"}
_TOPIC = {"kind": "topic"}
#: A password: any string (lone surrogates too are the password's business,
#: never bad_packet echoing it), never logged, never repr'd.
_SECRET = {"kind": "secret"}
#: A field that version 1 does not have: a version 1 session's packets are
#: read without it (unknown fields are ignored), and never get it.
_V2 = {"since": 2}


def _json(name: str, **kind: str) -> dict:
    return {"json": name, **kind}


# -- nested objects ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    id: int
    nick: str
    op: bool | None = field(default=None, metadata=_V2)  # a room operator (ROOM.members)
    away: str | None = field(default=None, metadata=_V2)  # away, with this message ("" for none)
    voice: bool | None = field(default=None, metadata=_V2)  # may speak in a moderated room


@dataclass(frozen=True, slots=True)
class Quote:
    """What a reply quotes of the message it answers (docs/protocol.md 19.2)."""

    seq: int
    sender: str | None = field(default=None, metadata=_json("from"))
    text: str | None = None  # the start of its present text; absent once deleted
    deleted: bool | None = None


@dataclass(frozen=True, slots=True)
class Reaction:
    """One emoji on a message, and who put it there (in the order they did)."""

    emoji: str
    by: list[str]


@dataclass(frozen=True, slots=True)
class File:
    """A file a message carries (docs/protocol.md 20.1): what describes it;
    its bytes are on the ``--web`` site."""

    id: str
    name: str
    size: int
    type: str
    width: int | None = None
    height: int | None = None
    thumb: bool | None = None


@dataclass(eq=True, slots=True)
class Message:
    """A stored message. Not frozen, though nobody changes one: a frozen
    init sets each of its fields through object.__setattr__, and one is
    made for every message said."""

    seq: int
    ts: float
    sender: str = field(metadata=_json("from"))
    text: str = field(metadata=_TEXT)
    ref: str | None = None
    action: dict | None = field(default=None, metadata=_V2)  # a moderation record
    # version 2: conversations (section 19); absent when they don't apply
    reply: Quote | None = field(default=None, metadata=_V2)
    edited: float | None = field(default=None, metadata=_V2)  # when the text last changed
    deleted: bool | None = field(default=None, metadata=_V2)
    deleted_by: str | None = field(default=None, metadata=_V2)  # someone other than the author
    reactions: list[Reaction] | None = field(default=None, metadata=_V2)
    rev: int | None = field(default=None, metadata=_V2)  # the room's change that last touched it
    files: list[File] | None = field(default=None, metadata=_V2)  # section 20

    @property
    def plain(self) -> bool:
        """Nothing but what version 1 has: the fast encoding applies."""
        return (
            (self.action is None or self.action.get("op") != NOTICE)
            and self.reply is None
            and self.edited is None
            and self.deleted is None
            and self.deleted_by is None
            and self.reactions is None
            and self.rev is None
            and self.files is None
        )


# -- client -> server -------------------------------------------------------
# Every client packet may carry a ``ref``: an ERROR it causes echoes it.


@dataclass(frozen=True, slots=True)
class Login:
    TYPE: ClassVar = PacketType.LOGIN
    nick: str = field(metadata=_NICK)
    proto: int
    resume: str | None = None
    ref: str | None = None
    password: str | None = field(default=None, repr=False, metadata={**_SECRET, **_V2})


@dataclass(frozen=True, slots=True)
class Say:
    TYPE: ClassVar = PacketType.SAY
    text: str = field(metadata=_TEXT)
    ref: str | None = None
    room: str | None = field(default=None, metadata={**_ROOM, **_V2})
    reply: int | None = field(default=None, metadata=_V2)  # the seq this message answers
    notice: bool | None = field(default=None, metadata=_V2)  # IRC's NOTICE: never to be answered
    files: list[str] | None = field(default=None, metadata=_V2)  # ids of uploads to attach (20.3)


@dataclass(frozen=True, slots=True)
class Whisper:
    TYPE: ClassVar = PacketType.WHISPER
    to: str = field(metadata=_NICK)
    text: str = field(metadata=_TEXT)
    ref: str | None = None
    notice: bool | None = field(default=None, metadata=_V2)


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar = PacketType.PING
    token: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Quit:
    TYPE: ClassVar = PacketType.QUIT
    reason: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    TYPE: ClassVar = PacketType.HISTORY
    before: int | None = None
    after: int | None = None
    limit: int | None = None
    ref: str | None = None
    room: str | None = field(default=None, metadata={**_ROOM, **_V2})
    changed_after: int | None = field(default=None, metadata=_V2)  # a rev: the messages changed since
    around: int | None = field(default=None, metadata=_V2)  # a seq: the page centred on it (21.4)


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar = PacketType.PONG
    token: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Join:
    TYPE: ClassVar = PacketType.JOIN
    room: str = field(metadata=_ROOM)
    ref: str | None = None
    key: str | None = None  # the room's key, if it has one (+k)


@dataclass(frozen=True, slots=True)
class Part:
    TYPE: ClassVar = PacketType.PART
    room: str = field(metadata=_ROOM)
    reason: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class ListRooms:
    TYPE: ClassVar = PacketType.LIST
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class SetTopic:
    TYPE: ClassVar = PacketType.TOPIC
    room: str = field(metadata=_ROOM)
    topic: str = field(metadata=_TOPIC)
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class AccountRequest:
    """register, password (change), delete: the session's own account."""

    TYPE: ClassVar = PacketType.ACCOUNT
    op: str
    password: str | None = field(default=None, repr=False, metadata=_SECRET)
    new_password: str | None = field(default=None, repr=False, metadata=_SECRET)
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    TYPE: ClassVar = PacketType.MARK
    room: str = field(metadata=_ROOM)
    seq: int
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Moderate:
    """A room operator's action (docs/protocol.md 15.5)."""

    TYPE: ClassVar = PacketType.MODERATE
    room: str = field(metadata=_ROOM)
    op: str
    target: str | None = field(default=None, metadata=_NICK)
    reason: str | None = None
    topic_lock: bool | None = None
    invite_only: bool | None = None
    ref: str | None = None
    moderated: bool | None = None
    secret: bool | None = None
    key: str | None = None  # "" removes the key
    limit: int | None = None  # 0 removes the limit


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """A server admin's action (docs/protocol.md 15.6)."""

    TYPE: ClassVar = PacketType.ADMIN
    op: str
    target: str | None = field(default=None, metadata=_NICK)
    room: str | None = field(default=None, metadata=_ROOM)
    address: str | None = None
    duration: float | None = None
    reason: str | None = None
    password: str | None = field(default=None, repr=False, metadata=_SECRET)
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Edit:
    """New text for one's own message (docs/protocol.md 19.3)."""

    TYPE: ClassVar = PacketType.EDIT
    room: str = field(metadata=_ROOM)
    seq: int
    text: str = field(metadata=_TEXT)
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Take a message back: its text is gone, its place stays (19.4)."""

    TYPE: ClassVar = PacketType.DELETE
    room: str = field(metadata=_ROOM)
    seq: int
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class React:
    """Add (``on`` true) or take back an emoji on a message (19.5)."""

    TYPE: ClassVar = PacketType.REACT
    room: str = field(metadata=_ROOM)
    seq: int
    emoji: str
    on: bool | None = None  # absent: true
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Typing:
    """The session is typing in a room (or stopped): never stored (19.6)."""

    TYPE: ClassVar = PacketType.TYPING
    room: str = field(metadata=_ROOM)
    typing: bool | None = None  # absent: true
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Away:
    """Away with an optional message; absent ``message`` is back (19.7)."""

    TYPE: ClassVar = PacketType.AWAY
    away: bool
    message: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Open:
    """Open (or find again) the direct conversation with these accounts (19.8)."""

    TYPE: ClassVar = PacketType.OPEN
    with_: list[str] = field(metadata=_json("with"))
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Nick:
    """A guest's new nick (docs/protocol.md 15.11)."""

    TYPE: ClassVar = PacketType.NICK
    nick: str = field(metadata=_NICK)
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Files:
    """Ask for an upload token (docs/protocol.md 20.2)."""

    TYPE: ClassVar = PacketType.FILES
    ref: str | None = None


# -- server -> client -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    TYPE: ClassVar = PacketType.WELCOME
    nick: str
    id: int
    resume: str
    server: str
    motd: str
    peers: list[Peer]
    pending: list[int]
    history: list[Message]
    limits: dict
    rooms: list[str] | None = field(default=None, metadata=_V2)
    default_room: str | None = field(default=None, metadata=_V2)
    account: bool | None = field(default=None, metadata=_V2)
    admin: bool | None = field(default=None, metadata=_V2)


@dataclass(frozen=True, slots=True)
class MessagePacket:
    """A chat message as broadcast; same fields as :class:`Message`."""

    TYPE: ClassVar = PacketType.MESSAGE
    seq: int
    ts: float
    sender: str = field(metadata=_json("from"))
    text: str = field(metadata=_TEXT)
    ref: str | None = None
    room: str | None = field(default=None, metadata=_V2)
    action: dict | None = field(default=None, metadata=_V2)
    reply: Quote | None = field(default=None, metadata=_V2)
    edited: float | None = field(default=None, metadata=_V2)
    deleted: bool | None = field(default=None, metadata=_V2)
    deleted_by: str | None = field(default=None, metadata=_V2)
    reactions: list[Reaction] | None = field(default=None, metadata=_V2)
    rev: int | None = field(default=None, metadata=_V2)
    files: list[File] | None = field(default=None, metadata=_V2)

    @property
    def message(self) -> Message:
        return Message(
            self.seq,
            self.ts,
            self.sender,
            self.text,
            self.ref,
            self.action,
            self.reply,
            self.edited,
            self.deleted,
            self.deleted_by,
            self.reactions,
            self.rev,
            self.files,
        )


@dataclass(frozen=True, slots=True)
class Private:
    TYPE: ClassVar = PacketType.PRIVATE
    ts: float
    sender: str = field(metadata=_json("from"))
    to: str
    text: str = field(metadata=_TEXT)
    ref: str | None = None
    notice: bool | None = field(default=None, metadata=_V2)  # only to version 2 sessions


@dataclass(frozen=True, slots=True)
class Joined:
    TYPE: ClassVar = PacketType.JOINED
    id: int
    nick: str
    room: str | None = field(default=None, metadata=_V2)
    op: bool | None = field(default=None, metadata=_V2)  # the joiner runs the room (as Peer.op)
    away: str | None = field(default=None, metadata=_V2)  # the joiner is away (as Peer.away)
    voice: bool | None = field(default=None, metadata=_V2)  # the joiner is voiced (as Peer.voice)


@dataclass(frozen=True, slots=True)
class Left:
    TYPE: ClassVar = PacketType.LEFT
    id: int
    nick: str
    reason: str
    message: str | None = None
    room: str | None = field(default=None, metadata=_V2)
    ref: str | None = field(default=None, metadata=_V2)


@dataclass(frozen=True, slots=True)
class Pending:
    TYPE: ClassVar = PacketType.PENDING
    id: int
    state: str


@dataclass(frozen=True, slots=True)
class PongReply:
    TYPE: ClassVar = PacketType.PONG_REPLY
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar = PacketType.ERROR
    code: str
    message: str
    ref: str | None = None
    retry_after: float | None = field(default=None, metadata=_V2)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    TYPE: ClassVar = PacketType.HISTORY_PAGE
    messages: list[Message]
    more: bool
    room: str | None = field(default=None, metadata=_V2)
    rev: int | None = field(default=None, metadata=_V2)  # the room's latest change, when asked by rev
    newer: bool | None = field(default=None, metadata=_V2)  # newer ones exist, when asked around a seq


@dataclass(frozen=True, slots=True)
class Bye:
    TYPE: ClassVar = PacketType.BYE
    reason: str


@dataclass(frozen=True, slots=True)
class ServerPing:
    TYPE: ClassVar = PacketType.SERVER_PING
    token: str | None = None


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """One room in a ROOMS listing."""

    room: str
    topic: str
    members: int


@dataclass(frozen=True, slots=True)
class RoomState:
    """What a member of a room starts from: the answer to JOIN."""

    TYPE: ClassVar = PacketType.ROOM
    room: str
    topic: str
    members: list[Peer]
    history: list[Message]
    ref: str | None = None
    topic_lock: bool | None = None
    invite_only: bool | None = None
    read: int | None = None
    unread: int | None = None
    kind: str | None = None  # "direct" for a direct conversation (19.8)
    rev: int | None = None  # the room's latest change (19.9)
    moderated: bool | None = None
    secret: bool | None = None
    limit: int | None = None  # 0: no limit
    key: str | None = None  # "": no key
    count: int | None = None  # how many members it has (22)
    lazy: bool | None = None  # a big room: ``members`` is the shown set (22)


@dataclass(frozen=True, slots=True)
class TopicChanged:
    TYPE: ClassVar = PacketType.TOPIC_CHANGED
    room: str
    topic: str
    by: str
    ts: float
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class RoomList:
    TYPE: ClassVar = PacketType.ROOMS
    rooms: list[RoomInfo]
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """An ACCOUNT or ADMIN request carried out."""

    TYPE: ClassVar = PacketType.DONE
    op: str
    target: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Marked:
    TYPE: ClassVar = PacketType.MARKED
    room: str
    seq: int
    unread: int
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class BanInfo:
    target: str
    by: str
    ts: float
    reason: str | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class BanList:
    TYPE: ClassVar = PacketType.BANS
    bans: list[BanInfo]
    room: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class PendingInfo:
    id: int
    address: str
    since: float


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: int
    nick: str
    address: str
    since: float
    rooms: list[str]
    account: bool
    devices: int


@dataclass(frozen=True, slots=True)
class Sessions:
    TYPE: ClassVar = PacketType.SESSIONS
    pending: list[PendingInfo]
    connected: list[SessionInfo]
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Invited:
    TYPE: ClassVar = PacketType.INVITED
    room: str
    by: str


@dataclass(frozen=True, slots=True)
class Changed:
    """A message changed: edited, deleted or reacted to; ``message`` is its
    present state, which replaces the client's copy (19.2)."""

    TYPE: ClassVar = PacketType.CHANGED
    room: str
    kind: str  # "edit", "delete" or "react"
    by: str
    message: Message
    ref: str | None = None
    emoji: str | None = None  # a reaction's: which emoji
    on: bool | None = None  # a reaction's: added (true) or taken back (false)


@dataclass(frozen=True, slots=True)
class TypingNotice:
    TYPE: ClassVar = PacketType.TYPING_NOTICE
    room: str
    nick: str
    typing: bool


@dataclass(frozen=True, slots=True)
class Status:
    """A member went away (``away`` its message, "" for none) or came back (absent)."""

    TYPE: ClassVar = PacketType.STATUS
    room: str
    nick: str
    away: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Renamed:
    """A session's nick changed from ``old`` to ``nick`` (15.11)."""

    TYPE: ClassVar = PacketType.RENAMED
    old: str
    nick: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class FilesToken:
    """What authorises this session's HTTP requests for files (20.2)."""

    TYPE: ClassVar = PacketType.FILES_TOKEN
    token: str = field(repr=False)
    expires: float
    url: str
    max_upload: int
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Search:
    """Find messages of the session's rooms by their words (docs/protocol.md 21)."""

    TYPE: ClassVar = PacketType.SEARCH
    words: str
    room: str | None = field(default=None, metadata=_ROOM)
    sender: str | None = field(default=None, metadata=_json("from", **_NICK))
    since: float | None = None
    until: float | None = None
    page: str | None = None  # opaque: the previous RESULTS' page
    limit: int | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """One message a SEARCH found: where, who, when, and its present text cut
    around the first match, each match a [start, length] in code points."""

    room: str
    seq: int
    sender: str = field(metadata=_json("from"))
    ts: float
    snippet: str
    marks: list[list[int]]


@dataclass(frozen=True, slots=True)
class Results:
    TYPE: ClassVar = PacketType.RESULTS
    hits: list[Hit]
    more: bool
    page: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class MembersRequest:
    """A page of a room's members in the order of their nick keys (docs/protocol.md 22)."""

    TYPE: ClassVar = PacketType.MEMBERS
    room: str = field(metadata=_ROOM)
    after: str | None = None  # the key the previous page ended at (its ``next``)
    prefix: str | None = None  # only keys that start with this, folded
    limit: int | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Follow:
    """Members of a big room whose JOINED and LEFT this connection wants (22)."""

    TYPE: ClassVar = PacketType.FOLLOW
    room: str = field(metadata=_ROOM)
    nicks: list[str] = field(metadata=_NICK)
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Members:
    """MEMBERS' and FOLLOW's answer: Peers in key order, the room's count,
    and where the next page starts (absent: no more)."""

    TYPE: ClassVar = PacketType.MEMBER_PAGE
    room: str
    members: list[Peer]
    count: int
    next: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Count:
    """A big room's member count changed (22)."""

    TYPE: ClassVar = PacketType.COUNT
    room: str
    members: int


V1_CLIENT_PACKETS = (Login, Say, Whisper, Ping, Quit, HistoryRequest, Pong)
CLIENT_PACKETS = (
    *V1_CLIENT_PACKETS,
    Join,
    Part,
    ListRooms,
    SetTopic,
    AccountRequest,
    Mark,
    Moderate,
    AdminRequest,
    Edit,
    Delete,
    React,
    Typing,
    Away,
    Open,
    Nick,
    Files,
    Search,
    MembersRequest,
    Follow,
)
#: The client packets that may carry a password: type byte -> those fields.
_SECRET_FIELDS = {
    kind.TYPE: names
    for kind in CLIENT_PACKETS
    if (names := tuple(f.name for f in fields(kind) if f.metadata.get("kind") == _SECRET["kind"]))
}
SECRET_TYPES = frozenset(_SECRET_FIELDS)


def carries_secret(packet: Any) -> bool:
    """Whether a client packet has a password in it."""
    return any(getattr(packet, name) for name in _SECRET_FIELDS.get(packet.TYPE, ()))


SERVER_PACKETS = (
    Welcome,
    MessagePacket,
    Private,
    Joined,
    Left,
    Pending,
    PongReply,
    Error,
    HistoryPage,
    Bye,
    ServerPing,
    RoomState,
    TopicChanged,
    RoomList,
    Done,
    Marked,
    BanList,
    Sessions,
    Invited,
    Changed,
    TypingNotice,
    Status,
    Renamed,
    FilesToken,
    Results,
    Members,
    Count,
)


# -- schema: derived once from the dataclasses ------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    key: str
    check: Any  # (value, where) -> value, raises ProtocolError
    optional: bool
    own_rule: bool  # text/nick/room/topic: surrogates are judged by rules.py
    since: int  # the protocol version that added the field


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_PACKET, message)


def _check_str(value: Any, where: str) -> str:
    if type(value) is not str:
        raise _bad(f"{where} must be a string")
    return value


def _check_int(value: Any, where: str) -> int:
    if type(value) is not int:
        raise _bad(f"{where} must be an integer")
    if not INT_MIN <= value <= INT_MAX:
        raise _bad(f"{where} is out of range: integers are signed 64-bit")
    return value


def _check_number(value: Any, where: str) -> float:
    if type(value) not in (int, float):
        raise _bad(f"{where} must be a number")
    return value


def _check_bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise _bad(f"{where} must be true or false")
    return value


def _check_object(value: Any, where: str) -> dict:
    if type(value) is not dict:
        raise _bad(f"{where} must be an object")
    return value


def _list_of(item_check):
    def check(value: Any, where: str) -> list:
        if type(value) is not list:
            raise _bad(f"{where} must be a list")
        return [item_check(item, f"{where}[{i}]") for i, item in enumerate(value)]

    return check


def _nested(cls):
    def check(value: Any, where: str):
        return _from_body(cls, _check_object(value, where), where + ".")

    return check


def _checker(tp) -> Any:
    if tp is str:
        return _check_str
    if tp is int:
        return _check_int
    if tp is float:
        return _check_number
    if tp is bool:
        return _check_bool
    if tp is dict:
        return _check_object
    if dataclasses.is_dataclass(tp):
        return _nested(tp)
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        return _list_of(_nested(item) if dataclasses.is_dataclass(item) else _checker(item))
    raise TypeError(f"no checker for {tp!r}")


def _schema(cls) -> tuple[_Field, ...]:
    hints = get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        optional = get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)
        if optional:
            (tp,) = [a for a in get_args(tp) if a is not type(None)]
        fields.append(
            _Field(
                attr=f.name,
                key=f.metadata.get("json", f.name),
                check=_checker(tp),
                optional=optional,
                own_rule="kind" in f.metadata,
                since=f.metadata.get("since", 1),
            )
        )
    return tuple(fields)


_NESTED = (Peer, Quote, Reaction, Message, RoomInfo, BanInfo, PendingInfo, SessionInfo, File, Hit)
_SCHEMAS: dict[type, tuple[_Field, ...]] = {
    cls: _schema(cls) for cls in (*_NESTED, *CLIENT_PACKETS, *SERVER_PACKETS)
}
#: What a version 1 session's packets are read as: version 1's fields only.
_V1_SCHEMAS: dict[type, tuple[_Field, ...]] = {
    cls: tuple(f for f in schema if f.since == 1) for cls, schema in _SCHEMAS.items()
}
_CLIENT_TYPES: dict[int, tuple[dict[int, type], dict[type, tuple[_Field, ...]], str]] = {
    1: ({cls.TYPE: cls for cls in V1_CLIENT_PACKETS}, _V1_SCHEMAS, "version 1 client-to-server"),
    2: ({cls.TYPE: cls for cls in CLIENT_PACKETS}, _SCHEMAS, "version 2 client-to-server"),
}
_SERVER_TYPES = {cls.TYPE: cls for cls in SERVER_PACKETS}


def _from_body(cls, body: dict, where: str = "", schemas: dict = _SCHEMAS):
    values = {}
    for f in schemas[cls]:
        value = body.get(f.key)
        if value is None:
            if not f.optional:
                raise _bad(f"field {where}{f.key!r} is missing")
            continue
        values[f.attr] = f.check(value, f"field {where}{f.key!r}")
    return cls(**values)


# -- lone surrogates ----------------------------------------------------------

# Valid UTF-8 can't carry a surrogate, so one can only come from a JSON
# escape; payloads without such an escape skip the per-string scan.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _reject_surrogates(value: Any, where: str) -> None:
    if type(value) is str:
        if has_lone_surrogate(value):
            raise _bad(f"{where} holds a lone surrogate")
    elif type(value) is dict:
        for key, item in value.items():
            _reject_surrogates(key, f"{where} key")
            _reject_surrogates(item, f"{where}.{key}")
    elif type(value) is list:
        for item in value:
            _reject_surrogates(item, where)


def _check_surrogates(cls, body: dict, schemas: dict) -> None:
    """bad_packet for a lone surrogate anywhere except the fields with a rule of their own."""
    own_rule = {f.key for f in schemas[cls] if f.own_rule}
    for key, value in body.items():
        _reject_surrogates(key, "a key")
        if key not in own_rule:
            _reject_surrogates(value, f"field {key!r}")


# -- decode / encode -----------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: One decoder for every packet (json.loads with an option builds one per call).
_decode_json = json.JSONDecoder(parse_constant=_reject_constant).decode


def _parse_body(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(f"body is not valid UTF-8 (byte {e.start})") from None
    try:
        return _decode_json(text)
    except (ValueError, RecursionError) as e:
        raise _bad(f"body is not JSON: {e}") from None


def _ref_of(body: Any) -> str | None:
    ref = body.get("ref") if type(body) is dict else None
    if type(ref) is str and not has_lone_surrogate(ref):
        return ref
    return None


def _decode(payload: bytes, table: dict, direction: str, schemas: dict = _SCHEMAS):
    if not payload:
        raise _bad("empty payload: a packet needs at least its type byte")
    type_byte = payload[0]
    cls = table.get(type_byte)
    body = _parse_body(payload[1:]) if len(payload) > 1 else None
    if cls is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"packet type 0x{type_byte:02X} is not a {direction} packet",
            _ref_of(body),
        )
    if type(body) is not dict:
        if len(payload) == 1:
            raise _bad("body is missing: send {} for an empty body")
        raise _bad("body must be a JSON object")
    if cls is Login and type(body.get("proto")) is int and body["proto"] == 1:
        # A version 1 LOGIN is read as version 1 has it: its password, of
        # whatever kind, is an unknown field, ignored (docs/protocol.md 15).
        schemas = _V1_SCHEMAS
        body = {key: value for key, value in body.items() if key != "password"}
    try:
        if _SURROGATE_ESCAPE.search(payload):
            _check_surrogates(cls, body, schemas)
        return _from_body(cls, body, schemas=schemas)
    except ProtocolError as e:
        e.ref = _ref_of(body)
        raise


def decode_client(payload: bytes, version: int = PROTOCOL_VERSION):
    """Parse a client->server payload as ``version`` defines it (a version 1
    session's packets have only version 1's types and fields); raises
    ProtocolError (never anything else)."""
    table, schemas, direction = _CLIENT_TYPES[version]
    return _decode(payload, table, direction, schemas)


def decode_server(payload: bytes):
    """Parse a server->client payload; raises ProtocolError (never anything else)."""
    return _decode(payload, _SERVER_TYPES, "server-to-client")


def _to_json(value: Any) -> Any:
    kind = type(value)
    if kind in _SCHEMAS:  # a nested packet part (every one has a schema)
        return body_of(value)
    if kind is list:
        return [_to_json(v) for v in value]
    return value


def body_of(obj) -> dict:
    """The JSON object for a packet or nested value; absent optionals omitted."""
    body = {}
    for f in _SCHEMAS[type(obj)]:
        value = getattr(obj, f.attr)
        if value is None and f.optional:
            continue
        body[f.key] = _to_json(value)
    return body


#: Compact JSON text, as every payload carries it.
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode_json(packet_type: int, text: str) -> bytes:
    """Payload from JSON text already encoded (cached by the caller)."""
    return bytes((packet_type,)) + text.encode("utf-8")


#: The ``op`` of a notice's ``action`` (SAY with ``notice``; IRC's NOTICE).
NOTICE = "notice"

#: How an action (``/me waves``; IRC's CTCP ACTION) travels: the text ``* waves``.
ACTION_PREFIX = "* "


def encode(packet) -> bytes:
    """Payload (type byte + compact UTF-8 JSON) for a typed packet."""
    return encode_json(packet.TYPE, dumps(body_of(packet)))


# -- cached fragments ----------------------------------------------------------
# The server keeps these encoded, so a broadcast is encoded once and a login
# costs a join over the peers, not an encode of each. Each yields exactly what
# encode() would for the same packet.


#: JSON string literal, as ``dumps`` writes one (UTF-8 kept, not escaped).
_string = json.encoder.encode_basestring


def message_json(m: Message) -> str:
    """A stored message's JSON object, without ``ref`` (MESSAGE body, history
    item), built without the encoder machinery, since every message goes
    through here once. Its fields come in the dataclass's order, except that
    a record's ``action`` comes before the ``ref`` and ``room`` added later:
    JSON objects are unordered, and clients must not depend on the order."""
    text = f'{{"seq":{m.seq!r},"ts":{m.ts!r},"from":{_string(m.sender)},"text":{_string(m.text)}'
    if m.action is not None:
        text += f',"action":{dumps(m.action)}'
    if m.plain:
        return text + "}"
    return text + _conversation_json(m) + "}"


def _conversation_json(m: Message) -> str:
    """Section 19's fields of a message, as ``dumps(body_of(m))`` has them
    (reply, edited, deleted, deleted_by, reactions, rev), spliced."""
    parts = []
    if m.reply is not None:
        parts.append(f',"reply":{dumps(body_of(m.reply))}')
    if m.edited is not None:
        parts.append(f',"edited":{m.edited!r}')
    if m.deleted is not None:
        parts.append(',"deleted":true' if m.deleted else ',"deleted":false')
    if m.deleted_by is not None:
        parts.append(f',"deleted_by":{_string(m.deleted_by)}')
    if m.reactions is not None:
        listed = ",".join(
            f'{{"emoji":{_string(r.emoji)},"by":[{",".join(map(_string, r.by))}]}}' for r in m.reactions
        )
        parts.append(f',"reactions":[{listed}]')
    if m.rev is not None:
        parts.append(f',"rev":{m.rev}')
    if m.files is not None:
        parts.append(f',"files":{files_json(m.files)}')
    return "".join(parts)


def files_json(files: list[File]) -> str:
    """A message's ``files`` as a JSON array (20.1)."""
    return dumps([body_of(f) for f in files])


def files_of(listed: list[dict] | None) -> list[File] | None:
    """``files`` read back from their JSON (a store's, a stream's)."""
    if not listed:
        return None
    return [File(**item) for item in listed]


def file_size_text(size: int) -> str:
    """A size as a version 1 or IRC line shows it: bytes, KB or MB (20.6)."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def file_lines(text: str, files: list[File], link: Any) -> str:
    """A message's text followed by one ``[name, size] URL`` line per
    file, as version 1 and IRC see a message with files (20.6); ``link``
    makes a file's URL."""
    lines = [f"[{f.name}, {file_size_text(f.size)}] {link(f)}" for f in files]
    return "\n".join([text, *lines] if text else lines)


def v1_message_json(m: Message, files_url: str = "") -> str | None:
    """A message as version 1 sees it: its text, nothing of section 19 or
    20 (its files are lines of text linking under ``files_url``); None for
    a deleted one (version 1 sees no trace of it)."""
    if m.deleted:
        return None
    if m.plain:
        return message_json(m)
    return message_json(v1_message(m, files_url))


def v1_message(m: Message, files_url: str = "") -> Message:
    """The message version 1 is given: its text (and its files' lines), its action."""
    text = m.text if not m.files else file_lines(m.text, m.files, lambda f: file_url(files_url, f))
    return Message(m.seq, m.ts, m.sender, text, None, v1_action(m.action))


def file_url(files_url: str, f: File) -> str:
    """A file's download address under ``files_url`` (``…/files``)."""
    return f"{files_url}/{f.id}/{quote(f.name, safe='')}"


def v1_action(action: dict | None) -> dict | None:
    """A message's ``action`` as version 1 gets it: a notice is a plain
    message there (version 1 has no notices)."""
    return None if action is not None and action.get("op") == NOTICE else action


def draft_json(d) -> str:
    """A message before its seq, as a cluster's room stream carries it
    (``ts``, ``from``, ``text``, ``action``): built as message_json is."""
    text = f'{{"ts":{d.ts!r},"from":{_string(d.sender)},"text":{_string(d.text)}}}'
    if d.action is not None:
        text = f'{text[:-1]},"action":{dumps(d.action)}}}'
    if getattr(d, "files", None):
        text = f'{text[:-1]},"files":{files_json(d.files)}}}'
    return text


def with_ref(object_json: str, ref: str | None) -> str:
    """The same JSON object with ``ref`` added (the sender's copy)."""
    return object_json if ref is None else f'{object_json[:-1]},"ref":{dumps(ref)}}}'


def with_room(object_json: str, room: str) -> str:
    """A MESSAGE body as version 2 has it: the room's name added."""
    return f'{object_json[:-1]},"room":{_string(room)}}}'


def peer_json(id: int, nick: str, op: bool = False, away: str | None = None, voice: bool = False) -> str:
    """A Peer object, as WELCOME.peers and ROOM.members list it."""
    peer: dict[str, Any] = {"id": id, "nick": nick}
    if op:
        peer["op"] = True
    if away is not None:
        peer["away"] = away
    if voice:
        peer["voice"] = True
    return dumps(peer)


def welcome_payload(body: dict, peers_json: list[str], history_json: list[str], fixed: str = "") -> bytes:
    """WELCOME from its scalar fields, the members of a JSON object that
    are the same in every WELCOME (``fixed``: the server's name, motd and
    limits, encoded once), and the cached peer and history objects."""
    text = dumps(body)
    if fixed:
        text = f"{text[:-1]},{fixed}}}" if body else f"{{{fixed}}}"
    lists = f'"peers":[{",".join(peers_json)}],"history":[{",".join(history_json)}]'
    return encode_json(PacketType.WELCOME, f"{text[:-1]},{lists}}}")


def room_state_payload(body: dict, members_json: list[str], history_json: list[str]) -> bytes:
    """ROOM from its scalar fields and the room's cached member and history objects."""
    text = dumps(body)
    lists = f'"members":[{",".join(members_json)}],"history":[{",".join(history_json)}]'
    return encode_json(PacketType.ROOM, f"{text[:-1]},{lists}}}")


def members_payload(
    room: str, members_json: list[str], count: int, next: str | None, ref: str | None
) -> bytes:
    """MEMBERS (server to client) from the room's cached Peer objects."""
    body: dict[str, Any] = {"room": room, "count": count}
    if next is not None:
        body["next"] = next
    if ref is not None:
        body["ref"] = ref
    text = dumps(body)
    return encode_json(PacketType.MEMBER_PAGE, f'{text[:-1]},"members":[{",".join(members_json)}]}}')


def pending_payload(id: int, state: str) -> bytes:
    """PENDING, made twice a connection: ``encode(Pending(id, state))``
    without the schema's walk (``state`` is one of the protocol's words)."""
    return b'%c{"id":%d,"state":"%s"}' % (PacketType.PENDING, id, state.encode())


def room_list_payload(rooms_json: str, ref: str | None) -> bytes:
    """ROOMS from the listing's JSON array, encoded once for every LIST."""
    return encode_json(PacketType.ROOMS, with_ref(f'{{"rooms":{rooms_json}}}', ref))


def frame(payload: bytes) -> bytes:
    """Length-prefix a payload exactly as Int32StringReceiver does."""
    if len(payload) > MAX_WIRE_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the 4-byte length prefix")
    return _LENGTH.pack(len(payload)) + payload


def split_frames(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete payloads in a byte stream, and the incomplete rest."""
    payloads = []
    offset, size = 0, len(data)
    while size - offset >= 4:
        (length,) = _LENGTH.unpack_from(data, offset)
        end = offset + 4 + length
        if end > size:
            break
        payloads.append(data[offset + 4 : end])
        offset = end
    return payloads, data[offset:]


def encode_frame(packet) -> bytes:
    return frame(encode(packet))
