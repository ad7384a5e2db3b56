"""Yank, unyank, delete and set a project's status: each one journaled, announced and purged.

Every change is one write transaction that updates the row, writes one journal entry (a
new serial) and records its events in the outbox: ``cheeseshop_project_changed`` and
``cheeseshop_purge``. After the commit, the events are handed to the dispatcher and the
page cache of this process is purged at once (the outbox purge reaches the rest).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

from packaging.utils import canonicalize_version
from packaging.version import InvalidVersion, Version
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cheeseshop.cache import purge_after_commit
from cheeseshop.cache.keys import change_keys, file_key
from cheeseshop.db.models import File, Project, ProjectStatus, Release
from cheeseshop.events import CachePurge, Event, ProjectChanged
from cheeseshop.journal import Change, record_changes
from cheeseshop.outbox import record
from cheeseshop.packaging.names import normalize
from cheeseshop.services import Services
from cheeseshop.storage import stored_paths

__all__ = ["ChangeRefused", "Changed", "delete_file", "delete_release", "set_status", "unyank", "yank"]

#: Longest reason kept (PyPI's limit for a yank reason is about this order).
MAX_REASON = 1000


class ChangeRefused(ValueError):
    """The change cannot be made; the message says why (unknown project, already yanked …)."""


@dataclasses.dataclass(frozen=True)
class Changed:
    """A committed change: its journal serial and the outbox ids of its events."""

    serial: int
    event_ids: list[int]


async def yank(services: Services, project: str, version: str, *, reason: str = "", by: str | None = None) -> Changed:
    """Yank a release (PEP 592): installers skip it unless it is pinned exactly."""
    work = functools.partial(_yank, services=services, project=project, version=version, reason=reason, by=by, yanked=True)
    return await _apply(services, work)


async def unyank(services: Services, project: str, version: str, *, by: str | None = None) -> Changed:
    """Undo a yank."""
    work = functools.partial(_yank, services=services, project=project, version=version, reason="", by=by, yanked=False)
    return await _apply(services, work)


async def delete_release(services: Services, project: str, version: str, *, by: str | None = None) -> Changed:
    """Delete a release and all its files, for good.

    As on PyPI, the filenames can never be uploaded again (the filename registry keeps
    them), and the project stays. The stored bytes are left to the orphan collector
    (:mod:`cheeseshop.storage.gc`): from the commit on, no page links them and
    ``/packages/`` answers 404 for them; a CDN, once the purge of their download keys
    (``file/<path>``) reaches it.
    """
    work = functools.partial(_delete_release, services=services, project=project, version=version, by=by)
    return await _apply(services, work)


async def delete_file(
    services: Services, project: str, filename: str, *, version: str | None = None, by: str | None = None
) -> Changed:
    """Delete one file of a project, for good (see :func:`delete_release`); with
    ``version``, only if the file belongs to that release.

    Its release stays, even when this was its last file: it then no longer appears on
    the Simple API, which lists versions with files.
    """
    work = functools.partial(
        _delete_file, services=services, project=project, filename=filename, version=version, by=by
    )
    return await _apply(services, work)


async def set_status(
    services: Services, project: str, status: str, *, reason: str = "", by: str | None = None
) -> Changed:
    """Set a project's PEP 792 status: active, archived, quarantined or deprecated."""
    try:
        wanted = ProjectStatus(status)
    except ValueError:
        choices = ", ".join(s.value for s in ProjectStatus)
        raise ChangeRefused(f"unknown status {status!r}; use one of {choices}") from None
    work = functools.partial(_set_status, services=services, project=project, status=wanted, reason=reason, by=by)
    return await _apply(services, work)


async def _apply(services: Services, work: functools.partial[tuple[Changed, tuple[str, ...]]]) -> Changed:
    changed, keys = await services.db.run_write(work)
    # This process's pages first: a CDN purging from the outbox must not refetch them.
    await purge_after_commit(services.cache, keys)
    await services.outbox.dispatch(changed.event_ids)
    return changed


def _reason(reason: str) -> str | None:
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON:
        raise ChangeRefused(f"the reason is too long ({len(reason)} characters; at most {MAX_REASON})")
    return reason or None


def _project(session: Session, name: str) -> Project:
    project = session.scalar(
        select(Project).where(Project.normalized_name == normalize(name)).with_for_update()
    )
    if project is None:
        raise ChangeRefused(f"no project named {name!r}")
    return project


def _release(session: Session, project: Project, version: str) -> Release:
    try:
        canonical = canonicalize_version(Version(version), strip_trailing_zero=True)
    except InvalidVersion:
        raise ChangeRefused(f"{version!r} is not a valid version") from None
    release = session.scalar(
        select(Release).where(Release.project_id == project.id, Release.canonical_version == canonical)
    )
    if release is None:
        raise ChangeRefused(f"project {project.name!r} has no release {version!r}")
    return release


