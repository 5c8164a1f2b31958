"""The one way to assemble a chat server: event log, hub, transports, services.

``twistd chat`` (tap.py), the desktop client's host mode, the tests and the
fuzz target all call :func:`build_server`; they differ only in the clock
they pass, the endpoints they listen on and the history they keep.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorThreads

from chatproto.backends.accounts import AccountStore
from chatproto.backends.eventlog import EventLog, Threads
from chatproto.backends.sqlite import SQLiteLog
from chatproto.backends.sqlite_accounts import SQLiteAccounts
from chatproto.core.files import FileSpace
from chatproto.core.hub import Hub
from chatproto.core.peers import Peers
from chatproto.limits import DEFAULTS, Limits
from chatproto.passwords import Hasher
from chatproto.rules import DEFAULT_ROOM, room_key
from chatproto.service import FilesService, HubService, ListenerService, PeersService
from chatproto.transports.int32 import ChatFactory
from chatproto.transports.proxied import server_endpoint

if TYPE_CHECKING:
    from twisted.web.server import Site

    from chatproto.cluster.search_index import SearchFeed
    from chatproto.transports.irc import IrcFactory


class ChatServer(MultiService):
    """The service tree: the hub first, so it stops after the listeners."""

    def __init__(
        self,
        hub: Hub,
        reactor,
        listen: list[str],
        metrics: str | None = None,
        web: Sequence[str] = (),
        web_origins: Sequence[str] = (),
        irc: Sequence[str] = (),
        metrics_token: str | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.hub = hub
        self.factory = ChatFactory(hub)
        peers = PeersService(hub.peers, hub.inbound, self.factory)
        peers.setServiceParent(self)  # stops after the hub has said BYE
        HubService(hub).setServiceParent(self)
        # Connections are accepted once the node has joined the others and
        # its files are ready (or off): until then they wait in the backlog.
        gates: list[Deferred[Any]] = [peers.joined]
        if hub.files is not None:
            files = FilesService(hub.files)
            files.setServiceParent(self)  # stops after the listeners
            gates.append(files.ready)
        self.ready: Deferred[Any] = gatherResults(gates, consumeErrors=True)
        self.listeners: list[ListenerService] = []
        self._listen(reactor, listen, self.factory)
        # What --web and --irc serve, if asked.
        self.site: Site | None = None
        self.gateway: IrcFactory | None = None
        if web:
            from chatproto.transports.web import web_site

            self.site = web_site(hub, list(web_origins), trusted=list(trusted_proxies))
            self._listen(reactor, web, self.site)
        if irc:
            from chatproto.transports.irc import IrcFactory

            self.gateway = IrcFactory(hub)
            self._listen(reactor, irc, self.gateway)
        self.operations: ListenerService | None = None
        if metrics is not None:
            from chatproto.operations import LagMonitor, operations_site

            LagMonitor(reactor, hub.counters).setServiceParent(self)
            self.operations = ListenerService(
                metrics, serverFromString(reactor, metrics), operations_site(self, reactor, metrics_token)
            )
            self.operations.setServiceParent(self)

    def _listen(self, reactor: Any, descriptions: Sequence[str], factory: IProtocolFactory) -> None:
        for description in descriptions:
            endpoint = server_endpoint(reactor, description, self.hub.limits.login_timeout)
            listener = ListenerService(description, endpoint, factory, self.ready)
            listener.setServiceParent(self)
            self.listeners.append(listener)

    def health(self) -> Deferred[list[str]]:
        """What is wrong, if anything: listeners that are not listening, a
        history store that does not answer. Empty when healthy."""
        problems = [f"not listening on {s.description}" for s in self.listeners if s.port is None]
        d = self.hub.eventlog.check()
        return d.addCallbacks(lambda _: problems, lambda f: [*problems, f.getErrorMessage()])

    def start(self) -> None:
        """Bind, then run: what twistd does for a service tree, in one call."""
        self.privilegedStartService()
        self.startService()

    @property
    def port(self) -> int | None:
        """The first listener's bound port (for ``tcp:0``), once listening."""
        for listener in self.listeners:
            if listener.port is not None:
                return _port_number(listener.port)
        return None

    @property
    def web_port(self) -> int | None:
        """The first ``web`` listener's bound port, once listening."""
        return self._port_of(self.site)

    @property
    def irc_port(self) -> int | None:
        """The first ``irc`` listener's bound port, once listening."""
        return self._port_of(self.gateway)

    def _port_of(self, factory) -> int | None:
        for listener in self.listeners:
            if listener.port is not None and factory is not None and listener.factory is factory:
                return _port_number(listener.port)
        return None


