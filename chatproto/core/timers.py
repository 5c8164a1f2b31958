"""Many deadlines, one reactor timer.

Every connection has a deadline (login timeout, next keepalive check, close
grace). A DelayedCall each costs about 700 bytes; an entry in one shared heap
costs about 80, and only the earliest deadline holds a reactor timer.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Deadline:
    """What :meth:`Timers.call_later` returns: ``cancel()`` and ``active()``."""

    __slots__ = ("call", "n", "timers", "when")

    def __init__(self, timers: Timers, when: float, n: int, call: Callable[[], None]) -> None:
        self.timers = timers
        self.when = when
        self.n = n
        self.call: Callable[[], None] | None = call

    def __lt__(self, other: Deadline) -> bool:
        return (self.when, self.n) < (other.when, other.n)

    def cancel(self) -> None:
        """Dropped lazily: the reactor timer may still wake for it (and
        then waits for the next one), but is not left armed when no
        deadline is left."""
        if self.call is not None:
            self.call = None
            self.timers._cancelled(self)

    def active(self) -> bool:
        return self.call is not None


class Timers:
    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._heap: list[Deadline] = []
        self._order = itertools.count()
        self._wakeup: IDelayedCall | None = None
        self._active = 0  # deadlines neither fired nor cancelled

    def call_later(self, delay: float, call: Callable[[], None]) -> Deadline:
        deadline = Deadline(self, self.clock.seconds() + delay, next(self._order), call)
        heapq.heappush(self._heap, deadline)
        self._active += 1
        if self._heap[0] is deadline:
            self._arm()
        return deadline

    def _cancelled(self, deadline: Deadline) -> None:
        """A login cancels the earliest deadline (its own login timeout):
        it leaves the heap at once, but re-arming the reactor timer each
        time cost a storm more than the odd early wake-up does, so only
        the last deadline's cancel disarms it."""
        self._active -= 1
        if not self._active:
            self._heap.clear()
            self._arm()
            return
        if self._heap[0] is deadline:
            self._drop_cancelled()

    def _drop_cancelled(self) -> None:
        """Cancelled deadlines off the top of the heap."""
        while self._heap and self._heap[0].call is None:
            heapq.heappop(self._heap)

    def _arm(self) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None
        self._drop_cancelled()
        if self._heap:
            delay = max(0.0, self._heap[0].when - self.clock.seconds())
            self._wakeup = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        """The due deadlines; re-armed even if one raises (its error goes to
        the reactor's log), or every later deadline would wait for the next
        one set earlier than them all."""
        self._wakeup = None
        now = self.clock.seconds()
        try:
            while self._heap and self._heap[0].when <= now:
                deadline = heapq.heappop(self._heap)
                call, deadline.call = deadline.call, None
                if call is not None:
                    self._active -= 1
                    call()
        finally:
            self._arm()

    def __len__(self) -> int:
        return self._active
