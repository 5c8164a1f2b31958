"""One blob's operations in the order they were asked for.

A store's calls run on worker threads, which finish in any order. A
``delete`` of a blob whose last record went, asked just before a new
upload's ``put`` of the same bytes, must not run after it (the new upload
would lose its bytes), nor a ``put`` that found the blob present be
overtaken by that ``delete``. So the calls on one digest run one after
another; calls on different digests still run side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, maybeDeferred

T = TypeVar("T")


class DigestOrder:
    """Chains each digest's calls; forgets a digest once its chain is idle."""

    def __init__(self) -> None:
        self._last: dict[str, Deferred[None]] = {}

    def run(self, digest: str, call: Callable[[], Deferred[T]]) -> Deferred[T]:
        """``call()`` once every earlier call on ``digest`` has finished;
        its result (or failure) is the answer."""
        before = self._last.get(digest)
        result: Deferred[T] = Deferred()
        done: Deferred[None] = Deferred()
        self._last[digest] = done

        def start(_: object = None) -> None:
            maybeDeferred(call).chainDeferred(result)

        def finished(outcome: object) -> object:
            if self._last.get(digest) is done:
                del self._last[digest]
            done.callback(None)
            return outcome

        result.addBoth(finished)
        if before is None:
            start()
        else:
            before.addCallback(start)
        return result

    def busy(self) -> int:
        """How many digests have calls under way."""
        return len(self._last)
