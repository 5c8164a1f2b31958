"""The outbox's held writes: the answers to one read's requests leave in
one write (a pipelined LOGIN, JOIN and FOLLOW), in order, and nothing is
held past the read, a close, or a big answer."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.transports.outbox import HOLD_BYTES, HOLD_WRITES, Outbox
from tests.harness import Server, parse_frames
from tests.test_accounts import PASSWORD, QueuedHasher


class CountingTransport(StringTransport):
    """A StringTransport that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def outbox() -> tuple[Outbox, CountingTransport]:
    transport = CountingTransport()
    return Outbox(transport, 1 << 20, lambda owner: None, None), transport


class Held(SynchronousTestCase):
    def test_what_is_held_goes_in_one_write_in_order(self):
        box, transport = outbox()
        self.assertTrue(box.hold())
        self.assertFalse(box.hold(), "a hold inside a hold changes nothing")
        for data in (b"a", b"b", b"c"):
            box.write(data)
        self.assertEqual((transport.value(), transport.writes), (b"", 0))
        box.release()
        self.assertEqual((transport.value(), transport.writes), (b"abc", 1))
        box.write(b"d")
        self.assertEqual((transport.value(), transport.writes), (b"abcd", 2), "not held after release")

    def test_a_big_answer_or_many_go_at_once(self):
        box, transport = outbox()
        box.hold()
        box.write(b"a")
        box.write(b"x" * HOLD_BYTES)
        self.assertEqual(transport.value(), b"a" + b"x" * HOLD_BYTES)
        for _ in range(HOLD_WRITES):
            box.write(b"y")
        self.assertEqual(transport.value().count(b"y"), HOLD_WRITES)
        box.write(b"z")
        box.release()
        self.assertTrue(transport.value().endswith(b"yz"))

    def test_a_close_sends_what_was_held_before_its_last_words(self):
        box, transport = outbox()
        box.hold()
        box.write(b"answer")
        box.close(b"bye")
        self.assertEqual(transport.value(), b"answerbye")
        self.assertTrue(transport.disconnecting)
        box.release()
        self.assertEqual(transport.value(), b"answerbye", "nothing held twice")

    def test_held_writes_queue_behind_a_full_transport(self):
        box, transport = outbox()
        box.pauseProducing()
        box.hold()
        box.write(b"a")
        box.write(b"b")
        box.release()
        self.assertEqual((transport.value(), box.backlog), (b"", 2), "queued, and counted against sendq")
        box.resumeProducing()
        self.assertEqual(transport.value(), b"ab")


class Pipelined(SynchronousTestCase):
    def test_login_join_and_follow_in_one_read_are_answered_in_one_write(self):
        server = Server(lazy_members=5)
        peer = server.peer()
        written: list[bytes] = []
        write = peer.transport.write
        peer.transport.write = lambda data: (written.append(data), write(data))  # type: ignore[method-assign]
        requests = [
            codec.Login("ann", 2),
            codec.Join("general", "j"),
            codec.Follow("general", ["bob"], ref="f"),
        ]
        peer.protocol.dataReceived(b"".join(codec.frame(codec.encode(p)) for p in requests))
        self.assertEqual(len(written), 1)
        answers = parse_frames(written[0])
        self.assertEqual(
            [type(a) for a in answers], [codec.Welcome, codec.RoomState, codec.Members], "in order"
        )
        peer.send(codec.Say("hi", "s1", room="general"))
        server.flush()
        self.assertEqual(len(written), 2, "the next read's answers: a write of their own")

    def test_behind_a_refused_login_a_join_is_not_logged_in(self):
        peer = Server().peer()
        requests = [codec.Login("bad nick!", 2), codec.Join("general", "j")]
        peer.protocol.dataReceived(b"".join(codec.frame(codec.encode(p)) for p in requests))
        codes = [p.code for p in peer.received()]
        self.assertEqual(codes, [codec.ErrorCode.BAD_NICK, codec.ErrorCode.NOT_LOGGED_IN])

    def test_behind_a_password_a_join_waits_for_the_check(self):
        hasher = QueuedHasher()
        server = Server(hasher=hasher)
        first = server.peer()
        first.login("ann", version=2)
        first.send(codec.AccountRequest("register", PASSWORD, ref="reg"))
        hasher.release()
        first.send(codec.Quit())
        server.flush()
        peer = server.peer()
        requests = [codec.Login("ann", 2, password=PASSWORD), codec.Join("general", "j")]
        peer.protocol.dataReceived(b"".join(codec.frame(codec.encode(p)) for p in requests))
        self.assertEqual(peer.received(), [], "nothing answered while the password is checked")
        hasher.release()
        self.assertEqual([type(p) for p in peer.received()], [codec.Welcome, codec.RoomState])
