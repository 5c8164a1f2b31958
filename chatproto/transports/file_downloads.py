"""Downloads over HTTP (docs/protocol.md 20.4): the headers every file
answer carries, ``Range``, and the bytes streamed from the store a piece
at a time, the next only once the client has taken the last.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from chatproto.backends.files import READ_PIECE, FileStore
from chatproto.thumbnails import sniff

log = Logger()

FILE_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; sandbox",
    "cache-control": "private",
}


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The span ``[start, end)`` a ``Range`` header asks for (the whole file
    without one, or for one this server doesn't serve: several ranges);
    None if it can't be satisfied (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return 0, size
    first, _, last = header[6:].strip().partition("-")
    try:
        if not first:  # the last N bytes
            count = int(last)
            return (max(size - count, 0), size) if count > 0 and size > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return 0, size
    if start >= size or end <= start:
        return None
    return start, min(end, size)


@implementer(IPushProducer)
class BlobProducer:
    """A blob's bytes from ``start`` to ``end``, a piece at a time, read
    only when the client has taken the previous one (pause and resume)."""

    def __init__(
        self, store: FileStore, digest: str, start: int, end: int, request: Request, sniff_type: bool = False
    ) -> None:
        self.store = store
        self.digest = digest
        self.at = start
        self.end = end
        self.request = request
        self.sniff_type = sniff_type  # a thumbnail's type is in its first bytes
        self.paused = False
        self.reading = False
        self.stopped = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._next()

    def _next(self) -> None:
        if self.paused or self.reading or self.stopped:
            return
        if self.at >= self.end:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()
            return
        self.reading = True
        wanted = min(READ_PIECE, self.end - self.at)
        self.store.read(self.digest, self.at, wanted).addCallbacks(self._got, self._failed)

    def _got(self, data: bytes) -> None:
        self.reading = False
        if self.stopped:
            return
        if not data:  # the blob is shorter than it said: end it (the client sees it cut)
            self._failed(Failure(OSError("blob ended early")))
            return
        if self.sniff_type:
            self.sniff_type = False
            self.request.setHeader("content-type", sniff(data) or "application/octet-stream")
        self.at += len(data)
        self.request.write(data)
        self._next()

    def _failed(self, failure: Failure) -> None:
        self.reading = False
        log.failure("files: reading blob {digest} failed", failure, digest=self.digest)
        self.stopped = True
        self.request.unregisterProducer()
        channel: Any = self.request.channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._next()

    def stopProducing(self) -> None:
        self.stopped = True
