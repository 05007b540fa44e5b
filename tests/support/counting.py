"""A SQLite store that counts its transactions, for tests that pin how many a path makes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TypeVar

from loopgate_lc.stores import SQLiteStore
from loopgate_lc.stores._sql import Op

_T = TypeVar("_T")


class CountingStore(SQLiteStore):
    """Counts write transactions and reads, by operation (the store method's name)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()

    async def _run(self, op: Op[_T], *, write: bool) -> _T:
        (self.writes if write else self.reads)[op.__qualname__.split(".")[1]] += 1
        return await super()._run(op, write=write)
