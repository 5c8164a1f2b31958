"""Random interleavings of everything clients and operators do to a room."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from chatproto import codec
from tests.harness import Server

NICKS = st.sampled_from(["ann", "Ann", "bob", "ＢＯＢ", "cy", "dee", "bad nick"])
TEXTS = st.sampled_from(["hi", "line\nbreak", "", "x" * 50, "ctrl\x07"])


class RoomMachine(RuleBasedStateMachine):
    peers = Bundle("peers")

    def __init__(self) -> None:
        super().__init__()
        self.server = Server(rate=1000, burst=1000, max_clients=6)
        self.seen: dict[int, list[codec.MessagePacket]] = {}  # peer -> messages since login
        self.welcomed: dict[int, codec.Welcome] = {}

    def _read(self, peer) -> None:
        if peer.protocol.state == "closing" and id(peer) not in self.welcomed:
            peer.received()
            return
        for packet in peer.received():
            if isinstance(packet, codec.Welcome):
                self.welcomed[id(peer)] = packet
                self.seen[id(peer)] = []
            elif isinstance(packet, codec.MessagePacket) and id(peer) in self.seen:
                self.seen[id(peer)].append(packet)

    def _read_all(self) -> None:
        for peer in self._all:
            self._read(peer)

    @property
    def _all(self):
        return getattr(self, "_peers", [])

    @rule(target=peers)
    def connect(self):
        peer = self.server.peer()
        self._peers = [*self._all, peer]
        return peer

    @rule(peer=peers, nick=NICKS)
    def login(self, peer, nick):
        if not peer.closing:
            peer.send(codec.Login(nick, 1))
        self._read_all()

    @rule(peer=peers, text=TEXTS)
    def say(self, peer, text):
        if not peer.closing:
            peer.say(text, ref="r")
        self._read_all()

    @rule(peer=peers, to=NICKS, text=TEXTS)
    def whisper(self, peer, to, text):
        if not peer.closing:
            peer.send(codec.Whisper(to, text))
        self._read_all()

    @rule(peer=consumes(peers))
    def quit(self, peer):
        if not peer.closing:
            peer.send(codec.Quit("bye"))
        peer.drop()
        self._read_all()

    @rule(peer=consumes(peers))
    def drop(self, peer):
        peer.drop()
        self._read_all()

    @rule(peer=peers)
    def kick(self, peer):
        self.server.hub.kick(peer.protocol.id)
        self._read_all()

    @rule(seconds=st.sampled_from([0, 0, 1, 11, 31, 95]))
    def time_passes(self, seconds):
        self.server.clock.advance(seconds)
        self._read_all()

    @invariant()
    def one_gap_free_order(self):
        self._read_all()
        by_seq: dict[int, tuple[str, str]] = {}
        for peer in self._all:
            messages = self.seen.get(id(peer), [])
            seqs = [m.seq for m in messages]
            if seqs:
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
            for m in messages:
                assert by_seq.setdefault(m.seq, (m.sender, m.text)) == (m.sender, m.text)
        stored = {m.seq: (m.sender, m.text) for m in self.server.stored()}
        assert sorted(stored) == list(range(1, len(stored) + 1)), "the log is gap-free"
        assert all(stored[seq] == said for seq, said in by_seq.items()), "everyone saw what was stored"

    @invariant()
    def registries_hold_only_open_connections(self):
        room = self.server.hub
        for session in room.sessions:
            assert not session.connection._is_lost
            assert session.connection.state != "closing"
        for client in room.pending:
            assert not client._is_lost

    @invariant()
    def nick_index_and_sessions_agree(self):
        room = self.server.hub
        sessions = room.sessions
        registry = room.registry
        assert sorted(registry.nick_keys()) == sorted(s.key for s in sessions)
        assert all(registry.find(s.nick) is s for s in sessions)
        assert sorted(room.broadcast.recipients()) == sorted(s.id for s in sessions)
        assert len(registry.open) == len(sessions) + len(room.pending)
        assert len(registry.open) <= room.limits.max_clients


RoomMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
)

TestRoomStateful = RoomMachine.TestCase
