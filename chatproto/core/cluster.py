"""One node of a cluster: the hub's rooms shared with other nodes through a
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
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto import codec
from chatproto.backends.eventlog import Draft, StoreError, Topic
from chatproto.backends.streams import Entry, Snapshot, StreamReader, StreamStore, escape, unescape
from chatproto.codec import ErrorCode, Message, ProtocolError
from chatproto.core.broadcast import Said
from chatproto.core.connection import Session
from chatproto.core.rooms import RoomRules, load_rules
from chatproto.rules import DEFAULT_ROOM, room_key

log = Logger()

#: Ids: a node's number in the high bits, its own count in the low ones
#: (JavaScript's exact integers reach 2**53: two million node starts).
ID_BITS = 32


class _Pending:
    __slots__ = ("flushed", "remaining")

    def __init__(self, flushed, remaining: int) -> None:
        self.flushed = flushed
        self.remaining = remaining


def _in_order(item) -> bool:
    """Does a batch item go to its room's stream? Messages and room presence
    do; server-wide items (PENDING) stay on their node."""
    return type(item) is Said or item.record is not None


def _message(seq: int, data: dict) -> Message:
    return Message(seq, data["ts"], data["from"], data["text"], None, data.get("action"))


class Cluster:
    """Joins a :class:`~chatproto.core.hub.Hub` to the others through ``store``."""

    def __init__(
        self,
        hub,
        store: StreamStore,
        reader_client,
        clock,
        expiry: float = 10.0,
    ) -> None:
        self.hub = hub
        self.store = store
        self.clock = clock
        self.expiry = expiry
        self.node = ""
        self.started: Deferred = Deferred()
        self._waiting: list[Deferred] = []
        self.reader_client = reader_client
        self.reader: StreamReader | None = None
        self._batches = 0
        self._pending: dict[int, _Pending] = {}
        self._refused: set[int] = set()  # batches sent, then refused: their entries may still come
        self._held: dict[str, deque[Entry]] = {}
        self.remotes: dict[int, Session] = {}  # members on other nodes, by id
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock
        self._reaper = LoopingCall(self._reap)
        self._reaper.clock = clock
        hub.broadcast.order = self
        hub.cluster = self
        directory = hub.directory
        directory.loader = self.load
        directory.dropped = self.dropped
        for room in list(directory.rooms.values()):  # the rooms that always exist
            room.ready = self.load(room)
            room.ready.addErrback(lambda f: log.failure("could not read a room from the cluster", f))

    # -- life -------------------------------------------------------------------------

    def start(self) -> Deferred:
        """Connect, take a node number, start the heartbeat and the reader;
        fires when the node may accept connections."""
        for client in (self.store.client, self.reader_client):
            client.start()
        if not self.store.client.up:
            log.info("waiting for Redis at {address}", address=str(self.store.client.address))
        d = self.store.client.connected()
        d.addCallback(lambda _: self.store.new_node())
        d.addCallback(self._numbered)
        d.addCallback(lambda _: self.reader.start())
        d.addCallback(self._go)
        return d

    def _go(self, _) -> None:
        self.hub.eventlog.started()
        self.started.callback(self.node)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _numbered(self, number: int) -> Deferred:
        self.node = str(number)
        self.hub.registry.renumber(number << ID_BITS)
        self.reader = StreamReader(self.reader_client, self.store, self.node, self._read, self._received)
        log.info("cluster node {node} on {address}", node=self.node, address=str(self.store.client.address))
        self._heartbeat.start(self.expiry / 4, now=False)
        self._reaper.start(self.expiry / 2, now=False)
        return self._beat()

    def _beat(self) -> Deferred:
        d = self.store.heartbeat(self.node, int(self.expiry * 1000))
        return d.addErrback(lambda f: log.warn("cluster heartbeat failed: {error}", error=f.value))

    def _reap(self) -> Deferred:
        """Announce the leaves of any node whose heartbeat has expired."""

        def check(nodes: list[str]) -> None:
            for node in nodes:
                if node != self.node:
                    self.store.reap(node).addCallback(self._reaped, node).addErrback(lambda f: None)

        return self.store.nodes().addCallback(check).addErrback(lambda f: None)

    def _reaped(self, done: bool, node: str) -> None:
        if done:
            log.info("cluster node {node} stopped answering: its sessions left", node=node)

    def stop(self) -> Deferred:
        """Leave the cluster: this node's sessions leave their rooms for
        everyone (``server_shutdown``), its nicks are free; then disconnect."""
        for loop in (self._heartbeat, self._reaper):
            if loop.running:
                loop.stop()
        if self.reader is not None:
            self.reader.stop()
        d = succeed(None)
        if self.node:
            d.addCallback(lambda _: self.store.leave_cluster(self.node))
            d.addCallback(lambda _: self.store.reap(self.node, "server_shutdown"))
            d.addErrback(lambda f: log.warn("could not leave the cluster: {error}", error=f.value))
        d.addBoth(lambda _: self.store.client.stop())
        d.addBoth(lambda _: self.reader_client.stop())
        return d.addBoth(lambda _: None)

    # -- the order: appending ------------------------------------------------------------

    def append(self, flushed) -> Deferred | None:
        """A flushed batch's room items to their streams (None: it has none);
        fires with its messages, numbered."""
        rooms: dict[str, list[dict]] = {}
        names: dict[str, str] = {}
        count = 0
        for item in flushed.batch:
            if not _in_order(item):
                continue
            if type(item) is Said:
                entry = {"t": "m", "d": codec.draft_json(item.draft)}
            else:
                entry = self._entry(item.record)
            rooms.setdefault(item.channel, []).append(entry)
            names[item.channel] = item.name if type(item) is Said else item.record["room"]
            count += 1
        if not rooms:
            return None
        self._batches += 1
        number = self._batches
        self._pending[number] = _Pending(flushed, count)
        flushed.reached = False
        sent = self.store.client.up  # else the call fails unsent
        d = self.store.append(self.node, number, [(k, names[k], e) for k, e in rooms.items()])
        d.addCallbacks(
            self._numbered_messages,
            self._append_failed,
            (flushed, list(rooms)),
            None,
            (number, flushed, sent),
        )
        return d

    def _entry(self, record: dict) -> dict:
        kind = record["t"]
        if kind == "o":
            return {"t": "o", "d": codec.dumps({k: record[k] for k in ("text", "by", "ts")})}
        if kind == "r":  # a room's rules changed
            return {"t": "r", "d": codec.dumps({k: record[k] for k in ("rules", "guest_ops")})}
        key = escape(record["key"])
        data = {"id": record["id"], "nick": record["nick"], "key": key}
        if kind == "j":
            member = {"node": self.node, "nick": record["nick"], "key": key, "account": record["account"]}
            data["account"] = record["account"]
            entry = {"t": "j", "id": str(record["id"]), "key": key, "m": codec.dumps(member)}
            entry["d"] = codec.dumps(data)
            return entry
        data["reason"] = record["reason"]
        if record.get("message") is not None:
            data["message"] = record["message"]
        perm = 1 if record["permanent"] else 0
        return {"t": "l", "id": str(record["id"]), "key": key, "perm": perm, "d": codec.dumps(data)}

    def _numbered_messages(self, seqs: list[list[int]], flushed, rooms: list[str]) -> list[Message]:
        """The batch's messages with the seqs the store gave them (each room's
        in order; ``rooms`` in the order they were appended)."""
        numbers = {room: iter([seq for seq in got if seq]) for room, got in zip(rooms, seqs, strict=True)}
        return [
            Message(next(numbers[item.channel]), d.ts, d.sender, d.text, None, d.action)
            for item in flushed.said
            for d in (item.draft,)
        ]

    def _append_failed(self, failure: Failure, number: int, flushed, sent: bool) -> Failure:
        """Nothing is acknowledged; whatever of it reached the stream anyway
        is delivered as if another node had written it."""
        self._pending.pop(number, None)
        if sent:  # the store may have run it, its answer lost; unsent, it can't have
            self._refused.add(number)
        flushed.reached = True
        log.warn("the cluster store refused a batch: {error}", error=failure.value)
        return Failure(StoreError(f"the cluster store is unavailable: {failure.value}"))

    def delivered(self, flushed) -> None:
        """Broadcast: a local batch went out; what waited behind it in its rooms may follow."""
        for number, pending in list(self._pending.items()):
            if pending.flushed is flushed:
                del self._pending[number]
                break
        self._release()

    # -- the order: reading ----------------------------------------------------------------

    def _read(self, room: str, entries: list[Entry]) -> None:
        held = self._held.setdefault(room, deque())
        for entry in entries:
            if entry.node == self.node:
                pending = self._pending.get(entry.batch)
                if pending is not None:
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        pending.flushed.reached = True
            held.append(entry)
        self._release()  # others' entries first, up to our own first one...
        self.hub.broadcast.deliver_ready()  # ...then ours (each releases what follows it)

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
                if not own or entry.batch in self._refused:
                    ready.append((room, entry))
        for room in [room for room, held in self._held.items() if not held]:
            del self._held[room]
        if ready:
            self._apply(ready)

    def _apply(self, ready: list[tuple[str, Entry]]) -> None:
        rooms = self.hub.directory.rooms
        items: list = []
        messages: list[Message] = []
        after: list[Callable[[], None]] = []
        for key, entry in ready:
            room = rooms.get(key)
            if room is None:
                continue  # no member here any more
            try:
                self._item(room, key, entry, items, messages, after)
            except (ValueError, KeyError, TypeError):
                log.warn("skipped a malformed entry {id} in room {room}", id=entry.id, room=room.name)
        self.hub.broadcast.deliver_now(items, messages)
        for call in after:
            call()

    def _item(self, room, key: str, entry: Entry, items: list, messages: list, after: list) -> None:
        """Another node's entry as a batch item (and what to do once it is delivered)."""
        if entry.kind == "m":
            message = _message(entry.seq, entry.data)
            draft = Draft(message.ts, message.sender, message.text, key, message.action)
            items.append(Said(draft, room.name, None, None))
            messages.append(message)
            return
        event, then = self.hub.apply_remote(room, entry.kind, entry.data)
        if event is not None:
            items.append(event)
        if then is not None:
            after.append(then)

    def _received(self, messages: list[dict]) -> None:
        """This node's inbox: whispers to its sessions, sessions resumed elsewhere."""
        for message in messages:
            try:
                kind = message.get("kind")
                if kind == "whisper":
                    self.hub.whispered(codec.Private(**message["private"]))
                elif kind == "moved":
                    self.hub.moved(message["key"])
                elif kind == "bans":
                    self.hub.reload_bans().addErrback(lambda f: log.failure("could not read the bans", f))
            except Exception:
                log.failure("a cluster message failed: {message}", message=message)

    # -- rooms ---------------------------------------------------------------------------------

    def load(self, room) -> Deferred:
        """A room this node has members in again: its members, topic and recent
        history as of a point of its stream, then its stream from there."""
        d = self.when_started()
        if self.hub.store is not None:  # the rules a restart keeps (account operators, bans, modes)
            d.addCallback(lambda _: self.hub.store.rules(room.key))
            d.addCallback(lambda data: load_rules(room, data))
        d.addCallback(lambda _: self.store.snapshot(room.key, self.hub.limits.history_replay))
        d.addCallback(self._loaded, room)
        loaded: Deferred = Deferred()  # "called" only once loaded: the hub asks ready.called
        d.chainDeferred(loaded)
        return loaded

    def when_started(self) -> Deferred:
        """Fires once the node has its number and reads its streams."""
        if self.started.called:
            return succeed(None)
        waiting: Deferred = Deferred()
        self._waiting.append(waiting)
        return waiting

    def _loaded(self, snapshot: Snapshot, room) -> None:
        if self.hub.directory.rooms.get(room.key) is not room:
            return
        if snapshot.rules is not None:  # first: the members' Peer JSON shows who is an operator
            room.rules = RoomRules.from_json(snapshot.rules["rules"])
            room.rules.guest_ops = set(snapshot.rules["guest_ops"])
        for id, member in snapshot.members.items():
            if member["node"] != self.node and id not in room.members:
                remote = self.remote(
                    id, member["nick"], unescape(member["key"]), member.get("account", False)
                )
                room.add(remote)
        if snapshot.topic is not None:
            t = snapshot.topic
            room.topic = Topic(t["text"], t["by"], t["ts"]) if t["text"] else None
        if snapshot.name is not None:
            room.name = snapshot.name  # one spelling across the cluster

        room.last_seq = max(room.last_seq, snapshot.seq)
        room.recent.clear()
        room.recent.extend((m, codec.message_json(m)) for m in (_message(s, d) for s, d in snapshot.recent))
        self.reader.follow(room.key, snapshot.position)

    def dropped(self, room) -> None:
        """No member here any more: stop reading the room once what was said reached everyone."""

        def unfollow() -> None:
            if room.key not in self.hub.directory.rooms and self.reader is not None:
                self.reader.unfollow(room.key)
                self._held.pop(room.key, None)

        for member in list(room.members.values()):
            if member.connection is None:
                room.remove(member)
                self.forget(member)
        self.hub.broadcast.after_all(unfollow)

    def bans_changed(self) -> Deferred:
        """Server-wide bans changed here: every other node reads them again."""

        def tell(nodes: list[str]) -> Deferred:
            others = [node for node in nodes if node != self.node]
            return gatherResults([self.store.send(node, {"kind": "bans"}) for node in others])

        return self.store.nodes().addCallback(tell)

    def member(self, data: dict) -> Session:
        """The stand-in for the member a join entry names."""
        return self.remote(data["id"], data["nick"], unescape(data["key"]), data.get("account", False))

    def listing(self, local: list[codec.RoomInfo]) -> Deferred[list[codec.RoomInfo]]:
        """Every room with members on any node, this node's own view first."""

        def merge(rows) -> list[codec.RoomInfo]:
            rooms = {room_key(info.room): info for info in local}
            for name, members, topic in rows:
                text = topic["text"] if topic else ""
                rooms.setdefault(room_key(name), codec.RoomInfo(name, text, members))
            return sorted(rooms.values(), key=lambda info: room_key(info.room))

        return self.store.rooms().addCallbacks(merge, self._unavailable)

    def remote(self, id: int, nick: str, key: str, account: bool) -> Session:
        """The one Session object standing for a member on another node."""
        session = self.remotes.get(id)
        if session is None:
            session = Session(id, nick, key, None, self.clock.seconds())
            session.account = bool(account)
            session.admin = self.hub.is_admin(key, session.account)
            self.remotes[id] = session
        return session

    def forget(self, session: Session) -> None:
        if not session.rooms:
            self.remotes.pop(session.id, None)

    # -- nicks, sessions, whispers ----------------------------------------------------------------

    def claim(self, key: str, nick: str) -> Deferred[None]:
        """Fails with nick_taken if a live node holds the nick."""

        def claimed(owner: str | None) -> None:
            if owner is not None:
                raise ProtocolError(ErrorCode.NICK_TAKEN, f"nick {nick!r} is taken")

        return self.store.claim(key, self.node).addCallbacks(claimed, self._unavailable)

    def _unavailable(self, failure: Failure):
        if failure.check(ProtocolError):
            return failure
        log.warn("the cluster store failed: {error}", error=failure.value)
        raise ProtocolError(ErrorCode.INTERNAL, "the server's cluster store is unavailable: try again")

    def release(self, key: str) -> Deferred:
        """Let the nick go; fires when the store has (or could not)."""
        d = self.store.release(key, self.node)
        return d.addErrback(lambda f: log.warn("could not release a nick: {error}", error=f.value))

    def save(self, session: Session) -> None:
        """The session's record, for a resume on any node."""
        record = {
            "node": self.node,
            "id": session.id,
            "nick": session.nick,
            "version": session.version,
            "account": session.account,
            "admin": session.admin,  # rights come only with a login that gave them
            "tokens": list(session.devices.values()),
        }
        self.store.save_session(session.key, record).addErrback(
            lambda f: log.warn("could not save a session: {error}", error=f.value)
        )

    def resume(self, key: str, token: str, version: int) -> Deferred:
        """A resume token of a session held by another node: the session moves
        here. Fires with (its record, its rooms as (key, name)), or None if
        the token is not that of a session elsewhere."""

        def check(record: dict | None):
            if record is None or record["node"] == self.node or record["version"] != version:
                return None
            given = token.encode("utf-8")
            if not any(hmac.compare_digest(given, t.encode("utf-8")) for t in record["tokens"]):
                return None
            old = record["node"]
            moved = dict(record, node=self.node)
            d = self.store.take_over(key, old, moved)
            return d.addCallback(self._taken, old, key, moved)

        return self.store.session(key).addCallback(check).addErrback(self._unavailable)

    def _taken(self, rooms, old: str, key: str, record: dict):
        if rooms is None:
            return None  # it moved or went meanwhile
        self.store.send(old, {"kind": "moved", "key": key}).addErrback(lambda f: None)
        return record, rooms

    def whisper(self, nick_key: str, private: codec.Private) -> Deferred[bool]:
        """To a session on another node: False if nobody there has the nick."""

        def owner(record: dict | None) -> Deferred[bool] | bool:
            if record is None or record["node"] == self.node:
                return False
            message = {
                "kind": "whisper",
                "private": {
                    "ts": private.ts,
                    "sender": private.sender,
                    "to": private.to,
                    "text": private.text,
                },
            }
            return self.store.send(record["node"], message).addCallback(lambda _: True)

        return self.store.session(nick_key).addCallback(owner).addErrback(self._unavailable)


