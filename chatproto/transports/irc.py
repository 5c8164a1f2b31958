"""The IRC transport: irssi, WeeChat and HexChat users in our rooms.

An IRC connection is a chat connection like any other: the same
ConnectionPolicy (transports/policy.py) as Int32's, with its limits, fair
share and timeouts, and lines in place of frames. Each IRC command becomes
the packet it means (PRIVMSG #room is a SAY, JOIN a JOIN) and is handled
exactly as if it had come over TCP (the command table, core/commands.py);
each packet the core sends becomes the IRC lines it means. A broadcast is turned
into IRC lines once per set of capabilities (server-time, echo-message...)
and the same bytes go to every IRC client that asked for that set
(docs/protocol.md, section 17).

Lines are buffered as bytes and decoded whole, so a character split across
two reads arrives whole; a line that is not UTF-8 gets a NOTICE.

Conversations (section 17.8): replies, reactions and typing travel as IRCv3
client tags (``+draft/reply``, ``+draft/react``, ``+typing``) on PRIVMSG and
TAGMSG, deletions as REDACT, away as AWAY and away-notify; a direct
conversation of two is a private query, of more an ``&`` channel
(irc_conversations.py has the pure parts).
"""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import re
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import __version__, codec
from chatproto.codec import ACTION_PREFIX, ErrorCode, PacketType, ProtocolError
from chatproto.core.budget import REFUSAL, ROWS_PER_UNIT
from chatproto.core.connection import Session, logged_in
from chatproto.core.hub import Hub
from chatproto.core.moderation import check_key, check_limit
from chatproto.core.rooms import RoomRules
from chatproto.rules import nick_key, normalise_nick, room_key
from chatproto.transports import irc_queries
from chatproto.transports.int32 import ChatFactory
from chatproto.transports.irc_conversations import (
    CLIENTTAGDENY,
    EDITED,
    TYPING,
    escape_tag,
    is_query,
    participants,
    query_target,
    same_people,
    seq_of,
    unescape_tag,
)
from chatproto.transports.irc_files import personal, with_links
from chatproto.transports.irc_labels import LABEL_BYTES, CapturingOutbox, Labels, with_label
from chatproto.transports.irc_people import NAMELEN, IrcPeople, people_of
from chatproto.transports.ircnames import SHORT, channel, irc_nick, our_nick, room_of
from chatproto.transports.outbox import Outbox
from chatproto.transports.policy import CLOSING, CONNECTED, ConnectionPolicy, Framing

log = Logger()

#: What we offer, all of it working (CAP LS).
CAPABILITIES = (
    "account-notify",
    "account-tag",
    "away-notify",
    "batch",
    "cap-notify",
    "draft/chathistory",
    "draft/message-redaction",
    "echo-message",
    "extended-join",
    "labeled-response",
    "message-tags",
    "multi-prefix",
    "sasl",
    "server-time",
    "setname",
    "userhost-in-names",
)
#: What can't be asked for once registered (SASL is for registration only).
CAPABILITIES_BEFORE_LOGIN = frozenset({"sasl"})
#: Bytes in a line, CRLF included, tags not (RFC 1459, 2.3).
LINE = 512
#: Bytes a client's tags may take (IRCv3 message-tags), and so a whole line.
TAGS = 4096
#: Bytes of text a PRIVMSG line keeps at least, or its prefix is the bare nick.
TEXT_ROOM = 64
#: Unreadable lines in a row that get an answer; past them, silence until a good line.
ERROR_ANSWERS = 3
#: An outbox's own write, for the lines of a broadcast (IrcOutbox.deliver).
_plain_write = Outbox.write
#: How users look on IRC: nick!nick@HOST (no address is ever shown).
HOST = "chat"
_SERVER_NAME = re.compile(r"[^A-Za-z0-9.-]")


def server_name(name: str) -> str:
    """The server's name as IRC prefixes carry it: no spaces."""
    return _SERVER_NAME.sub("-", name) or "chat"


def user(nick: str) -> str:
    irc = irc_nick(nick)
    return f"{irc}!{irc}@{HOST}"


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def line(prefix: str | None, command: str, *params: str, tags: dict | None = None) -> str:
    """One IRC line with its CRLF; the last parameter always goes after
    ``:`` (so that an empty or spaced one survives, which Twisted's irc.IRC
    gets wrong). Whatever the parameters hold, it is one line: CR, LF and
    NUL become spaces (a reason or an echoed name can't forge a line), a
    middle parameter IRC can't carry (empty, spaced, or starting with ``:``:
    an echo of what a client sent) is ``*``, and past 512 bytes the line is
    cut between characters."""
    parts = [":" + prefix, command] if prefix else [command]
    if params:
        for middle in params[:-1]:
            if not middle or middle[0] == ":" or " " in middle:
                parts.extend(p if p and p[0] != ":" and " " not in p else "*" for p in params[:-1])
                break
        else:
            parts.extend(params[:-1])
        parts.append(":" + params[-1])
    body = " ".join(parts)
    if "\n" in body or "\r" in body or "\0" in body:
        body = body.translate(_LINE_BREAKS)
    if len(body) > _SURELY_SHORT and (len(body) > LINE - 2 or not body.isascii()):
        body = _capped(body)
    return f"{tag_part(tags)}{body}\r\n" if tags else body + "\r\n"


def tag_part(tags: dict | None) -> str:
    """IRCv3 tags as they lead a line: ``@k=v;k2 `` (nothing without tags)."""
    if not tags:
        return ""
    return "@" + ";".join(f"{k}={escape_tag(v)}" if v is not None else k for k, v in tags.items()) + " "


#: What would end a line early or break it, as spaces.
_LINE_BREAKS = str.maketrans("\r\n\0", "   ")
#: Characters of a line that can't be more than 510 bytes of UTF-8.
_SURELY_SHORT = (LINE - 2) // 4


def _capped(body: str) -> str:
    """``body`` cut to 510 bytes (512 with CR LF) between characters."""
    data = body.encode("utf-8")
    if len(data) <= LINE - 2:
        return body
    return data[: _cut(data, LINE - 2)].decode("utf-8")


def _cut(data: bytes, room: int) -> int:
    """Where to cut ``data`` to keep at most ``room`` bytes: between two
    characters, and after one whole character at least (so a piece is never
    empty, however little room a line leaves)."""
    cut = max(room, 1)
    while cut < len(data) and data[cut] & 0xC0 == 0x80:  # a continuation byte: inside a character
        cut -= 1
    if cut == 0:  # no room for the first character: take it whole
        cut = 1
        while cut < len(data) and data[cut] & 0xC0 == 0x80:
            cut += 1
    return cut


