"""A Redis (or Valkey) connection on Twisted: commands pipelined, each
answered by a Deferred, and Lua scripts run by their SHA.

The cluster needs only this much of the protocol (RESP2), so it is written
here rather than taken from a client library whose reconnection and failure
semantics would have to be learnt and worked around. A command sent while
the connection is down fails at once with :class:`RedisUnavailable`: a
chat message must be refused quickly, not queued for a server that may
never come back. :class:`RedisClient` reconnects by itself (ClientService),
through Sentinel when the address names sentinels; a connection whose
server stops answering (frozen, or cut off without a reset) is dropped
after a deadline, and one to a server that has become a replica (a
``READONLY`` or ``NOREPLICAS`` answer) at once, so the next one finds the
primary.
"""

from __future__ import annotations

import hashlib
import typing
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.deferreds import every

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


def allowance(args: tuple, timeout: float) -> float:
    """How long a command may go unanswered: ``timeout``, plus the time a
    blocking command (XREAD BLOCK, WAIT) is asked to wait."""
    name = str(args[0]).upper() if args else ""
    try:
        if name == "XREAD" and "BLOCK" in args:
            return timeout + int(args[args.index("BLOCK") + 1]) / 1000
        if name == "WAIT":
            return timeout + int(args[2]) / 1000
    except (IndexError, ValueError):
        pass
    return timeout


#: Error answers that mean the primary is elsewhere (a replica now, or one
#: cut off from its replicas): the next connection asks Sentinel again.
_ELSEWHERE = ("READONLY", "NOREPLICAS")


def _pushed(value: object) -> bool:
    """A channel's message (RESP2), which may come between a command and its answer."""
    return isinstance(value, list) and bool(value) and value[0] in _PUSHED


#: What a subscriber hears unasked: a channel's message, and (a shard
#: channel's slot having moved) the server ending a subscription; this
#: client never unsubscribes by itself.
_PUSHED = (b"message", b"pmessage", b"smessage", b"sunsubscribe")


