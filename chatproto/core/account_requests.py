"""ACCOUNT register, password and delete, for the session's own nick."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto import codec
from chatproto.backends.accounts import AccountRecord, AccountStore
from chatproto.backends.eventlog import owner_of
from chatproto.codec import ErrorCode, ProtocolError, required
from chatproto.core.accounts import Accounts
from chatproto.core.connection import Connection, Session, logged_in
from chatproto.core.membership import Membership
from chatproto.core.observers import Observers
from chatproto.core.peers import Peers
from chatproto.core.room_rules import RuleKeeper
from chatproto.core.rooms import Directory

log = Logger()


class AccountRequests:
    """A session's own account: made, its password changed, deleted."""

    def __init__(
        self,
        accounts: Accounts | None,
        store: AccountStore | None,
        directory: Directory,
        membership: Membership,
        keeper: RuleKeeper,
        peers: Peers,
        observers: Observers | None = None,
    ) -> None:
        self.accounts = accounts
        self.observers = observers if observers is not None else Observers()
        self.store = store
        self.directory = directory
        self.membership = membership
        self.keeper = keeper
        self.peers = peers

    def account(self, connection: Connection, packet: codec.AccountRequest) -> Deferred[None]:
        session = logged_in(connection)
        accounts = self.accounts
        if accounts is None:
            raise ProtocolError(ErrorCode.NOT_PERMITTED, "this server keeps no accounts")
        what = f"ACCOUNT {packet.op}"
        d: Deferred[AccountRecord]
        if packet.op == "register":
            if session.account:
                raise ProtocolError(ErrorCode.ALREADY_REGISTERED, f"{session.nick!r} is already registered")
            password = required(packet.password, "password", what)
            d = accounts.register(session.key, session.nick, password, connection.host)
            d.addCallback(self._registered, session)
        elif packet.op == "password":
            _require_account(session)
            password = required(packet.password, "password", what)
            new = required(packet.new_password, "new_password", what)
            d = accounts.change(session.key, password, new, connection.host)
        elif packet.op == "delete":
            _require_account(session)
            d = accounts.delete(session.key, required(packet.password, "password", what), connection.host)
            d.addCallback(self._unregistered, session)
        else:
            raise ProtocolError(
                ErrorCode.BAD_PACKET, f"unknown ACCOUNT op {packet.op!r}: register, password, delete"
            )

        def done(_: object) -> None:
            log.info("{nick}: account {op}", nick=session.nick, op=packet.op)
            if connection.session is session:
                connection.send(codec.Done(packet.op, session.nick, packet.ref))

        return d.addCallback(done)

    def _registered(self, record: AccountRecord, session: Session) -> None:
        assert self.accounts is not None
        session.account = True
        session.admin = self.accounts.is_admin(record)  # never a registration's: see ensure_admins
        session.owner = owner_of(record.key, record.created)
        self.observers.notify("account", session.id, nick=session.nick)  # IRC's account-notify
        self.peers.save(session)  # a resume on another node finds an account's session
        for room in session.rooms.values():
            if session.id in room.rules.guest_ops:  # a guest's operator status becomes the account's
                room.rules.guest_ops.discard(session.id)
                room.rules.ops.add(session.key)
                self.keeper.save(room)
            if session.id in room.rules.guest_voices:  # and its voice (+v) too
                room.rules.guest_voices.discard(session.id)
                room.rules.voices.add(session.key)
                self.keeper.save(room)
            room.refresh(session)
            self.membership.remember(session, room)

    def _unregistered(self, record: AccountRecord, session: Session) -> None:
        """Rights die with the account: its admin mark went with its record,
        and no room keeps the nick as an operator for the next registrant."""
        assert self.accounts is not None and self.store is not None
        session.account = False
        session.admin = False
        session.owner = None  # a guest now: what it says is its session's
        self.observers.notify("account", session.id, nick=session.nick)  # IRC's account-notify
        self.accounts.confirmed.discard(record.key)
        for room in self.directory.rooms.values():
            if record.key in room.rules.ops or record.key in room.rules.voices:
                room.rules.ops.discard(record.key)
                room.rules.voices.discard(record.key)
                self.keeper.save(room)
        self.store.forget_operator(record.key).addErrback(
            lambda f: log.failure("could not take {nick}'s operator status away", f, nick=record.nick)
        )
        self.peers.save(session)
        for room in list(session.rooms.values()):
            if room.direct:  # a guest is in no conversation (docs/protocol.md 19.8)
                self.membership.remove(session, room, "part", None)
            else:
                room.refresh(session)


def _require_account(session: Session) -> None:
    if not session.account:
        raise ProtocolError(ErrorCode.NOT_REGISTERED, "log in to your account first")
