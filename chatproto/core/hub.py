"""The hub: what transports call, and where the core's parts are put together.

The parts each own one job: :class:`~chatproto.core.logins.Logins`
(connections, LOGIN, devices, leaving), :class:`~chatproto.core.membership.Membership`
(who is in which room), :class:`~chatproto.core.room_requests.RoomRequests`
(JOIN, PART, TOPIC, LIST, MARK), :class:`~chatproto.core.messages.Messages`
(SAY, WHISPER, HISTORY), :class:`~chatproto.core.account_requests.AccountRequests`,
:class:`~chatproto.core.renames.Renames` (NICK),
:class:`~chatproto.core.moderation.Moderation`, and the rooms' rules
(:class:`~chatproto.core.room_rules.RuleKeeper`). Each gets what it needs
here, in its constructor. The other nodes, if any, are the hub's
:class:`~chatproto.core.peers.Peers`; a single server's answer at once.

A version 1 session is in the default room from login to leaving, and sees
it as version 1's one room: its packets carry no room, and it gets nothing
of other rooms.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.accounts import AccountStore
from chatproto.backends.eventlog import EventLog
from chatproto.codec import ErrorCode, ProtocolError
from chatproto.core.account_requests import AccountRequests
from chatproto.core.accounts import Accounts, AddressGate
from chatproto.core.assembly import Assembler
from chatproto.core.broadcast import Broadcast, Said
from chatproto.core.connection import Connection, Session
from chatproto.core.connection_log import ConnectionLog
from chatproto.core.conversations import Conversations
from chatproto.core.counts import Counts
from chatproto.core.files import Files, FileSpace
from chatproto.core.following import Following
from chatproto.core.inbound import Inbound
from chatproto.core.logins import Logins
from chatproto.core.member_requests import MemberRequests
from chatproto.core.membership import Membership
from chatproto.core.messages import Messages
from chatproto.core.moderation import Moderation
from chatproto.core.observers import Observers
from chatproto.core.peers import Peers, SingleNode
from chatproto.core.pending_news import PendingNews
from chatproto.core.presence import Presence
from chatproto.core.registry import Registry
from chatproto.core.renames import Renames
from chatproto.core.room_requests import RoomRequests
from chatproto.core.room_rules import RuleKeeper
from chatproto.core.rooms import ChatRoom, Directory
from chatproto.core.search import Searches
from chatproto.core.timers import Timers
from chatproto.limits import DEFAULTS, Limits
from chatproto.metrics import Counters
from chatproto.passwords import Hasher
from chatproto.rules import DEFAULT_ROOM, normalise_nick, room_key

log = Logger()

#: How much longer than a login may take a connection pending on another
#: node is believed pending when its going never came.
PENDING_SLACK = 5.0

#: How long a shutdown waits for peers to read their BYE before aborting them.
SHUTDOWN_GRACE = 5.0


class Hub:
    def __init__(
        self,
        eventlog: EventLog,
        clock: IReactorTime,
        limits: Limits = DEFAULTS,
        name: str = "chat",
        motd: str = "",
        default_room: str = DEFAULT_ROOM,
        rooms: tuple[str, ...] | list[str] = (),
        store: AccountStore | None = None,
        hasher: Hasher | None = None,
        admins: tuple[str, ...] | list[str] = (),
        peers: Peers | None = None,
        files: FileSpace | None = None,
    ) -> None:
        self.eventlog = eventlog
        self.clock = clock
        self.limits = limits
        self.name = name
        self.store = store
        self.peers: Peers = peers if peers is not None else SingleNode(eventlog, store, limits.history_replay)
        self.observers = Observers()
        self.counters = Counters()  # for /metrics (chatproto.metrics)
        self.timers = Timers(clock)  # every connection's deadlines
        self.connection_log = ConnectionLog(clock)
        self.registry = Registry(limits.max_clients)
        self.gate = AddressGate(clock, limits)
        self.accounts = self._accounts(store, hasher, admins)
        self.directory = Directory(limits, default_room, list(rooms), self.peers, clock)
        files_url = files.files_url if files is not None else ""
        self.assembler = Assembler(
            limits.max_frame, name, motd, {v: limits.as_wire(v) for v in codec.VERSIONS}, files_url
        )
        self.broadcast = Broadcast(
            clock,
            eventlog,
            self.peers,
            self._stored,
            self._refused,
            self._drop_slow_consumers,
            self.counters,
            files_url,
        )
        self.keeper = RuleKeeper(clock, store, self.broadcast)
        self.following = Following(limits.follow_limit)
        self.counts = Counts(clock, limits.count_interval, self.broadcast, self.directory)
        self.news = PendingNews(clock, self.broadcast, self.peers, limits.login_timeout + PENDING_SLACK)
        self.membership = Membership(
            self.directory,
            self.broadcast,
            self.assembler,
            store,
            self.peers,
            self.observers,
            self.keeper,
            limits,
            self.following,
            self.counts,
        )
        self.logins = Logins(
            clock,
            limits,
            self.registry,
            self.gate,
            self.accounts,
            store,
            self.directory,
            self.broadcast,
            self.news,
            self.assembler,
            self.membership,
            self.keeper,
            self.peers,
            self.counters,
            self.observers,
            self.connection_log,
        )
        self.conversations = Conversations(store, self.registry, self.directory, self.membership)
        # Files (docs/protocol.md 20), with --files and --web.
        self.files = (
            None if files is None else Files(clock, limits, files, self.registry, self.directory, self.peers)
        )
        self.presence = Presence(clock, limits, self.broadcast, self.membership, self.peers)
        self.messages = Messages(
            clock,
            limits,
            eventlog,
            self.registry,
            self.directory,
            self.broadcast,
            self.assembler,
            self.membership,
            self.peers,
            self.counters,
            self.observers,
            self.conversations,
            self.logins.handle_overflow,
            self.files,
        )
        self.room_requests = RoomRequests(
            clock,
            limits,
            eventlog,
            self.directory,
            self.broadcast,
            self.membership,
            self.keeper,
            self.peers,
            self.observers,
        )
        self.account_requests = AccountRequests(
            self.accounts, store, self.directory, self.membership, self.keeper, self.peers, self.observers
        )
        self.moderation = Moderation(
            clock,
            limits,
            self.registry,
            self.directory,
            self.gate,
            self.accounts,
            store,
            self.broadcast,
            self.membership,
            self.messages,
            self.logins,
            self.keeper,
            self.peers,
        )
        self.renames = Renames(
            clock,
            self.registry,
            self.accounts,
            store,
            self.directory,
            self.broadcast,
            self.peers,
            self.observers,
            self.following,
        )
        self.inbound = Inbound(
            self.registry,
            self.directory,
            self.broadcast,
            self.membership,
            self.logins,
            self.messages,
            self.observers,
            self.moderation,
            self.news,
        )
        self.searches = Searches(clock, eventlog, self.membership, self.broadcast, store)
        self.member_requests = MemberRequests(limits, self.broadcast, self.membership, self.following)
        # One bound method for every outbox to hold, not one per connection.
        self.overflowed = self.logins.overflowed

    def _accounts(
        self, store: AccountStore | None, hasher: Hasher | None, admins: tuple[str, ...] | list[str]
    ) -> Accounts | None:
        if store is None:
            return None
        names = [normalise_nick(admin) for admin in admins]
        accounts = Accounts(store, hasher or Hasher.for_reactor(self.clock), self.clock, self.limits, names)
        accounts.load_bans(self.gate).addErrback(lambda f: log.failure("could not read the server's bans", f))
        accounts.ensure_admins().addErrback(lambda f: log.failure("could not check the admins' accounts", f))
        return accounts

    def _stored(self, said: list[Said]) -> None:
        self.messages.stored(said)

    def _refused(self, said: list[Said], failure: Failure) -> None:
        self.messages.refused(said, failure)

    def _drop_slow_consumers(self) -> None:
        self.logins.handle_overflow()

    # -- views for the console and tests ----------------------------------------

    @property
    def pending(self) -> list[Connection]:
        return list(self.registry.pending.values())

    @property
    def sessions(self) -> list[Session]:
        return list(self.registry.sessions.values())

    @property
    def rooms(self) -> list[ChatRoom]:
        return list(self.directory.rooms.values())

    @property
    def default_room(self) -> ChatRoom:
        return self.directory.default

    def session_for(self, nick: str) -> Session | None:
        return self.registry.find(nick)

    def room_for(self, name: str) -> ChatRoom | None:
        return self.directory.rooms.get(room_key(name))

    # -- what transports call (the requests go through core/commands.py) -------

    def accept(self, connection: Connection, reserved: bool = False) -> str | None:
        return self.logins.accept(connection, reserved)

    def reserve(self, host: str, address: str) -> str | None:
        return self.logins.reserve(host, address)

    def door(self, host: str) -> str | None:
        return self.logins.door(host)

    def release(self, host: str) -> None:
        self.logins.release(host)

    def login(self, connection: Connection, packet: codec.Login) -> Deferred[Session | None]:
        return self.logins.login(connection, packet)

    def relayed(self, connection: Connection, payload: bytes) -> None:
        """A packet of a connection relayed to its session's node. One that
        carries a password is refused here: no password crosses the
        cluster's store (the LOGIN that started the relay went without its own)."""
        if payload and payload[0] in codec.SECRET_TYPES:
            packet = codec.decode_client(payload, 2)
            if isinstance(packet, codec.Login):
                raise ProtocolError(
                    ErrorCode.ALREADY_LOGGED_IN, "this connection is already logged in", packet.ref
                )
            if codec.carries_secret(packet):
                raise ProtocolError(
                    ErrorCode.NOT_PERMITTED,
                    "a password can only be given on the server your session is on: connect to it again",
                    getattr(packet, "ref", None),
                )
        self.peers.forward(connection, payload)

    def leave(self, connection: Connection, reason: str, message: str | None = None) -> Deferred[None]:
        return self.logins.leave(connection, reason, message)

    def kick(self, id: int, reason: str = "kicked") -> bool:
        return self.logins.kick(id, reason)

    def flush(self) -> None:
        """End the turn now: store the batch, then write it to every recipient."""
        self.broadcast.flush()

    # -- shutdown -----------------------------------------------------------------

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> Deferred[None]:
        """BYE server_shutdown to everyone, after storing what was said; fires
        when every connection is closed (or ``grace`` has passed)."""
        self.flush()
        self.counts.stop()
        self.news.stop()
        self.broadcast.clear()
        self.membership.clear()
        connections = self.registry.clear()
        self.counters.disconnects["server_shutdown"] += len(connections)
        closing = [connection.closed() for connection in connections]
        for connection in connections:
            connection.disconnect("server_shutdown")
        log.info("shutting down: {count} connections closed", count=len(connections))
        done = DeferredList(closing, consumeErrors=True)

        def abort_stragglers() -> None:
            for connection in connections:  # peers that didn't read their BYE in time
                connection.abort()

        timer = self.clock.callLater(grace, abort_stragglers)
        done.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return done.addBoth(lambda _: self.connection_log.stop())  # the last lines, not waiting

    def close(self) -> None:
        self.eventlog.close()