def _announce(row: Project, action: str, by: str | None, **details: str | None) -> functools.partial[ProjectChanged]:
    """The change's event, but for its serial (known once the journal entry is written)."""
    return functools.partial(
        ProjectChanged,
        project=row.name,
        normalized_name=row.normalized_name,
        action=action,
        changed_by=by,
        **details,
    )


def _commit_change(
    session: Session,
    services: Services,
    project: Project,
    change: Change,
    event: functools.partial[ProjectChanged],
    *,
    added_size: int = 0,
    gone: Sequence[tuple[str, str | None]] = (),
) -> tuple[Changed, tuple[str, ...]]:
    """Journal ``change``, record its event and the purge; ``gone``: the (path, metadata
    sha256) of each deleted file, whose downloads are purged too (else a CDN would keep
    serving them)."""
    [serial] = record_changes(session, project.id, project.name, [change], added_size=added_size)
    downloads = [
        file_key(stored)
        for path, metadata_sha256 in gone
        for stored in stored_paths(path, has_metadata=metadata_sha256 is not None)
    ]
    keys = (*change_keys(project.normalized_name), *downloads)
    events: list[Event] = [event(serial=serial), CachePurge(keys=keys, serial=serial)]
    ids = record(session, services.events_to_record(events))
    return Changed(serial, ids), keys


def _yank(
    session: Session,
    *,
    services: Services,
    project: str,
    version: str,
    reason: str,
    by: str | None,
    yanked: bool,
) -> tuple[Changed, tuple[str, ...]]:
    row = _project(session, project)
    release = _release(session, row, version)
    if release.yanked == yanked:
        state = "already yanked" if yanked else "not yanked"
        raise ChangeRefused(f"release {release.version} of {row.name!r} is {state}")
    release.yanked = yanked
    release.yanked_reason = _reason(reason) if yanked else None
    session.flush()
    action = "yank" if yanked else "unyank"
    event = _announce(row, action, by, version=release.version, reason=release.yanked_reason)
    return _commit_change(session, services, row, Change(f"{action} release", release.version, by), event)


def _delete_release(
    session: Session, *, services: Services, project: str, version: str, by: str | None
) -> tuple[Changed, tuple[str, ...]]:
    row = _project(session, project)
    release = _release(session, row, version)
    files = session.execute(
        select(File.size, File.path, File.metadata_sha256).where(File.release_id == release.id)
    ).all()
    session.execute(delete(File).where(File.release_id == release.id))
    session.execute(delete(Release).where(Release.id == release.id))
    event = _announce(row, "delete", by, version=release.version)
    # PyPI's journal action for it, which mirrors read.
    change = Change("remove release", release.version, by)
    gone = [(path, metadata_sha256) for _, path, metadata_sha256 in files]
    removed = sum(size for size, _, _ in files)
    return _commit_change(session, services, row, change, event, added_size=-removed, gone=gone)


def _delete_file(
    session: Session,
    *,
    services: Services,
    project: str,
    filename: str,
    version: str | None,
    by: str | None,
) -> tuple[Changed, tuple[str, ...]]:
    row = _project(session, project)
    query = (
        select(File.id, File.size, File.path, File.metadata_sha256, Release.version)
        .join(Release, Release.id == File.release_id)
        .where(Release.project_id == row.id, File.filename == filename)
    )
    if version is not None:
        query = query.where(Release.id == _release(session, row, version).id)
    found = session.execute(query).first()
    if found is None:
        of = f"release {version!r} of " if version is not None else ""
        raise ChangeRefused(f"{of}project {row.name!r} has no file {filename!r}")
    file_id, size, path, metadata_sha256, release_version = found
    session.execute(delete(File).where(File.id == file_id))
    event = _announce(row, "delete", by, version=release_version, filename=filename)
    change = Change(f"remove file {filename}", release_version, by)
    return _commit_change(
        session, services, row, change, event, added_size=-size, gone=[(path, metadata_sha256)]
    )


def _set_status(
    session: Session,
    *,
    services: Services,
    project: str,
    status: ProjectStatus,
    reason: str,
    by: str | None,
) -> tuple[Changed, tuple[str, ...]]:
    row = _project(session, project)
    # An active project has no reason to show; one given is dropped.
    cleaned = _reason(reason) if status is not ProjectStatus.ACTIVE else None
    if row.status == status.value and row.status_reason == cleaned:
        raise ChangeRefused(f"project {row.name!r} is already {status.value}")
    row.status = status.value
    row.status_reason = cleaned
    session.flush()
    event = _announce(row, "status", by, status=status.value, reason=row.status_reason)
    return _commit_change(session, services, row, Change(f"set status {status.value}", None, by), event)
