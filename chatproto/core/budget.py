"""Each connection's fair share of the server: what a packet costs, and how
long its sender must wait once it has spent its share.

Every packet a connection sends costs units from a token bucket that refills
at ``packet_rate`` units a second up to ``packet_burst``. Within the budget
nothing changes. Past it, the transport stops reading from that connection
until the debt is paid back (``pauseProducing``: TCP pushes back on the
sender), so a flood is slowed down rather than answered faster; nothing is
refused, and the wire protocol is the same. A connection that stays past
its budget, with more of its packets waiting every time it is let back in,
for ``flood_cut`` seconds is cut off.

Every transport applies it the same way: after handling each packet it
calls :meth:`Budget.settle` and does what it says: go on, stop reading for
a while (also once ``packets_per_turn`` packets were handled in one read,
so one read can't hold the reactor), or cut the connection.
"""

from __future__ import annotations

from chatproto.codec import Follow, HistoryRequest
from chatproto.limits import Limits

#: What :meth:`Budget.settle` answers for a connection to be cut off.
CUT = -1.0

#: History rows that cost as much as one packet.
ROWS_PER_UNIT = 10
#: What an ERROR in answer costs on top of the packet: a refused packet is work too.
REFUSAL = 1


def unit(packet: object, history_page: int, rooms: int = 0) -> float:
    """What most packets cost: one unit."""
    return 1


def history_cost(packet: HistoryRequest, history_page: int, rooms: int = 0) -> float:
    """A HISTORY request: one unit, and one more for every ROWS_PER_UNIT
    rows it may read."""
    rows = min(max(packet.limit if packet.limit is not None else 50, 1), history_page)
    return 1 + rows / ROWS_PER_UNIT


def list_cost(packet: object, history_page: int, rooms: int = 0) -> float:
    """LIST: one unit, and one more for every ROWS_PER_UNIT rooms it lists
    (at least as much as the largest page)."""
    return 1 + max(history_page, rooms) / ROWS_PER_UNIT


def follow_cost(packet: Follow, history_page: int, rooms: int = 0) -> float:
    """FOLLOW: one unit, and one more for every ROWS_PER_UNIT nicks it names
    (its answer, MEMBERS, is charged by what it lists)."""
    return 1 + len(packet.nicks) / ROWS_PER_UNIT


def cost(packet: object, history_page: int, rooms: int = 0) -> float:
    """Units a packet costs: what its row of the command table
    (core/commands.py) says, one of the functions above."""
    from chatproto.core.commands import COMMANDS  # the table imports this module

    return COMMANDS[type(packet)].cost(packet, history_page, rooms)


class Spender:
    """A token bucket that may go into debt: a packet is always handled, and
    :meth:`spend` says how long to stop reading afterwards.

    The arithmetic only: a subclass keeps the numbers (``rate``, ``burst``,
    ``_tokens``, ``_stamp``, ``_over_since``) in slots of its own, so that a
    connection's policy can be its own budget rather than hold one."""

    # The numbers are the subclass's slots (a call, not a literal: mypy
    # would hold the arithmetic to slots of its own).
    __slots__: tuple[str, ...] = tuple()

    rate: float
    burst: float
    _tokens: float
    _stamp: float
    _over_since: float | None

    def start(self, now: float) -> None:
        """A full budget, from ``now``."""
        self._tokens = float(self.burst)
        self._stamp = now
        self._over_since = None

    def settle(
        self, units: float, now: float, handled: int, more_waiting: bool, limits: Limits
    ) -> float | None:
        """After a packet of ``units``, the ``handled``-th of this read, with
        ``more_waiting`` bytes of the sender behind it: None to go on,
        seconds to stop reading for (0: until the next reactor turn), or CUT."""
        delay = self.spend(units, now)
        if delay > 0:
            if not more_waiting:
                self.caught_up()  # one request at a time: slowed, not a flood
            elif self.flooding_for(now) >= limits.flood_cut:
                return CUT
            return delay
        return 0.0 if handled >= limits.packets_per_turn else None

    def spend(self, units: float, now: float) -> float:
        """Spend ``units``; the seconds until the debt is paid (0 within budget)."""
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate) - units
        self._tokens, self._stamp = tokens, now
        if tokens >= 0:
            self._over_since = None  # within budget again: a new flood starts from zero
            return 0.0
        if self._over_since is None:
            self._over_since = now
        return -tokens / self.rate

    def caught_up(self) -> None:
        """The sender had nothing more waiting when let back in: not a flood."""
        self._over_since = None

    def flooding_for(self, now: float) -> float:
        """Seconds the sender has been past its budget without a pause."""
        return 0.0 if self._over_since is None else now - self._over_since


class Budget(Spender):
    """A budget of its own, with its rate and burst."""

    __slots__ = ("_over_since", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.start(now)