class RedisProtocol(Protocol):
    """Commands in, replies out, in order; a lost connection fails what was
    in flight. With a ``clock``, a command unanswered past its allowance
    (:func:`allowance`) aborts the connection: a frozen server must not hold
    the cluster's writes for as long as it stays frozen."""

    def __init__(
        self,
        clock: IReactorTime | None = None,
        timeout: float = 3.0,
        on_push: Callable[[object], None] | None = None,
    ) -> None:
        self._waiting: deque[Deferred] = deque()
        self._deadlines: deque[float] = deque()  # the waiting commands', never decreasing
        self._timer: IDelayedCall | None = None
        self._clock = clock
        self._timeout = timeout
        self._replies = _reader()
        self.ready: Deferred = Deferred()  # fires with self once authenticated
        self.on_push = on_push  # a subscriber's messages

    def connectionMade(self) -> None:
        self.factory.prepare(self).chainDeferred(self.ready)

    def execute(self, *args) -> Deferred:
        d: Deferred = Deferred()
        self._waiting.append(d)
        if self._clock is not None:
            due = self._clock.seconds() + allowance(args, self._timeout)
            self._deadlines.append(max(due, self._deadlines[-1]) if self._deadlines else due)
            if self._timer is None:
                self._arm()
        assert self.transport is not None  # connected: made by connectionMade's time
        self.transport.write(encode_command(args))
        return d

    def send_only(self, *args) -> None:
        """A command whose answer comes as a push (``SUNSUBSCRIBE``): no one waits for it."""
        assert self.transport is not None
        self.transport.write(encode_command(args))

    def _arm(self) -> None:
        assert self._clock is not None
        self._timer = None
        if self._deadlines:
            wait = max(0.0, self._deadlines[0] - self._clock.seconds())
            self._timer = self._clock.callLater(wait, self._check)

    def _check(self) -> None:
        assert self._clock is not None and self.transport is not None
        self._timer = None
        if self._deadlines and self._deadlines[0] <= self._clock.seconds():
            log.warn("Redis did not answer in time: dropping the connection")
            cast(ITCPTransport, self.transport).abortConnection()
            return
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        replies = self._replies
        replies.feed(data)
        while (value := replies.gets()) is not False:
            if self.on_push is not None and (not self._waiting or _pushed(value)):
                self.on_push(value)  # a message on a channel subscribed to: no command asked for it
                continue
            d = self._waiting.popleft()
            if self._deadlines:
                self._deadlines.popleft()
            if isinstance(value, RedisError):
                if str(value).startswith(_ELSEWHERE) and self.transport is not None:
                    self.transport.loseConnection()  # a replica now: the next connection finds the primary
                d.errback(Failure(value))
            else:
                d.callback(value)

    def connectionLost(self, reason=None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        self.factory.lost(self)  # first: a command sent from an errback below must not come here
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(Failure(RedisUnavailable("the connection to Redis was lost")))
        if not self.ready.called:
            self.ready.errback(Failure(RedisUnavailable("the connection to Redis was lost")))


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis server is, from ``redis://[[user]:password@]host[:port][/db]``
    (``rediss://`` for TLS); or where the sentinels are that know it, from
    ``sentinel://[[user]:password@]host[:port],host[:port].../name[/db]``
    (the primary Sentinel calls ``name``; the password is the servers', the
    sentinels are asked without one); or where some nodes of a Redis
    Cluster are, from ``redis-cluster://[[user]:password@]host[:port],...``
    (the client learns the others from them)."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    primary: str = ""  # the name the sentinels monitor it by
    seeds: tuple[tuple[str, int], ...] = ()  # a Redis Cluster's nodes, as given

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        if url.startswith("sentinel://"):
            return cls._sentinel(url)
        if url.startswith("redis-cluster://"):
            return cls._cluster(url)
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"{url!r}: expected redis://HOST[:PORT][/DB], rediss://, sentinel://HOST[:PORT],.../NAME"
                " or redis-cluster://HOST[:PORT],..."
            )
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        try:
            port = parts.port or 6379
        except ValueError as e:
            raise ValueError(f"{url!r}: {e}") from None
        return cls(
            host=parts.hostname,
            port=port,
            db=_db(url, parts.path.strip("/")),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
        )

    @classmethod
    def _sentinel(cls, url: str) -> RedisAddress:
        rest = url[len("sentinel://") :]
        netloc, _, path = rest.partition("/")
        userinfo, _, hosts = netloc.rpartition("@")
        name, _, db = path.strip("/").partition("/")
        if not name:
            raise ValueError(f"{url!r}: no primary name (sentinel://HOST[:PORT],.../NAME)")
        sentinels = tuple(_host_port(url, one, 26379) for one in hosts.split(",") if one)
        if not sentinels:
            raise ValueError(f"{url!r}: no sentinel")
        username, password = _credentials(userinfo)
        host, port = sentinels[0]
        return cls(host, port, _db(url, db), username, password, sentinels=sentinels, primary=unquote(name))

    @classmethod
    def _cluster(cls, url: str) -> RedisAddress:
        netloc, _, path = url[len("redis-cluster://") :].partition("/")
        if path.strip("/"):
            raise ValueError(f"{url!r}: a Redis Cluster has no databases but 0: no /DB")
        userinfo, _, hosts = netloc.rpartition("@")
        seeds = tuple(_host_port(url, one, 6379) for one in hosts.split(",") if one)
        if not seeds:
            raise ValueError(f"{url!r}: no node")
        username, password = _credentials(userinfo)
        return cls(seeds[0][0], seeds[0][1], 0, username, password, seeds=seeds)

    def endpoint(self) -> str:
        host = self.host.replace(":", r"\:")
        if self.tls:
            return f"tls:{host}:{self.port}"
        return f"tcp:host={host}:port={self.port}"

    def __str__(self) -> str:  # never the password
        if self.sentinels:
            hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel://{hosts}/{self.primary}/{self.db}"
        if self.seeds:
            return "redis-cluster://" + ",".join(
                f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.seeds
            )
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    """``[USER]:PASSWORD`` before a URL's ``@``, percent-decoded."""
    username, colon, password = userinfo.partition(":")
    return (unquote(username) if username and colon else None, unquote(password) if colon else None)


def _db(url: str, path: str) -> int:
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError(f"{url!r}: the database must be a number, not {path!r}")
    return int(path or 0)


def _host_port(url: str, text: str, default: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"{url!r}: expected [IPv6] or [IPv6]:PORT, not {text!r}")
        port = after[1:]
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
        if ":" in host:
            raise ValueError(f"{url!r}: an IPv6 address goes in brackets: [{host}]:{port}")
    if not host:
        raise ValueError(f"{url!r}: no host in {text!r}")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{url!r}: bad port in {text!r}")
    return host, int(port) if port else default


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
        clock: IReactorTime,
        timeout: float,
        subscribe: tuple[str, ...] = (),
        on_push: Callable[[object], None] | None = None,
    ) -> None:
        self.address = address
        self.name = name
        self.lost = lost
        self.clock = clock
        self.timeout = timeout
        self.subscribe = subscribe
        self.on_push = on_push

    def buildProtocol(self, addr) -> RedisProtocol:
        proto = RedisProtocol(self.clock, self.timeout, self.on_push)
        proto.factory = self
        return proto

    def prepare(self, proto: RedisProtocol) -> Deferred:
        """AUTH, SELECT, ROLE (through Sentinel: is it still the primary?)
        and CLIENT SETNAME, pipelined, before anything else."""
        a = self.address
        steps = []
        if a.password is not None:
            steps.append(proto.execute("AUTH", *([a.username] if a.username else []), a.password))
        if a.db:
            steps.append(proto.execute("SELECT", a.db))
        if a.sentinels:
            steps.append(proto.execute("ROLE").addCallback(_primary_only, a))
        steps.append(proto.execute("CLIENT", "SETNAME", self.name))
        if self.subscribe:  # from here on the connection only hears its channels
            steps.append(proto.execute("SUBSCRIBE", *self.subscribe))

        def drop(f: Failure) -> Failure:
            assert proto.transport is not None
            proto.transport.loseConnection()
            return f

        return every(steps).addCallbacks(lambda _: proto, drop)


