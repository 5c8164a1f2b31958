"""Coverage-guided fuzzing of the codec and the connection state machine.

    python -m fuzz.fuzz_server [libFuzzer options, e.g. -max_total_time=60 CORPUS]

Each input drives a server with three connections on StringTransport and a
task.Clock: the fuzzer's bytes choose which connection gets the next chunk
of stream bytes (valid frames, broken frames, anything), when time passes,
and when a connection drops. The server must never log a failure (a handler
raising), must only ever write well-formed server packets, and its
registries must stay consistent. ``exercise`` is also what the regression
test replays, for every file in fuzz/regressions/.
"""

from __future__ import annotations

import sys

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from chatproto import codec
from chatproto.limits import Limits
from chatproto.server import build_server

# A few valid frames the fuzzer can splice in: reaching deep states quickly.
SEEDS = [
    codec.frame(codec.encode(p))
    for p in (
        codec.Login("ann", 1),
        codec.Login("bob", 1),
        codec.Say("hi", "r"),
        codec.Whisper("bob", "psst", "w"),
        codec.HistoryRequest(before=5, limit=3),
        codec.HistoryRequest(after=0),
        codec.Ping("t"),
        codec.Quit("bye"),
        codec.Login("not a nick!", 1),
        codec.Login("cat", 3),
        codec.Say("bell\x07", "b"),
        # version 2 (appended: saved inputs name seeds by index)
        codec.Login("dan", 2),
        codec.Join("lobby", "j"),
        codec.Join("general"),
        codec.Say("in the lobby", "l", "lobby"),
        codec.SetTopic("lobby", "plans", "t"),
        codec.ListRooms("l"),
        codec.HistoryRequest(room="lobby"),
        codec.Part("lobby", "later", "p"),
        codec.Join("not a room!"),
    )
]


class Failed(Exception):
    pass


def _check_output(transport: StringTransport, seen: set[str]) -> None:
    payloads, rest = codec.split_frames(transport.value())
    transport.clear()
    if rest:
        raise Failed(f"a truncated frame was written: {rest[:40]!r}")
    for payload in payloads:
        try:
            packet = codec.decode_server(payload)
        except codec.ProtocolError as e:
            raise Failed(f"the server wrote a malformed packet: {e!r} {payload[:80]!r}") from None
        seen.add(behaviour(packet))


def behaviour(packet) -> str:
    """What a server packet shows of the path taken: its kind, and the code
    or reason of an ERROR, a BYE or a LEFT."""
    detail = getattr(packet, "code", None) or getattr(packet, "reason", None)
    return f"{type(packet).__name__} {detail}" if detail else type(packet).__name__


def exercise(data: bytes) -> set[str]:
    """Run one input; raises Failed (or anything unexpected) on a bug.
    Returns the behaviours the server showed (see :func:`behaviour`)."""
    seen: set[str] = set()
    failures = []

    def observe(event):
        if event.get("log_failure") is not None:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        clock = Clock()
        server = build_server(clock, limits=Limits(max_frame=2048, max_text=200, history_replay=5))
        hub, factory = server.hub, server.factory
        peers = []
        for i in range(3):
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1000 + i))
            protocol = factory.buildProtocol(None)
            protocol.makeConnection(transport)
            peers.append((protocol, transport))
        position = 0
        while position + 2 <= len(data):
            op, arg = data[position], data[position + 1]
            position += 2
            protocol, transport = peers[op % 3]
            action = (op // 3) % 6
            if action in (0, 1, 2):  # raw stream bytes
                chunk = data[position : position + arg % 64 + 1]
                position += len(chunk)
                protocol.dataReceived(chunk)
            elif action == 3:  # a valid frame, maybe cut short
                frame = SEEDS[arg % len(SEEDS)]
                protocol.dataReceived(frame[: len(frame) - (arg // 64)])
            elif action == 4:
                clock.advance(arg / 2)
            elif not protocol.connection._is_lost:
                from twisted.internet.error import ConnectionDone
                from twisted.python.failure import Failure

                protocol.connectionLost(Failure(ConnectionDone()))
            hub.flush()
            for _, peer_transport in peers:
                _check_output(peer_transport, seen)
            if failures:
                raise Failed(f"a handler failed: {failures[0].getTraceback()}")
            sessions = hub.sessions
            if sorted(hub.registry.nick_keys()) != sorted(s.key for s in sessions):
                raise Failed("the nick index and the sessions disagree")
            if any(s.connection._is_lost for s in sessions):
                raise Failed("a lost connection is still registered")
            for chat_room in hub.rooms:
                if any(hub.registry.sessions.get(id) is not s for id, s in chat_room.members.items()):
                    raise Failed(f"room {chat_room.name} lists a member that is gone")
        hub.shutdown()
    finally:
        globalLogPublisher.removeObserver(observe)
    return seen


def main() -> None:
    import atheris

    atheris.instrument_all()  # the chatproto modules are loaded already
    atheris.Setup(sys.argv, exercise)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
