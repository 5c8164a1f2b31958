"""Accounts: who may use a nick, how a password is checked, how guessing is
slowed, and which addresses may connect.

An account is a registered nick: only its password opens it. Guests use
any nick nobody registered, as version 1 always did. Nothing here sends a
packet; refusals are ProtocolErrors the transport turns into ERROR.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends.accounts import AccountRecord, AccountStore, Ban
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.limits import Limits, TokenBucket
from chatproto.passwords import Hasher, check_password
from chatproto.rules import nick_key

T = TypeVar("T")

log = Logger()

#: Failure records kept before the expired ones are dropped.
_RECORDS_KEPT = 10_000
#: An address may fail this many times more than an account before waiting:
#: several people may share it.
ADDRESS_FACTOR = 4
#: Seconds an account's session that ended without QUIT (a dropped link, a
#: reloaded page) may be taken up again with its last resume token instead
#: of the password: a browser tab that reloads stays logged in.
RESUME_GRACE = 60.0
#: Password checks under way at once for one account, from one address, and
#: in all: past these a guess is refused before it costs a hash.
GUESSES_PER_ACCOUNT, GUESSES_PER_ADDRESS, GUESSES_IN_ALL = 2, 4, 32


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
    """Slows guessing: wrong passwords per account, per address and per
    account from one address, each with its own count, waits doubling up to
    the lock-out.

    A guess counts as a failure when it starts and is refunded if it proves
    right, so guesses sent in parallel can't all pass :meth:`check` while
    their hashes run; how many run at once is bounded too. An address that
    has opened an account with its password before is the owner's: the
    account's and the address's waits, which an attacker elsewhere (or a
    neighbour behind the same address) runs up, don't apply to it there;
    only that pair's own count does.
    """

    def __init__(self, clock: IReactorTime, free: int, lockout: float) -> None:
        self.clock = clock
        self.free = free
        self.lockout = lockout
        self._records: dict[tuple[str, str], _Failures] = {}
        self._in_flight: dict[tuple[str, str], int] = {}
        self._checking = 0
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()

    def check(self, key: str, host: str) -> None:
        """locked_out (with its retry time) if this try must wait."""
        now = self.clock.seconds()
        until = self._until(("pair", f"{key} {host}"), now)
        if (key, host) not in self._known:
            until = max(until, self._until(("nick", key), now), self._until(("address", host), now))
        if until > now:
            wait = math.ceil(until - now)
            raise ProtocolError(
                ErrorCode.LOCKED_OUT,
                f"too many wrong passwords: try again in {wait} s",
                retry_after=wait,
            )

    def begin(self, key: str, host: str) -> None:
        """A guess starts: refused if it must wait or too many are under way;
        otherwise counted now (:meth:`end` refunds a right one)."""
        self.check(key, host)
        account, address = ("nick", key), ("address", host)
        if (
            self._in_flight.get(account, 0) >= GUESSES_PER_ACCOUNT
            or self._in_flight.get(address, 0) >= GUESSES_PER_ADDRESS
            or self._checking >= GUESSES_IN_ALL
        ):
            raise ProtocolError(
                ErrorCode.LOCKED_OUT, "passwords are being checked already: try again in 1 s", retry_after=1
            )
        for what in (account, address):
            self._in_flight[what] = self._in_flight.get(what, 0) + 1
        self._checking += 1
        self.failed(key, host)

    def end(self, key: str, host: str, outcome: str) -> None:
        """The guess's check is over: ``right``, ``wrong`` (or dropped with
        its connection: it stays counted), or ``void`` (refused before any
        password was compared: a weak new password, no such account)."""
        for what in (("nick", key), ("address", host)):
            left = self._in_flight.get(what, 0) - 1
            if left > 0:
                self._in_flight[what] = left
            else:
                self._in_flight.pop(what, None)
        self._checking -= 1
        if outcome == RIGHT:
            self.succeeded(key, host)
        elif outcome == VOID:
            now = self.clock.seconds()
            self._count(("nick", key), self.free, now, by=-1)
            self._count(("pair", f"{key} {host}"), self.free, now, by=-1)
            if host:
                self._count(("address", host), self.free * ADDRESS_FACTOR, now, by=-1)

    def _until(self, what: tuple[str, str], now: float) -> float:
        record = self._records.get(what)
        return record.until if record is not None else 0.0

    def failed(self, key: str, host: str) -> None:
        now = self.clock.seconds()
        self._count(("nick", key), self.free, now)
        self._count(("pair", f"{key} {host}"), self.free, now)
        if host:
            self._count(("address", host), self.free * ADDRESS_FACTOR, now)

    def _count(self, what: tuple[str, str], free: int, now: float, by: int = 1) -> None:
        record = self._records.get(what)
        if record is None or now - record.last > self.lockout:
            if len(self._records) >= _RECORDS_KEPT:
                self._expire(now)
            record = self._records[what] = _Failures(0, 0.0, now)
        record.count = max(0, record.count + by)
        if by > 0:
            record.last = now
        record.until = record.last + _wait(record.count, free, self.lockout) if record.count else 0.0

    def succeeded(self, key: str, host: str) -> None:
        """The account's and the pair's counts start again; the address's
        gets back only this try (one good password must not buy an address
        more guesses at others). The address is the owner's from now on."""
        self._records.pop(("nick", key), None)
        self._records.pop(("pair", f"{key} {host}"), None)
        if host and ("address", host) in self._records:
            self._count(("address", host), self.free * ADDRESS_FACTOR, self.clock.seconds(), by=-1)
        self._known[(key, host)] = None
        self._known.move_to_end((key, host))
        if len(self._known) > _RECORDS_KEPT:
            self._known.popitem(last=False)

    def _expire(self, now: float) -> None:
        for what, record in list(self._records.items()):
            if now - record.last > self.lockout:
                del self._records[what]


