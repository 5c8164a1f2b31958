"""Nick and text rules (docs/protocol.md, "Nicks" and "Text"), shared by the server and clients."""

from __future__ import annotations

import re
import unicodedata

from chatproto.codec import ErrorCode, ProtocolError, has_lone_surrogate

MAX_NICK = 32

_NICK_PUNCTUATION = frozenset("_-.")
# Cc other than newline and tab: C0, DEL and C1.
_FORBIDDEN_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def normalise_nick(nick: str) -> str:
    """The registered form of a nick (NFKC, case kept), or ProtocolError bad_nick."""
    if has_lone_surrogate(nick):
        raise ProtocolError(ErrorCode.BAD_NICK, "nick holds a lone surrogate")
    form = unicodedata.normalize("NFKC", nick)
    if not 1 <= len(form) <= MAX_NICK:
        raise ProtocolError(ErrorCode.BAD_NICK, f"nick must be 1-{MAX_NICK} characters, got {len(form)}")
    for position, char in enumerate(form):
        category = unicodedata.category(char)
        if category[0] == "M":
            if position == 0:
                raise ProtocolError(ErrorCode.BAD_NICK, "nick can't start with a combining mark")
        elif not (category[0] == "L" or category == "Nd" or char in _NICK_PUNCTUATION):
            raise ProtocolError(
                ErrorCode.BAD_NICK,
                f"nick can't hold {char!r} (U+{ord(char):04X}): use letters, digits, _ - .",
            )
    return form


def nick_key(nick: str) -> str:
    """What two nicks are compared by: NFKC then casefold (Alice == ALICE == Ａlice)."""
    key = unicodedata.normalize("NFKC", nick).casefold()
    return nick if key == nick else key  # one string, not two, for most nicks


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
