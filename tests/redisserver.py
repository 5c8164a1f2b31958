"""Real Redis (Valkey) servers for the cluster tests: on free loopback
ports, in temporary folders, stopped after the test; one alone, or a
primary with replicas and Sentinels."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from chatproto.backends.sentinel import ask
from scripts.spawn import ServerProcess, free_port, sentinel_config, spawn_redis, spawn_sentinel


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
