"""Relayed devices' notes (cluster/relays.py), on task.Clock: what each
turn sends, in order, one note per connection; the far side's transport.
The relay across real nodes is in tests/test_cluster.py (Accounts)."""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.cluster.relays import Relays, RelayTransport, payloads_of
from chatproto.core import records
from chatproto.transports.int32 import INT32


class Inboxes:
    """The store's inboxes as the relays use them: notes sent, by node, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def send(self, node: str, note: dict):
        self.sent.append((node, note))
        return succeed(None)

    def notes(self) -> list[tuple[str, records.Note | None]]:
        sent, self.sent = self.sent, []
        return [(node, records.read_note(note)) for node, note in sent]


class Device:
    """The near node's connection to a device, as relays use it."""

    def __init__(self, id: int) -> None:
        self.id = id
        self.wire = INT32
        self.host = "10.0.0.7"
        self.address = "10.0.0.7:4242"
        self.written: list[bytes] = []
        self.ended = ""

    @property
    def outbox(self) -> Device:
        return self

    def deliver(self, data: bytes) -> None:
        self.written.append(data)

    def end(self) -> None:
        self.ended = "end"

    def abort(self) -> None:
        self.ended = "abort"

    def disconnect(self, reason: str, *, flush: bool = True) -> None:
        self.ended = reason


