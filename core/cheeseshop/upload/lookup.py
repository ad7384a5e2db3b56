"""What the index already holds that bears on an upload, each question asked in one statement.

An upload asks the database before its file streams (its token and the project's limits),
about the index (duplicates, the project, the uploader's role, similar names) and, under
lock, in the commit. The index questions go with the token's when the form names what they
need before its file (every client's form does); else they are asked once the file has
arrived. Each time every question goes into one ``SELECT``: on this path a round trip
costs far more than the indexed lookups inside it.
The statements are :class:`~cheeseshop.db.prepared.Prepared`: compiled once per dialect
and run on the driver's cursor, so a request only binds values. They are synchronous:
callers run them through :meth:`cheeseshop.db.Database.run_core`, on a Core connection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, exists, select
from cheeseshop.db import Executor
from cheeseshop.db.prepared import Prepared
from cheeseshop.accounts.service import TOKEN_COLUMNS
from cheeseshop.db.models import ApiToken, File, FilenameRegistry, Project, Release, Role, User

__all__ = [
    "IndexQuestion",
    "IndexState",
    "LockedProject",
    "ProjectLimits",
    "index_state",
    "lock_project",
    "project_limits",
    "token_and_project_limits",
]


@dataclasses.dataclass(frozen=True)
class ProjectLimits:
    """A project's size limits and use, and the uploader's role on it (None: no role)."""

    name: str
    role: str | None
    upload_limit: int | None
    total_size_limit: int | None
    total_size: int


@dataclasses.dataclass(frozen=True)
class IndexQuestion:
    """What an upload asks the index about (the uploader aside): its answer is an
    :class:`IndexState`, good for the upload whose own file, name and version these are."""

    filename: str
    blake2_256: str
    normalized_name: str
    ultranormalized_name: str
    canonical_version: str


@dataclasses.dataclass(frozen=True)
class IndexState:
    """Everything the duplicate, permission and name checks of one upload need."""

    #: blake2_256 of the file already stored under this filename, if any.
    same_name_digest: str | None
    #: The filename under which these exact bytes are already stored, if any.
    same_bytes_filename: str | None
    #: Whether the filename was ever accepted (deleted files included).
    filename_used: bool
    project_name: str | None
    project_status: str | None
    role: str | None
    #: An existing project whose name folds to the same confusable form, if any.
    similar_name: str | None
    #: Whether the release of this version already has an sdist.
    release_has_sdist: bool


@dataclasses.dataclass(frozen=True)
class LockedProject:
    """The project row, locked for the commit, and what the commit needs to know."""

    id: int
    name: str
    role: str | None
    total_size: int
    total_size_limit: int | None
    release_id: int | None
    #: The release's version as first uploaded (``1.0`` for a later upload of ``1.0.0``).
    release_version: str | None


# The user's role on the project of the enclosing query (correlated on ``projects``).
_ROLE = (
    select(Role.role_name)
    .where(Role.project_id == Project.id, Role.user_id == bindparam("user_id"))
    .scalar_subquery()
)

def _limit_columns(role: Any) -> tuple[Any, ...]:
    """What :func:`_limits` reads of a project, with the uploader's ``role`` subquery."""
    return (Project.name, role, Project.upload_limit, Project.total_size_limit, Project.total_size)


def _limits(row: Sequence[Any]) -> ProjectLimits | None:
    """The :class:`ProjectLimits` of :func:`_limit_columns` (None: no such project)."""
    return None if row[0] is None else ProjectLimits(row[0], row[1], row[2], row[3], row[4] or 0)


_PROJECT_LIMITS = Prepared(
    select(*_limit_columns(_ROLE)).where(Project.normalized_name == bindparam("normalized_name"))
)


def _index_columns(project_id: Any) -> tuple[Any, ...]:
    """The questions of :class:`IndexState` that are not about the project's own row, in
    its order: the same filename's digest, the same bytes' filename, the filename's use
    (after ``project_name``, ``project_status`` and ``role``, which each statement reads its
    own way) the similar name and the release's sdist, for the project ``project_id``."""
    return (
        select(File.blake2_256_digest).where(File.filename == bindparam("filename")).scalar_subquery(),
        select(File.filename)
        .where(File.blake2_256_digest == bindparam("blake2_256"))
        .limit(1)
        .scalar_subquery(),
        exists().where(FilenameRegistry.filename == bindparam("filename")),
        select(Project.name)
        .where(Project.ultranormalized_name == bindparam("ultranormalized_name"))
        .limit(1)
        .scalar_subquery(),
        exists(
            select(File.id)
            .join(Release, Release.id == File.release_id)
            .where(
                Release.project_id == project_id,
                Release.canonical_version == bindparam("canonical_version"),
                File.packagetype == "sdist",
            )
        ),
    )


def _state(row: Sequence[Any], project: Sequence[Any]) -> IndexState:
    """The :class:`IndexState` of :func:`_index_columns`' ``row`` and the project's
    ``(name, status, role)``."""
    same_name, same_bytes, filename_used, similar, has_sdist = row
    return IndexState(same_name, same_bytes, bool(filename_used), *project, similar, bool(has_sdist))


