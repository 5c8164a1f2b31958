"""The SQLite history store."""

import os
import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from chatproto.codec import Message
from chatproto.store import SQLiteHistory, StoreError


def messages(first: int, last: int) -> list[Message]:
    return [Message(seq, float(seq), "ann", f"m{seq}") for seq in range(first, last + 1)]


class SQLiteHistoryTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp() + ".sqlite3"
        self.store = SQLiteHistory(self.path)
        self.addCleanup(self.store.close)

    def test_empty(self):
        self.assertEqual(self.store.last_seq(), 0)
        self.assertEqual(self.store.before(None, 10), ([], False))
        self.assertEqual(self.store.after(0, 10), ([], False))

    def test_paging(self):
        self.store.append(messages(1, 25))
        self.assertEqual(self.store.before(None, 10), (messages(16, 25), True))
        self.assertEqual(self.store.before(16, 10), (messages(6, 15), True))
        self.assertEqual(self.store.before(6, 10), (messages(1, 5), False))
        self.assertEqual(self.store.after(20, 10), (messages(21, 25), False))
        self.assertEqual(self.store.after(5, 10), (messages(6, 15), True))

    def test_seq_and_messages_survive_reopening(self):
        self.store.append(messages(1, 3))
        self.store.close()
        reopened = SQLiteHistory(self.path)
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.last_seq(), 3)
        self.assertEqual(reopened.after(0, 10)[0], messages(1, 3))

    def test_append_is_atomic(self):
        self.store.append(messages(1, 2))
        with self.assertRaises(StoreError):
            self.store.append(messages(3, 4) + messages(2, 2))  # duplicate seq 2
        self.assertEqual(self.store.last_seq(), 2)

    def test_committed_data_is_in_the_file_without_close(self):
        """What append returned for is visible to another connection at once
        (it is in the WAL, which survives the process being killed)."""
        self.store.append(messages(1, 1))
        other = sqlite3.connect(self.path)
        self.addCleanup(other.close)
        self.assertEqual(other.execute("SELECT count(*) FROM messages").fetchone(), (1,))

    def test_write_failure_is_a_store_error_and_leaves_nothing(self):
        self.store.append(messages(1, 1))
        locker = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(locker.close)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with self.assertRaises(StoreError) as caught:
            self.store.append(messages(2, 2))
        self.assertIn("can't write history", str(caught.exception))
        locker.execute("ROLLBACK")
        self.assertEqual(self.store.last_seq(), 1)
        self.store.append(messages(2, 2))
        self.assertEqual(self.store.last_seq(), 2)

    def test_checkpoint_copies_the_wal_into_the_database(self):
        self.store.append(messages(1, 50))
        frames, copied = self.store.checkpoint()
        self.assertGreater(frames, 0)
        self.assertEqual(copied, frames)
        self.assertEqual(SQLiteHistory(":memory:").checkpoint(), (0, 0))

    def test_unopenable_path(self):
        with self.assertRaises(StoreError):
            SQLiteHistory(os.path.join(self.mktemp(), "missing", "x.sqlite3"))

    def test_memory_keeps_nothing_across_instances(self):
        first = SQLiteHistory(":memory:")
        first.append(messages(1, 1))
        self.assertEqual(SQLiteHistory(":memory:").last_seq(), 0)
