"""What an upload is, once its bytes are on disk (docs/protocol.md 20.3):
its cleaned name, its media type, and for an image its size and thumbnail.

:func:`examine` reads the whole file, so it runs on a worker thread; the
rest is pure.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass

from chatproto import thumbnails

#: Longest cleaned file name, in characters.
NAME_LENGTH = 200
#: The name given to a file whose name cleans to nothing.
DEFAULT_NAME = "file"
#: Longest name a client may send, in bytes of UTF-8.
NAME_BYTES = 255

_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
#: Bytes read at a time from a finished upload.
_PIECE = 1 << 16


def name_allowed(raw: str) -> bool:
    """Whether a client's file name is 1 to 255 bytes of UTF-8."""
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return 0 < size <= NAME_BYTES


def clean_name(raw: str) -> str:
    """Path separators, control characters and leading dots removed, cut
    to NAME_LENGTH characters; ``file`` if nothing is left."""
    kept = "".join(c for c in raw if c not in "/\\" and not unicodedata.category(c).startswith("C"))
    kept = kept.lstrip(".").strip()[:NAME_LENGTH]
    return kept or DEFAULT_NAME


def declared_type(header: str | None) -> str | None:
    """A client's Content-Type, if well-formed ``type/subtype`` (parameters dropped)."""
    if not header:
        return None
    kind = header.split(";", 1)[0].strip().lower()
    return kind if _TYPE.fullmatch(kind) else None


INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@dataclass(frozen=True, slots=True)
class Examined:
    """A finished upload, as it is to be kept."""

    type: str
    digest: str  # SHA-256 of the bytes kept (a JPEG's GPS block removed)
    size: int
    width: int | None = None
    height: int | None = None
    thumb: str | None = None  # the thumbnail's path
    thumb_digest: str | None = None
    thumb_type: str | None = None


def examine(path: str, declared: str | None, digest: str, max_pixels: int) -> Examined:
    """Judge the file at ``path`` (whose SHA-256 is ``digest``); on a
    worker thread: it reads the file, and may decode an image."""
    with open(path, "rb") as f:
        head = f.read(16)
    sniffed = thumbnails.sniff(head)
    if sniffed is None:
        kind = _other_type(path, declared)
        return Examined(kind, digest, os.path.getsize(path))
    if sniffed == "image/jpeg" and thumbnails.strip_gps(path):
        digest = file_digest(path)
    size = os.path.getsize(path)
    picture = thumbnails.picture(path, sniffed, max_pixels, path + ".thumb")
    if picture is None or picture.thumb is None:
        return Examined(sniffed, digest, size)
    return Examined(
        sniffed,
        digest,
        size,
        picture.width,
        picture.height,
        picture.thumb,
        file_digest(picture.thumb),
        picture.thumb_type,
    )


def _other_type(path: str, declared: str | None) -> str:
    if declared == "text/plain":
        return "text/plain" if is_utf8(path) else "application/octet-stream"
    return declared or "application/octet-stream"


def is_utf8(path: str) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while piece := f.read(_PIECE):
                decoder.decode(piece)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def file_digest(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(_PIECE):
            sha.update(piece)
    return sha.hexdigest()
