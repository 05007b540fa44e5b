"""Where approvals live: the :class:`Store` contract, three backends, and :func:`open_store`.

``PostgresStore`` is imported on first use, so psycopg stays an optional dependency
(``pip install 'loopgate-lc[postgres]'``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.stores.base import (
    AuditEvent,
    Ballot,
    Delivered,
    GrantRecord,
    OutboxItem,
    RequestRecord,
    RequestScope,
    SessionRecord,
    Store,
    Vote,
)
from loopgate_lc.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from loopgate_lc.stores.memory import MemoryStore
    from loopgate_lc.stores.postgres import PostgresStore

__all__ = [
    "AuditEvent",
    "Ballot",
    "Delivered",
    "GrantRecord",
    "MemoryStore",
    "OutboxItem",
    "PostgresStore",
    "RequestRecord",
    "RequestScope",
    "SQLiteStore",
    "SessionRecord",
    "Store",
    "Vote",
    "aopen_store",
    "open_store",
]

#: The store used when none is named: a file in the working directory.
DEFAULT_SQLITE_PATH = "loopgate.db"

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_ACCEPTED = (
    "'memory://', 'sqlite:///path.db' (or a plain path ending in .db, .sqlite or .sqlite3), "
    "'postgresql://...' or 'postgres://...'"
)


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        return _postgres_store_class()
    if name == "MemoryStore":  # imported on first use, like PostgresStore
        from loopgate_lc.stores.memory import MemoryStore

        return MemoryStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _postgres_store_class() -> type[PostgresStore]:
    try:
        from loopgate_lc.stores.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigurationError(
            "the PostgreSQL store needs psycopg and psycopg-pool: "
            "pip install 'loopgate-lc[postgres]'"
        ) from exc
    return PostgresStore


def open_store(url: str | os.PathLike[str] | Store | None = None) -> Store:
    """The store a URL names, not yet set up (``await store.setup()`` before use).

    Args:
        url: ``memory://``; ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` or a
            plain path ending in ``.db``/``.sqlite``/``.sqlite3``; ``postgresql://...`` or
            ``postgres://...``; an existing :class:`Store` (returned as is); or None for
            ``SQLiteStore("loopgate.db")``.

    Raises:
        ConfigurationError: The URL names no backend loopgate_lc knows, or the
            PostgreSQL driver is not installed.
    """
    if url is None:
        return SQLiteStore(DEFAULT_SQLITE_PATH)
    if isinstance(url, Store):
        return url
    text = os.fspath(url).strip()
    lowered = text.lower()
    if lowered in ("memory://", "memory:", "memory"):
        from loopgate_lc.stores.memory import MemoryStore

        return MemoryStore()
    if lowered.startswith("sqlite:"):
        return SQLiteStore.from_conn_string(text)
    if lowered.startswith(("postgresql://", "postgres://")):
        return _postgres_store_class().from_conn_string(text)
    if "://" not in text and lowered.endswith(_SQLITE_SUFFIXES):
        return SQLiteStore(text)
    from loopgate_lc.locations import printable_store_url  # a leaf: no cycle

    raise ConfigurationError(
        f"cannot open a store from {printable_store_url(text)!r}; expected {_ACCEPTED}")


async def aopen_store(url: str | os.PathLike[str] | Store | None = None) -> Store:
    """:func:`open_store`, then ``await store.setup()``: a store ready to use."""
    store = open_store(url)
    await store.setup()
    return store
