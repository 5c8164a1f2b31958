"""Password hashing: scrypt with a per-account salt, off the reactor thread.

A stored secret carries its own parameters (``scrypt$N$r$p$salt$hash``, the
salt and hash in unpadded base64), so raising the cost later only affects
passwords set after the change; older ones keep verifying. SECURITY.md
documents the parameters and why.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from chatproto.codec import ErrorCode, ProtocolError

#: scrypt's cost: N (CPU and memory), r (block size), p (parallelism).
#: 128 * N * r bytes of memory per hash: 32 MiB.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
#: Shortest and longest password accepted when one is set.
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
#: Hashes run at once, at most: each holds 32 MiB for its duration.
CONCURRENT_HASHES = 2

T = TypeVar("T")


class _Run(Protocol):
    """How a :class:`Hasher` runs a call: its result, later."""

    def __call__(self, call: Callable[[], T], /) -> Deferred[T]: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=HASH_BYTES,
        maxmem=256 * n * r + 1024 * 1024,
    )


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The secret to store for ``password``: a fresh salt, scrypt, parameters kept."""
    salt = os.urandom(SALT_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(_scrypt(password, salt, n, r, p))}"


def verify_password(password: str, secret: str) -> bool:
    """Whether ``password`` matches a stored secret, compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = secret.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def check_password(password: str, nick: str) -> str:
    """The password unchanged if it may be set; weak_password otherwise."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ProtocolError(
            ErrorCode.WEAK_PASSWORD,
            f"a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long",
        )
    if password.casefold() == nick.casefold():
        raise ProtocolError(ErrorCode.WEAK_PASSWORD, "a password must not be the nick")
    return password


class _DaemonThread(threading.Thread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, daemon=True, **kwargs)


class _HashingThreads(ThreadPool):
    """Daemon threads: a hash in flight never keeps the process from
    exiting (a reactor that is never shut down, as under a test runner,
    never stops the pool)."""

    threadFactory = _DaemonThread


def _lowly(call: Callable[[], T]) -> T:
    """``call`` on this thread at the lowest priority (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: as it is
        pass
    return call()


class Hasher:
    """Runs the KDF where it can't stall the reactor: on the reactor's
    thread pool, at most CONCURRENT_HASHES at once. ``Hasher.inline()``
    runs it at once (tests on a ``task.Clock``)."""

    def __init__(self, run: _Run, cost: tuple[int, int, int]) -> None:
        self._run = run
        self.cost = cost
        # Verified against when the account does not exist, so that a wrong
        # nick costs the same time as a wrong password: made on the worker
        # the first time it is needed, not on the reactor thread at start.
        self._dummy: str | None = None

    @classmethod
    def threaded(cls, reactor: Any) -> Hasher:
        """On threads of its own, at the lowest CPU priority: a KDF must
        never hold the core from the reactor, nor from the history's
        checkpoint on the reactor's pool (a checkpoint preempted while it
        holds SQLite's lock made the next write wait up to its busy timeout:
        bystanders waited 120 ms while passwords were guessed)."""
        pool = _HashingThreads(0, CONCURRENT_HASHES, "password-hashing")
        reactor.callWhenRunning(pool.start)
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
        semaphore = DeferredSemaphore(CONCURRENT_HASHES)

        def run(call: Callable[[], T], /) -> Deferred[T]:
            return semaphore.run(deferToThreadPool, reactor, pool, lambda: _lowly(call))

        return cls(run, (SCRYPT_N, SCRYPT_R, SCRYPT_P))

    @classmethod
    def inline(cls, cost: tuple[int, int, int] = (2**10, 8, 1)) -> Hasher:
        """Synchronous and cheap: for tests only."""
        return cls(maybeDeferred, cost)

    @classmethod
    def for_reactor(cls, reactor: Any) -> Hasher:
        """Threaded on a real reactor, inline on a ``task.Clock``."""
        return cls.threaded(reactor) if hasattr(reactor, "getThreadPool") else cls.inline()

    def hash(self, password: str) -> Deferred[str]:
        return self._run(lambda: hash_password(password, *self.cost))

    def verify(self, password: str, secret: str | None) -> Deferred[bool]:
        """Whether it matches; with no secret (no such account), False after
        the same work as a real check."""
        if secret is None:
            return self._run(lambda: verify_password(password, self._dummy_secret()) and False)
        return self._run(lambda: verify_password(password, secret))

    def _dummy_secret(self) -> str:
        if self._dummy is None:  # two workers may both make one: either will do
            self._dummy = hash_password(os.urandom(12).hex(), *self.cost)
        return self._dummy
