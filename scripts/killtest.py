"""Kill the server with SIGKILL mid-burst, again and again, and audit history.

    python -m scripts.killtest [--cycles 20] [--seed N]

Each cycle starts the server on the same history file, has two clients send
messages as fast as they are acknowledged (a version 1 client in the default
room and a version 2 client in a room of its own: each room numbers its own
seqs), kills the server at a random moment, and records every
acknowledgement the clients saw. At the end a fresh server is started and
each room's whole history read back: every acknowledged message must be
there under the seq it was acknowledged with, and no seq may repeat in a
room. The version 2 client also edits every second message it got back
and reacts to every third: every acknowledged edit and reaction must be
there too. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from chatproto import codec
from chatproto.client import ChatClientProtocol
from scripts.spawn import ServerProcess, spawn_server


def start_server(reactor, history: str) -> ServerProcess:
    return spawn_server(
        reactor,
        "--history",
        history,
        "--rate",
        "100000",
        "--burst",
        "100000",
        "--packet-rate",
        "1e9",
        "--packet-burst",
        "1e9",
    )


class Sender(ChatClientProtocol):
    """Keeps ``window`` messages in flight; records every acknowledgement."""

    def __init__(self, tag: str, room: str | None = None, window: int = 50) -> None:
        self.tag = tag
        self.room = room  # version 2 only; None: the default room, version 1
        self.window = window
        self.sent = 0
        self.acked: dict[str, int] = {}  # text -> seq
        self.welcomed: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()
        self.history: list = []
        self.page: defer.Deferred | None = None
        self.edited: dict[int, str] = {}  # seq -> its text, as an acknowledged EDIT made it
        self.reacted: set[int] = set()  # seqs with an acknowledged reaction

    def packetReceived(self, packet) -> None:
        if isinstance(packet, codec.Welcome):
            if self.room is None:
                self.welcomed.callback(packet)
            else:
                self.send(codec.Join(self.room))
        elif isinstance(packet, codec.RoomState):
            self.welcomed.callback(packet)
        elif isinstance(packet, codec.MessagePacket) and packet.ref is not None:
            self.acked[packet.text] = packet.seq
            self.change(packet)
            self.top_up()
        elif isinstance(packet, codec.Changed) and packet.ref == "e":
            self.edited[packet.message.seq] = packet.message.text
        elif isinstance(packet, codec.Changed) and packet.ref == "x":
            self.reacted.add(packet.message.seq)
        elif isinstance(packet, codec.HistoryPage) and self.page is not None:
            page, self.page = self.page, None
            page.callback(packet)

    def change(self, message: codec.MessagePacket) -> None:
        """Version 2: edit every second message, react to every third."""
        if self.room is None:
            return
        if message.seq % 2 == 0:
            self.send(codec.Edit(self.room, message.seq, message.text + "!", "e"))
        if message.seq % 3 == 0:
            self.send(codec.React(self.room, message.seq, "👍", ref="x"))

    def top_up(self) -> None:
        while self.sent - len(self.acked) < self.window:
            self.send(codec.Say(f"{self.tag}-{self.sent}", "r", self.room))
            self.sent += 1

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)


@defer.inlineCallbacks
def connect(reactor, port: int, nick: str, tag: str, room: str | None = None):
    client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Sender(tag, room))
    client.send(codec.Login(nick, 1 if room is None else 2))
    yield client.welcomed.addTimeout(10, reactor)
    return client


@defer.inlineCallbacks
def read_history(reactor, client: Sender) -> list:
    messages, after = [], 0
    for _ in range(100000):  # bounded: 200 a page
        client.page = defer.Deferred()
        client.send(codec.HistoryRequest(after=after, limit=200, room=client.room))
        page = yield client.page.addTimeout(10, reactor)
        messages.extend(page.messages)
        if not page.more:
            return messages
        after = page.messages[-1].seq
    raise RuntimeError("history did not end")


#: The rooms written to: the default room (version 1) and one other (version 2).
ROOMS = (None, "side")


@defer.inlineCallbacks
def kill_cycles(reactor, history: str, cycles: int, rng: random.Random) -> dict:
    acked: dict[str | None, dict[str, int]] = {room: {} for room in ROOMS}
    edited: dict[int, str] = {}
    reacted: set[int] = set()
    floors: dict[str | None, int] = dict.fromkeys(ROOMS, 0)
    sent = 0
    for cycle in range(cycles):
        server = start_server(reactor, history)
        port = yield server.listening.addTimeout(20, reactor)
        clients = []
        for i, room in enumerate(ROOMS):
            client = yield connect(reactor, port, f"killer{cycle}x{i}", f"c{cycle}x{i}", room)
            clients.append(client)
        for client in clients:
            client.top_up()
        yield task.deferLater(reactor, rng.uniform(0.05, 0.6), lambda: None)
        server.transport.signalProcess("KILL")
        code = yield server.ended.addTimeout(10, reactor)
        assert code == -9, code
        for client in clients:
            yield client.lost.addTimeout(10, reactor)
            seqs = sorted(client.acked.values())
            if seqs and seqs[0] <= floors[client.room]:
                raise AssertionError(
                    f"cycle {cycle}, room {client.room}: seq {seqs[0]} reused "
                    f"(the last run reached {floors[client.room]})"
                )
            floors[client.room] = max(seqs, default=floors[client.room])
            acked[client.room].update(client.acked)
            edited.update(client.edited)
            reacted.update(client.reacted)
            sent += client.sent
    server = start_server(reactor, history)
    port = yield server.listening.addTimeout(20, reactor)
    report = {"cycles": cycles, "rooms": len(ROOMS), "sent": sent, "acknowledged": 0, "stored": 0, "lost": 0}
    report.update(seq_repeats=0, seq_increasing=True, unacknowledged_but_stored=0)
    report.update(changes_acknowledged=len(edited) + len(reacted), changes_lost=0)
    for room in ROOMS:
        reader = yield connect(reactor, port, f"auditor{ROOMS.index(room)}", "audit", room)
        stored = yield read_history(reactor, reader)
        by_seq = {m.seq: m for m in stored}
        seqs = [m.seq for m in stored]
        report["acknowledged"] += len(acked[room])
        report["stored"] += len(stored)
        report["lost"] += sum(
            1
            for text, seq in acked[room].items()
            if seq not in by_seq or by_seq[seq].text not in (text, text + "!")
        )
        if room is not None:
            report["changes_lost"] += sum(
                1 for seq, text in edited.items() if seq not in by_seq or by_seq[seq].text != text
            )
            report["changes_lost"] += sum(
                1 for seq in reacted if seq not in by_seq or not by_seq[seq].reactions
            )
        report["seq_repeats"] += len(seqs) - len(set(seqs))
        report["seq_increasing"] &= seqs == sorted(seqs)
        report["unacknowledged_but_stored"] += len(stored) - len(acked[room])
    server.transport.signalProcess("TERM")
    yield server.ended.addTimeout(20, reactor)
    return report


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    folder = tempfile.mkdtemp(prefix="killtest-")
    history = os.path.join(folder, "history.sqlite3")

    @defer.inlineCallbacks
    def run(reactor):
        report = yield kill_cycles(reactor, history, args.cycles, random.Random(seed))
        report["seed"] = seed
        print(json.dumps(report))
        if report["lost"] or report["changes_lost"] or report["seq_repeats"] or not report["seq_increasing"]:
            raise SystemExit(1)

    task.react(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
