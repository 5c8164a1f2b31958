"""The log of connections coming and going: every login, leaving and close
has its entry, gathered into one line for many (a login storm's), none
lost at shutdown. On task.Clock with the log captured."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from chatproto.core.connection_log import MOST, WITHIN, ConnectionLog, Gathered
from tests.harness import Server


def texts(events: list) -> list[str]:
    return [formatEvent(event) for event in events]


class Gathering(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.log = ConnectionLog(self.clock)

    def test_one_login_is_one_line_a_moment_later(self):
        with capturedLogs() as events:
            self.log.logged_in("ann", 4, 2, False, "127.0.0.1:5000")
            self.assertEqual(events, [])
            self.clock.advance(WITHIN)
        self.assertEqual(texts(events), ["logged in: ann as 4 (protocol 2) from 127.0.0.1:5000"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_entries_made_together_are_one_line_each_kind_its_own(self):
        with capturedLogs() as events:
            self.log.logged_in("ann", 4, 2, True, "127.0.0.1:5000")
            self.log.logged_in("bob", 5, 1, False, "[::1]:6000")
            self.log.left("cat", 3, "quit")
            self.log.closed(3, "127.0.0.1:4000", "connected", "done")
            self.clock.advance(WITHIN)
        self.assertEqual(
            sorted(texts(events)),
            [
                "closed: connection 3 from 127.0.0.1:4000 (connected): done",
                "left: cat (3): quit",
                "logged in: ann as 4 (protocol 2, account) from 127.0.0.1:5000; "
                "bob as 5 (protocol 1) from [::1]:6000",
            ],
        )

    def test_a_storm_writes_a_line_per_most_entries_at_once(self):
        with capturedLogs() as events:
            for n in range(MOST * 2 + 1):
                self.log.left(f"s{n}", n, "quit")
            self.assertEqual(len(events), 2)  # the full lines did not wait
            self.clock.advance(WITHIN)
        lines = texts(events)
        self.assertEqual(len(lines), 3)
        entries = [entry for line in lines for entry in line.removeprefix("left: ").split("; ")]
        self.assertEqual(entries, [f"s{n} ({n}): quit" for n in range(MOST * 2 + 1)])

    def test_stop_logs_what_waits_and_later_entries_at_once(self):
        with capturedLogs() as events:
            self.log.logged_in("ann", 4, 2, False, "127.0.0.1:5000")
            self.log.stop()
            self.assertEqual(len(events), 1)
            self.log.closed(4, "127.0.0.1:5000", "closing", "done")
            self.assertEqual(len(events), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class OnTheServer(SynchronousTestCase):
    def test_a_login_a_leaving_and_a_close_are_logged(self):
        server = Server()
        with capturedLogs() as events:
            (ann,) = server.logged_in("ann", version=2)
            ann.drop()
            server.clock.advance(WITHIN)
        lines = texts(events)
        id, address = ann.connection.id, f"127.0.0.1:{ann.transport.getPeer().port}"
        self.assertIn(f"logged in: ann as {id} (protocol 2) from {address}", lines)
        self.assertIn(f"left: ann ({id}): connection_lost", lines)
        closed = [line for line in lines if line.startswith("closed: ")]
        why = "Connection was closed cleanly."
        self.assertEqual(closed, [f"closed: connection {id} from {address} (connected): {why}"])

    def test_a_shutdown_logs_what_waits_and_leaves_no_timer_of_its_own(self):
        server = Server()
        (ann,) = server.logged_in("ann", version=2)
        with capturedLogs() as events:
            done = server.hub.shutdown()
            ann.drop()  # it read its BYE and closed
            self.assertIsNone(self.successResultOf(done))
            lines = texts(events)
            self.assertTrue(any(line.startswith("logged in: ann as ") for line in lines), lines)
            self.assertTrue(any(line.startswith("closed: connection ") for line in lines), lines)
            pending = [call.func for call in server.clock.getDelayedCalls()]
            self.assertFalse([f for f in pending if isinstance(getattr(f, "__self__", None), Gathered)])
            server.hub.connection_log.closed(99, "127.0.0.1:1", "pending", "late")
            self.assertEqual(texts(events)[-1], "closed: connection 99 from 127.0.0.1:1 (pending): late")
