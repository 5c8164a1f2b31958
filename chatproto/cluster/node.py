"""One node of a cluster: the rooms shared with other nodes through a
shared ordered store (:mod:`chatproto.backends.streams`).

Local actions change the node's state at once, as on a single server, and
their broadcasts go to the room's stream; what members see is delivered in
stream order only. A local batch is written once its entries have come back
through the node's reader (so the store has them: the sender's echo is its
acknowledgement), and another node's entries are applied (a member joins,
leaves, a topic changes, a message is said) and delivered as they are read,
but never ahead of this node's own entries that precede them in their room.

Ids are the node's number times 2**32 plus a local count, so they are unique
in the cluster. A nick is claimed in the store while the node's heartbeat
lives; a node whose heartbeat expires is reaped by one survivor, which
announces its members' leaves (``connection_lost``) once.
"""

from __future__ import annotations

import hmac
import json
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.accounts import AccountStore
from chatproto.backends.changes import apply_change
from chatproto.backends.eventlog import Change, Draft, Outcome, StoreError, Topic, Unchanged
from chatproto.backends.redis import Commands, RedisClient
from chatproto.backends.redis_cluster import ClusterClient
from chatproto.backends.replicas import Replicas
from chatproto.backends.shards import ShardedReader, ShardSubscriber
from chatproto.backends.streams import (
    Appended,
    Entry,
    FileRoom,
    Snapshot,
    StreamReader,
    StreamStore,
    unescape,
)
from chatproto.cluster.log import (
    ClusterLog,
    carried_quote,
    compact,
    found_message,
    quote_from,
    stream_message,
)
from chatproto.cluster.questions import Questions
from chatproto.cluster.relays import Relays
from chatproto.codec import ErrorCode, Message, ProtocolError, Quote
from chatproto.core import records
from chatproto.core.broadcast import Event, Flushed, Item, Said
from chatproto.core.connection import Connection, Session, token_text
from chatproto.core.peers import HeldElsewhere, Inbound, Resumed, Seat, SharedRoom
from chatproto.core.registry import Listing
from chatproto.core.rooms import ChatRoom, Directory, RoomRules, kept_rules, load_rules
from chatproto.rules import is_direct, room_key

log = Logger()

#: Ids: a node's number in the high bits, its own count in the low ones
#: (JavaScript's exact integers reach 2**53: two million node starts).
ID_BITS = 32


#: What a batch's item will be answered with: already known (a refusal, a
#: change that changes nothing), or (room, its entry's place among the
#: room's entries, how its outcome is made from the seq or rev the store gives).
Slot = Outcome | tuple[str, int, Callable[[int], Outcome]]

#: The inbox note that brings a participant's session into a direct
#: conversation opened (or said in) on another node.
OPENED = "open"

#: An account's login on one node while its session is on another: how
#: long the holding node waits for one of the session's devices to answer a
#: PING (one that does is in use, and the login gets nick_taken), and how
#: long the login waits for the holding node's answer.
PROBE = 1.5
HANDOVER_PATIENCE = PROBE + 1.5

#: How often a batch of changes is decided again when the messages it was
#: decided on changed meanwhile (another node changed them first).
MAX_TRIES = 50


class _Pending:
    """A batch of ours on its way through the streams: answered for once the
    store has numbered its messages, applied its changes, and its entries
    have come back."""

    __slots__ = (
        "decide",
        "done",
        "flushed",
        "items",
        "number",
        "outcomes",
        "remaining",
        "settled",
        "slots",
        "unread",
        "written",
    )

    def __init__(self, flushed: Flushed, number: int, items: list[Item], decide: bool) -> None:
        self.flushed = flushed
        self.number = number
        self.items = items  # those that go to the rooms' streams
        self.decide = decide  # holds changes or replies: decided on the messages as read
        self.remaining = 0  # entries not read back yet
        self.unread: dict[str, int] = {}  # of those, each room's
        self.outcomes: list[Outcome] | None = None  # once the store answered
        self.done: Deferred[list[Outcome]] = Deferred()
        # A batch over rooms of several shards is written room by room: a
        # room whose change must be decided again does not hold back the
        # others, nor write them twice.
        self.written: set[str] = set()  # rooms answered for (written, or refused)
        self.settled: dict[int, Outcome] = {}  # the outcomes of their messages, by slot
        self.slots: list[Slot] = []  # as last planned

    def read_back(self, room: str, count: int = 1) -> bool:
        """``count`` of its entries in ``room`` came back (or never will):
        whether it has them all now. A room given up on (its part refused)
        counts no more: its entries may still come."""
        count = min(count, self.unread.get(room, 0))
        if count <= 0:
            return False
        self.remaining -= count
        self.unread[room] -= count
        return self.remaining == 0

    def settle(self) -> None:
        if not self.remaining and self.outcomes is not None and not self.done.called:
            self.done.callback(self.outcomes)


def _in_order(item: Item) -> bool:
    """Does a batch item go to its room's stream? Messages, changes and room
    presence do; server-wide items (PENDING) stay on their node, and typing
    is published, never stored."""
    return isinstance(item, Said) or (
        item.record is not None and not isinstance(item.record, records.TypingSent)
    )


def _decided(item: Item) -> bool:
    """Is the item decided on a stored message (a change, a reply)?"""
    return isinstance(item, Said) and (type(item.draft) is not Draft or item.draft.reply is not None)


def draft_data(d: Draft, quote: Quote | None = None) -> str:
    """A message's data in its entry: what :func:`codec.draft_json` has, its
    author, and for a reply the seq it answers first (the scripts look for
    it there) and the quote last (the scripts cut it off there)."""
    text = codec.draft_json(d)
    if d.reply is not None:
        text = f'{{"reply":{d.reply},{text[1:]}'
    extra = ""
    if d.author is not None:
        extra = f',"author":{codec.dumps(d.author)}'
    if quote is not None:
        extra += f',"q":{quote_json(quote)}'
    return f"{text[:-1]}{extra}}}" if extra else text


def quote_json(quote: Quote) -> str:
    body: dict[str, Any] = {"seq": quote.seq}
    if quote.sender is not None:
        body["from"] = quote.sender
    if quote.text is not None:
        body["text"] = quote.text
    if quote.deleted:
        body["deleted"] = True
    return compact(body)