def byte_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (what IRC's 512 counts)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def split_text(text: str, room: int) -> list[str]:
    """``text`` as IRC can carry it: a piece per line of it, each at most
    ``room`` bytes of UTF-8 (one whole character at least), cut between
    characters; empty lines dropped."""
    if len(text) <= room and "\n" not in text and text.isascii():
        return [text] if text else []  # the usual message: one short line
    pieces = []
    room = max(room, 1)  # a line with no room left still carries its text, a character a line
    for part in text.split("\n"):
        data = part.encode("utf-8")
        while len(data) > room:
            cut = _cut(data, room)
            pieces.append(data[:cut].decode("utf-8"))
            data = data[cut:]
        if data:
            pieces.append(data.decode("utf-8"))
    return pieces


def pack_names(names: list[str], room: int) -> list[str]:
    """NAMES entries as the trailing parameters of ``353`` lines: whole
    entries only, space-separated, each line's at most ``room`` bytes (an
    entry longer than that alone on its line)."""
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for name in names:
        size = byte_length(name)
        if current and used + 1 + size > room:
            chunks.append(" ".join(current))
            current, used = [], 0
        used += size + (1 if current else 0)
        current.append(name)
    if current:
        chunks.append(" ".join(current))
    return chunks


def parse(text: str) -> tuple[dict, str | None, str, list[str]]:
    """(tags, prefix, COMMAND, params) of one line."""
    tags: dict = {}
    if text.startswith("@"):
        raw, _, text = text[1:].partition(" ")
        for item in raw.split(";"):
            key, _, value = item.partition("=")
            if key:
                tags[key] = unescape_tag(value)
    prefix = None
    text = text.lstrip(" ")
    if text.startswith(":"):
        prefix, _, text = text[1:].partition(" ")
    text, _, trailing = text.partition(" :")
    words = text.split()
    if not words:
        return tags, prefix, "", []
    params = words[1:]
    if _ or text.endswith(" :"):
        params.append(trailing)
    return tags, prefix, words[0].upper(), params


class IrcWire:
    """Our broadcasts as IRC lines, for the clients that share one set of
    capabilities; a broadcast is translated once per wire."""

    name = "irc"
    lazy = False  # NAMES stay whole, JOIN and PART go to everyone
    relayable = False  # IRC lines are rendered per connection, not payloads

    def __init__(self, server: str, caps: frozenset[str], people: IrcPeople | None = None) -> None:
        self.server = server
        self.caps = caps
        self.people = people  # who is an account, and real names (account-tag, extended-join)
        self.account_tag = "account-tag" in caps and people is not None
        self.extended_join = "extended-join" in caps
        self.labels = "labeled-response" in caps
        self.time = "server-time" in caps
        self.tags = "message-tags" in caps
        self.echo = "echo-message" in caps
        self.away_notify = "away-notify" in caps
        self.redaction = "draft/message-redaction" in caps

    def frame(self, payload: bytes) -> bytes:
        """IRC lines for a broadcast; for a packet the connection renders
        itself (WELCOME, ROOM, STATUS...), the payload behind a NUL (which
        no IRC line holds) and its length: a broadcast may join it with
        other frames (:meth:`IrcConnection.deliver_to`)."""
        kind = payload[0]
        if kind == PacketType.MESSAGE and not self.echo and not self.labels and _own_plain(payload):
            return b""  # a sender's own copy of its message: only echo-message shows it
        render = _BY_WIRE.get(kind)
        if render is not None:
            body = json.loads(payload[1:])
            # The sender's own copy (it has the ref) is the connection's to
            # render with labeled-response: it may answer a labeled request.
            ref_free = body.get("ref") is None or (kind != PacketType.ERROR and not self.labels)
            if ref_free and not _kick_or_invite(kind, body) and not self._signed(kind, body):
                return render(self, body).encode("utf-8")
        elif kind not in _PERSONAL:
            if kind not in NOT_SHOWN:
                log.warn("IRC can't show packet type 0x{kind:02X}", kind=kind)
            return b""
        # The connection shows it: WELCOME, ROOM, STATUS..., an ERROR
        # answering one of its requests (a refused change, in its place), or
        # a kick (the KICK comes from whoever kicked: _kick_or_invite).
        return b"\0" + len(payload).to_bytes(4, "big") + payload

    def _signed(self, kind: int, body: dict) -> bool:
        """A MESSAGE whose file links each connection signs for itself (20.6)."""
        return kind == PacketType.MESSAGE and self.people is not None and personal(self.people.hub, body)

    def message_tags(self, body: dict, batch: str | None = None) -> dict | None:
        tags = {}
        if batch is not None:
            tags["batch"] = batch
        if self.time:
            tags["time"] = iso_time(body["ts"])
        if self.tags and "seq" in body:
            tags["msgid"] = str(body["seq"])
        if self.tags and body.get("reply"):
            tags["+draft/reply"] = str(body["reply"]["seq"])
        if self.account_tag:
            account = self.account_of(body["from"])
            if account is not None:
                tags["account"] = account
        return tags or None

    def with_account(self, tags: dict, nick: str) -> dict:
        """``tags`` and, with account-tag, the sender's ``account``."""
        account = self.account_of(nick) if self.account_tag else None
        return tags if account is None else {**tags, "account": account}

    def account_of(self, nick: str) -> str | None:
        """account-tag's value for a sender: its IRC nick if it is an
        account logged in (an account's nick is its name), else None."""
        session = self.people.hub.session_for(nick) if self.people is not None else None
        return irc_nick(session.nick) if session is not None and session.account else None

    def join_line(self, nick: str, room: str) -> str:
        """A JOIN; with extended-join, ``JOIN #room account :realname``
        (``*`` for a guest)."""
        if not self.extended_join:
            return line(user(nick), "JOIN", room)
        session = self.people.hub.session_for(nick) if self.people is not None else None
        realname = self.people.realname(session) if self.people is not None and session else nick
        return line(user(nick), "JOIN", room, self.account_of(nick) or "*", realname)

    def privmsg(self, body: dict, target: str, batch: str | None = None) -> str:
        """A MESSAGE or PRIVATE as PRIVMSG (NOTICE for a notice or a
        moderation record), in as many lines as it takes. A sender and a
        target so long that they leave a line little room for text (long
        ``xn--`` nicks) are written with the bare nick as the prefix."""
        command = "NOTICE" if body.get("action") or body.get("notice") else "PRIVMSG"
        head = line(user(body["from"]), command, target, "")[:-2]  # ":nick!nick@host PRIVMSG #room :"
        room = LINE - 2 - byte_length(head)
        if room < TEXT_ROOM:
            head = line(irc_nick(body["from"]), command, target, "")[:-2]  # a prefix may be the nick alone
            room = LINE - 2 - byte_length(head)
        text = body["text"]
        if command == "PRIVMSG" and text.startswith(ACTION_PREFIX) and len(text) > len(ACTION_PREFIX):
            # An action (/me) travels as "* text": IRC clients get their CTCP ACTION back.
            pieces = split_text(text[len(ACTION_PREFIX) :], room - len("\x01ACTION \x01"))
            pieces = [f"\x01ACTION {piece}\x01" for piece in pieces]
        else:
            pieces = split_text(text, room)
        lead = tag_part(self.message_tags(body, batch))
        # Each piece fits its line and holds no LF: only CR and NUL are left to neutralise.
        return "".join(f"{lead}{head}{piece.translate(_LINE_BREAKS)}\r\n" for piece in pieces)

    # -- broadcasts (and what send() passes on) ----------------------------------------

    def message(self, body: dict, session: Session | None = None) -> str:
        if body.get("files") and self.people is not None:
            body = with_links(self.people.hub, body, session)
        action = body.get("action")
        if action is not None and action["op"] in _MODES:
            return self.mode(body, action)  # everyone, the actor too, as IRC servers do
        if body.get("ref") is not None and not self.echo:
            return ""  # the sender's own copy: only echo-message clients want it
        return self.privmsg(body, target_of(body["room"], body["from"]))

    def mode(self, body: dict, action: dict) -> str:
        """A record of op, deop, voice, devoice, ban, unban or mode as the
        MODE line it is on IRC (one line for all a mode record changed)."""
        op, room = action["op"], channel(body["room"])
        if op == "mode":
            change, params = mode_change(action)
            return line(user(body["from"]), "MODE", room, change, *params) if change else ""
        sign, letter = _MODES[op]
        target = irc_nick(action["target"]) + ("!*@*" if letter == "b" else "")
        return line(user(body["from"]), "MODE", room, sign + letter, target)

    def changed(self, body: dict) -> str:
        """CHANGED (17.8): an edit as a new PRIVMSG that says so, a deletion
        as REDACT (or a NOTICE), a reaction as TAGMSG +draft/react or
        +draft/unreact; the sender's own copy only with echo-message."""
        room, kind, by, message = body["room"], body["kind"], body["by"], body["message"]
        if body.get("ref") is not None and not self.echo:
            return ""
        target = target_of(room, by, message["from"])
        seq = str(message["seq"])
        if kind == "edit":
            edit = dict(message, text=EDITED + message["text"], ts=message.get("edited") or message["ts"])
            del edit["seq"]  # a new line, not the message: no msgid of its own
            edit["reply"] = {"seq": message["seq"]}  # +draft/reply names the message it changes
            return self.privmsg(edit, target)
        if kind == "delete":
            if self.redaction:
                return line(user(by), "REDACT", target, seq)
            tags = {"+draft/reply": seq} if self.tags else None
            author = irc_nick(message["from"])
            return line(user(by), "NOTICE", target, f"(deleted message {seq} from {author})", tags=tags)
        if kind != "react" or not self.tags or body.get("emoji") is None:
            return ""
        tag = "+draft/react" if body.get("on", True) else "+draft/unreact"
        tags = {tag: body["emoji"], "+draft/reply": seq}
        return line(user(by), "TAGMSG", target, tags=self.with_account(tags, by))

    def joined(self, body: dict) -> str:
        """JOIN; for an operator, the server's MODE +o after it, as IRC
        clients learn who is an operator from what follows a JOIN; for one
        away, AWAY after it (away-notify)."""
        if is_query(body["room"]):
            return ""  # a conversation of two is a query: nobody joins it
        room = channel(body["room"])
        join = self.join_line(body["nick"], room)
        letters = ("o" if body.get("op") else "") + ("v" if body.get("voice") else "")
        if letters:
            join += line(self.server, "MODE", room, "+" + letters, *[irc_nick(body["nick"])] * len(letters))
        if self.away_notify and body.get("away") is not None:
            join += away_line(body["nick"], body["away"])
        return join

    def left(self, body: dict) -> str:
        if is_query(body["room"]):
            return ""
        room, who = channel(body["room"]), user(body["nick"])
        message = body.get("message") or ""
        if body["reason"] == "part":
            return line(who, "PART", room, message) if message else line(who, "PART", room)
        if body["reason"] in ("banned", "closed"):
            return line(self.server, "KICK", room, irc_nick(body["nick"]), message or body["reason"])
        return line(who, "QUIT", f"{body['reason']}: {message}" if message else body["reason"])

    def topic(self, body: dict) -> str:
        if is_query(body["room"]):
            return ""  # a query has no topic
        return line(user(body["by"]), "TOPIC", channel(body["room"]), body["topic"])

    def bye(self, body: dict) -> str:
        return line(None, "ERROR", f"Closing link: {body['reason']}")

    def fatal(self, body: dict) -> str:
        return line(None, "ERROR", f"{body['message']} ({body['code']})")


def target_of(room: str, source: str, author: str | None = None) -> str:
    """Where a line from ``source`` in ``room`` goes: its channel; in a
    conversation of two, the other participant (a private query)."""
    return query_target(room, source, author) if is_query(room) else channel(room)


def _kick_or_invite(kind: int, body: dict) -> bool:
    """What the connection renders though the wire could: a kick or ban's
    record and the LEFT ``kicked`` after it, so that the KICK comes once,
    from whoever kicked (IrcConnection._kicked); an invitation's record to
    the inviter (341)."""
    if kind == PacketType.LEFT:
        return body["reason"] == "kicked" and not is_query(body["room"])
    if kind != PacketType.MESSAGE or body.get("action") is None:
        return False
    op = body["action"]["op"]
    return op in _KICKS or (op == "invite" and body.get("ref") is not None)


def _own_plain(payload: bytes) -> bool:
    """Whether a MESSAGE payload is a sender's own copy (``ref``, which
    codec.with_ref puts last) of a message that is no record (no
    ``action``): read without decoding it, as a JSON string can't hold an
    unescaped quote, so these bytes are only ever keys."""
    return b',"ref":' in payload and b'"action":' not in payload


def away_line(nick: str, away: str | None) -> str:
    """away-notify's AWAY: with the message while away, bare once back."""
    if away is None:
        return line(user(nick), "AWAY")
    return line(user(nick), "AWAY", away or "Away")


#: Messages that may wait for OPEN to give a conversation, per nick.
OPENING_QUEUE = 16

#: Our refusals of DELETE as draft/message-redaction's FAIL codes.
_REDACT_FAILS = {
    ErrorCode.NOT_YOURS: "REDACT_FORBIDDEN",
    ErrorCode.NOT_PERMITTED: "REDACT_FORBIDDEN",
    ErrorCode.NO_SUCH_MESSAGE: "UNKNOWN_MSGID",
    ErrorCode.MESSAGE_DELETED: "UNKNOWN_MSGID",
    ErrorCode.NO_SUCH_ROOM: "INVALID_TARGET",
    ErrorCode.BAD_ROOM: "INVALID_TARGET",
    ErrorCode.NOT_A_MEMBER: "INVALID_TARGET",
}


def _notice(command: str) -> bool | None:
    """SAY's and WHISPER's ``notice`` for a command: True for NOTICE."""
    return True if command == "NOTICE" else None


def irc_of(device: Any) -> IrcConnection | None:
    """The IRC client a session's device is, if it is one."""
    protocol = getattr(device, "protocol", None)
    return protocol if isinstance(protocol, IrcConnection) else None


def irc_client(session: Session) -> IrcConnection | None:
    """A session's IRC client, if it has one here (the latest such device)."""
    found = None
    for device in session.devices:
        found = irc_of(device) or found
    return found


def identity(session: Session, people: IrcPeople) -> tuple[str, str]:
    """(username, realname) as WHO and WHOIS show them: USER's username for
    an IRC session, the nick for any other; the real name ``people`` keeps
    (USER's or SETNAME's, else the nick)."""
    client = irc_client(session)
    username = client.username if client is not None and client.username else irc_nick(session.nick)
    return username, people.realname(session)


def is_oper(session: Session) -> bool:
    """An IRC operator: one of its IRC clients gave OPER."""
    return any(client.oper for client in map(irc_of, session.devices) if client is not None)


def member_prefix(rules: RoomRules, session: Session, multi: bool = False) -> str:
    """A member's channel prefix, as NAMES, WHO and WHOIS show it: ``@``
    for an operator, ``+`` for a voiced member; the higher alone, or both
    with multi-prefix (``multi``)."""
    marks = ("@" if rules.is_op(session) else "") + ("+" if rules.is_voiced(session) else "")
    return marks if multi else marks[:1]


def mask_pattern(mask: str) -> re.Pattern[str]:
    """An IRC mask (``*`` any run, ``?`` one character) as a pattern for
    IRC nicks, in ASCII case (CASEMAPPING=ascii)."""
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in mask)
    return re.compile(pattern, re.DOTALL | re.IGNORECASE | re.ASCII)


def away_of(session: Session) -> str | None:
    """A session's away message ("" for none) while away; None while present."""
    return session.away


#: Batch ids: unique on every connection, as IRCv3 batch asks.
_BATCHES = itertools.count(1)

#: Moderation records whose target, if a member, is taken out: KICK.
_KICKS = frozenset({"kick", "ban"})
#: Kicks remembered per connection until their LEFT comes.
KICKS_KEPT = 32
#: Bytes of an AUTHENTICATE line's payload; one this long means more follows (IRCv3 SASL).
SASL_CHUNK = 400
#: Bytes of a whole SASL payload, past which it fails (904).
SASL_LIMIT = 8192
#: WHO lines that cost as much as one command (a mask's answer is charged by its length).
WHO_LINES_PER_UNIT = 10
#: The longest username and realname WHO and WHOIS show.
USERLEN, REALLEN = 16, 160
_MASK_SPECIAL = re.compile(r"[*?]")

#: Moderation records that IRC shows as MODE changes.
_MODES = {
    "op": ("+", "o"),
    "deop": ("-", "o"),
    "voice": ("+", "v"),
    "devoice": ("-", "v"),
    "ban": ("+", "b"),
    "unban": ("-", "b"),
    "mode": ("", ""),
}

#: MODERATE mode's fields and the channel modes they are, in the order
#: MODE lines show them: flags, then the modes with a parameter.
_FLAGS = (("topic_lock", "t"), ("invite_only", "i"), ("moderated", "m"), ("secret", "s"))

