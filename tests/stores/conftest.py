"""Fixtures shared by the store tests: real files, a real PostgreSQL in a fresh schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_DSN_ENV = "LOOPGATE_TEST_POSTGRES_DSN"
POSTGRES_SKIP_REASON = "set LOOPGATE_TEST_POSTGRES_DSN to run the PostgreSQL store tests"


@pytest.fixture
def postgres_dsn() -> str:
    dsn = os.environ.get(POSTGRES_DSN_ENV)
    if not dsn:
        pytest.skip(POSTGRES_SKIP_REASON)
    return dsn


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no other test uses; dropped with everything in it afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"loopgate_test_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
