"""The open-file limit: raised at start towards what --max-clients needs,
and said in the log where the hard limit leaves too few."""

from __future__ import annotations

import resource

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from chatproto.open_files import OWN_FILES, OpenFiles, raise_soft_limit


class SoftLimit(SynchronousTestCase):
    def setUp(self):
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, limits)
        self.soft, self.hard = limits

    def test_it_is_raised_towards_what_is_wanted_and_never_lowered(self):
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, self.hard))
        self.assertEqual(raise_soft_limit(300), (300, self.hard))
        self.assertEqual(raise_soft_limit(100), (300, self.hard), "never lowered")

    def test_it_stops_at_the_hard_limit(self):
        if self.hard == resource.RLIM_INFINITY:
            raise self.skipTest("no hard limit here")
        self.assertEqual(raise_soft_limit(self.hard + 10), (self.hard, self.hard))

    def test_a_max_clients_past_the_hard_limit_is_said_with_what_fits(self):
        if self.hard == resource.RLIM_INFINITY:
            raise self.skipTest("no hard limit here")
        with capturedLogs() as events:
            OpenFiles(self.hard + 5000).startService()
        warnings = [e for e in events if "max_clients" in e]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["soft"], warnings[0]["room"]), (self.hard, self.hard - OWN_FILES))

    def test_nothing_is_said_where_everything_fits(self):
        with capturedLogs() as events:
            OpenFiles(10).startService()
        self.assertEqual([e for e in events if "max_clients" in e], [])
