"""Receive a multipart upload body, hashing the file part as it arrives.

Nothing is held in memory but the form's small text fields and a small file. The file
part goes through md5, sha256 and blake2b-256 as it arrives; it stays in memory up to
:data:`SPOOL_BYTES` and streams to a temporary file beyond that (a small upload then
costs no file to create, write and remove, which on a busy disk took longer than the
rest of receiving it). The size limits are enforced per chunk: an oversized upload is
refused as soon as it crosses a limit, whatever Content-Length claimed (or without one,
for a chunked body).

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
import io
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from python_multipart import MultipartParser
from werkzeug.http import parse_options_header

from cheeseshop.errors import APIError

__all__ = [
    "MAX_FORM_BYTES",
    "SPOOL_BYTES",
    "FileLimit",
    "LimitFor",
    "ReceivedFile",
    "UploadForm",
    "check_size",
    "mib",
    "receive_upload",
    "write_temporary",
]

FILE_FIELD = "content"
MAX_FIELDS_BYTES = 16 * 1024 * 1024
MAX_PARTS = 1000
#: Part headers and boundaries of up to MAX_PARTS parts (twine's run to ~150 bytes each).
MAX_FRAMING_BYTES = 512 * 1024
#: Everything in a body that is not file data: no honest body exceeds the file limit by more.
MAX_FORM_BYTES = MAX_FIELDS_BYTES + MAX_FRAMING_BYTES
#: A file part up to this size is kept in memory; a larger one goes to a temporary file.
#: With many uploads arriving at once, this bounds the memory each one takes.
SPOOL_BYTES = 256 * 1024


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
#: value of each, in order) and the file's name; returns the limits for the file. Of
#: several exceeded at once, the smallest (the first given, among equals) refuses the
#: upload (:func:`check_size`).
LimitFor = Callable[[Mapping[str, Sequence[str]], str], Awaitable[Sequence[FileLimit]]]


@dataclasses.dataclass
class ReceivedFile:
    """The uploaded file, with its digests: in memory (``data``) or in a file (``path``).

    A file of at most :data:`SPOOL_BYTES` arrives in memory; :meth:`spill` writes it to a
    temporary file for code that needs a path. Whoever holds the :class:`UploadForm`
    removes that file (:meth:`UploadForm.cleanup`).
    """

    filename: str
    size: int
    md5: str
    sha256: str
    blake2_256: str
    #: Where a temporary file goes (the upload directory).
    directory: Path
    data: bytes | None = None
    path: Path | None = None

    def open(self) -> BinaryIO:
        """The file's bytes, from the start, as a seekable binary file (close it after)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")

    def spill(self) -> Path:
        """A temporary file holding the bytes: the one they arrived in, or a new one."""
        if self.path is None:
            assert self.data is not None
            self.path = write_temporary(self.directory, self.data)
        return self.path

    def remove(self) -> None:
        """Remove the temporary file, if there is one."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def write_temporary(directory: Path, data: bytes) -> Path:
    """A new temporary file in ``directory`` holding ``data`` (the caller removes it)."""
    fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


@dataclasses.dataclass
class UploadForm:
    """Text fields (every value of each, in order) and the file part, if any."""

    fields: dict[str, list[str]]
    file: ReceivedFile | None

    def cleanup(self) -> None:
        """Remove the temporary file."""
        if self.file is not None:
            self.file.remove()


def check_size(size: int, limits: Sequence[FileLimit]) -> None:
    """Raise the APIError of the first of ``limits`` that ``size`` bytes exceed.

    Of several, the smallest: the one a body read a byte at a time would have crossed
    first, so the answer depends neither on how the body was chunked nor on whether its
    file was held against the limits as it arrived or once it had (a small body's).
    """
    crossed = [limit for limit in limits if size > limit.max_bytes]
    if crossed:
        limit = min(crossed, key=lambda limit: limit.max_bytes)
        raise APIError(limit.status, limit.message)


class _FileSink:
    """The file part as it arrives: hashed, held against its limits, spooled to disk."""

    def __init__(self, directory: Path, filename: str, limits: Sequence[FileLimit]) -> None:
        self.limits = tuple(limits)
        self.size = 0
        self._check()  # before anything is kept: a project over its total refuses at once
        self.directory = directory
        self.memory: bytearray | None = bytearray()
        self.handle: BinaryIO | None = None
        self.path: Path | None = None
        self.filename = filename
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.blake2 = hashlib.blake2b(digest_size=32)

    def _check(self) -> None:
        check_size(self.size, self.limits)

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._check()
        if self.memory is not None and self.size > SPOOL_BYTES:
            fd, name = tempfile.mkstemp(dir=self.directory, prefix="upload-")
            self.path = Path(name)
            self.handle = os.fdopen(fd, "wb")
            self.handle.write(self.memory)
            self.memory = None
        if self.memory is not None:
            self.memory += data
        else:
            assert self.handle is not None
            self.handle.write(data)
        self.md5.update(data)
        self.sha256.update(data)
        self.blake2.update(data)

    def finish(self) -> ReceivedFile:
        if self.handle is not None:
            self.handle.close()
        return ReceivedFile(
            filename=self.filename,
            size=self.size,
            md5=self.md5.hexdigest(),
            sha256=self.sha256.hexdigest(),
            blake2_256=self.blake2.hexdigest(),
            directory=self.directory,
            data=bytes(self.memory) if self.memory is not None else None,
            path=self.path,
        )

    def abort(self) -> None:
        self.memory = None
        if self.path is None:
            return
        try:
            if self.handle is not None:
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
    whole: bool = False,
) -> UploadForm:
    """Parse a multipart body; the ``content`` part is kept in memory up to
    :data:`SPOOL_BYTES`, beyond that it streams to a file in ``directory``.

    ``whole``: the body is small (its declared length at most :data:`SPOOL_BYTES`), and is
    gathered before it is parsed, so that it is split in one pass however many pieces it
    arrived in (a client that writes the form apart from the file sends two).

    ``max_file_size`` limits the file unless ``limit_for`` is given: then ``limit_for`` is
    awaited when the file part starts, with the fields received so far and the file's
    name, and the limits it returns apply instead (an empty result means
    ``max_file_size``). ``timeout`` is how many seconds the whole body may take to arrive
    (``None``: no limit).

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
    stream = _PartStream(boundary)
    form = _FormBuilder(directory, limit_for, default_limits)
    # Everything read, file data included: what is not file data is held against
    # MAX_FORM_BYTES, and bounds the memory that fields and part headers can take.
    body_bytes = 0
    chunks = aiter(_joined(body) if whole else body)
    try:
        while True:
            if body_bytes - form.file_bytes > MAX_FORM_BYTES:
                raise APIError(
                    413,
                    "Upload too large: the form apart from the file (fields, part headers, "
                    f"anything outside the parts) is over {mib(MAX_FORM_BYTES)}.",
                )
            chunk = await _next_chunk(chunks, deadline, timeout)
            if chunk is None:
                break
            body_bytes += len(chunk)
            events, error = stream.feed(chunk)
            # What came before a malformed spot is handled first, as it would be if the
            # body had arrived a byte at a time: a limit crossed there is the answer.
            await form.handle(events)
            if error is not None:
                raise error
        if not stream.complete:
            if form.in_file:
                raise APIError(
                    400,
                    "Malformed multipart/form-data body. The upload ended before the file was "
                    "complete. Send the whole file and the closing boundary.",
                )
            raise APIError(
                400,
                "Malformed multipart/form-data body: it ended before the closing boundary; "
                "send the whole form.",
            )
    except BaseException:  # APIError, and cancellation (the client went away) too
        form.abort()
        raise
    return UploadForm(fields=form.fields, file=form.received)


# -- parsing: python-multipart's callbacks turned into events -------------------------------


@dataclasses.dataclass(slots=True)
class _PartStart:
    """A part's headers are complete: (name, value) pairs as sent."""

    headers: list[tuple[bytes, bytes]]


class _PartEnd:
    """The current part's data is complete."""

    __slots__ = ()


_PART_END = _PartEnd()
#: python-multipart's per-part header limits, lifted (see _PartStream).
_NO_LIMIT = sys.maxsize
#: A part starts or ends, or a piece of its data (a view of the chunk, not a copy).
_Event = _PartStart | _PartEnd | memoryview


class _PartStream:
    """The parts of a body, a chunk at a time, as events to be handled after each chunk.

    python-multipart is a state machine with nothing compiled per boundary (werkzeug's
    decoder compiled two regular expressions per request, and every client sends a fresh
    random boundary). Its callbacks run inside ``write``, which cannot await: so they
    only record what happened, and the caller handles the events, awaiting ``limit_for``
    if it must, before it reads the next chunk.
    """

    def __init__(self, boundary: bytes) -> None:
        self.complete = False
        self._delimiter = b"--" + boundary
        self._in_preamble = True
        self._preamble_tail = b""
        self._events: list[_Event] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
            # Part headers are bounded by MAX_FORM_BYTES, as everything that is not file
            # data is; python-multipart's own smaller defaults (8 headers of 4 KiB a part)
            # would refuse with a 400 what was accepted before, or what the budget
            # refuses with a 413 that says which limit it is. (Both keywords are new in
            # python-multipart 0.0.27: hence the lower bound in pyproject.toml.)
            max_header_count=_NO_LIMIT,
            max_header_size=_NO_LIMIT,
        )

    def feed(self, chunk: bytes) -> tuple[list[_Event], APIError | None]:
        """Parse ``chunk``: the events it completes, and the 400 it ran into, if any.

        The events come in the body's order; those before a malformed spot are returned
        with the error. Anything after the closing boundary (the epilogue) is ignored.
        """
        if self._in_preamble and not self._preamble_tail:
            whole = _whole_body_events(chunk, self._delimiter)
            if whole is not None:
                self._in_preamble, self.complete = False, True
                return whole, None
        self._events = []
        if self._in_preamble:
            chunk = self._skip_preamble(chunk)
        if not chunk or self.complete:
            return self._events, None
        try:
            self._parser.write(chunk)
        except ValueError as error:  # python-multipart's FormParserError and its subclasses
            return self._events, APIError(400, f"Malformed multipart/form-data body: {error}")
        return self._events, None

    def _skip_preamble(self, chunk: bytes) -> bytes:
        # RFC 2046 allows text before the first delimiter, and werkzeug skipped it;
        # python-multipart skips only line breaks. Of the preamble, only what may be the
        # start of a delimiter split across chunks is kept.
        data = self._preamble_tail + chunk
        start = data.find(self._delimiter)
        if start == -1:
            self._preamble_tail = data[-(len(self._delimiter) - 1) :]
            return b""
        self._in_preamble = False
        self._preamble_tail = b""
        return data[start:]

    def _on_part_begin(self) -> None:
        self._headers = []

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]  # a header may be split across chunks

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers.append((bytes(self._header_name), bytes(self._header_value)))
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        self._events.append(_PartStart(self._headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        # A view, not a copy: ``data`` is the chunk (or the boundary python-multipart
        # held back), immutable and handled before the next chunk is parsed.
        self._events.append(memoryview(data)[start:end])

    def _on_part_end(self) -> None:
        self._events.append(_PART_END)

    def _on_end(self) -> None:
        self.complete = True


#: A header's name, as python-multipart accepts it (RFC 7230 token characters).
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _whole_body_events(body: bytes, delimiter: bytes) -> list[_Event] | None:
    """The events of a body that arrived in one chunk, laid out as every client lays it
    out; None for anything else, which python-multipart then parses. Pure.

    A small upload's body arrives whole, and python-multipart spends some 250 µs of the
    event loop on it, a callback per header, value and piece of data; this takes 30.
    Only an unambiguous body is taken: the first delimiter at the very start, each part
    with one or more ``Name: value`` headers of token characters, every ``CRLF--boundary``
    in it followed by ``CRLF`` (the next part) or, the last one, by ``--`` and nothing
    but a line break. Its events are the ones python-multipart gives for it (the test
    suite compares the two on every body it parses), so what handles them cannot tell.
    """
    opening = delimiter + b"\r\n"
    if not body.startswith(opening):
        return None
    separator = b"\r\n" + delimiter
    end = body.rfind(separator + b"--")
    if end == -1 or body[end + len(separator) + 2 :] not in (b"", b"\r\n"):
        return None
    view = memoryview(body)
    events: list[_Event] = []
    position = len(opening)
    while True:
        headers_end = body.find(b"\r\n\r\n", position, end)
        if headers_end <= position:  # no headers at all, or none that end
            return None
        headers = []
        for line in body[position:headers_end].split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or b"\r" in value or b"\n" in value or not _HEADER_NAME.fullmatch(name):
                return None
            headers.append((name, value.lstrip(b" ")))
        data_start = headers_end + 4
        data_end = body.find(separator, data_start)
        events.append(_PartStart(headers))
        if data_end > data_start:
            events.append(view[data_start:data_end])
        events.append(_PART_END)
        if data_end == end:
            return events
        position = data_end + len(separator)
        if not body.startswith(b"\r\n", position):
            return None  # a delimiter followed by neither a line break nor "--"
        position += 2


# -- the form: fields, the file, and the limits on both ---------------------------------------


class _FormBuilder:
    """Handles a body's events: collects the fields, receives the file part (_FileSink)."""

    def __init__(
        self, directory: Path, limit_for: LimitFor | None, default_limits: Sequence[FileLimit]
    ) -> None:
        self.fields: dict[str, list[str]] = {}
        self.received: ReceivedFile | None = None
        self.file_bytes = 0
        self._directory = directory
        self._limit_for = limit_for
        self._default_limits = default_limits
        self._sink: _FileSink | None = None
        self._parts = 0
        self._field_bytes = 0
        # The field whose value is being read; None in the file part and in a part
        # without a name, whose data is dropped.
        self._field: str | None = None
        self._value = bytearray()

    @property
    def in_file(self) -> bool:
        """Whether the file part has started and not yet ended."""
        return self._sink is not None

    async def handle(self, events: Sequence[_Event]) -> None:
        """Apply ``events`` in order; APIError at the first that breaks a rule or limit."""
        for event in events:
            if isinstance(event, memoryview):
                self._data(event)
            elif isinstance(event, _PartStart):
                await self._start(event.headers)
            else:
                self._end()

    def abort(self) -> None:
        """Remove the temporary file, finished or not."""
        if self._sink is not None:
            self._sink.abort()
        if self.received is not None:
            self.received.remove()

    async def _start(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise APIError(
                413, f"The form has more than {MAX_PARTS} parts; send each field once per value."
            )
        name, filename = _disposition(headers)
        # uv sends the file part without a Content-Type, which some parsers then report
        # as a plain field; the filename parameter is what counts.
        if name == FILE_FIELD and filename is not None:
            if self.received is not None:
                raise APIError(400, "Only one file (the 'content' field) may be uploaded.")
            limits: Sequence[FileLimit] = self._default_limits
            if self._limit_for is not None:
                so_far = {key: tuple(values) for key, values in self.fields.items()}
                limits = await self._limit_for(so_far, filename) or self._default_limits
            self._sink = _FileSink(self._directory, filename, limits)
        else:
            self._field = name
            self._value.clear()

    def _data(self, data: memoryview) -> None:
        if self._sink is not None:
            self.file_bytes += len(data)
            self._sink.write(data)
        elif self._field is not None:
            self._field_bytes += len(data)
            if self._field_bytes > MAX_FIELDS_BYTES:
                raise APIError(413, "The form fields are too large (16 MiB in all).")
            self._value += data

    def _end(self) -> None:
        if self._sink is not None:
            self.received = self._sink.finish()
            self._sink = None
        elif self._field is not None:
            try:
                value = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise APIError(400, f"Field {self._field!r} is not valid UTF-8.") from None
            self.fields.setdefault(self._field, []).append(value)
            self._field = None
            self._value.clear()


#: What clients send (twine, uv, httpx): values without quotes, backslashes, percent signs
#: or control characters, which werkzeug's parser would return as they are. It costs
#: 25-45 µs a part, as much as the rest of a small upload's parsing; this, about 1 µs.
_PLAIN_DISPOSITION = re.compile(
    r'form-data; name="([^"\\%\x00-\x1f\x7f]*)"(?:; filename="([^"\\%\x00-\x1f\x7f]*)")?'
)


def _disposition(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The ``name`` and ``filename`` of a part's Content-Disposition (None when absent)."""
    for key, value in headers:
        if key.lower() == b"content-disposition":
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise APIError(
                    400,
                    "Malformed multipart/form-data body: a part's Content-Disposition header "
                    "is not valid UTF-8.",
                ) from None
            if plain := _PLAIN_DISPOSITION.fullmatch(text):
                return plain.group(1), plain.group(2)
            # werkzeug's parser, as its decoder used: quoting, escapes, RFC 2231 ``filename*``.
            _, options = parse_options_header(text)
            return options.get("name"), options.get("filename")
    raise APIError(
        400,
        "Malformed multipart/form-data body: a part has no Content-Disposition header; "
        "each part needs one (form-data; name=...).",
    )


# -- the body's chunks ------------------------------------------------------------------------


async def _joined(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``body`` as one chunk: its pieces, joined once the last has arrived."""
    pieces = [piece async for piece in body]
    if pieces:
        yield pieces[0] if len(pieces) == 1 else b"".join(pieces)


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
