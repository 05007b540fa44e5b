"""API keys that say who is calling and what they may touch.

A key carries an identity (its name) and a scope: ``admin``, or the client ids and
session ids whose sessions and requests it may use. Everything outside a key's scope is
answered as if it did not exist (404), so one tenant cannot even learn another's ids.
The key's name is the actor of every decision it makes, never a field the caller fills in.

Two ways to configure keys, which may be combined (names must stay unique):

``LOOPGATE_API_KEYS``: comma-separated ``key`` or ``name=key``; every such key is admin
(this is the single-key setup that existed before scopes, and keeps working).

``LOOPGATE_API_KEYS_FILE``: a TOML file with one table per key::

    [keys.billing-bot]
    key = "a-long-random-string"      # or key_env = "BILLING_BOT_KEY"
    clients = ["billing"]             # its sessions' client_id
    sessions = ["invoices"]           # and/or session ids

    [keys.ops]
    key_env = "OPS_KEY"
    admin = true                      # every session and request

A key in the file must say ``admin = true`` or name clients or sessions: a key with no
scope is refused rather than guessed at.
"""

from __future__ import annotations

import hmac
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopgate_lc.errors import (
    ConfigurationError,
    GrantNotFound,
    OutOfScope,
    RequestNotFound,
    SessionNotFound,
)
from loopgate_lc.gateway import Loopgate
from loopgate_lc.stores.base import GrantRecord, RequestRecord, RequestScope, SessionRecord

__all__ = [
    "ADMIN",
    "ApiKey",
    "ApiKeys",
    "filing_client",
    "load_api_keys",
    "own_grant",
    "own_request",
    "own_session",
    "parse_api_keys",
    "pending_page",
]



@dataclass(frozen=True)
class ApiKey:
    """One key: its name (the identity), its secret value and its scope.

    Attributes:
        name: The identity; decisions are audited as ``api:<name>``. None for a bare
            key from ``LOOPGATE_API_KEYS`` (audited as plain ``api``).
        key: The secret the caller presents; never shown in reprs.
        admin: May use every session and request.
        clients: Client ids whose sessions and requests this key may use.
        sessions: Session ids this key may use.
    """

    name: str | None
    key: str = field(repr=False)
    admin: bool = True
    clients: frozenset[str] = frozenset()
    sessions: frozenset[str] = frozenset()

    @property
    def identity(self) -> str:
        """The name approver lists are checked against."""
        return self.name or "api"

    @property
    def actor(self) -> str:
        """The audit's actor for what this key does."""
        return f"api:{self.name}" if self.name else "api"

    @property
    def scope(self) -> RequestScope | None:
        """The requests this key may use, as a store filter; None for an admin key (all).
        Listings hand it to the store's query, so they page over this key's share only."""
        return None if self.admin else RequestScope(sessions=self.sessions,
                                                    clients=self.clients)

    def may_use(self, session_id: str | None, client_id: str | None) -> bool:
        """Whether a session or request with these ids is inside this key's scope."""
        scope = self.scope
        return scope is None or scope.holds(session_id, client_id)


ADMIN = ApiKey(None, "", admin=True)
"""The caller when the server has no keys at all: loopback-only use, everything allowed."""


