"""Who runs a room and who may come in: the check at the door, the first
member's claim, and how a change of the rules is kept and shared.

Moderation and accounts change a room's rules; :meth:`RuleKeeper.save`
then stores them (what a restart keeps) and puts them in the room's order
as a :class:`~chatproto.core.records.RulesSet`, which other nodes apply.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatproto.backends.accounts import AccountStore
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.broadcast import Broadcast, Event
from chatproto.core.connection import Session
from chatproto.core.records import RulesSet
from chatproto.core.rooms import ChatRoom, RoomRules, kept_rules
from chatproto.rules import direct_members, nick_key

log = Logger()


class RuleKeeper:
    """Claims, stores and shares rooms' rules."""

    def __init__(self, clock: IReactorTime, store: AccountStore | None, broadcast: Broadcast) -> None:
        self.clock = clock
        self.store = store
        self.broadcast = broadcast

    def refusal(
        self, session: Session, room: ChatRoom, remembered: bool = False, key: str | None = None
    ) -> ProtocolError | None:
        """Why ``session`` may not join ``room``, or None, checked in the order
        of docs/protocol.md 15.5 (banned, invite_only, bad_key, room_full).
        Admins pass everything, operators everything but a ban; an invitation
        passes invite_only and room_full but not the key (as the widely used
        servers do); a remembered membership (a login coming back to its
        rooms) is no new member and passes all but a ban."""
        rules = room.rules
        if room.direct:  # its participants only, admins not excepted
            if session.account and session.key in {nick_key(n) for n in direct_members(room.name)}:
                return None
            return ProtocolError(ErrorCode.NOT_A_MEMBER, f"{room.name!r} is not your conversation")
        if session.admin:
            return None
        ban = rules.bans.get(session.key)
        if ban is not None and ban.active(self.clock.seconds()):
            return ProtocolError(ErrorCode.BANNED, f"you are banned from {room.name!r}")
        if remembered or rules.is_op(session):
            return None
        invited = session.key in rules.invites
        if rules.invite_only and not invited:
            return ProtocolError(ErrorCode.INVITE_ONLY, f"{room.name!r} is invite-only: ask an operator")
        if rules.key and key != rules.key:
            said = "a wrong key" if key else "no key"
            return ProtocolError(ErrorCode.BAD_KEY, f"{room.name!r} needs its key, and you gave {said}")
        if rules.limit and len(room.members) >= rules.limit and not invited:
            return ProtocolError(ErrorCode.ROOM_FULL, f"{room.name!r} is full ({rules.limit} members)")
        return None

    def claim(self, session: Session, room: ChatRoom) -> None:
        """The creator of a room nobody runs is its operator (an account for
        good, a guest while its session lasts). Rooms the server always has
        are run by its admins."""
        if room.permanent or room.direct or room.members or not room.rules.unclaimed:
            return
        if session.account:
            room.rules.ops.add(session.key)
            self.save(room)
        else:
            room.rules.guest_ops.add(session.id)
            self.save(room, stored=False)

    def save(self, room: ChatRoom, stored: bool = True) -> None:
        """Store the room's rules (``stored``: what a restart keeps changed)
        and put the change in the room's order."""
        if stored:
            self.keep(room)
        record = RulesSet(room.name, room.rules.shared_json(), tuple(sorted(room.rules.guest_ops)))
        self.broadcast.event(Event(room.key, None, None, record=record))

    def kept(self, key: str) -> Deferred[RoomRules | None]:
        """The rules an empty room keeps (docs/protocol.md 14.2), or None:
        what its next JOIN is judged by."""
        if self.store is None:
            return succeed(None)
        return self.store.rules(key).addCallback(kept_rules, False)

    def keep(self, room: ChatRoom) -> None:
        """Store the room's rules and its topic, in one record (so the topic
        lasts as long as the rules do)."""
        if self.store is not None:
            d = self.store.set_rules(room.key, room.kept_state())
            d.addErrback(lambda f: log.failure("could not store room {room}'s rules", f, room=room.name))
