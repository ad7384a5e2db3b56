"""Receive a multipart upload body, streaming the file part to disk while hashing it.

Nothing is held in memory but the form's small text fields. The file part is written to
a temporary file as it arrives, through md5, sha256 and blake2b-256 at once, and the
size limit is enforced per chunk: an oversized upload is refused as soon as it crosses
the limit, whatever Content-Length claimed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path

from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from cheeseshop.errors import APIError

__all__ = ["ReceivedFile", "UploadForm", "receive_upload"]

FILE_FIELD = "content"
MAX_FIELDS_BYTES = 16 * 1024 * 1024
MAX_PARTS = 1000


@dataclasses.dataclass
class ReceivedFile:
    """The uploaded file on disk, with its digests."""

    filename: str
    path: Path
    size: int
    md5: str
    sha256: str
    blake2_256: str


@dataclasses.dataclass
class UploadForm:
    """Text fields (every value of each, in order) and the file part, if any."""

    fields: dict[str, list[str]]
    file: ReceivedFile | None

    def cleanup(self) -> None:
        """Remove the temporary file."""
        if self.file is not None:
            self.file.path.unlink(missing_ok=True)


class _FileSink:
    def __init__(self, directory: Path, filename: str, limit: int) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
        self.handle = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.filename = filename
        self.limit = limit
        self.size = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.blake2 = hashlib.blake2b(digest_size=32)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise APIError(
                413,
                f"File too large. Limit for this upload is {self.limit // (1024 * 1024)} MiB.",
            )
        self.handle.write(data)
        self.md5.update(data)
        self.sha256.update(data)
        self.blake2.update(data)

    def finish(self) -> ReceivedFile:
        self.handle.close()
        return ReceivedFile(
            filename=self.filename,
            path=self.path,
            size=self.size,
            md5=self.md5.hexdigest(),
            sha256=self.sha256.hexdigest(),
            blake2_256=self.blake2.hexdigest(),
        )

    def abort(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary from a Content-Type header, or a 400 saying what is wrong."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype.lower() != "multipart/form-data":  # media types are case-insensitive
        raise APIError(400, "Uploads must be sent as multipart/form-data.")
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise APIError(400, "The multipart/form-data Content-Type has no valid boundary.")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise APIError(400, "The multipart boundary must be ASCII.") from None


async def receive_upload(
    body: AsyncIterable[bytes],
    content_type: str | None,
    *,
    directory: Path,
    max_file_size: int,
) -> UploadForm:
    """Parse a multipart body; the ``content`` part streams to a file in ``directory``."""
    boundary = boundary_of(content_type)
    decoder = MultipartDecoder(boundary, max_form_memory_size=None, max_parts=MAX_PARTS)
    # werkzeug (<= 3.1.9, pallets/werkzeug#3285) adds a stray b"\r" to the last part when a
    # chunk ends inside the closing delimiter ("\r\n--<boundary>-"). Holding back the
    # stream's last len("\r\n--<boundary>--\r\n") bytes until the body ends means the
    # decoder only ever sees the closing delimiter whole.
    hold = len(boundary) + 8
    pending = bytearray()
    fields: dict[str, list[str]] = {}
    field_bytes = 0
    received: ReceivedFile | None = None
    current_name: str | None = None
    buffer = bytearray()
    sink: _FileSink | None = None
    finished = False
    chunks = aiter(body)
    try:
        while not finished:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    decoder.receive_data(bytes(pending))
                    pending.clear()
                    decoder.receive_data(None)
                else:
                    pending += chunk
                    if len(pending) > hold:
                        decoder.receive_data(bytes(pending[:-hold]))
                        del pending[:-hold]
                continue
            if isinstance(event, Epilogue):
                finished = True
            elif isinstance(event, File):
                if event.name == FILE_FIELD:
                    if sink is not None or received is not None:
                        raise APIError(400, "Only one file (the 'content' field) may be uploaded.")
                    sink = _FileSink(directory, event.filename, max_file_size)
                    current_name = None
                else:
                    current_name = event.name
                    buffer.clear()
            elif isinstance(event, Field):
                # uv sends the file part without a Content-Type, which some parsers
                # then report as a plain field; the filename parameter is what counts.
                current_name = event.name
                buffer.clear()
            elif isinstance(event, Data):
                if sink is not None:
                    sink.write(event.data)
                    if not event.more_data:
                        received = sink.finish()
                        sink = None
                elif current_name is not None:
                    field_bytes += len(event.data)
                    if field_bytes > MAX_FIELDS_BYTES:
                        raise APIError(413, "The form fields are too large (16 MiB in all).")
                    buffer.extend(event.data)
                    if not event.more_data:
                        try:
                            value = buffer.decode("utf-8")
                        except UnicodeDecodeError:
                            raise APIError(
                                400, f"Field {current_name!r} is not valid UTF-8."
                            ) from None
                        fields.setdefault(current_name, []).append(value)
                        current_name = None
                        buffer.clear()
    except APIError:
        _abort(sink, received)
        raise
    except ValueError as error:
        # werkzeug raises ValueError for malformed multipart data and for max_parts.
        _abort(sink, received)
        raise APIError(400, f"Malformed multipart/form-data body: {error}") from None
    except BaseException:
        _abort(sink, received)
        raise
    if sink is not None:
        sink.abort()
        raise APIError(400, "The upload ended before the file was complete.")
    return UploadForm(fields=fields, file=received)


def _abort(sink: _FileSink | None, received: ReceivedFile | None) -> None:
    if sink is not None:
        sink.abort()
    if received is not None:
        received.path.unlink(missing_ok=True)
