"""What a change does to a stored message (docs/protocol.md 19), the same
for every store: the checks in their order, and the message's new state.

A store reads the message's row, calls :func:`apply_change` and writes
what it returns, atomically with the read.
"""

from __future__ import annotations

import json

from chatproto.backends.eventlog import ADMIN, DELETE, EDIT, NOBODY, REACT, UNREACT, Change
from chatproto.codec import ErrorCode, ProtocolError, Quote, Reaction, dumps

#: Characters of the answered message a reply quotes.
QUOTE_LENGTH = 100

#: What a change writes: text, edited, deleted (who: "" the author), reactions (JSON).
Update = tuple[str, float | None, str | None, str | None]


def quote_of(seq: int, sender: str | None, text: str | None, deleted: bool) -> Quote:
    """What a reply shows of message ``seq`` (``sender`` None: there is none)."""
    if sender is None or deleted or text is None:
        return Quote(seq, deleted=True)
    return Quote(seq, sender, text[:QUOTE_LENGTH])


def reactions_of(stored: str | None) -> list[Reaction] | None:
    """A message's reactions as stored (JSON ``[[emoji, [nick, ...],
    [owner, ...]], ...]``: who reacted, shown by nick, told apart by owner)."""
    if not stored:
        return None
    return [Reaction(entry[0], list(entry[1])) for entry in json.loads(stored)] or None


def owns(change: Change, author: str | None) -> bool:
    """Whether the change's requester wrote the message. A message stored
    before authors were (schema 4) is nobody's: its sender's nick may
    have been anyone's since."""
    return author is not None and author == change.author


def apply_change(
    change: Change,
    ts: float,
    sender: str,
    text: str,
    action: str | None,
    author: str | None,
    deleted: str | None,
    reactions: str | None,
    edited: float | None,
) -> Update | None:
    """The message's new state after ``change`` (None: nothing changes),
    or the ProtocolError refusing it. The columns are the stored row's."""
    if deleted is not None:
        raise ProtocolError(ErrorCode.MESSAGE_DELETED, f"message {change.seq} was deleted")
    own = action is None and owns(change, author)
    if change.kind == EDIT:
        if not own:
            raise ProtocolError(ErrorCode.NOT_YOURS, f"message {change.seq} is not yours to edit")
        if change.edit_window and change.ts - ts > change.edit_window:
            raise ProtocolError(
                ErrorCode.TOO_LATE,
                f"messages can be edited for {change.edit_window:g} seconds after they are sent",
            )
        assert change.text is not None  # an EDIT's
        return change.text, change.ts, None, reactions
    if change.kind == DELETE:
        allowed = change.rights == ADMIN or (action is None and (own or change.rights != NOBODY))
        if not allowed:
            raise ProtocolError(
                ErrorCode.NOT_YOURS,
                f"message {change.seq} is not yours: only its author, a room operator"
                " or an admin can delete it",
            )
        return "", None, "" if own else change.by, None
    assert change.kind in (REACT, UNREACT) and change.emoji is not None
    return _react(change, text, reactions, edited)


def _owners(entry: list) -> list[str]:
    """Who put a reaction there, by owner (the nicks, for one stored without)."""
    if len(entry) < 3:
        entry.append(list(entry[1]))
    owners: list[str] = entry[2]
    return owners


def _react(change: Change, text: str, stored: str | None, edited: float | None) -> Update | None:
    emoji, by, who = change.emoji, change.by, change.author
    listed: list[list] = json.loads(stored) if stored else []
    entry = next((item for item in listed if item[0] == emoji), None)
    if change.kind == UNREACT:
        if entry is None or who not in _owners(entry):
            return None
        index = _owners(entry).index(who)
        del entry[1][index], entry[2][index]
        if not entry[1]:
            listed.remove(entry)
    else:
        if entry is not None and who in _owners(entry):
            return None
        if entry is None and len(listed) >= change.max_reactions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_REACTIONS,
                f"a message can have {change.max_reactions} different reactions; use one of those",
            )
        if sum(1 for item in listed if who in _owners(item)) >= change.user_reactions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_REACTIONS,
                f"you can put at most {change.user_reactions} reactions on one message",
            )
        if entry is None:
            listed.append([emoji, [by], [who]])
        else:
            entry[1].append(by)
            _owners(entry).append(who)
    return text, edited, None, dumps(listed) if listed else None
