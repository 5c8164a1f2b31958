"""The desktop client's start-up check for Qt's X11 libraries (no Qt needed)."""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from qtclient.platform_check import XCB_LIBRARIES, missing_xcb_packages, startup_problem
from scripts.spawn import ROOT, server_env

MINIMAL_DEBIAN = {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"}


def minimal_debian(soname: str) -> bool:
    return soname not in MINIMAL_DEBIAN


class StartupCheck(SynchronousTestCase):
    def test_names_the_packages_a_minimal_install_lacks(self):
        problem = startup_problem({"DISPLAY": ":0"}, minimal_debian)
        self.assertIn("sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1", problem)

    def test_nothing_to_say_when_everything_loads(self):
        self.assertIsNone(startup_problem({"DISPLAY": ":0"}, lambda soname: True))
        self.assertEqual(missing_xcb_packages(lambda soname: True), [])

    def test_only_when_qt_would_use_xcb(self):
        lacking = lambda soname: False  # noqa: E731
        self.assertIsNone(startup_problem({"QT_QPA_PLATFORM": "offscreen"}, lacking))
        self.assertIsNone(startup_problem({"QT_QPA_PLATFORM": "wayland"}, lacking))
        self.assertIsNone(startup_problem({"WAYLAND_DISPLAY": "wayland-0"}, lacking))
        self.assertIsNotNone(startup_problem({"QT_QPA_PLATFORM": "xcb"}, lacking))
        self.assertIsNotNone(startup_problem({"QT_QPA_PLATFORM": "wayland;xcb"}, lacking))

    def test_the_app_says_so_and_exits_1_where_libraries_are_missing(self):
        missing = missing_xcb_packages()
        if not missing:
            raise SkipTest(f"this machine has all of {sorted(XCB_LIBRARIES)}")
        env = dict(server_env(), QT_QPA_PLATFORM="xcb", DISPLAY=":99")
        result = subprocess.run(
            [sys.executable, "-m", "qtclient"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(f"sudo apt-get install {' '.join(missing)}", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
