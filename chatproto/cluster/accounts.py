"""A cluster node's account store: the shared one on Redis, which also
brings a participant online on another node into a direct conversation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from chatproto.backends.accounts import Membership
from chatproto.backends.redis_accounts import RedisAccounts

if TYPE_CHECKING:
    from chatproto.cluster.node import ClusterNode


class ClusterAccounts(RedisAccounts):
    """:class:`RedisAccounts`, whose ``invite`` (a direct conversation
    opened, or said in, for an account not online on this node) also tells
    the node holding the account's session, if any, to bring it in now
    (docs/protocol.md 19.8): the others find it at their next login."""

    node: ClusterNode | None = None

    def invite(self, key: str, room: str, membership: Membership) -> Deferred[None]:
        d = super().invite(key, room, membership)
        node = self.node
        if node is not None:
            d.addCallback(lambda _: node.summon(key, membership.room))
        return d
