"""Follow sets: which members of a big room each connection hears come and go.

In a big room (docs/protocol.md 22) a version 2 connection gets JOINED and
LEFT only of the members it follows: those its ROOM showed, those MEMBERS
returned to it, and those it named in FOLLOW. Each connection's follows in a
room are kept in the order they were (last) made, so that past
``follow_limit`` the oldest go; and inverted (room, member -> connections),
so that a JOINED finds its few followers without a walk over the room.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatproto.core.connection import Connection

#: No follower: what most members of a big room have.
NOBODY: frozenset[Connection] = frozenset()


class Following:
    """Every connection's follow sets, and who follows whom, per room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # follows per connection per room (follow_limit)
        # room key -> member's nick key -> the connections following it
        self._followers: dict[str, dict[str, set[Connection]]] = {}
        # connection -> room key -> nick keys, oldest first (a dict as an ordered set)
        self._follows: dict[Connection, dict[str, dict[str, None]]] = {}

    def follow(self, connection: Connection, room: str, keys: Iterable[str]) -> None:
        """``connection`` follows these members of ``room`` (again: they
        become its newest), the oldest dropped past the limit."""
        rooms = self._follows.get(connection)
        if rooms is None:
            rooms = self._follows[connection] = {}
        follows = rooms.get(room)
        if follows is None:
            follows = rooms[room] = {}
        members = self._followers.get(room)
        if members is None:
            members = self._followers[room] = {}
        for key in keys:
            if key in follows:
                del follows[key]  # to the newest end
            else:
                followers = members.get(key)
                if followers is None:
                    members[key] = {connection}
                else:
                    followers.add(connection)
            follows[key] = None
        while len(follows) > self.limit:
            oldest = next(iter(follows))
            del follows[oldest]
            self._unfollow(connection, room, oldest)

    def followers(self, room: str, key: str) -> frozenset[Connection]:
        """Who follows the member ``key`` of ``room`` now (a copy: later
        follows don't reach an item already in the order)."""
        members = self._followers.get(room)
        followers = members.get(key) if members is not None else None
        return frozenset(followers) if followers else NOBODY

    def follows(self, connection: Connection, room: str) -> list[str]:
        """The members ``connection`` follows in ``room``, oldest first."""
        return list(self._follows.get(connection, {}).get(room, ()))

    def forget(self, connection: Connection, room: str | None = None) -> None:
        """``connection`` left ``room`` (None: every room, it is gone)."""
        rooms = self._follows.get(connection)
        if rooms is None:
            return
        for name in list(rooms) if room is None else [room]:
            for key in rooms.pop(name, ()):
                self._unfollow(connection, name, key)
        if not rooms:
            del self._follows[connection]

    def moved(self, old: Connection, new: Connection) -> None:
        """A resumed device: the new connection follows what the old one did."""
        rooms = self._follows.pop(old, None)
        if rooms is None:
            return
        self._follows[new] = rooms
        for room, follows in rooms.items():
            members = self._followers[room]
            for key in follows:
                followers = members[key]
                followers.discard(old)
                followers.add(new)

    def renamed(self, old: str, new: str, rooms: Iterable[str]) -> None:
        """A member's nick key changed: its followers in ``rooms`` follow the
        new key, in the old one's place."""
        if old == new:
            return
        for room in rooms:
            members = self._followers.get(room)
            followers = members.pop(old, None) if members is not None else None
            if not followers:
                continue
            assert members is not None
            for connection in followers:
                follows = self._follows[connection][room]
                already = new in follows
                self._follows[connection][room] = {
                    (new if key == old else key): None for key in follows if not (already and key == old)
                }
            members.setdefault(new, set()).update(followers)

    def _unfollow(self, connection: Connection, room: str, key: str) -> None:
        members = self._followers.get(room)
        if members is None:
            return
        followers = members.get(key)
        if followers is not None:
            followers.discard(connection)
            if not followers:
                del members[key]
        if not members:
            del self._followers[room]
