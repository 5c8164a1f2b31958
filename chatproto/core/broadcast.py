"""The ordered broadcast: one batch per reactor turn, stored, then written.

Every broadcast of a turn, chat and presence alike, in every room, goes into
one batch. At the end of the turn (or when something must not overtake it)
the batch's messages go to the event log in one append; once the log has
numbered and stored them, each item is encoded once per protocol version
and framed once per wire, and the recipients that share a view (the same
channels, wire and version: every member of a room, usually) get one bytes
object in one write. Batches are delivered in the order they were flushed,
however the log's Deferreds fire, and each recipient gets its channels'
items in batch order, so server-wide items (PENDING) keep their place among
each room's. A sender's copy of its own item carries its ``ref``; a
connection added to a channel during a batch starts at its own place in it.
A big room's JOINED and LEFT (docs/protocol.md 22) are left out of what
lazy version 2 wires share and put in their followers' own copies.

A *channel* is a room's key, or :data:`SERVER` for what every logged-in
session gets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.eventlog import REACT, UNREACT, Change, Draft, EventLog, Outcome, Unchanged
from chatproto.codec import Message, PacketType, ProtocolError
from chatproto.core.connection import Connection, Wire
from chatproto.core.records import Record
from chatproto.metrics import Counters

log = Logger()

#: The channel of server-wide broadcasts; no room's key is empty.
SERVER = ""

#: With this many sessions logged in, a batch of presence alone (no chat)
#: waits for more: a login storm then writes to every member once per
#: interval, not once per turn. The wait is PRESENCE_DELAY per session, up
#: to PRESENCE_MAX, because each flush writes to every member. A chat message
#: flushes at the end of its turn as always, presence before it included.
COALESCE_AT = 100
PRESENCE_DELAY = 0.00005
PRESENCE_MAX = 0.25


class Said:
    """A message or a change in a batch: a draft until the log answers."""

    __slots__ = (
        "_v1",
        "_v2",
        "channel",
        "draft",
        "json",
        "message",
        "name",
        "outcome",
        "ref",
        "sender",
        "v1json",
    )

    def __init__(self, draft: Draft | Change, name: str, sender: Connection | None, ref: str | None) -> None:
        self.draft = draft
        self.channel = draft.room
        self.name = name  # the room's name, as version 2 carries it
        self.sender = sender
        self.ref = ref
        self.json = ""  # the Message object, once stored
        self.v1json: str | None = None  # as version 1 sees it (None: not at all)
        self.message: Message | None = None
        self.outcome: Outcome | None = None  # what the log answered
        self._v1: bytes | None = None
        self._v2: bytes | None = None

    def settle(self, outcome: Outcome, files_url: str = "") -> None:
        """The log's answer: a stored message (or a change's message in its
        present state) is encoded for every version (a version 1 session
        sees its files as links under ``files_url``); a refused or
        unchanged item is nobody's but its sender's (:meth:`own`)."""
        self.outcome = outcome
        if type(outcome) is not Message:
            return
        self.message = outcome
        self.json = codec.message_json(outcome)
        if type(self.draft) is Draft:
            self.v1json = self.json if outcome.plain else codec.v1_message_json(outcome, files_url)

    def _packet(self, version: int, ref: str | None) -> bytes | None:
        if not self.json:
            return None
        draft = self.draft
        if type(draft) is not Draft:
            if version == 1:
                return None
            assert isinstance(draft, Change)
            return codec.encode_json(PacketType.CHANGED, changed_json(self.name, draft, self.json, ref))
        if version == 1:
            if self.v1json is None:
                return None
            return codec.encode_json(PacketType.MESSAGE, codec.with_ref(self.v1json, ref))
        return codec.encode_json(
            PacketType.MESSAGE, codec.with_room(codec.with_ref(self.json, ref), self.name)
        )

    def payload(self, version: int) -> bytes | None:
        """MESSAGE (or CHANGED) for ``version``, encoded once; None if the
        log refused it or the version doesn't see it."""
        if version == 1:
            if self._v1 is None:
                self._v1 = self._packet(1, None)
            return self._v1
        if self._v2 is None:
            if self.json and type(self.draft) is Draft:  # the usual message
                self._v2 = codec.encode_json(PacketType.MESSAGE, codec.with_room(self.json, self.name))
            else:
                self._v2 = self._packet(2, None)
        return self._v2

    @property
    def private(self) -> bool:
        """Refused, or a change that changed nothing: for its sender alone."""
        return self.outcome is not None and type(self.outcome) is not Message

    def own(self, version: int) -> bytes | None:
        """The sender's copy, with its ref; a private item's answer, ref or not."""
        outcome = self.outcome
        if isinstance(outcome, ProtocolError):
            return codec.encode(codec.Error(outcome.code, outcome.message, self.ref))
        if isinstance(outcome, Unchanged) and isinstance(self.draft, Change):
            body = changed_json(self.name, self.draft, codec.message_json(outcome.message), self.ref)
            return codec.encode_json(PacketType.CHANGED, body)
        if self.ref is None:
            return None
        return self._packet(version, self.ref)


