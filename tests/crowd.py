"""A crowd for the big-room client tests: many logged-in members of one room.

Run as a process of its own (``python -m tests.crowd PORT ROOM COUNT
[EXTRA...]``) so the crowd's sockets load another core than the client
under test: it opens COUNT raw Int32 connections from 127.0.0.1 (at most
IN_FLIGHT logging in at once), logs each in with version 2 as ``m0000``,
``m0001``... and then the EXTRA nicks, joins ROOM, prints ``ready N`` once
every ROOM came, and then reads (and drops) what the server sends until
its standard input closes. Anything refused is printed and exits 1; the
whole crowd must be in within DEADLINE seconds.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys

from chatproto import codec

#: Logins under way at once: a storm the server sees as bounded, and a bounded helper.
IN_FLIGHT = 200
DEADLINE = 60.0
_LENGTH = struct.Struct("!I")


def frame(packet) -> bytes:
    payload = codec.encode(packet)
    return _LENGTH.pack(len(payload)) + payload


class Member(asyncio.Protocol):
    """One member: logs in, joins, then drops what comes."""

    def __init__(self, nick: str, room: str) -> None:
        self.nick, self.room = nick, room
        self.buffer = b""
        self.joined: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(frame(codec.Login(self.nick, 2)) + frame(codec.Join(self.room, "join")))

    def data_received(self, data: bytes) -> None:
        if self.joined.done():
            return  # in: what the room says is not this helper's business
        self.buffer += data
        while len(self.buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < 4 + length:
                return
            payload, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
            kind = payload[0]
            if kind == codec.PacketType.ROOM:
                self.joined.set_result(None)
                self.buffer = b""
                return
            if kind in (codec.PacketType.ERROR, codec.PacketType.BYE):
                self.joined.set_exception(RuntimeError(f"{self.nick}: {json.loads(payload[1:])}"))
                return

    def connection_lost(self, exc) -> None:
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(f"{self.nick}: connection lost ({exc})"))


async def crowd(port: int, room: str, nicks: list[str]) -> list[Member]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(IN_FLIGHT)
    members: list[Member] = []

    async def one(nick: str) -> None:
        async with gate:
            _, member = await loop.create_connection(lambda: Member(nick, room), "127.0.0.1", port)
            members.append(member)
            await member.joined

    await asyncio.wait_for(asyncio.gather(*(one(nick) for nick in nicks)), DEADLINE)
    return members


async def main(port: int, room: str, count: int, extra: list[str]) -> int:
    nicks = [f"m{n:04d}" for n in range(count - len(extra))] + extra
    try:
        members = await crowd(port, room, nicks)
    except (RuntimeError, OSError, TimeoutError) as e:
        print(f"refused: {e}", flush=True)
        return 1
    print(f"ready {len(members)}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    for member in members:
        if member.transport is not None:
            member.transport.close()
    return 0


if __name__ == "__main__":
    port, room, count, *extra = sys.argv[1:]
    sys.exit(asyncio.run(main(int(port), room, int(count), extra)))