def _port_number(port: IListeningPort) -> int:
    """A TCP (or TLS) listening port's number."""
    address = port.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address)), address
    return address.port


def build_server(
    reactor,
    listen: Sequence[str] = (),
    history: str | EventLog = ":memory:",
    limits: Limits = DEFAULTS,
    name: str = "chat",
    motd: str = "",
    default_room: str = DEFAULT_ROOM,
    rooms: Sequence[str] = (),
    metrics: str | None = None,
    metrics_token: str | None = None,
    admins: Sequence[str] = (),
    accounts: AccountStore | None = None,
    hasher: Hasher | None = None,
    web: Sequence[str] = (),
    web_origins: Sequence[str] = (),
    irc: Sequence[str] = (),
    trusted_proxies: Sequence[str] = (),
    cluster: str | None = None,
    cluster_expiry: float = 10.0,
    cluster_retention: int = 100_000,
    cluster_min_replicas: int = 0,
    files: str | FileSpace | None = None,
    public_url: str | None = None,
    search: bool = True,
    search_index: str = ":memory:",
) -> ChatServer:
    """A server on ``reactor`` (or a ``task.Clock``, with no ``listen``);
    ``history`` is an SQLite path or any event log; ``rooms`` always exist.
    Accounts live in the SQLite file unless another store is given;
    ``admins`` name the accounts that administer the server; ``web``
    endpoints serve the browser client and its WebSocket, ``irc`` ones IRC clients.
    With ``cluster`` (``redis://...``) the rooms are shared with the other
    servers on that Redis, and ``history`` is not used; what is written there
    counts once ``cluster_min_replicas`` replicas have it. ``files`` (a
    folder, or a FileSpace) keeps shared files, offered on ``web``'s
    ``/files`` with links under ``public_url`` (default: the first ``web``
    endpoint's address). ``search`` keeps a
    full-text index (in the history file; a cluster node's in ``search_index``)
    and answers SEARCH."""
    peers: Peers | None = None
    threads = _threads(reactor)
    feed: SearchFeed | None = None
    eventlog: EventLog
    shared: Any = None  # a cluster's Redis client, for the file records
    if cluster is not None:
        from chatproto.backends.redis import Epoch, RedisAddress, RedisClient
        from chatproto.backends.replicas import Replicas
        from chatproto.backends.streams import StreamStore
        from chatproto.cluster.log import ClusterLog
        from chatproto.cluster.node import ClusterNode

        address = RedisAddress.parse(cluster)
        sharded = bool(address.seeds)  # a Redis Cluster: each room in its hash slot
        writer: Any
        reader: Any
        if sharded:
            from chatproto.backends.redis_cluster import ClusterClient

            home = "{chat}"
            # each write, and each read a member is shown, confirmed on its shard's replicas
            confirm = cluster_min_replicas
            writer = ClusterClient(reactor, address, "chat-node", home, min_replicas=confirm)
            reader = ClusterClient(reactor, address, "chat-reader", home, min_replicas=confirm)
            replicas = None
        else:
            epoch = Epoch("chat:epoch")  # the store's prefix
            writer = RedisClient(reactor, address, "chat-node", epoch)
            reader = RedisClient(reactor, address, "chat-reader", epoch)
            replicas = Replicas(writer, cluster_min_replicas, reactor)
        store = StreamStore(
            writer,
            keep=cluster_retention,
            replicas=replicas,
            sharded=sharded,
            clock=reactor,
            marks=sharded and cluster_min_replicas > 0,
        )
        shared = store.client
        index = None
        if search:
            from chatproto.cluster.search_index import IndexFile, SearchFeed

            if search_index == ":memory:":
                threads = None  # one connection: its writes and reads on the reactor thread
            index = IndexFile(search_index, threads, cluster_retention)
            feed_client = (
                ClusterClient(reactor, address, "chat-search", home)
                if sharded
                else RedisClient(reactor, address, "chat-search", epoch)
            )
            feed = SearchFeed(feed_client, store, index, reactor, threads or _inline)
        cluster_log = ClusterLog(store, index)
        eventlog = cluster_log
        cluster_accounts = None
        if accounts is None:
            from chatproto.cluster.accounts import ClusterAccounts

            accounts = cluster_accounts = ClusterAccounts(store.client, store.home, replicas=store.replicas)
        replay = limits.history_replay
        node = ClusterNode(
            store,
            reader,
            reactor,
            cluster_log,
            accounts,
            replay,
            cluster_expiry,
            None if sharded else Replicas(reader, cluster_min_replicas, reactor),
            # a relayed device's node hears its keepalive PINGs at least this often
            relay_silence=limits.ping_interval + limits.idle_timeout,
        )
        if cluster_accounts is not None:
            cluster_accounts.node = node
        peers = node
    else:
        eventlog = (
            SQLiteLog(history, room_key(default_room), search, threads)
            if isinstance(history, str)
            else history
        )
    if accounts is None and isinstance(eventlog, SQLiteLog):
        accounts = SQLiteAccounts(eventlog)
    space = _file_space(reactor, files, eventlog, shared, web, public_url, store.home if shared else "chat")
    hub = Hub(
        eventlog,
        reactor,
        limits,
        name=name,
        motd=motd,
        default_room=default_room,
        rooms=list(rooms),
        store=accounts,
        hasher=hasher,
        admins=list(admins),
        peers=peers,
        files=space,
    )
    server = ChatServer(
        hub,
        reactor,
        list(listen),
        metrics,
        list(web),
        list(web_origins),
        list(irc),
        metrics_token,
        list(trusted_proxies),
    )
    if feed is not None:
        FeedService(feed).setServiceParent(server)
    return server


