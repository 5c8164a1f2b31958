"""Nick, room name, topic and text rules (docs/protocol.md, section 5 and 14.2),
shared by the server and clients."""

from __future__ import annotations

import re
import unicodedata

from chatproto.codec import ErrorCode, ProtocolError, has_lone_surrogate

MAX_NICK = 32
#: The room version 1 sessions are in, unless the server is told otherwise.
DEFAULT_ROOM = "general"

_NICK_PUNCTUATION = frozenset("_-.")
# Cc other than newline and tab: C0, DEL and C1.
_FORBIDDEN_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A topic is one line: every Cc.
_TOPIC_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _name(name: str, max_length: int, what: str, code: str) -> str:
    """NFKC form of a nick or room name; ProtocolError ``code`` if it breaks the rules."""
    if has_lone_surrogate(name):
        raise ProtocolError(code, f"{what} holds a lone surrogate")
    form = unicodedata.normalize("NFKC", name)
    if not 1 <= len(form) <= max_length:
        raise ProtocolError(code, f"{what} must be 1-{max_length} characters, got {len(form)}")
    for position, char in enumerate(form):
        category = unicodedata.category(char)
        if category[0] == "M":
            if position == 0:
                raise ProtocolError(code, f"{what} can't start with a combining mark")
        elif not (category[0] == "L" or category == "Nd" or char in _NICK_PUNCTUATION):
            raise ProtocolError(
                code, f"{what} can't hold {char!r} (U+{ord(char):04X}): use letters, digits, _ - ."
            )
    return form


def normalise_nick(nick: str) -> str:
    """The registered form of a nick (NFKC, case kept), or ProtocolError bad_nick."""
    return _name(nick, MAX_NICK, "nick", ErrorCode.BAD_NICK)


def normalise_room(name: str, max_length: int) -> str:
    """A room's name (NFKC, case kept), or ProtocolError bad_room: the nick
    rules with the server's own length limit."""
    return _name(name, max_length, "room name", ErrorCode.BAD_ROOM)


def nick_key(nick: str) -> str:
    """What two nicks (or two room names) are compared by: NFKC then
    casefold (Alice == ALICE == Ａlice)."""
    key = unicodedata.normalize("NFKC", nick).casefold()
    return nick if key == nick else key  # one string, not two, for most nicks


room_key = nick_key


def validate_topic(topic: str, max_length: int) -> str:
    """The topic unchanged (empty clears it), or ProtocolError bad_topic:
    one line, no control characters, at most ``max_length`` characters."""
    if len(topic) > max_length:
        raise ProtocolError(
            ErrorCode.BAD_TOPIC, f"topic is {len(topic)} characters, the limit is {max_length}"
        )
    bad = _TOPIC_CONTROL.search(topic)
    if bad:
        raise ProtocolError(ErrorCode.BAD_TOPIC, f"topic holds control character U+{ord(bad.group()):04X}")
    if has_lone_surrogate(topic):
        raise ProtocolError(ErrorCode.BAD_TOPIC, "topic holds a lone surrogate")
    return topic


def validate_text(text: str, max_text: int) -> str:
    """The text unchanged, or ProtocolError bad_text."""
    if not text:
        raise ProtocolError(ErrorCode.BAD_TEXT, "text is empty")
    if len(text) > max_text:
        raise ProtocolError(ErrorCode.BAD_TEXT, f"text is {len(text)} characters, the limit is {max_text}")
    bad = _FORBIDDEN_CONTROL.search(text)
    if bad:
        raise ProtocolError(
            ErrorCode.BAD_TEXT,
            f"text holds control character U+{ord(bad.group()):04X}; only newline and tab are allowed",
        )
    if has_lone_surrogate(text):
        raise ProtocolError(ErrorCode.BAD_TEXT, "text holds a lone surrogate")
    return text


def clean_reason(reason: str | None, max_text: int) -> str | None:
    """A QUIT reason made fit to broadcast: forbidden characters dropped, length capped.

    QUIT always succeeds, so its reason is repaired rather than refused (the
    codec has already refused lone surrogates in it as bad_packet).
    """
    if reason is None:
        return None
    return _FORBIDDEN_CONTROL.sub("", reason)[:max_text] or None
