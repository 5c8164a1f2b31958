"""Logins a second: guests next to accounts (a password checked with scrypt),
in one run, against a server in this process on 127.0.0.1.

    python -m benchmarks.login_cost [GUESTS] [ACCOUNTS]
"""

from __future__ import annotations

import sys
import time

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from chatproto import codec
from chatproto.client import ChatClientProtocol
from chatproto.server import build_server

PASSWORD = "correct horse battery"
AT_ONCE = 8


class Client(ChatClientProtocol):
    def __init__(self) -> None:
        self.answer: defer.Deferred = defer.Deferred()

    def packetReceived(self, packet) -> None:
        if isinstance(packet, (codec.Welcome, codec.Error, codec.Done)) and not self.answer.called:
            self.answer.callback(packet)


async def connect(port: int) -> Client:
    client = Client()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


async def login(port: int, nick: str, password: str | None) -> None:
    client = await connect(port)
    client.send(codec.Login(nick, 2, password=password))
    answer = await client.answer
    assert isinstance(answer, codec.Welcome), answer
    client.transport.loseConnection()


async def storm(port: int, nicks: list[str], password: str | None) -> float:
    started = time.perf_counter()
    for i in range(0, len(nicks), AT_ONCE):
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(login(port, n, password)) for n in nicks[i : i + AT_ONCE]]
        )
    return len(nicks) / (time.perf_counter() - started)


async def main(guests: int, accounts: int) -> None:
    server = build_server(reactor, ["tcp:0:interface=127.0.0.1"], ":memory:")
    server.start()
    port = server.port
    for i in range(accounts):  # register each account once, untimed
        client = await connect(port)
        client.send(codec.Login(f"acct{i}", 2))
        await client.answer
        client.answer = defer.Deferred()
        client.send(codec.AccountRequest("register", PASSWORD))
        await client.answer
        client.transport.loseConnection()
    guest_rate = await storm(port, [f"guest{i}" for i in range(guests)], None)
    account_rate = await storm(port, [f"acct{i}" for i in range(accounts)], PASSWORD)
    print(f"guest logins/s    {guest_rate:8.1f}  ({guests} logins, {AT_ONCE} at a time)")
    print(f"password logins/s {account_rate:8.1f}  ({accounts} logins, scrypt N=2^15 r=8 p=1)")
    print(f"ratio             {guest_rate / account_rate:8.1f}x")
    await server.stopService()


def run() -> None:
    guests = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    accounts = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    d = defer.Deferred.fromCoroutine(main(guests, accounts))
    d.addErrback(lambda f: print(f.getTraceback()))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()


if __name__ == "__main__":
    run()