def _index_state_statement() -> Any:
    project = select(Project.id, Project.name, Project.status).where(
        Project.normalized_name == bindparam("normalized_name")
    ).subquery()
    role = (
        select(Role.role_name)
        .where(Role.project_id == project.c.id, Role.user_id == bindparam("user_id"))
        .scalar_subquery()
    )
    return select(
        select(project.c.name).scalar_subquery(),
        select(project.c.status).scalar_subquery(),
        role,
        *_index_columns(project.c.id),
    )


_INDEX_STATE = Prepared(_index_state_statement())


_LOCK_PROJECT = Prepared(
    select(Project.id, Project.name, _ROLE, Project.total_size, Project.total_size_limit)
    .where(Project.normalized_name == bindparam("normalized_name"))
    .with_for_update(of=Project)
)
_RELEASE = Prepared(
    select(Release.id, Release.version).where(
        Release.project_id == bindparam("project_id"),
        Release.canonical_version == bindparam("canonical_version"),
    )
)


# The token, its user and the project's limits, for an upload that names its project
# before its file (every client's does): one round trip where there were two. The role
# is the token's user's; whether the token is good is checked on the row afterwards.
_TOKEN_ROLE = (
    select(Role.role_name)
    .where(Role.project_id == Project.id, Role.user_id == ApiToken.user_id)
    .scalar_subquery()
)
def _token_statement(*columns: Any) -> Prepared:
    return Prepared(
        select(*TOKEN_COLUMNS, *_limit_columns(_TOKEN_ROLE), *columns)
        .join(User, User.id == ApiToken.user_id)
        .outerjoin(Project, Project.normalized_name == bindparam("normalized_name"))
        .where(ApiToken.id == bindparam("token_id"))
    )


_TOKEN_AND_PROJECT_LIMITS = _token_statement()
_LIMITS_END = len(TOKEN_COLUMNS) + len(_limit_columns(None))
# The same, and the upload's index questions, about the project of the outer join.
_TOKEN_LIMITS_AND_INDEX = _token_statement(Project.status, *_index_columns(Project.id))


def token_and_project_limits(
    session: Executor, token_id: str, normalized_name: str, question: IndexQuestion | None = None
) -> tuple[tuple[Any, ...] | None, ProjectLimits | None, IndexState | None]:
    """The token's row (:data:`~cheeseshop.accounts.service.TOKEN_COLUMNS`, for
    :func:`~cheeseshop.accounts.service.check_token`; None if there is none), the
    project's limits with the role of the token's user (None for no such project), and,
    given a ``question`` about ``normalized_name``, its answer for the token's user
    (:func:`index_state` in the same round trip; else None)."""
    params = {"token_id": token_id, "normalized_name": normalized_name}
    if question is None:
        row = _TOKEN_AND_PROJECT_LIMITS.first(session, params)
    else:
        assert question.normalized_name == normalized_name
        row = _TOKEN_LIMITS_AND_INDEX.first(session, {**vars(question), **params})
    if row is None:
        return None, None, None
    token, limits = row[: len(TOKEN_COLUMNS)], row[len(TOKEN_COLUMNS) : _LIMITS_END]
    if question is None:
        return token, _limits(limits), None
    (name, role), (status, *index) = limits[:2], row[_LIMITS_END:]
    return token, _limits(limits), _state(index, (name, status, role))


def project_limits(session: Executor, normalized_name: str, user_id: int) -> ProjectLimits | None:
    """The project's limits and the user's role, or None for a project that does not exist."""
    params = {"normalized_name": normalized_name, "user_id": user_id}
    row = _PROJECT_LIMITS.first(session, params)
    return None if row is None else _limits(row)


def index_state(session: Executor, question: IndexQuestion, user_id: int) -> IndexState:
    """Answer every pre-commit question about an upload by ``user_id`` in one round trip."""
    row = _INDEX_STATE.rows(session, {**vars(question), "user_id": user_id})[0]
    return _state(row[3:], row[:3])


def lock_project(
    session: Executor, normalized_name: str, canonical_version: str, user_id: int
) -> LockedProject | None:
    """Lock the project's row (PostgreSQL; SQLite's write transaction is the lock) and read it.

    The release is read by a second statement, after the lock is held: under PostgreSQL's
    READ COMMITTED, a statement that waited for a row lock still sees the rest of the
    database as it was when it began, so a release committed by the upload it waited
    for would be missed by a subquery of the locking statement itself.
    """
    params = {"normalized_name": normalized_name, "user_id": user_id}
    row = _LOCK_PROJECT.first(session, params)
    if row is None:
        return None
    release = _RELEASE.first(session, {"project_id": row[0], "canonical_version": canonical_version})
    release_id, release_version = (None, None) if release is None else release
    return LockedProject(row[0], row[1], row[2], row[3] or 0, row[4], release_id, release_version)
