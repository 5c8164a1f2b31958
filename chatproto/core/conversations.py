"""Direct conversations (docs/protocol.md 19.8): OPEN, and bringing back
the participants who left one when something is said in it.

A conversation is a room whose name lists its accounts; each participant's
account remembers it like a room. Membership does the entering; this says
who enters.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.accounts import AccountRecord, AccountStore
from chatproto.backends.accounts import Membership as Remembered
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.connection import Connection, Session, logged_in
from chatproto.core.membership import Membership, stored
from chatproto.core.registry import Registry
from chatproto.core.rooms import ChatRoom, Directory
from chatproto.deferreds import every
from chatproto.rules import MAX_DIRECT, direct_members, direct_name, nick_key, normalise_nick

log = Logger()


class Conversations:
    """Opens direct conversations and keeps their participants in them."""

    def __init__(
        self,
        store: AccountStore | None,
        registry: Registry,
        directory: Directory,
        membership: Membership,
    ) -> None:
        self.store = store
        self.registry = registry
        self.directory = directory
        self.membership = membership
        self._participants: dict[str, list[tuple[str, str]]] = {}  # room key -> (key, nick)s
        self._owned: dict[str, dict[str, float]] = {}  # room key -> account key -> created

    def open(self, connection: Connection, packet: codec.Open) -> Deferred[None]:
        """OPEN: the conversation's ROOM to the requester (with the ref),
        and the others brought in."""
        session = logged_in(connection)
        store = self.store
        if not session.account or store is None:
            raise ProtocolError(
                ErrorCode.NOT_REGISTERED, "direct conversations are between accounts: register first"
            )
        others: dict[str, str] = {}
        for name in packet.with_:
            key = nick_key(normalise_nick(name))
            if key != session.key:
                others[key] = name
        if not 1 <= len(others) < MAX_DIRECT:
            raise ProtocolError(
                ErrorCode.BAD_PACKET, f"'with' must name 1 to {MAX_DIRECT - 1} accounts other than yours"
            )
        keys = [session.key, *others]
        reads = every(store.account(key) for key in keys)

        def found(records: list[AccountRecord | None]) -> Deferred[None]:
            for name, record in zip(others.values(), records[1:], strict=True):
                if record is None:
                    raise ProtocolError(ErrorCode.NO_SUCH_ACCOUNT, f"{name!r} has no account")
            accounts = {record.key: record for record in records if record is not None}
            room = self.directory.conversation(direct_name([record.nick for record in accounts.values()]))
            return self._owners(room).addCallback(opened, room, accounts)

        def opened(owners: dict[str, float], room: ChatRoom, accounts: dict[str, AccountRecord]) -> None:
            if not owners:
                owners.update({key: record.created for key, record in accounts.items()})
                assert store is not None
                stored(
                    store.set_rules(room.key, {"direct": owners}), "keep {nick}'s conversation", session.nick
                )
            stale = [record.nick for key, record in accounts.items() if owners.get(key) != record.created]
            if stale:
                raise ProtocolError(
                    ErrorCode.NO_SUCH_ACCOUNT,
                    f"{stale[0]!r} is a newer account of that name: the conversation was with an earlier one",
                )
            if connection.session is not session:
                return
            self._bring(session, room, connection, packet.ref)
            for key, record in accounts.items():
                if key != session.key:
                    self._summon(key, record.nick, room)

        return reads.addCallback(found)

    def said(self, room: ChatRoom) -> None:
        """Something was said in a conversation: its participants who left
        it come back (docs/protocol.md 19.8), if their account is the one
        the conversation was opened with."""
        present = {member.key for member in room.members.values()}
        absent = [(key, nick) for key, nick in self.participants(room) if key not in present]
        if not absent or self.store is None:
            return
        store = self.store

        def summon(owners: dict[str, float]) -> None:
            for key, nick in absent:
                store.account(key).addCallback(self._summon_owner, owners, key, nick, room)

        self._owners(room).addCallback(summon).addErrback(
            lambda f: log.failure("could not bring {room}'s participants back", f, room=room.name)
        )

    def _summon_owner(
        self, record: AccountRecord | None, owners: dict[str, float], key: str, nick: str, room: ChatRoom
    ) -> None:
        if record is not None and owners.get(key) == record.created:
            self._summon(key, record.nick, room)

    def _owners(self, room: ChatRoom) -> Deferred[dict[str, float]]:
        """The accounts a conversation was opened by, as their creation times
        (empty before its first OPEN): an account deleted and its name
        registered again is someone else, who must not read it."""
        assert self.store is not None  # conversations are between accounts
        known = self._owned.get(room.key)
        if known is not None:
            return succeed(known)

        def read(data: dict[str, Any] | None) -> dict[str, float]:
            owners = dict((data or {}).get("direct") or {})
            if owners:
                if len(self._owned) >= 4096:
                    self._owned.clear()
                self._owned[room.key] = owners
            return owners

        return self.store.rules(room.key).addCallback(read)

    def participants(self, room: ChatRoom) -> list[tuple[str, str]]:
        found = self._participants.get(room.key)
        if found is None:
            if len(self._participants) >= 4096:
                self._participants.clear()
            found = self._participants[room.key] = [(nick_key(n), n) for n in direct_members(room.name)]
        return found

    def _bring(self, session: Session, room: ChatRoom, requester: Connection | None, ref: str | None) -> None:
        """``session`` in the conversation, its devices told (the requester
        with ``ref``); already in, the requester gets its ROOM again."""
        membership = self.membership
        if not room.ready.called:  # its history and rules first, as for JOIN
            gatherResults([room.ready]).addCallback(lambda _: self._bring(session, room, requester, ref))
            return
        if session.devices == {} or (requester is not None and requester.session is not session):
            return  # gone meanwhile
        if session.rooms.get(room.key) is room:
            if requester is not None:
                membership.when_ready(
                    [room],
                    lambda: membership.send_room(session, room, ref, listen=False, devices=[requester]),
                )
            return
        membership.enter(session, room)
        membership.remember(session, room)
        membership.when_ready([room], lambda: membership.send_room(session, room, ref, requester=requester))

    def _summon(self, key: str, nick: str, room: ChatRoom) -> None:
        """A participant into the conversation: at once if its session is
        here, at its next login otherwise (its account remembers it)."""
        session = self.registry.held(key)
        if session is not None and session.account and session.connection is not None:
            self._bring(session, room, None, None)
        elif self.store is not None:
            stored(self.store.invite(key, room.key, Remembered(room.name, 0)), "invite {nick}", nick)
