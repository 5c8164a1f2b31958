"""Real Redis (Valkey) servers for the cluster tests: on free loopback
ports, in temporary folders, stopped after the test; one alone, or a
primary with replicas and Sentinels."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import deferLater

from chatproto.backends.sentinel import ask
from scripts.spawn import (
    ServerProcess,
    cluster_node_args,
    free_port,
    sentinel_config,
    slot_ranges,
    spawn_redis,
    spawn_sentinel,
)


class RedisServer:
    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="chat-redis-")
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    @defer.inlineCallbacks
    def started(cls, testcase):
        """A running server, stopped (and its folder removed) when ``testcase`` ends."""
        server = cls()
        testcase.addCleanup(shutil.rmtree, server.folder, ignore_errors=True)
        testcase.addCleanup(server.stop)
        yield server.start()
        return server

    def start(self) -> defer.Deferred:
        self.process = spawn_redis(reactor, self.folder, self.port)
        return self.process.listening

    def stop(self) -> defer.Deferred:
        """SIGTERM (it syncs its append-only file first); fires once it has exited."""
        process, self.process = self.process, None
        if process is None or process.ended.called:
            return defer.succeed(None)
        process.transport.signalProcess("TERM")
        return process.ended

    @defer.inlineCallbacks
    def restart(self):
        yield self.stop()
        yield self.start()


class ReplicatedRedis:
    """A primary with ``replicas`` replicas and three Sentinels (quorum 2),
    all real processes on loopback, each in a folder of its own; the
    cluster's address is ``url`` (``sentinel://...``). Every server refuses
    writes while it has no replica (``min-replicas-to-write 1``), as
    docs/cluster.md advises."""

    NAME = "chat"
    SENTINELS = 3

    def __init__(self, replicas: int = 2) -> None:
        self.folder = tempfile.mkdtemp(prefix="chat-sentinel-")
        self.ports = [free_port() for _ in range(1 + replicas)]  # the first starts as the primary
        self.sentinel_ports = [free_port() for _ in range(self.SENTINELS)]
        self.servers: dict[int, ServerProcess] = {}
        self.sentinels: dict[int, ServerProcess] = {}

    @property
    def url(self) -> str:
        return "sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{self.NAME}"

    @classmethod
    @defer.inlineCallbacks
    def started(cls, testcase, replicas: int = 2):
        """Running and settled (every sentinel knows every server and sentinel),
        stopped and removed when ``testcase`` ends."""
        group = cls(replicas)
        testcase.addCleanup(shutil.rmtree, group.folder, ignore_errors=True)
        testcase.addCleanup(group.stop)
        yield group.start()
        yield group.settled()
        return group

    def _server(self, port: int, *extra: str) -> ServerProcess:
        folder = os.path.join(self.folder, str(port))
        os.makedirs(folder, exist_ok=True)
        safety = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "5")
        safety += ("--repl-diskless-sync-delay", "0")  # a replica syncs at once, not 5 s later
        process = self.servers[port] = spawn_redis(reactor, folder, port, *safety, *extra)
        return process

    def start(self) -> defer.Deferred:
        primary, *replicas = self.ports
        started = [self._server(primary).listening]
        started += [
            self._server(port, "--replicaof", "127.0.0.1", str(primary)).listening for port in replicas
        ]
        for port in self.sentinel_ports:
            config = sentinel_config(self.folder, port, self.NAME, primary)
            self.sentinels[port] = spawn_sentinel(reactor, config)
            started.append(self.sentinels[port].listening)
        return defer.gatherResults(started)

    def ask(self, port: int, *command) -> defer.Deferred:
        return ask(reactor, "127.0.0.1", port, 2.0, *command)

    @defer.inlineCallbacks
    def primary(self):
        """The port the first live sentinel names for the primary."""
        for port, process in self.sentinels.items():
            if not process.ended.called:
                where = yield self.ask(port, "SENTINEL", "get-master-addr-by-name", self.NAME)
                return int(where[1])
        raise RuntimeError("no sentinel left")

    @defer.inlineCallbacks
    def settled(self, replicas: int | None = None, tries: int = 300):
        """Once every live sentinel names the same primary, knows ``replicas``
        replicas (all live ones if None) and the other live sentinels, and
        the primary counts them good (it takes writes): a failover can
        start then, and reconfigures every replica (one the sentinels have
        not heard of stays a replica of the old primary).
        Polled, at most ``tries`` times 0.1 s apart (the sentinels learn by
        their own timers)."""
        live = [p for p, s in self.sentinels.items() if not s.ended.called]
        if replicas is None:
            replicas = sum(not s.ended.called for s in self.servers.values()) - 1
        for _ in range(tries):
            views = []
            for port in live:
                flat = yield self.ask(port, "SENTINEL", "MASTER", self.NAME)
                view = dict(zip(flat[::2], flat[1::2], strict=True))
                known = int(view[b"num-slaves"])
                views.append((view[b"port"], int(view[b"num-other-sentinels"]), view[b"flags"], known))
            primary = int(views[0][0])
            info = yield self.ask(primary, "INFO", "replication")
            connected = int(info.split(b"min_slaves_good_slaves:")[1].split(b"\r\n")[0])
            agreed = all(v[:3] == (views[0][0], len(live) - 1, b"master") and v[3] >= replicas for v in views)
            if agreed and connected >= replicas:
                return primary
            yield deferLater(reactor, 0.1, lambda: None)
        raise RuntimeError(f"the sentinels did not settle: {views}")

    def story(self, lines: int = 40) -> str:
        """The last lines each server and sentinel logged: what a failed
        failover test shows of why."""
        told = []
        for kind, processes in (("server", self.servers), ("sentinel", self.sentinels)):
            for port, process in processes.items():
                tail = process.output.decode(errors="replace").splitlines()[-lines:]
                told.append(f"--- {kind} {port}\n" + "\n".join(tail))
        return "\n".join(told)

    def signal(self, port: int, name: str) -> None:
        (self.servers.get(port) or self.sentinels[port]).signal(name)

    @defer.inlineCallbacks
    def kill(self, port: int):
        """SIGKILL a server or sentinel; fires once it has exited."""
        process = self.servers.get(port) or self.sentinels[port]
        process.signal("KILL")
        yield process.ended

    def stop(self) -> defer.Deferred:
        ending = []
        for process in [*self.sentinels.values(), *self.servers.values()]:
            if not process.ended.called:
                process.signal("KILL")  # stopped or not; nothing of theirs is kept
                ending.append(process.ended)
        return defer.gatherResults(ending)


class ShardedRedis:
    """A Redis Cluster: ``shards`` primaries, each with ``replicas``
    replicas, all real processes on loopback in folders of their own, the
    slots split evenly; the cluster's address is ``url``
    (``redis-cluster://...``). A primary silent for a second is failed over
    by one of its replicas."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, shards: int = 3, replicas: int = 1) -> None:
        self.folder = tempfile.mkdtemp(prefix="chat-shards-")
        servers = shards * (1 + replicas)
        ports: list[int] = []
        while len(ports) < 2 * servers:  # distinct: a port just closed may be handed out again
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.primaries = ports[:shards]
        self.replicas = ports[shards:servers]  # replicas[i] follows primaries[i % shards]
        self.servers: dict[int, ServerProcess] = {}
        self.ids: dict[int, str] = {}
        self.buses = dict(zip(ports[:servers], ports[servers:], strict=True))  # the nodes' gossip

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.primaries)

    @classmethod
    @defer.inlineCallbacks
    def started(cls, testcase, shards: int = 3, replicas: int = 1):
        """Running, every slot served, every replica in sync; stopped and
        removed when ``testcase`` ends. On other ports again if one was
        taken meanwhile (another test's server), up to three times."""
        for attempt in range(3):
            group = cls(shards, replicas)
            testcase.addCleanup(shutil.rmtree, group.folder, ignore_errors=True)
            testcase.addCleanup(group.stop)
            try:
                yield group.start()
            except defer.FirstError as e:
                if attempt == 2 or "Address already in use" not in str(e):
                    raise
                yield group.stop()
                continue
            return group

    def _server(self, port: int) -> ServerProcess:
        folder = os.path.join(self.folder, str(port))
        os.makedirs(folder, exist_ok=True)
        cluster = cluster_node_args(self.buses[port], self.NODE_TIMEOUT_MS)
        process = self.servers[port] = spawn_redis(reactor, folder, port, *cluster)
        return process

    def ask(self, port: int, *command) -> defer.Deferred:
        return ask(reactor, "127.0.0.1", port, 2.0, *command)

    @defer.inlineCallbacks
    def start(self):
        ports = self.primaries + self.replicas
        yield defer.gatherResults([self._server(port).listening for port in ports])
        for port in ports:
            self.ids[port] = (yield self.ask(port, "CLUSTER", "MYID")).decode()
        for port, (first, last) in zip(self.primaries, slot_ranges(len(self.primaries)), strict=True):
            yield self.ask(port, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for port in ports[1:]:
            first = self.primaries[0]
            yield self.ask(port, "CLUSTER", "MEET", "127.0.0.1", first, self.buses[first])
        yield self._until(self._all_known, "every node knows every other")
        for i, replica in enumerate(self.replicas):
            yield self.ask(replica, "CLUSTER", "REPLICATE", self.ids[self.primaries[i % len(self.primaries)]])
        yield self.settled()

    @defer.inlineCallbacks
    def _until(self, check, what: str, tries: int = 300):
        """Polled, at most ``tries`` times 0.1 s apart (the nodes learn by gossip)."""
        for _ in range(tries):
            if (yield check()):
                return
            yield deferLater(reactor, 0.1, lambda: None)
        raise RuntimeError(f"the Redis Cluster did not settle: {what}\n{self.story()}")

    @defer.inlineCallbacks
    def _all_known(self):
        for port in self.live():
            nodes = yield self.ask(port, "CLUSTER", "NODES")
            if len(nodes.splitlines()) < len(self.servers):
                return False
        return True

    def live(self) -> list[int]:
        return [p for p, s in self.servers.items() if not s.ended.called]

    @defer.inlineCallbacks
    def _ok(self):
        for port in self.live():
            info = yield self.ask(port, "CLUSTER", "INFO")
            if b"cluster_state:ok" not in info:
                return False
            role = yield self.ask(port, "ROLE")
            if role[0] == b"slave" and role[3] != b"connected":
                return False
        return True

    def settled(self) -> defer.Deferred:
        """Once every live node says the cluster is ok and every live replica is in sync."""
        return self._until(self._ok, "cluster_state ok, replicas connected")

    @defer.inlineCallbacks
    def owners(self):
        """Each slot's primary's port, as the first live node sees it."""
        owners = [0] * 16384
        for first, last, primary, *_ in (yield self.ask(self.live()[0], "CLUSTER", "SLOTS")):
            owners[first : last + 1] = [int(primary[1])] * (last - first + 1)
        return owners

    @defer.inlineCallbacks
    def migrate(self, slot: int, to: int, batch: int = 2, pause=None):
        """Move ``slot`` to primary ``to`` as resharding tools do: marked
        importing and migrating, its keys moved ``batch`` at a time
        (``pause()`` between batches), then given to ``to`` on every primary."""
        source = (yield self.owners())[slot]
        yield self.ask(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[source])
        yield self.ask(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[to])
        for _ in range(10_000):
            keys = yield self.ask(source, "CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            yield self.ask(source, "MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *keys)
            if pause is not None:
                yield pause()
        for port in [to, source, *(p for p in self.primaries if p not in (to, source))]:
            if not self.servers[port].ended.called:
                yield self.ask(port, "CLUSTER", "SETSLOT", slot, "NODE", self.ids[to])
        return source

    @defer.inlineCallbacks
    def serving(self, key: str):
        """The port of the primary serving ``key``'s slot, as the first live node sees it."""
        slot = yield self.ask(self.live()[0], "CLUSTER", "KEYSLOT", key)
        for first, last, primary, *_ in (yield self.ask(self.live()[0], "CLUSTER", "SLOTS")):
            if first <= slot <= last:
                return int(primary[1])
        raise RuntimeError(f"no primary serves slot {slot}")

    def story(self, lines: int = 30) -> str:
        told = []
        for port, process in self.servers.items():
            tail = process.output.decode(errors="replace").splitlines()[-lines:]
            told.append(f"--- server {port}\n" + "\n".join(tail))
        return "\n".join(told)

    @defer.inlineCallbacks
    def kill(self, port: int):
        """SIGKILL a server; fires once it has exited."""
        self.servers[port].signal("KILL")
        yield self.servers[port].ended

    def stop(self) -> defer.Deferred:
        ending = []
        for process in self.servers.values():
            if not process.ended.called:
                try:
                    process.signal("KILL")
                except ProcessExitedAlready:
                    pass
                ending.append(process.ended)
        return defer.gatherResults(ending)
