"""The interface between the core and where accounts, remembered rooms,
room rules and server bans are kept.

Like the event log, every call answers with a Deferred: an embedded store
fires at once, a shared one when it has answered. Rooms and accounts are
named by their keys (:func:`chatproto.rules.nick_key`, ``room_key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred


@dataclass(frozen=True, slots=True)
class AccountRecord:
    key: str  # the nick's key: an account owns its nick
    nick: str  # as registered (NFKC, case kept)
    secret: str  # the KDF's output with its parameters (chatproto.passwords)
    created: float
    # Made (or confirmed) by the server's operator for an --admin name: rights
    # belong to this account, not to whoever registers the name later.
    admin: bool = False


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban on a nick (its key) or an address or network (CIDR)."""

    target: str
    by: str
    ts: float
    reason: str | None = None
    until: float | None = None  # Unix time; None: until lifted

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class Membership:
    """A room an account is in, and how far it has read there."""

    room: str  # the room's name
    read: int  # the seq of the last message read


class AccountStore(Protocol):
    def account(self, key: str) -> Deferred[AccountRecord | None]: ...

    def save_account(self, record: AccountRecord) -> Deferred[None]:
        """Make or replace an account."""

    def create_account(self, record: AccountRecord) -> Deferred[bool]:
        """Make an account unless its nick has one already (then False): two
        registrations racing, on one server or two, can't both win."""

    def delete_account(self, key: str) -> Deferred[None]:
        """Forget an account and its remembered rooms."""

    def count_accounts(self) -> Deferred[int]:
        """How many accounts there are (for the server-wide cap)."""

    def memberships(self, key: str) -> Deferred[list[Membership]]:
        """An account's rooms, in the order it joined them."""

    def remember(self, key: str, room: str, membership: Membership) -> Deferred[None]:
        """An account joined the room whose key is ``room``, or moved its
        read marker there."""

    def invite(self, key: str, room: str, membership: Membership) -> Deferred[None]:
        """Remember the room for the account unless it does already (a
        direct conversation it left comes back, its read marker kept)."""

    def forget(self, key: str, room: str) -> Deferred[None]:
        """An account left a room (``room`` is the room's key)."""

    def forget_room(self, room: str) -> Deferred[None]:
        """A room was closed: nobody remembers it and its rules (with its topic) go."""

    def forget_operator(self, key: str) -> Deferred[None]:
        """An account went: it is no room's operator any more (stored rules;
        rooms held in memory are the caller's)."""

    def rules(self, room: str) -> Deferred[dict | None]:
        """A room's stored rules (operators, bans, invites, modes) and the
        topic kept with them, as JSON-able data."""

    def set_rules(self, room: str, rules: dict) -> Deferred[None]: ...

    def server_bans(self) -> Deferred[list[tuple[str, Ban]]]:
        """Every server-wide ban: ("nick", ban) or ("address", ban)."""

    def set_server_ban(self, kind: str, ban: Ban) -> Deferred[None]: ...

    def lift_server_ban(self, kind: str, target: str) -> Deferred[None]: ...