class ClusterLog:
    """The :class:`~chatproto.backends.eventlog.EventLog` of a cluster node:
    history pages read from the rooms' streams. Appending is the cluster's
    (:meth:`Cluster.append`), which puts presence in the same order."""

    def __init__(self, store: StreamStore) -> None:
        self.store = store
        self._started = False
        self._waiting: list[Deferred] = []

    def started(self) -> None:
        """The node has joined: reads asked for before go now."""
        self._started = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _when_started(self, read) -> Deferred:
        if self._started:
            return read()
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d.addCallback(lambda _: read())

    def append(self, drafts) -> Deferred:
        raise StoreError("a cluster node appends through its Cluster")

    def before(self, seq: int | None, limit: int, room: str = DEFAULT_ROOM) -> Deferred:
        return self._page(self._when_started(lambda: self.store.before(room, seq, limit)))

    def after(self, seq: int, limit: int, room: str = DEFAULT_ROOM) -> Deferred:
        return self._page(self._when_started(lambda: self.store.after(room, seq, limit)))

    def _page(self, d: Deferred) -> Deferred:
        d.addCallback(lambda page: ([_message(seq, data) for seq, data in page[0]], page[1]))
        return d.addErrback(_store_error)

    def topic(self, room: str) -> Deferred:
        def parse(t):
            return Topic(t["text"], t["by"], t["ts"]) if t and t["text"] else None

        d = self._when_started(lambda: self.store.topic(room))
        return d.addCallback(parse).addErrback(_store_error)

    def set_topic(self, room: str, topic) -> Deferred:
        return succeed(None)  # a topic entry keeps it (Cluster.append)

    def check(self) -> Deferred:
        return self.store.client.call("PING").addCallback(lambda _: None).addErrback(_store_error)

    def maintain(self) -> None:
        pass  # the store keeps itself (appendfsync, trimming on append)

    def close(self) -> None:
        pass


def _store_error(failure: Failure):
    if failure.check(StoreError):
        return failure
    raise StoreError(f"the cluster store failed: {failure.value}")
