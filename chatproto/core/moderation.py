"""Moderation: what room operators and server admins may do, and how each
action is refused, carried out, announced and recorded.

Every action that changes something is announced to the room as a MESSAGE
from whoever did it, with an ``action`` object saying what, and so is kept
in the room's history in its order (docs/protocol.md 15.6).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.accounts import Ban
from chatproto.codec import ErrorCode, ProtocolError, required
from chatproto.core.broadcast import Event
from chatproto.core.connection import Connection, Session
from chatproto.core.rooms import ChatRoom, RoomRules
from chatproto.rules import clean_reason, nick_key, normalise_nick

log = Logger()

#: MODERATE ops that name a target.
_TARGETED = ("kick", "ban", "unban", "op", "deop", "invite")


def _ban_info(ban: Ban, target: str | None = None) -> codec.BanInfo:
    return codec.BanInfo(target or ban.target, ban.by, ban.ts, ban.reason, ban.until)


def _said(text: str, reason: str | None) -> str:
    return f"{text}: {reason}" if reason else text


class Moderation:
    """Room operators' and server admins' requests, for the hub."""

    def __init__(self, hub) -> None:
        self.hub = hub

    # -- who may come in ---------------------------------------------------------

    def refusal(self, session: Session, room: ChatRoom, remembered: bool = False) -> ProtocolError | None:
        """Why ``session`` may not join ``room`` (banned, invite-only), or
        None. A remembered membership counts as an invitation."""
        rules = room.rules
        if session.admin:
            return None
        ban = rules.bans.get(session.key)
        if ban is not None and ban.active(self.hub.clock.seconds()):
            return ProtocolError(ErrorCode.BANNED, f"you are banned from {room.name!r}")
        if rules.invite_only and not (remembered or session.key in rules.invites or rules.is_op(session)):
            return ProtocolError(ErrorCode.INVITE_ONLY, f"{room.name!r} is invite-only: ask an operator")
        return None

    def claim(self, session: Session, room: ChatRoom) -> None:
        """The creator of a room nobody runs is its operator (an account for
        good, a guest while its session lasts). Rooms the server always has
        are run by its admins."""
        if room.permanent or room.members or not room.rules.unclaimed:
            return
        if session.account:
            room.rules.ops.add(session.key)
            self.save_rules(room)
        else:
            room.rules.guest_ops.add(session.id)
            self.save_rules(room, stored=False)

    def save_rules(self, room: ChatRoom, stored: bool = True) -> None:
        """Store the room's rules (``stored``: what a restart keeps changed);
        on a cluster node, pass them to the other nodes in the room's order."""
        if stored:
            self.keep(room)
        if self.hub.cluster is not None:
            rules = {"rules": room.rules.to_json(), "guest_ops": sorted(room.rules.guest_ops)}
            self.hub.broadcast.event(
                Event(room.key, None, None, record={"t": "r", "room": room.name, **rules})
            )

    def keep(self, room: ChatRoom) -> None:
        """Store the room's rules and its topic, in one record (so the topic
        lasts as long as the rules do)."""
        if self.hub.store is not None:
            d = self.hub.store.set_rules(room.key, room.kept_state())
            d.addErrback(lambda f: log.failure("could not store room {room}'s rules", f, room=room.name))

    # -- room operators ------------------------------------------------------------

    def moderate(self, connection: Connection, packet: codec.Moderate) -> None:
        session = connection.session
        room = self.hub.member_room(session, packet.room)
        handler = _ROOM_OPS.get(packet.op)
        if handler is None:
            raise ProtocolError(
                ErrorCode.BAD_PACKET, f"unknown MODERATE op {packet.op!r}: {', '.join(_ROOM_OPS)}"
            )
        if not room.rules.is_op(session):
            raise ProtocolError(ErrorCode.NOT_OPERATOR, f"you are not an operator of {room.name!r}")
        target = None
        if packet.op in _TARGETED:
            if packet.target is None:
                raise ProtocolError(ErrorCode.BAD_PACKET, f"MODERATE {packet.op} needs a 'target'")
            target = normalise_nick(packet.target)
        reason = clean_reason(packet.reason, self.hub.limits.max_text)
        handler(self, connection, session, room, target, reason, packet)

    def _present(self, room: ChatRoom, target: str) -> Session | None:
        """The member of ``room`` called ``target``, if any (by the registry's
        nick index; on a cluster node, among the room's members elsewhere too)."""
        key = nick_key(target)
        held = self.hub.registry.held(key)
        if held is None and self.hub.cluster is not None:  # a member on another node
            held = next((member for member in room.members.values() if member.key == key), None)
        return held if held is not None and held.rooms.get(room.key) is room else None

    def _member(self, room: ChatRoom, target: str) -> Session:
        member = self._present(room, target)
        if member is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"nobody called {target!r} is in {room.name!r}")
        return member

    def _record(self, connection, session, room, action: dict, text: str, ref) -> None:
        self.hub.record(
            room, session, connection, {k: v for k, v in action.items() if v is not None}, text, ref
        )

    def _kick(self, connection, session, room, target, reason, packet) -> None:
        member = self._member(room, target)
        if member.admin and not session.admin:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "a server admin can't be kicked by an operator")
        if member.key in room.rules.invites:  # kicked out is not invited back in
            room.rules.invites.discard(member.key)
            self.save_rules(room)
        action = {"op": "kick", "target": member.nick, "reason": reason}
        self._record(connection, session, room, action, _said(f"kicked {member.nick}", reason), packet.ref)
        self.hub.remove_member(member, room, "kicked", reason)

    def _ban(self, connection, session, room, target, reason, packet) -> None:
        key = nick_key(target)
        member = self._present(room, target)
        if member is not None and member.admin and not session.admin:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "a server admin can't be banned by an operator")
        room.rules.bans[key] = Ban(key, session.nick, self.hub.clock.seconds(), reason)
        room.rules.ops.discard(key)
        room.rules.invites.discard(key)
        self.save_rules(room)
        shown = member.nick if member is not None else target
        action = {"op": "ban", "target": shown, "reason": reason}
        self._record(connection, session, room, action, _said(f"banned {shown}", reason), packet.ref)
        if member is not None:
            self.hub.remove_member(member, room, "kicked", reason)

    def _unban(self, connection, session, room, target, reason, packet) -> None:
        if room.rules.bans.pop(nick_key(target), None) is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{target!r} is not banned from {room.name!r}")
        self.save_rules(room)
        action = {"op": "unban", "target": target, "reason": reason}
        self._record(connection, session, room, action, _said(f"unbanned {target}", reason), packet.ref)

    def _op(self, connection, session, room, target, reason, packet) -> None:
        member = self._member(room, target)
        if member.account:
            room.rules.ops.add(member.key)
            self.save_rules(room)
        else:
            room.rules.guest_ops.add(member.id)
            self.save_rules(room, stored=False)
        room.refresh(member)
        action = {"op": "op", "target": member.nick, "reason": reason}
        self._record(connection, session, room, action, f"made {member.nick} an operator", packet.ref)

    def _deop(self, connection, session, room, target, reason, packet) -> None:
        key = nick_key(target)
        member = self._present(room, target)
        was = key in room.rules.ops or (member is not None and member.id in room.rules.guest_ops)
        if not was:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{target!r} is not an operator of {room.name!r}")
        room.rules.ops.discard(key)
        if member is not None:
            room.rules.guest_ops.discard(member.id)
            room.refresh(member)
        self.save_rules(room)
        shown = member.nick if member is not None else target
        action = {"op": "deop", "target": shown, "reason": reason}
        self._record(connection, session, room, action, f"took operator status from {shown}", packet.ref)

    def _invite(self, connection, session, room, target, reason, packet) -> None:
        key = nick_key(target)
        room.rules.invites.add(key)
        self.save_rules(room)
        invitee = self.hub.registry.held(key)
        shown = invitee.nick if invitee is not None else target
        action = {"op": "invite", "target": shown, "reason": reason}
        self._record(connection, session, room, action, f"invited {shown}", packet.ref)
        if invitee is not None and invitee.version >= 2:
            for device in invitee.devices:
                device.send(codec.Invited(room.name, session.nick))

    def _mode(self, connection, session, room, target, reason, packet) -> None:
        if packet.topic_lock is None and packet.invite_only is None:
            raise ProtocolError(ErrorCode.BAD_PACKET, "MODERATE mode needs 'topic_lock' or 'invite_only'")
        rules = room.rules
        said = []
        if packet.topic_lock is not None:
            rules.topic_lock = packet.topic_lock
            said.append("locked the topic to operators" if packet.topic_lock else "unlocked the topic")
        if packet.invite_only is not None:
            rules.invite_only = packet.invite_only
            said.append("made the room invite-only" if packet.invite_only else "opened the room to everyone")
        self.save_rules(room)
        action = {"op": "mode", "topic_lock": packet.topic_lock, "invite_only": packet.invite_only}
        self._record(connection, session, room, action, " and ".join(said), packet.ref)

    def _bans(self, connection, session, room, target, reason, packet) -> None:
        now = self.hub.clock.seconds()
        bans = [_ban_info(ban) for ban in room.rules.bans.values() if ban.active(now)]
        connection.send(codec.BanList(bans, room.name, packet.ref))

    # -- server admins ---------------------------------------------------------------

    def admin(self, connection: Connection, packet: codec.AdminRequest):
        session = connection.session
        if not session.admin:  # before anything else: nothing of ADMIN is told to others
            raise ProtocolError(ErrorCode.NOT_ADMIN, "only the server's admins may do that")
        handler = _ADMIN_OPS.get(packet.op)
        if handler is None:
            raise ProtocolError(
                ErrorCode.BAD_PACKET, f"unknown ADMIN op {packet.op!r}: {', '.join(_ADMIN_OPS)}"
            )
        if packet.duration is not None and not (0 < packet.duration < 1e9):
            raise ProtocolError(ErrorCode.BAD_PACKET, "'duration' must be a positive number of seconds")
        reason = clean_reason(packet.reason, self.hub.limits.max_text)
        return handler(self, connection, session, reason, packet)

    def _done(self, connection: Connection, packet, target: str) -> None:
        if connection.session is not None:
            connection.send(codec.Done(packet.op, target, packet.ref))

    def _sessions(self, connection, session, reason, packet) -> None:
        registry = self.hub.registry
        pending = [codec.PendingInfo(c.id, c.address, c.opened) for c in registry.pending.values()]
        connected = [
            codec.SessionInfo(
                s.id,
                s.nick,
                s.connection.address,
                s.since,
                [room.name for room in s.rooms.values()],
                s.account,
                len(s.devices),
            )
            for s in registry.sessions.values()
        ]
        connection.send(codec.Sessions(pending, connected, packet.ref))

    def _close(self, connection, session, reason, packet) -> None:
        room = self.hub.directory.find(required(packet.room, "room", "ADMIN close"))
        if room is self.hub.directory.default:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "the default room can't be closed")
        action = {"op": "close", "reason": reason}
        self._record(None, session, room, action, _said("closed the room", reason), None)
        for member in list(room.members.values()):
            self.hub.remove_member(member, room, "closed", reason)
        room.rules = RoomRules()
        if self.hub.store is not None:
            self.hub.store.forget_room(room.key).addErrback(
                lambda f: log.failure("could not forget room {room}", f, room=room.name)
            )
        self.hub.directory.drop_if_empty(room)
        self._done(connection, packet, room.name)

    def _target_session(self, packet) -> tuple[str, Session | None]:
        target = normalise_nick(required(packet.target, "target", f"ADMIN {packet.op}"))
        return target, self.hub.registry.held(nick_key(target))

    def _remove_from_server(self, session: Session, target: Session, op: str, reason: str | None) -> None:
        """Kicked or banned server-wide: recorded in each of its rooms, then disconnected."""
        done = (
            f"banned {target.nick} from the server" if op == "ban" else f"kicked {target.nick} off the server"
        )
        for room in list(target.rooms.values()):
            action = {"op": f"server_{op}", "target": target.nick, "reason": reason}
            self._record(None, session, room, action, _said(done, reason), None)
        # The records reach every member, the target too, before its BYE.
        self.hub.broadcast.flush()
        self.hub.broadcast.after_flushed(lambda: self.hub.kick(target.id))

    def _server_kick(self, connection, session, reason, packet) -> None:
        target, held = self._target_session(packet)
        if held is None:
            raise ProtocolError(ErrorCode.NO_SUCH_NICK, f"nobody here is called {target!r}")
        self._remove_from_server(session, held, "kick", reason)
        self._done(connection, packet, held.nick)

    def _until(self, packet) -> float | None:
        return None if packet.duration is None else self.hub.clock.seconds() + packet.duration

    def _server_ban(self, connection, session, reason, packet) -> None:
        target, held = self._target_session(packet)
        accounts = self._accounts()
        key = nick_key(target)
        if key in accounts.admins:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "an admin can't be banned: remove --admin first")
        ban = Ban(key, session.nick, self.hub.clock.seconds(), reason, self._until(packet))
        accounts.bans[key] = ban
        self._store_ban("nick", ban)
        if held is not None:
            self._remove_from_server(session, held, "ban", reason)
        self._done(connection, packet, target)

    def _server_unban(self, connection, session, reason, packet) -> None:
        target = normalise_nick(required(packet.target, "target", "ADMIN unban"))
        if self._accounts().bans.pop(nick_key(target), None) is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{target!r} is not banned from the server")
        self._lift_ban("nick", nick_key(target))
        self._done(connection, packet, target)

    def _ban_address(self, connection, session, reason, packet) -> None:
        address = required(packet.address, "address", "ADMIN ban_address")
        gate = self.hub.gate
        ban = gate.ban(Ban(address, session.nick, self.hub.clock.seconds(), reason, self._until(packet)))
        self._store_ban("address", ban)
        for open_connection in list(self.hub.registry.open.values()):
            if gate.banned(open_connection.host) is ban and open_connection is not connection:
                target = open_connection.session
                if target is not None and len(target.devices) == 1:
                    self._remove_from_server(session, target, "ban", reason)
                else:
                    self.hub.leave(open_connection, "kicked")
                    open_connection.disconnect("kicked")
        self._done(connection, packet, ban.target)

    def _unban_address(self, connection, session, reason, packet) -> None:
        lifted = self.hub.gate.lift(required(packet.address, "address", "ADMIN unban_address"))
        if lifted is None:
            raise ProtocolError(ErrorCode.NO_SUCH_MEMBER, f"{packet.address!r} is not banned")
        self._lift_ban("address", lifted)
        self._done(connection, packet, lifted)

    def _server_bans(self, connection, session, reason, packet) -> None:
        now = self.hub.clock.seconds()
        bans = [_ban_info(b) for b in self._accounts().bans.values() if b.active(now)]
        bans += [_ban_info(b) for b in self.hub.gate.bans.values() if b.active(now)]
        connection.send(codec.BanList(bans, None, packet.ref))

    def _reset(self, connection, session, reason, packet):
        target = normalise_nick(required(packet.target, "target", "ADMIN reset"))
        password = required(packet.password, "password", "ADMIN reset")
        d = self._accounts().reset(nick_key(target), password)
        d.addCallback(lambda record: self._done(connection, packet, record.nick))
        return d

    def _accounts(self):
        if self.hub.accounts is None:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "this server keeps no accounts")
        return self.hub.accounts

    def _store_ban(self, kind: str, ban: Ban) -> None:
        if self.hub.store is not None:
            d = self.hub.store.set_server_ban(kind, ban)
            self._tell_nodes(d).addErrback(lambda f: log.failure("could not store a ban", f))

    def _lift_ban(self, kind: str, target: str) -> None:
        if self.hub.store is not None:
            d = self.hub.store.lift_server_ban(kind, target)
            self._tell_nodes(d).addErrback(lambda f: log.failure("could not lift a ban", f))

    def _tell_nodes(self, stored: Deferred) -> Deferred:
        """On a cluster node: once stored, the other nodes read the bans again."""
        if self.hub.cluster is not None:
            stored.addCallback(lambda _: self.hub.cluster.bans_changed())
        return stored


_ROOM_OPS = {
    "kick": Moderation._kick,
    "ban": Moderation._ban,
    "unban": Moderation._unban,
    "op": Moderation._op,
    "deop": Moderation._deop,
    "invite": Moderation._invite,
    "mode": Moderation._mode,
    "bans": Moderation._bans,
}

_ADMIN_OPS = {
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
