"""A message's files as IRC shows them (docs/protocol.md 20.6): its text
and then a ``[name, size] URL`` line per file. In a room that is not open,
and in a conversation, each connection gets links signed for its own
session, so the wire leaves such a message to the connection to render.
"""

from __future__ import annotations

from typing import Any

from chatproto import codec
from chatproto.core.connection import Session
from chatproto.core.files import is_open
from chatproto.core.hub import Hub


def personal(hub: Hub, body: dict[str, Any]) -> bool:
    """Whether a MESSAGE's links must be signed for each connection."""
    if not body.get("files") or hub.files is None:
        return False
    room = hub.room_for(body.get("room") or "")
    return room is None or not is_open(room)


def with_links(hub: Hub, body: dict[str, Any], session: Session | None) -> dict[str, Any]:
    """The MESSAGE body with its files as lines of its text; links signed
    for ``session`` where the room is not open."""
    files = codec.files_of(body.get("files"))
    if not files or hub.files is None:
        return body
    signed = session if personal(hub, body) else None
    links = hub.files
    text = codec.file_lines(body.get("text", ""), files, lambda f: links.link(f, signed))
    return {**body, "text": text}
