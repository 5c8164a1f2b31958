"""Several servers as one: each a node whose rooms are shared with the
others through Redis or Valkey (:mod:`chatproto.backends.streams`).

:class:`~chatproto.cluster.node.ClusterNode` is a node's
:class:`~chatproto.core.peers.Peers`: the shared order of each room, nicks
claimed across the nodes, sessions resumed from another node, whispers
through the nodes' inboxes. :class:`~chatproto.cluster.log.ClusterLog` reads
history from the rooms' streams.
"""
