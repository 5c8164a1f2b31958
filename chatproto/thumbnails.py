"""Images: what they are, how large, their thumbnails, and a JPEG's GPS
metadata taken out (docs/protocol.md 20.3).

Everything here reads or decodes files, so it runs on a worker thread,
never on the reactor. A file's kind is judged by its first bytes, never by
what the client said; its size is read from its header before anything is
decoded, so a decompression bomb (a small file declaring a huge picture)
is refused before Pillow allocates it.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

from PIL import Image, ImageOps

#: The largest side of a thumbnail, in pixels.
THUMB_SIDE = 320

#: The EXIF tag of the GPS block.
GPS_TAG = 0x8825

#: The EXIF tag of the orientation, and its values that turn the picture a
#: quarter (its width shown as its height).
ORIENTATION_TAG = 0x0112
_QUARTER_TURNS = frozenset((5, 6, 7, 8))

#: Media types recognised by their first bytes, whatever the client said.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff(head: bytes) -> str | None:
    """The image type a file's first bytes say, or None for any other file."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True, slots=True)
class Picture:
    """What an image turned out to be: its size after its EXIF
    orientation, and its thumbnail (a path, or None if none was made)."""

    width: int
    height: int
    thumb: str | None
    thumb_type: str | None


def declared_size(path: str) -> tuple[int, int] | None:
    """The width and height the file's header declares (Pillow reads only
    the header when opening), or None if it can't be read as an image."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None


def picture(path: str, kind: str, max_pixels: int, thumb_path: str) -> Picture | None:
    """Size and thumbnail of the image at ``path``; None if it is not one
    Pillow can read or it declares more than ``max_pixels`` pixels (it is
    then kept as a plain file)."""
    size = declared_size(path)
    if size is None or size[0] <= 0 or size[1] <= 0 or size[0] * size[1] > max_pixels:
        return None
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own check too, for every frame it decodes
    try:
        with Image.open(path) as image:
            image.seek(0)
            width, height = _upright_size(image)
            # A JPEG decoded at a reduced scale costs a fraction of the whole
            # photo; twice the thumbnail's side keeps the final shrink smooth.
            image.draft(None, (THUMB_SIDE * 2, THUMB_SIDE * 2))
            thumb = ImageOps.exif_transpose(image)
            thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
            return _saved(thumb, kind, thumb_path, width, height)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError, EOFError):
        return None


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The full picture's size as shown: read before any reduced decode,
    its sides swapped where the EXIF orientation turns it a quarter."""
    width, height = image.size
    if image.getexif().get(ORIENTATION_TAG) in _QUARTER_TURNS:
        return height, width
    return width, height


def _saved(thumb: Image.Image, kind: str, path: str, width: int, height: int) -> Picture:
    """The thumbnail written without metadata: JPEG for photographs, PNG
    for what may be transparent."""
    if kind == "image/jpeg" or (thumb.mode not in ("RGBA", "LA", "P") and kind != "image/png"):
        thumb.convert("RGB").save(path, "JPEG", quality=85)
        return Picture(width, height, path, "image/jpeg")
    if thumb.mode not in ("RGB", "RGBA", "L", "LA"):
        thumb = thumb.convert("RGBA")
    thumb.save(path, "PNG")
    return Picture(width, height, path, "image/png")


def strip_gps(path: str) -> bool:
    """Take the GPS block out of a JPEG's EXIF, in place, leaving every
    other byte as it was (no new encoding); True if there was one."""
    with open(path, "rb") as f:
        data = f.read()
    rewritten = _without_gps(data)
    if rewritten is None:
        return False
    tmp = path + ".nogps"
    with open(tmp, "wb") as f:
        f.write(rewritten)
    os.replace(tmp, path)
    return True


def _without_gps(data: bytes) -> bytes | None:
    """The JPEG with its EXIF segment's GPS block removed; None if it has none."""
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xDA:  # start of scan: the rest is the picture
            return None
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        segment = data[at + 4 : at + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            exif = Image.Exif()
            exif.load(segment[6:])
            if GPS_TAG not in exif:
                return None
            del exif[GPS_TAG]
            payload = b"Exif\x00\x00" + exif.tobytes()
            header = b"\xff\xe1" + struct.pack(">H", len(payload) + 2)
            return data[:at] + header + payload + data[at + 2 + length :]
        at += 2 + length
    return None


def has_gps(data: bytes) -> bool:
    """Whether a JPEG's EXIF holds a GPS block (for tests and checks)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return GPS_TAG in image.getexif()
    except OSError:
        return False