class FeedService(Service):
    """A cluster node's search feed runs while the server does."""

    def __init__(self, feed: SearchFeed) -> None:
        self.feed = feed

    def startService(self) -> None:
        super().startService()
        self.feed.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.feed.stop()


def _threads(reactor: Any) -> Threads | None:
    """Blocking reads on the reactor's worker threads; None for a clock
    (tests): then they run at once, in the caller."""
    if not hasattr(reactor, "getThreadPool"):
        return None
    from twisted.internet.threads import deferToThreadPool

    return lambda call: deferToThreadPool(reactor, reactor.getThreadPool(), call)


def _inline(call: Callable[[], Any]) -> Deferred[Any]:
    return maybeDeferred(call)


def _file_space(
    reactor: Any,
    files: str | FileSpace | None,
    eventlog: EventLog,
    redis: Any,
    web: Sequence[str],
    public_url: str | None,
    prefix: str = "chat",
) -> FileSpace | None:
    """Where files are kept: the bytes in a folder or an S3-compatible
    bucket (``s3://bucket[/prefix]``), the records in the history's SQLite
    file or, in a cluster, in its Redis."""
    if files is None or isinstance(files, FileSpace):
        return files
    if not web or not IReactorThreads.providedBy(reactor):
        return None  # no /files to serve them, or no threads to write them with (a task.Clock)
    store: Any
    if files.startswith("s3://"):
        from chatproto.backends.s3_files import S3FileStore

        store = S3FileStore.from_url(files, reactor)
    elif redis is None:
        from chatproto.backends.disk_files import DiskFileStore

        store = DiskFileStore(files, reactor)
    else:
        return None  # a folder is no place for a cluster's files: every node must serve every one
    records: Any
    if redis is not None:
        from chatproto.backends.redis_files import RedisFileRecords

        records = RedisFileRecords(redis, prefix)
    elif isinstance(eventlog, SQLiteLog):
        from chatproto.backends.sqlite_files import SQLiteFileRecords

        records = SQLiteFileRecords(eventlog)
    else:
        return None
    return FileSpace(store, records, public_url or endpoint_url(web[0]))


def endpoint_url(description: str) -> str:
    """The address a ``--web`` endpoint is reached at, for links (``--public-url``'s default);
    empty for a port chosen when listening (``tcp:0``, in tests): links are then paths."""
    import socket

    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)]
    kind = parts[0].lower()
    port = next((p for p in parts[1:] if p.isdigit()), "80")
    if int(port) == 0:
        return ""
    interface = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("interface=")), "")
    host = interface if interface and interface not in ("0.0.0.0", "::") else socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if kind in ("ssl", "tls") else "http"
    default = "443" if scheme == "https" else "80"
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")
