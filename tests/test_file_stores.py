"""Where shared files are kept (docs/protocol.md 20.5): one contract for
every FileStore and one for every FileRecords, run against each
implementation. Stores run on the real reactor and its worker threads."""

from __future__ import annotations

import hashlib
import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from chatproto.backends.digest_order import DigestOrder
from chatproto.backends.disk_files import DiskFileStore
from chatproto.backends.eventlog import Draft
from chatproto.backends.files import READ_PIECE, FileRecords, FileStore, FileStoreError, StoredFile
from chatproto.backends.redis import RedisAddress, RedisClient
from chatproto.backends.redis_files import RedisFileRecords
from chatproto.backends.s3_files import S3FileStore, parse_bucket, s3_client
from chatproto.backends.sqlite import SQLiteLog
from chatproto.backends.sqlite_accounts import SQLiteAccounts
from chatproto.backends.sqlite_files import SQLiteFileRecords
from tests.redisserver import RedisServer
from tests.s3server import S3Server


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileStoreContract:
    """What every FileStore does. A subclass's setUp sets ``self.store``."""

    store: FileStore

    def source(self, data: bytes) -> str:
        """A finished upload's temporary file holding ``data``."""
        path = self.mktemp()  # type: ignore[attr-defined]
        with open(path, "wb") as f:
            f.write(data)
        return path

    @defer.inlineCallbacks
    def kept(self, data: bytes):
        """``data`` put as its blob; its digest."""
        digest = digest_of(data)
        yield self.store.put(digest, self.source(data))
        return digest

    @defer.inlineCallbacks
    def test_a_blob_put_has_its_size_and_bytes(self):
        data = os.urandom(5000)
        path = self.source(data)
        yield self.store.put(digest_of(data), path)
        self.assertEqual((yield self.store.size(digest_of(data))), 5000)
        self.assertEqual((yield self.store.read(digest_of(data), 0, 5000)), data)
        self.assertTrue(os.path.exists(path), "the caller's file is the caller's to remove")

    @defer.inlineCallbacks
    def test_an_empty_blob(self):
        digest = yield self.kept(b"")
        self.assertEqual((yield self.store.size(digest)), 0)
        self.assertEqual((yield self.store.read(digest, 0, 10)), b"")

    @defer.inlineCallbacks
    def test_reads_give_pieces_from_any_offset(self):
        data = bytes(range(256)) * 40
        digest = yield self.kept(data)
        self.assertEqual((yield self.store.read(digest, 0, 100)), data[:100])
        self.assertEqual((yield self.store.read(digest, 1000, 2500)), data[1000:3500])
        self.assertEqual((yield self.store.read(digest, len(data) - 7, 100)), data[-7:])
        self.assertEqual((yield self.store.read(digest, 5, 0)), b"")

    @defer.inlineCallbacks
    def test_reads_past_the_end_are_empty(self):
        digest = yield self.kept(b"0123456789")
        self.assertEqual((yield self.store.read(digest, 10, 5)), b"")
        self.assertEqual((yield self.store.read(digest, 10**9, 5)), b"")

    @defer.inlineCallbacks
    def test_a_read_returns_at_most_one_piece(self):
        data = os.urandom(READ_PIECE + 1000)
        digest = yield self.kept(data)
        self.assertEqual((yield self.store.read(digest, 0, len(data))), data[:READ_PIECE])
        self.assertEqual((yield self.store.read(digest, READ_PIECE, READ_PIECE)), data[READ_PIECE:])

    @defer.inlineCallbacks
    def test_a_missing_blob_has_no_size_and_cannot_be_read(self):
        missing = digest_of(b"never put")
        self.assertIsNone((yield self.store.size(missing)))
        yield self.assertFailure(self.store.read(missing, 0, 10), FileStoreError)

    @defer.inlineCallbacks
    def test_delete_removes_the_blob_and_may_be_repeated(self):
        digest = yield self.kept(b"short-lived")
        yield self.store.delete(digest)
        self.assertIsNone((yield self.store.size(digest)))
        yield self.store.delete(digest)
        yield self.store.delete(digest_of(b"never put"))

    @defer.inlineCallbacks
    def test_putting_a_blob_that_exists_changes_nothing(self):
        digest = yield self.kept(b"first bytes")
        yield self.store.put(digest, self.source(b"other bytes, claimed to be the same"))
        self.assertEqual((yield self.store.read(digest, 0, 100)), b"first bytes")

    @defer.inlineCallbacks
    def test_a_put_asked_after_a_delete_is_not_overtaken_by_it(self):
        """A blob whose last record went, uploaded again at once: the
        delete and the put run in the order they were asked (many rounds
        at once, so that worker threads finishing out of order would show)."""
        blobs = [b"uploaded, deleted, uploaded again %d" % n for n in range(20)]
        digests = yield defer.gatherResults([self.kept(data) for data in blobs])
        sources = [self.source(data) for data in blobs]
        calls = []
        for digest, source in zip(digests, sources, strict=True):
            calls += [self.store.delete(digest), self.store.put(digest, source)]
        yield defer.gatherResults(calls)
        sizes = yield defer.gatherResults([self.store.size(digest) for digest in digests])
        self.assertEqual(sizes, [len(data) for data in blobs])
        calls = []
        for digest, source in zip(digests, sources, strict=True):
            calls += [self.store.put(digest, source), self.store.delete(digest)]
        yield defer.gatherResults(calls)
        sizes = yield defer.gatherResults([self.store.size(digest) for digest in digests])
        self.assertEqual(sizes, [None] * len(blobs))

    @defer.inlineCallbacks
    def test_many_blobs_at_once(self):
        blobs = [os.urandom(3000 + n) for n in range(12)]
        yield defer.gatherResults([self.kept(b) for b in blobs] + [self.kept(blobs[0])])
        reads = yield defer.gatherResults([self.store.read(digest_of(b), 0, 10**6) for b in blobs])
        self.assertEqual(reads, blobs)

    @defer.inlineCallbacks
    def test_a_name_that_is_not_a_digest_is_refused(self):
        for bad in ("../../etc/passwd", "ABC", digest_of(b"x").upper(), digest_of(b"x") + "/", ""):
            yield self.assertFailure(self.store.put(bad, self.source(b"x")), FileStoreError)
            yield self.assertFailure(self.store.size(bad), FileStoreError)
            yield self.assertFailure(self.store.read(bad, 0, 1), FileStoreError)
            yield self.assertFailure(self.store.delete(bad), FileStoreError)

    @defer.inlineCallbacks
    def test_a_negative_range_is_refused(self):
        digest = yield self.kept(b"0123456789")
        yield self.assertFailure(self.store.read(digest, -1, 5), FileStoreError)
        yield self.assertFailure(self.store.read(digest, 0, -5), FileStoreError)

    @defer.inlineCallbacks
    def test_a_missing_source_fails_and_keeps_nothing(self):
        digest = digest_of(b"gone")
        yield self.assertFailure(self.store.put(digest, self.mktemp()), FileStoreError)
        self.assertIsNone((yield self.store.size(digest)))

    def test_check_answers(self):
        return self.store.check()