def changed_json(room: str, change: Change, message_json: str, ref: str | None = None) -> str:
    """CHANGED's body (docs/protocol.md 19.1) around a message's JSON."""
    kind = REACT if change.kind == UNREACT else change.kind
    by = codec.dumps(change.by)
    text = f'{{"room":{codec.dumps(room)},"kind":"{kind}","by":{by},"message":{message_json}}}'
    if kind == REACT:
        on = "true" if change.kind == REACT else "false"
        text = f'{text[:-1]},"emoji":{codec.dumps(change.emoji)},"on":{on}}}'
    return codec.with_ref(text, ref)


class Event:
    """A presence item: its payload for each protocol version (None: not
    sent to that version), and optionally the sender's own copy (version 2)."""

    __slots__ = ("_own", "_payloads", "channel", "followers", "record", "sender", "skip")

    def __init__(
        self,
        channel: str,
        v1: bytes | None,
        v2: bytes | None,
        sender: Connection | None = None,
        own: bytes | None = None,
        record: Record | None = None,
        skip: frozenset[int] | None = None,
        followers: frozenset[Connection] | None = None,
    ) -> None:
        self.channel = channel
        self._payloads = (None, v1, v2)
        self.sender = sender
        self._own = own
        self.record = record  # what other nodes learn of it (None: nothing)
        # Sessions (by id) of the channel that don't get it: they had it in
        # another channel already (a RENAMED goes once to each sharer).
        self.skip = skip
        # A big room's JOINED or LEFT: on a lazy wire, version 2 connections
        # get it only if they are among these (None: everyone gets it).
        self.followers = followers

    def payload(self, version: int) -> bytes | None:
        return self._payloads[version]

    def own(self, version: int) -> bytes | None:
        return self._own if version == 2 else None


#: What a batch holds.
Item = Event | Said


class Flushed:
    """A batch on its way: waiting for the log, then delivered."""

    __slots__ = ("after", "batch", "lazy", "outcome", "owned", "said", "skips", "starts")

    def __init__(self, batch: list[Item], starts: dict[tuple[str, Connection], int]) -> None:
        self.batch = batch
        self.starts = starts
        self.said = [item for item in batch if type(item) is Said]
        # whether any sender gets a copy of its own (with its ref)
        self.owned = any((item.ref if isinstance(item, Said) else item._own) is not None for item in batch)
        # whether some recipient of a channel is left out of an item (Event.skip)
        self.skips = len(self.said) < len(batch) and any(type(item) is Event and item.skip for item in batch)
        # whether some item is a big room's presence, for its followers alone on lazy wires
        self.lazy = len(self.said) < len(batch) and any(
            type(item) is Event and item.followers is not None for item in batch
        )
        self.outcome: list[Outcome] | Failure | None = None if self.said else []
        self.after: list[Callable[[], None]] = []


