"""Faults: the server killed mid-burst, a full disk, a read-only history."""

from __future__ import annotations

import os
import random

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatproto import codec
from chatproto.backends.sqlite import SQLiteLog
from chatproto.codec import ErrorCode
from scripts.killtest import kill_cycles
from tests.harness import Server


class KilledMidBurst(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_acknowledged_messages_and_changes_survive_repeated_sigkill(self):
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        report = yield kill_cycles(reactor, history, cycles=4, rng=random.Random(7))
        self.assertGreater(report["acknowledged"], 0)
        self.assertEqual(report["lost"], 0, report)
        self.assertGreater(report["changes_acknowledged"], 0, report)
        self.assertEqual(report["changes_lost"], 0, report)
        self.assertEqual(report["seq_repeats"], 0, report)
        self.assertTrue(report["seq_increasing"], report)


class StoreFailures(SynchronousTestCase):
    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.store = SQLiteLog(self.mktemp() + ".sqlite3")
        self.addCleanup(self.store.close)
        self.server = Server(store=self.store, rate=100000, burst=100000)
        self.alice, self.bob = self.server.logged_in("alice", "bob")

    def assertRefusedNotBroadcast(self, ref: str) -> None:
        error = self.alice.error()
        self.assertEqual((error.code, error.ref), (ErrorCode.INTERNAL, ref))
        self.assertEqual(self.bob.received(), [])
        self.assertTrue(
            any("history store failed" in e.get("log_format", "") for e in self.events),
            "the failure is logged",
        )

    def test_full_disk_refuses_instead_of_acknowledging(self):
        (pages,) = self.store._db.execute("PRAGMA page_count").fetchone()
        self.store._db.execute(f"PRAGMA max_page_count = {pages + 1}")
        acknowledged = []
        for i in range(200):  # bounded: a page holds a few dozen of these
            self.alice.say("z" * 500, ref=f"r{i}")
            self.server.flush()
            packets = self.alice.received(flush=False)
            if any(isinstance(p, codec.Error) for p in packets):
                refused = next(p for p in packets if isinstance(p, codec.Error))
                self.assertEqual(refused.code, ErrorCode.INTERNAL)
                break
            acknowledged.extend(p.seq for p in packets if isinstance(p, codec.MessagePacket))
        else:
            self.fail("the database never filled up")
        self.bob.received()
        stored = [m.seq for m in self.server.stored()]
        self.assertEqual(stored, acknowledged, "exactly what was acknowledged is stored")
        self.alice.send(codec.Ping("alive"))
        self.assertEqual(self.alice.only(codec.PongReply).token, "alive")

    def test_read_only_history_refuses_instead_of_acknowledging(self):
        self.store._db.execute("PRAGMA query_only = ON")
        self.alice.say("can't store this", ref="ro")
        self.server.flush()
        self.assertRefusedNotBroadcast("ro")
        self.store._db.execute("PRAGMA query_only = OFF")
        self.alice.say("stored again", ref="ok")
        self.server.flush()
        self.assertEqual(self.bob.only(codec.MessagePacket).seq, 1)