class DiskFileStoreTests(FileStoreContract, TestCase):
    def setUp(self):
        self.directory = self.mktemp()
        self.store = DiskFileStore(self.directory, reactor)
        return self.store.check()

    @defer.inlineCallbacks
    def test_a_blob_lives_in_two_levels_of_folders_with_no_temporary_left(self):
        digest = yield self.kept(b"laid out")
        where = os.path.join(os.path.abspath(self.directory), digest[:2], digest[2:4], digest)
        self.assertEqual(self.store.path(digest), where)
        self.assertEqual(os.listdir(os.path.dirname(self.store.path(digest))), [digest])
        with open(self.store.path(digest), "rb") as f:
            self.assertEqual(f.read(), b"laid out")

    @defer.inlineCallbacks
    def test_a_failed_put_leaves_no_temporary_file(self):
        digest = digest_of(b"never")
        folder = os.path.dirname(self.store.path(digest))
        os.makedirs(folder)
        yield self.assertFailure(self.store.put(digest, self.mktemp()), FileStoreError)
        self.assertEqual(os.listdir(folder), [])

    @defer.inlineCallbacks
    def test_failed_puts_leave_no_file_open(self):
        if not os.path.isdir("/proc/self/fd"):
            raise SkipTest("needs /proc/self/fd to count open files")
        yield self.kept(b"a folder made first")
        before = len(os.listdir("/proc/self/fd"))
        for n in range(20):
            yield self.assertFailure(self.store.put(digest_of(b"%d" % n), self.mktemp()), FileStoreError)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)

    @defer.inlineCallbacks
    def test_check_makes_the_directory(self):
        store = DiskFileStore(os.path.join(self.mktemp(), "a", "b"), reactor)
        yield store.check()
        self.assertTrue(os.path.isdir(store.directory))

    @defer.inlineCallbacks
    def test_check_fails_clearly_where_nothing_can_be_written(self):
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        store = DiskFileStore(os.path.join(blocker, "files"), reactor)
        failure = yield self.assertFailure(store.check(), FileStoreError)
        self.assertIn(store.directory, str(failure))


