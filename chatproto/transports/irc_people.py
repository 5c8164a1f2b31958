"""Who is who, as IRC asks it (docs/protocol.md, 17.10): real names,
recent departures (WHOWAS), the most users seen (LUSERS), and the lines
that tell a session's IRC peers on this node that its real name or account
changed (setname, account-notify).

One :class:`IrcPeople` per hub (:func:`people_of`): it watches the hub's
observers for departures and account changes, so it holds nothing a
departed session could leave behind but its WHOWAS entry.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatproto.core.connection import HubEvent, Session
from chatproto.rules import nick_key

if TYPE_CHECKING:
    from chatproto.core.hub import Hub

#: Departures WHOWAS remembers, per node: the oldest go first.
WHOWAS_KEPT = 500
#: Bytes of a real name (USER's or SETNAME's); longer ones are refused (NAMELEN in 005).
NAMELEN = 200


@dataclass(frozen=True, slots=True)
class Departure:
    """One WHOWAS entry: who left, as what, and when."""

    nick: str
    key: str
    realname: str
    ts: float


class IrcPeople:
    """Real names of this node's sessions (their nick unless an IRC client
    gave one), the last :data:`WHOWAS_KEPT` departures, and the most
    sessions seen at once."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._realnames: dict[int, str] = {}  # session id -> what USER or SETNAME gave
        self.departures: deque[Departure] = deque()  # oldest first, at most WHOWAS_KEPT
        self._by_key: dict[str, deque[Departure]] = {}  # nick key -> its departures, oldest first
        self.most = 0  # the most sessions seen at once (265/266)
        self.wires: dict[tuple[str, frozenset[str]], Any] = {}  # the hub's IrcWires (irc.wire_for)
        hub.observers.append(self._observe)

    # -- real names ----------------------------------------------------------------------

    def realname(self, session: Session) -> str:
        """A session's real name: what its IRC client gave, else its nick."""
        return self._realnames.get(session.id) or session.nick

    def set_realname(self, session: Session, realname: str) -> None:
        self._realnames[session.id] = realname

    def seen(self) -> int:
        """This node's sessions now; the most ever is kept up to date."""
        count = len(self.hub.registry.sessions)
        self.most = max(self.most, count)
        return count

    # -- what the hub tells --------------------------------------------------------------

    def _observe(self, event: HubEvent) -> None:
        if event.kind == "joined":
            self.seen()
        elif event.kind == "left" and event.nick is not None:
            self._left(event)
        elif event.kind == "account" and event.nick is not None:
            self._account_changed(event.nick)

    def _left(self, event: HubEvent) -> None:
        """A session is gone from this node: a WHOWAS entry, its real name forgotten."""
        assert event.nick is not None
        realname = self._realnames.pop(event.id, None) or event.nick
        departure = Departure(event.nick, nick_key(event.nick), realname, self.hub.clock.seconds())
        if len(self.departures) >= WHOWAS_KEPT:
            oldest = self.departures.popleft()
            theirs = self._by_key[oldest.key]
            theirs.popleft()  # the oldest of all is the oldest of its nick's
            if not theirs:
                del self._by_key[oldest.key]
        self.departures.append(departure)
        self._by_key.setdefault(departure.key, deque()).append(departure)

    def was(self, nick: str, count: int) -> list[Departure]:
        """The latest ``count`` departures of ``nick``, newest first."""
        theirs = self._by_key.get(nick_key(nick), ())
        return list(itertools.islice(reversed(theirs), count))

    def _account_changed(self, nick: str) -> None:
        """account-notify: ACCOUNT to the IRC peers of the session that
        registered (or deleted) its account, on this node."""
        from chatproto.transports.irc import line, user
        from chatproto.transports.ircnames import irc_nick

        session = self.hub.session_for(nick)
        if session is None:
            return
        name = irc_nick(session.nick) if session.account else "*"
        data = line(user(session.nick), "ACCOUNT", name).encode("utf-8")
        for peer in irc_peers(session, "account-notify", include_self=True):
            peer.connection.outbox.write(data)


def irc_peers(session: Session, cap: str, include_self: bool = False) -> Iterator[Any]:
    """This node's IRC connections (each once) that share a channel with
    ``session`` and asked for ``cap``; the session's own devices only with
    ``include_self`` (IRCv3 tells the changer too)."""
    from chatproto.transports.irc import IrcConnection

    seen: set[int] = set()
    sessions = [session] if include_self else []
    for room in session.rooms.values():
        sessions.extend(room.members.values())
    for member in sessions:
        if member is session and not include_self:
            continue
        for device in member.devices:
            protocol = getattr(device, "protocol", None)
            if (
                isinstance(protocol, IrcConnection)
                and device.id not in seen
                and cap in protocol.caps
                and not protocol.connection.closing
            ):
                seen.add(device.id)
                yield protocol


_PEOPLE: weakref.WeakKeyDictionary[Hub, IrcPeople] = weakref.WeakKeyDictionary()


def people_of(hub: Hub) -> IrcPeople:
    """The hub's IrcPeople, made (and watching) at the first IRC connection."""
    people = _PEOPLE.get(hub)
    if people is None:
        people = _PEOPLE[hub] = IrcPeople(hub)
    return people


def now_text(ts: float) -> str:
    """TIME's and WHOWAS's time, as servers write it: ``Saturday December 5 2026 -- 05:12:03 +00:00``."""
    return time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime(ts))
