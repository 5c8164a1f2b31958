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
``P:node:N:nicks`` and ``P:node:N:in`` (the node's inbox stream),
``P:rooms`` (every room with members: key -> name), and ``P:secret:NAME``
(secrets every node shares: ``search`` signs search pages); the channels
``P:typing`` and ``P:pending`` (PENDING news) carry what is never stored.
One Redis server (with replicas if wanted), not Redis Cluster: the scripts
touch keys they compute.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.backends.redis import Commands, RedisError, RedisProtocol, Script, StoreLost
from chatproto.backends.replicas import NotReplicated, Replicas
from chatproto.deferreds import every

log = Logger()

# A script whose last key is ``...:mark`` (a read on a sharded cluster
# with --cluster-min-replicas) writes it first: the client then confirms
# the script on the replicas (WAIT) as it does a write, and so what it read
# is on them too (:mod:`~chatproto.backends.replicas`).
#
# Messages as pages show them. A message's entry (``SEQ-0``) holds what was
# said; once changed, its present state is in the hash ``:x`` (seq -> JSON,
# ending with its rev), and once its text changed (an edit, a deletion) its
# entry is gone from the stream and its seq is in the sorted set ``:h``: a
# page merges the stream's message entries with those seqs. A reply's page
# item carries the present state of the message it answers (its quote is
# computed from that, never from a copy). Under retention (``keep`` > 0,
# set by each script from its arguments) a room's messages are its last
# ``keep`` ones: the append trims the stream only roughly (``MINID ~``,
# whole nodes of it), so older ones left in it are no message any more,
# for pages and for search alike (cluster/search_index.py).
_HELPERS = """
if #KEYS > 1 and string.sub(KEYS[#KEYS], -5) == ':mark' then
  redis.call('SET', KEYS[#KEYS], '1', 'PX', 60000)  -- a read confirmed on replicas: MARKED
end
local keep, floors = 0, {}
local function first_kept(r)
  if keep <= 0 then return 1 end
  local first = floors[r]
  if not first then
    first = math.max(1, tonumber(redis.call('GET', r .. ':seq') or '0') - keep + 1)
    floors[r] = first
  end
  return first
end
local function body(raw)
  return string.match(raw, '^[^|]*|[^|]*|(.*)$')
end
local function entry_of(r, seq)
  local e = redis.call('XRANGE', r, seq .. '-0', seq .. '-0')
  if #e > 0 and e[1][2][1] == 'm' then return body(e[1][2][2]) end
  return nil
end
local function present(r, seq)
  if tonumber(seq) < first_kept(r) then return false end
  local s = redis.call('HGET', r .. ':x', seq)
  if s then return s end
  return entry_of(r, seq) or false
end
local function quoted(r, seq, data)
  local q = string.match(data, '^{"reply":(%d+)')
  local source = false
  if q then source = present(r, q) end
  return {seq, data, source}
end
"""

# A page of history, newest first (oldest first ``forward``): seqs lo..hi
# (hi nil: no bound), scanning the stream back in chunks, keeping messages,
# stopping at ``want`` of them or when the scan budget is spent (presence
# between them); merged with the moved messages of the same span.
_COLLECT = (
    _HELPERS
    + """
local function collect(r, hi, lo, want, forward)
  lo = math.max(lo, first_kept(r))
  local hiid, loid = '+', lo .. '-0'
  if hi then hiid = hi .. '-0' end
  local found, scanned, stopped = {}, 0, nil
  while #found < want do
    if scanned >= 20000 then stopped = true break end
    local chunk
    if forward then
      chunk = redis.call('XRANGE', r, loid, hiid, 'COUNT', 256)
    else
      chunk = redis.call('XREVRANGE', r, hiid, loid, 'COUNT', 256)
    end
    if #chunk == 0 then break end
    for _, entry in ipairs(chunk) do
      local f = entry[2]
      if f[1] == 'm' and #found < want then
        found[#found + 1] = {tonumber(string.match(entry[1], '^(%d+)')), body(f[2])}
      end
    end
    scanned = scanned + #chunk
    local last = chunk[#chunk][1]
    if forward then loid = '(' .. last else hiid = '(' .. last end
    if stopped == nil and scanned >= 20000 then stopped = tonumber(string.match(last, '^(%d+)')) end
  end
  if stopped == true then stopped = nil end
  if redis.call('EXISTS', r .. ':x') == 0 then
    local out = {}
    for i, m in ipairs(found) do out[i] = quoted(r, m[1], m[2]) end
    return out
  end
  local zhi = '+inf'
  if hi then zhi = hi end
  local moved
  if forward then
    moved = redis.call('ZRANGEBYSCORE', r .. ':h', lo, zhi, 'LIMIT', 0, want)
  else
    moved = redis.call('ZREVRANGEBYSCORE', r .. ':h', zhi, lo, 'LIMIT', 0, want)
  end
  local out, i, j = {}, 1, 1
  while #out < want do
    local a, b = found[i], nil
    if moved[j] then b = tonumber(moved[j]) end
    if b and stopped and ((forward and b > stopped) or ((not forward) and b < stopped)) then b = nil end
    if not a and not b then break end
    local take_moved
    if not a then take_moved = true
    elseif not b then take_moved = false
    elseif forward then take_moved = b < a[1]
    else take_moved = b > a[1] end
    if take_moved then
      local s = redis.call('HGET', r .. ':x', b)
      if s then out[#out + 1] = quoted(r, b, s) end
      j = j + 1
    else
      if b == a[1] then j = j + 1 end
      out[#out + 1] = quoted(r, a[1], redis.call('HGET', r .. ':x', a[1]) or a[2])
      i = i + 1
    end
  end
  return out
end
"""
)

#: Up to ARGV[2] entries of stream KEYS[1] after ID ARGV[1] (a sharded
#: cluster's reader; KEYS[2], if any, is its mark: written first).
TAIL = Script(
    """
if #KEYS > 1 then redis.call('SET', KEYS[2], '1', 'PX', 60000) end
return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
"""
)

#: One room's entries in its stream (KEYS[1]), in one script that touches
#: that room's keys alone (they share its hash slot in a Redis Cluster).
#: ARGV[1]: {"node", "batch", "keep", "n": name, "e": [entry], "sq"?, "wake"?};
#: entry: a message's or a presence record's fields (chatproto.core.records),
#: or a change's (t "c": "s" its seq, "k" its kind, "st" the message's new
#: state as JSON without its closing brace, "h" and "q" the entry's JSON
#: around it). A message entry may answer one ("r"). An entry with "v"
#: (>= 0) was decided on message "vs" as it was at rev "v": if that message
#: has changed since, nothing is written and the answer is {"retry"}; so too
#: if the room has another seq than "sq" (its new seqs were foreseen). A
#: room whose seq is below "fl" (the newest a node has seen there) lost
#: its messages: nothing is written, the answer is {"lost"}.
#: Returns [each entry's seq (a message's), rev (a change's) or 0; 1 if it
#: wrote the room's first message ever; 1 if the room has no member left
#: after a leave; the room's name as the cluster first knew it]; with
#: "wake", publishes on the shard channel named as the stream (a sharded
#: cluster's readers: :mod:`~chatproto.backends.shards`).
APPEND = Script(
    _HELPERS
    + """
local r = KEYS[1]
local a = cjson.decode(ARGV[1])
local node = a.node
local tag = node .. '|' .. a.batch .. '|'
local function token(seq)
  local s = redis.call('HGET', r .. ':x', seq)
  if not s then return 0 end
  return tonumber(string.match(s, ',"rev":(%d+)}$') or '0')
end
local now = tonumber(redis.call('GET', r .. ':seq') or '0')
if a.fl and now < a.fl then return {'lost'} end
if a.sq and now ~= a.sq then return {'retry'} end
for _, e in ipairs(a.e) do
  if e.v and e.v >= 0 and token(e.vs) ~= e.v then return {'retry'} end
end
-- a message's text changed: every copy of the old one leaves the stream
-- (its entry, its changes' entries), its present state stays in :x
-- (each entry taken out is named in the change's entry, with its node and
-- batch: a node that had not read it yet counts it as read)
local gone = {}
-- (and those a change entry taken out had taken out: a node that had not
-- read it learns of them here; the most recent 256 are named)
local function drop(id)
  local e = redis.call('XRANGE', r, id, id)
  if #e > 0 then
    local value = e[1][2][2]
    gone[#gone + 1] = {id, string.match(value, '^([^|]*|[^|]*)|')}
    if e[1][2][1] == 'c' then
      local earlier = string.match(value, ',"gone":(%[.*%])}$')
      if earlier then
        for _, item in ipairs(cjson.decode(earlier)) do gone[#gone + 1] = item end
      end
    end
    redis.call('XDEL', r, id)
  end
end
local function purge(seq)
  drop(seq .. '-0')
  local ids = redis.call('HGET', r .. ':ids', seq)
  if ids then
    for id in string.gmatch(ids, '%S+') do drop(id) end
    redis.call('HDEL', r .. ':ids', seq)
  end
  redis.call('ZADD', r .. ':h', seq, seq)
end
-- ...and so do the replies' copies of its start (their quotes)
local function detach(seq)
  local re = r .. ':re:' .. seq
  for _, reply in ipairs(redis.call('SMEMBERS', re)) do
    if redis.call('HEXISTS', r .. ':x', reply) == 0 then
      local data = entry_of(r, reply)
      if data then
        local cut = string.find(data, ',"q":', 1, true)
        if cut then data = string.sub(data, 1, cut - 1) .. '}' end
        redis.call('HSET', r .. ':x', reply, data)
      end
    end
    if redis.call('HEXISTS', r .. ':x', reply) == 1 then purge(reply) end
  end
  redis.call('DEL', re)
end
local seqs, first, emptied = {}, 0, 0
for _, e in ipairs(a.e) do
  if e.t == 'm' then
    local seq = redis.call('INCR', r .. ':seq')
    if a.keep > 0 and seq > a.keep then
      redis.call('XADD', r, 'MINID', '~', (seq - a.keep) .. '-0', seq .. '-0', 'm', tag .. e.d)
      local old = redis.call('ZRANGEBYSCORE', r .. ':h', '-inf', '(' .. (seq - a.keep))
      for _, gone in ipairs(old) do
        redis.call('HDEL', r .. ':x', gone)
        redis.call('HDEL', r .. ':ids', gone)
        redis.call('ZREM', r .. ':h', gone)
      end
    else
      redis.call('XADD', r, seq .. '-0', 'm', tag .. e.d)
    end
    if e.r then redis.call('SADD', r .. ':re:' .. e.r, seq) end
    if seq == 1 then first = 1 end
    seqs[#seqs + 1] = seq
  elseif e.t == 'c' then
    local rev = redis.call('INCR', r .. ':rev')
    local state = e.st .. ',"rev":' .. rev .. '}'
    redis.call('HSET', r .. ':x', e.s, state)
    redis.call('ZADD', r .. ':revs', rev, e.s)
    gone = {}
    if e.k == 'edit' or e.k == 'delete' then
      purge(e.s)
      detach(e.s)
    end
    local extra = ''
    if #gone > 256 then
      local recent = {}
      for i = #gone - 255, #gone do recent[#recent + 1] = gone[i] end
      gone = recent
    end
    if #gone > 0 then extra = ',"gone":' .. cjson.encode(gone) end
    local seq = redis.call('GET', r .. ':seq') or '0'
    local id = redis.call('XADD', r, seq .. '-*', 'c', tag .. e.h .. state .. (e.q or '') .. extra .. '}')
    local ids = redis.call('HGET', r .. ':ids', e.s)
    if ids then ids = ids .. ' ' .. id else ids = id end
    redis.call('HSET', r .. ':ids', e.s, ids)
    seqs[#seqs + 1] = rev
  else
    local seq = redis.call('GET', r .. ':seq') or '0'
    if e.t == 'j' then
      redis.call('HSET', r .. ':m', e.id, e.m)
      redis.call('SETNX', r .. ':name', a.n)
    elseif e.t == 'l' then
      redis.call('HDEL', r .. ':m', e.id)
      if e.perm == 0 and redis.call('HLEN', r .. ':m') == 0 then
        redis.call('DEL', r .. ':topic', r .. ':name', r .. ':rules')
        emptied = 1
      end
    elseif e.t == 'o' then
      redis.call('SET', r .. ':topic', e.d)
    elseif e.t == 'r' then
      redis.call('SET', r .. ':rules', e.d)
    elseif e.t == 'n' then
      local m = redis.call('HGET', r .. ':m', e.id)
      if m then
        local member = cjson.decode(m)
        member.nick = e.nick
        member.key = e.key
        redis.call('HSET', r .. ':m', e.id, cjson.encode(member))
      end
    elseif e.t == 'a' and e.id then
      local m = redis.call('HGET', r .. ':m', e.id)
      if m then
        local member = cjson.decode(m)
        member.away = e.away
        redis.call('HSET', r .. ':m', e.id, cjson.encode(member))
      end
    end
    redis.call('XADD', r, seq .. '-*', e.t, tag .. e.d)
    seqs[#seqs + 1] = 0
  end
end
if emptied == 1 and redis.call('HLEN', r .. ':m') > 0 then emptied = 0 end
if a.wake then redis.call('SPUBLISH', r, '') end
return {seqs, first, emptied, redis.call('GET', r .. ':name') or a.n}
"""
)

#: What a batch's changes and replies are decided on, as of now, in room
#: KEYS[1]: ARGV[1] {"keep", "s": [seq]}; [its seq, [[present state or nil,
#: the present state of the message it answers or nil]]].
READ = Script(
    _HELPERS
    + """
local a = cjson.decode(ARGV[1])
keep = a.keep
local r = KEYS[1]
local found = {}
for i, seq in ipairs(a.s) do
  local data = present(r, seq)
  if data then
    local q = quoted(r, seq, data)
    found[i] = {data, q[3]}
  else
    found[i] = {false, false}
  end
end
return {redis.call('GET', r .. ':seq') or '0', found}
""",
    reads_only=True,
)

#: The messages changed after rev ARGV[2], oldest change first, up to ARGV[3]
#: (retention ARGV[4]): [room's rev, [[seq, present state, answered message's state or nil]]].
CHANGED_AFTER = Script(
    _HELPERS
    + """
local r = ARGV[1]
keep = tonumber(ARGV[4])
local seqs = redis.call('ZRANGEBYSCORE', r .. ':revs', '(' .. ARGV[2], '+inf', 'LIMIT', 0, tonumber(ARGV[3]))
local found = {}
for _, seq in ipairs(seqs) do
  local s = tonumber(seq) >= first_kept(r) and redis.call('HGET', r .. ':x', seq)
  if s then found[#found + 1] = quoted(r, tonumber(seq), s) end
end
return {redis.call('GET', r .. ':rev') or '0', found}
"""
)

#: A room as a node first sees it (retention ARGV[3]): [last ID, members (flat), topic, seq,
#: recent messages, name, rules (with its guest operators) as last changed while it had members].
SNAPSHOT = Script(
    _COLLECT
    + """
local r = ARGV[1]
keep = tonumber(ARGV[3])
local last = redis.call('XREVRANGE', r, '+', '-', 'COUNT', 1)
local position = '0-0'
if #last > 0 then position = last[1][1] end
local recent = collect(r, nil, 1, tonumber(ARGV[2]), false)
return {position, redis.call('HGETALL', r .. ':m'), redis.call('GET', r .. ':topic'),
  redis.call('GET', r .. ':seq') or '0', recent, redis.call('GET', r .. ':name'),
  redis.call('GET', r .. ':rules'), redis.call('GET', r .. ':rev') or '0'}
"""
)

#: Up to ARGV[3] messages with seqs up to ARGV[2] ('' for no bound), newest
#: first, or ('after') from ARGV[2] on, oldest first, under retention ARGV[5];
#: ask one more to tell "more".
PAGE = Script(
    _COLLECT
    + """
local want = tonumber(ARGV[3])
keep = tonumber(ARGV[5])
if ARGV[4] == 'after' then
  return collect(ARGV[1], nil, tonumber(ARGV[2]), want, true)
end
local hi = nil
if ARGV[2] ~= '' then hi = tonumber(ARGV[2]) end
return collect(ARGV[1], hi, 1, want, false)
"""
)

#: A room (KEYS[1]) as a listing shows it: [members, topic JSON or nil, rules JSON or nil].
ROOM_INFO = Script(
    """
local r = KEYS[1]
return {redis.call('HLEN', r .. ':m'), redis.call('GET', r .. ':topic'), redis.call('GET', r .. ':rules')}
""",
    reads_only=True,
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

#: A session moves to node ARGV[4] from ARGV[3] (a resume): its record and
#: its nick now name the new node (its member entries, in their rooms'
#: slots, are moved next: :data:`MOVE_MEMBER`), and the old node's reapers
#: leave its id alone (``P:node:OLD:moved``). Returns its rooms (key, name,
#: flat), or nil if it had moved or gone meanwhile, or if the old node is
#: being reaped (its sessions' leaves announced: the resume is a new login).
TAKE_OVER = Script(
    """
local P, key, old, new, record, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local s = redis.call('GET', P .. ':s:' .. key)
if not s or cjson.decode(s).node ~= old then return false end
if redis.call('EXISTS', P .. ':node:' .. old .. ':reaping') == 1 then return false end
redis.call('SET', P .. ':s:' .. key, record)
redis.call('SET', P .. ':nick:' .. key, new)
redis.call('SREM', P .. ':node:' .. old .. ':nicks', key)
redis.call('SADD', P .. ':node:' .. new .. ':nicks', key)
redis.call('SADD', P .. ':node:' .. old .. ':moved', id)
local rooms = redis.call('HGETALL', P .. ':s:' .. key .. ':rooms')
for i = 1, #rooms, 2 do
  redis.call('SADD', P .. ':node:' .. new .. ':rooms', rooms[i])
end
return rooms
"""
)

#: Session ARGV[1]'s member entry in room KEYS[1] names node ARGV[2] now.
MOVE_MEMBER = Script(
    """
local m = KEYS[1] .. ':m'
local entry = redis.call('HGET', m, ARGV[1])
if entry then
  local member = cjson.decode(entry)
  member.node = ARGV[2]
  redis.call('HSET', m, ARGV[1], cjson.encode(member))
end
return 1
"""
)

#: A node whose heartbeat expired is reaped in three steps, each in one
#: slot, each safe to run twice (by two survivors, or again after a
#: survivor stopped halfway): if it is still listed and dead (else nil),
#: it is marked as being reaped (no session of its may move now: a
#: take-over asked later is refused), and the answer is the rooms it had
#: members in and the ids of its sessions that moved to other nodes...
REAP_ROOMS = Script(
    """
local P, dead = ARGV[1], ARGV[2]
local n = P .. ':node:' .. dead
if redis.call('EXISTS', n) == 1 then return false end
if redis.call('SISMEMBER', P .. ':nodes', dead) == 0 then return false end
redis.call('SET', n .. ':reaping', '1', 'EX', 600)
return {redis.call('SMEMBERS', n .. ':rooms'), redis.call('SMEMBERS', n .. ':moved')}
"""
)

#: ...then in each room (KEYS[1]) its members leave (but the sessions that
#: moved, ARGV[5] on), announced once (by whoever runs this first); a room
#: left with no member goes as after a clean leave (its topic, name and
#: rules; its stream stays, for retention; 1 then), unless ARGV[3] is 1 (a
#: room that always exists). ARGV[4] 1: publish on its shard channel.
REAP_ROOM = Script(
    """
local r, dead, reason = KEYS[1], ARGV[1], ARGV[2]
local moved = {}
for i = 5, #ARGV do moved[ARGV[i]] = true end
local members, wrote = redis.call('HGETALL', r .. ':m'), false
for i = 1, #members, 2 do
  local m = cjson.decode(members[i + 1])
  if m.node == dead and not moved[members[i]] then
    redis.call('HDEL', r .. ':m', members[i])
    local seq = redis.call('GET', r .. ':seq') or '0'
    local d = '{"id":' .. members[i] .. ',"nick":' .. cjson.encode(m.nick) ..
      ',"key":' .. cjson.encode(m.key) .. ',"reason":' .. cjson.encode(reason) .. '}'
    redis.call('XADD', r, seq .. '-*', 'l', '|0|' .. d)
    wrote = true
  end
end
if wrote and ARGV[4] == '1' then redis.call('SPUBLISH', r, '') end
if ARGV[3] == '1' or redis.call('HLEN', r .. ':m') > 0 then return 0 end
redis.call('DEL', r .. ':topic', r .. ':name', r .. ':rules')
return 1
"""
)

#: ...and last its nicks, sessions and keys go, and the rooms emptied
#: (ARGV[3] on, keys) leave the listing; 1 if reaped here.
REAP_END = Script(
    """
local P, dead = ARGV[1], ARGV[2]
if redis.call('SREM', P .. ':nodes', dead) == 0 then return 0 end
for i = 3, #ARGV do redis.call('HDEL', P .. ':rooms', ARGV[i]) end
for _, key in ipairs(redis.call('SMEMBERS', P .. ':node:' .. dead .. ':nicks')) do
  if redis.call('GET', P .. ':nick:' .. key) == dead then
    redis.call('DEL', P .. ':nick:' .. key, P .. ':s:' .. key, P .. ':s:' .. key .. ':rooms')
  end
end
local n = P .. ':node:' .. dead
redis.call('DEL', n .. ':rooms', n .. ':nicks', n .. ':in', n .. ':moved', n .. ':reaping')
return 1
"""
)

#: What a batch of joins, leaves and renames changes beside its rooms'
#: slots: ARGV[1] {"p", "node", "o": [["j", room, nick key, name] or ["l",
#: room, nick key]] (in the batch's order, before its entries are written:
#: a reaper or a take-over finds the rooms a node and a session are in),
#: "live": [[room, name]], "gone": [room], "said": [room] (the listing,
#: after)}. A room's first message is announced on P:said:new, for the
#: search indexers that follow every room (cluster/search_index.py).
BOOK = Script(
    """
local a = cjson.decode(ARGV[1])
local P = a.p
for _, o in ipairs(a.o or {}) do
  if o[1] == 'j' then
    redis.call('SADD', P .. ':node:' .. a.node .. ':rooms', o[2])
    redis.call('HSET', P .. ':s:' .. o[3] .. ':rooms', o[2], o[4])
  else
    redis.call('HDEL', P .. ':s:' .. o[3] .. ':rooms', o[2])
  end
end
for _, live in ipairs(a.live or {}) do redis.call('HSET', P .. ':rooms', live[1], live[2]) end
for _, k in ipairs(a.gone or {}) do redis.call('HDEL', P .. ':rooms', k) end
for _, k in ipairs(a.said or {}) do
  if redis.call('SADD', P .. ':said', k) == 1 then
    redis.call('XADD', P .. ':said:new', 'MAXLEN', '~', 100000, '*', 'k', k)
  end
end
return 1
"""
)


#: A session and a room's listing as files need them (docs/protocol.md
#: 20): [1 if room ARGV[2] is listed (has members anywhere), the session
#: record of nick key ARGV[3] ('' for none)].
FILE_SESSION = Script(
    """
local P, room, key = ARGV[1], ARGV[2], ARGV[3]
local record = false
if key ~= '' then record = redis.call('GET', P .. ':s:' .. key) end
local listed = 0
if room ~= '' then listed = redis.call('HEXISTS', P .. ':rooms', room) end
return {listed, record}
""",
    reads_only=True,
)

#: Room KEYS[1]'s rules as last changed, and the member entry of session ARGV[1].
FILE_MEMBER = Script(
    """
local r = KEYS[1]
return {redis.call('GET', r .. ':rules'), redis.call('HGET', r .. ':m', ARGV[1])}
""",
    reads_only=True,
)


#: The keys of a room beside its stream (and ``:re:SEQ``, the replies to message SEQ).
ROOM_KEYS = (":seq", ":m", ":x", ":h", ":ids", ":rev", ":revs", ":name", ":topic", ":rules")


def _replied(entries: list[dict]) -> list[int]:
    """The messages whose replies' set a batch's entries may touch: those
    answered, and those edited or deleted."""
    seqs = {e["r"] for e in entries if e["t"] == "m" and e.get("r")}
    seqs |= {e["s"] for e in entries if e["t"] == "c" and e.get("k") in ("edit", "delete")}
    return sorted(seqs)


class InOrder:
    """Each room's scripts sent in the order they were asked for: one held
    back (until a Deferred ``gate`` fires: its joins' booking answered)
    holds back those after it; one whose gate fails is not sent, and fails
    the same way."""

    def __init__(self) -> None:
        self._held: dict[str, deque[_Held]] = {}

    def send(self, room: str, gate: Deferred | None, script: Callable[[], Deferred]) -> Deferred:
        if gate is None and room not in self._held:
            return script()
        held = _Held(script)
        self._held.setdefault(room, deque()).append(held)
        if gate is None:
            held.open = True
        else:
            gate.addBoth(self._opened, room, held)
        self._flush(room)
        return held.answer

    def _opened(self, result: object, room: str, held: _Held) -> object:
        held.open = True
        held.refused = result if isinstance(result, Failure) else None
        self._flush(room)
        return result

    def _flush(self, room: str) -> None:
        waiting = self._held.get(room)
        while waiting and waiting[0].open:
            held = waiting.popleft()
            if held.refused is not None:
                held.answer.errback(held.refused)
            else:
                held.script().chainDeferred(held.answer)
        if waiting is not None and not waiting:
            del self._held[room]


class _Held:
    """A room's script waiting its turn (:class:`InOrder`)."""

    __slots__ = ("answer", "open", "refused", "script")

    def __init__(self, script: Callable[[], Deferred]) -> None:
        self.script = script
        self.answer: Deferred = Deferred()
        self.open = False  # its gate has fired
        self.refused: Failure | None = None  # ...with this failure


def escape(name: str) -> str:
    """A room or nick key as it appears inside a Redis key."""
    return quote(name, safe="")


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a room's stream, as every node reads it."""

    id: str  # the stream ID, "SEQ-N"
    kind: str  # m (message), j (join), l (leave), o (topic), n (renamed)...
    seq: int  # the message's seq; 0 for presence
    raw: bytes  # what happened, as JSON (decoded only where it is applied: ``data``)
    node: str  # the node that wrote it ("" for a reaper's announcement)
    batch: int  # that node's batch number

    @property
    def data(self) -> dict:
        return json.loads(self.raw)


#: A room's part of a batch as the store answered it: its entries' seqs
#: and revs; None if a change was decided on a message that has changed
#: since (nothing of it written: decide again); or why it was not written.
Appended = list[int] | Failure | None

#: A message as a page has it: (seq, its present state, the present state
#: of the message it answers, if it answers one that is still there).
Found = tuple[int, dict, dict | None]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A room as a node starts following it: its stream from ``position`` on."""

    position: str
    members: dict[int, dict]  # id -> {"node", "nick", "key", "op", "away"?}
    topic: dict | None  # {"text", "by", "ts"}
    seq: int
    recent: list[Found]  # oldest first
    name: str | None  # as the cluster first knew it
    rules: dict | None  # {"rules": stored rules, "guest_ops": [id]}, if changed while it had members
    rev: int = 0  # the room's latest change


@dataclass(frozen=True, slots=True)
class FileRoom:
    """A room and a session as the store has them (:meth:`StreamStore.file_room`)."""

    exists: bool  # the room has members on some node
    rules: dict | None  # {"rules", "guest_ops"}, as last changed while it had members
    member: tuple[int, dict] | None  # the session's id and member entry {"node", "nick", "key", "account"}
    record: dict | None  # the session record of the nick key asked about


def parse_entry(raw: list) -> Entry:
    """An entry is ``ID KIND NODE|BATCH|DATA``: one field, so a reply of a
    thousand entries parses quickly; a message's seq is its ID's first part."""
    ident, (kind, value) = raw
    node, batch, data = value.split(b"|", 2)
    kind = kind.decode()
    seq = int(ident[: ident.index(b"-")]) if kind == "m" else 0
    return Entry(ident.decode(), kind, seq, data, node.decode(), int(batch))


def _messages(found: list) -> list[Found]:
    return [
        (int(seq), json.loads(data), json.loads(source) if source else None) for seq, data, source in found
    ]


class StreamStore:
    """The scripts and reads the cluster needs, over one command client:
    one Redis (``client`` a :class:`~chatproto.backends.redis.RedisClient`)
    or a Redis Cluster (``sharded``: a
    :class:`~chatproto.backends.redis_cluster.ClusterClient`). Every script
    touches the keys of one hash slot: a room's, or the home slot's (nicks,
    sessions, nodes, the room listing), whose keys share the hash tag
    ``{P}`` when sharded; a room's keys share ``{ROOM}``."""

    def __init__(
        self,
        client: Commands,
        prefix: str = "chat",
        keep: int = 100_000,
        replicas: Replicas | None = None,
        sharded: bool = False,
        clock: IReactorTime | None = None,
        marks: bool = False,
    ) -> None:
        """``marks``: a sharded cluster's reads are confirmed on replicas
        (``--cluster-min-replicas``): each writes a mark first."""
        self.client = client
        self.clock = clock
        self.marks = marks
        self.prefix = prefix
        self.sharded = sharded
        self.home = "{" + prefix + "}" if sharded else prefix  # what the home slot's keys start with
        self.keep = keep  # messages kept per room (0: all)
        self.replicas = replicas  # a message is acknowledged once they have it
        self._sends = InOrder()

    def key(self, *parts: str) -> str:
        """A key of the home slot."""
        return ":".join((self.home, *parts))

    def _seen(self, read) -> Deferred:
        """A read a member is shown, once the replicas have what it read."""
        return read() if self.replicas is None else self.replicas.seen(read)

    def stream(self, room: str) -> str:
        """Room ``room``'s stream, the start of its other keys' names."""
        if self.sharded:
            return f"{self.prefix}:r:{{{escape(room)}}}"
        return f"{self.prefix}:r:{escape(room)}"

    def _stream_of(self, escaped: str) -> str:
        return self.stream(unescape(escaped))

    def _keys(self, stream: str, replied: Sequence[int] = (), read: bool = False) -> list[str]:
        """What a script on room ``stream`` declares: the stream; when
        sharded, every key of the room it may touch (a ``read``'s mark
        last, with ``marks``). While a slot migrates, a script whose keys
        are not all on one node is told to try again (``TRYAGAIN``) rather
        than run on half a room."""
        if not self.sharded:
            return [stream]
        keys = [
            stream,
            *(stream + suffix for suffix in ROOM_KEYS),
            *(f"{stream}:re:{seq}" for seq in replied),
        ]
        return [*keys, stream + ":mark"] if read and self.marks else keys

    def tail(self, stream: str, after: str, count: int) -> Deferred[list]:
        """A sharded cluster's read of one stream: its entries after ``after``
        (marked, with ``marks``: confirmed on replicas before they are handed on)."""
        if self.marks:
            return TAIL(self.client, [stream, stream + ":mark"], [after, count])
        d = self.client.call("XREAD", "COUNT", count, "STREAMS", stream, after)  # cheaper than a script
        return d.addCallback(lambda reply: reply[0][1] if reply else [])

    # -- nodes -----------------------------------------------------------------------

    def new_node(self) -> Deferred[int]:
        """A number no node has had: a node's name, and the high part of its ids."""
        return self.client.call("INCR", self.key("node", "ids"))

    def heartbeat(self, node: str, ttl_ms: int) -> Deferred:
        listed = self.client.call("SADD", self.key("nodes"), node)
        beat = self.client.call("SET", self.key("node", node), "1", "PX", ttl_ms)
        return every([listed, beat])

    def nodes(self) -> Deferred[list[str]]:
        d = self.client.call("SMEMBERS", self.key("nodes"))
        return d.addCallback(lambda names: [n.decode() for n in names])

    def alive(self, node: str) -> Deferred[bool]:
        return self.client.call("EXISTS", self.key("node", node)).addCallback(bool)

    def reap(self, node: str, reason: str = "connection_lost", always: Sequence[str] = ()) -> Deferred[bool]:
        """Announce the leaves of a node that stopped answering (True if
        this call reaped it); ``always``: the keys of the rooms that exist
        while empty (the default room and ``--room``), which keep their
        rules and topic."""
        kept = set(map(escape, always))
        wake = "1" if self.sharded else "0"

        def rooms(found: list | None) -> Deferred[bool] | bool:
            if found is None:
                return False
            keys = [raw.decode() for raw in found[0]]
            moved = [raw.decode() for raw in found[1]]
            calls = [
                REAP_ROOM(
                    self.client,
                    self._keys(self._stream_of(k)),
                    [node, reason, "1" if k in kept else "0", wake, *moved],
                )
                for k in keys
            ]
            return every(calls).addCallback(
                lambda emptied: end([k for k, e in zip(keys, emptied, strict=True) if e])
            )

        def end(emptied: list[str]) -> Deferred[bool]:
            d = REAP_END(self.client, [], [self.home, node, *emptied])
            return d.addCallback(lambda done: self._relisted(emptied).addCallback(lambda _: bool(done)))

        return REAP_ROOMS(self.client, [], [self.home, node]).addCallback(rooms)

    def _relisted(self, emptied: list[str], names: dict[str, str] | None = None) -> Deferred[None]:
        """Rooms taken off the listing as empty that a member joined
        meanwhile (on another node, in another slot) go back on it."""
        if not emptied:
            return succeed(None)

        def relist(name: str | bytes | None, k: str) -> Deferred[Any]:
            return self.client.call("HSET", self.key("rooms"), k, name or unescape(k))

        def check(counts: list[int]) -> Deferred[Any]:
            calls = []
            for k, count in zip(emptied, counts, strict=True):
                if not count:
                    continue
                name = (names or {}).get(k)
                if name is None:  # as the room has it
                    calls.append(self.client.call("GET", self._stream_of(k) + ":name").addCallback(relist, k))
                else:
                    calls.append(relist(name, k))
            return every(calls)

        counts = every([self.client.call("HLEN", self._stream_of(k) + ":m") for k in emptied])
        return counts.addCallback(check).addCallback(lambda _: None)

    def leave_cluster(self, node: str) -> Deferred:
        """A clean stop: the heartbeat goes, so the others reap at once."""
        return self.client.call("DEL", self.key("node", node))

    # -- rooms -------------------------------------------------------------------------

    def append(
        self,
        node: str,
        batch: int,
        rooms: list[tuple[str, str, list[dict]]],
        seqs: dict[str, int] | None = None,
        floors: dict[str, int] | None = None,
    ) -> Deferred[list[Appended]]:
        """Each room's (key, name, entries) in its stream, one script per
        room, sent in order (a node's batches keep their order in each
        room); per room, what it was given (:data:`Appended`). What the
        joins, leaves and renames change beside the rooms is booked in the
        home slot first: the rooms a node and a session are in (a reaper,
        a take-over must find them); on one Redis the booking goes first on
        the same connection, on a sharded cluster a room with joins is
        written once it is answered (refused if it is refused); the
        listing after."""
        ops: list[list[str]] = []
        for room, name, entries in rooms:
            k = escape(room)
            for e in entries:
                if e["t"] == "j":
                    ops.append(["j", k, e["key"], name])
                elif e["t"] == "l":
                    ops.append(["l", k, e["key"]])
                elif e["t"] == "n":
                    ops += [["j", k, e["key"], name], ["l", k, e["old"]]]
        booked = self._book({"p": self.home, "node": node, "o": ops}) if ops else None
        calls = []
        for room, name, entries in rooms:
            doc: dict[str, Any] = {"node": node, "batch": batch, "keep": self.keep, "n": name, "e": entries}
            if seqs and room in seqs:
                doc["sq"] = seqs[room]
            if floors and room in floors:
                doc["fl"] = floors[room]
            if self.sharded:
                doc["wake"] = True
            raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
            keys = self._keys(self.stream(room), _replied(entries))
            joins = any(e["t"] in ("j", "n") for e in entries)
            gate = booked if self.sharded and joins else None
            d = self._sends.send(room, gate, partial(APPEND, self.client, keys, [raw]))
            calls.append(d if self.replicas is None else self.replicas.after(d))
        if booked is not None:
            booked.addErrback(lambda f: None)  # said; the rooms it held back fail with it
        d = DeferredList(calls, consumeErrors=True)
        return d.addCallback(self._appended, node, rooms)

    def _appended(self, results: list, node: str, rooms: list[tuple[str, str, list[dict]]]) -> Deferred:
        out: list[Appended] = []
        book: dict[str, Any] = {"p": self.home, "node": node, "live": [], "gone": [], "said": []}
        names: dict[str, str] = {}
        for (ok, reply), (room, name, entries) in zip(results, rooms, strict=True):
            if not ok:
                out.append(reply)
                continue
            if reply and reply[0] == b"retry":
                out.append(None)
                continue
            if reply and reply[0] == b"lost":
                log.critical(
                    "room {room} lost its messages in Redis (its counter is below a seq this node has "
                    "seen: a server come back empty): its messages are refused rather than numbered again",
                    room=room,
                )
                out.append(Failure(StoreLost(f"room {room!r} lost its messages in Redis")))
                continue
            written, first, emptied, stored = reply
            out.append(list(written))
            k = escape(room)
            names[k] = name
            if first:
                book["said"].append(k)
            if emptied:
                book["gone"].append(k)
            elif any(e["t"] == "j" for e in entries):
                book["live"].append([k, stored.decode() if isinstance(stored, bytes) else name])
        if not any(book[part] for part in ("live", "gone", "said")):
            return succeed(out)
        d = self._book(book).addCallback(lambda _: self._relisted(book["gone"], names))
        d.addErrback(lambda f: log.warn("the room listing could not be updated: {error}", error=f.value))
        return d.addCallback(lambda _: out)

    def _book(self, book: dict[str, Any]) -> Deferred[None]:
        """A booking in the home slot (:data:`BOOK`). The listing's and the
        announcements' part is sent again a moment later if refused, a few
        times (a room's first message not announced is never indexed)."""
        raw = json.dumps(book, ensure_ascii=False, separators=(",", ":"))

        def refused(failure: Failure) -> Failure:
            if "o" in book:  # a sharded cluster's joins are refused with it
                log.warn("a batch's joins and leaves could not be booked: {error}", error=failure.value)
            else:
                self._again(
                    partial(BOOK, self.client, [], [raw]),
                    3,
                    "the room listing could not be updated: given up",
                )
            return failure

        return BOOK(self.client, [], [raw]).addCallbacks(lambda _: None, refused)

    def _again(self, send: Callable[[], Deferred], tries: int, given_up: str) -> None:
        """``send()`` again a second later while it is refused, ``tries``
        times at most; then say ``given_up``."""
        if tries <= 0 or self.clock is None:
            log.warn("{given_up}", given_up=given_up)
            return

        def retry() -> None:
            send().addErrback(lambda f: self._again(send, tries - 1, given_up))

        self.clock.callLater(1.0, retry)

    def snapshot(self, room: str, replay: int) -> Deferred[Snapshot]:
        def parse(reply) -> Snapshot:
            position, flat, topic, seq, recent, name, rules, rev = reply
            members = {int(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
            return Snapshot(
                position.decode() if isinstance(position, bytes) else position,
                members,
                json.loads(topic) if topic else None,
                int(seq),
                list(reversed(_messages(recent))),
                name.decode() if name else None,
                json.loads(rules) if rules else None,
                int(rev),
            )

        r = self.stream(room)
        args = [r, max(1, replay), self.keep]
        return self._seen(lambda: SNAPSHOT(self.client, self._keys(r, read=True), args)).addCallback(parse)

    def before(self, room: str, seq: int | None, limit: int) -> Deferred[tuple[list[Found], bool]]:
        if seq is not None and seq <= 1:
            return succeed(([], False))
        high = "" if seq is None else seq - 1
        r = self.stream(room)
        d = self._seen(
            lambda: PAGE(self.client, self._keys(r, read=True), [r, high, limit + 1, "before", self.keep])
        )
        return d.addCallback(lambda found: (list(reversed(_messages(found[:limit]))), len(found) > limit))

    def after(self, room: str, seq: int, limit: int) -> Deferred[tuple[list[Found], bool]]:
        r = self.stream(room)
        args = [r, max(seq, 0) + 1, limit + 1, "after", self.keep]
        d = self._seen(lambda: PAGE(self.client, self._keys(r, read=True), args))
        return d.addCallback(lambda found: (_messages(found[:limit]), len(found) > limit))

    def changed_after(self, room: str, rev: int, limit: int) -> Deferred[tuple[list[Found], bool, int]]:
        """The messages whose last change is after ``rev``, oldest change
        first, whether more follow, and the room's latest rev."""
        r = self.stream(room)
        args = [r, max(rev, 0), limit + 1, self.keep]
        d = self._seen(lambda: CHANGED_AFTER(self.client, self._keys(r, read=True), args))
        return d.addCallback(
            lambda reply: (_messages(reply[1][:limit]), len(reply[1]) > limit, int(reply[0]))
        )

    def last_rev(self, room: str) -> Deferred[int]:
        d = self.client.call("GET", self.stream(room) + ":rev")
        return d.addCallback(lambda raw: int(raw) if raw else 0)

    def read(
        self, rooms: dict[str, list[int]]
    ) -> Deferred[dict[str, tuple[int, list[tuple[dict | None, dict | None]]]]]:
        """What changes and replies are decided on: each room's seq, and
        each asked message's present state with that of the one it answers."""

        def parse(reply: list) -> tuple[int, list[tuple[dict | None, dict | None]]]:
            seq, found = reply
            states = [
                (json.loads(data) if data else None, json.loads(src) if src else None) for data, src in found
            ]
            return int(seq), states

        calls = []
        for room, seqs in rooms.items():
            doc = json.dumps({"keep": self.keep, "s": seqs}, separators=(",", ":"))
            calls.append(READ(self.client, self._keys(self.stream(room)), [doc]).addCallback(parse))
        return every(calls).addCallback(lambda found: dict(zip(rooms, found, strict=True)))

    def rooms(self) -> Deferred[list[tuple[str, int, dict | None, bool]]]:
        """Every room with members on any node: (name, members, topic,
        whether it is secret: docs/protocol.md 14.6)."""

        def listed(flat: list) -> Deferred[list[tuple[str, int, dict | None, bool]]]:
            names = [flat[i + 1].decode() for i in range(0, len(flat), 2)]
            keys = [flat[i].decode() for i in range(0, len(flat), 2)]
            calls = [ROOM_INFO(self.client, self._keys(self._stream_of(k)), []) for k in keys]
            return every(calls).addCallback(
                lambda infos: [parse(n, i) for n, i in zip(names, infos, strict=True)]
            )

        def parse(name: str, info: list) -> tuple[str, int, dict | None, bool]:
            count, topic, rules = info
            secret = bool(rules and json.loads(rules)["rules"].get("secret"))
            return (name, count, json.loads(topic) if topic else None, secret)

        return self.client.call("HGETALL", self.key("rooms")).addCallback(listed)

    def topic(self, room: str) -> Deferred[dict | None]:
        d = self.client.call("GET", self.stream(room) + ":topic")
        return d.addCallback(lambda raw: json.loads(raw) if raw else None)

    # -- nicks and sessions ---------------------------------------------------------------

    def claim(self, key: str, node: str) -> Deferred[str | None]:
        """None if ``node`` now holds the nick; else the live node that does."""
        d = CLAIM(self.client, [], [self.home, escape(key), node])
        return d.addCallback(lambda owner: owner.decode() if owner else None)

    def release(self, key: str, node: str) -> Deferred:
        return RELEASE(self.client, [], [self.home, escape(key), node])

    def save_session(self, key: str, record: dict) -> Deferred:
        return self.client.call("SET", self.key("s", escape(key)), json.dumps(record))

    def session(self, key: str) -> Deferred[dict | None]:
        d = self.client.call("GET", self.key("s", escape(key)))
        return d.addCallback(lambda raw: json.loads(raw) if raw else None)

    def take_over(self, key: str, old: str, record: dict) -> Deferred[list[tuple[str, str]] | None]:
        """The session is ``record["node"]``'s now; its rooms (key, name), or
        None if it was not ``old``'s any more."""
        new = record["node"]
        args = [self.home, escape(key), old, new, json.dumps(record), str(record["id"])]

        def moved(flat: list | None) -> Deferred[list[tuple[str, str]] | None] | None:
            if flat is None:
                return None
            keys = [flat[i].decode() for i in range(0, len(flat), 2)]
            rooms = [(unescape(k), flat[i * 2 + 1].decode()) for i, k in enumerate(keys)]
            calls = [self._move(k, str(record["id"]), new) for k in keys]
            return every(calls).addCallback(lambda _: rooms)

        return TAKE_OVER(self.client, [], args).addCallback(moved)

    def _move(self, escaped: str, id: str, node: str) -> Deferred[None]:
        """A moved session's member entry in a room names its new node; if
        refused, again a moment later, a few times (the session has moved:
        its resume is not failed for it)."""
        send = partial(MOVE_MEMBER, self.client, self._keys(self._stream_of(escaped)), [id, node])
        given_up = f"a moved session's entry in {unescape(escaped)} still names its old node"
        return send().addCallbacks(lambda _: None, lambda f: self._again(send, 2, given_up))

    def file_room(self, room: str, id: int, key: str) -> Deferred[FileRoom]:
        """Room ``room`` ("" for none) and a session, as files need them
        (:data:`FILE_SESSION`, :data:`FILE_MEMBER`): session ``id`` (0: the
        one of nick key ``key``)."""

        def session(reply: list) -> Deferred[FileRoom] | FileRoom:
            listed, raw = reply
            record = json.loads(raw) if raw else None
            member_id = id or (record["id"] if record else 0)
            if not room:
                return FileRoom(False, None, None, record)
            d = FILE_MEMBER(self.client, self._keys(self.stream(room)), [str(member_id) if member_id else ""])

            def parse(found: list) -> FileRoom:
                rules, member = found
                return FileRoom(
                    bool(listed),
                    json.loads(rules) if rules else None,
                    (member_id, json.loads(member)) if member else None,
                    record,
                )

            return d.addCallback(parse)

        args = [self.home, escape(room), escape(key) if key else ""]
        return FILE_SESSION(self.client, [], args).addCallback(session)

    def secret(self, name: str) -> Deferred[bytes]:
        """A random secret every node shares (``P:secret:NAME``), made by
        the first node that asks."""
        mine = secrets.token_hex(32).encode("ascii")
        d = self.client.call("SET", self.key("secret", name), mine, "NX", "GET")
        return d.addCallback(lambda kept: kept if kept else mine)

    # -- typing and pending connections: passed on, never stored ------------------------------

    def typing_channel(self) -> str:
        return self.key("typing")

    def pending_channel(self) -> str:
        return self.key("pending")

    def publish(self, channel: str, message: dict) -> Deferred:
        """On a channel every node hears (a shard channel of the home slot when sharded)."""
        verb = "SPUBLISH" if self.sharded else "PUBLISH"
        return self.client.call(verb, channel, json.dumps(message, ensure_ascii=False))

    # -- node inboxes ---------------------------------------------------------------------

    def inbox(self, node: str) -> str:
        return self.key("node", node, "in")

    def send(self, node: str, message: dict) -> Deferred:
        """A message to one node (a whisper, a session it lost): read with its rooms."""
        raw = json.dumps(message, ensure_ascii=False)
        inbox = self.inbox(node)
        d = self.client.call("XADD", inbox, "MAXLEN", "~", 10000, "*", "d", raw)
        if self.sharded:  # the node's reader reads its inbox when told
            self.client.call("SPUBLISH", inbox, "").addErrback(lambda f: None)
        return d


def _unescape(raw: bytes) -> str:
    return unquote(raw.decode())


def unescape(escaped: str) -> str:
    """A key as :func:`escape` had it."""
    return unquote(escaped)


class StreamReader:
    """Tails the streams of the rooms this node follows, and its inbox, with
    one blocking XREAD on a connection of its own: each stream is read once,
    whatever the number of local members. ``deliver(room, entries)`` and
    ``received(messages)`` are called in stream order; with ``replicas``,
    only once what was read is on them (see :mod:`~chatproto.backends.replicas`)."""

    BLOCK_MS = 2000  # a frozen server is noticed this much later than a command's deadline
    COUNT = 1000
    RETRY = 0.5  # seconds before asking again when the primary refuses the mark

    def __init__(
        self,
        client: Commands,
        store: StreamStore,
        node: str,
        deliver,
        received,
        replicas: Replicas | None = None,
    ) -> None:
        self.client = client
        self.replicas = replicas
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
        self._on: RedisProtocol | None = None  # the connection the XREAD in flight went on
        self._retry: IDelayedCall | None = None

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

    def _inbox_start(self, last) -> Deferred[None] | None:
        self._inbox_at = last[0][0].decode() if last else "0-0"
        self._read()
        return None

    def stop(self) -> None:
        self._running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()

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
        self._on = self.client.connection
        d = self.client.call("XREAD", "COUNT", self.COUNT, "BLOCK", self.BLOCK_MS, "STREAMS", *streams, *ids)
        d.addCallbacks(self._got, self._failed)

    def _got(self, reply) -> None:
        if reply and self.replicas is not None and self.replicas.count > 0:
            self._replicated(reply)
        else:
            self._handle(reply)

    def _handle(self, reply) -> None:
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

    def _replicated(self, reply) -> None:
        """``reply`` handled once the replicas have it; asked again while
        they don't; dropped, and read again, if the connection it was read
        on goes (the positions have not moved)."""
        self._retry = None
        if not self._running:
            self._reading = False
            return
        replicas = self.replicas
        assert replicas is not None
        d = replicas.mark(self._on)

        def later(failure):
            failure.trap(NotReplicated, RedisError)  # too few replicas yet, or the primary refused the mark
            if self._running:
                self._retry = replicas.clock.callLater(self.RETRY, self._replicated, reply)
            else:
                self._reading = False

        d.addCallbacks(lambda _: self._handle(reply), later)
        d.addErrback(self._failed)

    def _failed(self, failure) -> None:
        self._reading = False
        if not self._running:
            return
        if failure.check(StoreLost):
            self._running = False  # nothing will come: the node refuses everything now
            return
        log.warn("reading the room streams failed: {error}; again once Redis is back", error=failure.value)
        self.client.connected().addCallback(lambda _: self._read())
