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

import bisect

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends.redis import (
    RedisAddress,
    RedisClient,
    RedisError,
    RedisProtocol,
    RedisUnavailable,
    reads_only,
)
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
        *("PUBLISH", "SPUBLISH"),  # not replicated in cluster mode: nothing to wait for
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


def node_address(cluster: RedisAddress, where: str) -> RedisAddress:
    """The address of the cluster's node at ``host:port``, with the cluster's credentials."""
    host, _, port = where.rpartition(":")
    return RedisAddress(host.strip("[]"), int(port), 0, cluster.username, cluster.password, cluster.tls)


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
        min_replicas: int = 0,
    ) -> None:
        """``min_replicas``: each write answered once that many replicas of
        its primary have it."""
        self.address = address
        self.name = name
        self._reactor = reactor
        self._timeout = timeout
        self.home = key_slot(home) if home else 0
        self._owner: list[str | None] = [None] * SLOTS  # slot -> "host:port" of its primary
        self._nodes: dict[str, RedisClient] = {}
        self._mapped = False
        self._mapping = False
        self._waiting: list[Deferred] = []
        self._running = False
        self._map_loop = LoopingCall(self._remap)
        self._map_loop.clock = reactor
        self._queues: dict[int, list[_Retry]] = {}  # slots being redirected: their commands, in order
        self._busy: set[int] = set()  # ...whose first command is being sent
        self._sent: dict[int, set[int]] = {}  # each slot's commands sent straight, unanswered
        self._calls = 0
        self._asked: dict[str, float] = {}  # migrations' targets (no slot yet): when last asked
        self._connecting: set[Deferred] = set()  # first connections waited for
        self._firsts: dict[str, list[Deferred]] = {}  # "host:port" -> what waits for its first connection
        self.min_replicas = min_replicas
        self._replicas: dict[str, Replicas] = {}  # each primary's, by "host:port"

    # -- the map --------------------------------------------------------------------------

    def _client(self, where: str) -> RedisClient:
        client = self._nodes.get(where)
        if client is None and not self._running:
            raise RedisUnavailable(f"the client of the cluster at {self.address} stopped")
        if client is None:
            node = node_address(self.address, where)
            client = self._nodes[where] = RedisClient(self._reactor, node, self.name, timeout=self._timeout)
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
        client = self.node_for(None)
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
        client = self.node_for(None)
        return client.up_since if client is not None else None

    @property
    def connection(self) -> RedisProtocol | None:
        return None  # no one connection: writes are confirmed per primary (min_replicas), not by Replicas

    def moved(self, slot: int, where: str | None) -> None:
        """Slot ``slot`` is ``where``'s now (None: the cluster is down there): read the map again."""
        if where is not None:
            self._owner[slot] = where
            self._asked[where] = self._reactor.seconds()  # kept, whatever a map read before says
        self._remap()

    def drop(self, why: str) -> None:
        for client in self._nodes.values():
            client.drop(why)

    def call(self, *args) -> Deferred:
        key = command_key(args)
        slot = self.home if key is None else key_slot(key)
        where = self._owner[slot] if self._mapped and self._running else None
        if where is None:
            return fail(
                RedisUnavailable(f"no primary known for slot {slot} of the cluster at {self.address}")
            )
        self._calls += 1
        retry = _Retry(args, slot, self._calls)
        queue = self._queues.get(slot)
        if queue is not None:  # the slot is being redirected: in order, behind what is
            queue.append(retry)
            self._pump(slot)
            return retry.done
        self._sent.setdefault(slot, set()).add(retry.n)
        retry.where = where
        client = self._client(where)
        if client.ever_up and where not in self._firsts:
            d = client.call(*args)
        else:  # named by the map, still connecting (at start, every primary but the home slot's may be)
            d = self._first(client, where).addCallback(lambda _: client.call(*args))
        return d.addBoth(self._answered_at_once, retry)

    def _answered_at_once(self, result: object, retry: _Retry) -> object:
        """A command sent straight to its primary answered; redirected, it
        goes into its slot's queue, in the order the commands were asked
        for, which then sends one at a time (a node's writes to a room keep
        their order through a migration or a failover)."""
        slot = retry.slot
        sent = self._sent.get(slot)
        if sent is not None:
            sent.discard(retry.n)
            if not sent:
                del self._sent[slot]
        if isinstance(result, Failure):
            if result.check(RedisError) and retry.redirect(str(result.value), self._reactor.seconds(), self):
                queue = self._queues.setdefault(slot, [])
                bisect.insort(queue, retry, key=lambda r: r.n)
                self._pump(slot)
                return retry.done
            if result.check(RedisUnavailable):
                self._remap()  # a primary gone: perhaps failed over already
        elif slot not in self._queues:
            return self._confirmed(result, retry)
        self._pump(slot)  # a command queued behind this one may go now
        return result if isinstance(result, Failure) else self._confirmed(result, retry)

    def _pump(self, slot: int) -> None:
        queue = self._queues.get(slot)
        if queue is None or slot in self._busy:
            return
        if not queue:
            if slot not in self._sent:
                del self._queues[slot]  # nothing sent straight may still be redirected
            return
        retry = queue[0]
        if any(n < retry.n for n in self._sent.get(slot, ())):
            return  # an earlier command sent straight may yet be redirected: it goes first
        self._busy.add(slot)
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
        retry.where = where

        def send(proto: RedisProtocol) -> Deferred:
            if proto is not client.connection:
                raise RedisUnavailable(f"the connection to the cluster node at {where} went")
            if retry.asking is not None:
                proto.execute("ASKING").addErrback(lambda f: None)  # answered first, on the same connection
            return proto.execute(*retry.args)

        return ready.addCallback(send)

    def _confirmed(self, answer: object, retry: _Retry) -> object:
        """With ``min_replicas``, a write's answer once that many replicas of
        the primary that ran it have it (``WAIT`` on the same connection:
        :mod:`~chatproto.backends.replicas`); a script that only reads
        what a member is shown marks it with a write of its own first, and
        is confirmed the same way."""
        args = retry.args
        if self.min_replicas <= 0 or str(args[0]).upper() in _READS or reads_only(args):
            return answer
        where = retry.where
        assert where is not None
        replicas = self._replicas.get(where)
        if replicas is None:
            replicas = self._replicas[where] = Replicas(self._client(where), self.min_replicas, self._reactor)
        return replicas.confirm().addCallback(lambda _: answer)

    def _first(self, client: RedisClient, where: str) -> Deferred:
        """A node the cluster just named (a primary at start, a new primary,
        a migration's target): its first connection, waited for once for
        everything sent to it meanwhile, which then goes in the order it
        was asked for, or fails, after the client's timeout. One that was
        up and went fails at once, as a primary gone does."""
        waiting = self._firsts.get(where)
        if waiting is None:
            if client.ever_up:
                return fail(RedisUnavailable(f"no connection to the cluster node at {where}"))
            waiting = self._firsts[where] = []
            ready = client.connected()
            ready.addTimeout(self._timeout, self._reactor)
            self._connecting.add(ready)
            ready.addBoth(self._first_came, ready, where)
        d: Deferred = Deferred()
        waiting.append(d)
        return d

    def _first_came(self, result: object, ready: Deferred, where: str) -> None:
        """The first connection to ``where`` is up (the client is connected
        from the turn before: what waited goes first), or will not come."""
        self._connecting.discard(ready)
        waiting = self._firsts.pop(where, [])
        if isinstance(result, Failure):
            if result.check(TimeoutError):
                why = f"no connection to the cluster node at {where} within {self._timeout} s"
                result = Failure(RedisUnavailable(why))
            elif result.check(CancelledError):
                result = Failure(RedisUnavailable(f"the client of the cluster at {self.address} stopped"))
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def _answered(self, result: object, retry: _Retry) -> None:
        """A queued command answered: sent again if redirected again (still
        first), else its answer handed on (confirmed on replicas without
        holding the queue) and the next one sent, on the next turn."""
        slot = retry.slot
        self._busy.discard(slot)
        queue = self._queues.get(slot)
        if queue is None or retry.done.called:  # stopped meanwhile: failed already
            return
        if isinstance(result, Failure) and result.check(RedisError):
            if retry.redirect(str(result.value), self._reactor.seconds(), self):
                self._reactor.callLater(0, self._pump, slot)
                return
        queue.pop(0)
        if isinstance(result, Failure):
            if result.check(RedisUnavailable, TimeoutError, CancelledError):
                self._remap()
            retry.done.errback(result)
        else:
            maybeDeferred(self._confirmed, result, retry).chainDeferred(retry.done)
        self._reactor.callLater(0, self._pump, slot)


class _Retry:
    """A command (the ``n``-th asked for), and if redirected, where it goes
    next and how long it may keep trying."""

    __slots__ = ("args", "asking", "delay", "done", "hops", "n", "since", "slot", "where")

    def __init__(self, args: tuple, slot: int, n: int) -> None:
        self.args = args
        self.slot = slot
        self.n = n
        self.where: str | None = None  # the primary it was last sent to
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
