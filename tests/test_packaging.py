"""The wheel, installed in a fresh venv, runs: ``twistd chat`` finds its
plugin (with Twisted's plugin cache writable or not) and ``chat-server`` starts.

Nothing is downloaded: the wheel is built without build isolation, installed
without dependencies, and the fresh venv borrows this environment's
site-packages (Twisted, prometheus-client) through a .pth line, after its
own site-packages, where the wheel's chatproto and plugin are.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)


class Wheel(TestCase):
    timeout = 600

    def setUp(self):
        if sys.prefix == sys.base_prefix:
            raise SkipTest("needs to run from a virtual environment (make test does)")
        self.tmp = tempfile.mkdtemp(prefix="chat-wheel-")
        built = run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", self.tmp, ROOT]
        )
        self.assertEqual(built.returncode, 0, built.stderr[-2000:])
        (self.wheel,) = glob.glob(os.path.join(self.tmp, "chatproto-*.whl"))
        self.venv = os.path.join(self.tmp, "venv")
        made = run([sys.executable, "-m", "venv", "--without-pip", self.venv])
        self.assertEqual(made.returncode, 0, made.stderr)
        self.python = os.path.join(self.venv, "bin", "python")
        installed = run(
            [sys.executable, "-m", "pip", "--python", self.python, "install", "--no-deps", self.wheel]
        )
        self.assertEqual(installed.returncode, 0, installed.stderr[-2000:])
        purelib = run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        self.site = purelib.stdout.strip()
        with open(os.path.join(self.site, "borrowed-dependencies.pth"), "w") as f:
            f.write(sysconfig.get_paths()["purelib"] + "\n")

    def fresh(self, *argv: str) -> subprocess.CompletedProcess:
        """Run in the fresh venv, away from the checkout."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return run([self.python, *argv], cwd=self.tmp, env=env)

    def test_twistd_finds_the_plugin_and_chat_server_starts(self):
        where = self.fresh(
            "-c",
            "import chatproto, twisted.plugins.chatproto_plugin as p; print(chatproto.__file__, p.__file__)",
        )
        self.assertTrue(where.stdout.startswith(self.site), where.stdout + where.stderr)
        twistd = ["-c", "from twisted.scripts.twistd import run; run()", "chat", "--help"]
        result = self.fresh(*twistd)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn("--default-room", result.stdout)
        plugins = os.path.join(self.site, "twisted", "plugins")
        self.assertTrue(os.path.exists(os.path.join(plugins, "dropin.cache")), "the cache was written")
        server = self.fresh("-c", "from chatproto.runner import main; main(['--help'])")
        self.assertEqual(server.returncode, 0, server.stderr[-2000:])
        self.assertIn("--metrics", server.stdout)
        # A cache that can't be written (a root-owned install, run as a user):
        # a folder in its place fails the write even for root. Still found.
        os.remove(os.path.join(plugins, "dropin.cache"))
        os.mkdir(os.path.join(plugins, "dropin.cache"))
        result = self.fresh(*twistd)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn("--default-room", result.stdout)
