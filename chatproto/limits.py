"""The server's limits, in one place, and the per-connection rate limiter.

:class:`Limits` is the one source of every limit: its defaults, its bounds,
its help text. ``twistd chat`` options are generated from it (tap.py),
WELCOME.limits is :meth:`Limits.as_wire`, and clients fall back to
:data:`DEFAULTS` before a server has told them its own.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


def _limit(default, help: str, minimum: float = 0, exclusive: bool = True, wire: int = 1):
    """A Limits field: its default, its help text, its lower bound, and the
    protocol version from which WELCOME.limits reports it (0: never;
    version 1's keys are fixed)."""
    return field(
        default=default, metadata={"help": help, "minimum": minimum, "exclusive": exclusive, "wire": wire}
    )


@dataclass(frozen=True)
class Limits:
    """Everything WELCOME.limits reports (docs/protocol.md, "Limits")."""

    max_frame: int = _limit(65536, "Largest payload accepted from a client, in bytes.", 1024, False)
    max_text: int = _limit(4000, "Longest message text, in characters.")
    max_clients: int = _limit(10000, "Open connections allowed, pending or connected.")
    sendq: int = _limit(1024 * 1024, "Unsent bytes allowed before a client is cut off as a slow consumer.")
    rate: float = _limit(20.0, "SAY/WHISPER per second per connection.")
    burst: int = _limit(40, "SAY/WHISPER burst per connection.")
    login_timeout: float = _limit(10.0, "Seconds a connection may stay pending.")
    ping_interval: float = _limit(30.0, "Seconds of silence before the server sends PING.")
    idle_timeout: float = _limit(90.0, "Seconds of silence before a client is dropped.")
    history_replay: int = _limit(50, "Messages of history sent in WELCOME.", 0, False)
    history_page: int = _limit(200, "Largest HISTORY page.")
    # Each connection's fair share (core/budget.py); not in WELCOME.limits.
    packet_rate: float = _limit(
        200.0,
        "Budget units a second per connection: a packet costs 1, HISTORY 1 more per 10 rows.",
        wire=0,
    )
    packet_burst: float = _limit(200.0, "Budget units a connection may spend at once.", wire=0)
    packets_per_turn: int = _limit(
        32, "Packets handled per connection per reactor turn; the rest wait a turn.", wire=0
    )
    flood_cut: float = _limit(
        30.0,
        "Seconds past its budget, always with more packets waiting, before a connection is cut.",
        wire=0,
    )
    pending_frame: int = _limit(
        4096, "Largest payload accepted before login, in bytes (at most max-frame).", 64, False, wire=0
    )
    # Rooms (protocol version 2); WELCOME.limits reports them to version 2 sessions.
    rooms_per_connection: int = _limit(20, "Rooms one session may be in at once.", wire=2)
    max_rooms: int = _limit(1000, "Rooms that may exist at once on the server.", wire=2)
    room_name_length: int = _limit(32, "Longest room name, in characters.", wire=2)
    topic_length: int = _limit(300, "Longest room topic, in characters.", wire=2)
    join_rate: float = _limit(
        1.0, "JOIN, PART, TOPIC and moderation requests per second per connection.", wire=2
    )
    join_burst: int = _limit(
        10, "JOIN, PART, TOPIC and moderation requests a connection may send at once.", wire=2
    )
    # Conversations (protocol version 2, docs/protocol.md 19.11).
    edit_window: float = _limit(
        0.0, "Seconds after a message during which its author may edit it (0: always).", 0, False, wire=2
    )
    max_reactions: int = _limit(20, "Different emoji on one message.", wire=2)
    user_reactions: int = _limit(10, "Reactions of one session on one message.", wire=2)
    typing_interval: float = _limit(
        3.0, "Seconds between the typing notices passed on for one session and room.", wire=2
    )
    # Big rooms (protocol version 2, docs/protocol.md 22).
    lazy_members: int = _limit(
        200,
        "Members past which a room is big: version 2 joiners get a part of its members (0: never).",
        0,
        False,
        wire=2,
    )
    members_shown: int = _limit(50, "Members a big room's ROOM lists at most.", wire=2)
    members_page: int = _limit(200, "Members one MEMBERS answer lists at most.", wire=2)
    follow_limit: int = _limit(
        500, "Members of a big room one connection follows at most (the oldest go first).", wire=2
    )
    count_interval: float = _limit(1.0, "Seconds between a big room's COUNT packets at most.", wire=2)
    # Addresses and accounts (protocol version 2); loopback and Unix sockets are exempt
    # from the per-address limits.
    max_per_address: int = _limit(20, "Open connections allowed from one address.", wire=0)
    address_rate: float = _limit(2.0, "New connections a second from one address, on average.", wire=0)
    address_burst: int = _limit(20, "New connections one address may open at once.", wire=0)
    login_failures: int = _limit(
        3, "Wrong passwords allowed for one account before each next try must wait.", wire=0
    )
    lockout: float = _limit(
        900.0, "Longest wait, in seconds, after repeated wrong passwords (the lock-out).", wire=0
    )
    register_rate: float = _limit(10.0, "Accounts one address may register an hour, on average.", wire=0)
    register_burst: int = _limit(3, "Accounts one address may register at once.", wire=0)
    max_accounts: int = _limit(100_000, "Accounts the server keeps at most; more are refused.", wire=0)
    # Files (protocol version 2, docs/protocol.md 20).
    max_upload: int = _limit(10 * 1024 * 1024, "Largest file upload, in bytes.", wire=2)
    max_files: int = _limit(10, "Files one message may carry.", wire=2)
    file_token_ttl: float = _limit(600.0, "Seconds an upload token (FILES_TOKEN) stays valid.", wire=0)
    account_quota: int = _limit(
        100 * 1024 * 1024, "Bytes of files one account (a guest: its session) may keep.", wire=0
    )
    files_quota: int = _limit(10 * 1024**3, "Bytes of files the server keeps at most.", wire=0)
    upload_keep: float = _limit(
        3600.0, "Seconds an upload may wait to be attached before it is deleted.", wire=0
    )
    uploads_at_once: int = _limit(2, "Uploads one session may have under way at once.", wire=0)
    max_image_pixels: int = _limit(
        40_000_000,
        "Largest image (width times height) given a thumbnail; more is kept as a plain file.",
        wire=0,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_limit(f, getattr(self, f.name), f.name)
        if self.ping_interval >= self.idle_timeout:
            raise ValueError(
                f"ping_interval ({self.ping_interval}) must be shorter than "
                f"idle_timeout ({self.idle_timeout}), or idle clients are never pinged"
            )

    def as_wire(self, version: int = 1) -> dict:
        """WELCOME.limits for a session of ``version``: exactly version 1's
        keys for version 1."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if 0 < f.metadata["wire"] <= version
        }


def _kind(f: dataclasses.Field) -> type:
    return int if f.type in (int, "int") else float


def parse_limit(f: dataclasses.Field, text: str, what: str):
    """A limit typed by a user (an option's text), checked like any other."""
    kind = _kind(f)
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{what} must be a {'whole ' if kind is int else ''}number, not {text!r}") from None
    return check_limit(f, value, what, text)


def check_limit(f: dataclasses.Field, value, what: str, shown: str | None = None):
    """``value`` if it is a number of the field's kind within its bound, else
    ValueError naming ``what`` (a field or an option name) and ``shown``
    (the value as the user typed it)."""
    shown = repr(value) if shown is None else repr(shown)
    kind = _kind(f)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and value != int(value))
    ):
        raise ValueError(f"{what} must be a {'whole ' if kind is int else ''}number, not {shown}")
    minimum, exclusive = f.metadata["minimum"], f.metadata["exclusive"]
    if math.isnan(value) or math.isinf(value) or value < minimum or (exclusive and value == minimum):
        raise ValueError(
            f"{what} must be {'greater than' if exclusive else 'at least'} {minimum}, not {shown}"
        )
    return value


DEFAULTS = Limits()


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; time comes from the caller."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
