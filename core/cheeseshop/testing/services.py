"""Real services for tests: PostgreSQL databases, and what to do when one is missing."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

__all__ = [
    "POSTGRES_URL_ENV",
    "ServiceUnavailable",
    "create_postgres_database",
    "make_postgres_database",
    "drop_postgres_database",
    "migrated_sqlite",
    "postgres_server_url",
    "service_missing",
    "truncate_all",
]

POSTGRES_URL_ENV = "CHEESESHOP_TEST_POSTGRES_URL"
_DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def service_missing(service: str, reason: str) -> None:
    """Skip the test, or fail it under ``CI=true``, where a missing service is a failure."""
    message = f"{service} is not available: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: tests never skip for a missing service)", pytrace=False)
    pytest.skip(message)


def postgres_server_url() -> str:
    """libpq URL of the PostgreSQL server tests use (``CHEESESHOP_TEST_POSTGRES_URL``)."""
    return os.environ.get(POSTGRES_URL_ENV, _DEFAULT_POSTGRES)


def _async_url(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + database


async def _create(url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop(url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def drop_postgres_database(name: str) -> None:
    """Drop a database made by :func:`create_postgres_database`."""
    asyncio.run(_drop(postgres_server_url(), name))


class ServiceUnavailable(Exception):
    """A service (PostgreSQL, Redis …) a test or benchmark needs cannot be reached."""


def create_postgres_database(name: str) -> str:
    """Create (or re-create) database ``name``, migrate it, and return its SQLAlchemy URL.

    Calls :func:`service_missing` when the server cannot be reached.
    """
    try:
        return make_postgres_database(name)
    except ServiceUnavailable as error:
        service_missing("PostgreSQL", str(error))
        raise  # not reached: service_missing skips or fails


def make_postgres_database(name: str) -> str:
    """:func:`create_postgres_database` outside pytest: raises ServiceUnavailable instead."""
    if not re.fullmatch(r"[a-z0-9_]{1,60}", name):
        raise ValueError(f"bad database name {name!r}")
    server = postgres_server_url()
    try:
        asyncio.run(_create(server, name))
    except (OSError, asyncio.TimeoutError) as error:
        raise ServiceUnavailable(f"{server}: {error}") from None
    except Exception as error:  # asyncpg's own errors (auth, ...) share no base with OSError
        raise ServiceUnavailable(f"{server}: {type(error).__name__}: {error}") from None
    url = _async_url(server, name)
    from cheeseshop.db import upgrade

    upgrade(url)
    return url


async def truncate_all(url: str) -> None:
    """Empty every table of a PostgreSQL test database, resetting identities."""
    from sqlalchemy import text

    from cheeseshop.db import make_engine
    from cheeseshop.db.models import Base

    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as connection:
            tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


def migrated_sqlite(template: Path, target: Path) -> str:
    """Copy a migrated SQLite template to ``target``; return its SQLAlchemy URL."""
    if not template.exists():
        from cheeseshop.db import upgrade

        template.parent.mkdir(parents=True, exist_ok=True)
        upgrade(f"sqlite+aiosqlite:///{template}")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"
