"""JSON API routes: ``/pypi/<project>/json`` and ``/pypi/<project>/<version>/json``.

Both also answer with a trailing slash, as pypi.org does.
"""

from __future__ import annotations

import dataclasses
import functools

from packaging.utils import canonicalize_version
from packaging.version import InvalidVersion, Version
from quart import Blueprint, Response, redirect, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from cheeseshop.cache import CachedPage, make_page
from cheeseshop.cache.keys import project_key
from cheeseshop.db.models import File, Project, ProjectStatus, Release, Role, User
from cheeseshop.errors import APIError
from cheeseshop.jsonapi import render
from cheeseshop.packaging.names import is_valid_project_name, normalize
from cheeseshop.services import current_services
from cheeseshop.simple.views import file_url
from cheeseshop.web.cached import page_response, url_variant

__all__ = ["JsonDocument", "VersionMoved", "blueprint", "project_json_bytes"]

blueprint = Blueprint("jsonapi", __name__)

CACHE_CONTROL = "max-age=900, public"
# pypi.org's CORS headers, so browser code can read these documents and the serial header.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": (
        "Content-Type, If-Match, If-Modified-Since, If-None-Match, If-Unmodified-Since"
    ),
    "Access-Control-Allow-Methods": "GET",
    "Access-Control-Max-Age": "86400",
    "Access-Control-Expose-Headers": "X-PyPI-Last-Serial",
}


@dataclasses.dataclass(frozen=True)
class JsonDocument:
    """A rendered document and the project's ``last_serial`` (sent as X-PyPI-Last-Serial)."""

    body: bytes
    last_serial: int


@dataclasses.dataclass(frozen=True)
class VersionMoved:
    """The requested version exists, stored under another spelling (``1.0`` for ``1.0.0``)."""

    version: str


@dataclasses.dataclass(frozen=True)
class _Links:
    """URL prefixes, worked out in the request before the database work starts."""

    files: str
    site: str


@blueprint.get("/pypi/<project>/json", endpoint="project")
@blueprint.get("/pypi/<project>/json/", endpoint="project_slash")
async def project_document(project: str) -> Response:
    """The project's latest release, and every release with its files."""
    return await _serve(project, None)


@blueprint.get("/pypi/<project>/<version>/json", endpoint="release")
@blueprint.get("/pypi/<project>/<version>/json/", endpoint="release_slash")
async def release_document(project: str, version: str) -> Response:
    """One release and its files."""
    return await _serve(project, version)


async def project_json_bytes(normalized: str, version: str | None) -> JsonDocument | VersionMoved:
    """Read and render the document for a project (``version=None``) or one of its releases.

    ``normalized`` must be a valid, normalized project name and ``version`` a valid PEP 440
    version: the views check both before calling. Returns :class:`VersionMoved` when the
    release is stored under another spelling of ``version``. Raises ``APIError(404)`` for an
    unknown or quarantined project, a project without releases, or an unknown version.
    """
    # file_url(path) is a fixed prefix followed by the path; take the prefix once.
    links = _Links(files=file_url(""), site=_site_url())
    read = functools.partial(_read, normalized=normalized, version=version, links=links)
    return await current_services().db.run_read(read)


async def _serve(project: str, version: str | None) -> Response:
    if not is_valid_project_name(project):
        # No such project can exist; and PostgreSQL raises on a NUL in text.
        raise APIError(404, f"No project named {project!r}.", headers=CORS_HEADERS)
    normalized = normalize(project)
    if normalized != project:
        return _moved(project=normalized, version=version)
    if version is not None and not _is_version(version):
        raise APIError(404, f"No release {version!r} of project {project!r}.", headers=CORS_HEADERS)
    moved: list[str] = []

    async def build() -> CachedPage | None:
        result = await project_json_bytes(normalized, version)
        if isinstance(result, VersionMoved):
            moved.append(result.version)
            return None  # a redirect, not a page: nothing to cache
        return make_page(result.body, "application/json", result.last_serial)

    # Every document of a project is purged with its key, whatever the version.
    variant = url_variant("pypi-json" if version is None else f"pypi-json {version}")
    page = await current_services().cache.fetch(project_key(normalized), variant, build)
    if page is None:
        return _moved(project=normalized, version=moved[0])
    return page_response(page, project_key(normalized), cache_control=CACHE_CONTROL, headers=CORS_HEADERS)


