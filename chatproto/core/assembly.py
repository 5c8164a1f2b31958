"""Assembling the packets that carry lists: WELCOME, ROOM and history pages.

A WELCOME or ROOM is spliced from the room's cached JSON (the members'
objects, the recent messages'), so a join costs a join over the members
rather than an encode of each. History is trimmed to fit ``max_frame``, so a client may use
WELCOME.limits.max_frame as its own bound for everything but a very large
WELCOME.
"""

from __future__ import annotations

from typing import Any

from chatproto import codec
from chatproto.codec import Message
from chatproto.core.connection import Session
from chatproto.core.rooms import ChatRoom
from chatproto.rules import nick_key

#: Room left in a frame for the rest of the packet around a history list.
_FRAME_MARGIN = 1024


def fit(messages: list[Message], max_frame: int, keep: str) -> tuple[list[Message], bool]:
    """Drop messages from the far end (``keep``: "newest" or "oldest") until
    the list encodes within ``max_frame``; also whether any were dropped."""
    budget = max_frame - _FRAME_MARGIN
    # UTF-8 needs at most 4 bytes a character; most pages pass this bound.
    if (
        all(m.plain for m in messages)
        and sum(4 * (len(m.text) + len(m.sender)) + 100 for m in messages) <= budget
    ):
        return messages, False
    sizes = [1 + len(codec.message_json(m).encode("utf-8")) for m in messages]  # type byte too
    total = sum(sizes) + len(sizes)
    if total <= budget:
        return messages, False
    order = range(len(messages)) if keep == "newest" else range(len(messages) - 1, -1, -1)
    cut = 0
    for index in order:
        if total <= budget:
            break
        total -= sizes[index] + 1
        cut += 1
    kept = messages[cut:] if keep == "newest" else messages[: len(messages) - cut]
    return kept, True


class Assembler:
    """Builds the packets that start a session (WELCOME) or a membership (ROOM)."""

    def __init__(
        self,
        max_frame: int,
        name: str,
        motd: str,
        limits_wire: dict[int, dict[str, Any]],
        files_url: str = "",
    ) -> None:
        self.max_frame = max_frame
        self.files_url = files_url  # where version 1 is sent for a message's files
        self.name = name
        self.motd = motd
        self._limits_wire = limits_wire
        # version -> (name, motd, the members every WELCOME has alike, encoded once)
        self._fixed: dict[int, tuple[str, str, str]] = {}

    def _fixed_members(self, version: int) -> str:
        """WELCOME's server name, motd and limits for ``version``, as JSON
        members, encoded again only when the name or motd has changed."""
        cached = self._fixed.get(version)
        if cached is not None and cached[0] == self.name and cached[1] == self.motd:
            return cached[2]
        body = {"server": self.name, "motd": self.motd, "limits": self._limits_wire[version]}
        fixed = codec.dumps(body)[1:-1]
        self._fixed[version] = (self.name, self.motd, fixed)
        return fixed

    def _kept(self, room: ChatRoom) -> list[tuple[Message, str]]:
        """The recent messages a ROOM or WELCOME replays: as many of the
        newest as fit a frame."""
        recent = list(room.recent)
        history, _ = fit([m for m, _ in recent], self.max_frame, keep="newest")
        return recent[len(recent) - len(history) :]

    def _recent(self, room: ChatRoom, version: int = 2) -> list[str]:
        kept = self._kept(room)
        if version == 1:  # docs/protocol.md 19.10
            return [
                text if m.plain else v1
                for m, text in kept
                if (v1 := codec.v1_message_json(m, self.files_url)) is not None
            ]
        return [text for _, text in kept]

    def welcome(
        self,
        version: int,
        nick: str,
        id: int,
        token: str,
        pending: list[int],
        default: ChatRoom,
        rooms: list[str],
        session: Session,
    ) -> bytes:
        """WELCOME's payload for a session that has just logged in: version
        1 is in the default room (its own peer already added); version 2
        gets its rooms' state in ROOM packets after it."""
        body = {
            "nick": nick,
            "id": id,
            "resume": token,
            "pending": pending,
        }
        fixed = self._fixed_members(version)
        if version == 1:
            return codec.welcome_payload(body, _v1_peers(default), self._recent(default, 1), fixed)
        body["rooms"] = rooms
        body["default_room"] = default.name
        body["account"] = session.account
        body["admin"] = session.admin
        return codec.welcome_payload(body, [], [], fixed)

    def shown(self, room: ChatRoom, session: Session, limit: int) -> list[int]:
        """The members a big room's ROOM lists (docs/protocol.md 22): the
        joiner, the operators, the voiced, then the authors of the replayed
        history still in the room, the latest first; at most ``limit``."""
        shown = {session.id: None}
        ranked = room.ranked
        for id, op in ranked.items():
            if op and len(shown) < limit:
                shown[id] = None
        for id, op in ranked.items():
            if not op and len(shown) < limit:
                shown[id] = None
        authors: set[str] = set()
        for message, _ in reversed(self._kept(room)):
            if len(shown) >= limit:
                break
            if message.sender in authors:
                continue
            authors.add(message.sender)
            member = room.member_by_key(nick_key(message.sender))
            if member is not None:
                shown[member.id] = None
        return list(shown)[:limit]

    def room_state(
        self, room: ChatRoom, ref: str | None, session: Session, shown: list[int] | None = None
    ) -> bytes:
        """ROOM: what a new member of ``room`` starts from (itself a member),
        with its read marker and unread count; in a big room, only the
        members ``shown`` (None: every one)."""
        body: dict[str, Any] = {"room": room.name, "topic": room.topic_text}
        if ref is not None:
            body["ref"] = ref
        read = session.marks.get(room.key, room.last_seq)
        body["topic_lock"] = room.rules.topic_lock
        body["invite_only"] = room.rules.invite_only
        body["moderated"] = room.rules.moderated
        body["secret"] = room.rules.secret
        body["limit"] = room.rules.limit
        body["key"] = room.rules.key  # members may see it (docs/protocol.md 15.5)
        body["read"] = read
        body["unread"] = max(0, room.last_seq - read)
        body["rev"] = room.rev
        if room.direct:
            body["kind"] = "direct"
        body["count"] = len(room.members)
        if shown is None:
            members = list(room.peers.values())
        else:
            body["lazy"] = True
            members = [room.peers[id] for id in shown if id in room.peers]
        return codec.room_state_payload(body, members, self._recent(room))

    def page(
        self, messages: list[Message], more: bool, keep: str, room: str | None, rev: int | None = None
    ) -> codec.HistoryPage:
        """A HISTORY reply, trimmed to fit a frame (``more`` set if it was);
        ``room`` is named for version 2, and ``rev`` in an answer by rev."""
        kept, trimmed = fit(messages, self.max_frame, keep)
        return codec.HistoryPage(kept, more or trimmed, room, rev)


def _v1_peers(room: ChatRoom) -> list[str]:
    """WELCOME.peers as version 1 has them: id and nick, without the
    operator or away marks of version 2 (a nick never holds a quote)."""
    return [
        text
        if '"op"' not in text and '"away"' not in text and '"voice"' not in text
        else codec.peer_json(id, room.members[id].nick)
        for id, text in room.peers.items()
    ]
