"""``/packages/<path>``: distribution files and their PEP 658 metadata.

A file is served only when its database row exists (a stored file whose upload never
committed stays invisible). When the storage has a public URL the client is redirected;
otherwise the bytes are streamed, with ``ETag`` (the sha256), ``HEAD`` and single
``Range`` support (uv and poetry use ranges to read wheel metadata).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from typing import BinaryIO

from quart import Blueprint, Response, redirect, request
from sqlalchemy import bindparam, select

from cheeseshop.db.models import File, Project, ProjectStatus, Release
from cheeseshop.errors import APIError
from cheeseshop.packaging.archives import METADATA_FILE_SUFFIX
from cheeseshop.services import current_services
from cheeseshop.storage import FileStorage, StorageUnavailable

__all__ = ["blueprint", "parse_range"]

blueprint = Blueprint("files", __name__)

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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


@dataclasses.dataclass
class _Opened:
    """A stored file opened for a response: its size, and the first chunk already read."""

    size: int
    handle: BinaryIO | None
    first: bytes


def _open(
    storage: FileStorage,
    path: str,
    *,
    sha256: str,
    read: bool,
    start: int = 0,
    length: int | None = None,
) -> _Opened:
    """Size the file and, when ``read``, open it and read its first chunk: one thread trip.

    ``length`` None reads to the end. A file that fits in the first chunk is closed at
    once, so a small download costs this one trip. ``sha256`` is the recorded digest,
    which the storage checks what it serves against (R7).
    """
    size = storage.size(path)
    if not read:
        return _Opened(size, None, b"")
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
        return _Opened(size, None, first)
    return _Opened(size, handle, first)


async def _stream(opened: _Opened, length: int) -> AsyncIterator[bytes]:
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


_FILE = (
    select(File.path, File.sha256_digest, File.metadata_sha256, Project.status)
    .join(Release, File.release_id == Release.id)
    .join(Project, Release.project_id == Project.id)
    .where(File.path == bindparam("path"))
)


async def _lookup(path: str) -> tuple[str, str]:
    """(storage path, sha256) of a visible file or metadata file at ``path``."""
    if "\x00" in path:  # PostgreSQL raises on a NUL in text instead of finding nothing
        raise APIError(404, "No such file.")
    is_metadata = path.endswith(METADATA_FILE_SUFFIX)
    file_path = path[: -len(METADATA_FILE_SUFFIX)] if is_metadata else path
    row = await current_services().db.run_read(
        lambda session: session.execute(_FILE, {"path": file_path}).first()
    )
    if row is None or row.status == ProjectStatus.QUARANTINED.value:
        raise APIError(404, "No such file.")
    if is_metadata:
        if row.metadata_sha256 is None:
            raise APIError(404, "This file has no separate metadata.")
        return path, row.metadata_sha256
    return row.path, row.sha256_digest


@blueprint.route("/packages/<path:path>", methods=["GET", "HEAD"])
async def download(path: str) -> Response:
    """Serve one stored file."""
    storage = current_services().storage
    stored, sha256 = await _lookup(path)
    public = storage.url(stored)
    if public:
        return redirect(public, 302)
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000, public, immutable",
        "Access-Control-Allow-Origin": "*",
    }
    if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        return Response(b"", status=304, headers=headers)
    content_type = "text/plain; charset=utf-8" if path.endswith(METADATA_FILE_SUFFIX) else "application/octet-stream"
    range_header = request.headers.get("Range")
    if range_header and request.headers.get("If-Range", etag) != etag:
        range_header = None
    # A plain GET opens, sizes and reads in one trip; HEAD and Range need the size first.
    whole = request.method != "HEAD" and not range_header
    try:
        opened = await asyncio.to_thread(_open, storage, stored, sha256=sha256, read=whole)
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
                _open, storage, stored, sha256=sha256, read=True, start=start, length=length
            )
    except FileNotFoundError:
        # The row exists but the bytes are gone: an operator problem, not the client's.
        raise APIError(503, "The file is temporarily unavailable; try again later.") from None
    except StorageUnavailable:
        # The storage is down, or holds no copy matching the recorded sha256 (R7): never
        # a 500, and never other bytes.
        log.warning("storage could not serve %s", stored, exc_info=True)
        raise APIError(
            503,
            "File storage is temporarily unavailable; try again later.",
            headers={"Retry-After": "30"},
        ) from None
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        response = Response(b"", status=status, headers=headers, content_type=content_type)
    else:
        response = Response(_stream(opened, length), status=status, headers=headers, content_type=content_type)
    response.headers["Content-Length"] = str(length)
    return response