class Gathering(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inboxes = Inboxes()
        self.relays = Relays(self.inboxes, self.clock)  # type: ignore[arg-type]
        self.relays.me = "2"

    def test_a_turn_sends_one_note_per_connection_in_order(self) -> None:
        device = Device(9)
        self.relays.relay(device, b"\x01login", "1", True)  # type: ignore[arg-type]
        self.relays.forward(device, b"\x02one")  # type: ignore[arg-type]
        self.relays.forward(device, b"\x02two")  # type: ignore[arg-type]
        self.assertEqual(self.inboxes.sent, [], "not before the turn ends")
        self.clock.advance(0)
        self.assertEqual(
            self.inboxes.notes(),
            [
                ("1", records.RelayOpened("2", 9, "10.0.0.7", 4242, b"\x01login", True)),
                ("1", records.RelayIn("2", 9, (b"\x02one", b"\x02two"), 1)),
            ],
        )
        self.relays.unrelay(device)  # type: ignore[arg-type]
        self.relays.forward(device, b"\x02late")  # type: ignore[arg-type]
        self.clock.advance(0)
        self.assertEqual(self.inboxes.notes(), [("1", records.RelayClosed("2", 9))], "nothing after it")

    def test_what_comes_out_is_framed_for_the_devices_wire_then_ended(self) -> None:
        device = Device(9)
        self.relays.relay(device, b"\x01login", "1", True)  # type: ignore[arg-type]
        out = codec.frame(b"\x81{}") + codec.frame(b"\x8a{}")
        self.relays.came_out(records.RelayOut("1", 9, out, "close", 1))
        self.assertEqual(device.written, [codec.frame(b"\x81{}"), codec.frame(b"\x8a{}")])
        self.assertEqual(device.ended, "end")
        self.relays.came_out(records.RelayOut("1", 9, out))
        self.clock.advance(0)
        sent = self.inboxes.notes()
        self.assertEqual(sent[-1], ("1", records.RelayClosed("2", 9)), "gone here: the far side is told")

    def test_a_far_connection_ends_after_what_it_wrote(self) -> None:
        transport = RelayTransport(self.relays, "3", 5, None)  # type: ignore[arg-type]
        self.relays.far[("3", 5)] = transport
        transport.write(b"\x00\x00\x00\x01a")
        transport.writeSequence([b"\x00\x00\x00\x01b"])
        transport.loseConnection()
        transport.write(b"ignored")
        self.clock.advance(0)
        self.assertEqual(
            self.inboxes.notes(),
            [("3", records.RelayOut("2", 5, b"\x00\x00\x00\x01a\x00\x00\x00\x01b", "close", 1))],
        )
        self.assertNotIn(("3", 5), self.relays.far)

    def test_each_connection_gets_one_note_a_turn_whatever_the_interleaving(self) -> None:
        one, two = Device(9), Device(10)
        for device in (one, two):
            self.relays.relay(device, b"\x01login", "1", True)  # type: ignore[arg-type]
        self.clock.advance(0)
        self.inboxes.notes()
        for text in (b"\x02a", b"\x02b"):
            for device in (one, two):
                self.relays.forward(device, text)  # type: ignore[arg-type]
        self.clock.advance(0)
        self.assertEqual(
            self.inboxes.notes(),
            [
                ("1", records.RelayIn("2", 9, (b"\x02a", b"\x02b"), 1)),
                ("1", records.RelayIn("2", 10, (b"\x02a", b"\x02b"), 1)),
            ],
        )

    def test_a_missing_note_ends_the_relay(self) -> None:
        device = Device(9)
        self.relays.relay(device, b"\x01login", "1", True)  # type: ignore[arg-type]
        self.relays.came_out(records.RelayOut("1", 9, codec.frame(b"\x81{}"), "", 1))
        self.relays.came_out(records.RelayOut("1", 9, codec.frame(b"\x82{}"), "", 3))
        self.assertEqual(device.written, [codec.frame(b"\x81{}")], "nothing after the hole")
        self.assertEqual(device.ended, "abort")
        self.clock.advance(0)
        self.assertEqual(self.inboxes.notes()[-1], ("1", records.RelayClosed("2", 9)))

    def test_a_far_node_silent_past_the_keepalive_is_gone(self) -> None:
        device = Device(9)
        self.relays.relay(device, b"\x01login", "1", True)  # type: ignore[arg-type]
        self.clock.advance(119)
        self.relays.came_out(records.RelayOut("1", 9, codec.frame(b"\x8b{}"), "", 1))  # a PING
        self.clock.advance(119)
        self.relays.check()
        self.assertEqual(device.ended, "", "heard 119 s ago: still there")
        self.clock.advance(2)
        self.relays.check()
        self.assertEqual(device.ended, "timeout")

    def test_a_node_gone_takes_its_relays(self) -> None:
        device = Device(9)
        self.relays.relay(device, b"\x01login", "1", True)  # type: ignore[arg-type]
        self.relays.gone("1")
        self.assertEqual(device.ended, "server_shutdown")
        self.clock.advance(0)
        self.assertEqual(self.inboxes.notes(), [], "nothing for a node that is gone")

    def test_payloads_of_whole_frames(self) -> None:
        self.assertEqual(payloads_of(codec.frame(b"\x81a") + codec.frame(b"")), [b"\x81a", b""])


class Failing(SynchronousTestCase):
    def test_a_note_that_did_not_go_ends_every_relay_with_that_node(self) -> None:
        from twisted.internet.defer import fail

        class Down(Inboxes):
            def send(self, node: str, note: dict):
                return fail(ConnectionError("Redis is down"))

        clock = Clock()
        relays = Relays(Down(), clock)  # type: ignore[arg-type]
        device = Device(9)
        relays.relay(device, b"\x01login", "1", True)  # type: ignore[arg-type]
        clock.advance(0)
        self.assertEqual(device.ended, "server_shutdown")
        self.assertEqual(relays.nodes(), set())
        self.flushLoggedErrors()

    def test_a_stop_tells_the_far_nodes_its_devices_are_gone(self) -> None:
        clock, inboxes = Clock(), Inboxes()
        relays = Relays(inboxes, clock)  # type: ignore[arg-type]
        relays.me = "2"
        relays.relay(Device(9), b"\x01login", "1", True)  # type: ignore[arg-type]
        relays.stop()
        self.assertEqual(
            [note for _, note in inboxes.notes()][-1],
            records.RelayClosed("2", 9),
            "sent at once, not next turn",
        )
