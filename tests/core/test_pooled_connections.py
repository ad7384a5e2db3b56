"""Pooled PostgreSQL connections that the server closed are replaced at checkout, unpinged."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cheeseshop.db import Database


def _backend_pid(session: Session) -> int:
    pid = session.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


async def _terminate(url: str, pid: int) -> None:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain, timeout=5)
    try:
        assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid) is True
    finally:
        await connection.close()


async def test_a_pooled_connection_the_server_closed_is_replaced(postgres_template_url: str) -> None:
    db = Database(postgres_template_url)
    try:
        # No ping per checkout: that is three round trips (BEGIN, ";", ROLLBACK) each time.
        assert db.engine.sync_engine.pool._pre_ping is False  # type: ignore[attr-defined]
        first = await db.run_read(_backend_pid)
        await _terminate(postgres_template_url, first)
        await asyncio.sleep(0.2)  # the loop reads the hang-up; asyncpg marks the connection closed

        second = await db.run_read(_backend_pid)

        assert second != first
    finally:
        await db.engine.dispose()


def _pid_from_a_worker_thread(db: Database) -> int:
    loop = asyncio.new_event_loop()  # not used: the blocking engine runs in this thread
    try:
        return db.call_core_blocking(
            lambda connection: connection.scalar(text("SELECT pg_backend_pid()")),
            write=False,
            loop=loop,
            timeout=5,
        )
    finally:
        loop.close()


async def test_a_blocking_connection_the_server_closed_is_replaced_unpinged(postgres_template_url: str) -> None:
    db = Database(postgres_template_url)
    try:
        engine = db._blocking_engine  # the psycopg engine of the upload's worker threads
        assert engine is not None and engine.dialect.driver == "psycopg"
        assert engine.pool._pre_ping is False  # type: ignore[attr-defined]
        first = await asyncio.to_thread(_pid_from_a_worker_thread, db)
        await _terminate(postgres_template_url, first)
        await asyncio.sleep(0.2)  # the server's hang-up reaches the pooled socket

        second = await asyncio.to_thread(_pid_from_a_worker_thread, db)

        assert second != first
    finally:
        await db.dispose()