class Order(Protocol):
    """The other nodes' share of the order (:class:`chatproto.core.peers.Peers`)."""

    def append(self, flushed: Flushed) -> Deferred[list[Outcome]] | None: ...

    def delivered(self, flushed: Flushed) -> None: ...


#: A channel's recipients: (wire, protocol version) -> session id -> connection.
Recipients = dict[tuple[Wire, int], dict[int, Connection]]


class Broadcast:
    """Recipients by channel; items are :class:`Event` or :class:`Said`."""

    def __init__(
        self,
        clock: IReactorTime,
        eventlog: EventLog,
        order: Order,
        stored: Callable[[list[Said]], None],
        refused: Callable[[list[Said], Failure], None],
        delivered: Callable[[], None],
        counters: Counters | None = None,
        files_url: str = "",
    ) -> None:
        self.clock = clock
        self.counters = counters if counters is not None else Counters()
        self.files_url = files_url  # where version 1 is sent for a message's files
        self.eventlog = eventlog
        self.order = order  # the other nodes' shared order (a single server's takes nothing)
        self._stored = stored
        self._refused = refused
        self._delivered = delivered
        self._channels: dict[str, Recipients] = {}
        self._batch: list[Event | Said] = []
        self._starts: dict[tuple[str, Connection], int] = {}
        self._flush_call: IDelayedCall | None = None
        self._flush_waits = False  # the flush waits for more presence: presence only
        self._queue: deque[Flushed] = deque()
        self._delivering = False

    # -- recipients -----------------------------------------------------------

    def add(self, channel: str, key: int, connection: Connection, version: int) -> None:
        """From this point of the order on, ``connection`` receives the
        channel: of the batches already under way, only their messages (its
        WELCOME or ROOM already reflects their presence events, but not their
        unstored messages)."""
        self._channels.setdefault(channel, {}).setdefault((connection.wire, version), {})[key] = connection
        for flushed in self._queue:
            flushed.starts[channel, connection] = len(flushed.batch)
        if self._batch:
            self._starts[channel, connection] = len(self._batch)

    def remove(self, channel: str, key: int, connection: Connection) -> None:
        recipients = self._channels.get(channel)
        if recipients is None:
            return
        for wire, group in list(recipients.items()):
            if group.get(key) is connection:
                del group[key]
                if not group:
                    del recipients[wire]  # every later delivery would walk it
        self._starts.pop((channel, connection), None)
        if not recipients:
            del self._channels[channel]

    def rewire(self, channels: list[str], key: int, connection: Connection, wire: Wire) -> None:
        """``connection`` now reads ``wire`` (an IRC client changed its
        capabilities after login): in each of ``channels`` it moves to that
        wire's group, keeping its place in the order."""
        for channel in channels:
            recipients = self._channels.get(channel)
            if recipients is None:
                continue
            for (old, version), group in list(recipients.items()):
                if old is not wire and group.get(key) is connection:
                    del group[key]
                    if not group:
                        del recipients[old, version]  # every later delivery would walk it
                    recipients.setdefault((wire, version), {})[key] = connection

    def recipients(self, channel: str = SERVER) -> list[int]:
        return [key for group in self._channels.get(channel, {}).values() for key in group]

    def clear(self) -> None:
        self._channels.clear()
        self._starts.clear()

    # -- items ------------------------------------------------------------------

    def event(self, event: Event) -> None:
        """A presence item, in order with its channel's messages."""
        self._append(event)

    def message(self, draft: Draft | Change, name: str, sender: Connection | None, ref: str | None) -> None:
        self._append(Said(draft, name, sender, ref))

    def _append(self, item: Event | Said) -> None:
        self._batch.append(item)
        if type(item) is Said:
            wait = 0.0
        elif self._flush_call is None:
            wait = self._presence_wait()
        else:
            return  # presence joins the flush already due
        if wait == 0 and (self._flush_call is None or self._flush_waits):
            self._schedule(0)
        elif wait and self._flush_call is None:
            self._schedule(wait)

    def _presence_wait(self) -> float:
        """How long presence alone waits for more: none below COALESCE_AT
        sessions, then longer the more members every flush writes to."""
        sessions = self.sessions()
        if sessions < COALESCE_AT:
            return 0.0
        return min(PRESENCE_MAX, PRESENCE_DELAY * sessions)

    def sessions(self) -> int:
        return sum(len(group) for group in self._channels.get(SERVER, {}).values())

    def _schedule(self, delay: float) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = self.clock.callLater(delay, self.flush)
        self._flush_waits = delay > 0

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
        flushed = Flushed(self._batch, self._starts)
        self._batch, self._starts = [], {}
        self._queue.append(flushed)
        started = perf_counter()
        shared = self.order.append(flushed)
        if shared is not None:
            shared.addBoth(self._settled, flushed, started)
            return
        if flushed.said:
            self.counters.batch.observe(len(flushed.said))
            d = self.eventlog.append([item.draft for item in flushed.said])
            d.addBoth(self._settled, flushed, started)
        else:
            self.deliver_ready()

    def _settled(self, outcome: list[Outcome] | Failure, flushed: Flushed, started: float) -> None:
        self.counters.store["append"].observe(perf_counter() - started)
        flushed.outcome = outcome
        self.deliver_ready()

    def deliver_ready(self) -> None:
        """Deliver, in order, the batches the log or the other nodes' order
        has answered for."""
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
                self.order.delivered(flushed)
        finally:
            self._delivering = False

    def deliver_now(self, items: list[Item], messages: list[Outcome]) -> None:
        """Items another server put in the order (a cluster's), already
        stored: to the channels' recipients now, as one batch."""
        if not items:
            return
        flushed = Flushed(items, {})
        flushed.outcome = messages
        try:
            self._deliver(flushed)
        except Exception:
            log.failure("broadcast delivery failed")

    def _deliver(self, flushed: Flushed) -> None:
        counters = self.counters
        if isinstance(flushed.outcome, Failure):
            counters.store_errors += 1
            self._refused(flushed.said, flushed.outcome)  # their payloads stay None
        elif flushed.outcome is not None:
            for item, outcome in zip(flushed.said, flushed.outcome, strict=True):
                if type(outcome) is Message and type(item.draft) is Draft and outcome.plain:
                    # Said.settle, inlined for the usual message
                    item.outcome = item.message = outcome
                    item.json = item.v1json = codec.message_json(outcome)
                else:
                    item.settle(outcome, self.files_url)
                    if item.private:
                        flushed.owned = True
            counters.messages += len(flushed.said)
            self._stored(flushed.said)
        by_channel: dict[str, list[int]] = {}
        for index, entry in enumerate(flushed.batch):
            indexes = by_channel.get(entry.channel)
            if indexes is None:
                by_channel[entry.channel] = [index]
            else:
                indexes.append(index)
        if len(by_channel) == 1:  # the usual batch: one room's (or only PENDING)
            ((channel, indexes),) = by_channel.items()
            for (wire, version), group in self._channels.get(channel, {}).items():
                if group:
                    cache: dict[int, bytes] = {}
                    reach = _reach(wire, version, indexes, flushed, cache)
                    if reach is None:
                        self._deliver_view(wire, version, list(group.values()), indexes, flushed, cache)
                    elif reach:
                        self._deliver_view(wire, version, _within(reach, group), indexes, flushed, cache)
                    if type(flushed.outcome) is list:  # the messages stored, each to every member
                        counters.deliveries += len(group) * len(flushed.outcome)
        else:
            self._deliver_views(by_channel, flushed)
        self._delivered()

    def _deliver_views(self, by_channel: dict[str, list[int]], flushed: Flushed) -> None:
        """A batch of several channels: the recipients in the same channels
        (on the same wire, speaking the same version) see the same items, so
        each such view is built once, and each recipient gets one write."""
        views: dict[Connection, list[Any]] = {}  # connection -> [wire, version, channel, ...]
        framed: dict[tuple[Wire, int], dict[int, bytes]] = {}  # items framed once per wire and version
        for channel, indexes in by_channel.items():
            for (wire, version), group in self._channels.get(channel, {}).items():
                reach = _reach(wire, version, indexes, flushed, framed.setdefault((wire, version), {}))
                for connection in group.values() if reach is None else _within(reach, group):
                    view = views.get(connection)
                    if view is None:
                        views[connection] = [wire, version, channel]
                    else:
                        view.append(channel)
        buckets: dict[tuple[Any, ...], list[Connection]] = {}
        for connection, view in views.items():
            key = tuple(view)
            bucket = buckets.get(key)
            if bucket is None:
                buckets[key] = [connection]
            else:
                bucket.append(connection)
        for (wire, version, *channels), connections in buckets.items():
            if len(channels) == 1:
                indexes = by_channel[channels[0]]
            else:  # in batch order: server-wide items keep their place among the room's
                indexes = sorted(i for channel in channels for i in by_channel[channel])
            cache = framed.setdefault((wire, version), {})
            self._deliver_view(wire, version, connections, indexes, flushed, cache)
            if flushed.said and type(flushed.outcome) is list:
                said = sum(1 for index in indexes if type(flushed.batch[index]) is Said)
                self.counters.deliveries += said * len(connections)

    def _deliver_view(
        self,
        wire: Wire,
        version: int,
        connections: list[Connection],
        indexes: list[int],
        flushed: Flushed,
        cache: dict[int, bytes],
    ) -> None:
        """Items ``indexes`` of the batch to ``connections``: one bytes object
        for all of them but senders (their own items carry the ref) and
        those added mid-batch."""
        batch = flushed.batch
        frames, hidden = _framed(wire, version, indexes, flushed, cache)
        if not frames:
            return
        if hidden:
            shared = b"".join(frame for i, frame in frames.items() if i not in hidden)
            followed = any(batch[i].followers for i in hidden)  # type: ignore[union-attr]
        else:
            shared = b"".join(frames.values())
            followed = False
        special = None
        if flushed.owned or flushed.starts or flushed.skips or followed:
            special = _special_copies(wire, version, connections, batch, frames, flushed.starts, hidden)
        # Delivery never changes the recipients: an overflow is only noted
        # (Logins.overflowed) and handled once the loop is over.
        if special:
            for connection in connections:
                data = special.get(connection, shared)
                if data:
                    connection.outbox.deliver(data)
        elif shared:
            for connection in connections:
                connection.outbox.deliver(shared)


