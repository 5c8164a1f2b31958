"""Random interleavings of everything clients (of both protocol versions)
and operators do to the server and its rooms."""

from __future__ import annotations

import dataclasses
import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from chatproto import codec
from chatproto.backends.changes import quote_of
from chatproto.backends.sqlite import SQLiteLog
from tests.harness import Server, result

NICKS = st.sampled_from(["ann", "Ann", "bob", "ＢＯＢ", "cy", "dee", "bad nick"])
TEXTS = st.sampled_from(["hi", "line\nbreak", "", "x" * 50, "ctrl\x07"])
ROOMS = st.sampled_from(["general", "side", "SIDE", "third", "bad room"])
VERSIONS = st.sampled_from([1, 2, 2])
SEQS = st.integers(min_value=0, max_value=3)
#: Changes go mostly where messages are, or they would rarely change any.
CHANGED_ROOMS = st.sampled_from(["general", "general", "general", "side"])
EDITS = st.sampled_from(["fixed", "", "x" * 50])
EMOJI = st.sampled_from(["👍", "🎉", ":+1:", "bad emoji"])


class RoomMachine(RuleBasedStateMachine):
    peers = Bundle("peers")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="stateful-")
        self.path = os.path.join(self.folder, "history.sqlite3")
        self.server = Server(
            store=SQLiteLog(self.path),
            rate=1000,
            burst=1000,
            max_clients=6,
            join_burst=1000,
            max_rooms=3,
            max_reactions=2,
            user_reactions=2,
        )
        # (peer, room key) -> messages since it joined the room
        self.seen: dict[tuple[int, str], list[codec.MessagePacket]] = {}
        self.welcomed: dict[int, codec.Welcome] = {}
        # (peer, room key) -> seq -> the message as a version 2 client holds it
        self.views: dict[tuple[int, str], dict[int, codec.Message]] = {}

    def teardown(self) -> None:
        self.server.store.close()

    def _hold(self, view: dict[int, codec.Message], message: codec.Message) -> None:
        """As a client applies a MESSAGE or a CHANGED (docs/protocol.md 19.2):
        the message replaced, replies to it quoting its present state."""
        view[message.seq] = dataclasses.replace(message, ref=None)
        if message.rev is None:
            return
        quote = quote_of(message.seq, message.sender, message.text, bool(message.deleted))
        for seq, held in view.items():
            if held.reply is not None and held.reply.seq == message.seq:
                view[seq] = dataclasses.replace(held, reply=quote)

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
                view = self.views[id(peer), packet.room.casefold()] = {}
                for message in packet.history:
                    self._hold(view, message)
            elif isinstance(packet, codec.MessagePacket):
                room = (packet.room or "general").casefold()
                if (id(peer), room) in self.seen:
                    self.seen[id(peer), room].append(packet)
                if packet.room is not None and (id(peer), room) in self.views:
                    self._hold(self.views[id(peer), room], packet.message)
            elif isinstance(packet, codec.Changed):
                view = self.views.get((id(peer), packet.room.casefold()))
                if view is not None:
                    self._hold(view, packet.message)

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

    @rule(target=peers, version=VERSIONS)
    def arrive(self, version):
        """A client that logs in with a nick of its own (and, for version
        2, joins the default room) as most clients do."""
        peer = self.server.peer()
        self._peers = [*self._all, peer]
        self._arrivals = getattr(self, "_arrivals", 0) + 1
        peer.send(codec.Login(f"user{self._arrivals}", version))
        if version == 2:
            peer.send(codec.Join("general", "j"))
        self._read_all()
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

    @rule(peer=peers, room=CHANGED_ROOMS, text=TEXTS, reply=st.one_of(st.none(), SEQS))
    def reply(self, peer, room, text, reply):
        if not peer.closing:
            peer.send(codec.Say(text, "r", room, reply))
        self._read_all()

    @rule(peer=peers, room=CHANGED_ROOMS, seq=SEQS, text=EDITS)
    def edit(self, peer, room, seq, text):
        if not peer.closing:
            peer.send(codec.Edit(room, seq, text, "e"))
        self._read_all()

    @rule(peer=peers, room=CHANGED_ROOMS, seq=SEQS)
    def delete(self, peer, room, seq):
        if not peer.closing:
            peer.send(codec.Delete(room, seq, "d"))
        self._read_all()

    @rule(peer=peers, room=CHANGED_ROOMS, seq=SEQS, emoji=EMOJI, on=st.booleans())
    def react(self, peer, room, seq, emoji, on):
        if not peer.closing:
            peer.send(codec.React(room, seq, emoji, on, "x"))
        self._read_all()

    @rule(peer=peers, room=ROOMS, seq=SEQS)
    def catch_up(self, peer, room, seq):
        """A client back from a drop asks what changed since a rev."""
        if not peer.closing:
            peer.send(codec.HistoryRequest(room=room, changed_after=seq, ref="c"))
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
            messages = self.server.stored(room)
            assert [m.seq for m in messages] == list(range(1, len(messages) + 1)), f"{room}'s log is gap-free"
            stored = {m.seq: (m.sender, m.text) for m in messages if m.rev is None}  # (changed: below)
            assert all(
                stored[seq] == text for (where, seq), text in said.items() if where == room and seq in stored
            ), "everyone saw what was stored"

    @invariant()
    def every_member_holds_each_message_as_it_is_now(self):
        """Every version 2 member's copy of each message it holds (from
        ROOM, MESSAGE and CHANGED) is the log's present state of it; and
        a restart (the file opened again) reads the same present state."""
        self._read_all()
        hub = self.server.hub
        stored = {room: {m.seq: m for m in self.server.stored(room)} for room in ("general", "side", "third")}
        for peer in self._all:
            session = peer.connection.session
            if session is None or peer.closing or session.version == 1:
                continue
            for key in session.rooms:
                view = self.views.get((id(peer), key), {})
                for seq, held in view.items():
                    assert held == stored[key][seq], (key, held, stored[key][seq])
        reopened = SQLiteLog(self.path)
        try:
            for room, messages in stored.items():
                assert result(reopened.after(0, 1000, room))[0] == list(messages.values()), room
                changed = result(reopened.changed_after(0, 1000, room))[0]
                assert changed == sorted(
                    (m for m in messages.values() if m.rev is not None), key=lambda m: m.rev or 0
                )
                live = hub.directory.rooms.get(room)
                if live is not None:
                    assert live.rev == max((m.rev or 0 for m in messages.values()), default=0), room
        finally:
            reopened.close()

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
