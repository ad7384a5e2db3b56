"""Simple API routes: ``/simple/`` and ``/simple/<project>/``, served from the page cache.

A page is rendered once per change: built from one database visit, kept in the page cache
under the key of what it shows (``all-projects`` for the root, ``project/<name>`` for a
project), and purged through the outbox when a change to it commits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools

from packaging.version import InvalidVersion, Version
from quart import Blueprint, Response, redirect, request, url_for
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from cheeseshop.cache import CachedPage, make_page
from cheeseshop.cache.keys import ALL_PROJECTS, project_key
from cheeseshop.db.models import File, JournalEntry, Project, ProjectStatus, Release
from cheeseshop.errors import APIError
from cheeseshop.packaging.names import is_valid_project_name, normalize
from cheeseshop.services import current_services
from cheeseshop.simple import negotiate, render
from cheeseshop.simple.render import FileView, ProjectStatusView
from cheeseshop.web.cached import cached_response, url_variant

__all__ = ["CACHE_CONTROL", "VARIANTS", "blueprint", "file_url", "files_prefix"]

blueprint = Blueprint("simple", __name__)

CACHE_CONTROL = "max-age=600, public"
#: The cache variant of each Simple API format.
VARIANTS = {negotiate.JSON: "json", negotiate.V1_HTML: "v1html", negotiate.HTML: "html"}


def files_prefix() -> str:
    """The URL every stored file's path is appended to: the files URL, else our /packages/."""
    settings = current_services().settings
    if settings.files_url:
        return f"{settings.files_url.rstrip('/')}/"
    base = settings.base_url.rstrip("/") + "/" if settings.base_url else request.host_url
    return f"{base}packages/"


def file_url(path: str) -> str:
    """Public URL of a stored file: the configured files URL, else this server's /packages/."""
    return files_prefix() + path


def _content_type() -> str:
    try:
        # A literal "+" in a typed URL (?format=…v1+json) arrives decoded as a space;
        # media types never contain spaces.
        override = (request.args.get("format") or "").replace(" ", "+") if request.query_string else ""
        return negotiate.choose(request.headers.get("Accept"), override or None)
    except negotiate.NotAcceptable:
        raise APIError(
            406,
            "None of the Simple API formats is acceptable; accept one of "
            f"{negotiate.JSON}, {negotiate.V1_HTML} or {negotiate.HTML}.",
            headers={"Vary": "Accept"},
        ) from None


def _media_type(content_type: str) -> str:
    return content_type if content_type == negotiate.JSON else f"{content_type}; charset=utf-8"


@blueprint.after_request
async def _vary_on_accept(response: Response) -> Response:
    """Every Simple API answer depends on ``Accept``: redirects, 404s and 406s as much as
    pages. Saying so on each keeps a shared cache from handing one client's answer to
    a client that asked for another format."""
    response.vary.add("Accept")
    return response


@blueprint.get("/simple/")
async def root() -> Response:
    """The list of every visible project."""
    content_type = _content_type()
    build = functools.partial(_build_root, content_type)
    return await cached_response(
        ALL_PROJECTS,
        VARIANTS[content_type],
        build,
        cache_control=CACHE_CONTROL,
        vary="Accept",
    )


# Plain SQL on the driver's own cursor: for hundreds of thousands of rows, SQLAlchemy's
# row objects would cost more than the query. (Quarantined projects are hidden, PEP 792.)
_ROOT_SQL = (
    "SELECT name, normalized_name, last_serial FROM projects "
    f"WHERE status != '{ProjectStatus.QUARANTINED.value}' ORDER BY normalized_name"
)
_LAST_SERIAL = select(func.max(JournalEntry.id))


def _load_root(session: Session) -> tuple[int, list[tuple[str, str, int]]]:
    serial = session.scalar(_LAST_SERIAL) or 0
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(_ROOT_SQL)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return serial, rows


