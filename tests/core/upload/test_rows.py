"""The upload's rows: what ``insert_project``/``insert_file`` write, on SQLite (a statement
per row) and PostgreSQL (a statement per group, with ``WITH`` clauses), is the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from cheeseshop.db.models import File, FilenameRegistry, Project, Release, Role, User
from cheeseshop.packaging.names import confusable_fold
from cheeseshop.upload.rows import insert_file, insert_project

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def release_values(project_id: int, uploader_id: int) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "version": "1.0",
        "canonical_version": "1",
        "is_prerelease": False,
        "created": NOW,
        "summary": "Ünïcode summary",
        "classifiers": ["Framework :: Quart"],
        "requires_dist": ["packaging>=24"],
        "project_urls": {"Home": "https://example.invalid/"},
        "uploader_id": uploader_id,
    }


def file_values(filename: str, uploader_id: int) -> dict[str, Any]:
    return {
        "filename": filename,
        "path": f"ab/cd/ef/{filename}",
        "size": 1234,
        "md5_digest": "0" * 32,
        "sha256_digest": "1" * 64,
        "blake2_256_digest": filename.ljust(64, "2")[:64],
        "packagetype": "bdist_wheel",
        "python_version": "py3",
        "requires_python": ">=3.10",
        "upload_time": NOW,
        "uploaded_by_id": uploader_id,
    }


async def make_user(services: Any) -> int:
    def work(connection: Connection) -> int:
        return connection.scalar(
            User.__table__.insert().values(username="rowan", password_hash="x").returning(User.__table__.c.id)
        )

    return await services.db.run_core(work, write=True)


async def test_a_new_project_release_and_files_are_written_whole(cheeseshop_services: Any) -> None:
    db = cheeseshop_services.db
    user_id = await make_user(cheeseshop_services)

    def upload_two(connection: Connection) -> int:
        project_id = insert_project(
            connection, name="Row_Test", normalized_name="row-test", created=NOW, owner_id=user_id, role_name="Owner"
        )
        insert_file(
            connection,
            release_id=None,
            release=release_values(project_id, user_id),
            file=file_values("row_test-1.0-py3-none-any.whl", user_id),
            created=NOW,
        )
        release_id = connection.scalar(select(Release.id).where(Release.project_id == project_id))
        insert_file(
            connection,
            release_id=release_id,
            release=None,
            file=file_values("row_test-1.0.tar.gz", user_id) | {"packagetype": "sdist", "uploaded_by_id": None},
            created=NOW,
        )
        return project_id

    project_id = await db.run_core(upload_two, write=True)

    def read(connection: Connection) -> dict[str, Any]:
        project = connection.execute(select(Project.__table__).where(Project.id == project_id)).one()._asdict()
        role = connection.execute(select(Role.user_id, Role.role_name).where(Role.project_id == project_id)).all()
        release = connection.execute(select(Release.__table__).where(Release.project_id == project_id)).one()._asdict()
        files = [
            row._asdict()
            for row in connection.execute(select(File.__table__).order_by(File.filename)).all()
        ]
        names = connection.execute(select(FilenameRegistry.filename, FilenameRegistry.created)).all()
        return {"project": project, "role": role, "release": release, "files": files, "names": sorted(names)}

    written = await db.run_core(read)
    project, release, (wheel, sdist) = written["project"], written["release"], written["files"]
    assert {key: project[key] for key in ("name", "normalized_name", "ultranormalized_name", "status")} == {
        "name": "Row_Test",
        "normalized_name": "row-test",
        "ultranormalized_name": confusable_fold("Row_Test"),
        "status": "active",
    }
    assert (project["total_size"], project["last_serial"], project["upload_limit"]) == (0, 0, None)
    assert written["role"] == [(user_id, "Owner")]
    assert release["summary"] == "Ünïcode summary" and release["classifiers"] == ["Framework :: Quart"]
    assert release["project_urls"] == {"Home": "https://example.invalid/"} and release["platforms"] == []
    assert (release["yanked"], release["yanked_reason"], release["created"]) == (False, None, NOW)
    assert sdist["release_id"] == wheel["release_id"] == release["id"]
    assert (wheel["packagetype"], wheel["requires_python"], wheel["uploaded_by_id"]) == ("bdist_wheel", ">=3.10", user_id)
    assert (sdist["packagetype"], sdist["uploaded_by_id"], sdist["yanked"], sdist["metadata_sha256"]) == (
        "sdist",
        None,
        False,
        None,
    )
    assert written["names"] == [("row_test-1.0-py3-none-any.whl", NOW), ("row_test-1.0.tar.gz", NOW)]


@pytest.mark.parametrize("new_release", [True, False], ids=["new-release", "existing-release"])
async def test_a_used_filename_raises_integrity_error_and_writes_nothing(
    cheeseshop_services: Any, new_release: bool
) -> None:
    db = cheeseshop_services.db
    user_id = await make_user(cheeseshop_services)
    wheel = file_values("dup-1.0-py3-none-any.whl", user_id)

    def first(connection: Connection) -> int:
        project_id = insert_project(
            connection, name="dup", normalized_name="dup", created=NOW, owner_id=user_id, role_name="Owner"
        )
        insert_file(connection, release_id=None, release=release_values(project_id, user_id), file=wheel, created=NOW)
        return project_id

    project_id = await db.run_core(first, write=True)
    release_id = await db.run_core(lambda connection: connection.scalar(select(Release.id)))

    def again(connection: Connection) -> None:
        if new_release:
            values = release_values(project_id, user_id) | {"version": "2.0", "canonical_version": "2"}
            insert_file(connection, release_id=None, release=values, file=wheel | {"path": "x/y"}, created=NOW)
        else:
            insert_file(connection, release_id=release_id, release=None, file=wheel | {"path": "x/y"}, created=NOW)

    with pytest.raises(IntegrityError):
        await db.run_core(again, write=True)

    counts = await db.run_core(
        lambda connection: [
            len(connection.execute(select(table)).all())
            for table in (Release.__table__, File.__table__, FilenameRegistry.__table__)
        ]
    )
    assert counts == [1, 1, 1]


async def test_a_taken_project_name_raises_integrity_error_and_writes_no_role(cheeseshop_services: Any) -> None:
    db = cheeseshop_services.db
    user_id = await make_user(cheeseshop_services)

    def create(connection: Connection) -> int:
        return insert_project(
            connection, name="Taken", normalized_name="taken", created=NOW, owner_id=user_id, role_name="Owner"
        )

    await db.run_core(create, write=True)
    with pytest.raises(IntegrityError):
        await db.run_core(create, write=True)
    roles = await db.run_core(lambda connection: connection.execute(select(Role.id)).all())
    assert len(roles) == 1