#: Channel modes MODE takes from IRC, and what each is.
_FLAG_FIELDS = {letter: name for name, letter in _FLAGS}

#: MODE's changes that name a nick, as MODERATE ops.
_MODE_OPS = {"+o": "op", "-o": "deop", "+v": "voice", "-v": "devoice", "+b": "ban", "-b": "unban"}


def mode_change(action: dict) -> tuple[str, list[str]]:
    """A mode record's changes as a MODE string and its parameters: ``+mk-l
    key`` (a removed key is ``-k *``, as servers echo it)."""
    changes: list[tuple[str, str]] = []
    params: list[str] = []
    for name, letter in _FLAGS:
        if action.get(name) is not None:
            changes.append(("+" if action[name] else "-", letter))
    if action.get("key") is not None:
        changes.append(("+" if action["key"] else "-", "k"))
        params.append(action["key"] or "*")
    if action.get("limit") is not None:
        changes.append(("+" if action["limit"] else "-", "l"))
        if action["limit"]:
            params.append(str(action["limit"]))
    text, last = "", ""
    for sign, letter in changes:
        text += letter if sign == last else sign + letter
        last = sign
    return text, params


#: How IRC shows each server packet, in three tables that together name
#: every one (a test checks): _BY_WIRE renders a broadcast once per wire
#: (and the last words: BYE, a fatal ERROR); _BY_CONNECTION renders what
#: needs the connection's own state; NOT_SHOWN lists, with the reason, what
#: an IRC client deliberately never sees.
_BY_WIRE: dict[int, Callable[[IrcWire, dict], str]] = {
    PacketType.MESSAGE: IrcWire.message,
    PacketType.JOINED: IrcWire.joined,
    PacketType.LEFT: IrcWire.left,
    PacketType.TOPIC_CHANGED: IrcWire.topic,
    PacketType.CHANGED: IrcWire.changed,
    PacketType.BYE: IrcWire.bye,
    PacketType.ERROR: IrcWire.fatal,
}

NOT_SHOWN: dict[int, str] = {
    PacketType.PONG_REPLY: "IRC's PING is answered by the gateway itself, so no PING packet is ever sent",
    PacketType.PENDING: "a device still logging in: IRC has no way to show it",
    PacketType.MARKED: "read markers are not an IRC notion (sent only to MARK, which IRC never sends)",
    PacketType.BANS: "the answer to ADMIN, which IRC never sends (MODE +b lists a room's bans)",
    PacketType.SESSIONS: "the answer to ADMIN, which IRC never sends",
    PacketType.FILES_TOKEN: "the answer to FILES, which IRC never sends (IRC clients get links, 20.6)",
    PacketType.RESULTS: "the answer to SEARCH, which IRC never sends (IRC has no search command)",
    PacketType.MEMBER_PAGE: "the answer to MEMBERS and FOLLOW, which IRC never sends (NAMES is whole)",
    PacketType.COUNT: "a big room's count, which IRC needs not: it gets every JOIN and PART (22)",
}

_WIRES: dict[tuple[str, frozenset], IrcWire] = {}
#: Wires kept for reuse, per hub: CAP toggling can't make more (each costs a
#: broadcast group in every channel its clients are in).
WIRES_KEPT = 64


def wire_for(server: str, caps: frozenset[str], people: IrcPeople | None = None) -> IrcWire:
    """One wire per set of capabilities (on a hub: kept with its people),
    shared by every client with it."""
    wires: dict[tuple[str, frozenset], Any] = _WIRES if people is None else people.wires
    key = (server, caps)
    wire = wires.pop(key, None)
    if wire is None:
        wire = IrcWire(server, caps, people)
        while len(wires) >= WIRES_KEPT:
            # The least recently asked for goes: its clients keep it, and a
            # client asking for its capabilities again gets a new one.
            del wires[next(iter(wires))]
    wires[key] = wire  # the most recently asked for last
    return wire


#: (the command a refused packet came from, our error code) -> IRC numeric.
NUMERICS = {
    ("LOGIN", ErrorCode.NICK_TAKEN): "433",
    ("LOGIN", ErrorCode.NICK_REGISTERED): "433",
    ("LOGIN", ErrorCode.BAD_NICK): "432",
    ("LOGIN", ErrorCode.BAD_PASSWORD): "464",
    ("LOGIN", ErrorCode.LOCKED_OUT): "464",
    ("LOGIN", ErrorCode.BANNED): "465",
    ("JOIN", ErrorCode.BAD_ROOM): "479",
    ("JOIN", ErrorCode.TOO_MANY_ROOMS): "405",
    ("JOIN", ErrorCode.BANNED): "474",
    ("JOIN", ErrorCode.INVITE_ONLY): "473",
    ("JOIN", ErrorCode.BAD_KEY): "475",
    ("JOIN", ErrorCode.ROOM_FULL): "471",
    ("PRIVMSG", ErrorCode.MODERATED): "404",
    ("JOIN", ErrorCode.RATE_LIMITED): "263",
    ("PART", ErrorCode.NO_SUCH_ROOM): "403",
    ("PART", ErrorCode.NOT_A_MEMBER): "442",
    ("PART", ErrorCode.BAD_ROOM): "403",
    ("PRIVMSG", ErrorCode.NO_SUCH_NICK): "401",
    ("PRIVMSG", ErrorCode.NO_SUCH_ROOM): "403",
    ("PRIVMSG", ErrorCode.BAD_ROOM): "403",
    ("PRIVMSG", ErrorCode.NOT_A_MEMBER): "404",
    ("PRIVMSG", ErrorCode.RATE_LIMITED): "404",
    ("PRIVMSG", ErrorCode.BAD_TEXT): "404",
    ("PRIVMSG", ErrorCode.BAD_NICK): "401",
    ("TOPIC", ErrorCode.NO_SUCH_ROOM): "403",
    ("TOPIC", ErrorCode.NOT_A_MEMBER): "442",
    ("TOPIC", ErrorCode.TOPIC_LOCKED): "482",
    ("KICK", ErrorCode.NOT_OPERATOR): "482",
    ("KICK", ErrorCode.NO_SUCH_MEMBER): "441",
    ("KICK", ErrorCode.NOT_A_MEMBER): "442",
    ("KICK", ErrorCode.NO_SUCH_ROOM): "403",
    ("KICK", ErrorCode.NOT_PERMITTED): "482",
    ("MODE", ErrorCode.NOT_OPERATOR): "482",
    ("MODE", ErrorCode.NOT_PERMITTED): "482",
    ("MODE", ErrorCode.NO_SUCH_MEMBER): "441",
    ("MODE", ErrorCode.NOT_A_MEMBER): "442",
    ("KICK", ErrorCode.BAD_NICK): "401",
    ("INVITE", ErrorCode.NOT_OPERATOR): "482",
    ("INVITE", ErrorCode.NOT_PERMITTED): "482",
    ("INVITE", ErrorCode.NOT_A_MEMBER): "442",
    ("INVITE", ErrorCode.NO_SUCH_ROOM): "403",
    ("INVITE", ErrorCode.BAD_NICK): "401",
    ("KILL", ErrorCode.NO_SUCH_NICK): "401",
    ("KILL", ErrorCode.BAD_NICK): "401",
    ("KILL", ErrorCode.NOT_ADMIN): "481",
}


class IrcOutbox(CapturingOutbox):
    """An IRC connection's outbox: what the core delivers is IRC lines, or
    payloads its connection renders (:meth:`IrcConnection.deliver_to`)."""

    __slots__ = ()

    def deliver(self, data: bytes) -> None:
        if self.capture is None and b"\0" not in data:
            # A broadcast's lines, no labeled request under way: the plain
            # write, skipping CapturingOutbox's (this runs once per recipient).
            _plain_write(self, data)
        else:
            self._owner.protocol.deliver_to(data)


