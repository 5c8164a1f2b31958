"""IRC's questions about the server and its users, answered by the gateway
itself (docs/protocol.md, 17.10): WHOWAS, LUSERS, TIME, MOTD, VERSION,
USERHOST, ISON and SETNAME. None is a packet: each is charged to the asker's fair share
as WHO is, one unit and one more for every ROWS_PER_UNIT rows it reads or
writes, and each reads a bounded amount.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatproto import __version__
from chatproto.codec import ProtocolError
from chatproto.core.budget import ROWS_PER_UNIT
from chatproto.core.connection import logged_in
from chatproto.transports.irc_conversations import participants
from chatproto.transports.irc_people import NAMELEN, WHOWAS_KEPT, irc_peers, now_text
from chatproto.transports.ircnames import irc_nick, our_nick

if TYPE_CHECKING:
    from chatproto.transports.irc import IrcConnection

#: Nicks one USERHOST answers (RFC 2812, 4.8).
USERHOST_NICKS = 5
#: Nicks one WHOWAS looks up (``WHOWAS a,b,c``).
WHOWAS_NICKS = 5
#: Sessions and rooms LUSERS counts for one unit (counting is far cheaper than a row written).
COUNTED_PER_UNIT = ROWS_PER_UNIT * 100


def _host() -> str:
    from chatproto.transports.irc import HOST

    return HOST


def _session(irc: IrcConnection, nick: str):
    try:
        return irc.connection.hub.session_for(our_nick(nick))
    except ProtocolError:
        return None


def do_whowas(irc: IrcConnection, params: list[str]) -> None:
    """``WHOWAS nick[,nick] [count]``: 314 and 312 (when) per departure,
    newest first, 406 for a nick with none, 369 after each nick."""
    if not params or not params[0]:
        irc._charge()
        irc._numeric("431", "No nickname given")
        return
    count = WHOWAS_KEPT
    if len(params) > 1:
        try:
            count = int(params[1])
        except ValueError:
            count = WHOWAS_KEPT
        if count <= 0:
            count = WHOWAS_KEPT  # RFC 2812: a non-positive count is a full search
        count = min(count, WHOWAS_KEPT)  # no more are kept; islice takes no huge count
    people = irc.people
    rows = 0
    for nick in params[0].split(",")[:WHOWAS_NICKS]:
        try:
            found = people.was(our_nick(nick), count)
        except ProtocolError:
            found = []
        rows += len(found)
        for departure in found:
            name = irc_nick(departure.nick)
            irc._numeric("314", name, name, _host(), "*", departure.realname)
            irc._numeric("312", name, irc.server, now_text(departure.ts))
        if not found:
            irc._numeric("406", nick, "There was no such nickname")
        irc._numeric("369", nick, "End of WHOWAS")
    irc._charge(1 + rows / ROWS_PER_UNIT)


def do_lusers(irc: IrcConnection, params: list[str]) -> None:
    """``LUSERS``: 251-255 and 265/266, this node's counts (everyone is +i
    here, as ``MODE nick`` says)."""
    hub = irc.connection.hub
    sessions = hub.registry.sessions
    users = irc.people.seen()
    most = irc.people.most
    operators = sum(1 for session in sessions.values() if session.admin)
    channels = sum(1 for name in hub.directory.rooms if participants(name) is None)
    irc._numeric("251", f"There are 0 users and {users} invisible on 1 servers")
    irc._numeric("252", str(operators), "operator(s) online")
    irc._numeric("253", str(len(hub.registry.pending)), "unknown connection(s)")
    irc._numeric("254", str(channels), "channels formed")
    irc._numeric("255", f"I have {users} clients and 0 servers")
    irc._numeric("265", str(users), str(most), f"Current local users {users}, max {most}")
    irc._numeric("266", str(users), str(most), f"Current global users {users}, max {most}")
    # It counts, writing nothing per row: a unit more per COUNTED_PER_UNIT sessions and rooms.
    irc._charge(1 + (len(sessions) + len(hub.directory.rooms)) / COUNTED_PER_UNIT)


def do_time(irc: IrcConnection, params: list[str]) -> None:
    """``TIME [server]``: 391 with the time here; another server is 402."""
    irc._charge()
    if _other_server(irc, params):
        return
    irc._numeric("391", irc.server, now_text(irc.connection.clock.seconds()))


def _other_server(irc: IrcConnection, params: list[str]) -> bool:
    """A query naming a server other than this one: ``402``, as TIME."""
    if params and params[0] and params[0].lower() != irc.server.lower():
        irc._numeric("402", params[0], "No such server")
        return True
    return False


def do_motd(irc: IrcConnection, params: list[str]) -> None:
    """``MOTD [server]``: the message of the day again, as at registration."""
    irc._charge()
    if not _other_server(irc, params):
        irc.motd()


def do_version(irc: IrcConnection, params: list[str]) -> None:
    """``VERSION [server]``: ``351`` and the ``005`` tokens (modern IRC)."""
    irc._charge()
    if not _other_server(irc, params):
        irc._numeric("351", f"chatproto-{__version__}", irc.server, "IRC gateway of a chatproto server")
        irc.isupport()


def do_userhost(irc: IrcConnection, params: list[str]) -> None:
    """``USERHOST nick...``: 302 with ``nick[*]=[+-]nick@chat`` for each
    of the first five present (``*``: a server admin, ``-``: away)."""
    irc._charge()
    if not params:
        irc._numeric("461", "USERHOST", "Not enough parameters")
        return
    replies = []
    for nick in " ".join(params).split()[:USERHOST_NICKS]:
        session = _session(irc, nick)
        if session is None:
            continue
        name = irc_nick(session.nick)
        oper = "*" if session.admin else ""
        here = "+" if session.away is None else "-"
        replies.append(f"{name}{oper}={here}{name}@{_host()}")
    irc._numeric("302", " ".join(replies))


def do_ison(irc: IrcConnection, params: list[str]) -> None:
    """``ISON nick...``: 303 with those present, as the server spells them."""
    nicks = " ".join(params).split()
    irc._charge(1 + len(nicks) / ROWS_PER_UNIT)
    if not params:
        irc._numeric("461", "ISON", "Not enough parameters")
        return
    present = []
    for nick in nicks:
        session = _session(irc, nick)
        if session is not None:
            present.append(irc_nick(session.nick))
    irc._numeric("303", " ".join(present))


def valid_realname(text: str) -> bool:
    return 0 < len(text.encode("utf-8")) <= NAMELEN and text.isprintable()


def do_setname(irc: IrcConnection, params: list[str]) -> None:
    """``SETNAME :realname`` (setname): the session's real name here; the
    line goes to the session's IRC peers on this node that asked for
    ``setname``, itself included."""
    from chatproto.transports.irc import line, user

    realname = params[-1] if params else ""
    if not valid_realname(realname):
        irc._charge()
        irc.write_line(irc.server, "FAIL", "SETNAME", "INVALID_REALNAME", "Realname is not valid")
        return
    session = logged_in(irc.connection)
    irc.people.set_realname(session, realname)
    data = line(user(session.nick), "SETNAME", realname).encode("utf-8")
    for peer in irc_peers(session, "setname", include_self=True):
        peer.connection.outbox.write(data)
    read = sum(len(room.members) for room in session.rooms.values())  # irc_peers reads them all
    irc._charge(1 + read / ROWS_PER_UNIT)


def names_entry(nick: str, prefix: str, caps: frozenset[str]) -> str:
    """One name of a NAMES reply (353): ``prefix`` and the IRC nick, as
    ``nick!nick@chat`` with userhost-in-names. NAMES builds its list with it."""
    irc = irc_nick(nick)
    if "userhost-in-names" in caps:
        return f"{prefix}{irc}!{irc}@{_host()}"
    return prefix + irc
