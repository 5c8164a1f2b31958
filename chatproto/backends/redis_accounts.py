"""Accounts, remembered rooms, room rules and server bans on Redis, for a
cluster: every node sees the same accounts (the
:class:`~chatproto.backends.accounts.AccountStore` of ``--cluster``).

Keys under the prefix P (names percent-escaped): ``P:a:KEY`` (the account,
JSON), ``P:a:KEY:rooms`` (room key -> JSON {name, read, joined}),
``P:rm:ROOM`` (the accounts that remember a room), ``P:rules:ROOM``,
``P:bans`` (KIND|TARGET -> JSON) and ``P:joins`` (the order of joins).
"""

from __future__ import annotations

import json
from dataclasses import asdict

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatproto.backends.accounts import AccountRecord, Ban, Membership
from chatproto.backends.eventlog import StoreError
from chatproto.backends.redis import Commands, Script
from chatproto.backends.replicas import Replicas
from chatproto.backends.streams import escape

#: An account joined a room (or moved its read marker there): keep when it first joined.
REMEMBER = Script(
    """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and ARGV[5] == '1' then return 0 end
local joined
if old then joined = cjson.decode(old).joined else joined = redis.call('INCR', KEYS[3]) end
local row = cjson.encode({name = ARGV[2], read = tonumber(ARGV[3]), joined = joined})
redis.call('HSET', KEYS[1], ARGV[1], row)
redis.call('SADD', KEYS[2], ARGV[4])
return joined
"""
)

#: A room closed: nobody remembers it, its rules go.
FORGET_ROOM = Script(
    """
for _, account in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('HDEL', ARGV[1] .. ':a:' .. account .. ':rooms', ARGV[2])
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""
)


#: An account went: no room keeps it as an operator. Rooms' rules are read
#: with SCAN (a page at a time, never the whole keyspace at once).
FORGET_OPERATOR = Script(
    """
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. '*', 'COUNT', 500)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local rules = cjson.decode(redis.call('GET', key))
    local kept, found = {}, false
    for _, op in ipairs(rules['ops'] or {}) do
      if op == ARGV[2] then found = true else table.insert(kept, op) end
    end
    if found then
      rules['ops'] = kept
      redis.call('SET', key, cjson.encode(rules))
    end
  end
