"""The login storm: clients log in to one room, a few in flight, and stay.

    python -m benchmarks.loadgen storm --port N --mode frames|irc [--proto 1|2] [options]

Version 1 clients are in the default room once welcomed; version 2 clients
send LOGIN, JOIN of the default room and (where the room will be big) a
FOLLOW in one write, as the IRC clients send NICK, USER and JOIN #general
in one. The default room's name and the server's limits come from one
login made before the storm. The storm has settled when every client has
every JOINED it was promised:

- where the room is not big (no ``lazy_members`` in WELCOME.limits, or at
  most that many members, or version 1, or IRC): every client has the
  JOINED of everyone who came after it (IRC clients also their own JOIN);
- in a big room (docs/protocol.md 22), a version 2 client is promised the
  final member count (its ROOM's ``count`` or a later COUNT) and the JOINED
  of the members it follows: while its ROOM was not lazy, everyone who came
  after it until the room went over ``lazy_members``; and the few nicks
  it FOLLOWs, all of which log in after the FOLLOW was answered.

Each client parses whole frames until it is in the room (noting how big
its WELCOME and ROOM were); then, where it expects a JOINED from everyone,
it counts their markers in the raw stream at C speed; in a big room, where
little comes, it keeps parsing, to know whose JOINED and which count came.
The generator's own garbage collector is off while it measures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.loadgen import HOST, Client, connect_from, cpu, frame
from chatproto import codec

T = codec.PacketType
_JOINED = b"\x84{"
#: Big rooms' packets (docs/protocol.md 22), by number: the storm runs
#: against servers with and without them.
FOLLOW = 0x1A
COUNT = 0x9B
#: Connections one loopback source address carries at most: Linux picks a
#: connection's local port among half its range first (one parity), and
#: once that half is taken every connect() searches it all, in the
#: generator's own time (a 19,900 storm slowed from 2,500 logins a second
#: to 600 past 14,000 connections). Past this many, the clients connect
#: from 127.0.0.1, 127.0.0.2, ... in turn, as real clients come from many.
PER_SOURCE = 10_000

#: In a big room each client FOLLOWs the clients this many places after it
#: (a contact list of people not yet there): far enough ahead that they
#: have not started logging in when it asks.
FOLLOW_AHEAD = (64, 128, 192)


class Joiner(asyncio.Protocol):
    """One storm client speaking our protocol (see the module's docstring)."""

    def __init__(self, index: int, version: int) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self.nick = f"s{index}"
        self.version = version
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.carry = b""
        self.parsing = True  # whole frames; False: JOINED markers counted in the raw stream
        self.joins = 0
        self.joined_nicks: set[str] = set()
        self.welcome_bytes = 0
        self.room_bytes = 0
        self.position = 0  # the room's member count in its ROOM (version 1: WELCOME): itself included
        self.count = 0  # the latest member count it was told
        self.lazy = False  # its ROOM said the room is big
        self.limits: dict = {}
        self.default_room = ""
        self.follows: list[str] = []
        self.follow_refused = ""
        self.waiting: dict[int | str, asyncio.Future] = {}
        self.closed = loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def expect(self, key: int | str) -> asyncio.Future:
        """The next packet of this type (or with this ref), as (type, size, body)."""
        future = self.waiting[key] = asyncio.get_running_loop().create_future()
        return future

    def count_markers(self) -> None:
        """From now on, count JOINED markers in the raw stream (a marker
        split across two reads is found in the seam)."""
        self.parsing = False
        rest, self.buffer = self.buffer, b""
        self.joins += rest.count(_JOINED)
        self.carry = rest[-1:]

    def data_received(self, data: bytes) -> None:
        if not self.parsing:
            if self.carry:
                self.joins += (self.carry + data[:1]).count(_JOINED)
            self.joins += data.count(_JOINED)
            self.carry = data[-1:]
            return
        payloads, self.buffer = codec.split_frames(self.buffer + data)
        for payload in payloads:
            kind = payload[0]
            if kind == T.JOINED:
                self.joins += 1
                self.joined_nicks.add(json.loads(payload[1:])["nick"])
                continue
            if kind == T.PENDING:
                continue
            body = json.loads(payload[1:])
            if kind == COUNT:
                self.count = body["members"]
            elif kind == T.WELCOME:
                self.welcome_bytes = len(payload) + 4
                self.limits = body.get("limits", {})
                self.default_room = body.get("default_room", "")
                if self.version == 1:
                    self.position = self.count = len(body.get("members", ()))
            elif kind == T.ROOM:
                self.room_bytes = len(payload) + 4
                self.position = self.count = body.get("count", len(body["members"]))
                self.lazy = bool(body.get("lazy"))
            waiter = self.waiting.pop(body.get("ref") if "ref" in body else kind, None)
            if waiter is None:
                waiter = self.waiting.pop(kind, None)
            if waiter is not None and not waiter.done():
                waiter.set_result((kind, body))
            elif kind in (T.ERROR, T.BYE):  # refused where nothing waits for it: fail what does
                for other in self.waiting.values():
                    if not other.done():
                        other.set_exception(RuntimeError(f"{self.nick}: {payload[:200]!r}"))


def source(index: int, count: int) -> str:
    """The loopback address client ``index`` of ``count`` connects from (PER_SOURCE)."""
    return f"127.0.0.{1 + index % -(-count // PER_SOURCE)}"


async def enter(
    port: int, index: int, version: int, room: str = "", follows: tuple[str, ...] = (), count: int = 1
) -> Joiner:
    """Client ``index`` (of ``count``: :func:`source`) logged in and in the
    room; it counts markers from then on unless the room is or may become
    big. Version 2 sends LOGIN, JOIN ``room`` and FOLLOW ``follows`` in one
    write (as the IRC storm's clients send NICK, USER and JOIN), then waits
    for all three answers."""
    _, joiner = await connect_from(source(index, count), lambda: Joiner(index, version), port)
    welcome = joiner.expect(T.WELCOME)
    login = frame(T.LOGIN, {"nick": joiner.nick, "proto": version})
    if version == 1:
        joiner.transport.write(login)
        await asyncio.wait_for(welcome, 120)
        joiner.count_markers()
        return joiner
    answers = [welcome, joiner.expect(T.ROOM)]
    requests = [login, frame(T.JOIN, {"room": room})]
    if follows:
        joiner.follows = list(follows)
        answers.append(joiner.expect("follow"))
        requests.append(frame(FOLLOW, {"room": room, "nicks": list(follows), "ref": "follow"}))
    joiner.transport.write(b"".join(requests))
    answered = await asyncio.wait_for(asyncio.gather(*answers), 120)
    if follows and answered[-1][0] == T.ERROR:
        # a server with big rooms but no FOLLOW: nothing is owed for it
        joiner.follows = []
        joiner.follow_refused = answered[-1][1].get("code", "?")
    if not lazy_members(joiner.limits):
        joiner.count_markers()  # the room can never go big: every JOINED comes
    return joiner


async def probe(port: int) -> tuple[str, dict]:
    """The server's default room and limits, from a login made before the
    storm (untimed; it closes at once)."""
    _, prober = await asyncio.get_running_loop().create_connection(lambda: Joiner(-1, 2), HOST, port)
    welcome = prober.expect(T.WELCOME)
    prober.transport.write(frame(T.LOGIN, {"nick": "stormprobe", "proto": 2}))
    await asyncio.wait_for(welcome, 120)
    prober.transport.close()
    await asyncio.wait_for(prober.closed, 120)
    return prober.default_room, prober.limits


def lazy_members(limits: dict) -> int:
    """The server's ``lazy_members`` (0: it has none, or they are off)."""
    return int(limits.get("lazy_members", 0) or 0)


def promised(joiners: list[Joiner], big_over: int) -> dict[int, set[str]]:
    """In a big room (``big_over``: the server's ``lazy_members``), the
    nicks each client (by index) must see a JOINED of: those who came
    after it while the room had at most ``big_over`` members (it was not
    lazy then), and those it FOLLOWs."""
    by_position = {j.position: j.nick for j in joiners}
    owed: dict[int, set[str]] = {}
    for j in joiners:
        early = {by_position[p] for p in range(j.position + 1, big_over + 1) if p in by_position}
        owed[j.index] = early | set(j.follows)
    return owed


def lazy_missing(joiners: list[Joiner], owed: dict[int, set[str]], final: int) -> tuple[int, int]:
    """(JOINEDs promised and not seen, clients not yet told the final count)."""
    joined = sum(len(owed[j.index] - j.joined_nicks) for j in joiners)
    counts = sum(1 for j in joiners if j.count != final)
    return joined, counts


@contextmanager
def collector_off() -> Iterator[None]:
    """The generator's own garbage collector off while it measures: its
    full collections walk every client it holds (a fifth of a second at
    20,000 clients), pauses that would be billed to the server's rate."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def storm(args) -> dict:
    """See the module's docstring; ``--connections``, ``--at-once``,
    ``--proto``, ``--drain`` (how long to wait for every JOINED)."""
    with collector_off():
        if args.mode == "irc":
            return await irc_storm(args)
        return await our_storm(args)


async def our_storm(args) -> dict:
    """The storm of our protocol's clients."""
    version = args.proto
    gate = asyncio.Semaphore(args.at_once)
    joiners: list[Joiner | None] = [None] * args.connections
    followed = [asyncio.Event() for _ in range(args.connections)]  # set once its followers have FOLLOWed

    room, limits = await probe(args.port) if version == 2 else ("", {})
    may_go_big = 0 < lazy_members(limits) < args.connections

    async def one(i: int) -> None:
        for back in FOLLOW_AHEAD:  # bounded by that client's own steps, each with a timeout
            if i - back >= 0:
                await followed[i - back].wait()
        ahead = tuple(f"s{i + k}" for k in FOLLOW_AHEAD if i + k < args.connections) if may_go_big else ()
        async with gate:
            joiners[i] = await enter(args.port, i, version, room, ahead, args.connections)
        followed[i].set()

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.connections)))
    logged_in = time.perf_counter() - start
    clients = [j for j in joiners if j is not None]
    n = len(clients)
    big_over = lazy_members(clients[0].limits) if version == 2 else 0
    lazy = big_over > 0 and n > big_over
    for joiner in clients:
        if not lazy and joiner.parsing:
            joiner.count_markers()  # the room stayed small: every JOINED comes
    deadline = time.monotonic() + args.drain
    if lazy:
        owed = promised(clients, big_over)
        missing = lazy_missing(clients, owed, n)
        while time.monotonic() < deadline and any(missing):
            await asyncio.sleep(0.05)
            missing = lazy_missing(clients, owed, n)
        joined_missing, count_missing = missing
        expected = sum(len(o) for o in owed.values())
    else:
        expected = n * (n - 1) // 2  # of each pair, the one that came first sees the other's JOINED
        while time.monotonic() < deadline and sum(c.joins for c in clients) < expected:
            await asyncio.sleep(0.01)
        joined_missing = max(0, expected - sum(c.joins for c in clients))
        count_missing = 0
    settled = time.perf_counter() - start
    for client in clients:
        client.transport.close()
    room_sizes = [c.room_bytes or c.welcome_bytes for c in clients]
    welcome_sizes = [c.welcome_bytes for c in clients]
    return {
        "connections": n,
        "proto": version,
        "lazy": lazy,
        "lazy_rooms": sum(c.lazy for c in clients),
        "lazy_members": big_over,
        "seconds": logged_in,
        "logins_per_s": n / logged_in,
        "settled_seconds": settled,
        "joined_expected": expected,
        "joined_seen": sum(c.joins for c in clients),
        "joined_missing": joined_missing,
        "count_missing": count_missing,
        "follow_refused": sorted({c.follow_refused for c in clients if c.follow_refused}),
        "welcome_bytes_median": statistics.median(welcome_sizes),
        "welcome_bytes_max": max(welcome_sizes),
        # the joiner's list of members: its ROOM (version 1: its WELCOME)
        "room_bytes_median": statistics.median(room_sizes),
        "room_bytes_max": max(room_sizes),
        "generator_cpu": cpu() / settled,
    }