async def _build_root(content_type: str) -> CachedPage:
    serial, projects = await current_services().db.run_read(_load_root)

    def rendered() -> bytes:
        if content_type == negotiate.JSON:
            return render.root_json(last_serial=serial, projects=projects).encode()
        return render.root_html(projects=projects).encode()

    # Hundreds of thousands of projects take a while to render: not on the event loop.
    body = await asyncio.to_thread(rendered)
    return make_page(body, _media_type(content_type), serial)


@blueprint.get("/simple/<project>/")
async def project_page(project: str) -> Response:
    """One project's files."""
    normalized = normalize(project)
    if normalized != project:
        return _moved(normalized)
    content_type = _content_type()
    if not is_valid_project_name(normalized):
        # No such project can exist; and PostgreSQL raises on a NUL in text.
        raise APIError(404, f"No project named {project!r}.")
    build = functools.partial(_build_project, normalized, content_type)
    return await cached_response(
        project_key(normalized),
        url_variant(VARIANTS[content_type]),
        build,
        cache_control=CACHE_CONTROL,
        not_found=f"No project named {project!r}.",
        vary="Accept",
    )


@dataclasses.dataclass(frozen=True)
class _ProjectData:
    name: str
    status: ProjectStatusView
    last_serial: int
    files: list[tuple[str, FileView]]  # (version, file)


_PROJECT = select(
    Project.id, Project.name, Project.status, Project.status_reason, Project.last_serial
).where(Project.normalized_name == bindparam("normalized_name"))

_FILES = (
    select(
        Release.version,
        Release.yanked,
        Release.yanked_reason,
        File.filename,
        File.path,
        File.sha256_digest,
        File.requires_python,
        File.size,
        File.upload_time,
        File.yanked,
        File.metadata_sha256,
    )
    .join(Release, Release.id == File.release_id)
    .where(Release.project_id == bindparam("project_id"))
)


def _load_project(session: Session, normalized: str, file_url_for: str) -> _ProjectData | None:
    row = session.execute(_PROJECT, {"normalized_name": normalized}).first()
    if row is None:
        return None
    project_id, name, status, reason, last_serial = row
    files: list[tuple[str, FileView]] = []
    # PEP 792: a quarantined project offers no files at all.
    if status != ProjectStatus.QUARANTINED.value:
        for r in session.execute(_FILES, {"project_id": project_id}):
            view = FileView(
                filename=r.filename,
                url=file_url_for + r.path,
                sha256=r.sha256_digest,
                requires_python=r.requires_python,
                size=r.size,
                upload_time=r.upload_time,
                yanked=bool(r[1] or r[9]),
                yanked_reason=r.yanked_reason,
                metadata_sha256=r.metadata_sha256,
            )
            files.append((r.version, view))
    return _ProjectData(name, ProjectStatusView(status, reason), last_serial, files)


def _version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:  # not from our uploads, but never fail a page over one
        return (0, version)


async def _build_project(normalized: str, content_type: str) -> CachedPage | None:
    # The prefix is worked out here, on a miss only: it reads the request's host URL.
    data = await current_services().db.run_read(
        functools.partial(_load_project, normalized=normalized, file_url_for=files_prefix())
    )
    if data is None:
        return None
    # As PyPI orders them: by version, then filename.
    ordered = sorted(data.files, key=lambda pair: (_version_key(pair[0]), pair[1].filename))
    files = [view for _, view in ordered]
    if content_type == negotiate.JSON:
        versions = sorted({version for version, _ in ordered}, key=_version_key)
        body = render.project_json(
            normalized, last_serial=data.last_serial, versions=versions, files=files, status=data.status
        )
    else:
        body = render.project_html(data.name, files=files, status=data.status)
    return make_page(body.encode(), _media_type(content_type), data.last_serial)


@blueprint.get("/simple/<project>")
async def project_without_slash(project: str) -> Response:
    """``/simple/<p>`` -> 301 to the normalized slash form."""
    return _moved(normalize(project))


def _moved(normalized: str) -> Response:
    """301 to the project's page, keeping the query: a ``?format=`` asked for survives."""
    location = url_for("simple.project_page", project=normalized)
    query = request.query_string.decode("latin-1")
    return redirect(f"{location}?{query}" if query else location, 301)