class DigestOrderTests(SynchronousTestCase):
    """A digest's calls one after another; other digests' alongside."""

    def setUp(self):
        self.order = DigestOrder()
        self.started: list[str] = []
        self.pending: dict[str, defer.Deferred] = {}

    def call(self, name: str):
        def start():
            self.started.append(name)
            d = self.pending[name] = defer.Deferred()
            return d

        return start

    def test_a_digests_calls_wait_for_the_one_before(self):
        first = self.order.run("a", self.call("a1"))
        second = self.order.run("a", self.call("a2"))
        other = self.order.run("b", self.call("b1"))
        self.assertEqual(self.started, ["a1", "b1"])
        self.pending["a1"].callback("one")
        self.assertEqual(self.successResultOf(first), "one")
        self.assertEqual(self.started, ["a1", "b1", "a2"])
        self.assertNoResult(second)
        self.pending["a2"].callback("two")
        self.pending["b1"].callback("three")
        self.assertEqual([self.successResultOf(d) for d in (second, other)], ["two", "three"])
        self.assertEqual(self.order.busy(), 0)

    def test_a_failure_is_its_callers_and_the_next_call_still_runs(self):
        first = self.order.run("a", self.call("a1"))
        second = self.order.run("a", self.call("a2"))
        self.pending["a1"].errback(FileStoreError("disk full"))
        self.failureResultOf(first, FileStoreError)
        self.pending["a2"].callback(None)
        self.assertIsNone(self.successResultOf(second))

    def test_a_call_that_raises_fails_its_deferred(self):
        def broken():
            raise FileStoreError("at once")

        self.failureResultOf(self.order.run("a", broken), FileStoreError)
        self.assertEqual(self.order.busy(), 0)


def record(n: int, digest: str = "", **changes) -> StoredFile:
    fields = dict(
        id=f"id{n:020d}",
        digest=digest or digest_of(b"%d" % n),
        room="lobby",
        name=f"file{n}.txt",
        type="text/plain",
        size=100 + n,
        owner="ann",
        uploaded=1000.0 + n,
    )
    fields.update(changes)
    return StoredFile(**fields)


