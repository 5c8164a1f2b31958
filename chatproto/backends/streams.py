"""The cluster's shared store on Redis (or Valkey) Streams.

Each room is a stream of entries ``ID KIND NODE|BATCH|DATA`` (KIND: m, j,
l or o; DATA: JSON). A message's entry ID is ``SEQ-0``, where SEQ is the
room's next seq, taken by the same Lua script that adds the entry; a
presence entry (join, leave, topic) gets ``SEQ-N`` after the last message,
so the stream is the room's one total order and a history page is a range
of IDs. The scripts keep what a node joining later must know beside the
stream: the room's members (a hash) and its topic. Nicks are claimed by a
node while its heartbeat key lives; a node whose heartbeat has expired is
reaped by one survivor, whose script announces its sessions' leaves in
their rooms, once.

Key layout under the prefix P (names are percent-escaped, so a name's
``:`` can't make two keys meet): ``P:r:ROOM`` (stream), ``P:r:ROOM:seq``,
``P:r:ROOM:m`` (members: id -> JSON), ``P:r:ROOM:topic``, ``P:r:ROOM:rules``, ``P:nick:KEY``
(the owning node), ``P:s:KEY`` (the session: JSON) and ``P:s:KEY:rooms``,
``P:nodes`` (live node names), ``P:node:N`` (heartbeat), ``P:node:N:rooms``,
``P:node:N:nicks`` and ``P:node:N:in`` (the node's inbox stream), and
``P:rooms`` (every room with members: key -> name).
One Redis server (with replicas if wanted), not Redis Cluster: the scripts
touch keys they compute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto.backends.redis import RedisClient, Script, StoreLost

log = Logger()

# A page of history, newest first: scan back in chunks, keep messages, stop at
# ``want`` of them or when the scan budget is spent (presence between them).
_COLLECT = """
local function collect(stream, hi, lo, want, forward)
  local found, scanned = {}, 0
  while #found < want and scanned < 20000 do
    local chunk
    if forward then
      chunk = redis.call('XRANGE', stream, lo, hi, 'COUNT', 256)
    else
      chunk = redis.call('XREVRANGE', stream, hi, lo, 'COUNT', 256)
    end
    if #chunk == 0 then break end
    for _, entry in ipairs(chunk) do
      local f = entry[2]
      if f[1] == 'm' and #found < want then
        found[#found + 1] = {string.match(entry[1], '^(%d+)'), string.match(f[2], '^[^|]*|[^|]*|(.*)$')}
      end
    end
    scanned = scanned + #chunk
    local last = chunk[#chunk][1]
    if forward then lo = '(' .. last else hi = '(' .. last end
  end
  return found
end
"""

#: ARGV[1]: {"p": prefix, "node", "batch", "keep", "rooms": [{"k": room, "e": [entry]}]}
#: entry: a message's or a presence record's fields (chatproto.core.records)
#: Returns, per room, each entry's seq (0 for presence).
APPEND = Script(
    """
local a = cjson.decode(ARGV[1])
local P, node = a.p, a.node
local tag = node .. '|' .. a.batch .. '|'
local out = {}
for _, room in ipairs(a.rooms) do
  local r = P .. ':r:' .. room.k
  local seqs = {}
  for _, e in ipairs(room.e) do
    if e.t == 'm' then
      local seq = redis.call('INCR', r .. ':seq')
      if a.keep > 0 and seq > a.keep then
        redis.call('XADD', r, 'MINID', '~', (seq - a.keep) .. '-0', seq .. '-0', 'm', tag .. e.d)
      else
        redis.call('XADD', r, seq .. '-0', 'm', tag .. e.d)
      end
      seqs[#seqs + 1] = seq
    else
      local seq = redis.call('GET', r .. ':seq') or '0'
      if e.t == 'j' then
        redis.call('HSET', r .. ':m', e.id, e.m)
        redis.call('SETNX', r .. ':name', room.n)
        redis.call('HSET', P .. ':rooms', room.k, redis.call('GET', r .. ':name'))
        redis.call('SADD', P .. ':node:' .. node .. ':rooms', room.k)
        redis.call('HSET', P .. ':s:' .. e.key .. ':rooms', room.k, room.n)
      elseif e.t == 'l' then
        redis.call('HDEL', r .. ':m', e.id)
        redis.call('HDEL', P .. ':s:' .. e.key .. ':rooms', room.k)
        if e.perm == 0 and redis.call('HLEN', r .. ':m') == 0 then
          redis.call('DEL', r .. ':topic', r .. ':name', r .. ':rules')
          redis.call('HDEL', P .. ':rooms', room.k)
        end
      elseif e.t == 'o' then
        redis.call('SET', r .. ':topic', e.d)
      elseif e.t == 'r' then
        redis.call('SET', r .. ':rules', e.d)
      end
      redis.call('XADD', r, seq .. '-*', e.t, tag .. e.d)
      seqs[#seqs + 1] = 0
    end
  end
  out[#out + 1] = seqs
end
return out
"""
)

#: A room as a node first sees it: [last ID, members (flat), topic, seq, recent messages, name,
#: rules (with its guest operators) as last changed while it had members].
SNAPSHOT = Script(
    _COLLECT
    + """
local r = ARGV[1]
local last = redis.call('XREVRANGE', r, '+', '-', 'COUNT', 1)
local position = '0-0'
if #last > 0 then position = last[1][1] end
local recent = collect(r, '+', '-', tonumber(ARGV[2]), false)
return {position, redis.call('HGETALL', r .. ':m'), redis.call('GET', r .. ':topic'),
  redis.call('GET', r .. ':seq') or '0', recent, redis.call('GET', r .. ':name'),
  redis.call('GET', r .. ':rules')}
"""
)

#: Up to ARGV[3] messages before (ARGV[2] = '(S-0' or '+') or after ('(S-0'), and one more to tell "more".
PAGE = Script(
    _COLLECT
    + """
if ARGV[4] == 'after' then
  return collect(ARGV[1], '+', ARGV[2], tonumber(ARGV[3]), true)
end
return collect(ARGV[1], ARGV[2], '-', tonumber(ARGV[3]), false)
"""
)

#: Every room with members anywhere: [name, members, topic JSON or nil].
ROOMS = Script(
    """
local out = {}
local rooms = redis.call('HGETALL', ARGV[1] .. ':rooms')
for i = 1, #rooms, 2 do
  local r = ARGV[1] .. ':r:' .. rooms[i]
  out[#out + 1] = {rooms[i + 1], redis.call('HLEN', r .. ':m'), redis.call('GET', r .. ':topic')}
end
return out
"""
)

#: Claim a nick for a node, unless a live node holds it: nil, or the holder.
CLAIM = Script(
    """
local P, key, node = ARGV[1], ARGV[2], ARGV[3]
local k = P .. ':nick:' .. key
local owner = redis.call('GET', k)
if owner and owner ~= node and redis.call('EXISTS', P .. ':node:' .. owner) == 1 then
  return owner
end
redis.call('SET', k, node)
redis.call('SADD', P .. ':node:' .. node .. ':nicks', key)
return false
"""
)

#: Let go of a nick (and its session record) if this node holds it.
RELEASE = Script(
    """
local P, key, node = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', P .. ':nick:' .. key) == node then
  redis.call('DEL', P .. ':nick:' .. key, P .. ':s:' .. key, P .. ':s:' .. key .. ':rooms')
end
redis.call('SREM', P .. ':node:' .. node .. ':nicks', key)
return 1
"""
)

#: A session moves to node ARGV[4] from ARGV[3] (a resume): its record, its
#: nick and its member entries now name the new node. Returns its rooms (key,
#: name, flat), or nil if it had moved or gone meanwhile.
TAKE_OVER = Script(
    """
local P, key, old, new, record = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local s = redis.call('GET', P .. ':s:' .. key)
if not s or cjson.decode(s).node ~= old then return false end
redis.call('SET', P .. ':s:' .. key, record)
redis.call('SET', P .. ':nick:' .. key, new)
redis.call('SREM', P .. ':node:' .. old .. ':nicks', key)
redis.call('SADD', P .. ':node:' .. new .. ':nicks', key)
local rooms = redis.call('HGETALL', P .. ':s:' .. key .. ':rooms')
local id = ARGV[6]
for i = 1, #rooms, 2 do
  local room = rooms[i]
  local m = P .. ':r:' .. room .. ':m'
  local entry = redis.call('HGET', m, id)
  if entry then
    local member = cjson.decode(entry)
    member.node = new
    redis.call('HSET', m, id, cjson.encode(member))
  end
  redis.call('SADD', P .. ':node:' .. new .. ':rooms', room)
end
return rooms
"""
)

#: A node whose heartbeat expired: its members leave every room, announced
#: once (by whoever runs this first), its nicks and sessions go. 1 if reaped here.
REAP = Script(
    """
local P, dead, reason = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. ':node:' .. dead) == 1 then return 0 end
if redis.call('SREM', P .. ':nodes', dead) == 0 then return 0 end
for _, room in ipairs(redis.call('SMEMBERS', P .. ':node:' .. dead .. ':rooms')) do
  local r = P .. ':r:' .. room
  local members = redis.call('HGETALL', r .. ':m')
  for i = 1, #members, 2 do
    local m = cjson.decode(members[i + 1])
    if m.node == dead then
      redis.call('HDEL', r .. ':m', members[i])
      redis.call('HDEL', P .. ':s:' .. m.key .. ':rooms', room)
      local seq = redis.call('GET', r .. ':seq') or '0'
      local d = '{"id":' .. members[i] .. ',"nick":' .. cjson.encode(m.nick) ..
        ',"key":' .. cjson.encode(m.key) .. ',"reason":' .. cjson.encode(reason) .. '}'
      redis.call('XADD', r, seq .. '-*', 'l', '|0|' .. d)
    end
  end
  if redis.call('HLEN', r .. ':m') == 0 then
    redis.call('HDEL', P .. ':rooms', room)
  end
end
for _, key in ipairs(redis.call('SMEMBERS', P .. ':node:' .. dead .. ':nicks')) do
  if redis.call('GET', P .. ':nick:' .. key) == dead then
    redis.call('DEL', P .. ':nick:' .. key, P .. ':s:' .. key, P .. ':s:' .. key .. ':rooms')
  end
end
local n = P .. ':node:' .. dead
redis.call('DEL', n .. ':rooms', n .. ':nicks', n .. ':in')
return 1
"""
)


def escape(name: str) -> str:
    """A room or nick key as it appears inside a Redis key."""
    return quote(name, safe="")


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a room's stream, as every node reads it."""

    id: str  # the stream ID, "SEQ-N"
    kind: str  # m (message), j (join), l (leave), o (topic)
    seq: int  # the message's seq; 0 for presence
    raw: bytes  # what happened, as JSON (decoded only where it is applied: ``data``)
    node: str  # the node that wrote it ("" for a reaper's announcement)
    batch: int  # that node's batch number

    @property
    def data(self) -> dict:
        return json.loads(self.raw)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A room as a node starts following it: its stream from ``position`` on."""

    position: str
    members: dict[int, dict]  # id -> {"node", "nick", "key", "op"}
    topic: dict | None  # {"text", "by", "ts"}
    seq: int
    recent: list[tuple[int, dict]]  # (seq, message data), oldest first
    name: str | None  # as the cluster first knew it
    rules: dict | None  # {"rules": stored rules, "guest_ops": [id]}, if changed while it had members


def parse_entry(raw: list) -> Entry:
    """An entry is ``ID KIND NODE|BATCH|DATA``: one field, so a reply of a
    thousand entries parses quickly; a message's seq is its ID's first part."""
    ident, (kind, value) = raw
    node, batch, data = value.split(b"|", 2)
    kind = kind.decode()
    seq = int(ident[: ident.index(b"-")]) if kind == "m" else 0
    return Entry(ident.decode(), kind, seq, data, node.decode(), int(batch))


def _messages(found: list) -> list[tuple[int, dict]]:
    return [(int(seq), json.loads(data)) for seq, data in found]


class StreamStore:
    """The scripts and reads the cluster needs, over one command connection."""

    def __init__(self, client: RedisClient, prefix: str = "chat", keep: int = 100_000) -> None:
        self.client = client
        self.prefix = prefix
        self.keep = keep  # messages kept per room (0: all)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def stream(self, room: str) -> str:
        return self.key("r", escape(room))

    # -- nodes -----------------------------------------------------------------------

    def new_node(self) -> Deferred[int]:
        """A number no node has had: a node's name, and the high part of its ids."""
        return self.client.call("INCR", self.key("node", "ids"))

    def heartbeat(self, node: str, ttl_ms: int) -> Deferred:
        self.client.call("SADD", self.key("nodes"), node)
        return self.client.call("SET", self.key("node", node), "1", "PX", ttl_ms)

    def nodes(self) -> Deferred[list[str]]:
        d = self.client.call("SMEMBERS", self.key("nodes"))
        return d.addCallback(lambda names: [n.decode() for n in names])

    def alive(self, node: str) -> Deferred[bool]:
        return self.client.call("EXISTS", self.key("node", node)).addCallback(bool)

    def reap(self, node: str, reason: str = "connection_lost") -> Deferred[bool]:
        return REAP(self.client, [], [self.prefix, node, reason]).addCallback(bool)

    def leave_cluster(self, node: str) -> Deferred:
        """A clean stop: the heartbeat goes, so the others reap at once."""
        return self.client.call("DEL", self.key("node", node))

    # -- rooms -------------------------------------------------------------------------

    def append(
        self, node: str, batch: int, rooms: list[tuple[str, str, list[dict]]]
    ) -> Deferred[list[list[int]]]:
        """Each room's (key, name, entries) in its stream, in one script."""
        doc = {
            "p": self.prefix,
            "node": node,
            "batch": batch,
            "keep": self.keep,
            "rooms": [{"k": escape(room), "n": name, "e": entries} for room, name, entries in rooms],
        }
        return APPEND(self.client, [], [json.dumps(doc, ensure_ascii=False, separators=(",", ":"))])

    def snapshot(self, room: str, replay: int) -> Deferred[Snapshot]:
        def parse(reply) -> Snapshot:
            position, flat, topic, seq, recent, name, rules = reply
            members = {int(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
            return Snapshot(
                position.decode() if isinstance(position, bytes) else position,
                members,
                json.loads(topic) if topic else None,
                int(seq),
                list(reversed(_messages(recent))),
                name.decode() if name else None,
                json.loads(rules) if rules else None,
            )

        return SNAPSHOT(self.client, [], [self.stream(room), max(1, replay)]).addCallback(parse)

    def before(self, room: str, seq: int | None, limit: int) -> Deferred[tuple[list[tuple[int, dict]], bool]]:
        high = "+" if seq is None else f"({seq}-0"
        d = PAGE(self.client, [], [self.stream(room), high, limit + 1, "before"])
        return d.addCallback(lambda found: (list(reversed(_messages(found[:limit]))), len(found) > limit))

    def after(self, room: str, seq: int, limit: int) -> Deferred[tuple[list[tuple[int, dict]], bool]]:
        d = PAGE(self.client, [], [self.stream(room), f"({seq}-0", limit + 1, "after"])
        return d.addCallback(lambda found: (_messages(found[:limit]), len(found) > limit))

    def rooms(self) -> Deferred[list[tuple[str, int, dict | None]]]:
        """Every room with members on any node: (name, members, topic)."""

        def parse(rows) -> list[tuple[str, int, dict | None]]:
            return [
                (name.decode(), count, json.loads(topic) if topic else None) for name, count, topic in rows
            ]

        return ROOMS(self.client, [], [self.prefix]).addCallback(parse)

    def topic(self, room: str) -> Deferred[dict | None]:
        d = self.client.call("GET", self.stream(room) + ":topic")
        return d.addCallback(lambda raw: json.loads(raw) if raw else None)

    # -- nicks and sessions ---------------------------------------------------------------

    def claim(self, key: str, node: str) -> Deferred[str | None]:
        """None if ``node`` now holds the nick; else the live node that does."""
        d = CLAIM(self.client, [], [self.prefix, escape(key), node])
        return d.addCallback(lambda owner: owner.decode() if owner else None)

    def release(self, key: str, node: str) -> Deferred:
        return RELEASE(self.client, [], [self.prefix, escape(key), node])

    def save_session(self, key: str, record: dict) -> Deferred:
        return self.client.call("SET", self.key("s", escape(key)), json.dumps(record))

    def session(self, key: str) -> Deferred[dict | None]:
        d = self.client.call("GET", self.key("s", escape(key)))
        return d.addCallback(lambda raw: json.loads(raw) if raw else None)

    def take_over(self, key: str, old: str, record: dict) -> Deferred[list[tuple[str, str]] | None]:
        """The session is ``record["node"]``'s now; its rooms (key, name), or
        None if it was not ``old``'s any more."""
        args = [self.prefix, escape(key), old, record["node"], json.dumps(record), str(record["id"])]
        d = TAKE_OVER(self.client, [], args)

        def rooms(flat):
            if flat is None:
                return None
            return [(_unescape(flat[i]), flat[i + 1].decode()) for i in range(0, len(flat), 2)]

        return d.addCallback(rooms)

    # -- node inboxes ---------------------------------------------------------------------

    def inbox(self, node: str) -> str:
        return self.key("node", node, "in")

    def send(self, node: str, message: dict) -> Deferred:
        """A message to one node (a whisper, a session it lost): read with its rooms."""
        raw = json.dumps(message, ensure_ascii=False)
        return self.client.call("XADD", self.inbox(node), "MAXLEN", "~", 10000, "*", "d", raw)


def _unescape(raw: bytes) -> str:
    return unquote(raw.decode())


def unescape(escaped: str) -> str:
    """A key as :func:`escape` had it."""
    return unquote(escaped)


class StreamReader:
    """Tails the streams of the rooms this node follows, and its inbox, with
    one blocking XREAD on a connection of its own: each stream is read once,
    whatever the number of local members. ``deliver(room, entries)`` and
    ``received(messages)`` are called in stream order."""

    BLOCK_MS = 5000
    COUNT = 1000

    def __init__(self, client: RedisClient, store: StreamStore, node: str, deliver, received) -> None:
        self.client = client
        self.store = store
        self.node = node
        self._deliver = deliver
        self._received = received
        self._positions: dict[str, str] = {}  # room -> the last ID read
        self._streams: dict[str, str] = {}  # stream key -> room
        self._inbox = store.inbox(node)
        self._inbox_at = "$"
        self._running = False
        self._reading = False

    def follow(self, room: str, position: str) -> None:
        """Read ``room`` from just after ``position`` (a snapshot's) on."""
        self._positions[room] = position
        self._streams[self.store.stream(room)] = room
        self._wake()

    def unfollow(self, room: str) -> None:
        self._positions.pop(room, None)
        self._streams.pop(self.store.stream(room), None)

    def following(self, room: str) -> bool:
        return room in self._positions

    def start(self) -> Deferred:
        """Fires once the inbox is being read (messages sent to it after this arrive)."""
        self._running = True
        d = self.client.connected()
        d.addCallback(lambda _: self.client.call("XREVRANGE", self._inbox, "+", "-", "COUNT", 1))
        d.addCallback(self._inbox_start)
        return d

    def _inbox_start(self, last) -> None:
        self._inbox_at = last[0][0].decode() if last else "0-0"
        self._read()

    def stop(self) -> None:
        self._running = False

    def _wake(self) -> None:
        """Interrupt a blocked XREAD so it reads the new set of streams: an
        empty message to the node's own inbox."""
        if self._reading:
            self.store.send(self.node, {}).addErrback(lambda f: None)

    def _read(self) -> None:
        if not self._running or self._reading:
            return
        streams = [self._inbox, *(self.store.stream(room) for room in self._positions)]
        ids = [self._inbox_at, *self._positions.values()]
        self._reading = True
        d = self.client.call("XREAD", "COUNT", self.COUNT, "BLOCK", self.BLOCK_MS, "STREAMS", *streams, *ids)
        d.addCallbacks(self._got, self._failed)

    def _got(self, reply) -> None:
        self._reading = False
        try:
            self._dispatch(reply or ())
        except Exception:
            log.failure("a room stream's entries could not be handled")  # the reader goes on
        self._read()

    def _dispatch(self, reply) -> None:
        for raw_key, raw_entries in reply:
            key = raw_key.decode()
            if key == self._inbox:
                self._inbox_at = raw_entries[-1][0].decode()
                messages = [json.loads(fields[1]) for _, fields in raw_entries]
                messages = [m for m in messages if m]
                if messages:
                    self._received(messages)
                continue
            room = self._streams.get(key)
            if room is None:
                continue  # unfollowed meanwhile
            self._positions[room] = raw_entries[-1][0].decode()
            entries = []
            for raw in raw_entries:
                try:
                    entries.append(parse_entry(raw))
                except (ValueError, TypeError):
                    log.warn("skipped a malformed entry {id} in room {room}", id=raw[0], room=room)
            self._deliver(room, entries)

    def _failed(self, failure) -> None:
        self._reading = False
        if not self._running:
            return
        if failure.check(StoreLost):
            self._running = False  # nothing will come: the node refuses everything now
            return
        log.warn("reading the room streams failed: {error}; again once Redis is back", error=failure.value)
        self.client.connected().addCallback(lambda _: self._read())