def _is_version(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def _site_url() -> str:
    """This index's public root URL, ending in ``/``."""
    settings = current_services().settings
    return settings.base_url.rstrip("/") + "/" if settings.base_url else request.host_url


def _moved(*, project: str, version: str | None) -> Response:
    """301 to the same route (slash or not) with the given name and version."""
    values = {"project": project} if version is None else {"project": project, "version": version}
    response = redirect(url_for(request.endpoint or "jsonapi.project", **values), 301)
    response.headers.update(CORS_HEADERS)
    return response


# -- database work (synchronous, one read transaction; see Database.run_read) -------------


def _read(
    session: Session, *, normalized: str, version: str | None, links: _Links
) -> JsonDocument | VersionMoved:
    project = session.scalar(select(Project).where(Project.normalized_name == normalized))
    if project is None:
        raise APIError(404, f"No project named {normalized!r}.", headers=CORS_HEADERS)
    if project.status == ProjectStatus.QUARANTINED.value:
        raise APIError(
            404,
            f"Project {normalized!r} is quarantined (PEP 792) and hidden from the JSON API.",
            headers=CORS_HEADERS,
        )
    view = render.ProjectView(
        name=project.name,
        page_url=f"{links.site}project/{project.name}/",
        last_serial=project.last_serial,
        roles=_roles(session, project.id),
    )
    with_files = selectinload(Release.files)
    if version is None:
        releases = session.scalars(
            select(Release).where(Release.project_id == project.id).options(with_files)
        ).all()
        if not releases:
            raise APIError(404, f"Project {normalized!r} has no releases.", headers=CORS_HEADERS)
        body = render.project_json(view, [_release_view(r, view, links) for r in releases])
        return JsonDocument(body=body, last_serial=project.last_serial)
    release = session.scalar(
        select(Release)
        .where(
            Release.project_id == project.id,
            Release.canonical_version == canonicalize_version(version, strip_trailing_zero=True),
        )
        .options(with_files)
    )
    if release is None:
        raise APIError(
            404, f"No release {version!r} of project {normalized!r}.", headers=CORS_HEADERS
        )
    if release.version != version:
        return VersionMoved(release.version)
    body = render.release_json(view, _release_view(release, view, links))
    return JsonDocument(body=body, last_serial=project.last_serial)


def _roles(session: Session, project_id: int) -> tuple[render.RoleView, ...]:
    rows = session.execute(
        select(Role.role_name, User.username)
        .join(User, User.id == Role.user_id)
        .where(Role.project_id == project_id)
    ).all()
    return tuple(render.RoleView(role=row.role_name, user=row.username) for row in rows)


def _release_view(
    release: Release, project: render.ProjectView, links: _Links
) -> render.ReleaseView:
    return render.ReleaseView(
        version=release.version,
        page_url=f"{project.page_url}{release.version}/",
        summary=release.summary,
        description=release.description,
        description_content_type=release.description_content_type,
        author=release.author,
        author_email=release.author_email,
        maintainer=release.maintainer,
        maintainer_email=release.maintainer_email,
        license=release.license,
        license_expression=release.license_expression,
        license_files=tuple(release.license_files),
        keywords=release.keywords,
        classifiers=tuple(release.classifiers),
        platforms=tuple(release.platforms),
        home_page=release.home_page,
        download_url=release.download_url,
        project_urls=tuple(release.project_urls.items()),
        requires_dist=tuple(release.requires_dist),
        requires_python=release.requires_python,
        provides_extra=tuple(release.provides_extra),
        dynamic=tuple(release.dynamic),
        yanked=release.yanked,
        yanked_reason=release.yanked_reason,
        files=tuple(_file_view(f, release, links) for f in release.files),
    )


def _file_view(f: File, release: Release, links: _Links) -> render.FileView:
    return render.FileView(
        filename=f.filename,
        url=links.files + f.path,
        packagetype=f.packagetype,
        python_version=f.python_version,
        requires_python=f.requires_python,
        size=f.size,
        md5_digest=f.md5_digest,
        sha256_digest=f.sha256_digest,
        blake2b_256_digest=f.blake2_256_digest,
        upload_time=f.upload_time,
        # As in the Simple API: a file is yanked with its release, or on its own.
        yanked=release.yanked or f.yanked,
        yanked_reason=release.yanked_reason,
        metadata_sha256=f.metadata_sha256,
    )
