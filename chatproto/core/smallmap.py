"""A mapping that is usually of one entry: a session's devices, rooms and
read markers. Most sessions have one device in one room; a dict and its key
table cost every one of them several times what two slots do."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, TypeVar, cast, overload

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

#: The key of an empty SmallMap (no key of the caller's is ever this object).
_NONE: Any = object()
#: The key of a SmallMap of several entries, whose value is then their dict.
_MANY: Any = object()


class SmallMap(MutableMapping[K, V]):
    """A mapping in the order its keys came, held in two slots: its one
    entry's key and value; for a second, a dict (the value, under a key
    of its own), dropped when one is left again. Keys compare as a dict's
    do (identity, then equality)."""

    __slots__ = ("_key", "_value")

    def __init__(self) -> None:
        self._key: K = _NONE
        self._value: Any = None

    def __getitem__(self, key: K) -> V:
        mine = self._key
        if mine is _MANY:
            return cast(V, self._value[key])
        if mine is not _NONE and (mine is key or mine == key):
            return cast(V, self._value)
        raise KeyError(key)

    @overload
    def get(self, key: K, /) -> V | None: ...

    @overload
    def get(self, key: K, /, default: V | T) -> V | T: ...

    def get(self, key: K, /, default: Any = None) -> Any:
        mine = self._key
        if mine is _MANY:
            return self._value.get(key, default)
        if mine is not _NONE and (mine is key or mine == key):
            return self._value
        return default

    def __contains__(self, key: object) -> bool:
        mine = self._key
        if mine is _MANY:
            return key in self._value
        return mine is not _NONE and (mine is key or mine == key)

    def __setitem__(self, key: K, value: V) -> None:
        mine = self._key
        if mine is _MANY:
            self._value[key] = value
        elif mine is _NONE or mine is key or mine == key:
            self._key, self._value = key, value
        else:
            self._key, self._value = _MANY, {mine: self._value, key: value}

    def __delitem__(self, key: K) -> None:
        if self._key is not _MANY:
            if key not in self:
                raise KeyError(key)
            self._key, self._value = _NONE, None
            return
        many = self._value
        del many[key]
        if len(many) == 1:
            self._key, self._value = next(iter(many.items()))

    def __iter__(self) -> Iterator[K]:
        mine = self._key
        if mine is _MANY:
            return iter(self._value)
        return iter(() if mine is _NONE else (mine,))

    def __reversed__(self) -> Iterator[K]:
        if self._key is _MANY:
            return cast(Iterator[K], reversed(self._value))
        return iter(self)

    def __len__(self) -> int:
        mine = self._key
        if mine is _MANY:
            return len(self._value)
        return 0 if mine is _NONE else 1

    def __repr__(self) -> str:
        return f"SmallMap({dict(self.items())!r})"
