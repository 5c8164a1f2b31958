"""Soak: many clients doing everything at random for a while, then an audit.

    python -m scripts.soak [--clients 500] [--seconds 300] [--seed N]

The server runs in its own process (pinned to core 0 where possible); the
clients share one asyncio process. Half the clients speak protocol version
1 (always in the default room), half version 2 (in one to three of a few
rooms). Each connects, logs in (with its resume token when it has one), and
then at random says something (a version 2 client in one of its rooms),
whispers, asks for history, joins or leaves a room, quits, or drops its
connection without a word, and comes back a moment later. Afterwards:

- every message any client saw acknowledged is in its room's history,
  under the same seq (lost must be 0);
- every connection saw each room's chat messages in one gap-free order;
- the server's RSS is back within a tolerance of its baseline, and it holds
  as many file descriptors as before (no leaks).

Loopback only; the run and every wait are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time

from chatproto import codec
from scripts.procstat import fd_count, load_server_argv, rss_bytes, start_pinned

DEFAULT = "general"
ROOMS = (DEFAULT, "ops", "random", "release")


class SoakClient(asyncio.Protocol):
    def __init__(self, soak: Soak, nick: str) -> None:
        self.soak = soak
        self.nick = nick
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.welcomed = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.next_seq: dict[str, int] = {}  # room -> the seq expected next
        self.rooms: set[str] = set()  # version 2: the rooms it is in

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, packet) -> None:
        self.transport.write(codec.encode_frame(packet))

    def data_received(self, data: bytes) -> None:
        payloads, self.buffer = codec.split_frames(self.buffer + data)
        for payload in payloads:
            self.frame(payload)

    def frame(self, payload: bytes) -> None:
        soak = self.soak
        packet = codec.decode_server(payload)
        if isinstance(packet, codec.MessagePacket):
            soak.deliveries += 1
            room = packet.room or DEFAULT
            expected = self.next_seq.get(room)
            if expected is not None and packet.seq != expected:
                soak.order_violations += 1
            self.next_seq[room] = packet.seq + 1
            if packet.ref is not None:
                soak.acked[room, packet.text] = packet.seq
        elif isinstance(packet, codec.Welcome):
            self.next_seq.clear()  # a new starting point in every room
            self.rooms = {name.casefold() for name in packet.rooms or ()}
            soak.tokens[self.nick] = packet.resume
            if not self.welcomed.done():
                self.welcomed.set_result(packet)
        elif isinstance(packet, codec.RoomState):
            self.rooms.add(packet.room.casefold())
            self.next_seq.pop(packet.room.casefold(), None)
        elif isinstance(packet, codec.Left) and packet.ref is not None:
            self.rooms.discard(packet.room.casefold())  # our own PART
            self.next_seq.pop(packet.room.casefold(), None)
        elif isinstance(packet, codec.Private):
            soak.privates += 1
        elif isinstance(packet, codec.Error):
            soak.errors[packet.code] = soak.errors.get(packet.code, 0) + 1
            if not self.welcomed.done() and packet.code == codec.ErrorCode.NICK_TAKEN:
                self.welcomed.set_exception(RuntimeError("nick taken"))


class Soak:
    def __init__(self, args, port: int) -> None:
        self.args = args
        self.port = port
        self.rng = random.Random(args.seed)
        self.acked: dict[str, int] = {}
        self.tokens: dict[str, str] = {}
        self.deliveries = 0
        self.privates = 0
        self.order_violations = 0
        self.connections = 0
        self.said = 0
        self.errors: dict[str, int] = {}
        self.online: list[SoakClient] = []

    async def life(self, index: int, deadline: float) -> None:
        """One user: connect, act at random, leave, come back; until the deadline."""
        rng = random.Random(self.rng.random())
        nick = f"soak{index}"
        version = 1 + index % 2
        counter = 0
        client = None
        loop = asyncio.get_running_loop()
        await asyncio.sleep(rng.uniform(0, 5))
        while loop.time() < deadline:
            try:
                _, client = await asyncio.wait_for(
                    loop.create_connection(lambda: SoakClient(self, nick), "127.0.0.1", self.port), 10
                )
                client.send(codec.Login(nick, version, self.tokens.get(nick)))
                await asyncio.wait_for(client.welcomed, 10)
                if version == 2:
                    for room in rng.sample(ROOMS, rng.randint(1, 3)):
                        if room not in client.rooms:  # a resume kept its rooms
                            client.send(codec.Join(room))
            except (OSError, asyncio.TimeoutError, RuntimeError):
                await asyncio.sleep(rng.uniform(0.5, 2))
                continue
            self.connections += 1
            self.online.append(client)
            try:
                while loop.time() < deadline and not client.closed.done():
                    await asyncio.sleep(rng.uniform(1, 5))
                    roll = rng.random()
                    room = rng.choice(sorted(client.rooms)) if client.rooms else None
                    if roll < 0.65 and (version == 1 or room):
                        counter += 1
                        client.send(codec.Say(f"{nick}:{counter}", f"{counter}", room))
                        self.said += 1
                    elif roll < 0.80 and self.online:
                        peer = rng.choice(self.online)
                        client.send(codec.Whisper(peer.nick, "psst"))
                    elif roll < 0.85:
                        client.send(codec.HistoryRequest(limit=20, room=room))
                    elif roll < 0.90 and version == 2:
                        if room and rng.random() < 0.5:
                            client.send(codec.Part(room, "soak", "p"))
                        else:
                            client.send(codec.Join(rng.choice(ROOMS)))
                    elif roll < 0.95:
                        client.send(codec.Quit("soak"))
                        break
                    else:
                        client.transport.abort()  # vanish without a word
                        break
            finally:
                if client in self.online:
                    self.online.remove(client)
            if loop.time() < deadline:
                client.transport.close()
                await asyncio.sleep(rng.uniform(0.5, 3))
        if client is not None and not client.closed.done():
            client.send(codec.Quit("done"))
            client.transport.close()

    async def audit(self) -> dict[str, list[codec.Message]]:
        """Every room's whole history, read by a version 2 client."""
        loop = asyncio.get_running_loop()
        pages: asyncio.Queue = asyncio.Queue()
        joined: asyncio.Queue = asyncio.Queue()

        class Reader(SoakClient):
            def frame(self, payload: bytes) -> None:
                packet = codec.decode_server(payload)
                if isinstance(packet, codec.Welcome) and not self.welcomed.done():
                    self.welcomed.set_result(packet)
                elif isinstance(packet, codec.HistoryPage):
                    pages.put_nowait(packet)
                elif isinstance(packet, codec.RoomState):
                    joined.put_nowait(packet)

        _, reader = await loop.create_connection(lambda: Reader(self, "auditor"), "127.0.0.1", self.port)
        reader.send(codec.Login("auditor", 2))
        await asyncio.wait_for(reader.welcomed, 10)
        stored: dict[str, list[codec.Message]] = {}
        for room in ROOMS:
            reader.send(codec.Join(room))
            await asyncio.wait_for(joined.get(), 10)
            messages, after = stored.setdefault(room, []), 0
            for _ in range(100000):
                reader.send(codec.HistoryRequest(after=after, limit=200, room=room))
                page = await asyncio.wait_for(pages.get(), 10)
                messages.extend(page.messages)
                if not page.more:
                    break
                after = page.messages[-1].seq
        reader.transport.close()
        return stored


