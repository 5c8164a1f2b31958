"""Many idle connections: how many a server process can hold, and what they cost.

    python -m benchmarks.crowd --port N --connections K --source 127.0.0.2 [--at-once 64]

One generator process: ``--connections`` version 2 sessions logged in (no
room joined), each connection bound to the ``--source`` loopback address
before it connects (one address has only the ports of
``ip_local_port_range``), ``--at-once`` logins in flight. It prints
``{"ready": ...}`` once all are welcomed, holds them until a line comes on
stdin, then prints how many were still open. The runner
(``benchmarks.run``, scenario "crowd") starts several of these, each on an
address of its own, and measures the server meanwhile.

With ``--bare`` it is the control: as many plain loopback connections,
both ends held by this process, none of them the server's (``--port`` is
then unused). Latency beside them is what so many sockets cost this
machine, whatever holds them.

The helpers below size such runs: the largest number of connections this
machine's open-file limit lets one server process hold, and how to spread
that many over generator processes and source addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import select
import socket
import sys
import time

from benchmarks.loadgen import connect_from, frame, socket_from

#: Files a server process keeps open besides its connections: listening
#: sockets, the history (SQLite and its journal), epoll, the log, the
#: thread pool's pipes, with room to spare.
SERVER_OWN_FILES = 100
#: Files a generator process keeps besides its connections.
GENERATOR_OWN_FILES = 50
#: Connections per generator process, at most: several processes share the
#: reading of what the crowd is sent.
PER_PROCESS = 10_000


def open_files_limit() -> int:
    """The hard limit on open files per process here (the soft one can be
    raised to it without privileges; the hard one cannot)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def server_connection_cap() -> int:
    """The most connections one server process can hold here."""
    return open_files_limit() - SERVER_OWN_FILES


def ports_per_address() -> int:
    """Local ports one source address can use towards one server port."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28_000


def spread(count: int, files_each: int = 1) -> list[tuple[str, int]]:
    """(source address, connections) for each generator process: at least
    two, each under its own open-file limit (``files_each`` files a
    connection: 2 where it holds both ends), on a loopback address of its
    own (127.0.0.2, 127.0.0.3, ...) with room in its ports."""
    files = (open_files_limit() - GENERATOR_OWN_FILES) // files_each
    per = min(PER_PROCESS, files, ports_per_address() - 1000)
    processes = max(2, math.ceil(count / per))
    if processes > 250:
        raise ValueError(f"{count} connections need {processes} source addresses: too many")
    shares = [count // processes + (1 if k < count % processes else 0) for k in range(processes)]
    return [(f"127.0.0.{2 + k}", share) for k, share in enumerate(shares)]


class Idle(asyncio.Protocol):
    """A logged-in connection that reads and drops what it is sent (the
    presence of everyone else's logins); welcomed once its WELCOME came."""

    __slots__ = ("closed", "head", "transport", "welcomed")

    def __init__(self, welcomed: asyncio.Future) -> None:
        self.transport: asyncio.Transport | None = None
        self.welcomed = welcomed
        self.head = b""
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError("closed before WELCOME"))

    def data_received(self, data: bytes) -> None:
        if self.welcomed.done():
            return
        self.head += data
        if len(self.head) >= 5:  # a pending connection gets nothing: its first packet is the answer
            if self.head[4] == 0x81:
                self.welcomed.set_result(None)
            else:
                self.welcomed.set_exception(RuntimeError(f"refused: {self.head[:200]!r}"))
            self.head = b""


async def hold(args) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.at_once)
    held: list[Idle] = []
    started = time.time()

    async def one(i: int) -> None:
        async with gate:
            welcomed = loop.create_future()
            _, idle = await connect_from(args.source, lambda: Idle(welcomed), args.port)
            idle.transport.write(frame(0x01, {"nick": f"{args.prefix}{i}", "proto": 2}))
            await asyncio.wait_for(welcomed, 300)
            held.append(idle)

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(args.connections))), args.timeout)
    done = time.time()
    print(json.dumps({"ready": True, "started": started, "done": done, "connections": len(held)}), flush=True)
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.timeout)
    alive = sum(1 for idle in held if not idle.closed)
    for idle in held:
        idle.transport.close()
    print(json.dumps({"connections": len(held), "alive": alive}), flush=True)


def hold_bare(args: argparse.Namespace) -> None:
    """The control: as many loopback TCP connections, both ends held by
    this process and none of them the server's (what holding them costs
    the machine, whatever holds them)."""
    pairs: list[tuple[socket.socket, socket.socket]] = []
    started = time.time()
    with contextlib.ExitStack() as held, socket.create_server(("127.0.0.1", 0), backlog=1024) as listener:
        port = listener.getsockname()[1]
        for _ in range(args.connections):
            client = held.enter_context(socket_from(args.source))
            client.connect(("127.0.0.1", port))
            pairs.append((client, held.enter_context(listener.accept()[0])))
        ready = {"ready": True, "started": started, "done": time.time(), "connections": len(pairs)}
        print(json.dumps(ready), flush=True)
        select.select([sys.stdin], [], [], args.timeout)
        alive = sum(1 for pair in pairs if all(_open(sock) for sock in pair))
        print(json.dumps({"connections": len(pairs), "alive": alive}), flush=True)


def _open(sock: socket.socket) -> bool:
    """Still connected, nothing come: a read would wait (an end would read b"")."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.2", help="loopback address to connect from")
    parser.add_argument("--prefix", default="c", help="nicks: this, then a number")
    parser.add_argument("--at-once", type=int, default=64, help="logins in flight")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds for the logins, then for the hold"
    )
    parser.add_argument(
        "--bare", action="store_true", help="no server: hold both ends of plain loopback connections"
    )
    args = parser.parse_args()
    hard = open_files_limit()
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.bare:
        hold_bare(args)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(hold(args))


if __name__ == "__main__":
    main()
