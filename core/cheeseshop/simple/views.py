"""Simple API routes: ``/simple/`` and ``/simple/<project>/``."""

from __future__ import annotations

from quart import Blueprint, Response, redirect, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from cheeseshop.db.models import File, JournalEntry, Project, ProjectStatus, Release
from cheeseshop.errors import APIError
from cheeseshop.packaging.names import is_valid_project_name, normalize
from cheeseshop.services import current_services
from cheeseshop.simple import negotiate, render
from cheeseshop.simple.render import FileView, ProjectLink

__all__ = ["blueprint", "file_url"]

blueprint = Blueprint("simple", __name__)

CACHE_CONTROL = "max-age=600, public"


def file_url(path: str) -> str:
    """Public URL of a stored file: the configured files URL, else this server's /packages/."""
    settings = current_services().settings
    if settings.files_url:
        return f"{settings.files_url.rstrip('/')}/{path}"
    base = settings.base_url.rstrip("/") + "/" if settings.base_url else request.host_url
    return f"{base}packages/{path}"


def _content_type() -> str:
    try:
        # A literal "+" in a typed URL (?format=…v1+json) arrives decoded as a space;
        # media types never contain spaces.
        override = (request.args.get("format") or "").replace(" ", "+")
        return negotiate.choose(request.headers.get("Accept"), override or None)
    except negotiate.NotAcceptable:
        raise APIError(
            406,
            "None of the Simple API formats is acceptable; accept one of "
            f"{negotiate.JSON}, {negotiate.V1_HTML} or {negotiate.HTML}.",
            headers={"Vary": "Accept"},
        ) from None


async def _respond(body: str, content_type: str, serial: int) -> Response:
    response = Response(body, content_type=f"{content_type}; charset=utf-8" if "html" in content_type else content_type)
    response.headers["Vary"] = "Accept"
    response.headers["X-PyPI-Last-Serial"] = str(serial)
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "X-PyPI-Last-Serial"
    await response.add_etag()
    return await response.make_conditional(request)


@blueprint.get("/simple/")
async def root() -> Response:
    """The list of every visible project."""
    content_type = _content_type()
    async with current_services().db.read() as session:
        rows = (
            await session.execute(
                select(Project.name, Project.normalized_name, Project.last_serial)
                .where(Project.status != ProjectStatus.QUARANTINED.value)
                .order_by(Project.normalized_name)
            )
        ).all()
        serial = await session.scalar(select(func.max(JournalEntry.id))) or 0
    projects = [ProjectLink(name=r.name, normalized_name=r.normalized_name, last_serial=r.last_serial) for r in rows]
    if content_type == negotiate.JSON:
        body = render.root_json(last_serial=serial, projects=projects)
    else:
        body = render.root_html(projects=projects)
    return await _respond(body, content_type, serial)


@blueprint.get("/simple/<project>/")
async def project_page(project: str) -> Response:
    """One project's files."""
    normalized = normalize(project)
    if normalized != project:
        return redirect(url_for("simple.project_page", project=normalized), 301)
    content_type = _content_type()
    if not is_valid_project_name(normalized):
        # No such project can exist; and PostgreSQL raises on a NUL in text.
        raise APIError(404, f"No project named {project!r}.")
    async with current_services().db.read() as session:
        record = await session.scalar(
            select(Project)
            .where(Project.normalized_name == normalized)
            .options(selectinload(Project.releases).selectinload(Release.files))
        )
    if record is None:
        raise APIError(404, f"No project named {project!r}.")
    files = _files(record)
    versions = sorted({release.version for release in record.releases if release.files}, key=_version_key)
    if content_type == negotiate.JSON:
        body = render.project_json(normalized, last_serial=record.last_serial, versions=versions, files=files)
    else:
        body = render.project_html(record.name, files=files)
    return await _respond(body, content_type, record.last_serial)


def _version_key(version: str) -> object:
    from packaging.version import Version

    return Version(version)


def _files(project: Project) -> list[FileView]:
    if project.status == ProjectStatus.QUARANTINED.value:
        return []
    files: list[tuple[File, Release]] = [(f, r) for r in project.releases for f in r.files]
    files.sort(key=lambda pair: pair[0].filename)
    return [
        FileView(
            filename=f.filename,
            url=file_url(f.path),
            sha256=f.sha256_digest,
            requires_python=f.requires_python,
            size=f.size,
            upload_time=f.upload_time,
            yanked=r.yanked or f.yanked,
            yanked_reason=r.yanked_reason,
            metadata_sha256=f.metadata_sha256,
        )
        for f, r in files
    ]


@blueprint.get("/simple/<project>")
async def project_without_slash(project: str) -> Response:
    """``/simple/<p>`` -> 301 to the normalized slash form."""
    return redirect(url_for("simple.project_page", project=normalize(project)), 301)
