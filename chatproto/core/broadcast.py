"""The ordered broadcast: one batch per reactor turn, stored, then written.

Every broadcast of a turn, chat and presence alike, goes into one batch. At
the end of the turn (or when something must not overtake it) the batch's
messages go to the event log in one append; once the log has numbered and
stored them, the batch is framed once per wire and the same bytes object is
written to every recipient on that wire. Batches are delivered in the order
they were flushed, however the log's Deferreds fire. A sender's copy of its
own message carries its ``ref``; a connection added during a batch starts at
its own place in it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.eventlog import Draft, EventLog
from chatproto.codec import Message, PacketType
from chatproto.core.connection import Connection, Wire

log = Logger()


class Said:
    """A message in a batch: a draft until the log numbers it."""

    __slots__ = ("draft", "json", "ref", "sender")

    def __init__(self, draft: Draft, sender: Connection, ref: str | None) -> None:
        self.draft = draft
        self.sender = sender
        self.ref = ref
        self.json = ""  # the MESSAGE body, once stored


class _Flushed:
    """A batch on its way: waiting for the log, then delivered."""

    __slots__ = ("after", "batch", "outcome", "said", "starts")

    def __init__(self, batch: list, starts: dict[Connection, int]) -> None:
        self.batch = batch
        self.starts = starts
        self.said = [item for item in batch if type(item) is Said]
        self.outcome: list[Message] | Failure | None = None if self.said else []
        self.after: list[Callable[[], None]] = []


class Broadcast:
    """Recipients keyed by session id; items are payloads (type byte + JSON)
    or :class:`Said` messages for the log."""

    def __init__(
        self,
        clock: IReactorTime,
        eventlog: EventLog,
        stored: Callable[[list[tuple[Message, str]]], None],
        refused: Callable[[list[Said], Failure], None],
        delivered: Callable[[], None],
    ) -> None:
        self.clock = clock
        self.eventlog = eventlog
        self._stored = stored
        self._refused = refused
        self._delivered = delivered
        self._wires: dict[Wire, dict[int, Connection]] = {}
        self._batch: list[bytes | Said] = []
        self._starts: dict[Connection, int] = {}
        self._flush_call: IDelayedCall | None = None
        self._queue: deque[_Flushed] = deque()
        self._delivering = False

    # -- recipients -----------------------------------------------------------

    def add(self, key: int, connection: Connection) -> None:
        """From this point of the order on, ``connection`` receives: of the
        batches already under way, only their messages (its WELCOME already
        reflects their presence events, but not their unstored messages)."""
        self._wires.setdefault(connection.wire, {})[key] = connection
        for flushed in self._queue:
            flushed.starts[connection] = len(flushed.batch)
        if self._batch:
            self._starts[connection] = len(self._batch)

    def remove(self, key: int, connection: Connection) -> None:
        recipients = self._wires.get(connection.wire)
        if recipients is not None and recipients.get(key) is connection:
            del recipients[key]
        self._starts.pop(connection, None)

    def recipients(self) -> list[int]:
        return [key for recipients in self._wires.values() for key in recipients]

    def clear(self) -> None:
        self._wires.clear()
        self._starts.clear()

    # -- items ------------------------------------------------------------------

    def event(self, packet) -> None:
        """A presence packet, in order with the turn's messages."""
        self._append(codec.encode(packet))

    def message(self, draft: Draft, sender: Connection, ref: str | None) -> None:
        self._append(Said(draft, sender, ref))

    def _append(self, item: bytes | Said) -> None:
        self._batch.append(item)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def after_all(self, call: Callable[[], None]) -> None:
        """Flush, then run ``call`` once everything broadcast so far has been
        delivered: what must not overtake the current turn (a whisper)."""
        self.flush()
        self.after_flushed(call)

    def after_flushed(self, call: Callable[[], None]) -> None:
        """Run ``call`` once every batch flushed so far has been delivered
        (at once with a log that answers at once); the current batch stays
        open, so a connection added by ``call`` starts at its own place in it."""
        if self._queue:
            self._queue[-1].after.append(call)
        else:
            call()

    # -- flushing -------------------------------------------------------------------

    def flush(self) -> None:
        """Send the current batch to the log; deliver whatever is ready."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._batch:
            return
        flushed = _Flushed(self._batch, self._starts)
        self._batch, self._starts = [], {}
        self._queue.append(flushed)
        if flushed.said:
            d = self.eventlog.append([item.draft for item in flushed.said])
            d.addBoth(self._settled, flushed)
        else:
            self._deliver_ready()

    def _settled(self, outcome, flushed: _Flushed) -> None:
        flushed.outcome = outcome
        self._deliver_ready()

    def _deliver_ready(self) -> None:
        if self._delivering:
            return  # a call made during delivery flushed: the loop below takes it
        self._delivering = True
        try:
            while self._queue and self._queue[0].outcome is not None:
                flushed = self._queue.popleft()
                try:
                    self._deliver(flushed)
                except Exception:
                    log.failure("broadcast delivery failed")
                for call in flushed.after:
                    call()
        finally:
            self._delivering = False

    def _deliver(self, flushed: _Flushed) -> None:
        batch = flushed.batch
        if isinstance(flushed.outcome, Failure):
            self._refused(flushed.said, flushed.outcome)
            payloads = [b"" if type(item) is Said else item for item in batch]  # positions hold
        else:
            payloads = self._message_payloads(batch, flushed.said, flushed.outcome)
        for wire, recipients in self._wires.items():
            frames = [wire.frame(p) if p else b"" for p in payloads]
            shared = b"".join(frames)
            special = self._special_copies(wire, batch, frames, flushed.starts)
            # Delivery never changes the recipients: an overflow is only noted
            # (Hub.overflowed) and handled once the loop is over.
            if special:
                for connection in recipients.values():
                    connection.deliver(special.get(connection, shared))
            else:
                for connection in recipients.values():
                    connection.deliver(shared)
        self._delivered()

    def _message_payloads(self, batch: list, said: list[Said], messages: list[Message]) -> list[bytes]:
        stored = []
        for item, message in zip(said, messages, strict=True):
            item.json = codec.message_json(message)
            stored.append((message, item.json))
        self._stored(stored)
        return [
            codec.encode_json(PacketType.MESSAGE, item.json) if type(item) is Said else item for item in batch
        ]

    def _special_copies(self, wire: Wire, batch: list, frames: list[bytes], starts: dict) -> dict:
        """The batch as seen by those who don't get the shared copy: senders
        (their own messages carry the ref) and those added mid-batch.

        A mid-batch joiner's WELCOME reflects the presence events before its
        start but its history stops at the last delivery, so it gets the
        batch's earlier messages and everything from its start on."""
        copies: dict[Connection, list[bytes]] = {}
        for index, item in enumerate(batch):
            if type(item) is Said and item.ref is not None and item.json and item.sender.wire is wire:
                copy = copies.get(item.sender)
                if copy is None:
                    copy = copies[item.sender] = list(frames)
                copy[index] = wire.frame(
                    codec.encode_json(PacketType.MESSAGE, codec.with_ref(item.json, item.ref))
                )

        def view(own: list[bytes], start: int) -> bytes:
            earlier = [own[i] for i in range(min(start, len(own))) if type(batch[i]) is Said]
            return b"".join(earlier + own[start:])

        result = {connection: view(copy, starts.get(connection, 0)) for connection, copy in copies.items()}
        for connection, start in starts.items():
            if connection not in result and connection.wire is wire:
                result[connection] = view(frames, start)
        return result