until cursor == '0'
return 1
"""
)


def _store_error(failure: Failure):
    if failure.check(StoreError):
        return failure  # said once
    raise StoreError(f"the cluster's account store failed: {failure.value}")


class RedisAccounts:
    """Accounts, memberships, rules and bans on Redis; with ``replicas``,
    a change counts once they have it (it is told to the user)."""

    def __init__(self, client: Commands, prefix: str = "chat", replicas: Replicas | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.replicas = replicas

    def _kept(self, d: Deferred) -> Deferred:
        if self.replicas is None:
            return d
        return self.replicas.after(d).addErrback(_store_error)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _call(self, *args) -> Deferred:
        return self.client.call_when_up(*args).addErrback(_store_error)

    def account(self, key: str) -> Deferred[AccountRecord | None]:
        d = self._call("GET", self._key("a", escape(key)))
        return d.addCallback(lambda raw: AccountRecord(**json.loads(raw)) if raw else None)

    def save_account(self, record: AccountRecord) -> Deferred[None]:
        d = self._call("SET", self._key("a", escape(record.key)), json.dumps(asdict(record)))
        d.addCallback(lambda _: self._call("SADD", self._key("accounts"), escape(record.key)))
        return self._kept(d.addCallback(lambda _: None))

    def create_account(self, record: AccountRecord) -> Deferred[bool]:
        d = self._call("SET", self._key("a", escape(record.key)), json.dumps(asdict(record)), "NX")

        def made(reply) -> Deferred[bool] | bool:
            if reply is None:
                return False
            return self._call("SADD", self._key("accounts"), escape(record.key)).addCallback(lambda _: True)

        return self._kept(d.addCallback(made))

    def delete_account(self, key: str) -> Deferred[None]:
        account = self._key("a", escape(key))
        d = self._call("DEL", account, account + ":rooms")
        d.addCallback(lambda _: self._call("SREM", self._key("accounts"), escape(key)))
        return self._kept(d.addCallback(lambda _: None))

    def count_accounts(self) -> Deferred[int]:
        """Accounts saved since the set of their keys was kept (older ones aren't counted)."""
        return self._call("SCARD", self._key("accounts"))

    def memberships(self, key: str) -> Deferred[list[Membership]]:
        def order(flat: list) -> list[Membership]:
            rows = [json.loads(flat[i + 1]) for i in range(0, len(flat), 2)]
            return [Membership(row["name"], row["read"]) for row in sorted(rows, key=lambda r: r["joined"])]

        return self._call("HGETALL", self._key("a", escape(key), "rooms")).addCallback(order)

    def remember(self, key: str, room: str, membership: Membership) -> Deferred[None]:
        keys = [self._key("a", escape(key), "rooms"), self._key("rm", escape(room)), self._key("joins")]
        args = [escape(room), membership.room, membership.read, escape(key), "0"]
        d = self.client.when_up().addCallback(lambda _: REMEMBER(self.client, keys, args))
        return self._kept(d.addCallbacks(lambda _: None, _store_error))

    def invite(self, key: str, room: str, membership: Membership) -> Deferred[None]:
        keys = [self._key("a", escape(key), "rooms"), self._key("rm", escape(room)), self._key("joins")]
        args = [escape(room), membership.room, membership.read, escape(key), "1"]
        d = self.client.when_up().addCallback(lambda _: REMEMBER(self.client, keys, args))
        return self._kept(d.addCallbacks(lambda _: None, _store_error))

    def forget(self, key: str, room: str) -> Deferred[None]:
        self._call("SREM", self._key("rm", escape(room)), escape(key))
        d = self._call("HDEL", self._key("a", escape(key), "rooms"), escape(room))
        return self._kept(d.addCallback(lambda _: None))

    def forget_room(self, room: str) -> Deferred[None]:
        keys = [self._key("rm", escape(room)), self._key("rules", escape(room))]
        d = self.client.when_up().addCallback(
            lambda _: FORGET_ROOM(self.client, keys, [self.prefix, escape(room)])
        )
        return self._kept(d.addCallbacks(lambda _: None, _store_error))

    def forget_operator(self, key: str) -> Deferred[None]:
        d = FORGET_OPERATOR(self.client, [], [self._key("rules", ""), key])
        return self._kept(d.addCallbacks(lambda _: None, _store_error))

    def rules(self, room: str) -> Deferred[dict | None]:
        d = self._call("GET", self._key("rules", escape(room)))
        return d.addCallback(lambda raw: json.loads(raw) if raw else None)

    def set_rules(self, room: str, rules: dict) -> Deferred[None]:
        d = self._call("SET", self._key("rules", escape(room)), json.dumps(rules))
        return self._kept(d.addCallback(lambda _: None))

    def server_bans(self) -> Deferred[list[tuple[str, Ban]]]:
        def parse(flat: list) -> list[tuple[str, Ban]]:
            bans = [
                (flat[i].decode().split("|", 1)[0], Ban(**json.loads(flat[i + 1])))
                for i in range(0, len(flat), 2)
            ]
            return sorted(bans, key=lambda kind_ban: kind_ban[1].ts)

        return self._call("HGETALL", self._key("bans")).addCallback(parse)

    def set_server_ban(self, kind: str, ban: Ban) -> Deferred[None]:
        d = self._call("HSET", self._key("bans"), f"{kind}|{ban.target}", json.dumps(asdict(ban)))
        return self._kept(d.addCallback(lambda _: None))

    def lift_server_ban(self, kind: str, target: str) -> Deferred[None]:
        d = self._call("HDEL", self._key("bans"), f"{kind}|{target}")
        return self._kept(d.addCallback(lambda _: None))