class IrcConnection(Framing):
    """One IRC client: registration (CAP, PASS or SASL PLAIN, NICK, USER),
    then IRC commands as our packets, and our packets as IRC lines."""

    __slots__ = (
        "_errors",
        "_kicks",
        "_lines",
        "_opening",
        "_sasl_data",
        "_skipping",
        "_start",
        "_tags",
        "account",
        "cap_version",
        "caps",
        "irc_name",
        "labels",
        "negotiating",
        "oper",
        "outbox",
        "password",
        "people",
        "realname",
        "sasl",
        "server",
        "username",
    )

    def __init__(self, hub: Hub) -> None:
        self.server = server_name(hub.name)
        self.caps: frozenset[str] = frozenset()
        self.people = people_of(hub)
        # One wire per set of capabilities: the connection's changes with CAP REQ.
        super().__init__(hub, wire_for(self.server, self.caps, self.people))
        self.cap_version = 0  # CAP LS 302: cap-notify is on and stays on
        self.labels: Labels | None = None  # made at the first labeled request
        self.outbox: IrcOutbox  # the connection's (make_outbox), typed as it is
        self._lines = b""  # what was read and not handled yet, from _start on
        self._start = 0
        self._skipping = False  # dropping the rest of an overlong line, up to its LF
        self.irc_name = "*"  # the nick this client knows itself by
        self.username: str | None = None
        self.realname: str | None = None  # USER's, shown by WHO and WHOIS
        self.password: str | None = None
        self.account: str | None = None  # the account SASL logged in: it decides the nick
        self._sasl_data = ""  # an AUTHENTICATE payload coming in chunks
        self.oper = False  # an IRC operator (OPER): KILL, WALLOPS
        # (room, nick key) -> (who kicked or banned, the KICK's label): the
        # record of a kick or ban of a member, until its LEFT
        self._kicks: dict[tuple[str, str], tuple[str, str | None]] | None = None
        self.negotiating = False  # between CAP LS/REQ and CAP END
        self.sasl: str | None = None  # "PLAIN" while AUTHENTICATE is under way
        self._errors = 0  # unreadable lines in a row
        self._tags: dict[str, str] = {}  # the tags of the line being handled
        # nick key -> (the IRC target, [(command, text, reply)]): what waits
        # for OPEN to give the direct conversation with that account
        self._opening: dict[str, tuple[str, list[tuple[str, str, int | None]]]] = {}

    # -- lines in --------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._skipping:  # the rest of an overlong line: dropped up to its LF
            end = data.find(b"\n")
            if end < 0:
                return
            self._skipping = False
            data = data[end + 1 :]
        self._lines = self._lines + data if self._lines else data

    def next_unit(self) -> bytes | None:
        """The next whole line, without its CRLF; an overlong partial one is
        dropped (and answered), and so is the rest of it, up to its LF: it
        is no command of its own. Lines are read from an offset: a read of
        many lines is not copied again for each."""
        buffer, start = self._lines, self._start
        end = buffer.find(b"\n", start)
        if end < 0:
            if len(buffer) - start > TAGS + LINE:
                self._lines, self._start = b"", 0
                self._skipping = True
                self._unreadable(lambda: self._numeric("417", "Input line was too long"))
            return None
        self._start = end + 1
        return buffer[start:end].rstrip(b"\r")

    def waiting(self) -> bool:
        return self._lines.find(b"\n", self._start) >= 0

    def read_done(self) -> None:
        """Keep only what is left unhandled (a part line, or lines a pause left)."""
        if self._start:
            self._lines, self._start = self._lines[self._start :], 0

    def handle(self, raw: bytes) -> None:
        self._line(raw)

    def _line(self, raw: bytes) -> None:
        """One line: every line costs its sender, whatever it is (a blank or
        broken line is no cheaper for the server to read than a command)."""
        body = raw[raw.index(b" ") + 1 :] if raw.startswith(b"@") and b" " in raw else raw
        if len(body) > LINE - 2 or len(raw) - len(body) > TAGS:
            self._unreadable(lambda: self._numeric("417", "Input line was too long"))
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            note = "That line was not UTF-8; it was dropped. Set your client to UTF-8."
            self._unreadable(lambda: self._notice(note))
            return
        if not text.strip():
            self._charge()
            return
        self._tags, _, command, params = parse(text)
        label = self._tags.get("label") if "labeled-response" in self.caps else None
        if label and len(label.encode("utf-8")) <= LABEL_BYTES:
            if self.labels is None:
                self.labels = Labels(self.server)
            self.labels.request(self.connection.outbox, label, lambda: self._command(command, params))
        else:
            self._command(command, params)

    def _command(self, command: str, params: list[str]) -> None:
        handler = _COMMANDS.get(command)
        if handler is None:
            self._numeric("421", command, "Unknown command")
            self._charge()
            return
        if self.connection.state != CONNECTED and command not in _BEFORE_LOGIN:
            self._numeric("451", "You have not registered")
            self._charge()
            return
        errors = self._errors
        try:
            handler(self, params)
        except ProtocolError as e:
            note = f"{e.message} ({e.code})"
            self._unreadable(lambda: self._notice(note))
            return
        except Exception:
            log.failure(
                "connection {id}: failed handling IRC {command}", id=self.connection.id, command=command
            )
            self._notice("The server failed on that command.")
            return
        if self._errors == errors:
            self._errors = 0  # a command not refused: errors are answered again

    def _channel(self, name: str) -> str | None:
        """The room a channel names; None, for a name that is none, after
        ``403`` (charged and answered as :meth:`_unreadable`)."""
        try:
            return self._room_name(name)
        except ProtocolError:
            self._no_channel(name)
            return None

    def _no_channel(self, name: str) -> None:
        """``403`` for a name that is no channel: a refusal (:meth:`_unreadable`)."""
        self._unreadable(lambda: self._numeric("403", name, "No such channel"))

    def _nick(self, irc: str) -> str | None:
        """Our nick for an IRC nick; None, for one that can't be ours, after
        ``401`` (charged and answered as :meth:`_unreadable`)."""
        try:
            return our_nick(irc)
        except ProtocolError:
            self._unreadable(lambda: self._numeric("401", irc, "No such nick/channel"))
            return None

    def _packet(self, packet) -> None:
        """Handle ``packet`` as if it had come over TCP: every limit applies."""
        if self.labels is not None:
            self.labels.sent(getattr(packet, "ref", None))
        self.connection.packetReceived(packet)

    def _charge(self, units: float = 1.0) -> None:
        """What packetReceived does for a packet, for a command handled here."""
        self.connection.charge(units)

    def _unreadable(self, answer) -> None:
        """A line that can't be read: charged as a refused packet (one unit
        more), and answered only the first few times in a row, so an error
        flood can't turn the server into an amplifier."""
        self._errors += 1
        if self._errors <= ERROR_ANSWERS:
            answer()
        elif self._errors == ERROR_ANSWERS + 1:
            self._notice("Too many bad lines: further errors are not answered until a good line comes.")
        self._charge(1 + REFUSAL)

    # -- lines out -------------------------------------------------------------------

    def write_line(self, *args: Any, **kwargs: Any) -> None:
        self.connection.outbox.write(line(*args, **kwargs).encode("utf-8"))

    @property
    def irc_wire(self) -> IrcWire:
        """The connection's wire, which is always an IrcWire (:func:`wire_for`)."""
        wire = self.connection.wire
        assert isinstance(wire, IrcWire), wire
        return wire

    @property
    def target(self) -> str:
        """Whom numerics address: the nick once registered, ``*`` before."""
        return self.irc_name if self.connection.session is not None else "*"

    def _numeric(self, number: str, *params: str) -> None:
        self.write_line(self.server, number, self.target, *params)

    def _notice(self, text: str) -> None:
        self.write_line(self.server, "NOTICE", self.target, text)

    def make_outbox(self, *args: Any) -> Outbox[ConnectionPolicy]:
        """One that renders what the core delivers and can hold a labeled
        request's lines (irc_labels.py)."""
        self.outbox = IrcOutbox(*args)
        return self.outbox

    def deliver_to(self, data: bytes) -> None:
        """What the core delivers, past its outbox's plain case: IRC lines,
        and payloads for this connection to render (:meth:`IrcWire.frame`),
        in their order."""
        outbox = self.outbox
        write = outbox.write
        while data:
            if data[0] == 0:
                end = 5 + int.from_bytes(data[1:5], "big")
                self.render(codec.decode_server(data[5:end]))  # a kick's record: _render
            else:
                end = data.find(b"\0")
                end = len(data) if end < 0 else end
                write(data[:end])
            data = data[end:]

    def render(self, packet: Any) -> None:
        """A packet for this connection alone: rendered with its state, or
        as the wire renders it, or not at all (NOT_SHOWN)."""
        if self.labels is not None:  # it may answer a labeled request
            ref = getattr(packet, "ref", None)
            self.labels.answer(self.connection.outbox, ref, lambda: self._render(packet))
        else:
            self._render(packet)

    def _render(self, packet: Any) -> None:
        render = _BY_CONNECTION.get(type(packet))
        if render is not None:
            render(self, packet)
        elif packet.TYPE in _BY_WIRE:
            body = json.loads(codec.encode(packet)[1:])
            if _kick_or_invite(packet.TYPE, body):
                self._moderated(packet.TYPE, body)
            else:
                self.connection.outbox.write(_BY_WIRE[packet.TYPE](self.irc_wire, body).encode("utf-8"))

    def last_words(self, final: bytes | None, why: str) -> bytes | None:
        if why == "quit":
            return f"ERROR :Closing link: {self.irc_name} (Quit)\r\n".encode()
        return final

    # -- registration ------------------------------------------------------------------

    def do_cap(self, params: list[str]) -> None:
        self._charge()
        sub = params[0].upper() if params else ""
        registered = self.connection.state == CONNECTED
        if sub == "LS":
            self.negotiating = not registered
            if len(params) > 1 and params[1].isdigit() and int(params[1]) >= 302:
                self.cap_version = 302  # cap-notify comes with 302, for good
                self.caps = self.caps | {"cap-notify"}
                self.connection.rewire(wire_for(self.server, self.caps, self.people))
            self.write_line(self.server, "CAP", self.target, "LS", " ".join(CAPABILITIES))
        elif sub == "LIST":
            self.write_line(self.server, "CAP", self.target, "LIST", " ".join(sorted(self.caps)))
        elif sub == "REQ":
            self._cap_req((params[1] if len(params) > 1 else "").split(), registered)
        elif sub == "END":
            self.negotiating = False
            self._try_login()
        elif not sub:
            self._numeric("461", "CAP", "Not enough parameters")
        else:
            self._numeric("410", sub, "Invalid CAP command")

    def _cap_req(self, wanted: list[str], registered: bool) -> None:
        """CAP REQ, before registration or after (cap-notify): all of it
        (``-cap`` removes one) or, NAK, nothing. After registration, the
        connection's broadcasts move to the wire of its new capabilities."""
        adds = {w for w in wanted if not w.startswith("-")}
        removes = {w[1:] for w in wanted if w.startswith("-")}
        refused = (
            not wanted
            or not (adds | removes) <= set(CAPABILITIES)
            or (registered and bool(adds & CAPABILITIES_BEFORE_LOGIN))
            or (self.cap_version >= 302 and "cap-notify" in removes)
        )
        if refused:
            self.write_line(self.server, "CAP", self.target, "NAK", " ".join(wanted))
            return
        self.negotiating = not registered
        self.caps = (self.caps - removes) | adds
        if "labeled-response" not in self.caps:
            self.labels = None  # its waiting labels would answer later, unlabeled requests
        self.connection.rewire(wire_for(self.server, self.caps, self.people))
        self.write_line(self.server, "CAP", self.target, "ACK", " ".join(wanted))

    def do_pass(self, params: list[str]) -> None:
        self._charge()
        if params:
            self.password = " ".join(params)  # irssi sends PASS a b without a colon

    def do_nick(self, params: list[str]) -> None:
        self._charge()
        if not params or not params[0]:
            self._numeric("431", "No nickname given")
            return
        if self.connection.state == CONNECTED:
            self._rename(params[0])
            return
        self._registration_nick(params[0])

    def _registration_nick(self, nick: str) -> None:
        """NICK before registration: a nick that can't be ours is ``432`` at
        once (``*`` too, which would otherwise look like no nick yet); after
        SASL the account decides the nick, and NICK changes nothing."""
        try:
            normalise_nick(our_nick(nick))
        except ProtocolError:
            self._numeric("432", nick, "Erroneous nickname")
            return
        if self.account is None:
            self.irc_name = nick
        self._try_login()

    def _rename(self, wanted: str) -> None:
        """NICK after registration: our NICK packet (docs/protocol.md 17.4).
        Its own nick again (case and all) is ignored, as IRC servers do;
        RENAMED comes back as ``:old!old@chat NICK new``."""
        if wanted == self.irc_name:
            return
        try:
            nick = our_nick(wanted)
        except ProtocolError:
            self._numeric("432", wanted, "Erroneous nickname")
            return
        self._packet(codec.Nick(nick, ref=f"NICK {wanted}"))

    def do_user(self, params: list[str]) -> None:
        self._charge()
        if len(params) < 4 or not params[0] or not params[3]:
            self._numeric("461", "USER", "Not enough parameters")
            return
        if self.username is not None:
            self._numeric("462", "You may not reregister")
            return
        self.username = params[0][:USERLEN]
        realname = params[3][:REALLEN]
        self.realname = realname if irc_queries.valid_realname(realname) else None
        self._try_login()

    def do_authenticate(self, params: list[str]) -> None:
        self._charge()
        if "sasl" not in self.caps or not params:
            self._numeric("904", "SASL authentication failed")
            return
        if self.sasl is None:
            if params[0].upper() != "PLAIN":
                self._numeric("908", "PLAIN", "are available SASL mechanisms")
                self._numeric("904", "SASL authentication failed")
                return
            self.sasl = "PLAIN"
            self.write_line(None, "AUTHENTICATE", "+")
            return
        payload = self._sasl_chunk(params[0])
        if payload is None:
            return
        try:
            _authz, account, secret = base64.b64decode(payload, validate=True).decode("utf-8").split("\0")
        except (ValueError, UnicodeDecodeError):
            self._numeric("904", "SASL authentication failed")
            return
        self._check_account(account, secret)

    def _sasl_chunk(self, chunk: str) -> str | None:
        """The whole payload once its last chunk has come (IRCv3 SASL: a
        chunk of exactly 400 bytes means more follows, ``+`` ends one that
        is an exact multiple); None meanwhile, and after a failure."""
        if chunk == "*":
            self._sasl_reset()
            self._numeric("906", "SASL authentication aborted")
            return None
        if len(chunk) > SASL_CHUNK:
            self._sasl_reset()
            self._numeric("905", "SASL message too long")
            return None
        data = self._sasl_data + ("" if chunk == "+" else chunk)
        if len(data) > SASL_LIMIT:
            self._sasl_reset()
            self._numeric("904", "SASL authentication failed: the message is too long")
            return None
        if len(chunk) == SASL_CHUNK:
            self._sasl_data = data
            return None
        self._sasl_reset()
        return data

    def _sasl_reset(self) -> None:
        self.sasl, self._sasl_data = None, ""

    def _check_account(self, account: str, secret: str) -> None:
        """SASL's answer needs the password checked now, before CAP END."""
        accounts = self.connection.hub.accounts
        if accounts is None:
            self._numeric("904", "SASL authentication failed: this server has no accounts")
            return
        nick = our_nick(account)
        d = accounts.authenticate(nick_key(nick), secret, self.host, 2)
        d.addCallbacks(self._sasl_ok, self._sasl_failed, callbackArgs=(account, secret))
        self.connection.checking_password(d)

    def _sasl_ok(self, record, account: str, secret: str) -> None:
        self.irc_name, self.password, self.account = account, secret, account
        self._numeric("900", user(record.nick), record.nick, f"You are now logged in as {record.nick}")
        self._numeric("903", "SASL authentication successful")

    def _sasl_failed(self, failure: Failure) -> None:
        failure.trap(ProtocolError, CancelledError)  # anything else goes on down the errbacks
        if isinstance(failure.value, ProtocolError):  # else cancelled: gone while the password was checked
            self._numeric("904", f"SASL authentication failed: {failure.value.message}")

    def _try_login(self) -> None:
        if self.connection.state == CONNECTED or self.negotiating:
            return
        if self.irc_name == "*" or self.username is None:
            return
        try:
            nick = our_nick(self.irc_name)
        except ProtocolError:
            self._numeric("432", self.irc_name, "Erroneous nickname")
            return
        self._packet(codec.Login(nick, 2, password=self.password, ref="LOGIN"))

    # -- commands ----------------------------------------------------------------------

    def do_ping(self, params: list[str]) -> None:
        self._charge()
        if not params or not params[-1]:
            self._numeric("409", "No origin specified")
            return
        self.write_line(self.server, "PONG", self.server, params[-1])

    def do_pong(self, params: list[str]) -> None:
        self._packet(codec.Pong(params[-1] if params else None))

    def do_quit(self, params: list[str]) -> None:
        self._packet(codec.Quit(params[-1] if params else None))

    def do_join(self, params: list[str]) -> None:
        if not params:
            self._charge()
            self._numeric("461", "JOIN", "Not enough parameters")
            return
        if params[0] == "0":
            for room in list(logged_in(self.connection).rooms.values()):
                if participants(room.name) is not None:
                    continue  # conversations are no channels: JOIN 0 leaves them be
                self._packet(codec.Part(room.name, None, ref=f"PART {channel(room.name)}"))
            return
        keys = params[1].split(",") if len(params) > 1 else []  # the channels' keys, in their order
        for index, name in enumerate(params[0].split(",")):
            key = (keys[index] or None) if index < len(keys) else None
            if name.startswith("&") and len(name) > 1:
                self._open(name)
                continue
            joined = self._channel(name)
            if joined is not None:
                self._packet(codec.Join(joined, ref=f"JOIN {name}", key=key))

    def _open(self, name: str) -> None:
        """JOIN &alice+bob+carol: OPEN of the conversation with them (a
        short ``&~`` name: of one the session is in)."""
        try:
            if name.startswith(SHORT):
                names = participants(self._room_name(name)) or []
            else:
                names = [our_nick(irc) for irc in name[1:].split("+")]
        except ProtocolError:
            names = []
        if not names:
            self._no_channel(name)
            return
        self._packet(codec.Open(names, ref=f"JOIN {name}"))

    def do_part(self, params: list[str]) -> None:
        if not params:
            self._charge()
            self._numeric("461", "PART", "Not enough parameters")
            return
        reason = params[1] if len(params) > 1 else None
        for name in params[0].split(","):
            room = self._channel(name)
            if room is not None:
                self._packet(codec.Part(room, reason, ref=f"PART {name}"))

    def do_privmsg(self, params: list[str], command: str = "PRIVMSG") -> None:
        if len(params) < 2 or not params[1]:
            self._charge()
            if command == "PRIVMSG" and params and params[0]:
                self._numeric("412", "No text to send")
            elif command == "PRIVMSG":
                self._numeric("411", f"No recipient given ({command})")
            return
        text = params[1]
        if text.startswith("\x01"):
            if not text.startswith("\x01ACTION "):
                self._charge()  # other CTCP: nothing to carry it to
                return
            text = ACTION_PREFIX + text[8:].rstrip("\x01")
        reply = seq_of(self._tags.get("+draft/reply"))
        for target in params[0].split(","):
            ref = f"{command} {target}"
            if target[:1] in "#&":
                room = self._channel(target)
                if room is not None:
                    self._packet(codec.Say(text, ref, room, reply, _notice(command)))
            else:
                self._to_nick(command, target, text, reply)

    def _to_nick(self, command: str, target: str, text: str, reply: int | None) -> None:
        """PRIVMSG to a nick: from an account to an account, a message in
        their direct conversation (OPENed first if it isn't open); else a
        WHISPER (17.8)."""
        ref = f"{command} {target}"
        try:
            nick = our_nick(target)
        except ProtocolError:
            if command == "PRIVMSG":
                self._nick(target)  # 401, charged as a refusal
            else:
                self._charge(1 + REFUSAL)  # a NOTICE is never answered
            return
        session = logged_in(self.connection)
        other = self.connection.hub.session_for(nick)
        if command == "PRIVMSG" and other is not None and away_of(other) is not None:
            self._numeric("301", irc_nick(other.nick), away_of(other) or "Away")
        key = nick_key(nick)
        if session.account and key != session.key and (other is None or other.account):
            room = self._conversation(nick)
            if room is not None:
                self._packet(codec.Say(text, ref, room, reply, _notice(command)))
                return
            waiting = self._opening.get(key)
            if waiting is None:
                self._opening[key] = (target, [(command, text, reply)])
                self._packet(codec.Open([nick], ref=f"OPEN {target}"))
            elif len(waiting[1]) < OPENING_QUEUE:
                self._charge()
                waiting[1].append((command, text, reply))
            else:
                self._charge()
                if command == "PRIVMSG":
                    self._numeric("404", target, "Still opening the conversation: try again")
            return
        self._packet(codec.Whisper(nick, text, ref, _notice(command)))

    def _opened(self, room: str) -> None:
        """A conversation of two came (OPEN's answer, or the other opened
        it): what waited for it is said in it."""
        session = logged_in(self.connection)
        for name in participants(room) or []:
            if nick_key(name) == session.key:
                continue
            target, texts = self._opening.pop(nick_key(name), (None, []))
            for command, text, reply in texts:
                self._packet(codec.Say(text, f"{command} {target}", room, reply, _notice(command)))

    def _not_opened(self, target: str, error: codec.Error) -> None:
        """OPEN refused: a nick that is no account gets its WHISPERs; any
        other refusal is told once."""
        try:
            key = nick_key(our_nick(target))
        except ProtocolError:
            return
        _, texts = self._opening.pop(key, (target, []))
        if error.code in (ErrorCode.NO_SUCH_ACCOUNT, ErrorCode.NOT_REGISTERED, ErrorCode.BAD_NICK):
            for command, text, _reply in texts:
                self._packet(codec.Whisper(our_nick(target), text, f"{command} {target}", _notice(command)))
        elif any(command == "PRIVMSG" for command, _, _ in texts):
            self._numeric("404", target, f"{error.message} ({error.code})")

    def do_tagmsg(self, params: list[str]) -> None:
        """TAGMSG: +typing is TYPING; +draft/react (or +draft/unreact) with
        +draft/reply is REACT. Other tags are denied (CLIENTTAGDENY) and
        dropped."""
        if not params:
            self._charge()
            self._numeric("461", "TAGMSG", "Not enough parameters")
            return
        tags, target = self._tags, params[0]
        room = self._target_room(target)
        seq = seq_of(tags.get("+draft/reply"))
        sent = False
        if room is not None and seq is not None:
            for tag, on in (("+draft/react", True), ("+draft/unreact", False)):
                if tag in tags:
                    self._packet(codec.React(room, seq, tags[tag], on, ref=f"TAGMSG {target}"))
                    sent = True
        typing = TYPING.get(tags.get("+typing", ""))
        if room is not None and typing is not None:
            self._packet(codec.Typing(room, typing, ref=f"TYPING {target}"))
            sent = True
        if not sent:
            self._charge()  # nothing we carry: dropped

    def do_redact(self, params: list[str]) -> None:
        """draft/message-redaction's REDACT target msgid [:reason] is DELETE
        (the reason is not kept)."""
        if len(params) < 2:
            self._charge()
            self._numeric("461", "REDACT", "Not enough parameters")
            return
        target, msgid = params[0], params[1]
        room, seq = self._target_room(target), seq_of(msgid)
        if room is None:
            self._charge()
            self.write_line(
                self.server, "FAIL", "REDACT", "INVALID_TARGET", target, "No such channel or query"
            )
        elif seq is None:
            self._charge()
            self.write_line(self.server, "FAIL", "REDACT", "UNKNOWN_MSGID", target, msgid, "No such message")
        else:
            self._packet(codec.Delete(room, seq, ref=f"REDACT {target} {msgid}"))

    def do_notice(self, params: list[str]) -> None:
        self.do_privmsg(params, "NOTICE")

    def do_topic(self, params: list[str]) -> None:
        if not params:
            self._charge()
            self._numeric("461", "TOPIC", "Not enough parameters")
            return
        if len(params) > 1:
            room = self._channel(params[0])
            if room is not None:
                self._packet(codec.SetTopic(room, params[1], ref=f"TOPIC {params[0]}"))
            return
        self._charge()
        room = self._room(params[0])
        if room is not None:
            self._topic_numerics(room)

    def do_names(self, params: list[str]) -> None:
        """NAMES #a[,#b]: each channel once, however often it is named;
        charged one unit and one more per ROWS_PER_UNIT members read, as WHO
        is. A bare NAMES lists nothing (everyone is +i): ``366 me *``."""
        names = list(dict.fromkeys(params[0].split(","))) if params and params[0] else []
        rows = 0
        seen: set[str] = set()
        for name in names:
            room = self._room(name, quiet=True)
            if room is not None and room.key not in seen:
                seen.add(room.key)
                rows += len(room.members)
                self._names(room)
            elif room is None:
                self._numeric("366", name, "End of /NAMES list")
        if not names:
            self._numeric("366", "*", "End of /NAMES list")
        self._charge(1 + rows / ROWS_PER_UNIT)

    def do_who(self, params: list[str]) -> None:
        """WHO #chan: its members; WHO nick: that nick; WHO mask (``*``,
        ``coolni*``): the nicks it matches among those sharing a channel
        with the asker, and the asker (everyone is +i here). Charged by the
        length of the answer."""
        mask = params[0] if params and params[0] else "*"
        room = None
        sessions: list[Session] = []
        read = 0
        if mask[:1] in "#&":
            room = self._room(mask, quiet=True)
            shown = room is not None and not self._hidden(room)  # +s: its members are its business
            sessions = list(room.members.values()) if room is not None and shown else []
            read = len(sessions)
        elif _MASK_SPECIAL.search(mask):
            sessions, read = self._visible(mask)
        else:
            session = self._session(mask)
            sessions = [session] if session is not None else []
            read = len(sessions)
        self._charge(1 + read / WHO_LINES_PER_UNIT)
        where = channel(room.name) if room is not None else "*"
        for session in sessions:
            irc = irc_nick(session.nick)
            username, realname = identity(session, self.people)
            flags = ("H" if away_of(session) is None else "G") + ("*" if is_oper(session) else "")
            if room is not None:
                flags += member_prefix(room.rules, session, "multi-prefix" in self.caps)  # as NAMES shows it
            self._numeric("352", where, username, HOST, self.server, irc, flags, f"0 {realname}")
        self._numeric("315", mask, "End of /WHO list")

    def _visible(self, mask: str) -> tuple[list[Session], int]:
        """The sessions a WHO mask matches: the asker's, and those sharing a
        channel with it (never a conversation's); and how many it read (what
        the asker is charged for, matches or not)."""
        me = logged_in(self.connection)
        pattern = mask_pattern(mask)
        found: dict[int, Session] = {}
        read = 0
        for room in [None, *me.rooms.values()]:
            if room is not None and participants(room.name) is not None:
                continue
            members = [me] if room is None else room.members.values()
            read += len(members)
            for session in members:
                if session.id not in found and pattern.fullmatch(irc_nick(session.nick)):
                    found[session.id] = session
        return list(found.values()), read

    def do_whois(self, params: list[str]) -> None:
        self._charge()
        if not params or not params[-1]:
            self._numeric("431", "No nickname given")
            return
        target = params[-1]
        session = self._session(target)
        if session is None:
            self._numeric("401", target, "No such nick")
        else:
            irc = irc_nick(session.nick)
            username, realname = identity(session, self.people)
            self._numeric("311", irc, username, HOST, "*", realname)
            if away_of(session) is not None:
                self._numeric("301", irc, away_of(session) or "Away")
            # Conversations are nobody else's business: channels only.
            rooms = " ".join(
                member_prefix(room.rules, session, "multi-prefix" in self.caps) + channel(room.name)
                for room in session.rooms.values()
                if participants(room.name) is None and not self._hidden(room)  # +s
            )
            if rooms:
                self._numeric("319", irc, rooms)
            self._numeric("312", irc, self.server, "chatproto")
            if is_oper(session):
                self._numeric("313", irc, "is an IRC operator")
            if session.account:
                self._numeric("330", irc, irc, "is logged in as")
        self._numeric("318", target, "End of /WHOIS list")

    def do_list(self, params: list[str]) -> None:
        """LIST, or LIST #a,#b: the core's list (which leaves out what the
        asker may not see), of those channels only."""
        wanted = params[0] if params and params[0][:1] in "#&" else ""
        self._packet(codec.ListRooms(ref=f"LIST {wanted}".rstrip()))

    def do_mode(self, params: list[str]) -> None:
        self._charge()
        if not params:
            self._numeric("461", "MODE", "Not enough parameters")
            return
        target = params[0]
        if target[:1] not in "#&":
            if nick_key(target) != nick_key(self.irc_name):
                self._numeric("502", "Can't change mode for other users")
            elif len(params) == 1 or not params[1]:
                self._numeric("221", "+io" if self.oper else "+i")
            elif set(params[1]) <= set("+-i"):
                # Everyone is +i here already; clients wait for this answer.
                self.write_line(user(logged_in(self.connection).nick), "MODE", self.irc_name, params[1])
            else:
                self._numeric("501", "Unknown MODE flag: only +i")
            return
        room = self._room(target, quiet=True)
        asking = len(params) == 1 or (params[1] in ("b", "+b") and len(params) == 2)
        if asking and room is None:
            self._show_kept_modes(target, len(params) == 1)
        elif asking:
            member = logged_in(self.connection).rooms.get(room.key) is room
            self._show_modes(target, room.rules, len(params) == 1, member, room.made)
        elif room is None:
            self._numeric("403", target, "No such channel")
        else:
            self._mode_changes(room.name, params[1], params[2:])

    def _show_modes(
        self, target: str, rules: RoomRules, modes: bool, member: bool = False, made: float | None = None
    ) -> None:
        """``324`` and ``329`` (``modes``), or the ban list. The key is shown
        to members only (``*`` in its place to others, so that the limit
        after it keeps its place); ``329`` is the time this server made the
        room (``made``; none for a room that is only stored)."""
        if modes:
            flags = "".join(letter for name, letter in _FLAGS if getattr(rules, name))
            params = []
            if rules.key:
                flags += "k"
                params.append(rules.key if member else "*")
            if rules.limit:
                flags += "l"
                params.append(str(rules.limit))
            self._numeric("324", target, "+n" + flags, *params)
            if made is not None:
                self._numeric("329", target, str(int(made)))
            return
        for ban in rules.bans.values():
            self._numeric("367", target, irc_nick(ban.target) + "!*@*", irc_nick(ban.by), str(int(ban.ts)))
        self._numeric("368", target, "End of channel ban list")

    def _show_kept_modes(self, target: str, modes: bool) -> None:
        """MODE of a room nobody is in: one that keeps its rules while empty
        (docs/protocol.md 14.2) shows them, as a JOIN of it is judged by
        them; any other is no channel."""
        hub = self.connection.hub
        try:
            key = hub.directory.key_of(room_of(target))
        except ProtocolError:
            self._numeric("403", target, "No such channel")
            return

        def show(rules: RoomRules | None) -> None:
            if self.connection.state == CLOSING:
                return
            if rules is None:
                self._numeric("403", target, "No such channel")
            else:
                self._show_modes(target, rules, modes)

        def failed(failure: Failure) -> None:
            log.failure("could not read the rules of {room}", failure, room=target)
            if self.connection.state != CLOSING:
                self._numeric("403", target, "No such channel")

        hub.keeper.kept(key).addCallbacks(show, failed)

    def _mode_changes(self, room: str, modes: str, args: list[str]) -> None:
        """A MODE string, each change the MODERATE it means: ``o``, ``v``
        and ``b`` with a nick each one of their own, in order; ``i``, ``t``,
        ``m``, ``s``, ``k`` and ``l`` all in one ``mode`` after them (one
        record, one MODE line back). ``+n`` is always so; ``-n`` can't be
        had (a NOTICE says why); anything else is ``472``. The whole string
        is read before anything is sent: a ``461`` or ``696`` in it changes
        nothing of it."""
        sign, args = "+", list(args)
        chan = channel(room)
        ref = f"MODE {chan}"
        fields: dict[str, Any] = {}
        packets: list[codec.Moderate] = []
        for letter in modes:
            if letter in "+-":
                sign = letter
            elif letter in "ovb":
                if not args:
                    self._numeric("461", "MODE", "Not enough parameters")
                    return
                given = args.pop(0)
                nick = self._mode_target(room, sign + letter, given)
                if nick is not None:
                    op = _MODE_OPS[sign + letter]
                    packets.append(
                        codec.Moderate(room, op, nick, None, ref=f"{ref} {irc_nick(nick)} {sign}{letter}")
                    )
            elif letter in _FLAG_FIELDS:
                fields[_FLAG_FIELDS[letter]] = sign == "+"
            elif letter == "k":
                key = args.pop(0) if args else None  # -k takes the key too, as clients send it
                if sign == "-":
                    fields["key"] = ""
                elif not key:
                    self._numeric("461", "MODE", "Not enough parameters")
                    return
                elif self._bad_mode_param(chan, "k", key, check_key):
                    return
                else:
                    fields["key"] = key
            elif letter == "l":
                if sign == "-":
                    fields["limit"] = 0
                elif not args:
                    self._numeric("461", "MODE", "Not enough parameters")
                    return
                else:
                    given = args.pop(0)
                    limit = int(given) if given.isascii() and given.isdigit() else 0
                    if self._bad_mode_param(chan, "l", given, check_limit, limit or -1):
                        return
                    fields["limit"] = limit
            elif letter == "n":
                if sign == "-":
                    self._notice(f"{chan} is always +n: nobody outside a channel can speak in it")
            else:
                self._numeric("472", letter, "is an unknown mode char to me")
        if fields:
            packets.append(codec.Moderate(room, "mode", ref=ref, **fields))
        for packet in packets:
            self._packet(packet)

    def _mode_target(self, room: str, change: str, given: str) -> str | None:
        """The nick a ``+o``/``+v`` (a member) or ``-o``/``-v``/``±b`` names;
        None, and ``401`` or ``441`` said, for a nick that can't be it."""
        nick = given.split("!", 1)[0]
        try:
            ours = our_nick(nick)
        except ProtocolError:
            self._numeric("401", nick, "No such nick/channel")
            return None
        if change in ("+o", "+v"):
            session = self._session(nick)
            if session is None:
                self._numeric("401", nick, "No such nick/channel")
                return None
            if session.rooms.get(room_key(room)) is None:
                self._numeric("441", irc_nick(session.nick), channel(room), "They aren't on that channel")
                return None
        return ours

    def _bad_mode_param(self, chan: str, letter: str, given: str, check: Callable, *value: Any) -> bool:
        """``696`` for a key or limit the room can't have (docs/protocol.md 15.5)."""
        try:
            check(*(value or (given,)))
        except ProtocolError as e:
            self._numeric("696", chan, letter, given, e.message)
            return True
        return False

    def _hidden(self, room) -> bool:
        """A secret room (+s) the asker is not in: to a non-admin, NAMES, WHO
        and WHOIS show nothing of it, as LIST does not."""
        asker = logged_in(self.connection)
        return room.rules.secret and not asker.admin and asker.rooms.get(room.key) is not room

    def _mode_refused(self, target: str, error: codec.Error) -> None:
        """A refused MODE change: ``441 nick #chan`` for a nick that is no
        member, nothing for a ``-o``/``-v`` of a member without that status
        (already so, as ergo answers it), a NOTICE for a ``-b`` of a nick
        not banned (no numeric says that), else the numeric of its code."""
        chan, nick, change = [*target.split(" "), "", ""][:3]
        number = NUMERICS.get(("MODE", error.code))
        if number == "441" and change in ("-o", "-v"):
            room = self._room(chan, quiet=True)
            if room is not None and self._in_room(room.name, our_nick(nick)):
                return
        if number == "441" and change == "-b":
            self._notice(f"{error.message} ({error.code})")
        elif number == "441" and nick:
            self._numeric("441", nick, chan, "They aren't on that channel")
        elif number is not None:
            self._numeric(number, chan, error.message)
        else:
            self._notice(f"{error.message} ({error.code})")

    def do_kick(self, params: list[str]) -> None:
        if len(params) < 2:
            self._charge()
            self._numeric("461", "KICK", "Not enough parameters")
            return
        reason = params[2] if len(params) > 2 else None
        room = self._channel(params[0])
        nick = self._nick(params[1]) if room is not None else None
        if room is not None and nick is not None:
            ref = f"KICK {params[0]} {params[1]}"
            self._packet(codec.Moderate(room, "kick", nick, reason or None, ref=ref))

    def do_invite(self, params: list[str]) -> None:
        """INVITE nick #chan: MODERATE invite (only an operator may invite,
        invite-only or not). The gateway answers what IRC checks before:
        ``401`` (nobody here has the nick), ``403``, ``442`` (you are not
        in it), ``443`` (they are); then the core's refusals (``482``)."""
        if len(params) < 2:
            self._charge()
            self._numeric("461", "INVITE", "Not enough parameters")
            return
        target, name = params[0], params[1]
        other = self._session(target)
        room = self._room(name, quiet=True) if other is not None else None
        me = logged_in(self.connection)
        if other is None:
            self._numeric("401", target, "No such nick/channel")
        elif room is None:
            self._numeric("403", name, "No such channel")
        elif me.id not in room.members:
            self._numeric("442", name, "You're not on that channel")
        elif other.id in room.members:
            self._numeric("443", irc_nick(other.nick), name, "is already on channel")
        else:
            self._packet(codec.Moderate(room.name, "invite", other.nick, ref=f"INVITE {name} {target}"))
            return
        self._charge()

    def do_away(self, params: list[str]) -> None:
        """AWAY :message is AWAY away; a bare AWAY sets the session back.
        DONE is 306 or 305 (:meth:`_done`)."""
        message = params[0] if params else ""
        if message:
            self._packet(codec.Away(True, message, ref="AWAY"))
        else:
            self._packet(codec.Away(False, ref="AWAY"))

    def do_oper(self, params: list[str]) -> None:
        """OPER name password: a server admin (WELCOME ``admin``, logged in
        with its password by SASL or PASS) becomes an IRC operator when it
        names its own account and gives the password it logged in with
        (spaced, as PASS: ``OPER name a b`` is ``a b``):
        ``381`` and user mode ``+o``. Anyone else ``491``; a wrong password
        ``464``."""
        self._charge()
        if len(params) < 2:
            self._numeric("461", "OPER", "Not enough parameters")
            return
        session = logged_in(self.connection)
        try:
            mine = nick_key(our_nick(params[0])) == session.key
        except ProtocolError:
            mine = False
        if not (mine and session.admin and self.password is not None):
            self._numeric("491", "No O-lines for your host")
        elif not hmac.compare_digest(" ".join(params[1:]).encode("utf-8"), self.password.encode("utf-8")):
            self._numeric("464", "Password incorrect")
        elif not self.oper:
            self.oper = True
            self._numeric("381", "You are now an IRC operator")
            self.write_line(user(session.nick), "MODE", self.irc_name, "+o")

    def do_kill(self, params: list[str]) -> None:
        """KILL nick :reason from an IRC operator: ADMIN kick."""
        if not self.oper:
            self._charge()
            self._numeric("481", "Permission Denied- You're not an IRC operator")
            return
        if not params:
            self._charge()
            self._numeric("461", "KILL", "Not enough parameters")
            return
        reason = params[1] if len(params) > 1 and params[1] else None
        try:
            target = our_nick(params[0])
        except ProtocolError:
            self._charge()
            self._numeric("401", params[0], "No such nick/channel")
            return
        self._packet(codec.AdminRequest("kick", target=target, reason=reason, ref=f"KILL {params[0]}"))

    def do_wallops(self, params: list[str]) -> None:
        """WALLOPS :text from an IRC operator, to every IRC operator on this
        server (on this node of a cluster)."""
        self._charge()
        if not self.oper:
            self._numeric("481", "Permission Denied- You're not an IRC operator")
            return
        if not params or not params[-1]:
            self._numeric("461", "WALLOPS", "Not enough parameters")
            return
        me = logged_in(self.connection)
        data = line(user(me.nick), "WALLOPS", params[-1]).encode("utf-8")
        for session in self.connection.hub.sessions:
            for device in session.devices:
                other = irc_of(device)
                if other is not None and other.oper:
                    device.outbox.deliver(data)

    def do_chathistory(self, params: list[str]) -> None:
        if len(params) < 4 or params[0].upper() not in ("LATEST", "BEFORE", "AFTER"):
            self._charge()
            sub = params[0].upper() if params else "*"
            self.write_line(
                self.server, "FAIL", "CHATHISTORY", "INVALID_PARAMS", sub, "LATEST, BEFORE or AFTER"
            )
            return
        sub, target, reference, count = params[0].upper(), params[1], params[2], params[3]
        try:
            limit = int(count)
            seq = None if reference == "*" else int(reference.removeprefix("msgid="))
            if not (0 < limit < codec.INT_MAX and (seq is None or 0 <= seq < codec.INT_MAX)):
                raise ValueError
        except ValueError:
            self._charge()
            self.write_line(
                self.server, "FAIL", "CHATHISTORY", "INVALID_PARAMS", sub, "msgid=SEQ or *, and a count"
            )
            return
        # LATEST with a msgid means the newest messages after it.
        after = sub == "AFTER" or (sub == "LATEST" and seq is not None)
        before = None if after else seq
        ref = f"CHATHISTORY {sub} {target}"
        room = self._target_room(target)
        if room is None:
            self._charge()
            self.write_line(
                self.server, "FAIL", "CHATHISTORY", "INVALID_TARGET", sub, target, "No such query"
            )
            return
        self._packet(codec.HistoryRequest(before, seq if after else None, limit, ref, room))

    # -- what the core sends ------------------------------------------------------------

    def _welcome(self, welcome: codec.Welcome) -> None:
        self.irc_name = me = irc_nick(welcome.nick)
        if self.realname is not None and self.connection.session is not None:
            self.people.set_realname(self.connection.session, self.realname)
        self.write_line(self.server, "001", me, f"Welcome to {self.server}, {me}")
        self.write_line(
            self.server, "002", me, f"Your host is {self.server}, running chatproto {__version__}"
        )
        self.write_line(self.server, "003", me, "This server speaks chat protocol 2 and IRC")
        self.write_line(
            self.server, "004", me, self.server, f"chatproto-{__version__}", "io", "biklmnostv", "bklov"
        )
        self.isupport()
        self.motd()

    def isupport(self) -> None:
        """``005``: what this server supports, at registration and for ``VERSION``."""
        limits = self.connection.hub.limits
        tokens = [
            "CHANTYPES=#&",
            f"CHANNELLEN={limits.room_name_length + 1}",
            "NICKLEN=200",
            f"TOPICLEN={limits.topic_length}",
            "CASEMAPPING=ascii",
            "PREFIX=(ov)@+",
            "CHANMODES=b,k,l,imnst",
            f"CHANLIMIT=#:{limits.rooms_per_connection}",
            f"NETWORK={self.server}",
            f"CHATHISTORY={limits.history_page}",
            "MSGREFTYPES=msgid",
            CLIENTTAGDENY,
            f"NAMELEN={NAMELEN}",  # real names (SETNAME)
        ]
        self._numeric("005", *tokens, "are supported by this server")

    def motd(self) -> None:
        """The message of the day (``375``, ``372`` per line, ``376``), or ``422``."""
        text = self.connection.hub.assembler.motd
        if not text:
            self._numeric("422", "MOTD File is missing")
            return
        self._numeric("375", f"- {self.server} Message of the day -")
        for piece in text.splitlines() or [""]:
            self._numeric("372", f"- {piece}")
        self._numeric("376", "End of /MOTD command")

    def _room_state(self, state: codec.RoomState) -> None:
        name = channel(state.room)
        session = self.connection.session
        assert session is not None, "a ROOM comes only to a logged-in connection"
        if is_query(state.room):
            # A conversation of two is a private query: nothing to JOIN.
            self._opened(state.room)
            other = query_target(state.room, session.nick)
            ref = state.ref or ""
            if ref.startswith("JOIN "):
                self._notice(f"{ref[5:]} is your conversation with {other}: /msg {other}")
            return
        self.connection.outbox.write(self.irc_wire.join_line(session.nick, name).encode("utf-8"))
        room = self.connection.hub.room_for(state.room)
        if room is not None:
            self._topic_numerics(room, asked=False)
            self._names(room)

    def _topic_numerics(self, room, asked: bool = True) -> None:
        """``332`` and ``333``; no topic is ``331`` to TOPIC, and nothing on
        joining (RFC 2812, as servers do)."""
        name = channel(room.name)
        if room.topic_text:
            self._numeric("332", name, room.topic_text)
            self._numeric("333", name, irc_nick(room.topic.by), str(int(room.topic.ts)))
        elif asked:
            self._numeric("331", name, "No topic is set")

    def _names(self, room) -> None:
        """``353`` and ``366``; of a secret channel, to a non-member who is no
        admin, ``366`` alone (as of a channel that does not exist)."""
        name = channel(room.name)
        if self._hidden(room):
            self._numeric("366", name, "End of /NAMES list")
            return
        multi = "multi-prefix" in self.caps
        names = [
            irc_queries.names_entry(s.nick, member_prefix(room.rules, s, multi), self.caps)
            for s in room.members.values()
        ]
        symbol = "@" if room.rules.secret else "="  # RFC 2812: @ for a secret channel
        room_left = LINE - byte_length(line(self.server, "353", self.irc_name, symbol, name, ""))
        for chunk in pack_names(names, room_left):
            self._numeric("353", symbol, name, chunk)
        self._numeric("366", name, "End of /NAMES list")

    def _error(self, error: codec.Error) -> None:
        command, _, target = (error.ref or "").partition(" ")
        if command == "NOTICE" or command == "TYPING":
            return  # never an automatic reply to a NOTICE; TYPING is never answered
        if command == "OPEN":
            self._not_opened(target, error)
            return
        if command == "REDACT":
            self._redact_failed(target, error)
            return
        if command == "MODE":
            self._mode_refused(target, error)
            return
        if command == "NICK":
            self._nick_refused(target, error)
            return
        number = NUMERICS.get((command, error.code))
        if command == "CHATHISTORY":
            sub, _, target = target.partition(" ")
            self.write_line(self.server, "FAIL", "CHATHISTORY", "INVALID_TARGET", sub, target, error.message)
        elif command in ("KICK", "INVITE") and number is not None:
            self._refused_on(command, number, target, error)
        elif command == "KILL" and number == "481":
            self.oper = False  # no admin any more (its account was deleted): no operator either
            self._numeric("481", "Permission Denied- You're not an IRC operator")
        elif command == "KILL" and number == "401":
            self._numeric("401", target, "No such nick/channel")
        elif number == "433":
            self._numeric(number, self.irc_name, f"{error.message}: use SASL or PASS for it")
        elif number is not None and command == "LOGIN":
            self._numeric(number, error.message)
        elif number is not None:
            self._numeric(number, target, error.message)
        else:
            self._notice(f"{error.message} ({error.code})")

    def _refused_on(self, command: str, number: str, target: str, error: codec.Error) -> None:
        """KICK and INVITE refused: their numerics name the channel and the
        nick as IRC has them (``441 me nick #chan``); a nick nobody has is
        ``401``."""
        name, _, nick = target.partition(" ")
        if number == "441" and self._session(nick) is None:
            number = "401"
        if number == "401":
            self._numeric("401", nick, "No such nick/channel")
        elif number == "441":
            self._numeric("441", nick, name, "They aren't on that channel")
        else:
            self._numeric(number, name, error.message)

    def _nick_refused(self, wanted: str, error: codec.Error) -> None:
        """A refused NICK after registration, as IRC servers answer it:
        432 bad_nick and a server ban, 433 nick_taken and nick_registered,
        435 a ban in one of our channels, 438 rate_limited, and for an
        account (whose nick is its name) FAIL NICK (17.4)."""
        code = error.code
        if code == ErrorCode.BAD_NICK:
            self._numeric("432", wanted, "Erroneous nickname")
        elif code in (ErrorCode.NICK_TAKEN, ErrorCode.NICK_REGISTERED):
            self._numeric("433", wanted, f"Nickname is already in use: {error.message}")
        elif code == ErrorCode.BANNED:
            banned_in = self._banned_in(wanted)
            if banned_in is None:
                self._numeric("432", wanted, f"Erroneous nickname: {error.message}")
            else:
                self._numeric("435", wanted, banned_in, "Cannot change nickname while banned on channel")
        elif code == ErrorCode.RATE_LIMITED:
            self._numeric("438", wanted, "Nick change too fast. Please wait")
        elif code == ErrorCode.NOT_PERMITTED:
            self.write_line(self.server, "FAIL", "NICK", "ACCOUNT_NICK", wanted, error.message)
        else:
            self._notice(f"{error.message} ({error.code})")

    def _banned_in(self, wanted: str) -> str | None:
        """The first of our channels whose bans name ``wanted``, if any."""
        session = self.connection.session
        try:
            key = nick_key(our_nick(wanted))
        except ProtocolError:
            return None
        if session is None:
            return None
        now = self.connection.hub.clock.seconds()
        for room in session.rooms.values():
            ban = room.rules.bans.get(key)
            if ban is not None and ban.active(now):
                return channel(room.name)
        return None

    def _renamed(self, renamed: codec.Renamed) -> None:
        """RENAMED as ``:old!old@chat NICK new``, once (it comes once per
        session); our own, to us too, and we are known by the new nick."""
        try:
            ours = nick_key(our_nick(self.irc_name)) == nick_key(renamed.old)
        except ProtocolError:
            ours = False
        if ours:
            self.irc_name = irc_nick(renamed.nick)
        if renamed.old != renamed.nick:
            self.write_line(user(renamed.old), "NICK", irc_nick(renamed.nick))

    def _redact_failed(self, target: str, error: codec.Error) -> None:
        where, _, msgid = target.partition(" ")
        code = _REDACT_FAILS.get(error.code)
        if code is None:
            self._notice(f"{error.message} ({error.code})")
        elif code == "INVALID_TARGET":
            self.write_line(self.server, "FAIL", "REDACT", code, where, error.message)
        else:
            self.write_line(self.server, "FAIL", "REDACT", code, where, msgid, error.message)

    def _done(self, done: codec.Done) -> None:
        """AWAY's answer: 306 (away) or 305 (back); nothing else IRC sends gets DONE."""
        if done.op == "away":
            self._numeric("306", "You have been marked as being away")
        elif done.op == "back":
            self._numeric("305", "You are no longer marked as being away")

    def _status(self, status: codec.Status) -> None:
        """STATUS as away-notify's AWAY: once per nick, though it comes once
        per shared room (for the first of this session's rooms it is in)."""
        session = self.connection.session
        if not self.irc_wire.away_notify or session is None:
            return
        if nick_key(status.nick) == session.key:
            return  # our own: 305/306 said it
        other = self.connection.hub.session_for(status.nick)
        first = status.room
        if other is not None:
            first = next((r.name for r in session.rooms.values() if other.id in r.members), first)
        if first == status.room:
            self.connection.outbox.write(away_line(status.nick, status.away).encode("utf-8"))

    def _typing(self, notice: codec.TypingNotice) -> None:
        """TYPING as TAGMSG +typing=active or done, to message-tags clients;
        never our own."""
        session = self.connection.session
        if not self.irc_wire.tags or session is None or nick_key(notice.nick) == session.key:
            return
        tags = self.irc_wire.with_account({"+typing": "active" if notice.typing else "done"}, notice.nick)
        self.write_line(user(notice.nick), "TAGMSG", target_of(notice.room, notice.nick), tags=tags)

    def _history(self, page: codec.HistoryPage) -> None:
        assert page.room is not None, "IRC's CHATHISTORY always names its room"
        me = logged_in(self.connection).nick
        name = query_target(page.room, me) if is_query(page.room) else channel(page.room)
        batch = f"h{next(_BATCHES)}" if "batch" in self.caps else None
        if batch is not None:
            self.write_line(self.server, "BATCH", "+" + batch, "chathistory", name)
        for message in page.messages:
            body: dict[str, Any] = {
                "from": message.sender,
                "text": message.text,
                "ts": message.ts,
                "seq": message.seq,
            }
            if message.action:
                body["action"] = message.action
            if message.reply is not None:
                body["reply"] = {"seq": message.reply.seq}
            if message.files:
                body["room"] = page.room
                body["files"] = [codec.body_of(f) for f in message.files]
                body = with_links(self.connection.hub, body, self.connection.session)
            target = target_of(page.room, message.sender)
            self.connection.outbox.write(self.irc_wire.privmsg(body, target, batch).encode("utf-8"))
        if batch is not None:
            self.write_line(self.server, "BATCH", "-" + batch)

    def _rooms(self, rooms: codec.RoomList) -> None:
        _, _, asked = (rooms.ref or "").partition(" ")
        wanted = {nick_key(name) for name in asked.split(",")} if asked else None
        self._numeric("321", "Channel", "Users  Name")
        for info in rooms.rooms:
            name = channel(info.room)
            if wanted is None or nick_key(name) in wanted:
                self._numeric("322", name, str(info.members), info.topic)
        self._numeric("323", "End of /LIST")

    def _message(self, packet: codec.MessagePacket) -> None:
        """A MESSAGE the wire left to the connection: a kick's record, the
        sender's own copy, or one whose file links are signed for this session."""
        body = json.loads(codec.encode(packet)[1:])
        if _kick_or_invite(packet.TYPE, body):
            self._moderated(packet.TYPE, body)
            return
        text = self.irc_wire.message(body, self.connection.session)
        self.connection.outbox.write(text.encode("utf-8"))

    def _private(self, private: codec.Private) -> None:
        """PRIVATE as PRIVMSG (NOTICE for a notice); the sender's copy only
        with echo-message, but for one to oneself, which is its only copy."""
        wire = self.irc_wire
        if private.ref is not None and not wire.echo and nick_key(private.to) != nick_key(private.sender):
            return
        body = {"from": private.sender, "text": private.text, "ts": private.ts, "notice": private.notice}
        self.connection.outbox.write(wire.privmsg(body, irc_nick(private.to)).encode("utf-8"))

    def _server_ping(self, ping: codec.ServerPing) -> None:
        self.write_line(None, "PING", ping.token or self.server)

    def _invited(self, invited: codec.Invited) -> None:
        self.write_line(user(invited.by), "INVITE", self.irc_name, channel(invited.room))

    def _moderated(self, kind: int, body: dict) -> None:
        """What the wire leaves to the connection (_kick_or_invite): a kick
        is shown once, as ``:kicker KICK #chan nick :reason`` when its LEFT
        comes; a LEFT ``kicked`` with no record before it (kicked off the
        server, or cut) is a QUIT; the inviter's own record is ``341``."""
        wire = self.irc_wire
        if kind == PacketType.LEFT:
            self.connection.outbox.write(self._kicked(body))
            return
        action, room = body["action"], body["room"]
        key = (room, nick_key(action.get("target", "")))
        if action["op"] == "invite":
            self._numeric("341", irc_nick(action["target"]), channel(room))
            if wire.echo:
                self.connection.outbox.write(wire.privmsg(body, channel(room)).encode("utf-8"))
            return
        if action["op"] == "ban":
            self.connection.outbox.write(wire.message(body).encode("utf-8"))
        if not self._in_room(room, action.get("target", "")):
            return  # no LEFT follows (a ban of a nick not here): a later LEFT kicked is no KICK
        kicks = self._kicks if self._kicks is not None else {}
        self._kicks = kicks
        kicks.pop(key, None)
        # The kicker's labeled KICK is answered by the KICK line itself.
        own = action["op"] == "kick" and body.get("ref") is not None and self.labels is not None
        kicks[key] = (
            body["from"],
            self.labels.hold(body["ref"]) if own and self.labels is not None else None,
        )
        while len(kicks) > KICKS_KEPT:
            del kicks[next(iter(kicks))]

    def _in_room(self, room: str, nick: str) -> bool:
        """Whether ``nick`` is a member of ``room`` here now."""
        found = self.connection.hub.room_for(room)
        if found is None or not nick:
            return False
        session = self.connection.hub.session_for(nick)
        return session is not None and session.id in found.members

    def _kicked(self, body: dict) -> bytes:
        room, nick = body["room"], body["nick"]
        kick = self._kicks.pop((room, nick_key(nick)), None) if self._kicks else None
        message = body.get("message")
        if kick is None:
            return line(user(nick), "QUIT", f"kicked: {message}" if message else "kicked").encode("utf-8")
        kicker, label = kick
        data = line(user(kicker), "KICK", channel(room), irc_nick(nick), message or irc_nick(kicker)).encode()
        return data if label is None else with_label(data, label, self.server)

    # -- helpers ---------------------------------------------------------------------------

    def _room(self, name: str, quiet: bool = False):
        try:
            room = self.connection.hub.room_for(self._room_name(name))
        except ProtocolError:
            room = None
        if room is None and not quiet:
            self._numeric("403", name, "No such channel")
        return room

    def _room_name(self, name: str) -> str:
        """The room a channel names (``&...``: the conversation of those
        people among ours, however the client spelled them)."""
        if name.startswith("&"):
            session = logged_in(self.connection)
            short = name.lower() if name.startswith(SHORT) else None
            try:
                keys = {nick_key(our_nick(irc)) for irc in name[1:].split("+")}
            except ProtocolError:
                keys = set()
            for room in session.rooms.values():
                if same_people(room.name, keys) or (short is not None and channel(room.name) == short):
                    return room.name
        return room_of(name)

    def _conversation(self, nick: str) -> str | None:
        """The direct conversation of two with ``nick`` among ours, if open."""
        session = logged_in(self.connection)
        keys = {session.key, nick_key(nick)}
        for room in session.rooms.values():
            if same_people(room.name, keys):
                return room.name
        return None

    def _target_room(self, target: str) -> str | None:
        """The room an IRC target means: a channel's, or for a nick our
        conversation of two with it; None for a nick without one."""
        if target[:1] in "#&":
            try:
                return self._room_name(target)
            except ProtocolError:
                return None
        try:
            return self._conversation(our_nick(target))
        except ProtocolError:
            return None

    def _session(self, irc: str):
        try:
            return self.connection.hub.session_for(our_nick(irc))
        except ProtocolError:
            return None


