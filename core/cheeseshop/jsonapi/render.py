"""Render PyPI's JSON API documents from plain view data. Pure: no database, no request.

The shape follows pypi.org (warehouse ``legacy/api/json.py`` and docs.pypi.org "JSON API"):
every key PyPI sends, with PyPI's choice between ``null`` and ``[]`` for empty values.
Keys are written in the order pypi.org sends them (its renderer sorts keys), so a response
reads like PyPI's; the versions under ``releases`` are in version order, oldest first.

Releases without files are listed under ``releases`` (as ``[]``) and may be the "latest"
release shown in ``info``, exactly as on PyPI, whose latest-release query does not look at
files; ``urls`` is then ``[]``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from packaging.version import Version

from cheeseshop.db.models import RoleName

__all__ = [
    "FileView",
    "ProjectView",
    "ReleaseView",
    "RoleView",
    "latest",
    "project_json",
    "release_json",
]

# PyPI no longer counts downloads; it keeps the keys with -1 so old clients do not break.
_NO_DOWNLOADS = -1


@dataclasses.dataclass(frozen=True)
class FileView:
    """One distribution file as the JSON API shows it."""

    filename: str
    url: str
    packagetype: str
    python_version: str
    requires_python: str | None
    size: int
    md5_digest: str
    sha256_digest: str
    blake2b_256_digest: str
    upload_time: datetime
    yanked: bool
    yanked_reason: str | None
    metadata_sha256: str | None


@dataclasses.dataclass(frozen=True)
class ReleaseView:
    """One release: its core metadata (from its first upload) and its files.

    Multiple-use fields are tuples (empty when absent); ``project_urls`` keeps the
    uploaded (label, URL) order.
    """

    version: str
    page_url: str
    summary: str | None = None
    description: str | None = None
    description_content_type: str | None = None
    author: str | None = None
    author_email: str | None = None
    maintainer: str | None = None
    maintainer_email: str | None = None
    license: str | None = None
    license_expression: str | None = None
    license_files: tuple[str, ...] = ()
    keywords: str | None = None
    classifiers: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    home_page: str | None = None
    download_url: str | None = None
    project_urls: tuple[tuple[str, str], ...] = ()
    requires_dist: tuple[str, ...] = ()
    requires_python: str | None = None
    provides_extra: tuple[str, ...] = ()
    dynamic: tuple[str, ...] = ()
    yanked: bool = False
    yanked_reason: str | None = None
    files: tuple[FileView, ...] = ()


@dataclasses.dataclass(frozen=True)
class RoleView:
    """A user's role on the project (``Owner`` or ``Maintainer``)."""

    role: str
    user: str


@dataclasses.dataclass(frozen=True)
class ProjectView:
    """The project-level facts every document carries."""

    name: str
    page_url: str
    last_serial: int
    roles: tuple[RoleView, ...] = ()


def latest(releases: Sequence[ReleaseView]) -> ReleaseView | None:
    """The release ``/pypi/<project>/json`` shows, or None when there is none.

    The newest non-yanked final release (dev releases count as pre-releases), else the
    newest non-yanked release, else, when every release is yanked, the newest of all.
    (PyPI, with everything yanked, still puts a final release before a newer
    pre-release; a project whose every release was pulled has no "stable" one to
    prefer, so the newest is shown, as ../shared/CONFORMANCE.md states the rule.)
    """

    def rank(release: ReleaseView) -> tuple[bool, bool, Version]:
        version = Version(release.version)
        return (not release.yanked, not release.yanked and not version.is_prerelease, version)

    return max(releases, key=rank, default=None)


def project_json(project: ProjectView, releases: Sequence[ReleaseView]) -> bytes:
    """The document for ``/pypi/<project>/json``: the latest release and every release.

    Raises ``ValueError`` when ``releases`` is empty: PyPI answers 404 then.
    """
    shown = latest(releases)
    if shown is None:
        raise ValueError(f"project {project.name!r} has no release to show")
    ordered = sorted(releases, key=lambda release: Version(release.version))
    return _dump(
        _document(
            project,
            shown,
            releases={release.version: _files(release) for release in ordered},
        )
    )


def release_json(project: ProjectView, release: ReleaseView) -> bytes:
    """The document for ``/pypi/<project>/<version>/json``: one release, no ``releases`` key."""
    return _dump(_document(project, release, releases=None))


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=False).encode("utf-8")


