"""A Redis (or Valkey) connection on Twisted: commands pipelined, each
answered by a Deferred, and Lua scripts run by their SHA.

The cluster needs only this much of the protocol (RESP2), so it is written
here rather than taken from a client library whose reconnection and failure
semantics would have to be learnt and worked around. A command sent while
the connection is down fails at once with :class:`RedisUnavailable`: a
chat message must be refused quickly, not queued for a server that may
never come back. :class:`RedisClient` reconnects by itself (ClientService).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class RedisError(Exception):
    """The server answered a command with an error."""


class RedisUnavailable(Exception):
    """No connection to the server: the command was not sent, or its answer was lost."""


class Incomplete(Exception):
    """A reply has not all arrived yet."""


def encode_command(args: tuple) -> bytes:
    """A command as a RESP array of bulk strings (str as UTF-8, int as digits)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def parse_reply(data: bytes, at: int = 0):
    """One reply from ``data[at:]``: (value, next position); Incomplete if
    it hasn't all arrived. Bulk strings stay bytes; errors are RedisError values."""
    end = data.find(b"\r\n", at)
    if end < 0:
        raise Incomplete
    kind, line = data[at : at + 1], data[at + 1 : end]
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, end + 2
        if len(data) < end + 4 + size:
            raise Incomplete
        return data[end + 2 : end + 2 + size], end + 4 + size
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, end + 2
        items, at = [], end + 2
        for _ in range(count):
            item, at = parse_reply(data, at)
            items.append(item)
        return items, at
    if kind == b":":
        return int(line), end + 2
    if kind == b"+":
        return line, end + 2
    if kind == b"-":
        return RedisError(line.decode("utf-8", "replace")), end + 2
    raise RedisError(f"unexpected reply type {kind!r}")


class _Replies:
    """Replies parsed in Python, as hiredis's Reader does in C (it is used
    when installed: a room stream's entries come by the thousand)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0

    def feed(self, data: bytes) -> None:
        self._buffer = self._buffer[self._at :] + data if self._at < len(self._buffer) else data
        self._at = 0

    def gets(self):
        if self._at >= len(self._buffer):
            return False
        try:
            value, self._at = parse_reply(self._buffer, self._at)
        except Incomplete:
            return False
        return value


def _reader():
    try:
        import hiredis
    except ImportError:
        return _Replies()
    return hiredis.Reader(replyError=RedisError)


class RedisProtocol(Protocol):
    """Commands in, replies out, in order; a lost connection fails what was in flight."""

    def __init__(self) -> None:
        self._waiting: deque[Deferred] = deque()
        self._replies = _reader()
        self.ready: Deferred = Deferred()  # fires with self once authenticated
        self.on_push: Callable[[object], None] | None = None  # a subscriber's messages

    def connectionMade(self) -> None:
        self.factory.prepare(self).chainDeferred(self.ready)

    def execute(self, *args) -> Deferred:
        d: Deferred = Deferred()
        self._waiting.append(d)
        assert self.transport is not None  # connected: made by connectionMade's time
        self.transport.write(encode_command(args))
        return d

    def dataReceived(self, data: bytes) -> None:
        replies = self._replies
        replies.feed(data)
        while (value := replies.gets()) is not False:
            if not self._waiting and self.on_push is not None:
                self.on_push(value)  # a message on a channel subscribed to: no command asked for it
                continue
            d = self._waiting.popleft()
            if isinstance(value, RedisError):
                d.errback(Failure(value))
            else:
                d.callback(value)

    def connectionLost(self, reason=None) -> None:
        self.factory.lost(self)  # first: a command sent from an errback below must not come here
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(Failure(RedisUnavailable("the connection to Redis was lost")))
        if not self.ready.called:
            self.ready.errback(Failure(RedisUnavailable("the connection to Redis was lost")))


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis server is, from ``redis://[[user]:password@]host[:port][/db]``
    (``rediss://`` for TLS)."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"{url!r}: expected redis://HOST[:PORT][/DB] or rediss://")
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"{url!r}: the database must be a number, not {path!r}")
        try:
            port = parts.port or 6379
        except ValueError as e:
            raise ValueError(f"{url!r}: {e}") from None
        return cls(
            host=parts.hostname,
            port=port,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
        )

    def endpoint(self) -> str:
        host = self.host.replace(":", r"\:")
        if self.tls:
            return f"tls:{host}:{self.port}"
        return f"tcp:host={host}:port={self.port}"

    def __str__(self) -> str:  # never the password
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


class StoreLost(RedisUnavailable):
    """Redis came back without the cluster's data: nothing may be written
    (its counters would hand out seqs a second time)."""


class Epoch:
    """A key the cluster's first node sets and every connection checks each
    time it (re)connects. A Redis that comes back without it, or with
    another value, lost the cluster's data (restarted with no persistence,
    flushed, failed over to an empty replica): from then on this node
    refuses every command, and says so, rather than reuse seqs or wait for
    entries that will never come."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.known: bytes | None = None
        self.lost = False

    def check(self, proto: RedisProtocol, where: RedisAddress) -> Deferred:
        mine = uuid.uuid4().hex.encode("ascii")
        return proto.execute("SET", self.key, mine, "NX", "GET").addCallback(self._seen, mine, where)

    def _seen(self, before: bytes | None, mine: bytes, where: RedisAddress) -> None:
        now = mine if before is None else before
        if self.known is None:
            self.known = now
        elif now != self.known and not self.lost:
            self.lost = True
            log.critical(
                "Redis at {address} lost the cluster's data (its epoch key is gone or new): this node "
                "refuses every message now rather than hand out seqs again. Restore Redis from its "
                "append-only file, or start a new cluster (every node restarted on an empty Redis).",
                address=str(where),
            )


