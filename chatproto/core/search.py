"""SEARCH: a session finds messages of its rooms by their words (docs/protocol.md 21).

Checks come in the order of 21.2; the index (backends/fts.py) is the
log's, which reads it off the reactor thread. A search waits for
everything broadcast before it, as a HISTORY page does, so a message the
session has seen is found. The session pays for what it gets: a unit more
of its fair share for every ten hits (core/budget.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from chatproto import codec
from chatproto.backends.accounts import AccountStore
from chatproto.backends.accounts import Membership as Remembered
from chatproto.backends.eventlog import EventLog
from chatproto.backends.fts import DEFAULT_LIMIT, MAX_LIMIT, Cursor, Found, Query, parse_words
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.broadcast import Broadcast
from chatproto.core.budget import ROWS_PER_UNIT
from chatproto.core.connection import Session, logged_in
from chatproto.core.membership import Membership
from chatproto.rules import nick_key, room_key

if TYPE_CHECKING:
    from chatproto.core.commands import CommandTarget


class Searches:
    """SEARCH requests, answered with RESULTS."""

    def __init__(
        self,
        clock: IReactorTime,
        eventlog: EventLog,
        membership: Membership,
        broadcast: Broadcast,
        store: AccountStore | None,
    ) -> None:
        self.clock = clock
        self.eventlog = eventlog
        self.membership = membership
        self.broadcast = broadcast
        self.store = store

    def search(self, connection: CommandTarget, packet: codec.Search) -> Deferred[None]:
        """Checked (21.2), then one page of hits once the broadcast before it
        is delivered; the hits are charged to the connection's fair share."""
        session = logged_in(connection)
        key = self.eventlog.search_key()  # a cluster's is known once its node has joined
        if key is None:
            raise ProtocolError(ErrorCode.NO_SEARCH, "this server does not search its history")
        cursor = Cursor(key)
        terms = tuple(parse_words(packet.words))
        about = _about(packet)
        # A first page has every match; the next ones only what was said
        # before it (a clock of another node a little ahead changes nothing).
        bounds: dict[str, int] = {}
        since_first: float | None = None
        if packet.page is not None:
            bounds, since_first = cursor.decode(about, packet.page)
        asof = self.clock.seconds() if since_first is None else since_first
        limit = min(max(packet.limit if packet.limit is not None else DEFAULT_LIMIT, 1), MAX_LIMIT)
        sender = None if packet.sender is None else nick_key(packet.sender)
        if packet.room is not None:
            rooms: Deferred[tuple[str, ...]] = succeed(
                (self.membership.member_room(session, packet.room).key,)
            )
        else:
            rooms = self._scope(session)

        def query(keys: tuple[str, ...]) -> Query:
            return Query(terms, keys, sender, packet.since, packet.until, limit, bounds, since_first)

        def answer(found: Found) -> None:
            connection.charge(len(found.hits) / ROWS_PER_UNIT)
            page = None if found.bounds is None else cursor.encode(about, found.bounds, asof)
            connection.send(codec.Results(found.hits, found.bounds is not None, page, packet.ref))

        answered: Deferred[None] = Deferred()

        def read() -> None:
            d = rooms.addCallback(lambda keys: self.eventlog.search(query(keys)))
            d.addCallback(answer).chainDeferred(answered)

        self.broadcast.after_all(read)
        return answered

    def _scope(self, session: Session) -> Deferred[tuple[str, ...]]:
        """The rooms a search without ``room`` looks in: the session's, and an
        account's remembered rooms and direct conversations."""
        keys = tuple(session.rooms)
        if self.store is None or not session.account:
            return succeed(keys)

        def remembered(memberships: list[Remembered]) -> tuple[str, ...]:
            extra = [room_key(m.room) for m in memberships]
            return tuple(dict.fromkeys([*keys, *extra]))

        return self.store.memberships(session.key).addCallback(remembered)


def _about(packet: codec.Search) -> str:
    """What a page is bound to: the search's fields but ``page`` and ``limit``."""
    fields = [packet.words, packet.room, packet.sender, packet.since, packet.until]
    return json.dumps(fields, ensure_ascii=False)
