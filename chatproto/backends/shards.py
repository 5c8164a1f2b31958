"""Reading the rooms of a sharded cluster (a Redis Cluster): no blocking
read can span the hash slots of several rooms, so each room's stream is
read on its own, when its shard channel says something was written.

Every script that writes a room's stream publishes on the shard channel
named as the stream (``SPUBLISH``, in the room's slot); a node subscribes,
on the primary serving each room's slot, to the channels of the rooms it
follows and of its inbox, and reads a stream (a plain ``XREAD`` of that
one stream) when its channel speaks. Pub/sub may lose a message (a
connection that drops, a slot that moves), so every stream is also read
once a second whatever was heard: a lost notice costs latency, never an
entry.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends.redis import RedisClient, RedisProtocol, StoreLost
from chatproto.backends.redis_cluster import ClusterClient, node_address
from chatproto.backends.streams import StreamReader, StreamStore
from chatproto.deferreds import every

log = Logger()


class ShardSubscriber:
    """Shard channels, each subscribed to on the primary that serves its
    slot as ``cluster``'s slot map says, and again on the next one when
    that changes or its connection does. ``on_push`` gets each message as
    RESP2 has it: ``[b"smessage", channel, data]``."""

    EVERY = 0.5  # seconds between checks that each channel is subscribed where its slot is

    def __init__(
        self,
        reactor: IReactorTime,
        cluster: ClusterClient,
        name: str,
        on_push: Callable[[object], None],
        channels: tuple[str, ...] = (),
    ) -> None:
        self._reactor = reactor
        self._cluster = cluster
        self.name = name
        self._on_push = on_push
        self._channels: set[str] = set(channels)
        self._clients: dict[str, RedisClient] = {}  # "host:port" -> a connection in subscribed mode
        self._on: dict[str, RedisProtocol] = {}  # channel -> the connection it was subscribed on
        self._heard: set[str] = set()  # ...and whose subscription was answered
        self._waiting: list[Deferred[None]] = []
        self._loop = LoopingCall(self._check)
        self._loop.clock = reactor
        self._running = False

    def start(self) -> None:
        self._running = True
        self._loop.start(self.EVERY, now=True)

    def stop(self) -> Deferred:
        self._running = False
        if self._loop.running:
            self._loop.stop()
        clients, self._clients = list(self._clients.values()), {}
        return every([c.stop() for c in clients]).addBoth(lambda _: None)

    def connected(self) -> Deferred[None]:
        """Fires once every channel is subscribed to (messages published after it are heard)."""
        if self._channels <= self._heard:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        self._subscribe(channel)

    def unsubscribe(self, channel: str) -> None:
        """Its messages are not handed on from now."""
        self._channels.discard(channel)
        proto = self._on.pop(channel, None)
        self._heard.discard(channel)
        if proto is not None and proto.transport is not None:
            proto.send_only("SUNSUBSCRIBE", channel)  # answered by a push, which is ignored

    def _client(self, where: str) -> RedisClient:
        client = self._clients.get(where)
        if client is None:
            node = node_address(self._cluster.address, where)
            client = self._clients[where] = RedisClient(
                self._reactor, node, self.name, on_push=self._pushed, keepalive=True
            )
            client.start()
            client.connected().addCallback(lambda _: self._check())
        return client

    def _subscribe(self, channel: str) -> None:
        where = self._cluster.where(channel) if self._running else None
        if where is None:
            return
        proto = self._client(where).connection
        if proto is None or self._on.get(channel) is proto:
            return
        self._on[channel] = proto
        self._heard.discard(channel)

        def answered(_: object) -> None:
            if self._on.get(channel) is proto:
                self._heard.add(channel)
            if self._channels <= self._heard:
                waiting, self._waiting = self._waiting, []
                for d in waiting:
                    d.callback(None)

        def refused(failure: Failure) -> None:
            if self._on.get(channel) is proto:
                del self._on[channel]  # asked again at the next check, where the map says then

        proto.execute("SSUBSCRIBE", channel).addCallbacks(answered, refused)

    def _check(self) -> None:
        for channel in list(self._channels):
            self._subscribe(channel)
        wanted = {self._cluster.where(channel) for channel in self._channels}
        for where in [w for w in self._clients if w not in wanted]:
            self._clients.pop(where).stop()  # no channel of ours is there any more

    def _pushed(self, push: object) -> None:
        if not isinstance(push, list) or len(push) < 2 or not isinstance(push[1], bytes):
            return
        channel = push[1].decode("utf-8", "replace")
        if push[0] == b"sunsubscribe":
            self._on.pop(channel, None)  # its slot moved: subscribed again where it is now
            self._heard.discard(channel)
        elif push[0] == b"smessage" and channel in self._channels:
            self._on_push(push)


class ShardedReader(StreamReader):
    """A :class:`~chatproto.backends.streams.StreamReader` for a sharded
    cluster: the same ``follow``, ``deliver`` and ``received``; each
    stream read by itself, one read in flight per stream, when its
    channel speaks and at least every ``POLL`` seconds."""

    POLL = 1.0

    def __init__(
        self,
        client: ClusterClient,
        store: StreamStore,
        node: str,
        deliver,
        received,
        clock: IReactorTime,
    ) -> None:
        super().__init__(client, store, node, deliver, received)
        self.cluster = client
        self.subscriber = ShardSubscriber(clock, client, "chat-reader-news", self._heard)
        self._busy: set[str] = set()  # streams with a read in flight
        self._again: set[str] = set()  # ...that spoke meanwhile
        self._poll = LoopingCall(self._read_all)
        self._poll.clock = clock

    def follow(self, room: str, position: str) -> None:
        stream = self.store.stream(room)
        self._positions[room] = position
        self._streams[stream] = room
        self.subscriber.subscribe(stream)
        self._read_one(stream)

    def unfollow(self, room: str) -> None:
        stream = self.store.stream(room)
        self._positions.pop(room, None)
        self._streams.pop(stream, None)
        self.subscriber.unsubscribe(stream)

    def _inbox_start(self, last) -> Deferred[None]:
        self._inbox_at = last[0][0].decode() if last else "0-0"
        self.subscriber.subscribe(self._inbox)
        self.subscriber.start()
        self._poll.start(self.POLL, now=True)
        return self.subscriber.connected()

    def stop(self) -> None:
        super().stop()
        if self._poll.running:
            self._poll.stop()
        self.subscriber.stop()

    def _wake(self) -> None:
        pass  # nothing blocks: a room followed is read at once

    def _read(self) -> None:
        self._read_all()

    def _read_all(self) -> None:
        for stream in [self._inbox, *self._streams]:
            self._read_one(stream)

    def _heard(self, push: object) -> None:
        assert isinstance(push, list)
        self._read_one(push[1].decode("utf-8", "replace"))

    def _read_one(self, stream: str) -> None:
        if not self._running:
            return
        if stream in self._busy:
            self._again.add(stream)
            return
        if stream == self._inbox:
            position = self._inbox_at
        else:
            room = self._streams.get(stream)
            if room is None:
                return
            position = self._positions[room]
        self._busy.add(stream)
        d = self.store.tail(stream, position, self.COUNT)
        d.addCallbacks(self._got_one, self._failed_one, callbackArgs=(stream,), errbackArgs=(stream,))

    def _got_one(self, entries: list, stream: str) -> None:
        self._busy.discard(stream)
        if not self._running:
            return
        full = len(entries) >= self.COUNT
        try:
            self._dispatch([(stream.encode(), entries)] if entries else ())
        except Exception:
            log.failure("a room stream's entries could not be handled")  # the reader goes on
        if full or stream in self._again:
            self._again.discard(stream)
            self._read_one(stream)

    def _failed_one(self, failure: Failure, stream: str) -> None:
        self._busy.discard(stream)
        self._again.discard(stream)
        if failure.check(StoreLost):
            self._running = False
            return
        # read again at the next poll (a shard failing over, a slot moving)
        log.debug("reading {stream} failed: {error}", stream=stream, error=failure.value)
