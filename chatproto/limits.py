"""The server's configurable limits and the per-connection rate limiter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Everything WELCOME.limits reports; defaults are PROTOCOL.md's."""

    max_frame: int = 65536
    max_text: int = 4000
    max_clients: int = 10000
    sendq: int = 1024 * 1024
    rate: float = 20.0
    burst: int = 40
    login_timeout: float = 10.0
    ping_interval: float = 30.0
    idle_timeout: float = 90.0
    history_replay: int = 50
    history_page: int = 200

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            floor = 0 if f.name == "history_replay" else 1e-9
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < floor:
                raise ValueError(f"{f.name} must be a positive number, got {value!r}")
        if self.ping_interval >= self.idle_timeout:
            raise ValueError(
                f"ping_interval ({self.ping_interval}) must be shorter than "
                f"idle_timeout ({self.idle_timeout}), or idle clients are never pinged"
            )
        if self.max_frame < 1024:
            raise ValueError("max_frame must be at least 1024 bytes")

    def as_wire(self) -> dict:
        return dataclasses.asdict(self)


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