class FileRecordsContract:
    """What every FileRecords does. A subclass's setUp sets ``self.records``."""

    records: FileRecords

    @defer.inlineCallbacks
    def added(self, *records: StoredFile):
        for r in records:
            yield self.records.add(r)

    @defer.inlineCallbacks
    def test_a_record_added_is_got_back_whole(self):
        plain = record(1)
        image = record(2, type="image/png", width=640, height=480, thumb=digest_of(b"thumb"), owner="guest:7")
        yield self.added(plain, image)
        self.assertEqual((yield self.records.get(plain.id)), plain)
        self.assertEqual((yield self.records.get(image.id)), image)
        self.assertIsNone((yield self.records.get("no such id")))

    @defer.inlineCallbacks
    def test_names_and_rooms_of_any_characters(self):
        odd = record(3, name="ünï cödé ✓ 'quoted' \"twice\" ; -- %s", room="#über:room|x", owner="o|ne:two")
        yield self.added(odd)
        self.assertEqual((yield self.records.get(odd.id)), odd)

    @defer.inlineCallbacks
    def test_an_id_is_added_once(self):
        yield self.added(record(1))
        yield self.assertFailure(self.records.add(record(1, name="again")), FileStoreError)
        self.assertEqual((yield self.records.get(record(1).id)), record(1))

    @defer.inlineCallbacks
    def test_attached_files_belong_to_their_message_in_order(self):
        yield self.added(record(1), record(2), record(3), record(4))
        ids = [record(3).id, record(1).id, record(2).id]
        yield self.records.attach(ids, "lobby", 17)
        files = yield self.records.of_message("lobby", 17)
        self.assertEqual([f.id for f in files], ids)
        self.assertEqual({f.seq for f in files}, {17})
        self.assertIsNone((yield self.records.get(record(4).id)).seq)
        self.assertEqual((yield self.records.of_message("lobby", 18)), [])
        self.assertEqual((yield self.records.of_message("other", 17)), [])

    @defer.inlineCallbacks
    def test_a_record_added_attached_belongs_to_its_message(self):
        yield self.added(record(1, seq=8), record(2))
        yield self.records.attach([record(2).id], "lobby", 8)
        files = yield self.records.of_message("lobby", 8)
        self.assertEqual([f.id for f in files], [record(1).id, record(2).id])
        self.assertEqual([f.id for f in (yield self.records.unattached_before(10**6, 10))], [])

    @defer.inlineCallbacks
    def test_an_upload_is_attached_once_and_only_in_its_room(self):
        yield self.added(record(1), record(2, room="elsewhere"))
        yield self.records.attach([record(1).id], "lobby", 5)
        yield self.records.attach([record(1).id, record(2).id], "lobby", 6)
        self.assertEqual((yield self.records.get(record(1).id)).seq, 5)
        self.assertIsNone((yield self.records.get(record(2).id)).seq)
        self.assertEqual((yield self.records.of_message("lobby", 6)), [])

    @defer.inlineCallbacks
    def test_remove_answers_the_digests_nothing_else_names(self):
        thumb = digest_of(b"thumb")
        yield self.added(record(1, thumb=thumb), record(2))
        orphans = yield self.records.remove([record(1).id])
        self.assertEqual(sorted(orphans), sorted([record(1).digest, thumb]))
        self.assertIsNone((yield self.records.get(record(1).id)))
        self.assertEqual((yield self.records.get(record(2).id)), record(2))

    @defer.inlineCallbacks
    def test_a_digest_two_records_share_outlives_the_first_removal(self):
        shared, thumb = digest_of(b"same bytes"), digest_of(b"same thumb")
        yield self.added(record(1, shared, thumb=thumb), record(2, shared, thumb=thumb, room="other"))
        self.assertEqual((yield self.records.remove([record(1).id])), [])
        self.assertEqual(sorted((yield self.records.remove([record(2).id]))), sorted([shared, thumb]))

    @defer.inlineCallbacks
    def test_a_thumbnail_that_is_another_uploads_bytes_stays(self):
        """Someone uploads a thumbnail as a file: the digest is named by both."""
        thumb = digest_of(b"a small picture")
        yield self.added(record(1, thumb=thumb), record(2, thumb))
        self.assertEqual((yield self.records.remove([record(1).id])), [record(1).digest])
        self.assertEqual((yield self.records.remove([record(2).id])), [thumb])

    @defer.inlineCallbacks
    def test_removing_several_sharing_a_digest_answers_it_once(self):
        shared = digest_of(b"same")
        yield self.added(record(1, shared), record(2, shared), record(3))
        orphans = yield self.records.remove([record(1).id, record(2).id, record(3).id, "unknown"])
        self.assertEqual(sorted(orphans), sorted([shared, record(3).digest]))

    @defer.inlineCallbacks
    def test_removing_unknown_ids_changes_nothing(self):
        yield self.added(record(1))
        self.assertEqual((yield self.records.remove(["unknown"])), [])
        self.assertEqual((yield self.records.remove([])), [])
        self.assertEqual((yield self.records.get(record(1).id)), record(1))

    @defer.inlineCallbacks
    def test_a_removed_file_leaves_its_message(self):
        yield self.added(record(1), record(2))
        yield self.records.attach([record(1).id, record(2).id], "lobby", 3)
        yield self.records.remove([record(1).id])
        self.assertEqual([f.id for f in (yield self.records.of_message("lobby", 3))], [record(2).id])

    @defer.inlineCallbacks
    def test_unattached_before_gives_the_oldest_unattached_first(self):
        yield self.added(*(record(n) for n in (5, 1, 4, 2, 3, 9)))
        yield self.records.attach([record(2).id], "lobby", 1)
        old = yield self.records.unattached_before(1005.0, 10)
        self.assertEqual([f.id for f in old], [record(n).id for n in (1, 3, 4)])
        first = yield self.records.unattached_before(1005.0, 2)
        self.assertEqual([f.id for f in first], [record(n).id for n in (1, 3)])
        self.assertEqual((yield self.records.unattached_before(1000.0, 10)), [])

    @defer.inlineCallbacks
    def test_used_counts_the_bytes_of_each_owner_and_of_all(self):
        self.assertEqual((yield self.records.used("ann")), 0)
        self.assertEqual((yield self.records.used_by_all()), 0)
        yield self.added(record(1), record(2), record(3, owner="bob"), record(4, digest_of(b"1")))
        self.assertEqual((yield self.records.used("ann")), 101 + 102 + 104)
        self.assertEqual((yield self.records.used("bob")), 103)
        self.assertEqual((yield self.records.used("nobody")), 0)
        self.assertEqual((yield self.records.used_by_all()), 101 + 102 + 103 + 104)
        yield self.records.remove([record(2).id, record(3).id])
        self.assertEqual((yield self.records.used("ann")), 101 + 104)
        self.assertEqual((yield self.records.used("bob")), 0)
        self.assertEqual((yield self.records.used_by_all()), 101 + 104)

    @defer.inlineCallbacks
    def test_an_owners_use_is_kept_exact_through_many_adds_and_removes(self):
        yield self.added(*(record(n, owner="ann" if n % 3 else "bob") for n in range(1, 31)))
        yield self.records.remove([record(n).id for n in range(1, 31, 2)])
        kept = [n for n in range(2, 31, 2)]
        ann = sum(100 + n for n in kept if n % 3)
        bob = sum(100 + n for n in kept if not n % 3)
        self.assertEqual((yield self.records.used("ann")), ann)
        self.assertEqual((yield self.records.used("bob")), bob)
        self.assertEqual((yield self.records.used_by_all()), ann + bob)
        yield self.records.remove([record(n).id for n in kept])
        self.assertEqual((yield self.records.used("ann")), 0)
        self.assertEqual((yield self.records.used_by_all()), 0)
        yield self.added(record(31))
        self.assertEqual((yield self.records.used("ann")), 131, "counted afresh after reaching nothing")


