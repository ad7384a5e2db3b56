"""``/packages/<path>``: distribution files and their PEP 658 metadata.

A file is served only when its database row exists (a stored file whose upload never
committed stays invisible). When the storage has a public URL the client is redirected;
otherwise the bytes are streamed, with ``ETag`` (the sha256), ``HEAD`` and single
``Range`` support (uv and poetry use ranges to read wheel metadata).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import BinaryIO

from quart import Blueprint, Response, redirect, request
from sqlalchemy import select

from cheeseshop.db.models import File, Project, ProjectStatus, Release
from cheeseshop.errors import APIError
from cheeseshop.packaging.archives import METADATA_FILE_SUFFIX
from cheeseshop.services import current_services
from cheeseshop.storage import FileStorage

__all__ = ["blueprint", "parse_range"]

blueprint = Blueprint("files", __name__)

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


async def _stream(storage: FileStorage, path: str, start: int, length: int) -> AsyncIterator[bytes]:
    handle: BinaryIO = await asyncio.to_thread(storage.open, path)
    try:
        await asyncio.to_thread(handle.seek, start)
        remaining = length
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def _lookup(path: str) -> tuple[str, str]:
    """(storage path, sha256) of a visible file or metadata file at ``path``."""
    if "\x00" in path:  # PostgreSQL raises on a NUL in text instead of finding nothing
        raise APIError(404, "No such file.")
    is_metadata = path.endswith(METADATA_FILE_SUFFIX)
    file_path = path[: -len(METADATA_FILE_SUFFIX)] if is_metadata else path
    async with current_services().db.read() as session:
        row = (
            await session.execute(
                select(File.path, File.sha256_digest, File.metadata_sha256, Project.status)
                .join(Release, File.release_id == Release.id)
                .join(Project, Release.project_id == Project.id)
                .where(File.path == file_path)
            )
        ).first()
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
    try:
        size = await asyncio.to_thread(storage.size, stored)
    except FileNotFoundError:
        # The row exists but the bytes are gone: an operator problem, not the client's.
        raise APIError(503, "The file is temporarily unavailable; try again later.") from None
    content_type = "text/plain; charset=utf-8" if path.endswith(METADATA_FILE_SUFFIX) else "application/octet-stream"
    try:
        span = parse_range(request.headers.get("Range"), size)
    except ValueError:
        return Response(b"", status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if span is not None and request.headers.get("If-Range", etag) != etag:
        span = None
    status = 200
    start, length = 0, size
    if span is not None:
        start, end = span
        length = end - start + 1
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        response = Response(b"", status=status, headers=headers, content_type=content_type)
        response.headers["Content-Length"] = str(length)
        return response
    response = Response(_stream(storage, stored, start, length), status=status, headers=headers, content_type=content_type)
    response.headers["Content-Length"] = str(length)
    return response