class _Factory(Factory):
    protocol = RedisProtocol
    noisy = False  # it reconnects: no "Starting factory" line each time

    def __init__(
        self,
        address: RedisAddress,
        name: str,
        lost,
        subscribe: tuple[str, ...] = (),
        on_push: Callable[[object], None] | None = None,
    ) -> None:
        self.address = address
        self.name = name
        self.lost = lost
        self.subscribe = subscribe
        self.on_push = on_push

    def buildProtocol(self, addr) -> RedisProtocol:
        proto = cast(RedisProtocol, super().buildProtocol(addr))
        proto.on_push = self.on_push
        return proto

    def prepare(self, proto: RedisProtocol) -> Deferred:
        """AUTH, SELECT and CLIENT SETNAME, pipelined, before anything else."""
        a = self.address
        steps = []
        if a.password is not None:
            steps.append(proto.execute("AUTH", *([a.username] if a.username else []), a.password))
        if a.db:
            steps.append(proto.execute("SELECT", a.db))
        steps.append(proto.execute("CLIENT", "SETNAME", self.name))
        if self.subscribe:  # from here on the connection only hears its channels
            steps.append(proto.execute("SUBSCRIBE", *self.subscribe))
        d = steps[-1]

        def drop(f: Failure) -> Failure:
            assert proto.transport is not None
            proto.transport.loseConnection()
            return f

        for step in steps[:-1]:
            step.addErrback(drop)
        return d.addCallback(lambda _: proto)


class RedisClient:
    """One connection, kept up: ``call`` sends a command now or fails at once."""

    def __init__(
        self,
        reactor,
        address: RedisAddress,
        name: str = "chat",
        epoch: Epoch | None = None,
        subscribe: tuple[str, ...] = (),
        on_push: Callable[[object], None] | None = None,
    ) -> None:
        """With ``subscribe``, a subscriber's connection: it subscribes to
        those channels each time it connects, and hands each message to
        ``on_push`` (RESP2's ``["message", channel, data]``)."""
        self.address = address
        self.name = name
        self.epoch = epoch
        self._proto: RedisProtocol | None = None
        self._was_up = False
        self._waiting: list[Deferred] = []
        self._service = ClientService(
            clientFromString(reactor, address.endpoint()),
            _Factory(address, name, self._lost, subscribe, on_push),
            retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=2.0),
            prepareConnection=self._prepared,
        )

    def _prepared(self, connected: IProtocol) -> Deferred:
        # ClientService hands out a proxy of the RedisProtocol _Factory made.
        proto = cast(RedisProtocol, connected)

        def checked(inner: RedisProtocol):
            if self.epoch is None:
                return inner
            return self.epoch.check(inner, self.address).addCallback(lambda _: inner)

        def ready(inner: RedisProtocol):
            self._proto = inner  # not the reconnecting proxy ClientService hands out
            if self._was_up:
                log.info("{name}: connected to Redis at {a} again", name=self.name, a=str(self.address))
            self._was_up = True
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(inner)
            return inner

        def refused(f: Failure):
            log.warn(
                "{name}: Redis at {address} refused the connection: {error}",
                name=self.name,
                address=str(self.address),
                error=f.value,
            )
            assert proto.transport is not None
            proto.transport.loseConnection()
            return f

        return proto.ready.addCallback(checked).addCallbacks(ready, refused)

    def _lost(self, proto: RedisProtocol) -> None:
        if self._proto is proto:
            self._proto = None
            log.warn("{name}: lost the connection to Redis at {a}", name=self.name, a=str(self.address))

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> Deferred:
        self._proto = None
        return self._service.stopService()

    def connected(self) -> Deferred:
        """Fires with the protocol once connected (at once if it is)."""
        if self._proto is not None:
            return succeed(self._proto)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def when_up(self) -> Deferred:
        """At once once the client has ever connected (a later outage fails
        commands fast); before that, when it first connects (reads made at start)."""
        return succeed(self._proto) if self._was_up else self.connected()

    def call_when_up(self, *args) -> Deferred:
        return self.when_up().addCallback(lambda _: self.call(*args))

    @property
    def up(self) -> bool:
        return self._proto is not None

    def call(self, *args) -> Deferred:
        if self.epoch is not None and self.epoch.lost:
            return fail(StoreLost(f"Redis at {self.address} lost the cluster's data"))
        if self._proto is None:
            return fail(RedisUnavailable(f"no connection to Redis at {self.address}"))
        return self._proto.execute(*args)


class Script:
    """A Lua script run by its SHA, loaded on first use (and after a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __call__(self, client: RedisClient, keys: list, args: list) -> Deferred:
        d = client.call("EVALSHA", self.sha, len(keys), *keys, *args)

        def missing(f: Failure):
            f.trap(RedisError)
            if not str(f.value).startswith("NOSCRIPT"):
                return f
            return client.call("EVAL", self.source, len(keys), *keys, *args)

        return d.addErrback(missing)
