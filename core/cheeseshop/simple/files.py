"""``/packages/<path>``: distribution files and their PEP 658 metadata.

A file is served only when its database row exists (a stored file whose upload never
committed stays invisible) and its project is not quarantined. When the storage has a
public URL the client is redirected; otherwise the bytes are streamed, with ``ETag`` (the
sha256), ``HEAD`` and single ``Range`` support (uv and poetry use ranges to read wheel
metadata).

The lookup (is the file visible, and what is its sha256) is kept in the page cache under
its project's key, so the purge that every change to a project sends (upload, yank,
status, quarantine) drops it with that project's pages, and a lookup read before a change
is never served after its purge. The key comes from the filename alone, which the upload
makes name the project (:func:`file_route`); that is what lets the ASGI fast path
(:mod:`cheeseshop.web.fastpath`) answer a repeat download without Quart or the database.
The view and the fast path build their answers from the same functions below.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO, NamedTuple

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from quart import Blueprint, Response, redirect, request
from sqlalchemy import bindparam, select
from werkzeug.http import parse_etags

from cheeseshop.cache import CachedPage
from cheeseshop.cache.keys import file_key, project_key
from cheeseshop.db import Database
from cheeseshop.db.models import File, Project, ProjectStatus, Release
from cheeseshop.errors import APIError
from cheeseshop.packaging.archives import METADATA_FILE_SUFFIX
from cheeseshop.services import current_services
from cheeseshop.storage import FileStorage, StorageUnavailable

__all__ = [
    "CHUNK",
    "FileRoute",
    "Opened",
    "blueprint",
    "content_type_of",
    "download_headers",
    "file_route",
    "not_modified",
    "open_stored",
    "open_whole",
    "parse_range",
    "stream",
]

blueprint = Blueprint("files", __name__)

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Files never change under their (content-addressed) path.
CACHE_CONTROL = "max-age=31536000, public, immutable"
FILE_TYPE = "application/octet-stream"
METADATA_TYPE = "text/plain; charset=utf-8"


# -- pure: routing, validators, headers ----------------------------------------------------


class FileRoute(NamedTuple):
    """Where the lookup of one download path is kept in the page cache."""

    #: The normalized project name the filename says the file belongs to.
    project: str
    key: str
    variant: str


def file_route(path: str) -> FileRoute | None:
    """The page-cache entry holding the lookup of ``/packages/<path>``. Pure.

    The key is that of the project the filename names: the upload refuses a file whose
    name does not parse to its project's normalized name, so no database is needed to
    find it. None for a name that is neither a wheel nor an sdist (such a lookup is not
    cached). The lookup checks the row's project against :attr:`FileRoute.project`
    before storing, so an entry only ever sits under the key its project's changes purge.
    """
    filename = path.rpartition("/")[2].removesuffix(METADATA_FILE_SUFFIX)
    project = _project_named(filename)
    if project is None:
        return None
    return FileRoute(project, project_key(project), f"file {path}")


# packaging parses the version and every tag too (~15 µs a wheel, on every fast-path
# answer). The result depends on the filename alone, so it is safe to remember.
@functools.lru_cache(maxsize=8192)
def _project_named(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[0]
        if filename.endswith(".tar.gz"):
            return parse_sdist_filename(filename)[0]
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return None


def content_type_of(path: str) -> str:
    """The Content-Type of a download: text for PEP 658 metadata, else bytes. Pure."""
    return METADATA_TYPE if path.endswith(METADATA_FILE_SUFFIX) else FILE_TYPE


def download_headers(etag: str, plugin_headers: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """The headers of every download answer (200, 206, 304, 416), bar type and length. Pure.

    ``plugin_headers`` are the plugins' for the file's key (``Hooks.response_headers`` of
    :func:`~cheeseshop.cache.keys.file_key`), which win on a clash. The view and the ASGI
    fast path both send exactly these.
    """
    return {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": CACHE_CONTROL,
        "Access-Control-Allow-Origin": "*",
        **dict(plugin_headers),
    }


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (a quoted strong tag): answer 304. Pure.

    The comparison is weak, as RFC 9110 13.1.2 wants (``W/"x"`` matches ``"x"``), and
    ``*`` matches: the file exists. The same rule as the cached pages'.
    """
    if not if_none_match:
        return False
    return parse_etags(if_none_match).contains_weak(etag.strip('"'))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end-inclusive) of a single byte range, or None for the whole file.

    Raises ValueError for an unsatisfiable range (answer 416). Multiple ranges are
    answered with the whole file, which RFC 9110 allows.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0 or size == 0:
            raise ValueError("empty suffix range, or an empty file")
        return max(size - length, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise ValueError("range not satisfiable")
    return start, min(end, size - 1)


# -- reading the bytes ---------------------------------------------------------------------


@dataclasses.dataclass
class Opened:
    """A stored file opened for a response: its size, and the first chunk already read.

    ``handle`` is None when ``first`` is all there is to send (or nothing was read).
    """

    size: int
    handle: BinaryIO | None
    first: bytes


def open_stored(
    storage: FileStorage,
    path: str,
    *,
    sha256: str,
    read: bool,
    start: int = 0,
    length: int | None = None,
) -> Opened:
    """Size the file and, when ``read``, open it at ``start`` and read its first chunk.

    For HEAD (size only) and ranges; a plain GET uses :func:`open_whole`. Blocking: call
    it through ``asyncio.to_thread``. ``length`` None reads to the end. A span that fits
    in the first chunk is closed at once, so it costs this one thread trip. ``sha256`` is
    the recorded digest, which the storage checks what it serves against (R7). Raises
    what the storage raises (``FileNotFoundError``, :class:`StorageUnavailable`).
    """
    size = storage.size(path)
    if not read:
        return Opened(size, None, b"")
    wanted = size - start if length is None else length
    handle = storage.open(path, sha256=sha256)
    try:
        handle.seek(start)
        first = handle.read(min(CHUNK, wanted))
    except BaseException:
        handle.close()
        raise
    if len(first) >= wanted:
        handle.close()
        return Opened(size, None, first)
    return Opened(size, handle, first)


def open_whole(storage: FileStorage, path: str, *, sha256: str) -> Opened:
    """Open the file to send all of it, and read its first chunk: one thread trip.

    Blocking: call it through ``asyncio.to_thread``. A file that ends within the first
    chunk is read whole and closed, and sized by what was read: no ``storage.size``,
    which costs a path resolution on disk and a request to an object store. A larger
    one is sized by the storage, and left open to stream the rest. ``sha256`` and the
    errors raised as for :func:`open_stored`.
    """
    handle = storage.open(path, sha256=sha256)
    try:
        first = handle.read(CHUNK)
        if len(first) < CHUNK:
            # A short read is the end for a buffered file; one more read makes sure for
            # any file-like object (a raw stream may return less before its end).
            more = handle.read(1)
            if not more:
                handle.close()
                return Opened(len(first), None, first)
            first += more
        size = storage.size(path)
    except BaseException:
        handle.close()
        raise
    if len(first) >= size:
        handle.close()
        return Opened(size, None, first)
    return Opened(size, handle, first)


async def stream(opened: Opened, length: int) -> AsyncIterator[bytes]:
    """The ``length`` bytes of ``opened``: its first chunk, then the rest read in threads.

    Closes the handle when done, or when the consumer stops early (close the generator).
    """
    try:
        if opened.first:
            yield opened.first
        remaining = length - len(opened.first)
        while remaining > 0 and opened.handle is not None:
            chunk = await asyncio.to_thread(opened.handle.read, min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        if opened.handle is not None:
            await asyncio.to_thread(opened.handle.close)


# -- the lookup ------------------------------------------------------------------------------


_FILE = (
    select(File.sha256_digest, File.metadata_sha256, Project.status, Project.normalized_name)
    .join(Release, File.release_id == Release.id)
    .join(Project, Release.project_id == Project.id)
    .where(File.path == bindparam("path"))
)


def _entry(sha256: str, path: str) -> CachedPage:
    """A lookup as a page-cache entry: the ETag and type of the answer, and no body.

    The bytes stay in the storage; what a download needs from the database is whether
    the file is visible and its sha256, which is its ETag.
    """
    return CachedPage(body=b"", content_type=content_type_of(path), etag=f'"{sha256}"', serial=0)


async def _read(db: Database, path: str) -> tuple[CachedPage, str]:
    """The entry of a visible file at ``path`` and its project's normalized name.

    Raises the 404 of a file that is not there, or not visible (quarantined project, or
    no separate metadata).
    """
    is_metadata = path.endswith(METADATA_FILE_SUFFIX)
    file_path = path.removesuffix(METADATA_FILE_SUFFIX)
    row = await db.run_read(lambda session: session.execute(_FILE, {"path": file_path}).first())
    if row is None or row.status == ProjectStatus.QUARANTINED.value:
        raise APIError(404, "No such file.")
    if is_metadata and row.metadata_sha256 is None:
        raise APIError(404, "This file has no separate metadata.")
    return _entry(row.metadata_sha256 if is_metadata else row.sha256_digest, path), row.normalized_name


async def _lookup(path: str) -> CachedPage:
    """The entry of a visible file or metadata file at ``path``: from the cache, else read.

    The storage path of both is ``path`` itself (rows are found by their exact path, and a
    metadata file is stored beside its distribution under the same name plus the suffix).
    """
    if "\x00" in path:  # PostgreSQL raises on a NUL in text instead of finding nothing
        raise APIError(404, "No such file.")
    services = current_services()
    db = services.db
    found = file_route(path)
    if found is None:
        return (await _read(db, path))[0]
    named = found.project

    async def build() -> CachedPage | None:
        # A 404 propagates (nothing is cached for it: a file shows up as soon as its upload
        # commits); a file of another project than its name says is served, never stored.
        entry, project = await _read(db, path)
        return entry if project == named else None

    entry = await services.cache.fetch(found.key, found.variant, build)
    return entry if entry is not None else (await _read(db, path))[0]


# -- the view --------------------------------------------------------------------------------


@blueprint.route("/packages/<path:path>", methods=["GET", "HEAD"])
async def download(path: str) -> Response:
    """Serve one stored file.

    A plain GET or HEAD of a file whose lookup is cached is answered by the ASGI fast path
    before it gets here, with the same headers and bytes; keep the two in step.
    """
    services = current_services()
    storage = services.storage
    entry = await _lookup(path)
    public = storage.url(path)
    if public:
        return redirect(public, 302)
    etag = entry.etag
    sha256 = etag.strip('"')
    headers = download_headers(etag, services.hooks.response_headers((file_key(path),), services.settings))
    if not_modified(request.headers.get("If-None-Match"), etag):
        response = Response(b"", status=304, headers=headers)
        # A 304 describes the 200 it stands for: no type or length of its own.
        del response.headers["Content-Type"]
        del response.headers["Content-Length"]
        return response
    range_header = request.headers.get("Range")
    if range_header and request.headers.get("If-Range", etag) != etag:
        range_header = None
    # A plain GET opens and reads in one trip (a small file whole); HEAD and Range need
    # the size first.
    whole = request.method != "HEAD" and not range_header
    try:
        if whole:
            opened = await asyncio.to_thread(open_whole, storage, path, sha256=sha256)
        else:
            opened = await asyncio.to_thread(open_stored, storage, path, sha256=sha256, read=False)
        size = opened.size
        try:
            span = parse_range(range_header, size)
        except ValueError:
            return Response(b"", status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        status, start, length = 200, 0, size
        if span is not None:
            start, end = span
            length = end - start + 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if request.method != "HEAD" and not whole:
            opened = await asyncio.to_thread(
                open_stored, storage, path, sha256=sha256, read=True, start=start, length=length
            )
    except FileNotFoundError:
        # The row exists but the bytes are gone: an operator problem, not the client's.
        raise APIError(503, "The file is temporarily unavailable; try again later.") from None
    except StorageUnavailable:
        # The storage is down, or holds no copy matching the recorded sha256 (R7): never
        # a 500, and never other bytes.
        log.warning("storage could not serve %s", path, exc_info=True)
        raise APIError(
            503,
            "File storage is temporarily unavailable; try again later.",
            headers={"Retry-After": "30"},
        ) from None
    headers["Content-Length"] = str(length)
    content_type = entry.content_type
    if request.method == "HEAD":
        response = Response(b"", status=status, headers=headers, content_type=content_type)
    else:
        body = stream(opened, length)
        response = Response(body, status=status, headers=headers, content_type=content_type)
    response.headers["Content-Length"] = str(length)
    return response
