"""Deferred helpers the backends and the core share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.python.failure import Failure


def every(ds: Iterable[Deferred[Any]]) -> Deferred[list[Any]]:
    """All of ``ds``' results, or the failure of the first that failed as
    itself (not wrapped in ``FirstError``), so callers can ``check()`` it;
    every other failure is consumed, none is left unhandled."""
    return gatherResults(list(ds), consumeErrors=True).addErrback(_unwrapped)


def _unwrapped(failure: Failure) -> Failure:
    error = failure.value
    return error.subFailure if isinstance(error, FirstError) else failure
