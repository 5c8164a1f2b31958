"""Services: the hub's upkeep, shared files' start and sweep, its listening ports, heap trims, signals."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
from collections.abc import Callable
from typing import cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.core.files import Files
from chatproto.core.hub import Hub
from chatproto.core.peers import Inbound, Peers
from chatproto.transports.int32 import describe_address

log = Logger()


class ThreadedChore(Service):
    """Every ``every`` seconds, ``work()`` on a worker thread: never two at
    once, failures logged, and stopping waits for the one under way.

    For work that may block (an fsync, a heap trim) and so must never run on
    the reactor thread.
    """

    def __init__(self, reactor, work, every: float, name: str) -> None:
        self.reactor = reactor
        self.work = work
        self.every = every
        self.name = name
        self._loop = LoopingCall(self.run)
        self._loop.clock = reactor
        self._running: Deferred | None = None
        self._waiters: list[Deferred] = []

    @property
    def busy(self) -> bool:
        return self._running is not None

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.every, now=False)

    def run(self) -> None:
        """Start the work now, unless it is already under way."""
        if self._running is None:
            d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.work)
            d.addErrback(lambda f: log.failure("{name} failed", f, name=self.name))
            d.addBoth(self._done)
            self._running = d

    def _done(self, _) -> None:
        self._running = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def idle(self) -> Deferred:
        """Fires when no work is under way."""
        waiter: Deferred = Deferred()
        if self._running is None:
            waiter.callback(None)
        else:
            self._waiters.append(waiter)
        return waiter

    def stopService(self) -> Deferred:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return self.idle()


class HubService(Service):
    """Maintains the event log off the reactor thread while running (a WAL
    checkpoint, for SQLite); on stop: store what was said, BYE everyone,
    then close the log."""

    def __init__(self, hub: Hub, maintain_every: float = 1.0) -> None:
        self.hub = hub
        self.maintenance = ThreadedChore(
            hub.clock, hub.eventlog.maintain, maintain_every, "history maintenance"
        )

    def startService(self) -> None:
        super().startService()
        self.maintenance.startService()

    def stopService(self) -> Deferred:
        super().stopService()
        # Never close the log under maintenance.
        d = gatherResults([self.hub.shutdown(), self.maintenance.stopService()])
        d.addBoth(lambda _: self.hub.close())
        return d


class FilesService(Service):
    """Shared files while the server runs: the store checked and the
    signing secret read (or made) on start, then the sweep of uploads never
    attached. ``ready`` fires once files are ready, or off for a reason the
    log gives: the listeners wait for it, so no client is told ``no_files``
    while the secret loads."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self.files.start().chainDeferred(self.ready)

    def stopService(self) -> None:
        super().stopService()
        self.files.stop()


class ListenerService(StreamServerEndpointService):
    """Listens on one endpoint while running.

    Binds in ``privilegedStartService``, so ``twistd --uid`` can bind a port
    below 1024 before dropping root. A port that can't be bound fails at
    once with a one-line reason, so twistd exits instead of running a server
    nobody can reach.
    """

    _raiseSynchronously = True
    _waitingForPort: Deferred[IListeningPort] | None

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        gate: Deferred | None = None,
    ) -> None:
        super().__init__(endpoint, factory)
        self.description = description
        self.port: IListeningPort | None = None
        self.gate = gate  # until it fires, connections wait in the listen backlog

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception:
            log.critical(
                "can't listen on {description}: {error}",
                description=self.description,
                error=Failure().getErrorMessage(),
            )
            raise
        assert self._waitingForPort is not None  # listen() was called
        self._waitingForPort.addCallback(self._listening)

    def listening(self) -> Deferred[IListeningPort]:
        """Fires with the port once it is bound (after ``privilegedStartService``)."""
        bound: Deferred[IListeningPort] = Deferred()

        def tell(port: IListeningPort) -> IListeningPort:
            bound.callback(port)
            return port

        assert self._waitingForPort is not None, "listening() before privilegedStartService()"
        self._waitingForPort.addCallback(tell)
        return bound

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info(
            "listening on {description} ({address})",
            description=self.description,
            address=describe_address(port.getHost()),
        )
        if self.gate is not None and not self.gate.called:
            reading = cast(FileDescriptor, port)  # a TCP or Unix port reads to accept
            reading.stopReading()

            def resume(passed: object) -> object:
                reading.startReading()
                return passed

            self.gate.addCallback(resume)
        return port

    def stopService(self) -> Deferred:
        self.port = None
        return super().stopService()


class PeersService(Service):
    """The node among the others: joins on start (``joined`` fires then; a
    cluster node waits until Redis answers, a single server at once), leaves
    on stop, so the others see its sessions leave with ``server_shutdown``."""

    def __init__(self, peers: Peers, inbound: Inbound, protocols: IProtocolFactory) -> None:
        self.peers = peers
        self.inbound = inbound
        self.protocols = protocols  # a relayed device's connection (cluster/relays.py)
        self.joined: Deferred[object] = Deferred()

    def startService(self) -> None:
        super().startService()
        d = self.peers.start(self.inbound, self.protocols)
        d.addCallbacks(self.joined.callback, self._failed)

    def _failed(self, failure: Failure) -> None:
        log.failure("could not join the cluster", failure)
        from twisted.internet import reactor

        reactor.stop()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.peers.stop()


