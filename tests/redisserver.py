"""A real Redis (Valkey) server for the cluster tests: on a free loopback
port, in a temporary folder, stopped after the test."""

from __future__ import annotations

import shutil
import tempfile

from twisted.internet import defer, reactor

from scripts.spawn import free_port, spawn_redis


class RedisServer:
    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="chat-redis-")
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    @defer.inlineCallbacks
    def started(cls, testcase):
        """A running server, stopped (and its folder removed) when ``testcase`` ends."""
        server = cls()
        testcase.addCleanup(shutil.rmtree, server.folder, ignore_errors=True)
        testcase.addCleanup(server.stop)
        yield server.start()
        return server

    def start(self) -> defer.Deferred:
        self.process = spawn_redis(reactor, self.folder, self.port)
        return self.process.listening

    def stop(self) -> defer.Deferred:
        """SIGTERM (it syncs its append-only file first); fires once it has exited."""
        process, self.process = self.process, None
        if process is None or process.ended.called:
            return defer.succeed(None)
        process.transport.signalProcess("TERM")
        return process.ended

    @defer.inlineCallbacks
    def restart(self):
        yield self.stop()
        yield self.start()
