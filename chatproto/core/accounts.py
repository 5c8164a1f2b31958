"""Accounts: who may use a nick, how a password is checked, how guessing is
slowed, and which addresses may connect.

An account is a registered nick: only its password opens it. Guests use
any nick nobody registered, as version 1 always did. Nothing here sends a
packet; refusals are ProtocolErrors the transport turns into ERROR.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatproto.backends.accounts import AccountRecord, AccountStore, Ban
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.limits import Limits, TokenBucket
from chatproto.passwords import Hasher, check_password

log = Logger()

#: Failure records kept before the expired ones are dropped.
_RECORDS_KEPT = 10_000
#: An address may fail this many times more than an account before waiting:
#: several people may share it.
ADDRESS_FACTOR = 4


def _wait(failures: int, free: int, lockout: float) -> float:
    """Seconds before the next try after ``failures`` in a row: none for the
    first ``free``, then 1, 2, 4... up to ``lockout``."""
    if failures < free:
        return 0.0
    return min(lockout, 2.0 ** min(failures - free, 30))


@dataclass(slots=True)
class _Failures:
    count: int
    until: float  # no try before this
    last: float


class Guard:
    """Slows guessing: wrong passwords per account and per address, each
    with its own count, waits doubling up to the lock-out."""

    def __init__(self, clock: IReactorTime, free: int, lockout: float) -> None:
        self.clock = clock
        self.free = free
        self.lockout = lockout
        self._records: dict[tuple[str, str], _Failures] = {}

    def check(self, key: str, host: str) -> None:
        """locked_out (with its retry time) if the account or the address must wait."""
        now = self.clock.seconds()
        until = max(self._until(("nick", key), now), self._until(("address", host), now))
        if until > now:
            wait = math.ceil(until - now)
            raise ProtocolError(
                ErrorCode.LOCKED_OUT,
                f"too many wrong passwords: try again in {wait} s",
                retry_after=wait,
            )

    def _until(self, what: tuple[str, str], now: float) -> float:
        record = self._records.get(what)
        return record.until if record is not None else 0.0

    def failed(self, key: str, host: str) -> None:
        now = self.clock.seconds()
        self._count(("nick", key), self.free, now)
        if host:
            self._count(("address", host), self.free * ADDRESS_FACTOR, now)

    def _count(self, what: tuple[str, str], free: int, now: float) -> None:
        record = self._records.get(what)
        if record is None or now - record.last > self.lockout:
            if len(self._records) >= _RECORDS_KEPT:
                self._expire(now)
            record = self._records[what] = _Failures(0, 0.0, now)
        record.count += 1
        record.last = now
        record.until = now + _wait(record.count, free, self.lockout)

    def succeeded(self, key: str) -> None:
        """The account's count starts again (the address's does not: one
        good password must not buy an address more guesses at others)."""
        self._records.pop(("nick", key), None)

    def _expire(self, now: float) -> None:
        for what, record in list(self._records.items()):
            if now - record.last > self.lockout:
                del self._records[what]


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_PACKET, f"{text!r} is not an address or a network") from None


def exempt(host: str) -> bool:
    """Loopback and Unix sockets are never limited per address."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AddressGate:
    """Per-address connection counts, connection rate and address bans."""

    def __init__(self, clock: IReactorTime, limits: Limits) -> None:
        self.clock = clock
        self.limits = limits
        self.open: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.bans: dict[str, Ban] = {}  # network text -> ban
        self._networks: dict[str, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}

    def refuse(self, host: str) -> str | None:
        """Why a new connection from ``host`` is refused (its BYE reason), or None."""
        if self.banned(host) is not None:
            return "banned"
        if exempt(host):
            return None
        if self.open.get(host, 0) >= self.limits.max_per_address:
            return "too_many_connections"
        now = self.clock.seconds()
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= _RECORDS_KEPT:
                self._buckets.clear()  # full buckets all: forgetting them only forgives
            bucket = self._buckets[host] = TokenBucket(
                self.limits.address_rate, self.limits.address_burst, now
            )
        if not bucket.take(now):
            return "too_many_connections"
        return None

    def opened(self, host: str) -> None:
        if not exempt(host):
            self.open[host] = self.open.get(host, 0) + 1

    def closed(self, host: str) -> None:
        count = self.open.get(host, 0) - 1
        if count > 0:
            self.open[host] = count
        else:
            self.open.pop(host, None)

    def banned(self, host: str) -> Ban | None:
        if not self.bans or not host:
            return None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        now = self.clock.seconds()
        for text, ban in list(self.bans.items()):
            if not ban.active(now):
                del self.bans[text]
                del self._networks[text]
            elif address.version == self._networks[text].version and address in self._networks[text]:
                return ban
        return None

    def ban(self, ban: Ban) -> Ban:
        """Add a ban; its target is normalised to the network's text."""
        network = _network(ban.target)
        text = str(network)
        ban = Ban(text, ban.by, ban.ts, ban.reason, ban.until)
        self.bans[text] = ban
        self._networks[text] = network
        return ban

    def lift(self, target: str) -> str | None:
        text = str(_network(target))
        if self.bans.pop(text, None) is None:
            return None
        del self._networks[text]
        return text