def _silent(version: int, indexes: list[int], batch: list[Item]) -> bool:
    """Whether items ``indexes`` are all presence that ``version`` does not
    see (a login's PENDING, which version 2 hears of only if it lasts)."""
    for index in indexes:
        item = batch[index]
        if type(item) is not Event or item.payload(version) is not None:
            return False
    return True


def _hides(flushed: Flushed, wire: Wire, version: int) -> bool:
    """Whether some item of the batch is a big room's presence that
    ``wire``/``version`` gives its followers alone."""
    return flushed.lazy and version >= 2 and wire.lazy


def _framed(
    wire: Wire, version: int, indexes: list[int], flushed: Flushed, cache: dict[int, bytes]
) -> tuple[dict[int, bytes], set[int]]:
    """Items ``indexes`` of the batch as ``wire`` frames them for
    ``version`` (framed once, in ``cache``), and which of them are a big
    room's presence, for its followers alone."""
    batch = flushed.batch
    frames = {}
    for index in indexes:
        frame = cache.get(index)
        if frame is None:
            payload = batch[index].payload(version)
            frame = cache[index] = wire.frame(payload) if payload is not None else b""
        if frame:
            frames[index] = frame
        elif type(batch[index]) is Said and batch[index].private:  # type: ignore[union-attr]
            frames[index] = b""  # its sender's alone, in its place (_special_copies)
    hidden: set[int] = set()
    if _hides(flushed, wire, version):
        hidden = {i for i in frames if type(batch[i]) is Event and batch[i].followers is not None}  # type: ignore[union-attr]
    return frames, hidden


