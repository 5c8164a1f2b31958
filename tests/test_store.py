"""The event log: the SQLite backend, and the room over a log that answers late."""

import os
import sqlite3

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from chatproto import codec
from chatproto.backends.eventlog import Draft, StoreError
from chatproto.backends.sqlite import SQLiteLog
from chatproto.codec import Message
from tests.harness import Server


def drafts(first: int, last: int) -> list[Draft]:
    return [Draft(float(n), "ann", f"m{n}") for n in range(first, last + 1)]


def messages(first: int, last: int) -> list[Message]:
    return [Message(seq, float(seq), "ann", f"m{seq}") for seq in range(first, last + 1)]


class SQLiteLogTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp() + ".sqlite3"
        self.log = SQLiteLog(self.path)
        self.addCleanup(self.log.close)

    def test_empty(self):
        self.assertEqual(self.log.last_seq(), 0)
        self.assertEqual(self.successResultOf(self.log.before(None, 10)), ([], False))
        self.assertEqual(self.successResultOf(self.log.after(0, 10)), ([], False))

    def test_append_numbers_in_order_and_pages_both_ways(self):
        self.assertEqual(self.successResultOf(self.log.append(drafts(1, 20))), messages(1, 20))
        self.assertEqual(self.successResultOf(self.log.append(drafts(21, 25))), messages(21, 25))
        self.assertEqual(self.successResultOf(self.log.before(None, 10)), (messages(16, 25), True))
        self.assertEqual(self.successResultOf(self.log.before(16, 10)), (messages(6, 15), True))
        self.assertEqual(self.successResultOf(self.log.before(6, 10)), (messages(1, 5), False))
        self.assertEqual(self.successResultOf(self.log.after(20, 10)), (messages(21, 25), False))
        self.assertEqual(self.successResultOf(self.log.after(5, 10)), (messages(6, 15), True))

    def test_seq_and_messages_survive_reopening(self):
        self.log.append(drafts(1, 3))
        self.log.close()
        reopened = SQLiteLog(self.path)
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.last_seq(), 3)
        self.assertEqual(self.successResultOf(reopened.after(0, 10))[0], messages(1, 3))
        self.assertEqual(self.successResultOf(reopened.append(drafts(4, 4)))[0].seq, 4)

    def test_committed_data_is_in_the_file_without_close(self):
        """What append fired for is visible to another connection at once
        (it is in the WAL, which survives the process being killed)."""
        self.log.append(drafts(1, 1))
        other = sqlite3.connect(self.path)
        self.addCleanup(other.close)
        self.assertEqual(other.execute("SELECT count(*) FROM messages").fetchone(), (1,))

    def test_write_failure_stores_nothing_and_uses_no_seq(self):
        self.log.append(drafts(1, 1))
        locker = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(locker.close)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        failure = self.failureResultOf(self.log.append(drafts(2, 3)), StoreError)
        self.assertIn("can't write history", failure.getErrorMessage())
        locker.execute("ROLLBACK")
        self.assertEqual(self.log.last_seq(), 1)
        self.assertEqual([m.seq for m in self.successResultOf(self.log.append(drafts(2, 2)))], [2])

    def test_checkpoint_copies_the_wal_into_the_database(self):
        self.log.append(drafts(1, 50))
        frames, copied = self.log.checkpoint()
        self.assertGreater(frames, 0)
        self.assertEqual(copied, frames)
        self.assertEqual(SQLiteLog(":memory:").checkpoint(), (0, 0))

    def test_unopenable_path(self):
        with self.assertRaises(StoreError):
            SQLiteLog(os.path.join(self.mktemp(), "missing", "x.sqlite3"))

    def test_memory_keeps_nothing_across_instances(self):
        first = SQLiteLog(":memory:")
        first.append(drafts(1, 1))
        self.assertEqual(SQLiteLog(":memory:").last_seq(), 0)


class LateLog:
    """A log whose appends fire only when the test says, as a shared store's
    would: the room must keep one order while they are outstanding."""

    def __init__(self) -> None:
        self.inner = SQLiteLog(":memory:")
        self.waiting: list[tuple[Deferred, list[Draft]]] = []

    def append(self, batch):
        d = Deferred()
        self.waiting.append((d, list(batch)))
        return d

    def answer(self, index: int = 0) -> None:
        """Store and fire the appends up to ``index`` (oldest first)."""
        for _ in range(index + 1):
            d, batch = self.waiting.pop(0)
            self.inner.append(batch).chainDeferred(d)

    def before(self, seq, limit, room="general"):
        return self.inner.before(seq, limit, room)

    def after(self, seq, limit, room="general"):
        return self.inner.after(seq, limit, room)

    def topic(self, room):
        return self.inner.topic(room)

    def search_key(self):
        return None  # no index: SEARCH is no_search

    def changed_after(self, rev, limit, room):
        return self.inner.changed_after(rev, limit, room)

    def last_rev(self, room):
        return self.inner.last_rev(room)

    def set_topic(self, room, topic):
        return self.inner.set_topic(room, topic)

    def check(self):
        return self.inner.check()

    def maintain(self):
        pass

    def close(self):
        self.inner.close()


class LateLogOrder(SynchronousTestCase):
    def test_nothing_is_seen_before_the_log_answers_and_order_holds(self):
        log = LateLog()
        server = Server(store=log)
        alice, bob = server.logged_in("alice", "bob")
        alice.say("one", "r1")
        server.flush()
        alice.send(codec.Whisper("bob", "psst"))  # must not overtake "one"
        alice.say("two", "r2")
        server.flush()
        self.assertEqual(bob.received(), [], "nothing before the log has stored it")
        carol = server.peer()
        carol.send(codec.Login("carol", 1))
        self.assertEqual(carol.transport.value(), b"", "WELCOME waits for earlier batches")
        log.answer(1)
        packets = bob.received()
        kinds = [(type(p).__name__, getattr(p, "text", getattr(p, "nick", None))) for p in packets]
        self.assertEqual(
            kinds,
            [
                ("MessagePacket", "one"),
                ("Private", "psst"),
                ("MessagePacket", "two"),
                ("Pending", None),
                ("Joined", "carol"),
            ],
        )
        self.assertEqual([p.seq for p in packets if isinstance(p, codec.MessagePacket)], [1, 2])
        (welcome,) = carol.received()
        self.assertEqual([m.text for m in welcome.history], ["one", "two"], "and no presence it already has")
        self.assertEqual([p.nick for p in welcome.peers], ["alice", "bob", "carol"])
