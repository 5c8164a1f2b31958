"""Assembling the packets that carry lists: WELCOME and history pages.

A WELCOME is spliced from cached JSON (the peers' objects, the recent
messages'), so a login costs a join over the peers rather than an encode
of each. History is trimmed to fit ``max_frame``, so a client may use
WELCOME.limits.max_frame as its own bound for everything but a very large
WELCOME.
"""

from __future__ import annotations

from collections import deque

from chatproto import codec
from chatproto.codec import Message

#: Room left in a frame for the rest of the packet around a history list.
_FRAME_MARGIN = 1024


def fit(messages: list[Message], max_frame: int, keep: str) -> tuple[list[Message], bool]:
    """Drop messages from the far end (``keep``: "newest" or "oldest") until
    the list encodes within ``max_frame``; also whether any were dropped."""
    budget = max_frame - _FRAME_MARGIN
    # UTF-8 needs at most 4 bytes a character; most pages pass this bound.
    if sum(4 * (len(m.text) + len(m.sender)) + 100 for m in messages) <= budget:
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
    """Keeps what WELCOME needs encoded: peers and the most recent messages."""

    def __init__(self, replay: int, max_frame: int, name: str, motd: str, limits_wire: dict) -> None:
        self.max_frame = max_frame
        self.name = name
        self.motd = motd
        self._limits_wire = limits_wire
        self._recent: deque[tuple[Message, str]] = deque(maxlen=replay)
        self._peers: dict[int, str] = {}  # session id -> its JSON in WELCOME.peers

    def remember(self, stored: list[tuple[Message, str]]) -> None:
        """Messages just stored, with their JSON, for the next WELCOME."""
        self._recent.extend(stored)

    def add_peer(self, id: int, nick: str) -> None:
        self._peers[id] = codec.peer_json(id, nick)

    def remove_peer(self, id: int) -> None:
        self._peers.pop(id, None)

    def clear_peers(self) -> None:
        self._peers.clear()

    def welcome(self, nick: str, id: int, token: str, pending: list[int]) -> bytes:
        """WELCOME's payload for a session that has just logged in (its own
        peer already added)."""
        recent = list(self._recent)
        history, _ = fit([m for m, _ in recent], self.max_frame, keep="newest")
        body = {
            "nick": nick,
            "id": id,
            "resume": token,
            "server": self.name,
            "motd": self.motd,
            "pending": pending,
            "limits": self._limits_wire,
        }
        history_json = [text for _, text in recent[len(recent) - len(history) :]]
        return codec.welcome_payload(body, list(self._peers.values()), history_json)

    def page(self, messages: list[Message], more: bool, keep: str) -> codec.HistoryPage:
        """A HISTORY reply, trimmed to fit a frame (``more`` set if it was)."""
        kept, trimmed = fit(messages, self.max_frame, keep)
        return codec.HistoryPage(kept, more or trimmed)