RIGHT, WRONG, VOID = "right", "wrong", "void"


def _outcome(result: object) -> str:
    """What a password check's result says of the guess."""
    if not isinstance(result, Failure):
        return RIGHT
    error = result.value
    if isinstance(error, ProtocolError) and error.code != ErrorCode.BAD_PASSWORD:
        return VOID
    return WRONG  # a wrong password, a dropped connection, a store that failed


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_PACKET, f"{text!r} is not an address or a network") from None


@functools.lru_cache(maxsize=4096)
def exempt(host: str) -> bool:
    """Loopback and Unix sockets are never limited per address (asked
    several times a connection: parsing the address each time was a
    login storm's cost)."""
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
        self, store: AccountStore, hasher: Hasher, clock: IReactorTime, limits: Limits, admins: list[str]
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.clock = clock
        self._admin_names = {nick_key(nick): nick for nick in admins}  # --admin, by key
        self.admins = frozenset(self._admin_names)
        # --admin accounts that carry the operator's mark: the admins now.
        self.confirmed: set[str] = set()
        self.setup_passwords: dict[str, str] = {}  # made at start, by key (shown once in the log)
        self.admins_checked: Deferred[None] = succeed(None)  # ensure_admins' work
        self._ended: dict[str, tuple[str, float]] = {}  # account key -> (last resume token, until)
        self.guard = Guard(clock, limits.login_failures, limits.lockout)
        self.limits = limits
        self._registrations: dict[str, TokenBucket] = {}  # per address
        self.bans: dict[str, Ban] = {}  # nick key -> server-wide ban

    def is_admin(self, record: AccountRecord | None) -> bool:
        """Rights belong to an account the operator made (or confirmed) for
        an --admin name, not to whoever registered that spelling."""
        return record is not None and record.admin and record.key in self.admins

    def ensure_admins(self) -> Deferred[None]:
        """At start: each --admin name's account. One that doesn't exist is
        made here, marked, with a one-time password written to the log for
        the operator (who logs in with it and changes it); one that someone
        registered gets no rights, and the log says so."""
        checks = [
            self.store.account(key).addCallback(self._ensure_admin, key, nick)
            for key, nick in self._admin_names.items()
        ]
        self.admins_checked = gatherResults(checks, consumeErrors=True).addCallback(lambda _: None)
        return self.admins_checked

    def _ensure_admin(self, record: AccountRecord | None, key: str, nick: str) -> Deferred[Any] | None:
        if record is not None:
            if record.admin:
                self.confirmed.add(key)
            else:
                log.warn(
                    "--admin {nick}: that account was registered by someone, not made for this server's "
                    "operator, so it gets no admin rights (name another admin, or delete it and restart)",
                    nick=nick,
                )
            return None
        password = secrets.token_urlsafe(12)

        def save(secret: str) -> Deferred[bool]:
            return self.store.create_account(AccountRecord(key, nick, secret, self.clock.seconds(), True))

        def made(created: bool) -> Deferred[Any] | None:
            if not created:  # another node of a cluster made it first, or someone registered it
                return self.store.account(key).addCallback(self._ensure_admin, key, nick)
            self.confirmed.add(key)
            self.setup_passwords[key] = password
            log.warn(
                "admin account {nick} made, with the one-time password {password}: log in with it "
                "and change it (the desktop client's Account menu, or ACCOUNT password)",
                nick=nick,
                password=password,
            )
            return None

        return self.hasher.hash(password).addCallback(save).addCallback(made)

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

    def session_ended(self, key: str, token: str) -> None:
        """An account's session ended without QUIT: its last resume token may
        open it again for RESUME_GRACE seconds, once."""
        now = self.clock.seconds()
        if len(self._ended) >= _RECORDS_KEPT:
            self._ended = {k: v for k, v in self._ended.items() if v[1] > now}
        self._ended[key] = (token, now + RESUME_GRACE)

    def _taken_up(self, key: str, token: str) -> bool:
        ended = self._ended.get(key)
        if ended is None or ended[1] <= self.clock.seconds():
            return False
        if not hmac.compare_digest(ended[0].encode("utf-8"), token.encode("utf-8")):
            return False
        del self._ended[key]
        return True

    def authenticate(
        self, key: str, password: str | None, host: str, version: int, resume: str | None = None
    ) -> Deferred[AccountRecord | None]:
        """The account a LOGIN opens, None for a guest; fails with
        nick_registered (nick_taken for version 1), bad_password, locked_out
        or banned. A session that ended lately opens with its last ``resume``
        token instead of the password (see RESUME_GRACE)."""
        self.check_ban(key)
        if password is None and resume is not None and version >= 2 and self._taken_up(key, resume):
            return self.store.account(key)
        if password is None:
            return self.store.account(key).addCallback(self._check, key, password, host, version)
        return self._guess(
            key, host, lambda: self.store.account(key).addCallback(self._check, key, password, host, version)
        )

    def _guess(self, key: str, host: str, check: Callable[[], Deferred[T]]) -> Deferred[T]:
        """A password check, counted by the guard from start to end; if the
        connection goes away, cancelling the result drops a hash still queued."""
        self.guard.begin(key, host)

        def over(result: T) -> T:
            self.guard.end(key, host, _outcome(result))
            return result

        return check().addBoth(over)

    def _check(
        self, record: AccountRecord | None, key: str, password: str | None, host: str, version: int
    ) -> Any:  # None for a guest, or the account's Deferred
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
        if not ok:  # counted when the guess began
            log.info("wrong password for {key} from {host}", key=key, host=host or "local")
            raise ProtocolError(ErrorCode.BAD_PASSWORD, "wrong nick or password")
        assert record is not None  # no record's check is never right
        return record

    def register(self, key: str, nick: str, password: str, host: str = "") -> Deferred[AccountRecord]:
        """A new account; refused past the address's registration rate or
        the server's cap on accounts (nobody fills the file from one host)."""
        check_password(password, nick)
        self._take_registration(host)
        d = self.store.account(key)

        def fresh(existing: AccountRecord | None) -> Deferred[str]:
            if existing is not None:
                raise ProtocolError(ErrorCode.ALREADY_REGISTERED, f"{nick!r} is already registered")
            return self.store.count_accounts().addCallback(below_cap)

        def below_cap(count: int) -> Deferred[str]:
            if count >= self.limits.max_accounts:
                log.warn("registration refused: {count} accounts, the cap", count=count)
                raise ProtocolError(ErrorCode.NOT_PERMITTED, "this server takes no more accounts")
            return self.hasher.hash(password)

        def save(secret: str) -> Deferred[AccountRecord]:
            record = AccountRecord(key, nick, secret, self.clock.seconds())
            return self.store.create_account(record).addCallback(made, record)

        def made(created: bool, record: AccountRecord) -> AccountRecord:
            if not created:  # registered meanwhile, here or on another node
                raise ProtocolError(ErrorCode.ALREADY_REGISTERED, f"{nick!r} is already registered")
            return record

        return d.addCallback(fresh).addCallback(save)

    def _take_registration(self, host: str) -> None:
        if exempt(host):
            return
        now = self.clock.seconds()
        bucket = self._registrations.get(host)
        if bucket is None:
            if len(self._registrations) >= _RECORDS_KEPT:
                self._registrations.clear()  # forgetting full buckets only forgives
            rate = self.limits.register_rate / 3600
            bucket = self._registrations[host] = TokenBucket(rate, self.limits.register_burst, now)
        if not bucket.take(now):
            wait = math.ceil(3600 / self.limits.register_rate)
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"too many accounts registered from your address: try again in {wait} s",
                retry_after=wait,
            )

    def _confirm(
        self, key: str, password: str, host: str, first: Callable[[AccountRecord], object] = lambda _: None
    ) -> Deferred[AccountRecord]:
        """The session's own account, once its current password is given
        (counted as a login's is); ``first`` checks the request before the KDF runs."""

        def verify(record: AccountRecord | None) -> Deferred[AccountRecord]:
            if record is None:
                raise ProtocolError(ErrorCode.NOT_REGISTERED, "this nick is not registered")
            first(record)
            return self.hasher.verify(password, record.secret).addCallback(self._verified, record, key, host)

        return self._guess(key, host, lambda: self.store.account(key).addCallback(verify))

    def change(self, key: str, password: str, new: str, host: str) -> Deferred[AccountRecord]:
        """A new password for an account, given its current one."""
        d = self._confirm(key, password, host, lambda record: check_password(new, record.nick))
        return d.addCallback(self._set, new)

    def reset(self, key: str, new: str) -> Deferred[AccountRecord]:
        """A new password set by an admin."""

        def found(record: AccountRecord | None) -> AccountRecord:
            if record is None:
                raise ProtocolError(ErrorCode.NO_SUCH_ACCOUNT, "no account has that nick")
            check_password(new, record.nick)
            return record

        return self.store.account(key).addCallback(found).addCallback(self._set, new)

    def _set(self, record: AccountRecord, new: str) -> Deferred[AccountRecord]:
        def save(secret: str) -> Deferred[AccountRecord]:
            updated = replace(record, secret=secret)  # the admin mark stays
            return self.store.save_account(updated).addCallback(lambda _: updated)

        return self.hasher.hash(new).addCallback(save)

    def delete(self, key: str, password: str, host: str) -> Deferred[AccountRecord]:
        def delete(record: AccountRecord) -> Deferred[AccountRecord]:
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