_COMMANDS: dict[str, Callable] = {
    "CAP": IrcConnection.do_cap,
    "PASS": IrcConnection.do_pass,
    "NICK": IrcConnection.do_nick,
    "USER": IrcConnection.do_user,
    "AUTHENTICATE": IrcConnection.do_authenticate,
    "PING": IrcConnection.do_ping,
    "PONG": IrcConnection.do_pong,
    "QUIT": IrcConnection.do_quit,
    "JOIN": IrcConnection.do_join,
    "PART": IrcConnection.do_part,
    "PRIVMSG": IrcConnection.do_privmsg,
    "NOTICE": IrcConnection.do_notice,
    "TOPIC": IrcConnection.do_topic,
    "NAMES": IrcConnection.do_names,
    "WHO": IrcConnection.do_who,
    "WHOIS": IrcConnection.do_whois,
    "LIST": IrcConnection.do_list,
    "MODE": IrcConnection.do_mode,
    "KICK": IrcConnection.do_kick,
    "INVITE": IrcConnection.do_invite,
    "OPER": IrcConnection.do_oper,
    "KILL": IrcConnection.do_kill,
    "WALLOPS": IrcConnection.do_wallops,
    "AWAY": IrcConnection.do_away,
    "TAGMSG": IrcConnection.do_tagmsg,
    "REDACT": IrcConnection.do_redact,
    "CHATHISTORY": IrcConnection.do_chathistory,
    # Questions the gateway answers itself, and SETNAME (irc_queries.py).
    "WHOWAS": irc_queries.do_whowas,
    "LUSERS": irc_queries.do_lusers,
    "TIME": irc_queries.do_time,
    "MOTD": irc_queries.do_motd,
    "VERSION": irc_queries.do_version,
    "USERHOST": irc_queries.do_userhost,
    "ISON": irc_queries.do_ison,
    "SETNAME": irc_queries.do_setname,
}
_BEFORE_LOGIN = frozenset({"CAP", "PASS", "NICK", "USER", "AUTHENTICATE", "PING", "PONG", "QUIT"})

