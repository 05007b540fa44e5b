"""One small bounded LRU map for the package's per-name caches.

Policy matches, decision schemas and middleware gates are cached per tool name, and
tool names come from models and users: an unbounded dict is a memory leak with an
attacker's hand on it, and clearing it wholesale when full makes every name slow at
once. This keeps the most recently used names and drops the least recently used one at
a time. ``functools.lru_cache`` fits functions, not per-object caches that must also be
cleared when their owner changes, hence this.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LRU"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class LRU(Generic[_K, _V]):
    """A map that keeps at most ``maxsize`` entries, dropping the least recently used.

    Safe from several threads (guards run in graph worker threads).

    Raises:
        ValueError: ``maxsize`` is not positive.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be positive, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: _K) -> _V | None:
        """The value for ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def pop(self, key: _K) -> _V | None:
        """Remove and return the value for ``key``, or None."""
        with self._lock:
            return self._data.pop(key, None)

    def get_or_make(self, key: _K, make: Callable[[], _V]) -> _V:
        """The value for ``key``, made (outside the lock) and kept if missing."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        self.put(key, value)
        return value

    def put(self, key: _K, value: _V) -> None:
        """Keep ``value`` for ``key`` (replacing any), as the most recently used."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
