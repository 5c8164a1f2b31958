"""A real S3-compatible server for the file store tests: moto's
(``moto_server``, the ``moto[server]`` test dependency) on a loopback port
of its own, with a bucket, stopped after the test."""

from __future__ import annotations

import sys

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread

from chatproto.backends.s3_files import s3_client
from scripts.spawn import ServerProcess, server_env

#: Seconds the server may take to start and answer: more is a broken install.
START_TIMEOUT = 60
#: Seconds it may take to exit once asked to, before it is killed.
STOP_TIMEOUT = 10

_RUNNING = b"Running on http://127.0.0.1:"


def _port(output: bytes) -> int | None:
    """The port of moto's "Running on http://127.0.0.1:PORT" line, once whole."""
    at = output.find(_RUNNING)
    if at < 0:
        return None
    digits = output[at + len(_RUNNING) :].split(b"\n", 1)
    return int(digits[0].strip()) if len(digits) == 2 else None


class S3Server:
    def __init__(self) -> None:
        self.process: ServerProcess | None = None
        self.port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environ(self, **changes: str) -> dict[str, str]:
        """The environment variables a server would be given to use it."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        env.update(changes)
        return env

    @classmethod
    @defer.inlineCallbacks
    def started(cls, testcase, bucket: str | None = "chat-files"):
        """A running server (with ``bucket``, unless None), stopped when ``testcase`` ends."""
        server = cls()
        testcase.addCleanup(server.stop)
        yield server.start()
        if bucket is not None:
            yield server.create_bucket(bucket)
        return server

    def start(self) -> defer.Deferred:
        """Fires with the port once the server says it listens (within START_TIMEOUT)."""
        self.process = process = ServerProcess(_port)
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"]
        reactor.spawnProcess(process, sys.executable, argv, env=server_env())

        def late(failure):
            failure.trap(defer.TimeoutError)
            if not process.ended.called:
                process.signal("KILL")
            output = process.output.decode(errors="replace")
            raise RuntimeError(f"moto_server did not start within {START_TIMEOUT} s:\n{output}")

        def listening(port: int) -> int:
            self.port = port
            return port

        d = process.listening.addTimeout(START_TIMEOUT, reactor).addErrback(late)
        return d.addCallback(listening)

    def create_bucket(self, name: str) -> defer.Deferred:
        """Made as an operator would, with a client of its own (on a thread:
        botocore blocks); its answer shows the server answers."""
        return deferToThread(lambda: s3_client(self.environ(), threads=1).create_bucket(Bucket=name))

    def stop(self) -> defer.Deferred:
        """SIGTERM (SIGKILL after STOP_TIMEOUT); fires once it has exited."""
        process, self.process = self.process, None
        if process is None or process.ended.called:
            return defer.succeed(None)
        process.signal("TERM")
        kill = reactor.callLater(STOP_TIMEOUT, process.signal, "KILL")

        def ended(code):
            if kill.active():
                kill.cancel()
            return code

        return process.ended.addBoth(ended)
