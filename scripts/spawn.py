"""A chat server as a Twisted child process: its port, its end, its output."""

from __future__ import annotations

import os
import re
import sys

from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LISTENING = re.compile(rb"listening on \S+ \(127\.0\.0\.1:(\d+)\)")

#: Runners: ``python -m twisted`` (twist, text logs) and ``twistd -n``.
TWIST = ["-m", "twisted", "--log-format=text"]
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--logfile=-"]


class ServerProcess(ProcessProtocol):
    """``listening`` fires with the port; ``ended`` with the exit code
    (minus the signal's number if a signal ended it)."""

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
        if isinstance(reason.value, ProcessTerminated) and reason.value.signal:
            self.ended.callback(-reason.value.signal)
        elif isinstance(reason.value, ProcessDone):
            self.ended.callback(0)
        else:
            self.ended.callback(reason.value.exitCode)

    def signal(self, name: str) -> None:
        self.transport.signalProcess(name)


def server_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # log lines arrive as they are written
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def spawn_server(reactor, *args: str, runner: list[str] = TWIST) -> ServerProcess:
    """``chat`` on 127.0.0.1, an ephemeral port, with ``args``."""
    process = ServerProcess()
    argv = [sys.executable, *runner, "chat", "--listen", "tcp:0:interface=127.0.0.1", *args]
    reactor.spawnProcess(process, sys.executable, argv, env=server_env(), path=ROOT)
    return process
