"""Pipelined write transactions (``call_core_blocking(..., pipelined=True)``): on psycopg the
statements go out without waiting for each other, and a failure anywhere, raised where rows
are next read or at the commit, still leaves nothing written and raises what SQLAlchemy
would. On SQLite the same work runs in a plain transaction: both must behave alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from cheeseshop.db.models import FilenameRegistry
from cheeseshop.db.prepared import Prepared

_names = FilenameRegistry.__table__
INSERT = Prepared(insert(_names))
COUNT = Prepared(select(func.count()).select_from(_names))
NAMES = Prepared(select(_names.c.filename).order_by(_names.c.filename))
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class Refused(Exception):
    pass


@pytest.fixture
def write(cheeseshop_services: Any) -> Any:
    """``await write(work)``: ``work`` in a pipelined write transaction, from a worker thread."""
    db = cheeseshop_services.db

    async def run(work: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(db.call_core_blocking, work, write=True, loop=loop, timeout=10, pipelined=True)

    return run


def add(connection: Connection, *names: str) -> None:
    for name in names:
        INSERT.rows(connection, {"filename": name, "created": NOW})  # no rows read: not waited for


async def names(write: Any) -> list[str]:
    return [row[0] for row in await write(lambda connection: NAMES.rows(connection))]


async def test_what_the_work_writes_is_committed_and_read_back_within_it(write: Any) -> None:
    def work(connection: Connection) -> int:
        add(connection, "a", "b")
        return COUNT.scalar(connection)  # reads the rows sent before it

    assert await write(work) == 2
    assert await names(write) == ["a", "b"]


@pytest.mark.parametrize("read_after", [True, False], ids=["read-after", "nothing-read-after"])
async def test_a_unique_violation_raises_integrity_error_and_writes_nothing(write: Any, read_after: bool) -> None:
    await write(lambda connection: add(connection, "taken"))

    def work(connection: Connection) -> int | None:
        add(connection, "new", "taken", "newer")
        # Raised where rows are next read; or, with none read, by the commit.
        return COUNT.scalar(connection) if read_after else None

    with pytest.raises(IntegrityError):
        await write(work)
    assert await names(write) == ["taken"]
    # The connection went back to the pool fit for use.
    await write(lambda connection: add(connection, "after"))
    assert await names(write) == ["after", "taken"]


async def test_an_exception_in_the_work_rolls_back(write: Any) -> None:
    def work(connection: Connection) -> None:
        add(connection, "gone")
        COUNT.scalar(connection)
        raise Refused

    with pytest.raises(Refused):
        await write(work)
    assert await names(write) == []


async def test_a_text_statement_whose_rows_are_read_is_refused_in_a_pipeline(
    write: Any, cheeseshop_services: Any
) -> None:
    # Its rows cannot be told from the cursor before they arrive; on SQLite there is no pipeline.
    query = Prepared(text("SELECT 1"))
    if cheeseshop_services.db.is_sqlite:
        assert await write(lambda connection: query.rows(connection)) == [(1,)]
    else:
        with pytest.raises(TypeError, match="pipeline"):
            await write(lambda connection: query.rows(connection))
