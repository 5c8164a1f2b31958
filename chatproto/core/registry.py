"""Who is here: open connections, pending ones, sessions and the nick index.

Ids are given here and never reused while the server runs; nicks are
unique by :func:`~chatproto.rules.nick_key`; a resume token is checked in
constant time. An account's session may have several connections
(devices); a guest's has one. Nothing here sends a packet: the hub does.
"""

from __future__ import annotations

import itertools
import secrets

from chatproto import codec
from chatproto.core.connection import Connection, Session
from chatproto.rules import nick_key


def new_token() -> bytes:
    """A device's resume token, as held: 24 random bytes (its text, sent
    in WELCOME, is made then: :func:`~chatproto.core.connection.token_text`)."""
    return secrets.token_bytes(24)


#: Pending connections and sessions, as ADMIN sessions lists them.
Listing = tuple[list[codec.PendingInfo], list[codec.SessionInfo]]


class Registry:
    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self._ids = itertools.count(1)
        # Ids start again at 1 when the server does: what a guest owns is
        # named with this run's epoch too (eventlog.author_of).
        self.epoch = secrets.token_hex(4) + "."
        self.open: dict[int, Connection] = {}  # every accepted connection
        self.reserved = 0  # places held by connections that are not chat ones yet (HTTP)
        self.pending: dict[int, Connection] = {}
        self.relayed: dict[int, Connection] = {}  # to the node their session is on
        self.sessions: dict[int, Session] = {}
        self._nicks: dict[str, Session] = {}

    def listing(self) -> Listing:
        """This node's pending connections and sessions, as ADMIN sessions shows them."""
        pending = [codec.PendingInfo(c.id, c.address, c.opened) for c in self.pending.values()]
        connected = [
            codec.SessionInfo(
                s.id,
                s.nick,
                s.connection.address if s.connection is not None else "",
                s.since,
                [room.name for room in s.rooms.values()],
                s.account,
                len(s.devices),
            )
            for s in self.sessions.values()
        ]
        return pending, connected

    def renumber(self, base: int) -> None:
        """Ids from ``base + 1`` on (a cluster node's own range)."""
        self._ids = itertools.count(base + 1)
        self.epoch = ""  # a cluster's ids are never given twice

    @property
    def full(self) -> bool:
        return len(self.open) + self.reserved >= self.max_clients

    def reserve(self) -> bool:
        """Hold a place for a connection that is no chat connection yet; False if full."""
        if self.full:
            return False
        self.reserved += 1
        return True

    def release(self) -> None:
        """A held place given back: its connection closed without becoming a chat one."""
        self.reserved -= 1

    def admit(self, connection: Connection, reserved: bool = False) -> bool:
        """Give the connection an id and make it pending; False if full.
        ``reserved``: it takes a place held for it (never refused)."""
        if reserved:
            self.reserved -= 1
        elif self.full:
            return False
        connection.id = next(self._ids)
        self.open[connection.id] = connection
        self.pending[connection.id] = connection
        return True

    def register(
        self, connection: Connection, nick: str, key: str, now: float, id: int | None = None
    ) -> Session:
        """A pending connection becomes a new session (with the id it had on
        another node of a cluster, if it resumed one there)."""
        del self.pending[connection.id]
        session = Session(connection.id if id is None else id, nick, key, connection, now)
        session.devices[connection] = new_token()
        connection.session = session
        self.sessions[session.id] = session
        self._nicks[key] = session
        return session

    def add_device(self, connection: Connection, session: Session, now: float) -> None:
        """A pending connection becomes one more device of ``session``."""
        del self.pending[connection.id]
        session.devices[connection] = new_token()
        session.connection = connection
        session.since = now
        connection.session = session

    def take_over(self, connection: Connection, session: Session, old: Connection, now: float) -> None:
        """A pending connection resumes the device ``old`` of ``session``."""
        del self.pending[connection.id]
        old.session = None
        self.open.pop(old.id, None)
        del session.devices[old]
        session.devices[connection] = new_token()
        session.connection = connection
        session.since = now
        connection.session = session

    def relay(self, connection: Connection) -> None:
        """A pending connection is relayed to another node (its session's):
        open here, neither pending nor a session."""
        del self.pending[connection.id]
        self.relayed[connection.id] = connection

    def remove(self, connection: Connection) -> Session | bool | None:
        """Forget a connection: its session if it had one (still registered
        if it has other devices), True if it was pending or relayed, None if
        it was already gone."""
        if self.open.pop(connection.id, None) is None:
            return None
        session = connection.session
        if session is not None:
            connection.session = None
            session.devices.pop(connection, None)
            if session.devices:
                if session.connection is connection:
                    session.connection = next(reversed(session.devices))
                return session
            del self.sessions[session.id]
            del self._nicks[session.key]
            return session
        was_pending = self.pending.pop(connection.id, None) is not None
        return self.relayed.pop(connection.id, None) is not None or was_pending

    def rename(self, session: Session, nick: str, key: str) -> None:
        """The session holds ``nick`` now, and its old nick is free (NICK)."""
        if self._nicks.get(session.key) is session:
            del self._nicks[session.key]
        session.nick, session.key = nick, key
        self._nicks[key] = session

    def find(self, nick: str) -> Session | None:
        return self._nicks.get(nick_key(nick))

    def held(self, key: str) -> Session | None:
        return self._nicks.get(key)

    def nick_keys(self) -> list[str]:
        return list(self._nicks)

    def clear(self) -> list[Connection]:
        """Forget everyone (shutdown); returns who was open."""
        connections = list(self.open.values())
        for connection in connections:
            connection.session = None
        self.open.clear()
        self.pending.clear()
        self.relayed.clear()
        self.sessions.clear()
        self._nicks.clear()
        return connections