class SQLiteFileRecordsTests(FileRecordsContract, TestCase):
    def setUp(self):
        self.log = SQLiteLog(":memory:")
        self.addCleanup(self.log.close)
        self.records = SQLiteFileRecords(self.log)


class SQLiteFileRecordsInTheHistoryFile(TestCase):
    """The records live in the history's file, beside messages and accounts."""

    def setUp(self):
        self.path = self.mktemp() + ".sqlite3"

    def open(self) -> SQLiteLog:
        log = SQLiteLog(self.path)
        self.addCleanup(log.close)
        return log

    def test_records_and_history_survive_reopening_together(self):
        log = self.open()
        SQLiteAccounts(log)
        self.successResultOf(SQLiteFileRecords(log).add(record(1)))
        self.successResultOf(log.append([Draft(1.0, "ann", "see the file")]))
        log.close()
        log = self.open()
        records = SQLiteFileRecords(log)
        self.assertEqual(self.successResultOf(records.get(record(1).id)), record(1))
        self.assertEqual(log.last_seq(), 1)

    def test_the_total_is_kept_across_reopening_and_counted_for_records_made_before_it(self):
        log = self.open()
        records = SQLiteFileRecords(log)
        self.successResultOf(records.add(record(1)))
        self.successResultOf(records.add(record(2)))
        log._db.execute("DROP TABLE file_totals")  # as a file from before the totals were kept
        log.close()
        log = self.open()
        records = SQLiteFileRecords(log)
        self.assertEqual(self.successResultOf(records.used_by_all()), 101 + 102)
        self.successResultOf(records.remove([record(1).id]))
        log.close()
        records = SQLiteFileRecords(self.open())
        self.assertEqual(self.successResultOf(records.used_by_all()), 102)

    def test_each_owners_total_is_counted_for_records_made_before_it_then_kept(self):
        log = self.open()
        records = SQLiteFileRecords(log)
        for n in (1, 2):
            self.successResultOf(records.add(record(n)))
        self.successResultOf(records.add(record(3, owner="bob")))
        for trigger in ("files_owner_added", "files_owner_removed"):
            log._db.execute(f"DROP TRIGGER {trigger}")
        log._db.execute("DROP TABLE file_owner_totals")  # as a file from before they were kept
        log.close()
        log = self.open()
        records = SQLiteFileRecords(log)
        self.assertEqual(self.successResultOf(records.used("ann")), 101 + 102)
        self.assertEqual(self.successResultOf(records.used("bob")), 103)
        self.successResultOf(records.remove([record(1).id]))
        log.close()
        records = SQLiteFileRecords(self.open())
        self.assertEqual(self.successResultOf(records.used("ann")), 102)
        self.assertEqual(self.successResultOf(records.used("bob")), 103)

    def test_an_owners_use_is_one_row_looked_up_not_a_sum_over_its_records(self):
        log = self.open()
        records = SQLiteFileRecords(log)
        self.successResultOf(records.add(record(1)))
        statements: list[str] = []
        log._db.set_trace_callback(statements.append)
        self.assertEqual(self.successResultOf(records.used("ann")), 101)
        log._db.set_trace_callback(None)
        plans = [
            detail
            for statement in statements
            for *_, detail in log._db.execute("EXPLAIN QUERY PLAN " + statement)
        ]
        self.assertEqual(plans, ["SEARCH file_owner_totals USING PRIMARY KEY (owner=?)"])

    def test_the_table_and_its_indexes_are_made_once(self):
        log = self.open()
        SQLiteFileRecords(log)
        SQLiteFileRecords(log)
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'files'")}
        made = {"files", "files_message", "files_owner", "files_unattached", "files_digest", "files_thumb"}
        made |= {"files_added", "files_removed", "files_owner_added", "files_owner_removed"}
        self.assertTrue(made <= names)

    def test_a_refused_write_fails_with_a_file_store_error(self):
        log = self.open()
        records = SQLiteFileRecords(log)
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN EXCLUSIVE")
        self.failureResultOf(records.add(record(1)), FileStoreError)
        other.execute("ROLLBACK")
        self.successResultOf(records.add(record(1)))
        self.assertEqual(self.successResultOf(records.get(record(1).id)), record(1))