#: Packet classes (each with its TYPE) -> how the connection renders one.
_BY_CONNECTION: dict[type[Any], Callable[[IrcConnection, Any], None]] = {
    codec.Welcome: IrcConnection._welcome,
    codec.RoomState: IrcConnection._room_state,
    codec.HistoryPage: IrcConnection._history,
    codec.RoomList: IrcConnection._rooms,
    codec.Private: IrcConnection._private,
    codec.MessagePacket: IrcConnection._message,
    codec.ServerPing: IrcConnection._server_ping,
    codec.Invited: IrcConnection._invited,
    codec.Done: IrcConnection._done,
    codec.Status: IrcConnection._status,
    codec.TypingNotice: IrcConnection._typing,
    codec.Renamed: IrcConnection._renamed,
    codec.Error: IrcConnection._error,  # what send() says; a fatal ERROR is the wire's
}

#: What the core frames for one connection and the connection renders:
#: the payload behind a NUL (IrcConnection.deliver_to).
_PERSONAL = frozenset(cls.TYPE for cls in _BY_CONNECTION) - _BY_WIRE.keys()


def rendering(kind: int) -> str:
    """How IRC shows a server packet type: "wire", "connection", or "not shown"."""
    if kind in _BY_WIRE:
        return "wire"
    if kind in _PERSONAL:
        return "connection"
    if kind in NOT_SHOWN:
        return "not shown"
    raise KeyError(f"IRC has no rendering for packet type 0x{kind:02X}")


class IrcFactory(ChatFactory):
    """Builds an IrcConnection per connection, all on one hub (``--irc``)."""

    protocol = IrcConnection

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        people_of(hub)  # WHOWAS counts departures from the start, not the first IRC client
