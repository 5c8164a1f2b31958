"""MEMBERS and FOLLOW: a room's members page by page, and whom a connection follows.

Checks come in the order docs/protocol.md 22 gives. An answer waits for
what is already on its way to the connection (as a ROOM does), not for the
presence being gathered: a page asked for in a login storm must not flush
every turn, each flush a walk over every session. What it lists and the
follows it adds are of that moment; a JOINED or LEFT broadcast before it
goes to the followers it had when broadcast, so a new follower gets none
from before its follow and misses none after. The session pays for what it
gets: a unit more of its fair share for every ten members listed
(core/budget.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from chatproto import codec
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.broadcast import Broadcast
from chatproto.core.budget import ROWS_PER_UNIT
from chatproto.core.connection import Session, logged_in
from chatproto.core.following import Following
from chatproto.core.membership import Membership
from chatproto.core.rooms import ChatRoom
from chatproto.limits import Limits
from chatproto.rules import nick_key, normalise_nick

if TYPE_CHECKING:
    from chatproto.core.commands import CommandTarget


class MemberRequests:
    """MEMBERS and FOLLOW, each answered with MEMBERS."""

    def __init__(
        self, limits: Limits, broadcast: Broadcast, membership: Membership, following: Following
    ) -> None:
        self.limits = limits
        self.broadcast = broadcast
        self.membership = membership
        self.following = following

    def members(self, connection: CommandTarget, packet: codec.MembersRequest) -> Deferred[None]:
        """A page of the room's members in the order of their nick keys."""
        session = logged_in(connection)
        if packet.limit is not None and packet.limit < 1:
            raise ProtocolError(ErrorCode.BAD_PACKET, f"limit must be at least 1, not {packet.limit}")
        room = self.membership.member_room(session, packet.room)
        page = self.limits.members_page
        limit = page if packet.limit is None else min(packet.limit, page)
        prefix = nick_key(packet.prefix) if packet.prefix else ""

        def answer() -> tuple[list[int], str | None]:
            return room.page(packet.after, prefix, limit)

        return self._answer(connection, session, room, answer, packet.ref)

    def follow(self, connection: CommandTarget, packet: codec.Follow) -> Deferred[None]:
        """Follow these nicks in the room; the members among them, in key order."""
        session = logged_in(connection)
        room = self.membership.member_room(session, packet.room)
        keys = list(dict.fromkeys(nick_key(normalise_nick(nick)) for nick in packet.nicks))

        def answer() -> tuple[list[int], str | None]:
            self._follow(connection, session, room, keys)
            present = (room.member_by_key(key) for key in sorted(keys))
            return [member.id for member in present if member is not None], None

        return self._answer(connection, session, room, answer, packet.ref)

    def _answer(
        self,
        connection: CommandTarget,
        session: Session,
        room: ChatRoom,
        listed: Callable[[], tuple[list[int], str | None]],
        ref: str | None,
    ) -> Deferred[None]:
        """MEMBERS once what is on its way is delivered: the members
        ``listed`` gives then, each followed from then on."""
        answered: Deferred[None] = Deferred()

        def send() -> None:
            if connection.session is not session:
                answered.callback(None)  # gone meanwhile
                return
            if session.rooms.get(room.key) is not room:
                answered.errback(ProtocolError(ErrorCode.NOT_A_MEMBER, f"you left {room.name!r}"))
                return
            ids, after = listed()
            self._follow(connection, session, room, [room.members[id].key for id in ids])
            connection.charge(len(ids) / ROWS_PER_UNIT)
            peers = [room.peers[id] for id in ids]
            payload = codec.members_payload(room.name, peers, len(room.members), after, ref)
            connection.outbox.deliver(connection.wire.frame(payload))
            answered.callback(None)

        self.membership.when_ready([room], send)
        return answered

    def _follow(self, connection: CommandTarget, session: Session, room: ChatRoom, keys: list[str]) -> None:
        if keys and connection.wire.lazy and session.version >= 2:
            self.following.follow(connection, room.key, keys)
