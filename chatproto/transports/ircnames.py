"""How our nicks and rooms look on IRC (docs/protocol.md, section 17.2).

Our nicks may hold letters of any script and ``.``; an IRC nick may not. A
nick that is already a plain IRC nick goes as it is; any other becomes
``xn--`` and the Punycode (RFC 3492) of the nick with ``.`` written ``|``
(which our nicks never hold). Plain nicks never start with ``xn--``, so the
mapping is reversible both ways. Rooms are channels: ``general`` is
``#general``; a direct conversation of three or more (``@alice+bob+carol``,
section 19.8) is an ``&`` channel of the participants' IRC nicks,
``&alice+bob+carol`` (a conversation of two is a query, not a channel);
one whose name would leave a line too little room is ``&~`` and a digest of
its name (section 17.8).
"""

from __future__ import annotations

import hashlib
import re

from chatproto.codec import ErrorCode, ProtocolError

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_PREFIX = "xn--"
#: Bytes of the longest ``&`` channel written out in full; a longer one is
#: its short form, so that a line keeps room for its text.
CONVERSATION_CHANNEL = 200
#: What starts a conversation's short form (no IRC nick starts with ``~``).
SHORT = "&~"


def irc_nick(nick: str) -> str:
    """The IRC form of one of our nicks."""
    if _PLAIN.match(nick) and not nick.lower().startswith(_PREFIX):
        return nick
    return _PREFIX + nick.replace(".", "|").encode("punycode").decode("ascii")


def our_nick(irc: str) -> str:
    """One of our nicks from its IRC form; bad_nick if it can't be one."""
    if not irc.lower().startswith(_PREFIX):
        return irc
    try:
        return irc[len(_PREFIX) :].encode("ascii").decode("punycode").replace("|", ".")
    except (UnicodeError, ValueError):
        raise ProtocolError(ErrorCode.BAD_NICK, f"{irc!r} is not a nick this server gave") from None


def channel(room: str) -> str:
    if room.startswith("@"):
        name = "&" + "+".join(irc_nick(name) for name in room[1:].split("+"))
        return name if len(name) <= CONVERSATION_CHANNEL else short_channel(room)
    return "#" + room


def short_channel(room: str) -> str:
    """A conversation's short ``&`` channel: ``&~`` and 16 hex digits of a
    digest of its name, the same on every connection and node."""
    return SHORT + hashlib.sha256(room.encode("utf-8")).hexdigest()[:16]


def room_of(name: str) -> str:
    """The room a channel names; bad_room for anything but ``#room`` and
    ``&nick+nick...`` (a direct conversation)."""
    if name.startswith("&") and len(name) > 1:
        try:
            return "@" + "+".join(our_nick(irc) for irc in name[1:].split("+"))
        except ProtocolError:
            pass
    if not name.startswith("#") or len(name) < 2:
        raise ProtocolError(ErrorCode.BAD_ROOM, f"{name!r} is not a channel: channels start with #")
    return name[1:]
