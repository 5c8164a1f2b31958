"""Moderation: what room operators and server admins may do, and how each
action is refused, carried out, announced and recorded.

Every action that changes something is announced to the room as a MESSAGE
from whoever did it, with an ``action`` object saying what, and so is kept
in the room's history in its order (docs/protocol.md 15.6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.accounts import AccountStore, Ban
from chatproto.codec import ErrorCode, ProtocolError, required
from chatproto.core.accounts import Accounts, AddressGate
from chatproto.core.broadcast import Broadcast
from chatproto.core.connection import Connection, Session, logged_in
from chatproto.core.logins import Logins
from chatproto.core.membership import Membership
from chatproto.core.messages import Messages
from chatproto.core.peers import Peers
from chatproto.core.registry import Listing, Registry
from chatproto.core.room_rules import RuleKeeper
from chatproto.core.rooms import ChatRoom, Directory, RoomRules
from chatproto.limits import Limits
from chatproto.rules import clean_reason, nick_key, normalise_nick

log = Logger()

#: MODERATE ops that name a target.
_TARGETED = ("kick", "ban", "unban", "op", "deop", "invite", "voice", "devoice")

#: The longest room key (+k), as widely used IRC servers allow.
MAX_KEY = 23

#: The largest member limit (+l) a room may be given.
MAX_LIMIT = 100_000

#: MODERATE mode's fields, in the order they are checked and said.
_MODES = ("topic_lock", "invite_only", "moderated", "secret", "key", "limit")


def _ban_info(ban: Ban, target: str | None = None) -> codec.BanInfo:
    return codec.BanInfo(target or ban.target, ban.by, ban.ts, ban.reason, ban.until)


def _said(text: str, reason: str | None) -> str:
    return f"{text}: {reason}" if reason else text


def check_key(key: str) -> None:
    """A room key (+k): "" removes it; else 1 to MAX_KEY characters with no
    space, comma or control character, not starting with ``:``, so that IRC
    can carry it as one middle parameter of JOIN, MODE and 324."""
    bad = any(c in " ," or ord(c) < 32 or 127 <= ord(c) < 160 for c in key) or key.startswith(":")
    if len(key) > MAX_KEY or bad:
        raise ProtocolError(
            ErrorCode.BAD_PACKET,
            f"a room key is 1 to {MAX_KEY} characters with no space, comma or control character,"
            " not starting with ':'",
        )


def check_limit(limit: int) -> None:
    """A member limit (+l): 0 removes it; else 1 to MAX_LIMIT."""
    if isinstance(limit, bool) or not 0 <= limit <= MAX_LIMIT:
        raise ProtocolError(ErrorCode.BAD_PACKET, f"a room's limit is 1 to {MAX_LIMIT} members (0 for none)")


#: What a MODERATE mode record says of each field it changed.
_MODE_SAID: dict[str, Callable[[Any], str]] = {
    "topic_lock": lambda on: "locked the topic to operators" if on else "unlocked the topic",
    "invite_only": lambda on: "made the room invite-only" if on else "opened the room to everyone",
    "moderated": lambda on: "made the room moderated" if on else "let everyone speak",
    "secret": lambda on: "made the room secret" if on else "made the room public",
    "key": lambda key: "set the room's key" if key else "removed the room's key",
    "limit": lambda limit: f"limited the room to {limit} members" if limit else "removed the member limit",
}


class Moderation:
    """Room operators' and server admins' requests."""

    def __init__(
        self,
        clock: IReactorTime,
        limits: Limits,
        registry: Registry,
        directory: Directory,
        gate: AddressGate,
        accounts: Accounts | None,
        store: AccountStore | None,
        broadcast: Broadcast,
        membership: Membership,
        messages: Messages,
        logins: Logins,
        keeper: RuleKeeper,
        peers: Peers,
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.registry = registry
        self.directory = directory
        self.gate = gate
        self.accounts = accounts
        self.store = store
        self.broadcast = broadcast
        self.membership = membership
        self.messages = messages
        self.logins = logins
        self.keeper = keeper
        self.peers = peers

    # -- room operators ------------------------------------------------------------

    def moderate(self, connection: Connection, packet: codec.Moderate) -> None:
        session = logged_in(connection)
        room = self.membership.member_room(session, packet.room)
        handler = _ROOM_OPS.get(packet.op)
        if handler is None:
            raise ProtocolError(
                ErrorCode.BAD_PACKET, f"unknown MODERATE op {packet.op!r}: {', '.join(_ROOM_OPS)}"
            )
        if room.direct:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "a direct conversation has no operators")
        if not room.rules.is_op(session):
            raise ProtocolError(ErrorCode.NOT_OPERATOR, f"you are not an operator of {room.name!r}")
        target = None
        if packet.op in _TARGETED:
            if packet.target is None:
                raise ProtocolError(ErrorCode.BAD_PACKET, f"MODERATE {packet.op} needs a 'target'")
            target = normalise_nick(packet.target)
        reason = clean_reason(packet.reason, self.limits.max_text)
        handler(self, connection, session, room, target, reason, packet)

    def _present(self, room: ChatRoom, target: str) -> Session | None:
        """The member of ``room`` called ``target``, if any (by the registry's
        nick index, else among the room's members on other nodes)."""
        key = nick_key(target)
        held = self.registry.held(key)
        if held is None:  # a member on another node
            held = next((member for member in room.members.values() if member.key == key), None)
        return held if held is not None and held.rooms.get(room.key) is room else None

    def _member(self, room: ChatRoom, target: str) -> Session:
        member = self._present(room, target)
        if member is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"nobody called {target!r} is in {room.name!r}")
        return member

    def _record(
        self,
        connection: Connection | None,
        session: Session,
        room: ChatRoom,
        action: dict[str, Any],
        text: str,
        ref: str | None,
    ) -> None:
        self.messages.record(
            room, session, connection, {k: v for k, v in action.items() if v is not None}, text, ref
        )

    def _kick(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        member = self._member(room, target)
        if member.admin and not session.admin:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "a server admin can't be kicked by an operator")
        if member.key in room.rules.invites:  # kicked out is not invited back in
            room.rules.invites.discard(member.key)
            self.keeper.save(room)
        action = {"op": "kick", "target": member.nick, "reason": reason}
        self._record(connection, session, room, action, _said(f"kicked {member.nick}", reason), packet.ref)
        self.membership.remove(member, room, "kicked", reason)

    def _ban(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        key = nick_key(target)
        member = self._present(room, target)
        if member is not None and member.admin and not session.admin:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "a server admin can't be banned by an operator")
        room.rules.bans[key] = Ban(key, session.nick, self.clock.seconds(), reason)
        room.rules.ops.discard(key)
        room.rules.invites.discard(key)
        room.rules.voices.discard(key)
        self.keeper.save(room)
        shown = member.nick if member is not None else target
        action = {"op": "ban", "target": shown, "reason": reason}
        self._record(connection, session, room, action, _said(f"banned {shown}", reason), packet.ref)
        if member is not None:
            self.membership.remove(member, room, "kicked", reason)

    def _unban(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        if room.rules.bans.pop(nick_key(target), None) is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{target!r} is not banned from {room.name!r}")
        self.keeper.save(room)
        action = {"op": "unban", "target": target, "reason": reason}
        self._record(connection, session, room, action, _said(f"unbanned {target}", reason), packet.ref)

    def _grant(self, room: ChatRoom, member: Session, accounts: set[str], guests: set[int]) -> None:
        """Operator status or voice for a member: an account's for good
        (stored), a guest's while its session lasts."""
        if member.account:
            accounts.add(member.key)
            self.keeper.save(room)
        else:
            guests.add(member.id)
            self.keeper.save(room, stored=False)
        room.refresh(member)

    def _revoke(
        self, room: ChatRoom, target: str, member: Session | None, accounts: set[str], guests: set[int]
    ) -> bool:
        """Take operator status or voice from ``target``; False if it had none."""
        key = nick_key(target)
        if key not in accounts and (member is None or member.id not in guests):
            return False
        accounts.discard(key)
        if member is not None:
            guests.discard(member.id)
            room.refresh(member)
        self.keeper.save(room)
        return True

    def _op(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        member = self._member(room, target)
        self._grant(room, member, room.rules.ops, room.rules.guest_ops)
        action = {"op": "op", "target": member.nick, "reason": reason}
        self._record(connection, session, room, action, f"made {member.nick} an operator", packet.ref)

    def _deop(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        member = self._present(room, target)
        if not self._revoke(room, target, member, room.rules.ops, room.rules.guest_ops):
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{target!r} is not an operator of {room.name!r}")
        shown = member.nick if member is not None else target
        action = {"op": "deop", "target": shown, "reason": reason}
        self._record(connection, session, room, action, f"took operator status from {shown}", packet.ref)

    def _invite(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        key = nick_key(target)
        room.rules.invites.add(key)
        self.keeper.save(room)
        invitee = self.registry.held(key)
        shown = invitee.nick if invitee is not None else target
        action = {"op": "invite", "target": shown, "reason": reason}
        self._record(connection, session, room, action, f"invited {shown}", packet.ref)
        if invitee is not None and invitee.version >= 2:
            for device in invitee.devices:
                device.send(codec.Invited(room.name, session.nick))

    def _mode(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str | None,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        given = {name: getattr(packet, name) for name in _MODES if getattr(packet, name) is not None}
        if not given:
            raise ProtocolError(ErrorCode.BAD_PACKET, f"MODERATE mode needs one of {', '.join(_MODES)}")
        if "key" in given:
            check_key(given["key"])
        if "limit" in given:
            check_limit(given["limit"])
        rules = room.rules
        for name, value in given.items():
            setattr(rules, name, value)
        self.keeper.save(room)
        said = [_MODE_SAID[name](value) for name, value in given.items()]
        self._record(connection, session, room, {"op": "mode", **given}, " and ".join(said), packet.ref)

    def _voice(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        member = self._member(room, target)
        self._grant(room, member, room.rules.voices, room.rules.guest_voices)
        action = {"op": "voice", "target": member.nick, "reason": reason}
        self._record(connection, session, room, action, f"gave {member.nick} voice", packet.ref)

    def _devoice(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        member = self._present(room, target)
        if not self._revoke(room, target, member, room.rules.voices, room.rules.guest_voices):
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{target!r} has no voice in {room.name!r}")
        shown = member.nick if member is not None else target
        action = {"op": "devoice", "target": shown, "reason": reason}
        self._record(connection, session, room, action, f"took voice from {shown}", packet.ref)

    def _bans(
        self,
        connection: Connection,
        session: Session,
        room: ChatRoom,
        target: str | None,
        reason: str | None,
        packet: codec.Moderate,
    ) -> None:
        now = self.clock.seconds()
        bans = [_ban_info(ban) for ban in room.rules.bans.values() if ban.active(now)]
        connection.send(codec.BanList(bans, room.name, packet.ref))

    # -- server admins ---------------------------------------------------------------

    def admin(self, connection: Connection, packet: codec.AdminRequest) -> Deferred[None] | None:
        session = logged_in(connection)
        if not session.admin:  # before anything else: nothing of ADMIN is told to others
            raise ProtocolError(ErrorCode.NOT_ADMIN, "only the server's admins may do that")
        handler = _ADMIN_OPS.get(packet.op)
        if handler is None:
            raise ProtocolError(
                ErrorCode.BAD_PACKET, f"unknown ADMIN op {packet.op!r}: {', '.join(_ADMIN_OPS)}"
            )
        if packet.duration is not None and not (0 < packet.duration < 1e9):
            raise ProtocolError(ErrorCode.BAD_PACKET, "'duration' must be a positive number of seconds")
        reason = clean_reason(packet.reason, self.limits.max_text)
        return handler(self, connection, session, reason, packet)

    def _done(self, connection: Connection, packet: codec.AdminRequest, target: str) -> None:
        if connection.session is not None:
            connection.send(codec.Done(packet.op, target, packet.ref))

    def _sessions(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> Deferred[None]:
        """This node's lists, then every other node's (a cluster's)."""

        def answer(elsewhere: Listing) -> None:
            pending, connected = self.registry.listing()
            connection.send(codec.Sessions(pending + elsewhere[0], connected + elsewhere[1], packet.ref))

        return self.peers.sessions().addCallback(answer)

    def _close(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> None:
        room = self.directory.find(required(packet.room, "room", "ADMIN close"))
        if room is self.directory.default:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "the default room can't be closed")
        action = {"op": "close", "reason": reason}
        self._record(None, session, room, action, _said("closed the room", reason), None)
        for member in list(room.members.values()):
            self.membership.remove(member, room, "closed", reason)
        room.rules = RoomRules()
        if self.store is not None:
            self.store.forget_room(room.key).addErrback(
                lambda f: log.failure("could not forget room {room}", f, room=room.name)
            )
        self.directory.drop_if_empty(room)
        self._done(connection, packet, room.name)

    def _target_session(self, packet: codec.AdminRequest) -> tuple[str, Session | None]:
        target = normalise_nick(required(packet.target, "target", f"ADMIN {packet.op}"))
        return target, self.registry.held(nick_key(target))

    def _remove_from_server(self, session: Session, target: Session, op: str, reason: str | None) -> None:
        """Kicked or banned server-wide: recorded in each of its rooms, then disconnected."""
        done = (
            f"banned {target.nick} from the server" if op == "ban" else f"kicked {target.nick} off the server"
        )
        for room in list(target.rooms.values()):
            action = {"op": f"server_{op}", "target": target.nick, "reason": reason}
            self._record(None, session, room, action, _said(done, reason), None)
        # The records reach every member, the target too, before its BYE.
        self.broadcast.flush()
        self.broadcast.after_flushed(lambda: self._kick_off(target))

    def _kick_off(self, target: Session) -> None:
        self.logins.kick(target.id)

    def _server_kick(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> Deferred[None] | None:
        target, held = self._target_session(packet)
        if held is not None:
            self._remove_from_server(session, held, "kick", reason)
            self._done(connection, packet, held.nick)
            return None

        def sent(elsewhere: bool) -> None:
            if not elsewhere:
                raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody here is called {target!r}")
            self._done(connection, packet, target)

        return self.peers.kick(nick_key(target), session, reason).addCallback(sent)

    def kicked(self, by: Session, key: str, reason: str | None) -> None:
        """An admin on another node kicks this node's session holding ``key``
        (gone meanwhile: nothing to do)."""
        target = self.registry.held(key)
        if target is not None:
            self._remove_from_server(by, target, "kick", reason)

    def _until(self, packet: codec.AdminRequest) -> float | None:
        return None if packet.duration is None else self.clock.seconds() + packet.duration

    def _server_ban(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> None:
        target, held = self._target_session(packet)
        accounts = self._accounts()
        key = nick_key(target)
        if key in accounts.admins:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "an admin can't be banned: remove --admin first")
        ban = Ban(key, session.nick, self.clock.seconds(), reason, self._until(packet))
        accounts.bans[key] = ban
        self._store_ban("nick", ban)
        if held is not None:
            self._remove_from_server(session, held, "ban", reason)
        self._done(connection, packet, target)

    def _server_unban(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> None:
        target = normalise_nick(required(packet.target, "target", "ADMIN unban"))
        if self._accounts().bans.pop(nick_key(target), None) is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{target!r} is not banned from the server")
        self._lift_ban("nick", nick_key(target))
        self._done(connection, packet, target)

    def _ban_address(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> None:
        address = required(packet.address, "address", "ADMIN ban_address")
        gate = self.gate
        ban = gate.ban(Ban(address, session.nick, self.clock.seconds(), reason, self._until(packet)))
        self._store_ban("address", ban)
        for open_connection in list(self.registry.open.values()):
            if gate.banned(open_connection.host) is ban and open_connection is not connection:
                target = open_connection.session
                if target is not None and len(target.devices) == 1:
                    self._remove_from_server(session, target, "ban", reason)
                else:
                    self.logins.leave(open_connection, "kicked")
                    open_connection.disconnect("kicked")
        self._done(connection, packet, ban.target)

    def _unban_address(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> None:
        lifted = self.gate.lift(required(packet.address, "address", "ADMIN unban_address"))
        if lifted is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{packet.address!r} is not banned")
        self._lift_ban("address", lifted)
        self._done(connection, packet, lifted)

    def _server_bans(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> None:
        now = self.clock.seconds()
        bans = [_ban_info(b) for b in self._accounts().bans.values() if b.active(now)]
        bans += [_ban_info(b) for b in self.gate.bans.values() if b.active(now)]
        connection.send(codec.BanList(bans, None, packet.ref))

    def _reset(
        self, connection: Connection, session: Session, reason: str | None, packet: codec.AdminRequest
    ) -> Deferred[None]:
        target = normalise_nick(required(packet.target, "target", "ADMIN reset"))
        password = required(packet.password, "password", "ADMIN reset")
        d = self._accounts().reset(nick_key(target), password)
        return d.addCallback(lambda record: self._done(connection, packet, record.nick))

    def _accounts(self) -> Accounts:
        if self.accounts is None:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "this server keeps no accounts")
        return self.accounts

    def _store_ban(self, kind: str, ban: Ban) -> None:
        if self.store is not None:
            d = self.store.set_server_ban(kind, ban)
            self._tell_nodes(d).addErrback(lambda f: log.failure("could not store a ban", f))

    def _lift_ban(self, kind: str, target: str) -> None:
        if self.store is not None:
            d = self.store.lift_server_ban(kind, target)
            self._tell_nodes(d).addErrback(lambda f: log.failure("could not lift a ban", f))

    def _tell_nodes(self, stored: Deferred[Any]) -> Deferred[Any]:
        """Once stored, the other nodes (if any) read the bans again."""
        return stored.addCallback(lambda _: self.peers.bans_changed())


_ROOM_OPS: dict[str, Callable[..., None]] = {
    "kick": Moderation._kick,
    "ban": Moderation._ban,
    "unban": Moderation._unban,
    "op": Moderation._op,
    "deop": Moderation._deop,
    "invite": Moderation._invite,
    "mode": Moderation._mode,
    "voice": Moderation._voice,
    "devoice": Moderation._devoice,
    "bans": Moderation._bans,
}

_ADMIN_OPS: dict[str, Callable[..., Deferred[None] | None]] = {
    "sessions": Moderation._sessions,
    "close": Moderation._close,
    "kick": Moderation._server_kick,
    "ban": Moderation._server_ban,
    "unban": Moderation._server_unban,
    "ban_address": Moderation._ban_address,
    "unban_address": Moderation._unban_address,
    "bans": Moderation._server_bans,
    "reset": Moderation._reset,
}