class HeapTrimmer:
    """Hands freed heap back to the OS after bursts.

    A login storm or a slow reader's backlog briefly needs a lot of memory;
    glibc keeps it after Python frees it, so the server's RSS would stay at
    its peak. A trim is worth it once ``threshold`` bytes (or a 64th of
    the heap, if more) have been freed since the heap's free space was
    last at its lowest: what a burst leaves, not the fragments that stay
    free between live objects (those would be trimmed again and again for
    nothing), nor a big heap's ordinary churn. And once more when the
    heap settles after moving: the first look at which its free space
    moved less than a quarter of ``threshold`` (and is at least that
    quarter), after a trim or a look at which it moved more, if the
    process's own memory grew by that quarter (or a 256th of the heap)
    since the last trim. That is the tail of a burst, freed after the
    trim during it or in pages its last allocations touched again, which
    would otherwise stay resident for as long as the server is idle; a
    steady heap is not trimmed again and again for pages its reuse
    touches. Run
    :meth:`trim_if_worth_it` as a :class:`ThreadedChore`
    (:func:`heap_trimmer`): a trim takes the heap's lock, and on a large
    fragmented heap that can take milliseconds, so never on the reactor thread.
    """

    def __init__(self, threshold: int = 256 * 1024, resident: Callable[[], int] | None = None) -> None:
        self.threshold = threshold
        self._resident = _resident if resident is None else resident  # the process's resident bytes
        self._glibc = _glibc()
        self._lowest: int | None = None  # free bytes, the least seen since the last trim
        self._last: int | None = None  # free bytes at the last look
        self._trimmed_at: int | None = None  # own resident bytes after the last trim, or the first look
        self._moved = False  # the heap moved since: a settle trim may follow

    @property
    def available(self) -> bool:
        return self._glibc is not None

    def trim_if_worth_it(self) -> int:
        """Trim if ``threshold`` bytes were freed since the free space was
        at its lowest; returns the free bytes seen (0 where glibc can't tell)."""
        if self._glibc is None:
            return 0
        heap = self._glibc.mallinfo2()
        free = heap.fordblks
        worth = max(self.threshold, heap.arena // 64)
        tail = self.threshold // 4
        lowest = free if self._lowest is None else min(self._lowest, free)
        quiet = self._last is not None and abs(free - self._last) < tail
        if self._trimmed_at is None:
            self._trimmed_at = self._resident()
        settled = False
        if quiet and self._moved:
            self._moved = False  # one settle trim per movement, at most
            grown = self._resident() - self._trimmed_at
            settled = free >= tail and grown >= max(tail, heap.arena // 256)
        elif not quiet:
            self._moved = True
        if free - lowest >= worth or (self._lowest is None and free >= worth) or settled:
            self._glibc.malloc_trim(0)
            self._trimmed_at = self._resident()
            self._moved = not settled  # after a burst's trim, the tail's
            lowest = free  # what stays free after a trim is fragments (their pages given back)
        self._lowest = lowest
        self._last = free
        return free


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident() -> int:
    """The process's own resident bytes, not file pages it shares (0 where
    /proc can't tell)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            fields = statm.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def heap_trimmer(reactor, every: float = 5.0) -> ThreadedChore | None:
    """A chore that trims the heap when much of it is free; None off glibc."""
    trimmer = HeapTrimmer()
    if not trimmer.available:
        return None
    return ThreadedChore(reactor, trimmer.trim_if_worth_it, every, "heap trim")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _glibc():
    """glibc's malloc_trim and mallinfo2 (2.33+), or None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


class CollectorPace(Service):
    """Python's garbage collector, paced for a server that holds many
    long-lived connections.

    A full collection walks every tracked object, every connection's
    among them, and by default one may come after ten collections of the
    middle generation once the old one grew by a quarter: while
    thousands log in, that is a walk over all of them every few thousand
    logins (6 to 9 in a storm of 19,900, a seventh of the server's time
    there). After ``full_after`` middle collections instead, a storm
    gets none; cycles that outlive the younger collections are freed a
    little later. Set while running, put back on stop.
    """

    def __init__(self, full_after: int = 100) -> None:
        self.full_after = full_after
        self._before: tuple[int, int, int] | None = None

    def startService(self) -> None:
        super().startService()
        self._before = gc.get_threshold()
        young, middle, _ = self._before
        gc.set_threshold(young, middle, self.full_after)

    def stopService(self) -> None:
        if self._before is not None:
            gc.set_threshold(*self._before)
            self._before = None
        return super().stopService()


class GracefulExit(Service):
    """SIGTERM and SIGINT stop the reactor like a normal stop.

    Twisted's own handlers make the process re-raise the signal after
    shutdown, so its exit status says "killed"; a chat server that said BYE
    to everyone and flushed its store has exited cleanly, and says 0.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        # The reactor installs its own handlers as it starts; replace them after.
        self.reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)

    def _stop(self, signum: int, frame) -> None:
        """Stop once; a second signal while the BYEs go out and the store is
        flushed changes nothing (it used to reach Twisted's own handler, which
        logged a critical ReactorNotRunning)."""
        name = signal.Signals(signum).name
        if self._stopping:
            log.info("received {name} again: already shutting down", name=name)
            return
        self._stopping = True
        log.info("received {name}, shutting down", name=name)
        self.reactor.callFromThread(self.reactor.stop)