def _reach(
    wire: Wire, version: int, indexes: list[int], flushed: Flushed, cache: dict[int, bytes]
) -> set[Connection] | None:
    """Who of a channel's ``wire``/``version`` recipients gets anything of
    items ``indexes``: None for everyone; else only the followers of a big
    room's hidden presence and the senders (their own copies), so that a
    batch nobody else hears of costs nothing per member (nor one that
    ``version`` does not see at all: nobody)."""
    if _silent(version, indexes, flushed.batch):
        return set()
    if not _hides(flushed, wire, version):
        return None  # the usual batch: framed once, by _deliver_view
    frames, hidden = _framed(wire, version, indexes, flushed, cache)
    if len(hidden) < len(frames):
        return None
    batch = flushed.batch
    reach: set[Connection] = set()
    for index in frames:
        reach.update(batch[index].followers or ())  # type: ignore[union-attr]
    for index in indexes:
        sender = batch[index].sender
        if sender is not None:
            reach.add(sender)
    return reach


def _within(reach: set[Connection], group: dict[int, Connection]) -> list[Connection]:
    """Those of ``reach`` who are in ``group`` (keyed by connection id)."""
    return [connection for connection in reach if group.get(connection.id) is connection]


def _special_copies(
    wire: Wire,
    version: int,
    connections: list[Connection],
    batch: list[Item],
    frames: dict[int, bytes],
    starts: dict[tuple[str, Connection], int],
    hidden: set[int],
) -> dict[Connection, bytes]:
    """The view as seen by those who don't get the shared copy: senders
    (their own items carry the ref), those an item skips, followers of a
    member whose JOINED or LEFT is ``hidden`` from the shared copy, and
    those added mid-batch.

    A mid-batch joiner's WELCOME or ROOM reflects the presence events before
    its start in that channel but its history stops at the last delivery,
    so it gets the batch's earlier messages and everything from its start on.

    Each special recipient is kept as its differences from what everyone
    gets: a storm's batch holds thousands of hidden items and hundreds of
    mid-batch joiners, and a copy of the batch for each would cost their
    product."""
    members = set(connections)
    shown = {i: frame for i, frame in frames.items() if frame and i not in hidden}
    diffs: dict[Connection, dict[int, bytes]] = {}
    for index in frames:
        item = batch[index]
        sender = item.sender
        if sender is None or sender not in members:
            continue
        own = item.own(version)
        if own is not None:
            diffs.setdefault(sender, {})[index] = wire.frame(own)
    for index in frames:
        item = batch[index]
        skip = item.skip if type(item) is Event else None
        if not skip:
            continue
        for connection in connections:
            session = connection.session
            if session is not None and session.id in skip:
                diffs.setdefault(connection, {})[index] = b""
    for index in hidden:
        for connection in batch[index].followers or ():  # type: ignore[union-attr]
            if connection in members:
                diffs.setdefault(connection, {})[index] = frames[index]
    for _, connection in starts:
        if connection in members:
            diffs.setdefault(connection, {})

    def view(diff: dict[int, bytes], connection: Connection) -> bytes:
        if not diff:
            entries = shown
        elif all(i in shown for i in diff):
            entries = {**shown, **diff}  # in batch order still
        else:
            merged = {**shown, **diff}
            entries = {i: merged[i] for i in sorted(merged)}
        return b"".join(
            frame
            for i, frame in entries.items()
            if frame and (type(batch[i]) is Said or i >= starts.get((batch[i].channel, connection), 0))
        )

    return {connection: view(diff, connection) for connection, diff in diffs.items()}
