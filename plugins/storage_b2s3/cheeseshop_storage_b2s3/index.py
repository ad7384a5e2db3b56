"""The record of what is cached in B2: the plugin's own table in the index's database.

``cheeseshop_b2s3_cache`` has one row per storage path copied to B2: the sha256 it was
copied as (the recorded digest at the time), its size and SHA-1 (what B2 reports for a
copy, so a copy is checked without downloading it), when it was copied and when it was
last checked. The table belongs to the plugin, not to the core's migrations: it is
created, if missing, on first use, by the plugin's own SQLAlchemy metadata. Dropping it
loses nothing: the next reconcile re-checks every file (and copies none that B2 holds
intact already).

The plugin's calls are synchronous (event hooks and periodic tasks run in worker
threads). On SQLite they use the standard library's driver on the same file, set up as
the core sets up its own (a busy time-out, ``BEGIN IMMEDIATE`` for writes); elsewhere
(PostgreSQL) each call runs the index's async driver on a short-lived event loop, with an
unpooled engine of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    String,
    Table,
    and_,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, aliased
from sqlalchemy.pool import NullPool

from cheeseshop.db.models import File, UTCDateTime, utcnow
from cheeseshop.packaging.archives import METADATA_FILE_SUFFIX

__all__ = ["TABLE_NAME", "CacheIndex", "CachedRow", "Pending", "cache_table", "metadata"]

T = TypeVar("T")

TABLE_NAME = "cheeseshop_b2s3_cache"

metadata = MetaData()

cache_table = Table(
    TABLE_NAME,
    metadata,
    Column("path", String(512), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("sha1", String(40), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("cached_at", UTCDateTime(), nullable=False),
    Column("checked_at", UTCDateTime(), nullable=False, index=True),
)


_ROW = (cache_table.c.path, cache_table.c.sha256, cache_table.c.sha1, cache_table.c.size)


def _sqlite_engine(url: str) -> Engine:
    """A blocking, unpooled pysqlite engine on the index's SQLite file (WAL is set by the core)."""
    engine = create_engine(make_url(url).set(drivername="sqlite"), poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun below, so that writes can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("cheeseshop_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@dataclasses.dataclass(frozen=True)
class Pending:
    """A path the files table records whose cached copy is missing or recorded otherwise."""

    file_id: int
    path: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class CachedRow:
    """A row of the cache table."""

    path: str
    sha256: str
    sha1: str
    size: int


class CacheIndex:
    """Reads the core's ``files`` table and keeps the plugin's cache table."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        self._sync_engine: Engine | None = None
        self._created = False
        self._lock = threading.Lock()

    def run(self, work: Callable[[Session], T], *, write: bool = False) -> T:
        """``work(session)`` in one transaction (committed when ``write``); blocking.

        Call it from a thread without a running event loop (hooks, tasks, ``to_thread``).
        """
        if self.is_sqlite:
            return self._run_sqlite(work, write=write)
        return asyncio.run(self._run_async(work, write=write))

    def dispose(self) -> None:
        """Forget the SQLite engine (it pools nothing; this only drops the object)."""
        with self._lock:
            self._sync_engine = None

    # SQLite: the standard library's driver, straight from this thread (aiosqlite's
    # thread hand-offs buy nothing here, and an event loop per call costs).

    def _sqlite(self) -> Engine:
        with self._lock:
            if self._sync_engine is None:
                self._sync_engine = _sqlite_engine(self.url)
            return self._sync_engine

    def _run_sqlite(self, work: Callable[[Session], T], *, write: bool) -> T:
        engine = self._sqlite()
        if not self._created:
            try:
                # The write lock first: a read transaction that turns into a write one
                # fails at once on SQLite when another connection wrote meanwhile.
                with engine.execution_options(cheeseshop_write=True).begin() as connection:
                    metadata.create_all(connection, checkfirst=True)
            except DBAPIError:
                with engine.connect() as connection:
                    if not connection.dialect.has_table(connection, TABLE_NAME):
                        raise
            self._created = True
        if write:
            with engine.execution_options(cheeseshop_write=True).begin() as connection:
                with Session(bind=connection) as session:
                    return work(session)
        with engine.connect() as connection, Session(bind=connection) as session:
            return work(session)

    # Other databases (PostgreSQL): the index's async driver, on a loop of this call's own,
    # with an engine of its own too: an async engine must not serve two event loops at
    # once (SQLAlchemy guards its first connection with an asyncio lock, bound to a loop).

    async def _run_async(self, work: Callable[[Session], T], *, write: bool) -> T:
        engine = create_async_engine(self.url, poolclass=NullPool)
        try:
            if not self._created:
                await self._create(engine)

            def in_session(sync_connection: Any) -> T:
                with Session(bind=sync_connection) as session:
                    return work(session)

            if write:
                async with engine.begin() as connection:
                    return await connection.run_sync(in_session)
            async with engine.connect() as connection:
                return await connection.run_sync(in_session)
        finally:
            await engine.dispose()

    async def _create(self, engine: AsyncEngine) -> None:
        try:
            async with engine.begin() as connection:
                await connection.run_sync(metadata.create_all, checkfirst=True)
        except DBAPIError:
            # Another process created it between our check and our CREATE: fine, if it
            # is there now.
            async with engine.connect() as connection:
                exists = await connection.run_sync(
                    lambda c: c.dialect.has_table(c, TABLE_NAME)
                )
            if not exists:
                raise
        self._created = True

    # -- the files table -------------------------------------------------------------------

    def recorded(self, path: str) -> tuple[str, str | None] | None:
        """(sha256, metadata sha256) of the file row stored at ``path``; None without one.

        For a ``.metadata`` path, its distribution's row is looked up and the metadata's
        digest returned first: ``(metadata sha256, None)``, or None when it has none.
        """
        is_metadata = path.endswith(METADATA_FILE_SUFFIX)
        file_path = path.removesuffix(METADATA_FILE_SUFFIX) if is_metadata else path
        filename = file_path.rpartition("/")[2]

        def work(session: Session) -> tuple[str, str | None] | None:
            # By filename (unique, indexed), then the path itself.
            row = session.execute(
                select(File.sha256_digest, File.metadata_sha256).where(
                    File.filename == filename, File.path == file_path
                )
            ).first()
            if row is None:
                return None
            if is_metadata:
                return None if row.metadata_sha256 is None else (row.metadata_sha256, None)
            return row.sha256_digest, row.metadata_sha256

        return self.run(work)

    def pending(self, *, after_id: int, limit: int) -> list[Pending]:
        """Files (by id, after ``after_id``) whose file or metadata is not recorded as cached
        with the digest the files table has, up to ``limit`` files' worth."""
        file_copy = aliased(cache_table)
        metadata_copy = aliased(cache_table)
        metadata_path = File.path + METADATA_FILE_SUFFIX

        def work(session: Session) -> list[Pending]:
            rows = session.execute(
                select(
                    File.id,
                    File.path,
                    File.sha256_digest,
                    File.metadata_sha256,
                    file_copy.c.sha256,
                    metadata_copy.c.sha256,
                )
                .outerjoin(file_copy, file_copy.c.path == File.path)
                .outerjoin(metadata_copy, metadata_copy.c.path == metadata_path)
                .where(File.id > after_id)
                .where(
                    or_(
                        file_copy.c.path.is_(None),
                        file_copy.c.sha256 != File.sha256_digest,
                        and_(
                            File.metadata_sha256.is_not(None),
                            or_(
                                metadata_copy.c.path.is_(None),
                                metadata_copy.c.sha256 != File.metadata_sha256,
                            ),
                        ),
                    )
                )
                .order_by(File.id)
                .limit(limit)
            ).all()
            found: list[Pending] = []
            for file_id, path, sha256, metadata_sha256, cached, cached_metadata in rows:
                if cached != sha256:
                    found.append(Pending(file_id, path, sha256))
                if metadata_sha256 is not None and cached_metadata != metadata_sha256:
                    found.append(Pending(file_id, path + METADATA_FILE_SUFFIX, metadata_sha256))
            return found

        return self.run(work)

    # -- the cache table -------------------------------------------------------------------

    def record(self, path: str, *, sha256: str, sha1: str, size: int) -> None:
        """Record that B2 holds ``path`` as these bytes (checked now)."""
        now = utcnow()
        values = {
            "path": path,
            "sha256": sha256,
            "sha1": sha1,
            "size": size,
            "cached_at": now,
            "checked_at": now,
        }

        def work(session: Session) -> None:
            if self.is_sqlite:
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            statement = insert(cache_table).values(**values)
            changed = {
                key: statement.excluded[key]
                for key in ("sha256", "sha1", "size", "cached_at", "checked_at")
            }
            session.execute(statement.on_conflict_do_update(index_elements=["path"], set_=changed))

        self.run(work, write=True)

    def checked(self, paths: Sequence[str]) -> None:
        """Note that the copies at ``paths`` were checked and found good, now."""
        if not paths:
            return
        now = utcnow()
        self.run(
            lambda session: session.execute(
                update(cache_table)
                .where(cache_table.c.path.in_(list(paths)))
                .values(checked_at=now)
            ),
            write=True,
        )

    def forget(self, path: str) -> None:
        """Drop the row of ``path`` (its file row is gone)."""
        self.run(
            lambda session: session.execute(delete(cache_table).where(cache_table.c.path == path)),
            write=True,
        )

    def cached(self, path: str) -> CachedRow | None:
        """The row of ``path``, if any."""

        def work(session: Session) -> CachedRow | None:
            row = session.execute(
                select(*_ROW).where(cache_table.c.path == path)
            ).first()
            return None if row is None else CachedRow(row.path, row.sha256, row.sha1, int(row.size))

        return self.run(work)

    def least_recently_checked(self, limit: int, *, before: datetime) -> list[CachedRow]:
        """Up to ``limit`` rows last checked before ``before``, the longest ago first."""

        def work(session: Session) -> list[CachedRow]:
            rows = session.execute(
                select(*_ROW)
                .where(cache_table.c.checked_at < before)
                .order_by(cache_table.c.checked_at, cache_table.c.path)
                .limit(limit)
            ).all()
            return [CachedRow(r.path, r.sha256, r.sha1, int(r.size)) for r in rows]

        return self.run(work)
