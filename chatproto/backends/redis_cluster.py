"""A Redis (Valkey) Cluster as one client: each command goes to the
primary that serves its key's hash slot.

The client keeps the cluster's slot map (``CLUSTER SLOTS``, asked of any
node it reaches, again every second and at once after a redirection) and
one :class:`~chatproto.backends.redis.RedisClient` per primary. A ``MOVED``
answer (the slot is another primary's now: a failover, a migration done)
updates the map and sends the command again there; ``ASK`` (a slot being
migrated, the key already gone to its new primary) sends it there once,
after ``ASKING``; ``TRYAGAIN`` (a multi-key command mid-migration) a
moment later. Neither redirection ran the command, so sending it again
never runs it twice. A command with no key (``PUBLISH``, a script
declaring none) goes to the primary of the ``home`` slot, where the
cluster's shared records live (:mod:`~chatproto.backends.streams`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends.redis import RedisAddress, RedisClient, RedisError, RedisProtocol, RedisUnavailable
from chatproto.backends.replicas import Replicas
from chatproto.deferreds import every

log = Logger()

SLOTS = 16384


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the cluster's key hash."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key``: of its hash tag (``{...}``, if not empty) alone."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16(raw) % SLOTS


#: Commands that write nothing: never confirmed on replicas.
_READS = frozenset(
    (
        *("GET", "HGET", "HGETALL", "HKEYS", "HLEN", "HEXISTS", "EXISTS", "SMEMBERS", "SISMEMBER", "SCARD"),
        *("XREAD", "XRANGE", "XREVRANGE", "LRANGE", "ZRANGEBYSCORE", "PING", "CLUSTER", "WAIT", "INFO"),
    )
)

#: Commands with no key: they go to the home slot's primary.
_KEYLESS = frozenset(("PING", "WAIT", "PUBLISH", "CLUSTER", "INFO", "CLIENT", "SCRIPT", "ROLE", "ASKING"))


def command_key(args: tuple) -> str | bytes | None:
    """The key a command is routed by (its first), or None for none."""
    name = str(args[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        return args[3] if int(args[2]) > 0 else None
    if name == "XREAD":
        return args[[str(a).upper() for a in args].index("STREAMS") + 1]
    if name in _KEYLESS or len(args) < 2:
        return None
    return args[1]


def _where(text: str) -> tuple[int, str]:
    """``MOVED 3999 127.0.0.1:6381`` (or ``ASK``): the slot and where it is."""
    _, slot, where = text.split()
    return int(slot), where


def _host_port(where: str) -> tuple[str, int]:
    host, _, port = where.rpartition(":")
    return host.strip("[]"), int(port)


class ClusterClient:
    """Commands routed by slot over a connection to each primary; the same
    calls as :class:`~chatproto.backends.redis.RedisClient` where a store
    makes them (``call``, ``connected``, ``when_up``, ``stop``...)."""

    MAP_EVERY = 1.0  # seconds between readings of the slot map
    REDIRECTS = 5  # at most this many MOVED or ASK for one command
    TRYAGAIN = 0.05  # seconds between tries of a command whose keys are mid-migration...
    TRY_FOR = 5.0  # ...for at most this long (a slot's keys move in a moment)

    def __init__(
        self,
        reactor: IReactorTime,
        address: RedisAddress,
        name: str = "chat",
        home: str = "",
        timeout: float = 3.0,
        on_push: Callable[[object], None] | None = None,
        min_replicas: int = 0,
    ) -> None:
        """``on_push``: a subscriber's client, whose connections hand it
        the messages of the shard channels subscribed to on them.
        ``min_replicas``: each write (each script) answered once that many
        replicas of its primary have it."""
        self.address = address
        self.name = name
        self.epoch = None  # not checked per shard: docs/cluster.md
        self._reactor = reactor
        self._timeout = timeout
        self._on_push = on_push
        self.home = key_slot(home) if home else 0
        self._owner: list[str | None] = [None] * SLOTS  # slot -> "host:port" of its primary
        self._nodes: dict[str, RedisClient] = {}
        self._mapped = False
        self._mapping = False
        self._waiting: list[Deferred] = []
        self._running = False
        self._map_loop = LoopingCall(self._remap)
        self._map_loop.clock = reactor
        self._queues: dict[int, deque[_Retry]] = {}  # slots being redirected: their commands, in order
        self._asked: dict[str, float] = {}  # migrations' targets (no slot yet): when last asked
        self._connecting: set[Deferred] = set()  # first connections waited for
        self.min_replicas = min_replicas
        self._replicas: dict[str, Replicas] = {}  # each primary's, by "host:port"

    # -- the map --------------------------------------------------------------------------

    def _client(self, where: str) -> RedisClient:
        client = self._nodes.get(where)
        if client is None and not self._running:
            raise RedisUnavailable(f"the client of the cluster at {self.address} stopped")
        if client is None:
            host, port = _host_port(where)
            a = self.address
            node = RedisAddress(host, port, 0, a.username, a.password, a.tls)
            client = self._nodes[where] = RedisClient(
                self._reactor, node, self.name, on_push=self._on_push, timeout=self._timeout
            )
            if self._running:
                client.start()
                client.connected().addCallback(lambda _: self._remap())
        return client

    def _remap(self) -> Deferred[None] | None:
        """Read the slot map from a node that answers (the home slot's first)."""
        if self._mapping or not self._running:
            return None
        asked = [c for c in self._nodes.values() if c.up]
        if not asked:
            for host, port in self.address.seeds:
                self._client(f"{host}:{port}")
            return None
        home = self._nodes.get(self._owner[self.home] or "")
        if home is not None and home.up:
            asked.insert(0, home)
        self._mapping = True
        d = asked[0].call("CLUSTER", "SLOTS")
        d.addCallback(self._mapped_now, asked[0].address.host)
        d.addErrback(
            lambda f: log.warn(
                "{name}: reading the cluster's slot map failed: {e}", name=self.name, e=f.value
            )
        )

        def done(_):
            self._mapping = False

        return d.addBoth(done)

    def _mapped_now(self, ranges: list, asked_host: str) -> None:
        if not self._running:
            return
        owner: list[str | None] = [None] * SLOTS
        for first, last, primary, *_replicas in ranges:
            host = primary[0].decode() if primary[0] else asked_host
            where = f"{host}:{int(primary[1])}"
            owner[first : last + 1] = [where] * (last - first + 1)
        primaries = {w for w in owner if w is not None}
        for where in primaries:
            self._client(where)
        now = self._reactor.seconds()
        for where in [w for w in self._nodes if w not in primaries and now - self._asked.get(w, 0) > 30]:
            self._nodes.pop(where).stop()  # a replica now, or gone: its slots are elsewhere
            self._asked.pop(where, None)
            self._replicas.pop(where, None)
        self._owner = owner
        if not self._mapped and primaries:
            log.info("{name}: the cluster has {n} primaries", name=self.name, n=len(primaries))
        self._mapped = bool(primaries)
        if self._mapped:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                self.connected().chainDeferred(d)

    # -- the client's calls ---------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        for host, port in self.address.seeds:
            self._client(f"{host}:{port}")
        self._map_loop.start(self.MAP_EVERY, now=False)

    def stop(self) -> Deferred:
        self._running = False
        for waiting in list(self._connecting):
            waiting.cancel()
        queues, self._queues = list(self._queues.values()), {}
        for queue in queues:
            for retry in queue:
                if not retry.done.called:
                    retry.done.errback(
                        RedisUnavailable(f"the client of the cluster at {self.address} stopped")
                    )
        if self._map_loop.running:
            self._map_loop.stop()
        clients, self._nodes = list(self._nodes.values()), {}
        self._mapped = False
        return every([c.stop() for c in clients]).addBoth(lambda _: None)

    def where(self, key: str | bytes | None) -> str | None:
        """``host:port`` of the primary serving ``key``'s slot (the home
        slot's for None), as the map says; None while it is not known."""
        return self._owner[self.home if key is None else key_slot(key)] if self._mapped else None

    def node_for(self, key: str | bytes | None) -> RedisClient | None:
        """The client of the primary serving ``key``'s slot (the home slot's for None)."""
        where = self.where(key)
        return self._nodes.get(where) if where is not None else None

    def connected(self) -> Deferred:
        """Fires once the map is known and the home slot's primary connected."""
        client = self.node_for(None) if self._mapped else None
        if client is not None:
            return client.connected()
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def when_up(self) -> Deferred:
        return succeed(None) if self._mapped else self.connected()

    def call_when_up(self, *args) -> Deferred:
        return self.when_up().addCallback(lambda _: self.call(*args))

    @property
    def up(self) -> bool:
        """The map is known and every primary connected."""
        return self._mapped and all(c.up for c in self._nodes.values())

    @property
    def up_since(self) -> float | None:
        client = self.node_for(None) if self._mapped else None
        return client.up_since if client is not None else None

    @property
    def connection(self) -> RedisProtocol | None:
        return None  # no one connection: writes are not confirmed on replicas here

    def moved(self, slot: int, where: str | None) -> None:
        """Slot ``slot`` is ``where``'s now (None: the cluster is down there): read the map again."""
        if where is not None:
            self._owner[slot] = where
        self._remap()

    def drop(self, why: str) -> None:
        for client in self._nodes.values():
            client.drop(why)

    def call(self, *args) -> Deferred:
        key = command_key(args)
        slot = self.home if key is None else key_slot(key)
        queue = self._queues.get(slot)
        if queue is not None:  # the slot is being redirected: in order, behind what is
            retry = _Retry(args, slot)
            queue.append(retry)
            return retry.done
        where = self._owner[slot] if self._mapped and self._running else None
        if where is None:
            return fail(
                RedisUnavailable(f"no primary known for slot {slot} of the cluster at {self.address}")
            )
        d = self._client(where).call(*args)
        return d.addCallbacks(
            self._confirmed, self._redirected, callbackArgs=(where, args), errbackArgs=(_Retry(args, slot),)
        )

    def _redirected(self, failure: Failure, retry: _Retry) -> Deferred:
        """A redirection: the command goes into its slot's queue, which sends
        one command at a time until it is empty (a node's writes to a room
        keep their order through a migration or a failover)."""
        if failure.check(RedisUnavailable):
            self._remap()  # a primary gone: perhaps failed over already
            return failure  # type: ignore[return-value]
        failure.trap(RedisError)
        if not retry.redirect(str(failure.value), self._reactor.seconds(), self):
            return failure  # type: ignore[return-value]
        queue = self._queues.setdefault(retry.slot, deque())
        queue.append(retry)
        if len(queue) == 1:
            self._pump(retry.slot)
        return retry.done

    def _pump(self, slot: int) -> None:
        queue = self._queues.get(slot)
        if not queue:
            self._queues.pop(slot, None)
            return
        retry = queue[0]
        if retry.delay:
            d = deferLater(self._reactor, retry.delay, self._attempt, retry)
        else:
            d = self._attempt(retry)
        d.addBoth(self._answered, retry)

    def _attempt(self, retry: _Retry) -> Deferred:
        if not self._running:
            return fail(RedisUnavailable(f"the client of the cluster at {self.address} stopped"))
        where = retry.asking or (self._owner[retry.slot] if self._mapped else None)
        if where is None:
            return fail(RedisUnavailable(f"no primary known for slot {retry.slot}"))
        if retry.asking is not None:
            self._asked[where] = self._reactor.seconds()
        client = self._client(where)
        ready = succeed(client.connection) if client.connection is not None else self._first(client, where)

        def send(proto: RedisProtocol) -> Deferred:
            if retry.asking is not None:
                proto.execute("ASKING").addErrback(lambda f: None)  # answered first, on the same connection
            return proto.execute(*retry.args).addCallback(self._confirmed, where, retry.args)

        return ready.addCallback(send)

    def _confirmed(self, answer: object, where: str, args: tuple) -> object:
        """With ``min_replicas``, a write's answer once that many replicas of
        the primary that ran it have it (``WAIT`` on the same connection:
        :mod:`~chatproto.backends.replicas`); a script that only reads marks
        what it read with a write of its own, and is confirmed the same way."""
        if self.min_replicas <= 0 or str(args[0]).upper() in _READS:
            return answer
        replicas = self._replicas.get(where)
        if replicas is None:
            replicas = self._replicas[where] = Replicas(self._client(where), self.min_replicas, self._reactor)
        return replicas.confirm().addCallback(lambda _: answer)

    def _first(self, client: RedisClient, where: str) -> Deferred:
        """A node the cluster just named (a new primary, a migration's
        target): its first connection, waited for a moment; one that was
        up and went fails at once, as a primary gone does."""
        if client.ever_up:
            return fail(RedisUnavailable(f"no connection to the cluster node at {where}"))
        d = client.connected()
        d.addTimeout(self._timeout, self._reactor)
        self._connecting.add(d)
        return d.addBoth(self._connected, d)

    def _connected(self, result: object, d: Deferred) -> object:
        self._connecting.discard(d)
        return result

    def _answered(self, result: object, retry: _Retry) -> None:
        queue = self._queues.get(retry.slot)
        if queue is None or retry.done.called:  # stopped meanwhile: failed already
            return
        if isinstance(result, Failure) and result.check(RedisError):
            if retry.redirect(str(result.value), self._reactor.seconds(), self):
                self._pump(retry.slot)  # the same command again, still first
                return
        queue.popleft()
        if isinstance(result, Failure):
            if result.check(RedisUnavailable, TimeoutError, CancelledError):
                self._remap()
            retry.done.errback(result)
        else:
            retry.done.callback(result)
        self._pump(retry.slot)


class _Retry:
    """A command redirected: where it goes next, and how long it may keep trying."""

    __slots__ = ("args", "asking", "delay", "done", "hops", "since", "slot")

    def __init__(self, args: tuple, slot: int) -> None:
        self.args = args
        self.slot = slot
        self.done: Deferred = Deferred()
        self.hops = 0
        self.since: float | None = None
        self.asking: str | None = None
        self.delay = 0.0

    def redirect(self, text: str, now: float, cluster: ClusterClient) -> bool:
        """Take the error ``text`` in: whether to send the command again."""
        self.asking, self.delay = None, 0.0
        if text.startswith("MOVED ") and self.hops < cluster.REDIRECTS:
            self.hops += 1
            self.slot, where = _where(text)
            cluster.moved(self.slot, where)
            return True
        if text.startswith("ASK ") and self.hops < cluster.REDIRECTS:
            self.hops += 1
            self.asking = _where(text)[1]
            return True
        if text.startswith("TRYAGAIN"):
            self.since = self.since or now
            self.delay = cluster.TRYAGAIN
            return now - self.since <= cluster.TRY_FOR
        if text.startswith("CLUSTERDOWN"):
            cluster.moved(self.slot, None)
        return False
