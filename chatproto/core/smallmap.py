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


class SmallMap(MutableMapping[K, V]):
    """A mapping in the order its keys came, held in two slots while it has
    at most one entry; a dict is made for a second and dropped when one is
    left again. Keys compare as a dict's do (identity, then equality)."""

    __slots__ = ("_key", "_many", "_value")

    def __init__(self) -> None:
        self._key: K = _NONE
        self._value: V = cast(V, None)
        self._many: dict[K, V] | None = None

    def __getitem__(self, key: K) -> V:
        if self._many is not None:
            return self._many[key]
        mine = self._key
        if mine is not _NONE and (mine is key or mine == key):
            return self._value
        raise KeyError(key)

    @overload
    def get(self, key: K, /) -> V | None: ...

    @overload
    def get(self, key: K, /, default: V | T) -> V | T: ...

    def get(self, key: K, /, default: Any = None) -> Any:
        if self._many is not None:
            return self._many.get(key, default)
        mine = self._key
        if mine is not _NONE and (mine is key or mine == key):
            return self._value
        return default

    def __contains__(self, key: object) -> bool:
        if self._many is not None:
            return key in self._many
        mine = self._key
        return mine is not _NONE and (mine is key or mine == key)

    def __setitem__(self, key: K, value: V) -> None:
        if self._many is not None:
            self._many[key] = value
            return
        mine = self._key
        if mine is _NONE or mine is key or mine == key:
            self._key, self._value = key, value
        else:
            self._many = {mine: self._value, key: value}
            self._key, self._value = _NONE, cast(V, None)

    def __delitem__(self, key: K) -> None:
        many = self._many
        if many is None:
            if key not in self:
                raise KeyError(key)
            self._key, self._value = _NONE, cast(V, None)
            return
        del many[key]
        if len(many) == 1:
            (self._key, self._value), self._many = next(iter(many.items())), None

    def __iter__(self) -> Iterator[K]:
        if self._many is not None:
            return iter(self._many)
        return iter(() if self._key is _NONE else (self._key,))

    def __reversed__(self) -> Iterator[K]:
        if self._many is not None:
            return reversed(self._many)
        return iter(self)

    def __len__(self) -> int:
        if self._many is not None:
            return len(self._many)
        return 0 if self._key is _NONE else 1

    def __repr__(self) -> str:
        return f"SmallMap({dict(self.items())!r})"
