"""The database: async engine, sessions, and migrations, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import select
import threading
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import await_only

from cheeseshop.db.prepared import in_pipelined_transaction, run_driver_sql

__all__ = ["Database", "DatabaseUnavailable", "Executor", "dialect_name", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"


T = TypeVar("T")

#: Where synchronous database work runs its statements: an ORM ``Session``, or a Core
#: ``Connection`` (:meth:`Database.run_core`). Work made only of Core statements takes
#: either; ``execute``, ``scalar`` and ``scalars`` behave the same on both.
Executor = Session | Connection


def dialect_name(executor: Executor) -> str:
    """``"sqlite"`` or ``"postgresql"``: the database ``executor`` talks to."""
    if isinstance(executor, Connection):
        return executor.dialect.name
    return executor.get_bind().dialect.name


class DatabaseUnavailable(Exception):
    """The database cannot be reached; requests answer 503."""


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling issues BEGIN lazily and cannot take the write
    # lock up front; we emit BEGIN ourselves so write transactions can say IMMEDIATE and
    # never fail with "database is locked" on a read-to-write upgrade.
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("cheeseshop_write", False)
        # On the cursor: exec_driver_sql's execution context cost more than BEGIN itself.
        run_driver_sql(connection, "BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` with the settings this project relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine.sync_engine)
        return engine
    asyncpg = parsed.get_driver_name() == "asyncpg"
    # asyncpg knows without asking when the server has hung up; other drivers are pinged.
    kwargs.setdefault("pool_pre_ping", not asyncpg)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_timeout", 10)
    engine = create_async_engine(url, **kwargs)
    if asyncpg and not kwargs["pool_pre_ping"]:
        _replace_closed_connections(engine.sync_engine)
    return engine


def _replace_closed_connections(engine: Engine) -> None:
    """Hand out no pooled asyncpg connection that the server has closed.

    A restarted PostgreSQL, or ``pg_terminate_backend``, closes the pooled connections'
    sockets, and asyncpg marks each one closed as soon as the event loop reads the hang-up.
    Checking that mark at checkout costs nothing, where SQLAlchemy's ``pool_pre_ping``
    costs three round trips (BEGIN, an empty query, ROLLBACK) on every checkout: nine per
    upload. A closed connection is discarded and a new one opened in its place, so a
    request that follows a restart does not fail. (A connection that dies during a
    statement fails that request either way; SQLAlchemy then discards the whole pool.)
    """

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise exc.DisconnectionError("PostgreSQL closed this pooled connection")


def _sync_sqlite_engine(url: str) -> Engine:
    """A blocking pysqlite engine on the same file, for :meth:`Database.run_read`/``run_write``."""
    engine = create_engine(make_url(url).set(drivername="sqlite"))
    _configure_sqlite(engine)
    return engine


def _blocking_postgres_engine(url: str) -> Engine | None:
    """A blocking psycopg engine on the same database, for work that runs in a worker
    thread (:meth:`Database.call_core_blocking`); None without psycopg.

    Handing such work to the event loop, where asyncpg's connections live, cost an upload
    more than its SQL: a read taken from a worker thread through the loop measured 0.84 ms
    against 0.11 ms for the same read on psycopg in that thread, and 2–4 ms in an upload,
    while the loop waited for the interpreter held by the upload's other threads. On
    psycopg the thread waits on its own socket, without the interpreter, and the loop is
    left to the requests.

    Parameters are PostgreSQL's own, positional ``$1``, ``$2`` (``numeric_dollar``), run
    by psycopg's ``RawCursor``, so that :class:`~cheeseshop.db.prepared.Prepared`
    statements run on its cursor, as they are: with ``%s`` placeholders psycopg rewrote
    each statement's text before sending it, and did not keep the rewriting of one with
    more than 50 parameters (the new release's, 170 µs an upload).
    """
    if importlib.util.find_spec("psycopg") is None:
        return None
    import psycopg

    # A server that stops answering is given up on, not waited for with a thread held:
    # within 10 s when connecting, and about a minute into a statement (TCP keepalives).
    connect_args = {
        "cursor_factory": psycopg.RawCursor,
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    engine = create_engine(
        make_url(url).set(drivername="postgresql+psycopg"),
        paramstyle="numeric_dollar",
        pool_size=10,
        max_overflow=10,
        pool_timeout=10,
        connect_args=connect_args,
    )
    _replace_hung_up_connections(engine)
    return engine


def _replace_hung_up_connections(engine: Engine) -> None:
    """Hand out no pooled psycopg connection that the server has closed, without a ping.

    An idle connection has nothing to read: when its socket is readable, the server has
    hung up (a restart, ``pg_terminate_backend``) or said something unasked, and either
    way the connection is replaced before it is used. A poll with no wait, where a ping
    (``pool_pre_ping``) is a round trip at every checkout.
    """

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        if poller.poll(0):
            raise exc.DisconnectionError("PostgreSQL closed this pooled connection")


class Database:
    """One engine and its session factories; lives on the app (``app.extensions``).

    Two ways in. ``read()``/``write()`` give an ``AsyncSession``: convenient, but on SQLite
    every call crosses to aiosqlite's thread and back (a session with one query makes
    about nine such hops). ``run_read(work)``/``run_write(work)`` run a synchronous
    function on a ``Session`` as one unit: on SQLite the whole transaction runs in one
    worker thread, in one hop, against a pysqlite engine on the same file; on PostgreSQL
    it runs on the async connection through SQLAlchemy's greenlet bridge. The hot paths
    (upload) use the second way; ``work`` must do nothing but database work, since on
    PostgreSQL it runs on the event loop. ``run_core(work)`` is the same on a Core
    ``Connection``, for work made only of Core statements: a Session costs about three
    times as much per transaction and twice as much per statement (measured: 530 µs
    against 140 µs for reading a token and its user, 195 µs against 86 µs a ``SELECT``).
    """

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(cheeseshop_write=True)
        # run_core's reads on PostgreSQL: no BEGIN and no ROLLBACK, two round trips of three.
        # (SQLite keeps its own BEGIN: its driver's isolation level is ours to manage.)
        self._statement_engine = (
            self.engine if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._writer = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._sync_engine: Engine | None = None
        self._write_lock = threading.Lock()
        if self.is_sqlite and make_url(url).database not in (None, "", ":memory:"):
            self._sync_engine = _sync_sqlite_engine(url)
            self._sync_reader = sessionmaker(self._sync_engine, expire_on_commit=False)
            self._sync_write_engine = self._sync_engine.execution_options(cheeseshop_write=True)
            self._sync_writer = sessionmaker(self._sync_write_engine, expire_on_commit=False)
        # Work run from worker threads (call_core_blocking): SQLite's blocking engine, or
        # on PostgreSQL one of psycopg's (reads in autocommit, as run_core's on asyncpg).
        # SQLite's writers also take the process's one write lock (as _write_here).
        self._blocking_engine = self._sync_engine if self.is_sqlite else _blocking_postgres_engine(url)
        self._blocking_reads = self._blocking_writes = self._blocking_engine
        self._blocking_write_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self._sync_engine is not None:
            self._blocking_writes, self._blocking_write_lock = self._sync_write_engine, self._write_lock
        elif self._blocking_engine is not None:
            self._blocking_reads = self._blocking_engine.execution_options(isolation_level="AUTOCOMMIT")

    async def run_read(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in one read transaction (rolled back); returns its result."""
        if self._sync_engine is None:
            async with self.read() as session:
                return await session.run_sync(work)
        return await asyncio.to_thread(self._read_here, work)

    async def run_write(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in one write transaction: committed if it returns, else rolled back."""
        if self._sync_engine is None:
            async with self.write() as session:
                return await session.run_sync(work)
        return await asyncio.to_thread(self._write_here, work)

    async def run_core(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        """``work(connection)`` on a Core ``Connection``: with ``write=True`` in one write
        transaction, committed if it returns (as :meth:`run_write` on a Session).

        With ``write=False`` (reads), on SQLite in one read transaction, rolled back; on
        PostgreSQL each statement on its own (autocommit), which spares the BEGIN and the
        ROLLBACK, two of a one-statement read's three round trips. Every statement still
        sees one consistent state of the database, but two statements of one read may
        see different ones: work whose statements must agree passes ``write=True`` or
        uses :meth:`run_read`.
        """
        if self._sync_engine is not None:
            return await asyncio.to_thread(self._core_here, work, write)
        if write:
            async with self._write_engine.begin() as connection:
                return await connection.run_sync(work)
        async with self._statement_engine.connect() as connection:
            return await connection.run_sync(work)

    def call_core_blocking(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        loop: asyncio.AbstractEventLoop,
        timeout: float | None,
        pipelined: bool = False,
    ) -> T:
        """:meth:`run_core` from a worker thread, blocking it.

        The transaction runs right here, in the calling thread, on a blocking engine:
        SQLite's, or psycopg's on PostgreSQL (:func:`_blocking_postgres_engine`). Without
        psycopg it is handed to ``loop`` (asyncpg's connections belong to it) and awaited
        from here, for at most ``timeout`` seconds (None: until it ends, as a request on
        the loop would). Never call it on ``loop`` itself.

        ``pipelined`` (a write on psycopg): the transaction runs in psycopg's pipeline
        mode, where a statement is sent without waiting for the one before: the server
        is waited for only where ``work`` reads rows, and at the commit
        (:func:`~cheeseshop.db.prepared.in_pipelined_transaction`). ``BEGIN`` goes with
        the first statement, statements whose rows are not read (an ``INSERT`` without
        ``RETURNING``, :meth:`~cheeseshop.db.prepared.Prepared.run`) with the next that
        reads some, ``COMMIT`` with the final sync: a new project's upload waits for the
        server 5 times where it did 8 (counted with strace). For work of
        :class:`~cheeseshop.db.prepared.Prepared` statements only: a failure is raised
        where rows are next read, and ``connection.execute`` would see no rows, and no
        row count, for a statement still on its way.
        """
        if self._blocking_engine is not None:
            return self._core_here(work, write, pipelined)
        return asyncio.run_coroutine_threadsafe(self.run_core(work, write=write), loop).result(timeout)

    def wait_inside_transaction(
        self, futures: Collection[concurrent.futures.Future[Any]], *, timeout: float | None
    ) -> bool:
        """Wait until every one of ``futures`` is done, for at most ``timeout`` seconds,
        from inside ``work`` run by :meth:`run_core`, :meth:`run_read`, :meth:`run_write`
        or their blocking forms; whether they all are. Their results are left to the caller.

        On SQLite such work runs in a worker thread, which simply waits; on PostgreSQL it
        runs on the event loop (through SQLAlchemy's greenlet bridge), where it awaits
        them, so the loop goes on serving meanwhile. The transaction stays open, with its
        locks: this is how a commit waits for work done beside it (the upload's stored
        files), and why it should not wait long.
        """
        if not futures:
            return True
        if not _on_event_loop():
            _, pending = concurrent.futures.wait(futures, timeout=timeout)
            return not pending
        waiting = [asyncio.wrap_future(future) for future in futures]
        _, still = await_only(asyncio.wait(waiting, timeout=timeout))
        return not still

    def _read_here(self, work: Callable[[Session], T]) -> T:
        with self._sync_reader() as session:
            return work(session)

    def _core_here(self, work: Callable[[Connection], T], write: bool, pipelined: bool = False) -> T:
        assert self._blocking_reads is not None and self._blocking_writes is not None
        if not write:
            with self._blocking_reads.connect() as connection:
                return work(connection)
        if pipelined and self._sync_engine is None:  # psycopg's
            # On a connection in autocommit mode: in_pipelined_transaction sends BEGIN and COMMIT.
            with self._blocking_write_lock, self._blocking_reads.connect() as connection:
                return in_pipelined_transaction(connection, work)  # type: ignore[no-any-return]
        with self._blocking_write_lock, self._blocking_writes.begin() as connection:
            return work(connection)

    def _write_here(self, work: Callable[[Session], T]) -> T:
        # One writer at a time within the process: waiting here costs a lock hand-over,
        # where SQLite's own busy handler would sleep the loser 1, 2, 5… milliseconds.
        # (Other processes are still kept apart by SQLite's lock and busy_timeout.)
        with self._write_lock, self._sync_writer() as session, session.begin():
            return work(session)

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
        if self._blocking_engine is not None:
            await asyncio.to_thread(self._blocking_engine.dispose)


def _on_event_loop() -> bool:
    """Whether this runs on a thread's running event loop (through SQLAlchemy's greenlet
    bridge, for asyncpg), rather than in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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
