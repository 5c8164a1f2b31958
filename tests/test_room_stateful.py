"""Random interleavings of everything clients (of both protocol versions)
and operators do to the server and its rooms."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from chatproto import codec
from tests.harness import Server

NICKS = st.sampled_from(["ann", "Ann", "bob", "ＢＯＢ", "cy", "dee", "bad nick"])
TEXTS = st.sampled_from(["hi", "line\nbreak", "", "x" * 50, "ctrl\x07"])
ROOMS = st.sampled_from(["general", "side", "SIDE", "third", "bad room"])
VERSIONS = st.sampled_from([1, 2])


class RoomMachine(RuleBasedStateMachine):
    peers = Bundle("peers")

    def __init__(self) -> None:
        super().__init__()
        self.server = Server(rate=1000, burst=1000, max_clients=6, join_burst=1000, max_rooms=3)
        # (peer, room key) -> messages since it joined the room
        self.seen: dict[tuple[int, str], list[codec.MessagePacket]] = {}
        self.welcomed: dict[int, codec.Welcome] = {}

    def _read(self, peer) -> None:
        if peer.connection.state == "closing" and id(peer) not in self.welcomed:
            peer.received()
            return
        for packet in peer.received():
            if isinstance(packet, codec.Welcome):
                self.welcomed[id(peer)] = packet
                if packet.rooms is None:  # version 1: in the default room from now on
                    self.seen[id(peer), "general"] = []
            elif isinstance(packet, codec.RoomState):
                self.seen[id(peer), packet.room.casefold()] = []
            elif isinstance(packet, codec.MessagePacket):
                room = (packet.room or "general").casefold()
                if (id(peer), room) in self.seen:
                    self.seen[id(peer), room].append(packet)

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

    @rule(peer=peers, nick=NICKS, version=VERSIONS)
    def login(self, peer, nick, version):
        if not peer.closing:
            peer.send(codec.Login(nick, version))
        self._read_all()

    @rule(peer=peers, room=ROOMS)
    def join(self, peer, room):
        if not peer.closing:
            peer.send(codec.Join(room, "j"))
        self._read_all()

    @rule(peer=peers, room=ROOMS)
    def part(self, peer, room):
        if not peer.closing:
            peer.send(codec.Part(room, "later", "p"))
        self._read_all()

    @rule(peer=peers, room=ROOMS, text=TEXTS)
    def say_in(self, peer, room, text):
        if not peer.closing:
            peer.send(codec.Say(text, "r", room))
        self._read_all()

    @rule(peer=peers, room=ROOMS, topic=TEXTS)
    def topic(self, peer, room, topic):
        if not peer.closing:
            peer.send(codec.SetTopic(room, topic))
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
        self.server.hub.kick(peer.connection.id)
        self._read_all()

    @rule(seconds=st.sampled_from([0, 0, 1, 11, 31, 95]))
    def time_passes(self, seconds):
        self.server.clock.advance(seconds)
        self._read_all()

    @invariant()
    def one_gap_free_order_per_room(self):
        self._read_all()
        said: dict[tuple[str, int], tuple[str, str]] = {}
        for (_, room), messages in self.seen.items():
            seqs = [m.seq for m in messages]
            if seqs:
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (room, seqs)
            for m in messages:
                assert said.setdefault((room, m.seq), (m.sender, m.text)) == (m.sender, m.text)
        for room in ("general", "side", "third"):
            stored = {m.seq: (m.sender, m.text) for m in self.server.stored(room)}
            assert sorted(stored) == list(range(1, len(stored) + 1)), f"{room}'s log is gap-free"
            assert all(stored[seq] == text for (where, seq), text in said.items() if where == room), (
                "everyone saw what was stored"
            )

    @invariant()
    def memberships_agree(self):
        hub = self.server.hub
        hub.flush()
        for room in hub.rooms:
            assert all(session.rooms.get(room.key) is room for session in room.members.values())
            assert sorted(hub.broadcast.recipients(room.key)) == sorted(room.members), room.name
            assert room.permanent or room.members, "an empty room goes"
        for session in hub.sessions:
            assert all(hub.directory.rooms.get(key) is room for key, room in session.rooms.items())
            if session.version == 1:
                assert list(session.rooms) == ["general"]
        assert len(hub.rooms) <= hub.limits.max_rooms

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
        assert sorted(room.broadcast.recipients()) == sorted(s.id for s in sessions), "everyone gets PENDING"
        assert len(registry.open) == len(sessions) + len(room.pending)
        assert len(registry.open) <= room.limits.max_clients


RoomMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
)


class TestRoomStateful(RoomMachine.TestCase):
    """Defined here, with a test method, because trial collects only the
    module's own classes and only their test methods (not runTest)."""

    def test_random_interleavings(self):
        self.runTest()
