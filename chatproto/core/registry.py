"""Who is here: open connections, pending ones, sessions and the nick index.

Ids are given here and never reused while the server runs; nicks are
unique by :func:`~chatproto.rules.nick_key`; a resume token is checked in
constant time. Nothing here sends a packet: the room does that.
"""

from __future__ import annotations

import hmac
import itertools
import secrets

from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.connection import Connection, Session
from chatproto.rules import nick_key, normalise_nick


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Registry:
    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self._ids = itertools.count(1)
        self.open: dict[int, Connection] = {}  # every accepted connection
        self.pending: dict[int, Connection] = {}
        self.sessions: dict[int, Session] = {}
        self._nicks: dict[str, Session] = {}

    def admit(self, connection: Connection) -> bool:
        """Give the connection an id and make it pending; False if full."""
        if len(self.open) >= self.max_clients:
            return False
        connection.id = next(self._ids)
        self.open[connection.id] = connection
        self.pending[connection.id] = connection
        return True

    def claim(self, nick: str, resume: str | None) -> tuple[str, str, Session | None]:
        """(registered nick, key, the session to take over or None) for a
        LOGIN; ProtocolError bad_nick or nick_taken."""
        nick = normalise_nick(nick)
        key = nick_key(nick)
        held = self._nicks.get(key)
        if held is None:
            return nick, key, None
        if resume is None or not hmac.compare_digest(resume.encode("utf-8"), held.token.encode("utf-8")):
            raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {held.nick!r} is taken")
        return nick, key, held

    def register(self, connection: Connection, nick: str, key: str, now: float) -> Session:
        """A pending connection becomes a new session."""
        del self.pending[connection.id]
        session = Session(connection.id, nick, key, new_token(), connection, now)
        connection.session = session
        self.sessions[session.id] = session
        self._nicks[key] = session
        return session

    def take_over(self, connection: Connection, session: Session, now: float) -> Connection:
        """A pending connection resumes ``session``; returns the old connection."""
        old = session.connection
        del self.pending[connection.id]
        old.session = None
        self.open.pop(old.id, None)
        session.connection = connection
        session.token = new_token()
        session.since = now
        connection.session = session
        return old

    def remove(self, connection: Connection) -> Session | bool | None:
        """Forget a connection: its session if it had one, True if it was
        pending, None if it was already gone."""
        if self.open.pop(connection.id, None) is None:
            return None
        session = connection.session
        if session is not None:
            connection.session = None
            del self.sessions[session.id]
            del self._nicks[session.key]
            return session
        return self.pending.pop(connection.id, None) is not None

    def find(self, nick: str) -> Session | None:
        return self._nicks.get(nick_key(nick))

    def nick_keys(self) -> list[str]:
        return list(self._nicks)

    def clear(self) -> list[Connection]:
        """Forget everyone (shutdown); returns who was open."""
        connections = list(self.open.values())
        for connection in connections:
            connection.session = None
        self.open.clear()
        self.pending.clear()
        self.sessions.clear()
        self._nicks.clear()
        return connections