class S3FileStoreTests(FileStoreContract, TestCase):
    """Against a real S3-compatible server (moto's) on loopback."""

    @defer.inlineCallbacks
    def setUp(self):
        self.server = yield S3Server.started(self, bucket="chat-files")
        self.pool = ThreadPool(0, 4, "s3-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.client = s3_client(self.server.environ(), threads=4)
        self.store = S3FileStore("chat-files", "", self.client, reactor, self.pool)
        yield self.store.check()

    def keys(self, bucket: str = "chat-files") -> defer.Deferred:
        def listed():
            answer = self.client.list_objects_v2(Bucket=bucket)
            return sorted(item["Key"] for item in answer.get("Contents", []))

        return deferToThread(listed)

    @defer.inlineCallbacks
    def test_a_blob_is_one_object_named_by_its_digest_under_the_prefix(self):
        yield deferToThread(lambda: self.client.create_bucket(Bucket="shared"))
        store = S3FileStore("shared", "chat/files/", self.client, reactor, self.pool)
        digest = digest_of(b"in a folder")
        yield store.put(digest, self.source(b"in a folder"))
        self.assertEqual((yield self.keys("shared")), [f"chat/files/{digest}"])
        self.assertEqual((yield store.read(digest, 3, 6)), b"a fold")
        yield store.delete(digest)
        self.assertEqual((yield self.keys("shared")), [])

    @defer.inlineCallbacks
    def test_a_missing_bucket_fails_check_and_is_not_made(self):
        store = S3FileStore("nobody-made-it", "", self.client, reactor, self.pool)
        failure = yield self.assertFailure(store.check(), FileStoreError)
        self.assertIn("no bucket 'nobody-made-it'", str(failure))
        self.assertIn(self.server.endpoint, str(failure))
        buckets = yield deferToThread(lambda: self.client.list_buckets()["Buckets"])
        self.assertEqual([b["Name"] for b in buckets], ["chat-files"])

    @defer.inlineCallbacks
    def test_a_server_that_is_gone_fails_every_call_clearly(self):
        digest = yield self.kept(b"kept before the outage")
        yield self.server.stop()
        yield self.assertFailure(self.store.check(), FileStoreError)
        yield self.assertFailure(self.store.size(digest), FileStoreError)
        yield self.assertFailure(self.store.read(digest, 0, 10), FileStoreError)
        yield self.assertFailure(self.store.put(digest_of(b"new"), self.source(b"new")), FileStoreError)

    @defer.inlineCallbacks
    def test_the_store_a_url_and_the_environment_name(self):
        store = S3FileStore.from_url("s3://chat-files/up/", reactor, self.server.environ(), threads=2)
        self.addCleanup(store._pool.stop)
        self.assertEqual((store.bucket, store.prefix), ("chat-files", "up/"))
        yield store.check()
        digest = digest_of(b"configured")
        yield store.put(digest, self.source(b"configured"))
        self.assertEqual((yield self.keys()), [f"up/{digest}"])


class BucketURLs(SynchronousTestCase):
    def test_a_bucket_and_its_prefix(self):
        self.assertEqual(parse_bucket("s3://files"), ("files", ""))
        self.assertEqual(parse_bucket("s3://files/"), ("files", ""))
        self.assertEqual(parse_bucket("s3://files/chat"), ("files", "chat/"))
        self.assertEqual(parse_bucket("s3://files/a/b/"), ("files", "a/b/"))

    def test_what_is_not_a_bucket_is_refused(self):
        for bad in (
            "files",
            "/var/files",
            "http://files",
            "s3://",
            "s3://key:secret@files",
            "s3://files?x=1",
        ):
            with self.assertRaises(ValueError):
                parse_bucket(bad)


class RedisFileRecordsTests(FileRecordsContract, TestCase):
    """Against a real Valkey, as a cluster uses it."""

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield RedisServer.started(self)
        self.records = yield self.node("test")

    @defer.inlineCallbacks
    def node(self, name: str):
        """Records through a connection of their own, as one node of a cluster has."""
        client = RedisClient(reactor, RedisAddress.parse(self.redis.url), name)
        client.start()
        self.addCleanup(client.stop)
        yield client.connected()
        return RedisFileRecords(client, prefix="chat")

    @defer.inlineCallbacks
    def test_two_nodes_removing_records_of_one_blob_at_once_free_it_once(self):
        other = yield self.node("other")
        pairs = 50
        for n in range(pairs):
            shared, thumb = digest_of(b"blob %d" % n), digest_of(b"thumb %d" % n)
            yield self.added(record(2 * n, shared, thumb=thumb), record(2 * n + 1, shared, thumb=thumb))
        mine = self.records.remove([record(2 * n).id for n in range(pairs)])
        theirs = other.remove([record(2 * n + 1).id for n in range(pairs)])
        freed = yield defer.gatherResults([mine, theirs])
        every = sorted(freed[0] + freed[1])
        self.assertEqual(
            every,
            sorted(
                [digest_of(b"blob %d" % n) for n in range(pairs)]
                + [digest_of(b"thumb %d" % n) for n in range(pairs)]
            ),
        )
        self.assertEqual((yield self.records.used_by_all()), 0)

    @defer.inlineCallbacks
    def test_nothing_is_left_behind_once_every_record_is_removed(self):
        yield self.added(record(1, thumb=digest_of(b"t")), record(2), record(3, owner="bob"))
        yield self.records.attach([record(1).id, record(2).id], "lobby", 4)
        yield self.records.remove([record(1).id, record(2).id, record(3).id])
        keys = yield self.records.client.call("KEYS", "chat:f*")
        self.assertEqual(sorted(keys), [b"chat:fusedall"])

    @defer.inlineCallbacks
    def test_an_outage_fails_calls_with_a_file_store_error(self):
        yield self.added(record(1))
        yield self.redis.stop()
        yield self.assertFailure(self.records.get(record(1).id), FileStoreError)
        yield self.assertFailure(self.records.add(record(2)), FileStoreError)
        yield self.assertFailure(self.records.remove([record(1).id]), FileStoreError)
        yield self.assertFailure(self.records.of_message("lobby", 1), FileStoreError)
