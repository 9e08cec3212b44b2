"""A bounded, thread-safe LRU cache used for every compiled artefact.

Everything that depends only on (operation, spec, shapes, dtype, device, options)
is kept in one of these caches, so a second call does no planning. The size is
bounded so that a training run with changing input sizes cannot grow memory
without limit.

>>> cache = LRUCache(maxsize=2)
>>> cache.get_or_create("a", lambda: 1)
1
>>> cache.get_or_create("a", lambda: 2)   # cached
1
>>> cache.lookup("a"), cache.lookup("b")
(1, None)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

from tnconv.errors import positive_int

__all__ = ["LRUCache", "kept", "set_cache_size", "clear_caches", "cache_info"]

T = TypeVar("T")
DEFAULT_CACHE_SIZE = 256
_REGISTRY: dict[str, "LRUCache"] = {}
#: The bound of the named caches, `set_cache_size`'s, for those created later too.
_bound = DEFAULT_CACHE_SIZE


class LRUCache:
    """Least-recently-used mapping with a lock; values are built at most once per key."""

    def __init__(self, maxsize: int | None = None, name: str | None = None) -> None:
        """`maxsize=None`: the bound `set_cache_size` set last (256 by default)."""
        self.maxsize = _bound if maxsize is None else maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.RLock()
        if name is not None:
            _REGISTRY[name] = self

    def get_or_create(self, key: Hashable, factory: Callable[[], T]) -> T:
        """Return the value for `key`, building it with `factory()` on a miss (a hit takes
        no lock: `lookup`)."""
        value = self.lookup(key)
        if value is not None:
            return value  # type: ignore[return-value]
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]  # type: ignore[return-value]
            self.misses += 1
            value = factory()
            self._data[key] = value
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
            return value

    def lookup(self, key: Hashable) -> object | None:
        """The value for `key`, or None: the hit path without the lock.

        Per-call paths look up first and build through `get_or_create` on a miss;
        every step here is one atomic operation under the GIL.
        """
        data = self._data
        value = data.get(key)
        if value is not None:
            try:
                data.move_to_end(key)
            except KeyError:  # evicted by another thread in between: still a valid value
                pass
            self.hits += 1
        return value

    def resize(self, maxsize: int) -> None:
        with self._lock:
            self.maxsize = maxsize
            while len(self._data) > maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)


def kept(values: dict, key: Hashable, build: Callable[[], T], keep: int = 16) -> T:
    """values[key], built on a miss; the dict starts over once it holds `keep` entries.

    For the small per-object tables of set-ups per input (batch size, dtype,
    device), where an LRU's bookkeeping would cost more than a rebuild.

    >>> table = {}
    >>> kept(table, "a", lambda: 1), kept(table, "a", lambda: 2)
    (1, 1)
    """
    value = values.get(key)
    if value is None:
        if len(values) >= keep:
            values.clear()
        value = values[key] = build()
    return value


def set_cache_size(maxsize: int) -> None:
    """Bound every tnconv cache to `maxsize` entries (least recently used evicted first),
    those of modules loaded later included.

    Examples:
        >>> import tnconv
        >>> tnconv.set_cache_size(32)
        >>> all(info["maxsize"] == 32 for info in tnconv.cache_info().values())
        True
        >>> tnconv.set_cache_size(DEFAULT_CACHE_SIZE)
    """
    global _bound
    positive_int("set_cache_size", "maxsize", maxsize)
    _bound = maxsize
    for cache in _REGISTRY.values():
        cache.resize(maxsize)


def clear_caches() -> None:
    """Empty every tnconv cache (the next call compiles again).

    Examples:
        >>> import tnconv
        >>> tnconv.clear_caches()
        >>> all(info["size"] == 0 for info in tnconv.cache_info().values())
        True
    """
    for cache in _REGISTRY.values():
        cache.clear()


def cache_info() -> dict[str, dict[str, int]]:
    """Hits, misses, size and bound of every named cache (a cache is listed once the
    module that holds it is loaded, at the first call that needs it).

    Examples:
        >>> import torch, tnconv
        >>> _ = tnconv.conv(torch.rand(1, 2, 8), torch.rand(3, 2, 3))
        >>> sorted(tnconv.cache_info()["compiled"])
        ['hits', 'maxsize', 'misses', 'size']
    """
    return {
        name: {"hits": c.hits, "misses": c.misses, "size": len(c), "maxsize": c.maxsize}
        for name, c in _REGISTRY.items()
    }
