"""Receive a multipart upload body, streaming the file part to disk while hashing it.

Nothing is held in memory but the form's small text fields. The file part is written to
a temporary file as it arrives, through md5, sha256 and blake2b-256 at once, and the
size limits are enforced per chunk: an oversized upload is refused as soon as it crosses
a limit, whatever Content-Length claimed (or without one, for a chunked body).

Which limits apply is asked for when the file part starts, with the fields that came
before it: twine and uv send the metadata (``name`` included) first, so the caller can
apply the project's own limits. Everything that is not file data (fields, part headers,
preamble, epilogue) shares one budget, :data:`MAX_FORM_BYTES`, so no body is larger than
the file limit plus that, and none is held in memory beyond it. The whole body must
arrive within ``timeout`` seconds (408 otherwise). On every failure the temporary file
is removed before the error propagates, cancellation included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from cheeseshop.errors import APIError

__all__ = [
    "MAX_FORM_BYTES",
    "FileLimit",
    "LimitFor",
    "ReceivedFile",
    "UploadForm",
    "mib",
    "receive_upload",
]

FILE_FIELD = "content"
MAX_FIELDS_BYTES = 16 * 1024 * 1024
MAX_PARTS = 1000
#: Part headers and boundaries of up to MAX_PARTS parts (twine's run to ~150 bytes each).
MAX_FRAMING_BYTES = 512 * 1024
#: Everything in a body that is not file data: no honest body exceeds the file limit by more.
MAX_FORM_BYTES = MAX_FIELDS_BYTES + MAX_FRAMING_BYTES


def mib(size: int) -> str:
    """``size`` bytes in MiB for a message: "100 MiB", or "0.000954 MiB (1000 bytes)"."""
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    return f"{size / (1024 * 1024):.3g} MiB ({size} bytes)"


@dataclasses.dataclass(frozen=True)
class FileLimit:
    """At most ``max_bytes`` of file data; one byte more is refused with ``status``, ``message``.

    ``max_bytes`` may be negative (a project already over its total): then even an empty
    file is refused.
    """

    max_bytes: int
    status: int
    message: str


#: Called once, when the file part starts, with the fields received before it (every
#: value of each, in order); returns the limits for the file. Of several exceeded at
#: once, the smallest (the first given, among equals) refuses the upload.
LimitFor = Callable[[Mapping[str, Sequence[str]]], Awaitable[Sequence[FileLimit]]]


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
    def __init__(self, directory: Path, filename: str, limits: Sequence[FileLimit]) -> None:
        self.limits = tuple(limits)
        self.size = 0
        self._check()  # before creating anything: a project over its total refuses at once
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
        self.handle = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.filename = filename
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.blake2 = hashlib.blake2b(digest_size=32)

    def _check(self) -> None:
        crossed = [limit for limit in self.limits if self.size > limit.max_bytes]
        if crossed:
            # The smallest is the one a byte-by-byte body would have crossed first, so
            # the answer does not depend on how the body happened to be chunked.
            limit = min(crossed, key=lambda limit: limit.max_bytes)
            raise APIError(limit.status, limit.message)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._check()
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
        try:
            self.handle.close()  # flushing may fail again (ENOSPC); the file goes regardless
        finally:
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
    limit_for: LimitFor | None = None,
    timeout: float | None = None,
) -> UploadForm:
    """Parse a multipart body; the ``content`` part streams to a file in ``directory``.

    ``max_file_size`` limits the file unless ``limit_for`` is given: then ``limit_for`` is
    awaited when the file part starts, with the fields received so far, and the limits it
    returns apply instead (an empty result means ``max_file_size``). ``timeout`` is how
    many seconds the whole body may take to arrive (``None``: no limit).

    Raises APIError: 400 for a malformed or incomplete body, 408 when the body is late,
    413 (or a limit's own status) when it is too large. The temporary file is removed
    before any error, cancellation included, propagates; on success the caller owns it
    (:meth:`UploadForm.cleanup`).
    """
    boundary = boundary_of(content_type)
    default_limits = (
        FileLimit(
            max_file_size, 413, f"File too large. Limit for this upload is {mib(max_file_size)}."
        ),
    )
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    decoder = MultipartDecoder(boundary, max_form_memory_size=None, max_parts=MAX_PARTS)
    # werkzeug (<= 3.1.9, pallets/werkzeug#3285) adds a stray b"\r" to the last part when a
    # chunk ends inside the closing delimiter ("\r\n--<boundary>-"). Holding back the
    # stream's last len("\r\n--<boundary>--\r\n") bytes until the body ends means the
    # decoder only ever sees the closing delimiter whole.
    hold = len(boundary) + 8
    pending = bytearray()
    fields: dict[str, list[str]] = {}
    field_bytes = 0
    # Everything read that was not file data: fields, part headers, preamble, epilogue.
    # werkzeug buffers a preamble, part headers and an epilogue whole, so this is also
    # what bounds the memory a body without (valid) boundaries can take.
    body_bytes = 0
    file_bytes = 0
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
                if body_bytes - file_bytes > MAX_FORM_BYTES:
                    raise APIError(
                        413,
                        "Upload too large: the form apart from the file (fields, part headers, "
                        f"anything outside the parts) is over {mib(MAX_FORM_BYTES)}.",
                    )
                chunk = await _next_chunk(chunks, deadline, timeout)
                if chunk is None:
                    decoder.receive_data(bytes(pending))
                    pending.clear()
                    decoder.receive_data(None)
                else:
                    body_bytes += len(chunk)
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
                    limits: Sequence[FileLimit] = default_limits
                    if limit_for is not None:
                        so_far = {name: tuple(values) for name, values in fields.items()}
                        limits = await limit_for(so_far) or default_limits
                    sink = _FileSink(directory, event.filename, limits)
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
                    file_bytes += len(event.data)
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
    except RequestEntityTooLarge:
        # werkzeug's own wording ("exceeds the capacity limit") says nothing useful.
        _abort(sink, received)
        raise APIError(
            413, f"The form has more than {MAX_PARTS} parts; send each field once per value."
        ) from None
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


async def _next_chunk(
    chunks: AsyncIterator[bytes], deadline: float | None, timeout: float | None
) -> bytes | None:
    """The body's next chunk, None at its end; APIError 408 once ``deadline`` has passed."""
    try:
        if deadline is None:
            return await anext(chunks)
        # Quart's BODY_TIMEOUT covers only `await request.body`, never iterating over it.
        async with asyncio.timeout_at(deadline):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise APIError(
            408,
            f"Request timeout: the upload did not arrive within {timeout:g} seconds. "
            "Check the connection and try again.",
        ) from None


def _abort(sink: _FileSink | None, received: ReceivedFile | None) -> None:
    if sink is not None:
        sink.abort()
    if received is not None:
        received.path.unlink(missing_ok=True)
