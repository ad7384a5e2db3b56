"""The rows an upload adds: a new project with its owner, a new release, the file and its name.

On PostgreSQL every statement is a round trip, and the upload's commit holds its locks
while they run; rows that depend on each other's ids are therefore written together, by
one statement with data-modifying ``WITH`` clauses: the project with its owner's role,
and the release (when new) with the file and the filename's registry entry. On SQLite a
statement costs no round trip, and ``WITH`` cannot insert: one statement per row there.
Either way, a unique violation raises SQLAlchemy's ``IntegrityError`` and the caller's
transaction writes nothing, which the upload's race handling relies on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.sql.expression import CTE

from cheeseshop.db import Executor, dialect_name
from cheeseshop.db.models import File, FilenameRegistry, Project, Release, Role
from cheeseshop.db.prepared import Prepared, with_defaults

__all__ = ["insert_file", "insert_project"]

_projects: Table = Project.__table__  # type: ignore[assignment]
_roles: Table = Role.__table__  # type: ignore[assignment]
_releases: Table = Release.__table__  # type: ignore[assignment]
_files: Table = File.__table__  # type: ignore[assignment]
_filenames: Table = FilenameRegistry.__table__  # type: ignore[assignment]


def _written(table: Table) -> tuple[str, ...]:
    """Every column of ``table`` but its generated id: what the statements below write."""
    generated = table.autoincrement_column
    return tuple(column.name for column in table.columns if column is not generated)


def _bound(table: Table, prefix: str, columns: tuple[str, ...]) -> dict[str, Any]:
    """``column = :<prefix><column>`` for each of ``columns``, typed as the column."""
    return {name: bindparam(prefix + name, type_=table.c[name].type) for name in columns}


def _insert_selecting(
    table: Table, prefix: str, columns: tuple[str, ...], key: str, source: CTE
) -> Any:
    """``INSERT INTO table (...) SELECT ...``: ``key`` taken from ``source``'s id, the other
    columns from parameters."""
    values = _bound(table, prefix, tuple(name for name in columns if name != key))
    values[key] = source.c.id
    selected = select(*(value.label(name) for name, value in values.items()))
    return insert(table).from_select(list(values), selected)


# -- PostgreSQL: one statement per group --------------------------------------------------
# Each binds every column of its rows (SQLAlchemy applies no defaults inside WITH, and
# would give two tables' same-named columns one parameter): with_defaults fills them in.

_NEW_PROJECT = insert(_projects).values(_bound(_projects, "project_", _written(_projects)))
_PROJECT_WITH_OWNER = Prepared(
    _insert_selecting(
        _roles, "role_", _written(_roles), "project_id", _NEW_PROJECT.returning(_projects.c.id).cte("project")
    ).returning(_roles.c.project_id)
)


def _file_with_name(release: CTE | None) -> Any:
    """The file and its name's registry entry; with ``release``, the file's release too."""
    file_columns = _written(_files)
    if release is None:
        file = insert(_files).values(_bound(_files, "file_", file_columns))
    else:
        file = _insert_selecting(_files, "file_", file_columns, "release_id", release)
    filename = insert(_filenames).values(_bound(_filenames, "filename_", _written(_filenames)))
    return filename.add_cte(file.cte("file"))


_NEW_RELEASE = insert(_releases).values(_bound(_releases, "release_", _written(_releases)))
_FILE_WITH_NAME = Prepared(_file_with_name(None))
_RELEASE_WITH_FILE = Prepared(_file_with_name(_NEW_RELEASE.returning(_releases.c.id).cte("release")))

# -- SQLite: one statement per row ----------------------------------------------------------

_INSERT_PROJECT = Prepared(insert(_projects).returning(_projects.c.id))
_INSERT_ROLE = Prepared(insert(_roles))
_INSERT_RELEASE = Prepared(insert(_releases).returning(_releases.c.id))
_INSERT_FILE = Prepared(insert(_files))
_INSERT_FILENAME = Prepared(insert(_filenames))


def _prefixed(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {prefix + name: value for name, value in values.items()}


def insert_project(
    session: Executor,
    *,
    name: str,
    normalized_name: str,
    created: datetime,
    owner_id: int,
    role_name: str,
) -> int:
    """Add a project, with ``owner_id`` given ``role_name`` on it; the project's id."""
    project = {"name": name, "normalized_name": normalized_name, "created": created}
    if dialect_name(session) == "postgresql":
        project = with_defaults(_projects, project)
        role = {"user_id": owner_id, "role_name": role_name}
        params = _prefixed("project_", project) | _prefixed("role_", role)
        project_id: int = _PROJECT_WITH_OWNER.scalar(session, params)
        return project_id
    project_id = _INSERT_PROJECT.scalar(session, project)
    role = {"user_id": owner_id, "project_id": project_id, "role_name": role_name}
    _INSERT_ROLE.rows(session, role)
    return project_id


def insert_file(
    session: Executor,
    *,
    release_id: int | None,
    release: Mapping[str, Any] | None,
    file: Mapping[str, Any],
    created: datetime,
) -> None:
    """Add ``file`` (its columns but ``release_id``) to the release ``release_id``, or, when
    that is None, to a new release with the columns ``release`` (all but its id), and
    register its filename for good."""
    filename = {"filename": file["filename"], "created": created}
    if dialect_name(session) == "postgresql":
        params = _prefixed("filename_", filename)
        if release_id is None:
            assert release is not None
            params |= _prefixed("release_", with_defaults(_releases, release))
            _RELEASE_WITH_FILE.rows(session, params | _prefixed("file_", with_defaults(_files, file)))
        else:
            file = with_defaults(_files, {**file, "release_id": release_id})
            _FILE_WITH_NAME.rows(session, params | _prefixed("file_", file))
        return
    if release_id is None:
        assert release is not None
        release_id = _INSERT_RELEASE.scalar(session, release)
    _INSERT_FILE.rows(session, {**file, "release_id": release_id})
    _INSERT_FILENAME.rows(session, filename)