class Accounts:
    """Registering, checking and changing passwords; server-wide nick bans."""

    def __init__(
        self, store: AccountStore, hasher: Hasher, clock: IReactorTime, limits: Limits, admins: frozenset[str]
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.clock = clock
        self.admins = admins  # account keys
        self.guard = Guard(clock, limits.login_failures, limits.lockout)
        self.bans: dict[str, Ban] = {}  # nick key -> server-wide ban

    def banned(self, key: str) -> Ban | None:
        ban = self.bans.get(key)
        if ban is not None and not ban.active(self.clock.seconds()):
            del self.bans[key]
            return None
        return ban

    def check_ban(self, key: str) -> None:
        ban = self.banned(key)
        if ban is not None:
            retry = None if ban.until is None else math.ceil(ban.until - self.clock.seconds())
            why = f": {ban.reason}" if ban.reason else ""
            raise ProtocolError(
                ErrorCode.BANNED, f"this nick is banned from the server{why}", retry_after=retry
            )

    def authenticate(
        self, key: str, password: str | None, host: str, version: int
    ) -> Deferred[AccountRecord | None]:
        """The account a LOGIN opens, None for a guest; fails with
        nick_registered (nick_taken for version 1), bad_password, locked_out
        or banned."""
        self.check_ban(key)
        if password is not None:
            self.guard.check(key, host)
        d = self.store.account(key)
        return d.addCallback(self._check, key, password, host, version)

    def _check(self, record: AccountRecord | None, key: str, password: str | None, host: str, version: int):
        if password is None:
            if record is None:
                return None
            if version == 1:
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {record.nick!r} is taken")
            raise ProtocolError(
                ErrorCode.NICK_REGISTERED, f"nick {record.nick!r} is registered: log in with its password"
            )
        d = self.hasher.verify(password, record.secret if record is not None else None)
        return d.addCallback(self._verified, record, key, host)

    def _verified(self, ok: bool, record: AccountRecord | None, key: str, host: str) -> AccountRecord:
        if not ok:
            self.guard.failed(key, host)
            log.info("wrong password for {key} from {host}", key=key, host=host or "local")
            raise ProtocolError(ErrorCode.BAD_PASSWORD, "wrong nick or password")
        self.guard.succeeded(key)
        return record

    def register(self, key: str, nick: str, password: str) -> Deferred[AccountRecord]:
        check_password(password, nick)
        d = self.store.account(key)

        def fresh(existing: AccountRecord | None):
            if existing is not None:
                raise ProtocolError(ErrorCode.ALREADY_REGISTERED, f"{nick!r} is already registered")
            return self.hasher.hash(password)

        def save(secret: str):
            record = AccountRecord(key, nick, secret, self.clock.seconds())
            return self.store.save_account(record).addCallback(lambda _: record)

        return d.addCallback(fresh).addCallback(save)

    def _confirm(
        self, key: str, password: str, host: str, first: Callable[[AccountRecord], object] = lambda _: None
    ) -> Deferred[AccountRecord]:
        """The session's own account, once its current password is given
        (counted as a login's is); ``first`` checks the request before the KDF runs."""
        self.guard.check(key, host)

        def verify(record: AccountRecord | None):
            if record is None:
                raise ProtocolError(ErrorCode.NOT_REGISTERED, "this nick is not registered")
            first(record)
            return self.hasher.verify(password, record.secret).addCallback(self._verified, record, key, host)

        return self.store.account(key).addCallback(verify)

    def change(self, key: str, password: str, new: str, host: str) -> Deferred[AccountRecord]:
        """A new password for an account, given its current one."""
        d = self._confirm(key, password, host, lambda record: check_password(new, record.nick))
        return d.addCallback(self._set, new)

    def reset(self, key: str, new: str) -> Deferred[AccountRecord]:
        """A new password set by an admin."""

        def found(record: AccountRecord | None):
            if record is None:
                raise ProtocolError(ErrorCode.NO_SUCH_ACCOUNT, "no account has that nick")
            check_password(new, record.nick)
            return record

        return self.store.account(key).addCallback(found).addCallback(self._set, new)

    def _set(self, record: AccountRecord, new: str) -> Deferred[AccountRecord]:
        def save(secret: str):
            updated = AccountRecord(record.key, record.nick, secret, record.created)
            return self.store.save_account(updated).addCallback(lambda _: updated)

        return self.hasher.hash(new).addCallback(save)

    def delete(self, key: str, password: str, host: str) -> Deferred[AccountRecord]:
        def delete(record: AccountRecord):
            return self.store.delete_account(key).addCallback(lambda _: record)

        return self._confirm(key, password, host).addCallback(delete)

    def load_bans(self, gate: AddressGate) -> Deferred[None]:
        """Server-wide bans from the store, in place of those held: at start,
        and on a cluster node when another node changed them."""

        def loaded(bans: list[tuple[str, Ban]]) -> None:
            now = self.clock.seconds()
            self.bans.clear()
            for target in list(gate.bans):
                gate.lift(target)
            for kind, ban in bans:
                if not ban.active(now):
                    continue
                if kind == "nick":
                    self.bans[ban.target] = ban
                else:
                    gate.ban(ban)

        return self.store.server_bans().addCallback(loaded)