def _primary_only(role: list, address: RedisAddress) -> None:
    if not role or role[0] != b"master":
        raise RedisUnavailable(f"the server Sentinel named for {address.primary!r} is not its primary (yet)")


def _endpoint(reactor, address: RedisAddress, timeout: float) -> IStreamClientEndpoint:
    if address.sentinels:
        from chatproto.backends.sentinel import SentinelEndpoint

        return SentinelEndpoint(reactor, address.sentinels, address.primary, address.tls, timeout)
    return clientFromString(reactor, address.endpoint())


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
        timeout: float = 3.0,
        keepalive: bool = False,
    ) -> None:
        """With ``subscribe`` (or ``keepalive``), a subscriber's connection: it subscribes to
        those channels each time it connects, and hands each message to
        ``on_push`` (RESP2's ``["message", channel, data]``), and PINGs
        every ``timeout`` seconds: a subscriber sends no command of its
        own, and a server gone silent must be noticed. A command
        unanswered for ``timeout`` seconds (plus what it asked to block
        for) drops the connection."""
        self.address = address
        self.name = name
        self.epoch = epoch
        self._proto: RedisProtocol | None = None
        self._clock = reactor
        self._was_up = False
        self.up_since: float | None = None  # when the connection up now was made
        self._refusals = 0  # connections in a row that were made, then refused
        self._waiting: list[Deferred] = []
        self._waking: IDelayedCall | None = None
        self._keepalive: LoopingCall | None = None
        self._preparing: RedisProtocol | None = None  # a connection made, not yet ready
        self._settled: Deferred[None] | None = None  # a stop waits for its preparation to end
        if subscribe or keepalive:
            self._keepalive = LoopingCall(self._ping)
            self._keepalive.clock = reactor
            self._keepalive_every = timeout
        backoff = backoffPolicy(initialDelay=0.1, maxDelay=2.0)
        self._service = ClientService(
            _endpoint(reactor, address, timeout),
            _Factory(address, name, self._lost, reactor, timeout, subscribe, on_push),
            retryPolicy=lambda attempt: backoff(max(attempt, self._refusals)),
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
            self._refusals = 0
            self.up_since = self._clock.seconds()
            self._proto = inner  # not the reconnecting proxy ClientService hands out
            if self._was_up:
                peer = cast(ITCPTransport, inner.transport).getPeer()
                where = f"{peer.host}:{peer.port}"
                log.info(
                    "{name}: connected to Redis at {a} again ({where})",
                    name=self.name,
                    a=str(self.address),
                    where=where,
                )
            self._was_up = True
            # Waiters wake on the next turn, once ClientService has taken the
            # connection as made (and left its state machine): a waiter may stop it.
            self._waking = self._clock.callLater(0, self._wake, inner)
            return inner

        def refused(f: Failure) -> None:
            """Dropped, and reported to ClientService as made: its loss brings
            the next attempt (a failed preparation on a connection that then
            closes is a transition ClientService does not have)."""
            self._refusals += 1
            log.warn(
                "{name}: Redis at {address} refused the connection: {error}",
                name=self.name,
                address=str(self.address),
                error=f.value,
            )
            assert proto.transport is not None
            proto.transport.loseConnection()

        def settled(result: object) -> object:
            self._preparing = None
            waiting, self._settled = self._settled, None
            if waiting is not None:
                self._clock.callLater(0, waiting.callback, None)  # after ClientService has seen it
            return result

        self._preparing = proto
        return proto.ready.addCallback(checked).addCallbacks(ready, refused).addBoth(settled)

    def _wake(self, proto: RedisProtocol) -> None:
        self._waking = None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(proto)

    def _lost(self, proto: RedisProtocol) -> None:
        if self._proto is proto:
            self._proto = None
            self.up_since = None
            log.warn("{name}: lost the connection to Redis at {a}", name=self.name, a=str(self.address))

    def start(self) -> None:
        self._service.startService()
        if self._keepalive is not None:
            self._keepalive.start(self._keepalive_every, now=False)

    def _ping(self) -> None:
        if self._proto is not None:
            self._proto.execute("PING").addErrback(lambda f: None)  # unanswered: the deadline drops it

    def stop(self) -> Deferred:
        self._proto = None
        self.up_since = None
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        if self._waking is not None:
            self._waking.cancel()
            self._waking = None
        preparing = self._preparing
        if preparing is None or preparing.transport is None:
            return self._service.stopService()
        # ClientService has no transition for a stop while a connection is
        # prepared (the cancelled preparation fails, then the connection's
        # loss comes in a state that does not take it): the connection goes
        # first, and the stop once ClientService has seen the attempt end.
        settled = self._settled = Deferred()
        cast(ITCPTransport, preparing.transport).abortConnection()
        return settled.addCallback(lambda _: self.stop())

    def drop(self, why: str) -> None:
        """Close the connection up now (if any): commands fail at once
        until the next one, made afresh (through Sentinel: to the primary
        it names now)."""
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            self.up_since = None
            log.warn(
                "{name}: dropping the connection to Redis at {a}: {why}",
                name=self.name,
                a=str(self.address),
                why=why,
            )
            proto.transport.loseConnection()

    def connected(self) -> Deferred:
        """Fires with the protocol once connected (at once if it is)."""
        if self._proto is not None:
            return succeed(self._proto)
        d: Deferred = Deferred(self._forget)
        self._waiting.append(d)
        return d

    def _forget(self, d: Deferred) -> None:
        """A wait for the connection given up on (cancelled, timed out): not kept."""
        if d in self._waiting:
            self._waiting.remove(d)

    def when_up(self) -> Deferred:
        """At once once the client has ever connected (a later outage fails
        commands fast); before that, when it first connects (reads made at start)."""
        return succeed(self._proto) if self._was_up else self.connected()

    def call_when_up(self, *args) -> Deferred:
        return self.when_up().addCallback(lambda _: self.call(*args))

    @property
    def up(self) -> bool:
        return self._proto is not None

    @property
    def ever_up(self) -> bool:
        """Whether it has been connected since it started."""
        return self._was_up

    @property
    def connection(self) -> RedisProtocol | None:
        """The connection commands go on now: what was read on one is
        confirmed by a write on the same one (:mod:`~chatproto.backends.replicas`)."""
        return self._proto

    def call(self, *args) -> Deferred:
        if self.epoch is not None and self.epoch.lost:
            return fail(StoreLost(f"Redis at {self.address} lost the cluster's data"))
        if self._proto is None:
            return fail(RedisUnavailable(f"no connection to Redis at {self.address}"))
        return self._proto.execute(*args)


class Commands(typing.Protocol):
    """What a store needs of a client: one Redis's, or a Redis Cluster's
    (:class:`~chatproto.backends.redis_cluster.ClusterClient`)."""

    address: RedisAddress

    def call(self, *args) -> Deferred: ...

    def call_when_up(self, *args) -> Deferred: ...

    def when_up(self) -> Deferred: ...

    def connected(self) -> Deferred: ...

    def start(self) -> None: ...

    def stop(self) -> Deferred: ...

    def drop(self, why: str) -> None: ...

    @property
    def up(self) -> bool: ...

    @property
    def up_since(self) -> float | None: ...

    @property
    def connection(self) -> RedisProtocol | None: ...


#: The SHAs and sources of the scripts that write nothing.
_READS_ONLY: set[str] = set()


def reads_only(args: tuple) -> bool:
    """Is ``args`` an EVALSHA (or EVAL) of a script that writes nothing?"""
    return str(args[0]).upper() in ("EVALSHA", "EVAL") and args[1] in _READS_ONLY


class Script:
    """A Lua script run by its SHA, loaded on first use (and after a
    restart); ``reads_only``: it writes nothing (nothing to confirm on
    replicas)."""

    def __init__(self, source: str, reads_only: bool = False) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        if reads_only:
            _READS_ONLY.update((self.source, self.sha))

    def __call__(self, client: Commands, keys: list, args: list) -> Deferred:
        d = client.call("EVALSHA", self.sha, len(keys), *keys, *args)

        def missing(f: Failure):
            f.trap(RedisError)
            if not str(f.value).startswith("NOSCRIPT"):
                return f
            return client.call("EVAL", self.source, len(keys), *keys, *args)

        return d.addErrback(missing)
