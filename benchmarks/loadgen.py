"""Load generator: many clients in one asyncio process, loopback only.

    python -m benchmarks.loadgen SCENARIO --port N --mode frames|lines [options]

Prints one JSON object. Receivers count MESSAGE frames straight off the byte
stream (length prefixes only, no JSON), and check ``seq`` continuity at the
first frame of every read, so counting stays cheap enough that the generator
can outrun the server; it reports its own CPU use so the runner can tell
when it is the bottleneck. Every loop here is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import statistics
import sys
import time

from chatproto import codec

HOST = "127.0.0.1"
MESSAGE = 0x82
WELCOME, ROOM, DONE, SERVER_PING = 0x81, 0x8C, 0x8F, 0x8B
_MARK = b'\x82{"seq":'  # how every MESSAGE payload starts
_IRC_MARK = b" PRIVMSG #general :"
_JOINED = (b"\x84{", b" JOIN ")  # a JOINED payload; an IRC JOIN line (seen whole in a read, mostly)


def frame(kind: int, body: dict, mode: str = "frames") -> bytes:
    payload = codec.encode_json(kind, codec.dumps(body))
    return ws_client_frame(payload) if mode == "websocket" else codec.frame(payload)


def ws_client_frame(payload: bytes) -> bytes:
    """A client's binary WebSocket frame, masked (with a zero key: the
    payload stays as it is, which RFC 6455 allows)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x82, 0x80 | size))
    elif size < 65536:
        header = bytes((0x82, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x82, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Client(asyncio.Protocol):
    counting_joins = False  # the storm scenario's clients count JOINEDs too
    alone = False  # IRC: registered without joining a channel
    _join_tail = b""

    """Counts chat messages; in frames mode also waits for WELCOME. In
    websocket mode it first upgrades ``/ws``; server frames are unmasked, so
    the same markers are counted in the raw stream."""

    def __init__(self, mode: str, on_data=None) -> None:
        self.mode = mode
        self.count = 0
        self.tail = b""
        self.carry = b""
        self.next_seq: int | None = None
        self.order_errors = 0
        self.welcomed = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.on_data = on_data
        self.transport: asyncio.Transport | None = None
        self.saw_slow_left = False
        self.own = 0  # IRC: messages this client sent, of which it gets no copy
        self.joins = 0  # storm scenario: JOINED (or IRC JOIN) seen
        self.room = 0  # rooms scenario: which room, and its ROOM answer
        self.joined: asyncio.Future | None = None
        self.upgraded = asyncio.get_running_loop().create_future()
        self._handshake = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.mode == "lines" and not self.welcomed.done():
            self.welcomed.set_result(None)
        if self.mode == "websocket":
            transport.write(UPGRADE)
        else:
            self.upgraded.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.counting_joins:
            marker = _JOINED[self.mode == "irc"]
            seam = self._join_tail + data[: len(marker) - 1]
            self.joins += seam.count(marker) + data.count(marker)
            self._join_tail = data[-(len(marker) - 1) :]
        if not self.upgraded.done():
            self._handshake += data
            end = self._handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._handshake.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"WebSocket refused: {self._handshake[:40]!r}")
            data, self._handshake = self._handshake[end + 4 :], b""
            self.upgraded.set_result(None)
            if not data:
                return
        if self.mode == "lines":
            self.count += data.count(b"\n")
        elif self.mode == "irc":
            self._scan_irc(data)
        else:
            self._scan(data)
        if self.on_data is not None:
            self.on_data(self)

    def _scan(self, data: bytes) -> None:
        """Count MESSAGE payload markers at C speed; parse one seq per read.

        A marker split across two reads is found in the seam (the last bytes
        of the previous read plus the first of this one), so it counts once.
        Benchmark texts are ASCII, so the marker can't occur inside one.
        """
        if not self.welcomed.done() and b"\x81{" in data:
            self.welcomed.set_result(None)
        if self.joined is not None and not self.joined.done() and b"\x8c{" in data:
            self.joined.set_result(None)  # ROOM: in its room (protocol 2)
        if b"slow_consumer" in data:  # a LEFT: the server cut someone who stopped reading
            self.saw_slow_left = True
        count = (self.carry + data[: len(_MARK) - 1]).count(_MARK) if self.carry else 0
        count += data.count(_MARK)
        if count:
            first = data.find(_MARK) + len(_MARK)
            comma = data.find(b",", first) if first >= len(_MARK) else -1
            if comma > 0 and count == data.count(_MARK):  # nothing in the seam
                seq = int(data[first:comma])
                if self.next_seq is not None and seq != self.next_seq:
                    self.order_errors += 1
                self.next_seq = seq + count
            elif self.next_seq is not None:
                self.next_seq += count
        self.count += count
        self.carry = data[-(len(_MARK) - 1) :]

    def _scan_irc(self, data: bytes) -> None:
        """Count channel PRIVMSG lines (a marker split across two reads is
        found in the seam); joined once the names of #general end."""
        if not self.welcomed.done() and (b" 001 " if self.alone else b" 366 ") in self.carry + data:
            self.welcomed.set_result(None)
        seam = (self.carry + data[: len(_IRC_MARK) - 1]).count(_IRC_MARK) if self.carry else 0
        self.count += seam + data.count(_IRC_MARK)
        self.carry = data[-(len(_IRC_MARK) - 1) :]

    def take_messages(self) -> None:
        """Messages counted so far are presence-time noise: start from zero."""
        self.count = 0
        self.next_seq = None


async def connect_all(
    port: int, mode: str, n: int, nick: str, on_data=None, batch: int = 200, version=1, join: bool = True
):
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    for start in range(0, n, batch):  # bounded bursts: the listen backlog is finite
        made = await asyncio.gather(
            *(
                loop.create_connection(lambda: Client(mode, on_data), HOST, port)
                for _ in range(start, min(n, start + batch))
            )
        )
        for i, (_, client) in enumerate(made, start):
            if mode == "irc":  # registered and in #general, like everyone else here
                client.alone = not join
                channel = "JOIN #general\r\n" if join else ""
                client.transport.write(f"NICK {nick}{i}\r\nUSER u 0 * :u\r\n{channel}".encode())
            elif mode != "lines":
                await client.upgraded
                client.transport.write(frame(0x01, {"nick": f"{nick}{i}", "proto": version}, mode))
            clients.append(client)
        if mode == "irc":  # ngircd stalls under hundreds of registrations at once: a batch at a time
            await asyncio.wait_for(asyncio.gather(*(c.welcomed for c in clients[start:])), 120)
    await asyncio.wait_for(asyncio.gather(*(c.welcomed for c in clients)), 120)
    return clients


def cpu() -> float:
    return time.process_time()


def say_frame(mode: str, size: int) -> bytes:
    if mode == "lines":
        return b"x" * size + b"\n"
    if mode == "irc":
        return b"PRIVMSG #general :" + b"x" * size + b"\r\n"
    return frame(0x02, {"text": "x" * size}, mode)


async def settle(clients: list[Client], quiet: float = 0.3, limit: float = 60.0) -> None:
    """Wait until presence traffic (JOINED, PENDING) stops arriving."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = [(c.count, len(c.tail)) for c in clients]
        await asyncio.sleep(quiet)
        if before == [(c.count, len(c.tail)) for c in clients]:
            return


async def fanout(args) -> dict:
    one = say_frame(args.mode, args.size)
    # Deliveries in flight stay about the same whatever the room's size.
    window = args.window or max(100, min(2000, 200_000 // (args.receivers + args.senders)))
    state = {"sent": 0, "sending": False}

    def top_up(sender: Client) -> None:
        if not state["sending"]:
            return
        room = window - (state["sent"] - sender.count - sender.own)
        if room >= window // 4:
            send(sender, room)

    def send(sender: Client, count: int) -> None:
        sender.transport.write(one * count)
        state["sent"] += count
        if args.mode == "irc":
            sender.own += count  # IRC senders get no copy of their own

    receivers = await connect_all(args.port, args.mode, args.receivers, "r")
    senders = await connect_all(args.port, args.mode, args.senders, "s", on_data=top_up)
    slow = []
    if args.slow:
        slow = await connect_all(args.port, args.mode, args.slow, "slow")
        for client in slow:
            client.transport.pause_reading()
    everyone = receivers + senders

    def start() -> None:
        for sender in senders:
            send(sender, window // len(senders))

    result = await flow(args, everyone, state, start, lambda client: state["sent"] - client.own)
    slow_cut = int(any(c.saw_slow_left for c in everyone)) if slow else 0
    for client in everyone + slow:
        client.transport.close()
    return {**result, "messages": state["sent"], "window": window, "slow_cut": slow_cut}


async def flow(args, everyone: list[Client], state: dict, start, expected_of) -> dict:
    """What fan-out and rooms share: wait for presence to settle, ``start``
    the senders (their top-ups run while ``state["sending"]``), count the
    deliveries of ``--duration`` after ``--warmup``, stop, and wait until
    each client has its ``expected_of(client)`` messages (or ``--drain``)."""
    await settle(everyone)
    for client in everyone:
        client.take_messages()
    state["sending"] = True
    first_send = time.perf_counter()
    start()
    await asyncio.sleep(args.warmup)
    counts0, cpu0, t0 = sum(c.count for c in everyone), cpu(), time.perf_counter()
    await asyncio.sleep(args.duration)
    counts1, cpu1, t1 = sum(c.count for c in everyone), cpu(), time.perf_counter()
    state["sending"] = False
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and any(c.count < expected_of(c) for c in everyone):
        await asyncio.sleep(0.01)
    drained = time.perf_counter()
    lost = sum(max(0, expected_of(c) - c.count) for c in everyone)
    expected = sum(expected_of(c) for c in everyone)
    return {
        # every copy of every message, from the first send until the last arrived
        "deliveries_per_s": (expected - lost) / (drained - first_send),
        "steady_deliveries_per_s": (counts1 - counts0) / (t1 - t0),
        "lost": lost,
        "order_errors": sum(c.order_errors for c in everyone),
        "generator_cpu": (cpu1 - cpu0) / (t1 - t0),
    }


#: The relayed sender's account (the latency scenario's --relay-port).
RELAY_PASSWORD = "benchmark horse battery 1"


class FirstDevice(asyncio.Protocol):
    """An account's first device: registers, joins the default room, and
    answers every SERVER_PING (a login on another node asks whether the
    session is in use: it is, so the second device is relayed)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.done = asyncio.get_running_loop().create_future()  # its ROOM, once registered
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(frame(0x01, {"nick": "sender", "proto": 2}))

    def data_received(self, data: bytes) -> None:
        payloads, self.buffer = codec.split_frames(self.buffer + data)
        for payload in payloads:
            kind = payload[0]
            if kind == WELCOME:
                self.transport.write(frame(0x0C, {"op": "register", "password": RELAY_PASSWORD}))
            elif kind == DONE:
                self.transport.write(frame(0x08, {"room": "general"}))
            elif kind == ROOM and not self.done.done():
                self.done.set_result(None)
            elif kind == SERVER_PING:
                self.transport.write(frame(0x07, {"token": json.loads(payload[1:]).get("token")}))


async def relayed_sender(loop, args) -> tuple[Client, FirstDevice]:
    """The account's first device on --sender-port's node, then its second
    on --relay-port's (relayed there): the one that sends."""
    _, first = await loop.create_connection(FirstDevice, HOST, args.sender_port or args.port)
    await asyncio.wait_for(first.done, 60)
    _, second = await loop.create_connection(lambda: Client(args.mode), HOST, args.relay_port)
    second.transport.write(frame(0x01, {"nick": "sender", "proto": 2, "password": RELAY_PASSWORD}))
    return second, first


async def latency(args) -> dict:
    lines = args.mode == "lines"
    irc = args.mode == "irc"

    class Timed(Client):
        """Notes when each read arrived and parses later: parsing here would
        delay the next receiver's timestamp and bill the server for it."""

        def data_received(self, data: bytes) -> None:
            if self.started:
                self.reads.append((time.perf_counter(), data))
            elif not self.welcomed.done() and (lines or b"\x81{" in data or (irc and b" 366 " in data)):
                self.welcomed.set_result(None)

        def latencies(self) -> list[float]:
            found, tail, arrived = [], b"", 0.0
            for arrived, data in self.reads:
                buf = tail + data
                if lines:
                    *complete, tail = buf.split(b"\n")
                    found.extend(arrived - float(line[:20]) for line in complete if line)
                    continue
                if irc:
                    *complete, tail = buf.split(b"\r\n")
                    for text in complete:
                        if _IRC_MARK in text:
                            stamp = text.index(_IRC_MARK) + len(_IRC_MARK)
                            found.append(arrived - float(text[stamp : stamp + 20]))
                    continue
                payloads, tail = codec.split_frames(buf)
                for payload in payloads:
                    if payload[0] == MESSAGE:
                        stamp = payload.find(b'"text":') + 7  # the send time leads the text
                        while payload[stamp] in b' "':  # compact or not
                            stamp += 1
                        found.append(arrived - float(payload[stamp : stamp + 20]))
            return found

        started = False

    loop = asyncio.get_running_loop()
    receivers = []
    for i in range(args.receivers):
        _, client = await loop.create_connection(lambda: Timed(args.mode), HOST, args.port)
        if irc:
            client.transport.write(f"NICK r{i}\r\nUSER u 0 * :u\r\nJOIN #general\r\n".encode())
        elif not lines:
            client.transport.write(frame(0x01, {"nick": f"r{i}", "proto": 1}))
        receivers.append(client)
    first = None
    if args.relay_port:
        sender, first = await relayed_sender(loop, args)
    else:
        _, sender = await loop.create_connection(
            lambda: Client(args.mode), HOST, args.sender_port or args.port
        )
    if irc:
        sender.transport.write(b"NICK sender\r\nUSER u 0 * :u\r\nJOIN #general\r\n")
    elif not lines and not args.relay_port:
        sender.transport.write(frame(0x01, {"nick": "sender", "proto": 1}))
    room = {"room": "general"} if args.relay_port else {}
    await asyncio.wait_for(asyncio.gather(*(c.welcomed for c in [*receivers, sender])), 60)
    await asyncio.sleep(args.settle)  # the presence of their logins delivered (to a crowd too)
    cpu0 = cpu()
    for client in receivers:
        client.reads = []
        client.started = True
    period = 1.0 / args.rate
    total = int(args.rate * args.duration)
    start = time.perf_counter()
    for n in range(total):
        delay = start + n * period - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        stamp = f"{time.perf_counter():020.9f}".encode()
        text = stamp + b"x" * (args.size - len(stamp))
        if lines:
            sender.transport.write(text + b"\n")
        elif irc:
            sender.transport.write(b"PRIVMSG #general :" + text + b"\r\n")
        else:
            sender.transport.write(frame(0x02, {"text": text.decode(), **room}))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(len(c.latencies()) for c in receivers[-1:]) < total:
        await asyncio.sleep(0.2)
    for client in [*receivers, sender, *([first] if first else [])]:
        client.transport.close()
    samples = sorted(x for client in receivers for x in client.latencies())
    return {
        "p50_ms": 1000 * samples[len(samples) // 2],
        "p99_ms": 1000 * samples[int(len(samples) * 0.99)],
        "max_ms": 1000 * samples[-1],
        "mean_ms": 1000 * statistics.fmean(samples),
        "samples": len(samples),
        "expected": total * args.receivers,
        "generator_cpu": (cpu() - cpu0) / (time.perf_counter() - start),
    }


async def storm(args) -> dict:
    """The login storm (benchmarks/storm.py: it imports this module)."""
    from benchmarks.storm import storm as run

    return await run(args)


def backoff(attempt: int) -> float:
    """The desktop client's retry policy: 1 s doubling to 30 s, plus up to a
    second of jitter (qtclient.session_machine.retry_policy)."""
    return min(2.0**attempt, 30.0) + random.random()


async def reconnect(args) -> dict:
    """``--connections`` clients logged in; when the server restarts under
    them (the runner does that once they are ready), each comes back as the
    desktop client does: wait ``backoff``, connect, LOGIN again. How many are
    back, second by second after the drop."""
    loop = asyncio.get_running_loop()
    clients = await connect_all(args.port, "frames", args.connections, "c")
    await settle(clients, quiet=1.0, limit=300)
    print(json.dumps({"ready": True}), flush=True)
    back: list[float] = []
    dropped: list[float] = []

    async def come_back(i: int, client: Client) -> None:
        await client.closed
        dropped.append(time.perf_counter())
        for attempt in range(10):  # bounded: 10 tries, about two minutes at most
            await asyncio.sleep(backoff(attempt))
            try:
                _, again = await loop.create_connection(lambda: Client("frames"), HOST, args.port)
            except OSError:
                continue
            again.transport.write(frame(0x01, {"nick": f"c{i}", "proto": 1}))
            try:
                await asyncio.wait_for(asyncio.shield(again.welcomed), 30)
            except asyncio.TimeoutError:
                again.transport.close()
                continue
            back.append(time.perf_counter())
            clients[i] = again
            return

    await asyncio.wait_for(asyncio.gather(*(come_back(i, c) for i, c in enumerate(list(clients)))), 600)
    start = min(dropped)
    times = sorted(t - start for t in back)
    curve = [sum(1 for t in times if t <= second) for second in range(int(times[-1]) + 2)] if times else []
    for client in clients:
        client.transport.close()
    return {
        "connections": args.connections,
        "back": len(times),
        "all_back_s": times[-1] if len(times) == args.connections else None,
        "median_back_s": times[len(times) // 2] if times else None,
        "curve": curve,
    }


async def logins(args) -> dict:
    start = time.perf_counter()
    clients = await connect_all(args.port, args.mode, args.connections, "u", batch=args.connections)
    elapsed = time.perf_counter() - start
    for client in clients:
        client.transport.close()
    return {"seconds": elapsed, "connections": len(clients)}


class Answers(asyncio.Protocol):
    """Parses whole frames; ``answer`` resolves with the first packet whose
    type is in ``awaited`` (WELCOME, ERROR, DONE), as (type, body)."""

    awaited = (codec.PacketType.WELCOME, codec.PacketType.DONE, codec.PacketType.ERROR)

    def __init__(self) -> None:
        self.buffer = b""
        self.answer = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            size = int.from_bytes(self.buffer[:4], "big")
            if len(self.buffer) < 4 + size:
                return
            payload, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
            if payload[0] in self.awaited and not self.answer.done():
                self.answer.set_result((payload[0], json.loads(payload[1:])))

    async def ask(self, kind: int, body: dict) -> tuple[int, dict]:
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(frame(kind, body))
        return await asyncio.wait_for(self.answer, 120)


#: Linux's IP_BIND_ADDRESS_NO_PORT (not in Python's socket module).
_BIND_ADDRESS_NO_PORT = 24


def socket_from(source: str) -> socket.socket:
    """A TCP socket bound to loopback address ``source``, its port left to
    connect() (IP_BIND_ADDRESS_NO_PORT: see :func:`connect_from`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_IP, _BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_from(source: str, factory, port: int, host: str = HOST):
    """create_connection's (transport, protocol), from loopback address
    ``source``. Its port is chosen at connect() among those free for this
    address and the server's (IP_BIND_ADDRESS_NO_PORT): a bind() to
    ``(source, 0)`` would search for a port no socket holds at all, in the
    generator's own time, which grew with every connection and with every
    connection a previous run left in TIME_WAIT."""
    loop = asyncio.get_running_loop()
    sock = socket_from(source)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await loop.create_connection(factory, sock=sock)


async def answered_login(port: int, body: dict, source: str | None = None) -> Answers:
    """A connection (from loopback address ``source``) whose LOGIN was
    answered with WELCOME (else an error)."""
    if source:
        _, client = await connect_from(source, Answers, port)
    else:
        _, client = await asyncio.get_running_loop().create_connection(Answers, HOST, port)
    kind, answer = await client.ask(codec.PacketType.LOGIN, body)
    if kind != codec.PacketType.WELCOME:
        raise RuntimeError(f"login refused: {answer}")
    return client


#: The server checks at most this many passwords at once per address
#: (chatproto/core/accounts.py), loopback too: logins in flight come from
#: as many loopback addresses as they need.
CHECKS_PER_ADDRESS = 4


async def login_rate(port: int, bodies: list[dict], at_once: int) -> float:
    """Logins a second, ``at_once`` in flight, each connection closed after."""
    start = time.perf_counter()
    for i in range(0, len(bodies), at_once):
        batch = bodies[i : i + at_once]
        sources = [f"127.0.0.{2 + n // CHECKS_PER_ADDRESS}" for n in range(len(batch))]
        logins = (answered_login(port, body, source) for body, source in zip(batch, sources, strict=True))
        for client in await asyncio.gather(*logins):
            client.transport.close()
    return len(bodies) / (time.perf_counter() - start)


PASSWORD = "correct horse battery"


async def passwords(args) -> dict:
    """Guest logins against logins with a password, in one run: the
    accounts are registered first, untimed."""
    for i in range(args.connections):
        client = await answered_login(args.port, {"nick": f"acct{i}", "proto": 2})
        kind, answer = await client.ask(codec.PacketType.ACCOUNT, {"op": "register", "password": PASSWORD})
        if kind != codec.PacketType.DONE:
            raise RuntimeError(f"register refused: {answer}")
        client.transport.close()
    count = range(args.connections)
    guests = await login_rate(args.port, [{"nick": f"g{i}", "proto": 2} for i in count], args.at_once)
    accounts = [{"nick": f"acct{i}", "proto": 2, "password": PASSWORD} for i in count]
    with_password = await login_rate(args.port, accounts, args.at_once)
    return {"guest_per_s": guests, "password_per_s": with_password, "logins": args.connections}


async def idle(args) -> dict:
    """Log everyone in, say "ready", hold until the runner says "done".
    Version 1 clients are in the default room once welcomed; version 2
    clients, in no room, are what IRC's registered clients are."""
    start = time.perf_counter()
    # IRC clients only register: joining one channel by the thousand would
    # be a login storm, which has a scenario of its own.
    # (And in small bursts: ngircd's listen backlog is short, and a dropped
    # SYN costs a second.)
    irc = args.mode == "irc"
    burst = 16 if irc else 200
    clients = await connect_all(
        args.port, args.mode, args.connections, "i", batch=burst, version=args.proto, join=not irc
    )
    await settle(clients, quiet=1.0, limit=300)
    print(json.dumps({"ready": True, "seconds": time.perf_counter() - start}), flush=True)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 600)
    alive = sum(1 for c in clients if not c.closed.done())
    for client in clients:
        client.transport.close()
    return {"connections": len(clients), "alive": alive}


async def paced(args) -> dict:
    """Senders only, at a steady total rate: load for a client under test."""
    senders = await connect_all(args.port, args.mode, args.senders, "p")
    one = say_frame(args.mode, args.size)
    period = args.senders / args.rate
    total = int(args.rate * args.duration)
    start = time.perf_counter()
    for n in range(total // args.senders):
        delay = start + n * period - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for sender in senders:
            sender.transport.write(one)
    sent = (total // args.senders) * args.senders
    for sender in senders:
        sender.transport.close()
    return {"sent": sent, "seconds": time.perf_counter() - start}


#: What a flooder pipelines, one frame of it, and what its answers hold.
FLOODS = {
    "history": (frame(0x06, {"limit": 200}), (b"\x89{",)),
    "ping": (frame(0x04, {}), (b"\x87{",)),
    "bad": (codec.frame(b'\x02{"text":5}'), (b"\x88{",)),
    "say": (frame(0x02, {"text": "f" * 100}), (b"\x88{", b'"from":"flooder"')),  # refused, or its echo
}

#: Floods of a version 2 flooder joined to the default room (where the
#: bystanders are; docs/protocol.md 19): REACT toggling one emoji on and off
#: the room's first message (a pair of frames), and TYPING. Answers: CHANGED
#: (or a refusal); the flooder's own TYPING notices.
_REACT = {"room": "general", "seq": 1, "emoji": "\U0001f44d"}
CONVERSATION_FLOODS = {
    "react": (frame(0x12, _REACT) + frame(0x12, {**_REACT, "on": False}), (b"\x94{", b"\x88{")),
    "typing": (frame(0x13, {"room": "general"}), (b"\x95{", b"\x88{")),
}


def _ws(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame, masked with a zero key (control frames are under 126 bytes)."""
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


#: A 125-byte WebSocket Ping, as large as a control frame may be.
PING_125 = _ws(0x9, b"p" * 125)
#: A PING packet (3 bytes) sent as three 1-byte fragments, again and again.
FRAGMENTED_PING = _ws(0x2, b"\x04", fin=False) + _ws(0x0, b"{", fin=False) + _ws(0x0, b"}")


class Raw(asyncio.Protocol):
    """A flooder's connection: counts what comes back and sees it closed."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.buffer = b""
        self.closed = loop.create_future()
        self.ready = loop.create_future()
        self.ready_mark = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if not self.ready.done():
            self.buffer += data
            if self.ready_mark and self.ready_mark in self.buffer:
                self.ready.set_result(None)
                self.buffer = b""

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class OtherFlood:
    """A flood on the web or IRC port, or from many connections at once:
    opened before the bystanders start, run until ``stop``."""

    connections = 1

    def __init__(self, args) -> None:
        self.args = args
        self.raws: list[Raw] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.connections):
            _, raw = await loop.create_connection(Raw, HOST, self.port())
            self.raws.append(raw)
            await self.greet(raw)

    def port(self) -> int:
        return self.args.web_port

    async def greet(self, raw: Raw) -> None:
        raw.ready_mark = b"101 Switching Protocols"
        raw.transport.write(UPGRADE)
        await asyncio.wait_for(raw.ready, 30)

    def chunk(self) -> bytes:
        raise NotImplementedError

    async def run(self, stop: float) -> int:
        """Pipeline until ``stop``, as fast as the sockets take it; units sent."""
        sent, chunk = 0, self.chunk()
        while time.perf_counter() < stop and not all(r.closed.done() for r in self.raws):
            for raw in self.raws:
                if not raw.closed.done() and raw.transport.get_write_buffer_size() < 256 * 1024:
                    raw.transport.write(chunk)
                    sent += 64
            await asyncio.sleep(0)
        return sent

    def result(self) -> dict:
        closed = sum(r.closed.done() for r in self.raws)
        return {"answers": self.answered(), "cut": f"{closed}/{len(self.raws)} closed" if closed else ""}

    def answered(self) -> int:
        return sum(r.received for r in self.raws)


class WsPings(OtherFlood):
    """125-byte WebSocket Pings, their Pongs read."""

    def chunk(self) -> bytes:
        return PING_125 * 64

    def answered(self) -> int:
        return sum(r.received for r in self.raws) // 127  # a Pong frame


class WsPingsUnread(WsPings):
    """The same Pings, the Pongs never read: the server's sendq must hold."""

    async def greet(self, raw: Raw) -> None:
        await super().greet(raw)
        raw.transport.pause_reading()


class WsFragments(OtherFlood):
    """Messages in 1-byte fragments."""

    def chunk(self) -> bytes:
        return FRAGMENTED_PING * 64

    def answered(self) -> int:
        return sum(r.received for r in self.raws) // 9  # a PONG {} in its frame


class IrcLines(OtherFlood):
    """Blank lines, as fast as they go."""

    line = b"\r\n"

    def port(self) -> int:
        return self.args.irc_port

    async def greet(self, raw: Raw) -> None:
        raw.ready_mark = b" 001 "
        raw.transport.write(b"NICK flooder\r\nUSER flooder 0 * :flooder\r\n")
        await asyncio.wait_for(raw.ready, 30)

    def chunk(self) -> bytes:
        return self.line * 4096


class IrcNotUtf8(IrcLines):
    """Lines that are not UTF-8."""

    line = b"PRIVMSG #general :\xff\xfe\r\n"


class Lists(OtherFlood):
    """LIST pipelined by a version 2 client, on a server of 1,000 rooms."""

    def port(self) -> int:
        return self.args.port

    async def greet(self, raw: Raw) -> None:
        raw.ready_mark = b"\x81{"
        raw.transport.write(frame(0x01, {"nick": "flooder", "proto": 2}))
        await asyncio.wait_for(raw.ready, 30)

    def chunk(self) -> bytes:
        return codec.encode_frame(codec.ListRooms("l")) * 64

    def answered(self) -> int:
        return sum(r.received for r in self.raws) // 40_000  # a listing of 1,000 rooms


class Guesses(OtherFlood):
    """300 connections guessing an account's password at once, each again as
    soon as it is answered."""

    connections = 300
    guess = codec.encode_frame(codec.Login("victim", 2, password="wrong guess"))

    def port(self) -> int:
        return self.args.port

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, owner = await loop.create_connection(Raw, HOST, self.port())
        owner.ready_mark = b"\x81{"
        owner.transport.write(frame(0x01, {"nick": "victim", "proto": 2}))
        await asyncio.wait_for(owner.ready, 30)
        owner.ready, owner.ready_mark = loop.create_future(), b"\x8f{"  # DONE
        owner.transport.write(codec.encode_frame(codec.AccountRequest("register", "the right password")))
        await asyncio.wait_for(owner.ready, 30)
        owner.transport.close()
        await super().open()

    async def greet(self, raw: Raw) -> None:
        pass

    async def run(self, stop: float) -> int:
        sent = 0
        seen = [-1] * len(self.raws)
        while time.perf_counter() < stop:
            for i, raw in enumerate(self.raws):
                if not raw.transport.is_closing() and raw.received != seen[i]:
                    seen[i] = raw.received  # answered (or just started): guess again
                    raw.transport.write(self.guess)
                    sent += 1
            await asyncio.sleep(0.001)
        return sent

    def answered(self) -> int:
        return sum(r.received for r in self.raws) // 60  # about an ERROR's length


class Slowloris(OtherFlood):
    """300 HTTP requests to the page's port, a byte of a header line at a time."""

    connections = 300

    async def greet(self, raw: Raw) -> None:
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

    async def run(self, stop: float) -> int:
        sent = 0
        while time.perf_counter() < stop:
            for raw in self.raws:
                if not raw.closed.done():
                    raw.transport.write(b"x")
                    sent += 1
            await asyncio.sleep(0.5)
        return sent


OTHER_FLOODS = {
    "ws-ping": WsPings,
    "ws-ping-unread": WsPingsUnread,
    "ws-fragments": WsFragments,
    "irc-blank": IrcLines,
    "irc-not-utf8": IrcNotUtf8,
    "list": Lists,
    "guesses": Guesses,
    "slowloris": Slowloris,
}


class Bystander(Client):
    """Says something every ``period`` and times its own echo (the ref is
    the send time); parses after the run, so timing stays cheap."""

    def __init__(self) -> None:
        super().__init__("frames")
        self.reads: list[tuple[float, bytes]] = []

    def data_received(self, data: bytes) -> None:
        self.reads.append((time.perf_counter(), data))
        if not self.welcomed.done() and b"\x81{" in data:
            self.welcomed.set_result(None)
        if self.joined is not None and not self.joined.done() and b"\x8c{" in data:
            self.joined.set_result(None)  # ROOM: in its room (protocol 2)

    def echoes(self) -> list[float]:
        """Echo latencies in seconds."""
        found, tail = [], b""
        for arrived, data in self.reads:
            payloads, tail = codec.split_frames(tail + data)
            for payload in payloads:
                if payload[0] == MESSAGE and b'"ref":' in payload:
                    found.append(arrived - float(json.loads(payload[1:])["ref"]))
        return found


class Flooder(Client):
    """Pipelines one kind of packet as fast as the socket takes it; counts answers."""

    def __init__(self, marks: tuple[bytes, ...]) -> None:
        super().__init__("frames")
        self.marks = marks
        self.answers = 0
        self.bye = b""

    def data_received(self, data: bytes) -> None:
        if not self.welcomed.done() and b"\x81{" in data:
            self.welcomed.set_result(None)
        if self.joined is not None and not self.joined.done() and b"\x8c{" in data:
            self.joined.set_result(None)  # ROOM: in its room (protocol 2)
        self.answers += sum(data.count(mark) for mark in self.marks)
        if b"\x8a{" in data:
            self.bye = data[data.find(b"\x8a{") :][:60]


async def abuse(args) -> dict:
    """Bystanders at ``--rate`` messages a second in all, timing their echoes,
    while one flooder (``--flood``, or none) pipelines as fast as it can."""
    loop = asyncio.get_running_loop()
    # The conversation floods' bystanders speak version 2, in the default room.
    proto = 2 if args.flood in CONVERSATION_FLOODS or args.flood == "none-v2" else 1
    bystanders = []
    for i in range(args.senders):
        _, client = await loop.create_connection(Bystander, HOST, args.port)
        client.transport.write(frame(0x01, {"nick": f"bystander{i}", "proto": proto}))
        bystanders.append(client)
    flooder = other = None
    floods = {**FLOODS, **CONVERSATION_FLOODS}
    if args.flood in floods:
        packet, marks = floods[args.flood]
        _, flooder = await loop.create_connection(lambda: Flooder(marks), HOST, args.port)
        flooder.transport.write(frame(0x01, {"nick": "flooder", "proto": proto}))
    everyone = bystanders + ([flooder] if flooder else [])
    await asyncio.wait_for(asyncio.gather(*(c.welcomed for c in everyone)), 60)
    if proto == 2:
        for client in everyone:
            client.joined = loop.create_future()
            client.transport.write(frame(0x08, {"room": "general"}))
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in everyone)), 60)
    if args.flood in OTHER_FLOODS:
        other = OTHER_FLOODS[args.flood](args)
        await other.open()
    await asyncio.sleep(0.5)
    for client in bystanders:
        client.reads = []
    stop = time.perf_counter() + args.duration
    sent = [0]

    async def flood() -> None:
        chunk = packet * 64
        while time.perf_counter() < stop and not flooder.closed.done():
            if flooder.transport.get_write_buffer_size() < 256 * 1024:
                flooder.transport.write(chunk)
                sent[0] += 64
                await asyncio.sleep(0)
            else:
                # 256 KiB wait unread: no spinning meanwhile, which would keep the
                # generator's core busy and push a shared machine's other work
                # onto the server's core (it showed as bystanders' latency).
                await asyncio.sleep(0.001)

    flooding = asyncio.ensure_future(flood()) if flooder else None
    if other is not None:
        flooding = asyncio.ensure_future(other.run(stop))
    period = args.senders / args.rate
    total = int(args.duration / period)
    cores0, scpu0 = core_times(), server_cpu_seconds(args.server_pid)
    start = time.perf_counter()
    for n in range(total):
        delay = start + n * period - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for client in bystanders:
            stamp = f"{time.perf_counter():.9f}"
            client.transport.write(frame(0x02, {"text": "bystander", "ref": stamp}))
    spoke = time.perf_counter() - start
    cores, scpu = core_busy(cores0, core_times()), server_cpu_seconds(args.server_pid) - scpu0
    if flooding is not None:
        sent[0] = (await flooding) or sent[0]
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and any(len(c.echoes()) < total for c in bystanders):
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - start
    latencies = sorted(x for c in bystanders for x in c.echoes())
    for client in everyone:
        client.transport.close()
    if other is not None:
        extra = other.result()
        for raw in other.raws:
            raw.transport.close()
        flooder_answers, cut = extra["answers"], extra["cut"]
    else:
        flooder_answers = flooder.answers if flooder else 0
        cut = flooder.bye.decode(errors="replace") if flooder and flooder.bye else ""
    return {
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "max_ms": 1000 * latencies[-1],
        "echoes": len(latencies),
        "expected": total * len(bystanders),
        "flood_sent": sent[0],
        "flood_answers": flooder_answers,
        "flood_answers_per_s": flooder_answers / elapsed,
        "flooder_cut": cut,
        # while the bystanders spoke: the server's share of its core, and how busy each core was
        "server_cpu_window": scpu / spoke,
        "cores_busy": cores,
    }


async def rooms(args) -> dict:
    """``--rooms`` rooms of ``--receivers`` each (protocol 2), every room with
    its own senders saying as fast as the server delivers; the same
    counting and flow control as fan-out, per room."""
    per_room = max(1, args.senders // args.rooms)
    members = args.receivers + per_room
    window = args.window or max(20, min(2000, 200_000 // (members * args.rooms)))
    state = {"sending": False}
    sent = [0] * args.rooms
    texts = [frame(0x02, {"text": "x" * args.size, "room": f"room{k}"}) for k in range(args.rooms)]

    def top_up(sender: Client) -> None:
        if state["sending"]:
            k = sender.room
            room = window - (sent[k] - sender.count)
            if room >= window // 4:
                sender.transport.write(texts[k] * room)
                sent[k] += room

    everyone = await connect_all(args.port, args.mode, args.rooms * members, "m", on_data=top_up, version=2)
    senders = []
    joined = []
    for index, client in enumerate(everyone):
        client.room = index % args.rooms
        client.joined = asyncio.get_running_loop().create_future()
        client.transport.write(frame(0x08, {"room": f"room{client.room}"}))
        joined.append(client.joined)
        if index // args.rooms < per_room:
            senders.append(client)
    await asyncio.wait_for(asyncio.gather(*joined), 120)

    def start() -> None:
        for sender in senders:
            sender.transport.write(texts[sender.room] * (window // per_room))
            sent[sender.room] += window // per_room

    result = await flow(args, everyone, state, start, lambda client: sent[client.room])
    for client in everyone:
        client.transport.close()
    return {**result, "messages": sum(sent), "members_per_room": members, "window": window}


# -- conversations (docs/protocol.md 19): what an edit, a reaction and a typing notice cost


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> float:
    """The server's user + system CPU seconds so far (0 without a pid)."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def core_times() -> dict[str, tuple[int, int]]:
    """Each core's (busy, all) ticks so far, from /proc/stat: how busy the
    server's and the generator's cores were, whoever used them (the machine
    may be shared)."""
    found = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *ticks = line.split()
                values = [int(t) for t in ticks[:8]]
                found[name] = (sum(values) - values[3] - values[4], sum(values))
    return found


def core_busy(before: dict, after: dict) -> dict[str, float]:
    """Each core's busy share between two core_times()."""
    return {
        name: (after[name][0] - before[name][0]) / max(1, after[name][1] - before[name][1])
        for name in after
        if name in before
    }


#: What each kind's request delivers to every member, as it starts in the
#: byte stream: MESSAGE, CHANGED (an edit, a reaction on or off), TYPING.
KIND_MARKS = {"say": _MARK, "edit": b"\x94{", "react": b"\x94{", "typing": b"\x95{"}
KINDS = tuple(KIND_MARKS)


class Member(asyncio.Protocol):
    """A version 2 member of one room. It parses whole frames while it sets
    up (WELCOME, ROOM, its seed message's seq), then, once ``counting``,
    only counts one kind's marker in the raw stream, at C speed, as the
    fan-out receivers do (a marker split across two reads is found in the
    seam)."""

    def __init__(self, on_data=None) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.mark: bytes | None = None
        self.count = 0
        self.carry = b""
        self.received = 0  # bytes, all along
        self.forgiven = 0  # deliveries the server never made (dropped TYPING), when the flow stalled
        self.on_data = on_data
        self.waiting: list[tuple[int, str | None, asyncio.Future]] = []
        self.closed = loop.create_future()
        self.packets = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def expect(self, kind: int, ref: str | None = None) -> asyncio.Future:
        """The next packet of type ``kind`` (with ``ref``, if given), as its body."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((kind, ref, future))
        return future

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        mark = self.mark
        if mark is None:
            payloads, self.buffer = codec.split_frames(self.buffer + data)
            for payload in payloads:
                self.packets += 1
                kind = payload[0]
                for waiter in self.waiting:
                    if waiter[0] == kind:
                        body = json.loads(payload[1:])
                        if waiter[1] is None or body.get("ref") == waiter[1]:
                            self.waiting.remove(waiter)
                            if not waiter[2].done():
                                waiter[2].set_result(body)
                            break
            return
        if self.carry:
            self.count += (self.carry + data[: len(mark) - 1]).count(mark)
        self.count += data.count(mark)
        self.carry = data[-(len(mark) - 1) :]
        if self.on_data is not None:
            self.on_data(self)


async def member_of(port: int, nick: str, on_data=None) -> tuple[Member, str]:
    """A version 2 session joined to the server's default room; (it, the room)."""
    loop = asyncio.get_running_loop()
    _, member = await loop.create_connection(lambda: Member(on_data), HOST, port)
    welcome = member.expect(codec.PacketType.WELCOME)
    member.transport.write(frame(0x01, {"nick": nick, "proto": 2}))
    room = (await asyncio.wait_for(welcome, 60))["default_room"]
    joined = member.expect(codec.PacketType.ROOM)
    member.transport.write(frame(0x08, {"room": room}))
    await asyncio.wait_for(joined, 60)
    return member, room


async def quiet(members: list, quiet: float = 0.3, limit: float = 60.0) -> None:
    """Until no member has received anything for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = [m.received for m in members]
        await asyncio.sleep(quiet)
        if before == [m.received for m in members]:
            return


async def conversations(args) -> dict:
    """``--members`` version 2 sessions in one room, each sending a stream of
    one ``--kind`` of request as fast as the server delivers them (flow
    controlled as fan-out is: about ``window`` requests in flight): SAY; EDIT
    of its own earlier message; REACT toggling one emoji on and off its own
    earlier message; TYPING (for the server to pass on each, start it with a
    tiny ``--typing-interval``). Counts what every member receives of that
    kind, and reads the server's CPU (``--server-pid``) over the measured
    seconds: its CPU per request and per delivery."""
    kind, n, size = args.kind, args.members, args.size
    state = {"sent": 0, "sending": False}
    window = args.window or max(200, min(2000, 20_000 // n))
    chunks: dict[int, bytes] = {}  # id(member) -> a unit of its stream (a REACT pair: on, then off)

    def top_up(member: Member) -> None:
        if not state["sending"]:
            return
        room = window - (state["sent"] - member.count - member.forgiven)
        if room >= window // 4:
            send(member, max(1, room // n))

    def send(member: Member, count: int) -> None:
        chunk = chunks[id(member)]
        units = count if kind != "react" else max(1, count // 2)
        member.transport.write(chunk * units)
        state["sent"] += units * (2 if kind == "react" else 1)

    members: list[Member] = []
    room = ""
    for i in range(n):
        member, room = await member_of(args.port, f"m{i}", on_data=top_up)
        members.append(member)
    for i, member in enumerate(members):  # each says the message it will edit or react to
        said = member.expect(codec.PacketType.MESSAGE, "seed")
        member.transport.write(frame(0x02, {"text": f"seed {i}", "room": room, "ref": "seed"}))
        seq = (await asyncio.wait_for(said, 60))["seq"]
        text = "y" * size
        chunks[id(member)] = {
            "say": frame(0x02, {"text": "x" * size, "room": room}),
            "edit": frame(0x10, {"room": room, "seq": seq, "text": text}),
            "react": frame(0x12, {"room": room, "seq": seq, "emoji": "\U0001f44d"})
            + frame(0x12, {"room": room, "seq": seq, "emoji": "\U0001f44d", "on": False}),
            "typing": frame(0x13, {"room": room}),
        }[kind]
    await quiet(members)
    mark = KIND_MARKS[kind]
    for member in members:
        member.mark, member.buffer, member.count = mark, b"", 0

    async def unstall() -> None:
        """Requests the server drops (TYPING inside its interval) are never
        delivered: when nothing arrives for 0.2 s, forgive what is missing."""
        last = -1
        while state["sending"]:
            await asyncio.sleep(0.2)
            now = sum(m.count for m in members)
            if now == last:
                for member in members:
                    member.forgiven = state["sent"] - member.count
                    top_up(member)
            last = now

    state["sending"] = True
    first_send = time.perf_counter()
    for member in members:
        send(member, max(1, window // n))
    watcher = asyncio.ensure_future(unstall())
    await asyncio.sleep(args.warmup)
    cores0 = core_times()
    got0, bytes0, cpu0, scpu0, t0 = (
        sum(m.count for m in members),
        sum(m.received for m in members),
        cpu(),
        server_cpu_seconds(args.server_pid),
        time.perf_counter(),
    )
    await asyncio.sleep(args.duration)
    got1, bytes1, cpu1, scpu1, t1 = (
        sum(m.count for m in members),
        sum(m.received for m in members),
        cpu(),
        server_cpu_seconds(args.server_pid),
        time.perf_counter(),
    )
    cores = core_busy(cores0, core_times())
    state["sending"] = False
    await watcher
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and any(m.count < state["sent"] - m.forgiven for m in members):
        await asyncio.sleep(0.01)
    await quiet(members, 0.3, 5.0)
    delivered = sum(m.count for m in members)
    drained = time.perf_counter()
    cut = sum(m.closed.done() for m in members)
    for member in members:
        member.transport.close()
    deliveries = (got1 - got0) / (t1 - t0)
    server_cpu = (scpu1 - scpu0) / (t1 - t0)
    requests = deliveries / n  # each request delivered to every member (its sender too)
    return {
        "kind": kind,
        "members": n,
        "window": window,
        "sent": state["sent"],
        "passed_on": delivered / max(1, state["sent"] * n),
        "requests_per_s": requests,
        "deliveries_per_s": deliveries,
        "bytes_per_delivery": (bytes1 - bytes0) / max(1, got1 - got0),
        "server_cpu": server_cpu,
        "us_per_request": server_cpu / requests * 1e6 if requests else float("nan"),
        "us_per_delivery": server_cpu / deliveries * 1e6 if deliveries else float("nan"),
        "generator_cpu": (cpu1 - cpu0) / (t1 - t0),
        "overall_requests_per_s": delivered / n / (drained - first_send),
        "cut": cut,
        "cores_busy": cores,  # the server runs on cpu0, the generator on cpu1 (when pinned)
    }


async def catchup(args) -> dict:
    """A version 2 client joined to the default room fetches its whole
    history, ``--repeats`` times each way, one request in flight: pages of
    HISTORY ``after`` (oldest first) and ``before`` (newest first) of up to
    ``--page`` messages, and the changes (``changed_after`` 0) page by page.
    Wall time, bytes received and server CPU for each fetch; medians."""
    member, room = await member_of(args.port, "reader")
    await quiet([member])
    page = args.page

    async def ask(body: dict) -> dict:
        answer = member.expect(codec.PacketType.HISTORY_PAGE)  # it carries no ref (section 7)
        failed = member.expect(codec.PacketType.ERROR, "c")
        member.transport.write(frame(0x06, {**body, "room": room, "limit": page, "ref": "c"}))
        done, _ = await asyncio.wait({answer, failed}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if failed in done:
            raise RuntimeError(f"HISTORY refused: {failed.result()}")
        if not done:
            raise RuntimeError("HISTORY unanswered for 60 s")
        failed.cancel()
        member.waiting = [w for w in member.waiting if not w[2].done()]
        return answer.result()

    async def fetch(way: str) -> dict:
        bytes0, scpu0, cpu0 = member.received, server_cpu_seconds(args.server_pid), cpu()
        start = time.perf_counter()
        messages = pages = 0
        cursor: int | None = 0 if way != "before" else None
        for _ in range(100_000 // page + 10):  # bounded: more pages than any history here
            if way == "after":
                body = {"after": cursor}
            elif way == "before":
                body = {} if cursor is None else {"before": cursor}
            else:
                body = {"changed_after": cursor}
            answer = await ask(body)
            got = answer["messages"]
            pages += 1
            messages += len(got)
            if not answer.get("more") or not got:
                break
            if way == "after":
                cursor = got[-1]["seq"]
            elif way == "before":
                cursor = got[0]["seq"]
            else:
                cursor = max(m.get("rev", 0) for m in got)
        return {
            "seconds": time.perf_counter() - start,
            "bytes": member.received - bytes0,
            "server_cpu_s": server_cpu_seconds(args.server_pid) - scpu0,
            "generator_cpu_s": cpu() - cpu0,
            "pages": pages,
            "messages": messages,
        }

    ways = ("after", "before", "changes")
    seen: dict[str, list[dict]] = {way: [] for way in ways}
    for _ in range(args.repeats):
        for way in ways:
            seen[way].append(await fetch(way))
    member.transport.close()
    result: dict = {"repeats": args.repeats, "page": page}
    for way, runs in seen.items():
        result[way] = {
            "seconds": statistics.median(r["seconds"] for r in runs),
            "bytes": statistics.median(r["bytes"] for r in runs),
            # ticks of 10 ms: the mean over the repeats says more than a median of ticks
            "server_cpu_s": statistics.fmean(r["server_cpu_s"] for r in runs),
            "generator_cpu_s": statistics.fmean(r["generator_cpu_s"] for r in runs),
            "pages": runs[0]["pages"],
            "messages": runs[0]["messages"],
        }
    return result


SCENARIOS = {
    "conversations": conversations,
    "catchup": catchup,
    "fanout": fanout,
    "rooms": rooms,
    "latency": latency,
    "logins": logins,
    "idle": idle,
    "passwords": passwords,
    "storm": storm,
    "reconnect": reconnect,
    "paced": paced,
    "abuse": abuse,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--sender-port", type=int, default=0, help="latency: the sender's server (another node)"
    )
    parser.add_argument(
        "--relay-port",
        type=int,
        default=0,
        help="latency: the sender is an account's second device on this node, relayed to --sender-port's",
    )
    parser.add_argument("--mode", choices=["frames", "lines", "websocket", "irc"], default="frames")
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--rooms", type=int, default=1, help="rooms scenario: how many rooms")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--slow", type=int, default=0)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=int, default=0, help="messages in flight (0: scaled to the room)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--drain", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument(
        "--settle", type=float, default=0.5, help="latency: seconds between logins and sending"
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--at-once", type=int, default=8, help="passwords, storm: logins in flight")
    parser.add_argument("--proto", type=int, choices=[1, 2], default=1, help="storm, idle: protocol version")
    parser.add_argument("--no-join", action="store_true", help="storm, IRC: register only")
    parser.add_argument(
        "--flood", choices=["none", "none-v2", *FLOODS, *OTHER_FLOODS, *CONVERSATION_FLOODS], default="none"
    )
    parser.add_argument("--web-port", type=int, default=0, help="abuse: the page's port (--web)")
    parser.add_argument("--irc-port", type=int, default=0, help="abuse: the IRC port (--irc)")
    parser.add_argument("--kind", choices=KINDS, default="say", help="conversations: what each member sends")
    parser.add_argument("--members", type=int, default=10, help="conversations: sessions in the room")
    parser.add_argument(
        "--server-pid", type=int, default=0, help="conversations, catchup, abuse: read its CPU time"
    )
    parser.add_argument("--repeats", type=int, default=5, help="catchup: fetches of each kind")
    parser.add_argument("--page", type=int, default=200, help="catchup: HISTORY limit (the server's page)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(SCENARIOS[args.scenario](args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