def _document(
    project: ProjectView, shown: ReleaseView, *, releases: dict[str, list[dict[str, Any]]] | None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "info": _info(project, shown),
        "last_serial": project.last_serial,
        "ownership": _ownership(project.roles),
    }
    if releases is not None:
        document["releases"] = releases
    document["urls"] = _files(shown)
    # No vulnerability database is consulted; PyPI sends [] for a release with none known.
    document["vulnerabilities"] = []
    return document


def _info(project: ProjectView, release: ReleaseView) -> dict[str, Any]:
    return {
        "author": release.author,
        "author_email": release.author_email,
        "bugtrack_url": None,
        "classifiers": list(release.classifiers),
        "description": release.description,
        "description_content_type": release.description_content_type,
        "docs_url": None,
        "download_url": release.download_url,
        "downloads": {
            "last_day": _NO_DOWNLOADS,
            "last_month": _NO_DOWNLOADS,
            "last_week": _NO_DOWNLOADS,
        },
        "dynamic": _list_or_null(release.dynamic),
        "home_page": release.home_page,
        "keywords": release.keywords,
        "license": release.license,
        "license_expression": release.license_expression,
        "license_files": _list_or_null(release.license_files),
        "maintainer": release.maintainer,
        "maintainer_email": release.maintainer_email,
        "name": project.name,
        "package_url": project.page_url,
        # PyPI stores a single Platform (the first one uploaded) and shows that.
        "platform": release.platforms[0] if release.platforms else None,
        "project_url": project.page_url,
        "project_urls": _project_urls(release),
        "provides_extra": _list_or_null(release.provides_extra),
        "release_url": release.page_url,
        "requires_dist": _list_or_null(release.requires_dist),
        "requires_python": release.requires_python,
        "summary": release.summary,
        "version": release.version,
        "yanked": release.yanked,
        "yanked_reason": release.yanked_reason or None,
    }


def _list_or_null(values: tuple[str, ...]) -> list[str] | None:
    return list(values) if values else None


def _project_urls(release: ReleaseView) -> dict[str, str] | None:
    """Home-page and Download-URL under PyPI's labels, then the Project-URL entries.

    A Project-URL that repeats the Home-page (or Download-URL) under a "Homepage"-like
    (or "Download-URL"-like) label is left out, as PyPI does, so it is not listed twice.
    """
    urls: dict[str, str] = {}
    if release.home_page:
        urls["Homepage"] = release.home_page
    if release.download_url:
        urls["Download"] = release.download_url
    for label, url in release.project_urls:
        folded = label.casefold().replace("-", "").replace("_", "")
        if folded == "homepage" and url == urls.get("Homepage"):
            continue
        if folded == "downloadurl" and url == urls.get("Download"):
            continue
        urls[label] = url
    return urls or None


def _ownership(roles: Sequence[RoleView]) -> dict[str, Any]:
    # PyPI lists owners before maintainers, each group by username.
    def order(role: RoleView) -> tuple[bool, str]:
        return (role.role != RoleName.OWNER.value, role.user)

    return {
        # Cheeseshop has no organizations.
        "organization": None,
        "roles": [{"role": r.role, "user": r.user} for r in sorted(roles, key=order)],
    }


def _files(release: ReleaseView) -> list[dict[str, Any]]:
    return [_file(f) for f in sorted(release.files, key=lambda f: f.filename)]


def _file(f: FileView) -> dict[str, Any]:
    return {
        "comment_text": "",
        # PEP 658/714, the same value as the Simple API's, so mirrors can pass it through.
        "core-metadata": {"sha256": f.metadata_sha256} if f.metadata_sha256 else False,
        "digests": {
            "blake2b_256": f.blake2b_256_digest,
            "md5": f.md5_digest,
            "sha256": f.sha256_digest,
        },
        "downloads": _NO_DOWNLOADS,
        "filename": f.filename,
        "has_sig": False,
        "md5_digest": f.md5_digest,
        "packagetype": f.packagetype,
        "python_version": f.python_version,
        "requires_python": f.requires_python or None,
        "size": f.size,
        "upload_time": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "url": f.url,
        "yanked": f.yanked,
        "yanked_reason": f.yanked_reason or None,
    }
