"""The benchmarks' own judgements: when a storm in a big room has settled,
and how a crowd is spread over generator processes."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from types import SimpleNamespace

from twisted.trial import unittest

from benchmarks import crowd, storm


def joiner(index: int, position: int, follows=(), joined=(), count=0):
    """What benchmarks.storm judges of a client, and nothing else."""
    return SimpleNamespace(
        index=index,
        nick=f"s{index}",
        position=position,
        follows=list(follows),
        joined_nicks=set(joined),
        count=count,
    )


class PromisedTests(unittest.TestCase):
    def test_small_room_members_owe_those_after_them_until_big(self):
        # lazy_members 3: the room is big from its fourth member on
        clients = [joiner(i, i + 1) for i in range(5)]
        owed = storm.promised(clients, 3)
        self.assertEqual(owed[0], {"s1", "s2"})
        self.assertEqual(owed[1], {"s2"})
        self.assertEqual(owed[2], set())
        self.assertEqual(owed[4], set())

    def test_lazy_members_owe_what_they_follow(self):
        clients = [joiner(i, i + 1) for i in range(5)]
        clients[3].follows = ["s4"]
        owed = storm.promised(clients, 3)
        self.assertEqual(owed[3], {"s4"})
        self.assertEqual(owed[1], {"s2"})

    def test_missing_counts_joined_and_final_count(self):
        clients = [joiner(0, 1, count=2), joiner(1, 2, follows=["s0"], count=1)]
        owed = {0: {"s1"}, 1: {"s0"}}
        self.assertEqual(storm.lazy_missing(clients, owed, 2), (2, 1))
        clients[0].joined_nicks.add("s1")
        clients[1].count = 2
        self.assertEqual(storm.lazy_missing(clients, owed, 2), (1, 0))
        clients[1].joined_nicks.add("s0")
        self.assertEqual(storm.lazy_missing(clients, owed, 2), (0, 0))


class SpreadTests(unittest.TestCase):
    def test_every_connection_placed_once_on_addresses_of_their_own(self):
        for count in (1, 2000, 19_799, 100_000):
            shares = crowd.spread(count)
            self.assertEqual(sum(n for _, n in shares), count)
            self.assertGreaterEqual(len(shares), 2)
            addresses = [a for a, _ in shares]
            self.assertEqual(len(set(addresses)), len(addresses))
            self.assertTrue(all(a.startswith("127.0.0.") and a != "127.0.0.1" for a in addresses))
            self.assertLessEqual(max(n for _, n in shares), crowd.PER_PROCESS)

    def test_both_ends_held_halve_a_process_share(self):
        self.patch(crowd, "open_files_limit", lambda: 4096)
        for count in (5000, 19_799):
            one, both = crowd.spread(count), crowd.spread(count, files_each=2)
            self.assertEqual(sum(n for _, n in both), count)
            self.assertLessEqual(2 * max(n for _, n in both) + crowd.GENERATOR_OWN_FILES, 4096)
            self.assertGreater(len(both), len(one))

    def test_cap_leaves_the_server_its_own_files(self):
        self.assertEqual(crowd.server_connection_cap(), crowd.open_files_limit() - crowd.SERVER_OWN_FILES)


class ControlTests(unittest.TestCase):
    def test_bare_holds_plain_connections_until_told(self):
        """The crowd's control (benchmarks/crowd.py --bare): as many loopback
        connections, both ends its own, held until a line on stdin."""
        argv = [sys.executable, "-m", "benchmarks.crowd", "--bare", "--port", "1"]
        argv += ["--connections", "5", "--source", "127.0.0.2"]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
        with subprocess.Popen(argv, cwd=root, **pipes) as holder:
            try:
                ready = json.loads(holder.stdout.readline())
                holder.stdin.write("done\n")
                holder.stdin.flush()
                ended = json.loads(holder.stdout.readline())
            finally:
                holder.kill()
        self.assertEqual((ready["ready"], ready["connections"]), (True, 5))
        self.assertEqual(ended, {"connections": 5, "alive": 5})


class CollectorTests(unittest.TestCase):
    def test_the_generators_collector_is_off_while_it_measures_then_as_it_was(self):
        self.addCleanup(gc.enable)
        for was in (True, False):
            (gc.enable if was else gc.disable)()
            with storm.collector_off():
                self.assertFalse(gc.isenabled())
            self.assertEqual(gc.isenabled(), was)


class OnceMoreTests(unittest.TestCase):
    def test_a_failed_generator_is_tried_once_more_and_said(self):
        from benchmarks import run

        tries = iter([run.GeneratorFailed("stalled"), {"ok": 1}])

        def flaky() -> dict:
            outcome = next(tries)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        self.assertEqual(run.once_more(flaky, "ngircd", "fanout ngircd"), {"ok": 1, "second_try": True})

    def test_twice_is_an_error(self):
        from benchmarks import run

        def failing() -> dict:
            raise run.GeneratorFailed("stalled")

        self.assertRaises(run.GeneratorFailed, run.once_more, failing, "ngircd", "fanout ngircd")

    def test_ours_is_never_tried_again(self):
        from benchmarks import run

        tries = []

        def failing() -> dict:
            tries.append(1)
            raise run.GeneratorFailed("the server died")

        self.assertRaises(run.GeneratorFailed, run.once_more, failing, "ours", "fanout ours")
        self.assertEqual(tries, [1])
