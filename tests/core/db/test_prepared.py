"""Prepared statements give what ``connection.execute`` gives, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, create_engine, event, exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from cheeseshop.db.models import FilenameRegistry, Project, Release
from cheeseshop.db.prepared import Prepared

NOW = datetime(2026, 11, 29, 12, 30, 15, 123456, tzinfo=UTC)

_projects = Project.__table__
_releases = Release.__table__

INSERT_PROJECT = insert(_projects).returning(_projects.c.id, _projects.c.created, _projects.c.ultranormalized_name)
INSERT_RELEASE = insert(_releases).returning(_releases.c.id)
READ = (
    select(
        Project.name,
        Project.created,
        Release.classifiers,
        Release.project_urls,
        Release.is_prerelease,
        exists().where(FilenameRegistry.filename == bindparam("filename")),
        select(Project.name).where(Project.ultranormalized_name == bindparam("folded")).limit(1).scalar_subquery(),
    )
    .join(Release, Release.project_id == Project.id)
    .where(Project.normalized_name == bindparam("normalized_name"))
)
GROW = (
    update(_projects)
    .where(_projects.c.id == bindparam("project_id"))
    .values(total_size=_projects.c.total_size + bindparam("added"))
)


def release_values(project_id: int) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "version": "1.0",
        "canonical_version": "1",
        "created": NOW,
        "classifiers": ["Framework :: Quart", "Topic :: Ünïcode"],
        "project_urls": {"Home": "https://example.invalid/"},
        "is_prerelease": False,
    }


@pytest.fixture(params=["event-loop", "worker-thread"])
def run_core(request: pytest.FixtureRequest, cheeseshop_services: Any) -> Any:
    """``await run_core(work, write=...)``: by ``Database.run_core`` (asyncpg on PostgreSQL),
    or from a worker thread by ``call_core_blocking`` (psycopg on PostgreSQL)."""
    db = cheeseshop_services.db
    if request.param == "event-loop":
        return db.run_core

    async def from_a_thread(work: Any, *, write: bool = False) -> Any:
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(db.call_core_blocking, work, write=write, loop=loop, timeout=10)

    return from_a_thread


async def both_ways(run_core: Any, work: Any) -> tuple[Any, Any]:
    """``work(connection, prepared: bool)`` once through Prepared, once through SQLAlchemy,
    each in a write transaction of its own that is rolled back."""

    class RolledBack(Exception):
        pass

    results = []
    for prepared in (True, False):
        def run(connection: Connection, prepared: bool = prepared) -> None:
            results.append(work(connection, prepared))
            raise RolledBack

        with pytest.raises(RolledBack):
            await run_core(run, write=True)
    return results[0], results[1]


async def test_insert_select_update_agree(run_core: Any) -> None:
    insert_project = Prepared(INSERT_PROJECT)
    insert_release = Prepared(INSERT_RELEASE)
    read, grow = Prepared(READ), Prepared(GROW)
    project = {"name": "Pre_Pared", "normalized_name": "pre-pared"}

    def work(connection: Connection, prepared: bool) -> list[Any]:
        if prepared:
            project_id, created, folded = insert_project.first(connection, project)
            insert_release.rows(connection, release_values(project_id))
            grow.rows(connection, {"project_id": project_id, "added": 5})
            row = read.first(connection, {"normalized_name": "pre-pared", "filename": "x", "folded": folded})
        else:
            project_id, created, folded = connection.execute(INSERT_PROJECT, project).one()
            connection.execute(INSERT_RELEASE, release_values(project_id))
            connection.execute(GROW, {"project_id": project_id, "added": 5})
            row = connection.execute(READ, {"normalized_name": "pre-pared", "filename": "x", "folded": folded}).one()
        size = connection.scalar(select(_projects.c.total_size).where(_projects.c.id == project_id))
        # The defaults were filled in: a creation time, and the confusable fold of the name.
        assert created.tzinfo is UTC and abs((datetime.now(UTC) - created).total_seconds()) < 60
        assert row[1] == created
        return [tuple(row[:1]) + tuple(row[2:]), folded, size]

    by_prepared, by_sqlalchemy = await both_ways(run_core, work)
    assert by_prepared == by_sqlalchemy
    name, classifiers, urls, prerelease, used, similar = by_prepared[0]
    assert (name, classifiers, urls, prerelease, similar) == (
        "Pre_Pared",
        ["Framework :: Quart", "Topic :: Ünïcode"],
        {"Home": "https://example.invalid/"},
        False,
        "Pre_Pared",
    )
    assert used in (False, 0) and by_prepared[2] == 5


async def test_rows_of_each_kind_of_statement_agree(run_core: Any) -> None:
    # Whether a statement returns rows is known from its kind, not asked of the cursor:
    # a SELECT does; an INSERT with no RETURNING of its own gets the implicit RETURNING of
    # its primary key on PostgreSQL (none on SQLite); an UPDATE without RETURNING has none;
    # text is asked of the cursor.
    statements = [
        (insert(_projects), {"name": "Kinds", "normalized_name": "kinds"}),
        (select(Project.name).where(Project.normalized_name == bindparam("normalized_name")), {"normalized_name": "kinds"}),
        (GROW, {"project_id": 1, "added": 1}),
        (update(_projects).values(total_size=0).returning(_projects.c.total_size), {}),
        (text("SELECT name FROM projects"), {}),
        (text("UPDATE projects SET total_size = 2"), {}),
    ]

    def work(connection: Connection, prepared: bool) -> list[Any]:
        if prepared:
            return [Prepared(statement).rows(connection, params) for statement, params in statements]
        results = [connection.execute(statement, params) for statement, params in statements]
        # SQLAlchemy keeps the implicit RETURNING's row for itself, as the inserted key.
        inserted = results[0].inserted_primary_key if results[0].context.returned_default_rows else None
        return [
            [tuple(inserted)] if inserted else [],
            *([tuple(row) for row in result] if result.returns_rows else [] for result in results[1:]),
        ]

    by_prepared, by_sqlalchemy = await both_ways(run_core, work)
    assert by_prepared[1:] == by_sqlalchemy[1:]
    # The ids differ (a sequence is not rolled back); one row each on PostgreSQL, none on SQLite.
    assert len(by_prepared[0]) == len(by_sqlalchemy[0])
    assert by_prepared[1] == [("Kinds",)] and by_prepared[3] == [(0,)] and by_prepared[4] == [("Kinds",)]
    assert by_prepared[2] == by_prepared[5] == []


async def test_datetimes_round_trip_in_utc(run_core: Any) -> None:
    insert_release = Prepared(INSERT_RELEASE)
    created = Prepared(select(Release.created).where(Release.id == bindparam("id")))

    def work(connection: Connection, prepared: bool) -> datetime:
        project_id = connection.scalar(INSERT_PROJECT, {"name": "when", "normalized_name": "when"})
        release_id = insert_release.scalar(connection, release_values(project_id))
        if prepared:
            return created.scalar(connection, {"id": release_id})
        return connection.scalar(created.statement, {"id": release_id})

    by_prepared, by_sqlalchemy = await both_ways(run_core, work)
    assert by_prepared == by_sqlalchemy == NOW


async def test_a_unique_violation_raises_sqlalchemys_integrity_error(run_core: Any) -> None:
    register = Prepared(insert(FilenameRegistry.__table__))

    def twice(connection: Connection) -> None:
        register.rows(connection, {"filename": "a-1.0.tar.gz", "created": NOW})
        register.rows(connection, {"filename": "a-1.0.tar.gz", "created": NOW})

    with pytest.raises(IntegrityError):
        await run_core(twice, write=True)
    count = select(func.count()).select_from(FilenameRegistry.__table__)
    assert await run_core(lambda connection: connection.scalar(count)) == 0


async def test_execute_many_and_text(run_core: Any) -> None:
    register = Prepared(insert(FilenameRegistry.__table__))
    names = Prepared(text("SELECT filename FROM filename_registry WHERE filename LIKE :pattern ORDER BY filename"))

    def work(connection: Connection) -> list[tuple[Any, ...]]:
        register.execute_many(connection, [{"filename": f"b-{i}.zip", "created": NOW} for i in range(3)])
        return names.rows(connection, {"pattern": "b-%"})

    assert await run_core(work, write=True) == [("b-0.zip",), ("b-1.zip",), ("b-2.zip",)]


async def test_a_read_outside_a_transaction_begins_one(run_core: Any) -> None:
    count = Prepared(select(func.count()).select_from(_projects))

    def work(connection: Connection) -> tuple[int, bool]:
        return count.scalar(connection), connection.in_transaction()

    assert await run_core(work) == (0, True)


async def test_expanding_parameters_are_refused(run_core: Any) -> None:
    expanding = Prepared(select(Project.id).where(Project.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(TypeError, match="IN parameter"):
        await run_core(lambda connection: expanding.rows(connection, {"ids": [1]}))


@pytest.mark.parametrize("paramstyle", ["qmark", "named"])
def test_a_driver_with_named_parameters_gets_the_statement_through_sqlalchemy(paramstyle: str) -> None:
    # SQLite's driver takes either style; so does psycopg, which SQLAlchemy gives named ones.
    engine = create_engine("sqlite://", paramstyle=paramstyle)
    FilenameRegistry.__table__.create(engine)
    through_sqlalchemy: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: through_sqlalchemy.append(args[2]))
    register = Prepared(insert(FilenameRegistry.__table__))
    names = Prepared(select(FilenameRegistry.filename).where(FilenameRegistry.filename.like(bindparam("pattern"))))

    with engine.begin() as connection:
        register.rows(connection, {"filename": "c-1.zip", "created": NOW})
        register.execute_many(connection, [{"filename": "c-2.zip", "created": NOW}])
        found = names.rows(connection, {"pattern": "c-%"})

    assert sorted(found) == [("c-1.zip",), ("c-2.zip",)]
    # Positional: run on the cursor, past SQLAlchemy's execution (and its events).
    assert len(through_sqlalchemy) == (0 if paramstyle == "qmark" else 3)