def _stream_id(id: str) -> tuple[int, int]:
    ms, _, n = id.partition("-")
    return int(ms), int(n or 0)


def _token(state: dict[str, Any] | None) -> int:
    """The rev a message was read at (0: never changed): a change decided on
    it is written only if it still has that rev."""
    return int(state.get("rev", 0)) if state else 0


#: A batch's reads: room -> (its seq, seq -> (present state, answered message's state)).
Read = dict[str, tuple[int, dict[int, tuple[dict[str, Any] | None, dict[str, Any] | None]]]]


class ClusterNode:
    """This server's :class:`~chatproto.core.peers.Peers` when it is one
    node of several sharing ``store``."""

    def __init__(
        self,
        store: StreamStore,
        reader_client: Commands,
        clock: IReactorTime,
        eventlog: ClusterLog,
        accounts: AccountStore | None,
        replay: int,
        expiry: float = 10.0,
        reader_replicas: Replicas | None = None,
        relay_silence: float = 120.0,
    ) -> None:
        self.store = store
        self.reader_client = reader_client
        self.reader_replicas = reader_replicas  # what is read is delivered once they have it
        self.clock = clock
        self.eventlog = eventlog
        self.accounts = accounts  # the rules a restart keeps (account operators, bans, modes)
        self.replay = replay
        self.expiry = expiry
        self.node = ""
        self.started: Deferred[str] = Deferred()
        self.inbound: Inbound | None = None  # the core, from start on
        self._waiting: list[Deferred[None]] = []
        self.reader: StreamReader | None = None
        self._batches = 0
        self._pending: dict[int, _Pending] = {}
        self._queue: deque[_Pending] = deque()  # batches not written yet, in order
        self._deciding: _Pending | None = None  # the batch read and decided now: the rest wait
        # Typing and pending connections go to the other nodes on channels,
        # never into the streams: one more connection, subscribed to them.
        channels = (store.typing_channel(), store.pending_channel())
        self.news_client: RedisClient | ShardSubscriber
        if isinstance(store.client, ClusterClient):  # a shard channel's, on the primary of the home slot
            self.news_client = ShardSubscriber(clock, store.client, "chat-news", self.pushed, channels)
        else:
            self.news_client = RedisClient(
                clock, store.client.address, "chat-news", subscribe=channels, on_push=self.pushed
            )
        self._news: list[tuple[int, str, bool]] = []  # our pending connections' news, to publish
        self._stopping = False
        self._known: set[str] = set()  # the live nodes, as the reaper last saw them
        # rooms' parts of batches sent, then refused: their entries may still come
        self._refused: set[tuple[int, str]] = set()
        self._held: dict[str, deque[Entry]] = {}
        self._seen: dict[str, str] = {}  # room -> the last entry read
        self.remotes: dict[int, Session] = {}  # members on other nodes, by id
        self.questions = Questions(store, clock)  # ADMIN sessions, logins' handovers
        self.relays = Relays(store, clock, relay_silence)  # devices of a session on another node
        self._protocols: IProtocolFactory | None = None
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock
        self._reaper = LoopingCall(self._reap)
        self._reaper.clock = clock

    # -- life -------------------------------------------------------------------------

    def start(self, inbound: Inbound, protocols: IProtocolFactory) -> Deferred[str]:
        """Connect, take a node number, start the heartbeat and the reader,
        applying the others' changes to ``inbound``; fires when the node may
        accept connections. ``protocols`` runs devices relayed here."""
        self.inbound = inbound
        self._protocols = protocols
        for client in (self.store.client, self.reader_client):
            client.start()
        self.news_client.start()
        if not self.store.client.up:
            log.info("waiting for Redis at {address}", address=str(self.store.client.address))
        d: Deferred[Any] = self.store.client.connected()
        d.addCallback(lambda _: self.store.new_node())
        d.addCallback(self._numbered)
        d.addCallback(lambda reader: reader.start())
        d.addCallback(lambda _: self.news_client.connected())  # others' news is heard from the start
        d.addCallback(lambda _: self.eventlog.prepare())
        return d.addCallback(self._go)

    def _go(self, _: object) -> str:
        self.eventlog.started()
        self.started.callback(self.node)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)
        return self.node

    def _numbered(self, number: int) -> Deferred[StreamReader]:
        self.node = str(number)
        self._core().renumber(number << ID_BITS)
        if self._protocols is not None:
            self.relays.start(self.node, self._protocols)
        reader: StreamReader
        if isinstance(self.reader_client, ClusterClient):
            reader = ShardedReader(
                self.reader_client, self.store, self.node, self._read, self._received, self.clock
            )
        else:
            reader = StreamReader(
                self.reader_client, self.store, self.node, self._read, self._received, self.reader_replicas
            )
        self.reader = reader
        log.info("cluster node {node} on {address}", node=self.node, address=str(self.store.client.address))
        self._heartbeat.start(self.expiry / 4, now=False)
        self._reaper.start(self.expiry / 2, now=False)
        return self._beat().addCallback(lambda _: reader)

    def _beat(self) -> Deferred[Any]:
        d = self.store.heartbeat(self.node, int(self.expiry * 1000))
        return d.addErrback(lambda f: log.warn("cluster heartbeat failed: {error}", error=f.value))

    def _reap(self) -> Deferred[Any]:
        """Announce the leaves of any node whose heartbeat has expired;
        not before this node has been connected for ``expiry`` seconds:
        after an outage of Redis (a failover) the others need that long
        to beat again."""
        self.relays.check()
        since = self.store.client.up_since
        if since is None or self.clock.seconds() - since < self.expiry:
            return succeed(None)

        def check(nodes: list[str]) -> None:
            always = self._core().always()  # a reaped room among them keeps its rules and topic
            for node in nodes:
                if node != self.node:
                    d = self.store.reap(node, always=always)
                    d.addCallback(self._reaped, node).addErrback(lambda f: None)
            for node in self._known - set(nodes):  # left, or reaped by another
                self._left(node)
            self._known = set(nodes)

        return self.store.nodes().addCallback(check).addErrback(lambda f: None)

    def _reaped(self, done: bool, node: str) -> None:
        if done:
            log.info("cluster node {node} stopped answering: its sessions left", node=node)
            self._left(node)

    def _left(self, node: str) -> None:
        """Node ``node`` is gone: its relays with us end, and its pending
        connections are gone for our sessions."""
        self.relays.gone(node)
        self._known.discard(node)
        if node.isdigit():
            number = int(node)
            self._core().pending_gone(lambda id: id >> ID_BITS == number)

    def stop(self) -> Deferred[None]:
        """Leave the cluster: this node's sessions leave their rooms for
        everyone (``server_shutdown``), its nicks are free; then disconnect."""
        self._stopping = True
        for loop in (self._heartbeat, self._reaper):
            if loop.running:
                loop.stop()
        self.questions.stop()
        self.relays.stop()
        if self.reader is not None:
            self.reader.stop()
        d: Deferred[Any] = succeed(None)
        if self.node:
            d.addCallback(lambda _: self.store.leave_cluster(self.node))
            d.addCallback(lambda _: self.store.reap(self.node, "server_shutdown", self._core().always()))
            d.addErrback(lambda f: log.warn("could not leave the cluster: {error}", error=f.value))
        d.addBoth(lambda _: self.store.client.stop())
        d.addBoth(lambda _: self.reader_client.stop())
        d.addBoth(lambda _: self.news_client.stop())
        return d.addBoth(lambda _: None)

    # -- the order: appending ------------------------------------------------------------

    def append(self, flushed: Flushed) -> Deferred[list[Outcome]] | None:
        """A flushed batch's room items to their streams (None: it has none);
        fires with its messages numbered, its changes applied.

        Changes and replies are decided in Python by the one set of rules
        every store shares (:func:`chatproto.backends.changes.apply_change`),
        on the messages as one script read them; the script that writes the
        batch checks that each message it was decided on is still at the rev
        it was read at, and writes nothing otherwise (the batch is read and
        decided again). So each change is atomic in its room, in the room's
        order, without a second copy of the rules in Lua. The batches are
        written in order: one being decided holds back those after it (a
        batch of plain messages, the usual one, is written at once)."""
        items: list[Item] = []
        for item in flushed.batch:
            if _in_order(item):
                items.append(item)
            elif isinstance(item, Event) and isinstance(item.record, records.TypingSent):
                self._publish_typing(item.channel, item.record)
        if not items:
            return None
        self._batches += 1
        number = self._batches
        pending = self._pending[number] = _Pending(flushed, number, items, any(map(_decided, items)))
        self._queue.append(pending)
        self._pump()
        return pending.done

    def _pump(self) -> None:
        while self._queue and self._deciding is None:
            pending = self._queue.popleft()
            if pending.decide:
                self._deciding = pending
                self._decide(pending, 1)
            else:
                self._write(pending, self._plan(pending, {}))

    def _write(
        self,
        pending: _Pending,
        plan: tuple[dict[str, list[dict[str, Any]]], dict[str, str], list[Slot]],
        read: Read | None = None,
    ) -> Deferred[Any]:
        """The batch's entries to the store, those of the rooms not
        answered for yet; fires once answered for (False if a room's
        change must be decided again)."""
        rooms, names, slots = plan
        pending.slots = slots
        for room in pending.written:
            rooms.pop(room, None)
        counts = {room: len(entries) for room, entries in rooms.items()}
        pending.remaining += sum(counts.values())
        for room, count in counts.items():
            pending.unread[room] = pending.unread.get(room, 0) + count
        if not rooms:  # all refused or unchanged: nothing to write
            return succeed(self._settle(pending, slots, {}, set(), {}))
        rows = [(k, names[k], e) for k, e in rooms.items()]
        checks = self._checks(read, rooms) if read else None
        d = self.store.append(self.node, pending.number, rows, checks, self._floors(rooms))

        def written(results: list[Appended]) -> bool:
            got: dict[str, list[int]] = {}
            redo: set[str] = set()
            failed: dict[str, Failure] = {}
            for room, result in zip(rooms, results, strict=True):
                if isinstance(result, Failure):
                    failed[room] = result
                elif result is None:
                    redo.add(room)
                else:
                    got[room] = result
            for room in redo | set(failed):
                pending.read_back(room, pending.unread.get(room, 0))  # not written (or not known to be)
            for room in failed:
                self._refused.add((pending.number, room))  # its answer may have been lost
            if failed and not got and not pending.written:
                pending.remaining = 0
                self._append_failed(next(iter(failed.values())), pending)
                return True
            for room, failure in failed.items():
                log.warn(
                    "the cluster store refused room {room}'s part of a batch: {e}", room=room, e=failure.value
                )
            return self._settle(pending, slots, got, redo, failed)

        return d.addCallback(written).addErrback(self._append_failed, pending)

    def _floors(self, rooms: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
        """The newest seq this node has seen in each room: a room's counter
        below it in Redis lost its messages (a shard come back empty), and
        its seqs are not handed out a second time."""
        core = self.inbound
        found = {key: core.room(key) for key in rooms} if core is not None else {}
        return {key: room.last_seq for key, room in found.items() if room is not None and room.last_seq}

    def _settle(
        self,
        pending: _Pending,
        slots: list[Slot],
        got: dict[str, list[int]],
        redo: set[str],
        failed: dict[str, Failure],
    ) -> bool:
        """The outcomes of the messages of the rooms answered for now (with
        the seqs and revs the store gave each room); the batch's, once no
        room is left to decide again."""
        rooms = [item.channel for item in pending.items if isinstance(item, Said)]
        for index, slot in enumerate(slots):
            room = rooms[index]
            if index in pending.settled or room in redo:
                continue
            if room in failed:
                refused = ProtocolError(ErrorCode.INTERNAL, "the server could not store your message")
                pending.settled[index] = refused
            elif isinstance(slot, tuple):
                channel, at, make = slot
                pending.settled[index] = make(got[channel][at])
            else:
                pending.settled[index] = slot
        pending.written |= set(got) | set(failed)
        if redo:
            return False
        pending.outcomes = [pending.settled[index] for index in range(len(slots))]
        pending.settle()
        return True

    def _decide(self, pending: _Pending, tries: int) -> None:
        """Read what the batch's changes and replies are decided on, decide,
        write; again if a message changed meanwhile."""
        wanted: dict[str, list[int]] = {}
        for item in pending.items:
            if isinstance(item, Said):
                draft = item.draft
                seq = draft.seq if isinstance(draft, Change) else draft.reply
                if seq is not None:
                    wanted.setdefault(draft.room, []).append(seq)
        d = self.store.read(wanted)

        def decided(found: dict[str, tuple[int, list[tuple[Any, Any]]]]) -> Deferred[Any]:
            read: Read = {
                room: (seq, dict(zip(wanted[room], states, strict=True)))
                for room, (seq, states) in found.items()
            }
            return self._write(pending, self._plan(pending, read), read)

        def done(written: Any) -> None:
            if written is False and pending.outcomes is None:
                if tries < MAX_TRIES:
                    self._decide(pending, tries + 1)
                    return
                self._give_up(
                    Failure(StoreError("the messages changed too often to apply a change")), pending
                )
            self._deciding = None
            self._pump()

        d.addCallbacks(decided, self._give_up, errbackArgs=(pending,))
        d.addCallback(done)
        d.addErrback(lambda f: log.failure("deciding a batch failed", f))

    def _plan(
        self, pending: _Pending, read: Read
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str], list[Slot]]:
        """Each room's entries for the batch (in its order), the rooms' names,
        and what each of its messages and changes will be answered with."""
        rooms: dict[str, list[dict[str, Any]]] = {}
        names: dict[str, str] = {}
        slots: list[Slot] = []
        overlay: dict[
            tuple[str, int], dict[str, Any]
        ] = {}  # messages as said or changed earlier in the batch
        seqs = {room: last for room, (last, _) in read.items()}  # each room's seq as the batch goes
        where: dict[tuple[str, int], tuple[str, int]] = {}  # message -> the entry of its last change here
        for item in pending.items:
            if isinstance(item, Said):
                names[item.channel] = item.name
                draft = item.draft
                planned: Outcome | Slot | tuple[dict[str, Any], Callable[[int], Outcome]]
                if type(draft) is Draft:
                    planned = self._message(draft, read, overlay, seqs)
                else:
                    assert isinstance(draft, Change)
                    planned = self._change(draft, read, overlay, where)
                if not isinstance(planned, tuple):
                    slots.append(planned)
                    continue
                if len(planned) == 3:  # made with the rev an earlier change here takes
                    slots.append(planned)
                    continue
                entry, make = planned
                entries = rooms.setdefault(item.channel, [])
                if entry["t"] == "c":
                    where[(item.channel, entry["s"])] = (item.channel, len(entries))
                slots.append((item.channel, len(entries), make))
                entries.append(entry)
            elif item.record is not None:
                names[item.channel] = item.record.room
                rooms.setdefault(item.channel, []).append(self._record_entry(item.record))
        return rooms, names, slots

    def _checks(self, read: Read, rooms: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
        """The seq a room must still have when the batch is written: where a
        change or reply names a message said earlier in the batch, whose seq
        was foreseen from the room's seq as read."""
        return {
            room: read[room][0]
            for room, entries in rooms.items()
            if room in read and any(e.get("v") == -1 and e["vs"] > read[room][0] for e in entries)
        }

    def _message(
        self, draft: Draft, read: Read, overlay: dict[tuple[str, int], dict[str, Any]], seqs: dict[str, int]
    ) -> Outcome | tuple[dict[str, Any], Callable[[int], Outcome]]:
        d = draft
        quote = None
        entry: dict[str, Any]
        if d.reply is None:
            entry = {"t": "m", "d": draft_data(d)}
        else:
            states = read[d.room][1]
            if not 1 <= d.reply <= seqs[d.room]:
                return ProtocolError(
                    ErrorCode.NO_SUCH_MESSAGE, f"there is no message {d.reply} to answer here"
                )
            key = (d.room, d.reply)
            state = overlay[key] if key in overlay else states[d.reply][0]
            quote = quote_from(d.reply, state)
            entry = {
                "t": "m",
                "d": draft_data(d, quote),
                "r": d.reply,
                "vs": d.reply,
                "v": -1 if key in overlay else _token(state),
            }
        if d.room in seqs:  # a change or reply later in the batch may name it
            seq = seqs[d.room] = seqs[d.room] + 1
            said: dict[str, Any] = {} if d.reply is None else {"reply": d.reply}
            said.update(ts=d.ts, text=d.text, author=d.author)
            said["from"] = d.sender
            if d.action is not None:
                said["action"] = d.action
            if d.files:
                said["files"] = [codec.body_of(f) for f in d.files]
            overlay[(d.room, seq)] = said
        files = d.files or None
        return entry, lambda seq: Message(
            seq, d.ts, d.sender, d.text, None, d.action, quote, None, None, None, None, None, files
        )

    def _change(
        self,
        change: Change,
        read: Read,
        overlay: dict[tuple[str, int], dict[str, Any]],
        where: dict[tuple[str, int], tuple[str, int]],
    ) -> Outcome | Slot | tuple[dict[str, Any], Callable[[int], Outcome]]:
        last, states = read[change.room]
        key = (change.room, change.seq)
        state: dict[str, Any] | None = None
        source: dict[str, Any] | None = None
        if key in overlay:
            state = overlay[key]
        elif 1 <= change.seq <= last:
            state, source = states[change.seq]
        if state is not None and state.get("reply") is not None and source is None:
            answered = (change.room, state["reply"])
            source = overlay.get(answered)
        if state is None:
            return ProtocolError(ErrorCode.NO_SUCH_MESSAGE, f"there is no message {change.seq} here")
        action = state.get("action")
        try:
            update = apply_change(
                change,
                state["ts"],
                state["from"],
                state["text"],
                None if action is None else compact(action),
                state.get("author"),
                state.get("deleted"),
                state.get("reactions"),
                state.get("edited"),
            )
        except ProtocolError as e:
            return e
        reply = state.get("reply")
        quote = None
        if reply is not None:
            answered = (change.room, reply)
            quote = quote_from(reply, overlay[answered] if answered in overlay else source)
        seq = change.seq
        if update is None:
            changed_at = where.get(key)
            if changed_at is None:
                return Unchanged(stream_message(seq, state, quote))
            # changed earlier in the batch: it shows the rev that change takes
            room, index = changed_at
            return room, index, lambda rev: Unchanged(stream_message(seq, {**state, "rev": rev}, quote))
        text, edited, deleted, reactions = update
        new = {
            k: v for k, v in state.items() if k not in ("q", "text", "edited", "deleted", "reactions", "rev")
        }
        new["text"] = text
        if edited is not None:
            new["edited"] = edited
        if deleted is not None:
            new["deleted"] = deleted
        if reactions is not None:
            new["reactions"] = reactions
        entry = {
            "t": "c",
            "s": seq,
            "k": change.kind,
            "st": compact(new)[:-1],
            "h": f'{{"kind":{codec.dumps(change.kind)},"by":{codec.dumps(change.by)},"seq":{seq},'
            f'"emoji":{codec.dumps(change.emoji)},"m":',
            "vs": seq,
            "v": -1 if key in overlay else _token(state),
        }
        if quote is not None:
            entry["q"] = f',"q":{quote_json(quote)}'
        overlay[key] = new
        return entry, lambda rev: stream_message(seq, {**new, "rev": rev}, quote)

    def _record_entry(self, record: records.Record) -> dict[str, Any]:
        entry = record.entry(self.node)
        if isinstance(record, records.AwaySet):
            entry["id"] = str(record.id)
            if record.message is not None:
                entry["away"] = record.message
        elif isinstance(record, records.MemberJoined):
            away = self._core().away(record.id, record.key) if self.inbound is not None else None
            if away is not None:
                member = json.loads(entry["m"])
                member["away"] = away  # a later node's ROOM shows it away
                entry["m"] = codec.dumps(member)
        return entry

    def _publish_typing(self, room: str, record: records.TypingSent) -> None:
        """Typing to the other nodes: published, so never stored."""
        note = {"node": self.node, "room": room, "nick": record.nick, "typing": record.typing}
        self.store.publish(self.store.typing_channel(), note).addErrback(lambda f: None)

    def pushed(self, push: object) -> None:
        """A message on a channel: another node's member typing in a room, or
        another node's pending connections."""
        if not isinstance(push, list) or len(push) != 3 or self.inbound is None:
            return
        if push[0] not in (b"message", b"smessage"):
            return
        channel = push[1].decode("utf-8", "replace") if isinstance(push[1], bytes) else ""
        try:
            note = json.loads(push[2])
            if note["node"] == self.node:
                return
            if channel == self.store.typing_channel():
                self._typing(note)
            elif channel == self.store.pending_channel():
                for id, state, v1 in note["news"]:
                    self._core().pending(int(id), str(state), bool(v1))
        except (ValueError, KeyError, TypeError):
            log.warn("skipped a malformed notice on {channel}", channel=channel)

    def _typing(self, note: dict[str, Any]) -> None:
        core = self._core()
        room = core.room(note["room"])
        if room is None:
            return
        event, _ = core.apply(room, records.TypingSent(room.name, note["nick"], bool(note["typing"])))
        if event is not None:
            core.deliver([event], [])

    def relay(self, connection: Connection, login: bytes, node: str, vouched: bool) -> None:
        self.relays.relay(connection, login, node, vouched)

    def forward(self, connection: Connection, payload: bytes) -> None:
        self.relays.forward(connection, payload)

    def unrelay(self, connection: Connection) -> None:
        self.relays.unrelay(connection)

    def relaying(self) -> bool:
        return self.relays.accepting

    def vouched(self, key: str) -> bool:
        return self.relays.vouching == key

    def pending(self, id: int, state: str, v1: bool) -> None:
        """Our pending connections' news, published once per reactor turn."""
        if not self.node or self._stopping:
            return  # not started, or stopped: nobody to tell
        if not self._news:
            self.clock.callLater(0, self._publish_news)
        self._news.append((id, state, v1))

    def _publish_news(self) -> None:
        news, self._news = self._news, []
        if self._stopping:
            return
        note = {"node": self.node, "news": news}
        self.store.publish(self.store.pending_channel(), note).addErrback(lambda f: None)

    def _give_up(self, failure: Failure, pending: _Pending) -> None:
        """A batch that can't be decided (again): refused, but for the rooms
        an earlier try wrote, which stay answered for as written."""
        if not pending.written:
            self._append_failed(failure, pending)
            return
        log.warn("the cluster store refused part of a batch: {error}", error=failure.value)
        rooms = {item.channel for item in pending.items if isinstance(item, Said)} - pending.written
        self._settle(pending, pending.slots, {}, set(), dict.fromkeys(rooms, failure))

    def _append_failed(self, failure: Failure, pending: _Pending) -> None:
        """Nothing is acknowledged; whatever of it reached the stream anyway
        is delivered as if another node had written it."""
        number = pending.number
        self._pending.pop(number, None)
        for room in pending.unread:  # the store may have run it, its answer lost
            self._refused.add((number, room))
        log.warn("the cluster store refused a batch: {error}", error=failure.value)
        if not pending.done.called:
            pending.done.errback(StoreError(f"the cluster store is unavailable: {failure.value}"))

    def delivered(self, flushed: Flushed) -> None:
        """Broadcast: a local batch went out; what waited behind it in its rooms may follow."""
        for number, pending in list(self._pending.items()):
            if pending.flushed is flushed:
                del self._pending[number]
                break
        self._release()

    # -- the order: reading ----------------------------------------------------------------

    def _read(self, room: str, entries: list[Entry]) -> None:
        held = self._held.setdefault(room, deque())
        back: list[_Pending] = []
        # Entries a change took out of the stream were read by an earlier
        # read if at all: all of this read came after the change was made.
        seen = self._seen.get(room, "0-0")
        for entry in entries:
            if entry.kind == "c" and b'"gone"' in entry.raw:
                self._gone(room, entry, seen, back)
            if entry.node == self.node:
                pending = self._pending.get(entry.batch)
                if pending is not None and pending.read_back(room):
                    back.append(pending)
            held.append(entry)
        if entries:
            self._seen[room] = entries[-1].id
        self._release()  # others' entries first, up to our own first one...
        for pending in back:
            pending.settle()  # ...then ours (each releases what follows it once delivered)

    def _gone(self, room: str, entry: Entry, seen: str, back: list[_Pending]) -> None:
        """A change that took entries out of the stream (a message's old
        text): ours among them that were not read yet count as read back."""
        for id, tag in entry.data.get("gone", ()):
            if _stream_id(id) <= _stream_id(seen):
                continue  # read already
            node, _, batch = tag.partition("|")
            pending = self._pending.get(int(batch)) if node == self.node else None
            if pending is not None and pending.read_back(room):
                back.append(pending)

    def _release(self) -> None:
        """Deliver other nodes' entries up to this node's first undelivered one, room by room."""
        ready: list[tuple[str, Entry]] = []
        for room, held in self._held.items():
            while held:
                entry = held[0]
                own = entry.node == self.node
                if own and entry.batch in self._pending:
                    break
                held.popleft()
                if not own or (entry.batch, room) in self._refused:
                    ready.append((room, entry))
        for room in [room for room, held in self._held.items() if not held]:
            del self._held[room]
        if ready:
            self._apply(ready)

    def _apply(self, ready: list[tuple[str, Entry]]) -> None:
        core = self._core()
        items: list[Any] = []
        messages: list[Outcome] = []
        after: list[Callable[[], None]] = []
        for key, entry in ready:
            room = core.room(key)
            if room is None:
                continue  # no member here any more
            try:
                self._item(room, key, entry, items, messages, after)
            except (ValueError, KeyError, TypeError):
                log.warn("skipped a malformed entry {id} in room {room}", id=entry.id, room=room.name)
        core.deliver(items, messages)
        for call in after:
            call()

    def _item(
        self,
        room: ChatRoom,
        key: str,
        entry: Entry,
        items: list[Item],
        messages: list[Outcome],
        after: list[Callable[[], None]],
    ) -> None:
        """Another node's entry as a batch item (and what to do once it is delivered)."""
        if entry.kind == "m":
            data = entry.data
            message = stream_message(entry.seq, data)
            draft = Draft(
                message.ts,
                message.sender,
                message.text,
                key,
                message.action,
                data.get("author"),
                data.get("reply"),
            )
            items.append(Said(draft, room.name, None, None))
            messages.append(message)
            return
        if entry.kind == "c":  # a change: the message in its present state
            data = entry.data
            state, q = data["m"], data.get("q")
            message = stream_message(data["seq"], state, carried_quote(q) if q else None)
            change = Change(
                data["kind"],
                key,
                message.seq,
                message.edited or message.ts,
                data["by"],
                "",
                emoji=data.get("emoji"),
            )
            items.append(Said(change, room.name, None, None))
            messages.append(message)
            return
        event, then = self._core().apply(room, records.decode(entry.kind, room.name, entry.data))
        if isinstance(event, list):  # a rename: version 1's LEFT and JOINED, or RENAMED
            items.extend(event)
        elif event is not None:
            items.append(event)
        if then is not None:
            after.append(then)

    def _received(self, messages: list[dict[str, Any]]) -> None:
        """This node's inbox: whispers to its sessions, sessions resumed
        elsewhere, other nodes' questions and answers."""
        core = self._core()
        for message in messages:
            try:
                if message.get("kind") == OPENED:
                    core.invited(message["key"], message["room"])
                    continue
                note = records.read_note(message)
                if isinstance(note, records.Whispered):
                    core.whispered(note.private)
                elif isinstance(note, records.Moved):
                    core.moved(note.key)
                elif isinstance(note, records.BansChanged):
                    core.reload_bans().addErrback(lambda f: log.failure("could not read the bans", f))
                elif isinstance(note, records.SessionsAsked):
                    pending, connected = core.listing()
                    told = records.SessionsTold(self.node, note.ask, pending, connected)
                    self.questions.answer(note.node, told.to_json(), "its sessions")
                elif isinstance(note, records.SessionsTold):
                    self.questions.told(note.ask, note.node, (note.pending, note.connected))
                elif isinstance(note, records.HandoverAsked):
                    self._hand_over(note)
                elif isinstance(note, records.HandoverTold):
                    self.questions.told(note.ask, note.node, note.free)
                elif isinstance(note, records.RelayIn):
                    self.relays.came_in(note)
                elif isinstance(note, records.RelayOut):
                    self.relays.came_out(note)
                elif isinstance(note, records.RelayOpened):
                    self.relays.opened(note)
                elif isinstance(note, records.RelayClosed):
                    self.relays.closed(note)
                elif isinstance(note, records.KickAsked):
                    self._kicked(note)
            except Exception:
                # Its kind only: a relay's or a whisper's carries what people said, and tokens.
                log.failure("a cluster message failed: {kind}", kind=str(message.get("kind"))[:40])

    # -- rooms ---------------------------------------------------------------------------------

    def load(self, room: ChatRoom) -> Deferred[Any]:
        """A room this node has members in again: its members, topic and recent
        history as of a point of its stream, then its stream from there."""
        d: Deferred[Any] = self.when_started()
        accounts = self.accounts
        if accounts is not None:
            d.addCallback(lambda _: accounts.rules(room.key))
            d.addCallback(lambda data: load_rules(room, data))
        d.addCallback(lambda _: self.store.snapshot(room.key, self.replay))
        d.addCallback(self._loaded, room)
        loaded: Deferred[Any] = Deferred()  # "called" only once loaded: the core asks ready.called
        d.chainDeferred(loaded)
        return loaded

    def when_started(self) -> Deferred[None]:
        """Fires once the node has its number and reads its streams."""
        if self.started.called:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def _loaded(self, snapshot: Snapshot, room: ChatRoom) -> None:
        if self._core().room(room.key) is not room:
            return
        if snapshot.rules is not None:  # first: the members' Peer JSON shows who is an operator
            room.rules = RoomRules.from_json(snapshot.rules["rules"])
            room.rules.guest_ops = set(snapshot.rules["guest_ops"])
        core = self._core()
        for id, member in snapshot.members.items():
            if member["node"] != self.node and id not in room.members:
                remote = self.stand_in(
                    id, member["nick"], unescape(member["key"]), member.get("account", False)
                )
                remote.away = member.get("away")
                core.seat(room, remote)
                room.refresh(remote)
        if snapshot.topic is not None:
            t = snapshot.topic
            room.topic = Topic(t["text"], t["by"], t["ts"]) if t["text"] else None
        if snapshot.name is not None:
            room.name = snapshot.name  # one spelling across the cluster

        room.last_seq = max(room.last_seq, snapshot.seq)
        room.rev = max(room.rev, snapshot.rev)
        room.recent.clear()
        room.recent.extend((m, codec.message_json(m)) for m in map(found_message, snapshot.recent))
        if self.reader is not None:
            self._seen[room.key] = snapshot.position
            self.reader.follow(room.key, snapshot.position)
        # Our batches written to the room before its snapshot was taken
        # (a member entered before the room was read: the store answered
        # them first) are in it already: their entries won't come back.
        for pending in list(self._pending.values()):
            count = pending.unread.get(room.key, 0)
            if pending.outcomes is not None and count > 0 and pending.read_back(room.key, count):
                pending.settle()

    def dropped(self, room: ChatRoom) -> None:
        """No member here any more: stop reading the room once what was said reached everyone."""

        def unfollow() -> None:
            if self._core().room(room.key) is None and self.reader is not None:
                self.reader.unfollow(room.key)
                self._held.pop(room.key, None)
                self._seen.pop(room.key, None)

        core = self._core()
        core.unseat(room)
        core.after_all(unfollow)

    def bans_changed(self) -> Deferred[Any]:
        """Server-wide bans changed here: every other node reads them again."""

        def tell(nodes: list[str]) -> Deferred[list[Any]]:
            others = [node for node in nodes if node != self.node]
            note = records.BansChanged().to_json()
            return gatherResults([self.store.send(node, note) for node in others])

        return self.store.nodes().addCallback(tell)

    def listing(self, directory: Directory) -> Deferred[str]:
        """Every room with members on any node, this node's own view first.
        A secret room with no member here is left out (its members are all
        elsewhere: RoomRequests.list_rooms hides the secret rooms held here)."""
        local = directory.listing()

        def merge(rows: list[tuple[str, int, dict[str, Any] | None, bool]]) -> str:
            rooms = {room_key(info.room): info for info in local}
            for name, members, topic, secret in rows:
                if is_direct(name) or (secret and room_key(name) not in rooms):
                    continue  # a direct conversation is never listed (docs/protocol.md 19.8)
                text = topic["text"] if topic else ""
                rooms.setdefault(room_key(name), codec.RoomInfo(name, text, members))
            shown = sorted(rooms.values(), key=lambda info: room_key(info.room))
            return codec.dumps([codec.body_of(info) for info in shown])

        return self.store.rooms().addCallbacks(merge, self._unavailable)

    def shared_room(self, room: str, id: int, key: str) -> Deferred[SharedRoom | None]:
        """The room and the session as the store has them. A room whose rules
        never changed while it had members has those an account keeps for it
        (as :meth:`load` gives a node that takes it up)."""

        def found(shared: FileRoom) -> Deferred[SharedRoom | None]:
            member = None
            if shared.member is not None:
                seat_id, entry = shared.member
                member = Seat(seat_id, unescape(entry["key"]), bool(entry.get("account")))
            record = shared.record
            session = None if record is None else Seat(record["id"], key, bool(record.get("account")))
            if shared.rules is not None or not shared.exists or self.accounts is None:
                rules = RoomRules.from_json(shared.rules["rules"]) if shared.rules else RoomRules()
                return succeed(SharedRoom(shared.exists, rules, member, session))

            def kept(data: dict[str, Any] | None) -> SharedRoom | None:
                return SharedRoom(True, kept_rules(data, False) or RoomRules(), member, session)

            return self.accounts.rules(room).addCallback(kept)

        return self.store.file_room(room, id, key).addCallback(found)

    def stand_in(self, id: int, nick: str, key: str, account: bool) -> Session:
        """The one Session object standing for a member on another node."""
        session = self.remotes.get(id)
        if session is None:
            session = Session(id, nick, key, None, self.clock.seconds())
            session.account = bool(account)
            session.admin = self._core().is_admin(key, session.account)
            self.remotes[id] = session
        return session

    def forget(self, session: Session) -> None:
        if not session.rooms:
            self.remotes.pop(session.id, None)

    def _core(self) -> Inbound:
        """The core the node applies others' changes to: there once started."""
        if self.inbound is None:
            raise RuntimeError("the cluster node has not started")
        return self.inbound

    # -- nicks, sessions, whispers ----------------------------------------------------------------

    def claim(self, key: str, nick: str, account: bool = False) -> Deferred[Resumed | None]:
        """The nick is this node's (None), or an account's session held by
        another node moved here (a re-login after a connection that node has
        not seen drop); fails with nick_taken if a live node holds it."""

        def claimed(owner: str | None) -> Deferred[Resumed | None] | None:
            if owner is None:
                return None
            if not account:
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {nick!r} is taken")
            return self._take_over(owner, key, nick)

        d: Deferred[Any] = self.store.claim(key, self.node)
        d.addCallback(claimed)
        return d.addErrback(self._unavailable)

    def _take_over(self, owner: str, key: str, nick: str, tries: int = 2) -> Deferred[Resumed | None]:
        """Ask node ``owner`` whether the session is in use there; if not, it
        moves here as on a resume (its devices there get BYE replaced). If
        it moved or went meanwhile (another login raced this one), claim
        and ask again, ``tries`` times in all."""

        def note(ask: int) -> dict[str, Any]:
            return records.HandoverAsked(self.node, ask, key).to_json()

        def answered(answers: dict[str, Any]) -> Deferred[Resumed | None]:
            free = answers.get(owner)
            if free is None:
                message = f"{nick!r} is signed in on a server that does not answer"
                raise ProtocolError(ErrorCode.NICK_TAKEN, message)
            if not free:
                raise HeldElsewhere(owner, f"{nick!r} is in use on another server of this cluster", True)
            return self.store.session(key).addCallback(take)

        def take(stored: dict[str, Any] | None) -> Deferred[Resumed | None]:
            record = records.SessionRecord.from_json(stored) if stored is not None else None
            if record is None or record.node != owner:  # it went (or moved) meanwhile
                return again()
            if not record.account:
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {nick!r} is taken")
            moved = replace(record, node=self.node)
            d = self.store.take_over(key, owner, moved.to_json())
            return d.addCallback(self._taken, owner, key, moved).addCallback(check)

        def again() -> Deferred[Resumed | None]:
            if tries <= 1:
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {nick!r} is taken")
            d: Deferred[Any] = self.store.claim(key, self.node)
            return d.addCallback(
                lambda holder: None if holder is None else self._take_over(holder, key, nick, tries - 1)
            )

        def check(resumed: Resumed | None) -> Deferred[Resumed | None] | Resumed:
            return again() if resumed is None else resumed

        asked = self.questions.ask({owner}, note, "a handover", HANDOVER_PATIENCE)
        return asked.addCallback(answered)

    def _hand_over(self, asked: records.HandoverAsked) -> None:
        """Another node's login to the account of our session ``asked.key``:
        free unless one of its devices here answers a PING."""

        def tell(in_use: bool) -> None:
            told = records.HandoverTold(self.node, asked.ask, not in_use)
            self.questions.answer(asked.node, told.to_json(), "a handover")

        self._core().in_use(asked.key, PROBE).addCallback(tell)

    def sessions(self) -> Deferred[Listing]:
        """Every other node's pending connections and sessions (those that
        answer within the questions' patience)."""

        def ask(nodes: list[str]) -> Deferred[dict[str, Any]]:
            others = {node for node in nodes if node != self.node}
            return self.questions.ask(others, note, "sessions")

        def note(ask: int) -> dict[str, Any]:
            return records.SessionsAsked(self.node, ask).to_json()

        def merge(answers: dict[str, Any]) -> Listing:
            listing: Listing = ([], [])
            for pending, connected in answers.values():
                listing[0].extend(pending)
                listing[1].extend(connected)
            return listing

        d = self.store.nodes().addCallback(ask).addCallback(merge)
        return d.addErrback(self._unavailable)

    def _unavailable(self, failure: Failure) -> Failure:
        if failure.check(ProtocolError):
            return failure
        log.warn("the cluster store failed: {error}", error=failure.value)
        raise ProtocolError(ErrorCode.INTERNAL, "the server's cluster store is unavailable: try again")

    def release(self, key: str) -> Deferred[None]:
        """Let the nick go; fires when the store has (or could not)."""
        d = self.store.release(key, self.node)
        d.addErrback(lambda f: log.warn("could not release a nick: {error}", error=f.value))
        return d.addCallback(lambda _: None)

    def save(self, session: Session) -> None:
        """The session's record, for a resume on any node."""
        record = records.SessionRecord(
            self.node,
            session.id,
            session.nick,
            session.version,
            session.account,
            session.admin,
            tuple(map(token_text, session.devices.values())),
            session.owner,
            session.away,
        )
        self.store.save_session(session.key, record.to_json()).addErrback(
            lambda f: log.warn("could not save a session: {error}", error=f.value)
        )

    def resume(self, key: str, token: str, version: int) -> Deferred[Resumed | None]:
        """A resume token of a session held by another node: the session moves
        here. Fires with (its record, its rooms as (key, name)), or None if
        the token is not that of a session elsewhere."""

        def check(stored: dict[str, Any] | None) -> Deferred[Resumed | None] | Resumed | None:
            if stored is None:
                return None
            record = records.SessionRecord.from_json(stored)
            if record.node == self.node or record.version != version:
                return None
            given = token.encode("utf-8")
            if not any(hmac.compare_digest(given, t.encode("utf-8")) for t in record.tokens):
                return None
            if len(record.tokens) > 1:  # one device of several: it resumes there, the others stay
                raise HeldElsewhere(record.node, f"{record.nick!r} is in use on another server", False)
            moved = replace(record, node=self.node)
            d = self.store.take_over(key, record.node, moved.to_json())
            return d.addCallback(self._taken, record.node, key, moved)

        found: Deferred[Any] = self.store.session(key)
        return found.addCallback(check).addErrback(self._unavailable)

    def _taken(
        self, rooms: list[tuple[str, str]] | None, old: str, key: str, record: records.SessionRecord
    ) -> Resumed | None:
        if rooms is None:
            return None  # it moved or went meanwhile
        self.store.send(old, records.Moved(key).to_json()).addErrback(lambda f: None)
        return record, rooms

    def summon(self, key: str, name: str) -> Deferred[None]:
        """Account ``key``'s session, if it is online on another node, joins
        the direct conversation ``name`` there (an inbox note to its node)."""

        def owner(stored: dict[str, Any] | None) -> Deferred[Any] | None:
            if stored is None:
                return None
            record = records.SessionRecord.from_json(stored)
            if record.node == self.node or not record.account:
                return None
            return self.store.send(record.node, {"kind": OPENED, "key": key, "room": name})

        d = self.store.session(key).addCallback(owner)
        d.addErrback(
            lambda f: log.warn(
                "could not bring {key} into {name}: {error}", key=key, name=name, error=f.value
            )
        )
        return d.addCallback(lambda _: None)

    def kick(self, key: str, by: Session, reason: str | None) -> Deferred[bool]:
        """To the node holding the nick (False: none does)."""
        note = records.KickAsked(key, by.id, by.nick, by.key, by.account, reason)
        return self._to_holder(key, note.to_json())

    def _kicked(self, note: records.KickAsked) -> None:
        """The admin stands in as the kick's author (as a member on another node would)."""
        by = self.stand_in(note.by_id, note.by_nick, note.by_key, note.by_account)
        self._core().kicked(by, note.key, note.reason)
        self.forget(by)

    def whisper(self, nick_key: str, private: codec.Private) -> Deferred[bool]:
        """To a session on another node: False if nobody there has the nick."""
        return self._to_holder(nick_key, records.Whispered(private).to_json())

    def _to_holder(self, key: str, note: dict[str, Any]) -> Deferred[bool]:
        """``note`` to the inbox of the node whose session holds nick key
        ``key``: False if no other node's does."""

        def owner(stored: dict[str, Any] | None) -> Deferred[bool] | bool:
            node = records.SessionRecord.from_json(stored).node if stored is not None else self.node
            if node == self.node:
                return False
            return self.store.send(node, note).addCallback(lambda _: True)

        return self.store.session(key).addCallback(owner).addErrback(self._unavailable)