class IrcJoiner(Client):
    counting_joins = True


async def irc_storm(args) -> dict:
    """IRC clients register and JOIN #general, ``--at-once`` in flight
    (``--no-join``: register only); each sees the JOIN of everyone after
    it, and its own."""
    gate = asyncio.Semaphore(args.at_once)
    clients: list[Client] = []
    join = not args.no_join

    async def one(i: int) -> None:
        async with gate:
            _, client = await connect_from(source(i, args.connections), lambda: IrcJoiner("irc"), args.port)
            client.alone = not join
            channel = "JOIN #general\r\n" if join else ""
            client.transport.write(f"NICK s{i}\r\nUSER u 0 * :u\r\n{channel}".encode())
            await asyncio.wait_for(client.welcomed, 120)
            clients.append(client)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.connections)))
    logged_in = time.perf_counter() - start
    n = len(clients)
    expected = n * (n - 1) // 2 + n if join else 0
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and sum(c.joins for c in clients) < expected:
        await asyncio.sleep(0.01)
    settled = time.perf_counter() - start
    seen = sum(c.joins for c in clients)
    for client in clients:
        client.transport.close()
    return {
        "connections": n,
        "joined": join,
        "seconds": logged_in,
        "logins_per_s": n / logged_in,
        "settled_seconds": settled,
        "joined_expected": expected,
        "joined_seen": seen,
        "joined_missing": max(0, expected - seen),
        "count_missing": 0,
        "generator_cpu": cpu() / settled,
    }