async def run(args) -> dict:
    history = args.history or os.path.join(tempfile.mkdtemp(prefix="chat-"), "history.sqlite3")
    server, port = start_pinned(load_server_argv(history))
    pid = server.pid
    try:
        soak = Soak(args, port)
        await asyncio.sleep(1)
        # Warm up so lazily opened files (the WAL checkpointer) count in the baseline.
        warm = Soak(args, port)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(warm.life(100000 + i, loop.time() + 3) for i in range(5)))
        await asyncio.sleep(3)
        rss_before, fds_before = rss_bytes(pid), fd_count(pid)
        peak = rss_before
        started = time.monotonic()
        deadline = loop.time() + args.seconds
        lives = [asyncio.ensure_future(soak.life(i, deadline)) for i in range(args.clients)]
        while not all(life.done() for life in lives):
            await asyncio.sleep(1)
            peak = max(peak, rss_bytes(pid))
            if time.monotonic() - started > args.seconds + 120:
                raise RuntimeError("clients did not finish")
        for life in lives:
            life.result()
        await asyncio.sleep(12)  # idle timeouts of vanished clients and a heap trim
        rss_after, fds_after = rss_bytes(pid), fd_count(pid)
        stored = await soak.audit()
        by_text = {(room, m.text): m.seq for room, messages in stored.items() for m in messages}
        lost = sum(1 for key, seq in soak.acked.items() if by_text.get(key) != seq)
        repeats = sum(len(ms) - len({m.seq for m in ms}) for ms in stored.values())
        return {
            "clients": args.clients,
            "seconds": args.seconds,
            "seed": args.seed,
            "connections": soak.connections,
            "messages_said": soak.said,
            "messages_acknowledged": len(soak.acked),
            "messages_stored": sum(len(messages) for messages in stored.values()),
            "messages_stored_by_room": {room: len(messages) for room, messages in stored.items()},
            "lost": lost,
            "order_violations": soak.order_violations,
            "seq_repeats": repeats,
            "deliveries": soak.deliveries,
            "whispers_received": soak.privates,
            "errors": soak.errors,
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_peak_mib": round(peak / 2**20, 1),
            "rss_after_mib": round(rss_after / 2**20, 1),
            "fds_before": fds_before,
            "fds_after": fds_after,
        }
    finally:
        server.terminate()
        server.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--history", default=None, help="history file (default: a temporary one)")
    parser.add_argument("--rss-tolerance-mib", type=float, default=32)
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(2**32)
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=1))
    failed = []
    if report["lost"]:
        failed.append("acknowledged messages lost")
    if report["order_violations"] or report["seq_repeats"]:
        failed.append("order broken")
    if report["fds_after"] != report["fds_before"]:
        failed.append("file descriptors leaked")
    if report["rss_after_mib"] > report["rss_before_mib"] + args.rss_tolerance_mib:
        failed.append("RSS did not come back to its baseline")
    print("PASS" if not failed else "FAIL: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
