"""One connection's outgoing bytes, with backpressure and the sendq limit."""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from twisted.internet import tcp
from twisted.internet.interfaces import IProducer, IPushProducer
from zope.interface import implementer


class Consumer(Protocol):
    """What an outbox uses of its transport: ITransport's writes and close,
    and IConsumer's producer registration (the outbox is its producer)."""

    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: Iterable[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def registerProducer(self, producer: IProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...


#: A read turn's writes are held (Outbox.hold) up to this many, or until
#: one is this big: then what is held goes at once (so at most about
#: HOLD_WRITES × HOLD_BYTES wait uncounted against the sendq).
HOLD_WRITES = 16
HOLD_BYTES = 16384

#: Whose outbox it is, as its ``overflowed`` callback is told.
_Owner = TypeVar("_Owner")


def _socket_of(transport: object) -> socket.socket | None:
    """The socket to try first, for a plain TCP or Unix transport (not TLS,
    which must encrypt): sending at once costs one system call, where a
    buffered write costs Twisted two epoll changes and a reactor dispatch."""
    if isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False):
        return transport.socket
    return None


def _buffered(transport) -> bool:
    """Does the transport still hold bytes? Then new ones must queue behind them."""
    return bool(transport._tempDataLen or len(transport.dataBuffer) > transport.offset)


@implementer(IPushProducer)
class Outbox(Generic[_Owner]):
    """Writes straight to the transport while the peer keeps up.

    When the transport's buffer fills it pauses us (Twisted's producer API);
    from then on we queue references to the broadcast bytes, which every
    recipient shares, instead of letting the transport copy them into a
    private buffer. Once more than ``sendq`` bytes wait, ``overflowed(owner)``
    is called once and everything queued is dropped: a slow reader costs the
    room one list append per batch, never an unbounded buffer. (One callback
    shared by every outbox, told whose it is, costs no object per connection.)
    """

    __slots__ = (
        "_ended",
        "_held",
        "_overflowed",
        "_owner",
        "_paused",
        "_queue",
        "_queued",
        "_socket",
        "closed",
        "sendq",
        "transport",
    )

    def __init__(
        self, transport: Consumer, sendq: int, overflowed: Callable[[_Owner], None], owner: _Owner
    ) -> None:
        self.transport = transport
        self.sendq = sendq
        self._overflowed = overflowed
        self._owner = owner
        self._queue: deque[bytes] | None = None  # made when first needed: most peers keep up
        self._queued = 0
        self._paused = False
        self.closed = False
        self._ended = False
        self._held: list[bytes] | None = None  # a read turn's writes, sent together (hold)
        self._socket = _socket_of(transport)
        transport.registerProducer(self, True)

    @property
    def backlog(self) -> int:
        """Bytes waiting here (not counting the transport's own buffer)."""
        return self._queued

    def hold(self) -> bool:
        """Keep what is written until :meth:`release`: the answers to the
        requests of one read (a pipelined LOGIN, JOIN and FOLLOW) go in one
        system call, not one each. False if already holding."""
        if self._held is not None:
            return False
        self._held = []
        return True

    def release(self) -> None:
        """Send what was held, as one write, and stop holding."""
        held, self._held = self._held, None
        if held:
            self.write(held[0] if len(held) == 1 else b"".join(held))

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        held = self._held
        if held is not None:
            held.append(data)
            if len(held) >= HOLD_WRITES or len(data) >= HOLD_BYTES:  # a big answer: no reason to wait
                self.release()
                self._held = []
            return
        if not self._paused:
            if self._socket is not None and not _buffered(self.transport):
                try:
                    sent = self._socket.send(data)
                except OSError:
                    sent = 0  # full, or broken: Twisted's write finds out and reports it
                if sent == len(data):
                    return
                data = data[sent:]
            self.transport.write(data)
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(data)
        self._queued += len(data)
        if self._queued > self.sendq:
            self.closed = True
            self._drop_queue()
            self._overflowed(self._owner)

    #: What the core delivers (Connection.outbox): bytes framed for the
    #: wire, often shared by every recipient. The write itself, here, bound
    #: as the class is made: a subclass that overrides ``write`` says what
    #: its ``deliver`` is too.
    deliver = write

    def close(self, final: bytes | None = None, *, flush: bool = True) -> None:
        """Stop producing and end the connection after what is queued (if
        ``flush``) and ``final``; further writes are ignored. Idempotent."""
        if self._ended:
            return
        self.release()  # what was held goes as it would have gone unheld
        self._ended = True
        if not flush:
            self._drop_queue()
        pending = list(self._queue or ())
        self._drop_queue()
        if final is not None:
            pending.append(final)
        self.closed = True
        if pending:
            self.transport.writeSequence(pending)
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _drop_queue(self) -> None:
        self._queue = None
        self._queued = 0

    # IPushProducer: called by the transport.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        # Hand over one chunk at a time until the transport pauses us again,
        # so its buffer never holds more than about one chunk past its limit
        # (a chunk: one write, or a read turn's held writes, HOLD_WRITES at most).
        while self._queue and not self._paused and not self.closed:
            data = self._queue.popleft()
            self._queued -= len(data)
            self.transport.write(data)

    def stopProducing(self) -> None:
        self.closed = True
        self._drop_queue()
