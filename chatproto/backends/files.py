"""The interfaces between the core and where shared files are kept
(docs/protocol.md, section 20).

Two things are kept apart: the bytes (a :class:`FileStore`, one blob per
content, named by its SHA-256) and what describes each upload (a
:class:`FileRecords`: its id, room, name, owner and which message carries
it). Two uploads of the same bytes are two records and one blob; a blob is
removed once no record names it.

Every call answers with a Deferred: a store on local disk may fire at once
or from a worker thread, a shared one (an S3-compatible bucket, Redis)
when it has answered. Nothing here blocks the reactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

#: The most bytes one :meth:`FileStore.read` returns: downloads are read
#: piece by piece as the client takes them.
READ_PIECE = 1 << 20


class FileStoreError(Exception):
    """The store (or the records) could not do what was asked (nothing was
    changed)."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One upload: what a File (docs/protocol.md 20.1) shows, and what the
    server needs to authorise, count and delete it."""

    id: str  # 128 random bits, URL-safe base64 without padding
    digest: str  # SHA-256 of the bytes, hex: the blob's name
    room: str  # the room's key (a direct conversation's too)
    name: str  # cleaned (20.3)
    type: str  # media type (20.3)
    size: int
    owner: str  # an account's owner_of(), or a guest's author_of()
    uploaded: float
    width: int | None = None
    height: int | None = None
    thumb: str | None = None  # the thumbnail blob's digest
    seq: int | None = None  # the message that carries it; None until attached


class FileStore(Protocol):
    """The bytes, content-addressed. A blob's changes (put, delete) run in
    the order they were asked, whatever threads they run on."""

    def put(self, digest: str, path: str) -> Deferred[None]:
        """Keep the file at ``path`` (a finished temporary file, whose
        SHA-256 is ``digest``) as blob ``digest``; the caller removes
        ``path`` afterwards. Putting a blob that exists changes nothing."""

    def size(self, digest: str) -> Deferred[int | None]:
        """The blob's size in bytes, None if there is no such blob."""

    def read(self, digest: str, offset: int, length: int) -> Deferred[bytes]:
        """Up to ``min(length, READ_PIECE)`` bytes of the blob from
        ``offset`` (fewer only at its end, none past it); FileStoreError
        if there is no such blob."""

    def delete(self, digest: str) -> Deferred[None]:
        """Remove the blob (nothing if it is absent)."""

    def check(self) -> Deferred[None]:
        """Fires if the store answers; fails with FileStoreError if not."""


class FileRecords(Protocol):
    """What describes each upload, and the counts quotas need."""

    def add(self, record: StoredFile) -> Deferred[None]:
        """Keep a new upload (not yet attached); FileStoreError if its id is taken."""

    def get(self, id: str) -> Deferred[StoredFile | None]:
        """The upload with this id, None if there is none (or it was deleted)."""

    def attach(self, ids: list[str], room: str, seq: int) -> Deferred[None]:
        """Mark these uploads as carried by message ``seq`` of ``room``
        (those of another room, or attached already, are left as they are)."""

    def of_message(self, room: str, seq: int) -> Deferred[list[StoredFile]]:
        """The files a message carries, in the order they were attached."""

    def remove(self, ids: list[str]) -> Deferred[list[str]]:
        """Forget these uploads; fires with the digests (files' and
        thumbnails') that no remaining record names, for the caller to
        delete from the FileStore at once. A new upload of the same bytes
        is safe from this only if its record is added before its blob is
        put: then either the digest is still named here, or the delete was
        asked before the put and runs first."""

    def unattached_before(self, ts: float, limit: int) -> Deferred[list[StoredFile]]:
        """Up to ``limit`` uploads never attached and uploaded before ``ts``."""

    def used(self, owner: str) -> Deferred[int]:
        """Bytes of the uploads ``owner`` has (its quota's use)."""

    def used_by_all(self) -> Deferred[int]:
        """Bytes of every upload (the server's quota's use)."""
