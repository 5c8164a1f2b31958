"""Shared files' records on Redis, for a cluster: every node sees every
upload (the :class:`~chatproto.backends.files.FileRecords` of ``--cluster``).

Keys under the prefix P (names percent-escaped): ``P:f:ID`` (a hash: the
record's fields, an absent one is None, and ``list``, the key of the
message that carries it), ``P:fm:ROOM:SEQ`` (the ids a message carries,
in order), ``P:fu`` (unattached ids by upload time),
``P:fd:DIGEST`` (how many records name a blob, as file or thumbnail),
``P:fused`` (owner -> bytes) and ``P:fusedall``. Every change is one Lua
script: Redis runs scripts one at a time, so two nodes removing records
that share a blob can't both think another still names it, nor both
miss that none does.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from chatproto.backends.files import FileStoreError, StoredFile
from chatproto.backends.redis import Commands, Script
from chatproto.backends.streams import escape
from chatproto.deferreds import every

#: A new record: refused (0) if its id is taken. ARGV[4] is its message's
#: list, should it come attached.
ADD = Script(
    """
local p = ARGV[1]
local key = p .. ':f:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then return 0 end
local fields = cjson.decode(ARGV[3])
for i = 1, #fields, 2 do redis.call('HSET', key, fields[i], fields[i + 1]) end
local size = tonumber(redis.call('HGET', key, 'size'))
local owner = redis.call('HGET', key, 'owner')
redis.call('INCR', p .. ':fd:' .. redis.call('HGET', key, 'digest'))
local thumb = redis.call('HGET', key, 'thumb')
if thumb then redis.call('INCR', p .. ':fd:' .. thumb) end
if redis.call('HGET', key, 'seq') then
  redis.call('HSET', key, 'list', ARGV[4])
  redis.call('RPUSH', ARGV[4], ARGV[2])
else
  redis.call('ZADD', p .. ':fu', redis.call('HGET', key, 'uploaded'), ARGV[2])
end
redis.call('HINCRBY', p .. ':fused', owner, size)
redis.call('INCRBY', p .. ':fusedall', size)
return 1
"""
)

#: Uploads carried by a message: each one of ARGV[2]'s room not yet attached.
ATTACH = Script(
    """
local p, room, seq, list = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 5, #ARGV do
  local key = p .. ':f:' .. ARGV[i]
  if redis.call('HGET', key, 'room') == room and not redis.call('HGET', key, 'seq') then
    redis.call('HSET', key, 'seq', seq, 'list', list)
    redis.call('RPUSH', list, ARGV[i])
    redis.call('ZREM', p .. ':fu', ARGV[i])
  end
end
return 1
"""
)

#: Records gone; answers the digests no record names any more.
REMOVE = Script(
    """
local p = ARGV[1]
local orphans, seen = {}, {}
local function release(digest)
  if not digest then return end
  local left = redis.call('DECR', p .. ':fd:' .. digest)
  if left <= 0 then
    redis.call('DEL', p .. ':fd:' .. digest)
    if not seen[digest] then
      seen[digest] = true
      table.insert(orphans, digest)
    end
  end
end
for i = 2, #ARGV do
  local key = p .. ':f:' .. ARGV[i]
  local f = redis.call('HMGET', key, 'digest', 'thumb', 'owner', 'size', 'list')
  if f[1] then
    redis.call('DEL', key)
    redis.call('ZREM', p .. ':fu', ARGV[i])
    if f[5] then redis.call('LREM', f[5], 0, ARGV[i]) end
    local size = tonumber(f[4])
    if redis.call('HINCRBY', p .. ':fused', f[3], -size) <= 0 then redis.call('HDEL', p .. ':fused', f[3]) end
    redis.call('INCRBY', p .. ':fusedall', -size)
    release(f[1])
    release(f[2])
  end
end
return orphans
"""
)

_INTS = ("size", "width", "height", "seq")


def _fields(record: StoredFile) -> list[str]:
    """The record as a hash's fields and values (None fields left out)."""
    flat: list[str] = []
    for name in StoredFile.__slots__:
        value = getattr(record, name)
        if value is not None:
            flat += [name, repr(value) if isinstance(value, float) else str(value)]
    return flat


def _record(flat: list) -> StoredFile | None:
    """A record from HGETALL's answer; None for no hash."""
    if not flat:
        return None
    raw = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
    raw.pop("list", None)
    values: dict[str, object] = dict(raw)
    for name in _INTS:
        if name in raw:
            values[name] = int(raw[name])
    values["uploaded"] = float(raw["uploaded"])
    return StoredFile(**values)  # type: ignore[arg-type]


def _store_error(failure: Failure):
    raise FileStoreError(f"the cluster's file records failed: {failure.value}")


class RedisFileRecords:
    """The records under ``prefix`` (the cluster's), in the Redis ``client`` reaches."""

    def __init__(self, client: Commands, prefix: str = "chat") -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _call(self, *args) -> Deferred:
        return self.client.call_when_up(*args).addErrback(_store_error)

    def _script(self, script: Script, args: list) -> Deferred:
        d = self.client.when_up().addCallback(lambda _: script(self.client, [], [self.prefix, *args]))
        return d.addErrback(_store_error)

    def _records(self, escaped_ids: list[bytes]) -> Deferred[list[StoredFile]]:
        """The records of these ids (as a list or a sorted set holds them:
        escaped), pipelined, in order, those that exist."""
        if not escaped_ids:
            return succeed([])
        calls = [self._call("HGETALL", self._key("f", id.decode())) for id in escaped_ids]
        d = every(calls)
        return d.addCallback(lambda answers: [r for r in map(_record, answers) if r is not None])

    def add(self, record: StoredFile) -> Deferred[None]:
        def added(made: int) -> None:
            if not made:
                raise FileStoreError(f"there is already an upload {record.id!r}")

        listing = self._key("fm", escape(record.room), str(record.seq))
        d = self._script(ADD, [escape(record.id), json.dumps(_fields(record)), listing])
        return d.addCallback(added)

    def get(self, id: str) -> Deferred[StoredFile | None]:
        return self._call("HGETALL", self._key("f", escape(id))).addCallback(_record)

    def attach(self, ids: list[str], room: str, seq: int) -> Deferred[None]:
        """Only uploads of ``room`` not yet attached are attached: an upload
        belongs to one message."""
        listing = self._key("fm", escape(room), str(seq))
        d = self._script(ATTACH, [room, seq, listing, *(escape(id) for id in ids)])
        return d.addCallback(lambda _: None)

    def of_message(self, room: str, seq: int) -> Deferred[list[StoredFile]]:
        d = self._call("LRANGE", self._key("fm", escape(room), str(seq)), 0, -1)
        return d.addCallback(self._records)

    def remove(self, ids: list[str]) -> Deferred[list[str]]:
        d = self._script(REMOVE, [escape(id) for id in ids])
        return d.addCallback(lambda orphans: [o.decode() for o in orphans])

    def unattached_before(self, ts: float, limit: int) -> Deferred[list[StoredFile]]:
        d = self._call("ZRANGEBYSCORE", self._key("fu"), "-inf", f"({ts!r}", "LIMIT", 0, limit)
        return d.addCallback(self._records)

    def used(self, owner: str) -> Deferred[int]:
        return self._call("HGET", self._key("fused"), owner).addCallback(lambda n: int(n or 0))

    def used_by_all(self) -> Deferred[int]:
        return self._call("GET", self._key("fusedall")).addCallback(lambda n: int(n or 0))
