"""The server as people run it: twistd / twist in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import sys

from twisted.application.service import IServiceMaker
from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatproto import codec
from tests.netclient import connect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LISTENING = re.compile(rb"listening on \S+ \(127\.0\.0\.1:(\d+)\)")


def server_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # log lines arrive as they are written
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class ServerProcess(ProcessProtocol):
    """A chat server subprocess; ``listening`` fires with its port."""

    def __init__(self) -> None:
        self.output = b""
        self.listening: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = _LISTENING.search(self.output)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"server exited before listening:\n{self.output.decode()}"))
        if isinstance(reason.value, ProcessDone):
            self.ended.callback(0)
        elif isinstance(reason.value, ProcessTerminated):
            self.ended.callback(
                reason.value.exitCode if reason.value.exitCode is not None else -reason.value.signal
            )

    def signal(self, name: str) -> None:
        self.transport.signalProcess(name)


def spawn(test: TestCase, runner: list[str], *args: str) -> ServerProcess:
    """A server subprocess that is killed when the test ends, pass or fail."""
    process = ServerProcess()
    argv = [sys.executable, *runner, "chat", "--listen", "tcp:0:interface=127.0.0.1", *args]
    reactor.spawnProcess(process, sys.executable, argv, env=server_env(), path=ROOT)

    def reap():
        if not process.ended.called:
            process.signal("KILL")
            return process.ended

    test.addCleanup(reap)
    return process


TWIST = ["-m", "twisted", "--log-format=text"]
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--logfile=-"]


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
