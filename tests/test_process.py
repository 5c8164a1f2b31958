"""The server as people run it: twistd / twist in a subprocess."""

from __future__ import annotations

import os
import signal
import sys

from twisted.application.service import IServiceMaker
from twisted.internet import defer, reactor
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatproto import codec
from scripts.spawn import ROOT, TWIST, TWISTD, ServerProcess, server_env, spawn_server
from tests.netclient import connect


def spawn(test: TestCase, runner: list[str], *args: str) -> ServerProcess:
    """A server subprocess that is killed when the test ends, pass or fail."""
    process = spawn_server(reactor, *args, runner=runner)

    def reap():
        if not process.ended.called:
            process.signal("KILL")
            return process.ended

    test.addCleanup(reap)
    return process


class Plugin(SynchronousTestCase):
    def test_chat_plugin_is_found(self):
        names = [maker.tapname for maker in getPlugins(IServiceMaker)]
        self.assertIn("chat", names)


class Processes(TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_python_m_twisted_chat_help(self):
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "twisted", "chat", "--help"], env=server_env(), path=ROOT
        )
        self.assertEqual(code, 0, err)
        for option in (b"--listen", b"--history", b"--max-clients", b"--idle-timeout"):
            self.assertIn(option, out)

    @defer.inlineCallbacks
    def test_bad_option_is_one_line_not_a_traceback(self):
        from twisted.internet.utils import getProcessOutputAndValue

        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "twisted", "chat", "--max-clients", "-3"], env=server_env(), path=ROOT
        )
        self.assertNotEqual(code, 0)
        self.assertIn(b"--max-clients must be greater than 0", out + err)
        self.assertNotIn(b"Traceback", out + err)

    @defer.inlineCallbacks
    def test_history_survives_sigkill(self):
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        server = spawn(self, TWIST, "--history", history)
        port = yield server.listening
        ann = yield connect(reactor, port, "ann")
        acked = []
        for i in range(30):
            ann.send(codec.Say(f"m{i}", f"r{i}"))
        while len(acked) < 30:
            packet = yield ann.expect(codec.MessagePacket)
            acked.append((packet.seq, packet.text))
        server.signal("KILL")
        self.assertEqual((yield server.ended), -signal.SIGKILL)
        yield ann.lost

        server = spawn(self, TWIST, "--history", history)
        port = yield server.listening
        bob = yield connect(reactor, port, None)
        bob.send(codec.Login("bob", 1))
        welcome = yield bob.expect(codec.Welcome)
        self.assertEqual([(m.seq, m.text) for m in welcome.history], acked)
        bob.send(codec.Say("after restart"))
        packet = yield bob.expect(codec.MessagePacket)
        self.assertEqual(packet.seq, 31, "seq continues, never reused")
        server.signal("TERM")
        yield server.ended
        yield bob.lost

    @defer.inlineCallbacks
    def test_sigterm_says_bye_and_exits_cleanly(self):
        history = os.path.abspath(self.mktemp() + ".sqlite3")
        server = spawn(self, TWISTD, "--history", history)
        port = yield server.listening
        ann = yield connect(reactor, port, "ann")
        bob = yield connect(reactor, port, "bob")
        server.signal("TERM")
        for client in (ann, bob):
            bye = yield client.expect(codec.Bye)
            self.assertEqual(bye.reason, "server_shutdown")
            yield client.lost
        self.assertEqual((yield server.ended), 0)
