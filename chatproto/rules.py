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
    """A QUIT reason made fit to broadcast: one line (newline and tab are
    spaces), other control characters dropped, length capped.

    QUIT always succeeds, so its reason is repaired rather than refused (the
    codec has already refused lone surrogates in it as bad_packet). A reason
    is one line wherever it is shown: IRC's PART, QUIT and KICK end at a line
    break.
    """
    if reason is None:
        return None
    return _FORBIDDEN_CONTROL.sub("", reason.translate(_REASON_SPACES))[:max_text] or None


_REASON_SPACES = str.maketrans("\n\t", "  ")


# -- conversations (docs/protocol.md 19) ------------------------------------------

#: Longest away message, in characters.
MAX_AWAY = 300

_EMOJI_NAME = re.compile(r":[a-z0-9_+\-]{1,32}:")
_ZWJ = "\u200d"
_REGIONAL = range(0x1F1E6, 0x1F200)
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_TAGS = range(0xE0020, 0xE0080)
_VARIATIONS = ("\ufe0e", "\ufe0f", "\u20e3")


def _extends(char: str) -> bool:
    """Whether ``char`` belongs to the grapheme before it (a modifier)."""
    code = ord(char)
    return unicodedata.category(char)[0] == "M" or char in _VARIATIONS or code in _SKIN_TONES or code in _TAGS


def _base(char: str) -> bool:
    return unicodedata.category(char)[0] not in "CZM"


def _one_grapheme(text: str) -> bool:
    """One user-perceived character: a base, its modifiers, zero-width
    joined sequences of them, or a pair of regional indicators (a flag)."""
    if not text or len(text) > 32 or not _base(text[0]):
        return False
    if ord(text[0]) in _REGIONAL:
        return len(text) == 1 or (len(text) == 2 and ord(text[1]) in _REGIONAL)
    index = 1
    while index < len(text):
        char = text[index]
        if char == _ZWJ and index + 1 < len(text) and _base(text[index + 1]):
            index += 2
        elif _extends(char):
            index += 1
        else:
            return False
    return True


def validate_emoji(emoji: str) -> str:
    """A reaction: one grapheme or ``:name:``; ProtocolError bad_emoji otherwise."""
    if has_lone_surrogate(emoji) or not (_EMOJI_NAME.fullmatch(emoji) or _one_grapheme(emoji)):
        raise ProtocolError(
            ErrorCode.BAD_EMOJI, f"{emoji[:40]!r} is not one emoji (or a :name: of a-z 0-9 _ + -)"
        )
    return emoji


def validate_away(message: str | None) -> str:
    """An away message ("" for none): a topic's rules, up to MAX_AWAY; bad_text."""
    if message is None:
        return ""
    try:
        return validate_topic(message, MAX_AWAY)
    except ProtocolError as e:
        raise ProtocolError(ErrorCode.BAD_TEXT, e.message.replace("topic", "away message")) from None


#: What starts a direct conversation's name; no room name can hold it.
DIRECT = "@"
MAX_DIRECT = 8


def is_direct(name: str) -> bool:
    return name.startswith(DIRECT)


def direct_name(nicks: list[str]) -> str:
    """The conversation of these accounts (registered spellings): ``@`` and
    their names in the order of their keys, joined by ``+``."""
    return DIRECT + "+".join(sorted(set(nicks), key=nick_key))


def direct_members(name: str) -> list[str]:
    """The names in a conversation's name; bad_room if it is not one."""
    parts = name[len(DIRECT) :].split("+") if is_direct(name) else []
    if not 2 <= len(parts) <= MAX_DIRECT:
        raise ProtocolError(ErrorCode.BAD_ROOM, f"{name[:80]!r} is no direct conversation")
    try:
        nicks = [normalise_nick(part) for part in parts]
    except ProtocolError:
        raise ProtocolError(ErrorCode.BAD_ROOM, f"{name[:80]!r} is no direct conversation") from None
    if direct_name(nicks) != name or len({nick_key(n) for n in nicks}) != len(nicks):
        raise ProtocolError(ErrorCode.BAD_ROOM, f"{name[:80]!r} is no direct conversation")
    return nicks
