"""What the IRC gateway needs for conversations (docs/protocol.md, 17.8
and section 19): IRCv3 tag values, direct conversations as queries and
``&`` channels.

Everything here is pure: no connection, no hub.
"""

from __future__ import annotations

from chatproto.rules import nick_key
from chatproto.transports.ircnames import irc_nick

#: Client-only tags the gateway maps to our packets; every other one is
#: denied (CLIENTTAGDENY in 005) and dropped.
CLIENT_TAGS = ("+draft/reply", "+draft/react", "+draft/unreact", "+typing")
#: ISUPPORT's CLIENTTAGDENY: everything but the tags we map.
CLIENTTAGDENY = "CLIENTTAGDENY=*," + ",".join("-" + tag[1:] for tag in CLIENT_TAGS)
#: What an edit line says before the new text.
EDITED = "(edited) "
#: +typing values -> TYPING's ``typing`` (paused: nothing is sent; the
#: notice others got expires by itself, section 19.6).
TYPING = {"active": True, "done": False}

_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n", "\0": ""}  # NUL: no line holds it
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def escape_tag(value: str) -> str:
    """A tag value as IRCv3 message-tags writes it."""
    if not any(c in value for c in _ESCAPES):
        return value
    return "".join(_ESCAPES.get(c, c) for c in value)


def unescape_tag(value: str) -> str:
    """A tag value as it was meant: ``\\:`` is ``;`` and so on; an unknown
    escape is the character itself, a trailing lone backslash nothing."""
    if "\\" not in value:
        return value
    out, chars = [], iter(value)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            out.append(_UNESCAPES.get(nxt, nxt))
        else:
            out.append(c)
    return "".join(out)


def seq_of(value: str | None) -> int | None:
    """A msgid we gave (a room's seq) back as the seq; None if it is none."""
    if value is None:
        return None
    value = value.removeprefix("msgid=")
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        return None
    return int(value)


# -- direct conversations ---------------------------------------------------------------


def participants(room: str) -> list[str] | None:
    """The account names of a direct conversation (``@alice+bob``); None for a room."""
    if not room.startswith("@"):
        return None
    return room[1:].split("+")


def is_query(room: str) -> bool:
    """A conversation of two: IRC shows it as a private query, not a channel."""
    names = participants(room)
    return names is not None and len(names) == 2


def query_target(room: str, source: str, author: str | None = None) -> str:
    """The IRC target of a line from ``source`` in a conversation of two:
    the other participant; when ``source`` is none of them (an admin), the
    one other than ``author``."""
    names = participants(room) or [room]
    keys = [nick_key(name) for name in names]
    for who in (source, author):
        if who is not None and nick_key(who) in keys:
            others = [name for name, key in zip(names, keys, strict=True) if key != nick_key(who)]
            return irc_nick(others[0] if others else names[0])
    return irc_nick(names[0])


def same_people(room: str, keys: set[str]) -> bool:
    """Whether ``room`` is the conversation of exactly these nick keys."""
    names = participants(room)
    return names is not None and {nick_key(name) for name in names} == keys
