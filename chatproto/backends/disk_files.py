"""Shared files' bytes in a directory on disk: the embedded server's
:class:`~chatproto.backends.files.FileStore` (``--files DIR``).

A blob is ``DIR/ab/cd/abcd…`` (its SHA-256 in hex, the first two pairs of
digits as folders so no folder holds more than a few thousand files). A
blob is written to a temporary file beside it, synced, then renamed into
place: a crash leaves the old state or the whole blob, never part of one.
Every touch of the disk runs on a worker thread: a blob may be large and
the disk slow, and the reactor must never wait for either.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from chatproto.backends.digest_order import DigestOrder
from chatproto.backends.files import READ_PIECE, FileStoreError

T = TypeVar("T")

_DIGEST = re.compile(r"[0-9a-f]{64}\Z")

#: How much of a file one step of a copy holds in memory.
COPY_PIECE = 1 << 20


def checked_digest(digest: str) -> str:
    """``digest`` if it is a SHA-256 in lowercase hex: a blob's name becomes
    a path or a key, so nothing else may reach one."""
    if not _DIGEST.match(digest):
        raise FileStoreError(f"not a SHA-256 digest: {digest!r}")
    return digest


def checked_range(offset: int, length: int) -> int:
    """How many bytes a read may return; refuses a negative offset or length."""
    if offset < 0 or length < 0:
        raise FileStoreError(f"bad range: offset {offset}, length {length}")
    return min(length, READ_PIECE)


def _sync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (its entry, not only the data)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskFileStore:
    """Blobs in ``directory``; disk work on ``pool`` (the reactor's by default)."""

    def __init__(self, directory: str, reactor: IReactorThreads, pool: ThreadPool | None = None) -> None:
        self.directory = os.path.abspath(directory)
        self._reactor = reactor
        self._pool = pool if pool is not None else reactor.getThreadPool()
        self._order = DigestOrder()

    def path(self, digest: str) -> str:
        """Where blob ``digest`` is kept."""
        return os.path.join(self.directory, digest[:2], digest[2:4], digest)

    def _thread(self, what: str, work: Callable[[], T]) -> Deferred[T]:
        def failed(f: Failure) -> Failure:
            if f.check(OSError):
                return Failure(FileStoreError(f"can't {what} in {self.directory!r}: {f.value}"))
            return f

        return deferToThreadPool(self._reactor, self._pool, work).addErrback(failed)

    def _blob(self, digest: str, what: str, work: Callable[[str], T], ordered: bool = False) -> Deferred[T]:
        """``work(path)`` on a thread; if ``ordered`` (a change), after the
        digest's earlier changes. Reads are not held up: many downloads of
        one file run side by side."""
        try:
            path = self.path(checked_digest(digest))
        except FileStoreError as e:
            return fail(e)
        if not ordered:
            return self._thread(f"{what} {digest}", lambda: work(path))
        return self._order.run(digest, lambda: self._thread(f"{what} {digest}", lambda: work(path)))

    def put(self, digest: str, path: str) -> Deferred[None]:
        return self._blob(digest, "keep", lambda target: self._copy(path, target), ordered=True)

    def _copy(self, source: str, target: str) -> None:
        if os.path.exists(target):
            return
        folder = os.path.dirname(target)
        made = [] if os.path.isdir(folder) else [os.path.dirname(folder), self.directory]
        os.makedirs(folder, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=os.path.basename(target) + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
                while piece := src.read(COPY_PIECE):
                    dst.write(piece)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(temporary, target)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        for synced in [folder, *made]:  # the new name, and any new folder's own
            _sync_folder(synced)

    def size(self, digest: str) -> Deferred[int | None]:
        def stat(path: str) -> int | None:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None

        return self._blob(digest, "measure", stat)

    def read(self, digest: str, offset: int, length: int) -> Deferred[bytes]:
        try:
            wanted = checked_range(offset, length)
        except FileStoreError as e:
            return fail(e)

        def pread(path: str) -> bytes:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise FileStoreError(f"no blob {digest} in {self.directory!r}") from None
            try:
                pieces: list[bytes] = []
                got = 0
                while got < wanted:
                    piece = os.pread(fd, wanted - got, offset + got)
                    if not piece:
                        break
                    pieces.append(piece)
                    got += len(piece)
                return b"".join(pieces)
            finally:
                os.close(fd)

        return self._blob(digest, "read", pread)

    def delete(self, digest: str) -> Deferred[None]:
        def unlink(path: str) -> None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

        return self._blob(digest, "delete", unlink, ordered=True)

    def check(self) -> Deferred[None]:
        """Makes the directory if it is missing, and proves it writable."""

        def probe() -> None:
            os.makedirs(self.directory, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory):
                pass

        return self._thread("write", probe)