class ApiKeys:
    """The server's keys; an empty set means no authentication (everyone is admin).

    Args:
        keys: ``ApiKey`` objects, ``{name: key}`` (admin keys), or bare admin keys.
    """

    def __init__(self, keys: Iterable[ApiKey] | Mapping[str, str] | Iterable[str] = ()
                 ) -> None:
        found: list[ApiKey] = []
        if isinstance(keys, Mapping):
            found = [ApiKey(str(k), str(v)) for k, v in keys.items()]
        else:
            for entry in keys:
                found.append(entry if isinstance(entry, ApiKey) else ApiKey(None, str(entry)))
        names = [k.name for k in found if k.name is not None]
        for name in names:
            if names.count(name) > 1:
                raise ConfigurationError(f"API key name {name!r} appears twice")
        for entry in found:
            if not entry.key or entry.key != entry.key.strip():
                raise ConfigurationError(
                    f"API key {entry.name or '#'} is empty or has surrounding spaces")
            if not entry.admin and not (entry.clients or entry.sessions):
                raise ConfigurationError(
                    f"API key {entry.name or '#'} has no scope: give it admin = true, "
                    "clients or sessions")
        self._keys = tuple(found)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:  # keys stay out of logs
        return f"ApiKeys({len(self._keys)} keys)"

    def __add__(self, other: ApiKeys) -> ApiKeys:
        return ApiKeys([*self._keys, *other._keys])

    def find(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``, or None.

        Every key is compared (constant time each, no early exit), so timing does not tell
        which key came close.
        """
        found: ApiKey | None = None
        given = presented.encode()
        for entry in self._keys:
            if hmac.compare_digest(given, entry.key.encode()):
                found = entry
        return found

    def named(self, name: str) -> ApiKey | None:
        """The key whose identity is ``name`` (the inbox signs people in by name), or None."""
        return next((k for k in self._keys if k.name is not None and k.name == name), None)

    def actor(self, presented: str) -> str | None:
        """The audit actor for a presented key, or None when it matches no key."""
        entry = self.find(presented)
        return None if entry is None else entry.actor


def parse_api_keys(text: str | None) -> ApiKeys:
    """Read ``LOOPGATE_API_KEYS``: comma-separated ``key`` or ``name=key``, all admin.

    Raises:
        ConfigurationError: An entry is empty or a name repeats.
    """
    if not text or not text.strip():
        return ApiKeys()
    found: list[ApiKey] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, key = entry.partition("=")
        if sep and name.strip() and key.strip():
            found.append(ApiKey(name.strip(), key.strip()))
        elif sep:
            raise ConfigurationError("an API key entry 'name=key' has an empty name or key")
        else:
            found.append(ApiKey(None, entry))
    return ApiKeys(found)


def _strings(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{where} must be a list of non-empty strings")
    return frozenset(value)


def _file_keys(path: str, env: Mapping[str, str]) -> ApiKeys:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the API key file {path!r}: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"the API key file {path!r} is not valid TOML: {exc}") \
            from exc
    tables = data.get("keys")
    if not isinstance(tables, dict) or not tables:
        raise ConfigurationError(f"the API key file {path!r} has no [keys.<name>] tables")
    found: list[ApiKey] = []
    for name, table in tables.items():
        where = f"[keys.{name}] in {path!r}"
        if not isinstance(table, dict):
            raise ConfigurationError(f"{where} must be a table")
        unknown = set(table) - {"key", "key_env", "admin", "clients", "sessions"}
        if unknown:
            raise ConfigurationError(f"{where} has unknown fields {sorted(unknown)}")
        key = table.get("key")
        if "key_env" in table:
            key = env.get(str(table["key_env"]))
            if not key:
                raise ConfigurationError(
                    f"{where}: the environment variable {table['key_env']!r} is not set")
        if not isinstance(key, str):
            raise ConfigurationError(f"{where} needs key = \"...\" or key_env = \"VAR\"")
        admin = table.get("admin", False)
        if not isinstance(admin, bool):
            raise ConfigurationError(f"{where}: admin must be true or false")
        found.append(ApiKey(name, key, admin=admin,
                            clients=_strings(table.get("clients"), f"{where}: clients"),
                            sessions=_strings(table.get("sessions"), f"{where}: sessions")))
    return ApiKeys(found)


def load_api_keys(environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys ``loopgate-lc serve`` uses: ``LOOPGATE_API_KEYS`` and the file named by
    ``LOOPGATE_API_KEYS_FILE``, combined.

    Raises:
        ConfigurationError: Either source is malformed, or a name appears in both.
    """
    env = os.environ if environ is None else environ
    keys = parse_api_keys(env.get("LOOPGATE_API_KEYS"))
    path = env.get("LOOPGATE_API_KEYS_FILE")
    if path and path.strip():
        keys = keys + _file_keys(path.strip(), env)
    return keys


# --- the scope, applied: the HTTP routes and the MCP tools share these ----------------------


async def own_session(gateway: Loopgate, key: ApiKey, session_id: str) -> SessionRecord:
    """The session, if ``key`` may use it.

    Raises:
        SessionNotFound: It does not exist, or it is another tenant's (the same answer,
            so its existence is not leaked).
    """
    session = await gateway.asession(session_id)
    if not key.may_use(session.session_id, session.client_id):
        raise SessionNotFound(session_id)
    return session


async def own_request(gateway: Loopgate, key: ApiKey, request_id: str) -> RequestRecord:
    """The request, if ``key`` may use it.

    Raises:
        RequestNotFound: It does not exist, or it is another tenant's.
    """
    record = await gateway.aget(request_id)
    if not key.may_use(record.session_id, record.client_id):
        raise RequestNotFound(request_id)
    return record


async def own_grant(gateway: Loopgate, key: ApiKey, grant_id: str) -> GrantRecord:
    """The grant, if ``key`` may use the session or client of the decision that made it.

    Raises:
        GrantNotFound: It does not exist, or it is another tenant's.
    """
    grant = await gateway.aget_grant(grant_id)
    if not key.may_use(grant.session_id, grant.client_id):
        raise GrantNotFound(grant_id)
    return grant


async def pending_page(gateway: Loopgate, key: ApiKey, *, session_id: str | None,
                       limit: int, after: str | None
                       ) -> tuple[list[RequestRecord], str | None]:
    """One page of the pending requests ``key`` may use, oldest first, and the cursor of
    the next page (None on the last).

    The scope is the store's query, so a page costs the page. A cursor is checked like
    any id the key names: one outside its scope is not found, so paging cannot probe
    other tenants' ids.

    Raises:
        SessionNotFound: ``session_id`` is unknown or another tenant's.
        RequestNotFound: ``after`` is unknown or another tenant's.
    """
    if session_id is not None:
        await own_session(gateway, key, session_id)
    if after is not None:
        await own_request(gateway, key, after)
    records = await gateway.apending(session_id=session_id, scope=key.scope,
                                     limit=limit + 1, after=after)
    return records[:limit], (records[limit - 1].id if len(records) > limit else None)


def filing_client(key: ApiKey, session: SessionRecord | None, client_id: str | None
                  ) -> str | None:
    """The client id a new request is filed under.

    A scoped key files only under its own clients or the session's own client id, so it
    can never plant a request in another tenant's listings. Without a client id the
    session's is used, else the key's only client.

    Raises:
        OutOfScope: The client id is outside the key's scope (403).
    """
    if key.admin:
        return client_id or None
    chosen = client_id or (session.client_id if session is not None else None)
    if not chosen and len(key.clients) == 1:
        chosen = next(iter(key.clients))
    if chosen and (chosen in key.clients
                   or (session is not None and chosen == session.client_id)):
        return chosen
    if not chosen and session is not None:
        return None  # a session-scoped key on a session without a client id
    raise OutOfScope(
        f"API key {key.identity!r} may not file requests for client {chosen or ''!r}; "
        f"its clients are {sorted(key.clients)}")
