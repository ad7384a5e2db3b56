"""The database: async engine, sessions, and migrations, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

__all__ = ["Database", "DatabaseUnavailable", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseUnavailable(Exception):
    """The database cannot be reached; requests answer 503."""


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's own transaction handling issues BEGIN lazily and cannot take the write
    # lock up front; we emit BEGIN ourselves so write transactions can say IMMEDIATE and
    # never fail with "database is locked" on a read-to-write upgrade.
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("cheeseshop_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` with the settings this project relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_timeout", 10)
    return create_async_engine(url, **kwargs)


class Database:
    """One engine and its session factories; lives on the app (``app.extensions``)."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        writer_engine = self.engine.execution_options(cheeseshop_write=True)
        self._writer = async_sessionmaker(writer_engine, expire_on_commit=False)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading; rolled back at the end."""
        async with self._reader() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session inside one write transaction: committed on success, else rolled back."""
        async with self._writer() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Blocking; safe to call from a thread."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Apply migrations from async code (Alembic runs its own loop, so in a thread)."""
    await asyncio.to_thread(upgrade, url, revision)
