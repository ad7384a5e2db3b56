"""Every refusal of the legacy upload, one table: CONFORMANCE.md "Legacy upload" and the
RELIABILITY.md [input] items that reach ``POST /legacy/``.

Each row sends one bad upload through the test client, after an optional setup (an earlier
upload, a project limit, another user), and the one test below asserts for every row:

- the status: the row's 4xx, never a 500;
- a fragment of the message that says what to fix, in the body and in the
  ``X-Cheeseshop-Reason`` header (the reason phrase twine shows), which is the body made
  Latin-1-safe;
- nothing stored (R8): no File, Release, FilenameRegistry, journal or outbox row, no project
  created, no file under ``<data_dir>/files``, nothing left in ``<data_dir>/tmp``, and no file
  anywhere under the test's directory that was not there before (a canary for anything
  extracted to disk).

Malformed archives are built from valid ones (:mod:`cheeseshop.testing.dists`) with exactly
one thing wrong, zips byte by byte with :mod:`cheeseshop.testing.archives`.

A description with ``<script>`` or a ``javascript:`` link is not refused: like PyPI, the index
renders it with the script and the link removed. Those inputs are checked by the second test
here, which asserts that the stored HTML carries neither.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import random
import tarfile
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, select, update

from cheeseshop.db.models import (
    File,
    FilenameRegistry,
    JournalEntry,
    OutboxEvent,
    Project,
    ProjectStatus,
    Release,
    utcnow,
)
from cheeseshop.packaging import archives
from cheeseshop.testing.archives import (
    RawZip,
    ZipEntry,
    raw_zip,
    sdist_bomb,
    sdist_from,
    sdist_members,
    tar_bytes,
    tar_hardlink,
    tar_member,
    tar_symlink,
    wheel_from,
    wheel_members,
    with_record,
    zip_entries,
)
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel, core_metadata
from cheeseshop.testing.upload import FieldList, upload_fields
from cheeseshop.web.reason import REASON_HEADER, latin1_reason

NAME = "hello-world"
VERSION = "1.0"
STEM = "hello_world-1.0"
DIST_INFO = f"{STEM}.dist-info"
WHEEL = f"{STEM}-py3-none-any.whl"
MiB = 1024 * 1024
EVIL_PY = b"import os\n"
DEPRECATED_CLASSIFIER = "License :: OSI Approved :: Intel Open Source License"


# -- the rows' vocabulary ------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """What a row's setup and request may use."""

    upload: Callable[..., Awaitable[Any]]
    client: Any
    services: Any
    make_token: Callable[..., Awaitable[str]]
    app: Any
    monkeypatch: pytest.MonkeyPatch


Step = Callable[[Ctx], Awaitable[Any]]


@dataclass(frozen=True)
class Row:
    id: str
    status: int
    fragment: str
    send: Step
    setup: Step | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response headers the refusal must carry (value prefixes)."""


def wheel() -> Dist:
    return build_wheel(NAME, VERSION)


def sdist() -> Dist:
    return build_sdist(NAME, VERSION)


def basic(token: str, username: str = "__token__") -> str:
    return "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()


def post(
    make: Callable[[], Dist],
    *,
    overrides: Mapping[str, str | Sequence[str] | None] | None = None,
    form_from: Callable[[], Dist] | None = None,
    user: str = "alice",
    scope: list[str] | None = None,
    authorization: str | None = None,
) -> Step:
    """Upload ``make()`` as twine would, with the form of ``form_from()`` (default: the same
    dist; its digests are always ``make()``'s) changed by ``overrides``; with a token of
    ``user`` (scoped to the projects ``scope``) unless ``authorization`` is given."""

    async def send(ctx: Ctx) -> Any:
        dist = make()
        form = upload_fields(form_from() if form_from else dist, overrides=overrides)
        if form_from is not None:
            form = _with_digests(form, dist)
        if authorization is not None:
            return await ctx.upload(dist, fields=form, authorization=authorization)
        token = await ctx.make_token(user, projects=scope)
        return await ctx.upload(dist, fields=form, token=token)

    return send


def _with_digests(form: FieldList, dist: Dist) -> FieldList:
    """The form with its digests replaced by ``dist``'s (sent in place of the described one)."""
    digests = {
        "sha256_digest": hashlib.sha256(dist.content).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(dist.content, digest_size=32).hexdigest(),
    }
    return [(key, digests.get(key, value)) for key, value in form]


def post_body(
    body: Callable[[], bytes],
    *,
    content_type: str | None = "multipart/form-data; boundary=b0undary",
    headers: Mapping[str, str] | None = None,
) -> Step:
    """POST a body built by hand, as alice."""

    async def send(ctx: Ctx) -> Any:
        sent = {"Authorization": basic(await ctx.make_token()), **(headers or {})}
        if content_type is not None:
            sent["Content-Type"] = content_type
        return await ctx.client.post("/legacy/", data=body(), headers=sent)

    return send


BOUNDARY = "b0undary"


def multipart(parts: Sequence[tuple[str, bytes]]) -> bytes:
    """A body of (Content-Disposition parameters, value) parts, both as sent."""
    out = bytearray()
    for disposition, value in parts:
        out += f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    return bytes(out) + f"--{BOUNDARY}--\r\n".encode()


def field_parts(form: FieldList) -> list[tuple[str, bytes]]:
    return [(f'name="{key}"', value.encode()) for key, value in form]


def file_named(filename: str, make: Callable[[], Dist] = wheel) -> Step:
    """The dist's bytes and form, under ``filename``, sent RFC 5987-encoded (``filename*=``)
    so that any character, NUL and CR LF included, reaches the server as given."""

    def body() -> bytes:
        dist = make()
        disposition = f"name=\"content\"; filename*=UTF-8''{quote(filename, safe='')}"
        return multipart([*field_parts(upload_fields(dist)), (disposition, dist.content)])

    return post_body(body)


def fields_then(dist_parts: Callable[[Dist], list[tuple[str, bytes]]]) -> Step:
    """A body of the good wheel's form followed by the parts ``dist_parts`` gives."""

    def body() -> bytes:
        dist = wheel()
        return multipart([*field_parts(upload_fields(dist)), *dist_parts(dist)])

    return post_body(body)


def content_part(dist: Dist) -> tuple[str, bytes]:
    return (f'name="content"; filename="{dist.filename}"', dist.content)


def twine_body(dist: Dist) -> bytes:
    """What twine sends: the form, then the file."""
    return multipart([*field_parts(upload_fields(dist)), content_part(dist)])


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


async def stream(ctx: Ctx, chunks: Sequence[bytes]) -> Any:
    """Send a body chunk by chunk with no Content-Length (as a chunked request arrives), and
    never end it: the server must answer without waiting for more."""
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Authorization": basic(await ctx.make_token()),
    }
    async with ctx.client.request("/legacy/", method="POST", headers=headers) as connection:
        for chunk in chunks:
            await connection.send(chunk)
    return await connection.as_response()


# -- setups ----------------------------------------------------------------------------------


def uploaded(*makes: Callable[[], Dist], user: str = "alice") -> Step:
    """Setup: upload each dist (as ``user``), each accepted."""

    async def setup(ctx: Ctx) -> None:
        for make in makes:
            response = await ctx.upload(make(), token=await ctx.make_token(user))
            assert response.status_code == 200, await response.get_data(as_text=True)

    return setup


def project_set(**values: Any) -> Step:
    """Setup: upload the good wheel, then change its project row."""

    async def setup(ctx: Ctx) -> None:
        await uploaded(wheel)(ctx)
        async with ctx.services.db.write() as session:
            await session.execute(
                update(Project).where(Project.normalized_name == NAME).values(**values)
            )

    return setup


async def registered_filename(ctx: Ctx) -> None:
    async with ctx.services.db.write() as session:
        session.add(FilenameRegistry(filename=WHEEL, created=utcnow()))


def patched(target: object, name: str, value: object) -> Step:
    async def setup(ctx: Ctx) -> None:
        ctx.monkeypatch.setattr(target, name, value)

    return setup


async def short_body_timeout(ctx: Ctx) -> None:
    ctx.monkeypatch.setitem(ctx.app.config, "BODY_TIMEOUT", 0.3)


# -- wheels with one thing wrong -----------------------------------------------------------


def members() -> dict[str, bytes]:
    return wheel_members(wheel())


def entries() -> list[ZipEntry]:
    return zip_entries(members())


def laid_out(change: Callable[[list[ZipEntry]], None], **spec: Any) -> Callable[[], Dist]:
    """The good wheel laid out by raw_zip after ``change`` has edited its entries."""

    def make() -> Dist:
        edited = entries()
        change(edited)
        return wheel_from(wheel(), RawZip(edited, **spec))

    return make


def with_members(
    change: Callable[[dict[str, bytes]], None], *, record: bool = True
) -> Callable[[], Dist]:
    """The good wheel after ``change`` edits its members; RECORD remade unless ``record`` is
    false (then it stays as built, describing the original members)."""

    def make() -> Dist:
        edited = members()
        change(edited)
        return wheel_from(wheel(), with_record(edited) if record else edited)

    return make


def bytes_of(
    edit: Callable[[bytes], bytes], make: Callable[[], Dist] = wheel
) -> Callable[[], Dist]:
    """``make()`` with its bytes passed through ``edit``."""

    def edited() -> Dist:
        dist = make()
        return dataclasses.replace(dist, content=edit(dist.content))

    return edited


def renamed(filename: str, make: Callable[[], Dist] = wheel) -> Callable[[], Dist]:
    def rename() -> Dist:
        return dataclasses.replace(make(), filename=filename)

    return rename


def add_entry(entry: ZipEntry, at: int | None = None) -> Callable[[list[ZipEntry]], None]:
    def change(edited: list[ZipEntry]) -> None:
        edited.insert(len(edited) if at is None else at, entry)

    return change


def set_on(index: int, **values: Any) -> Callable[[list[ZipEntry]], None]:
    def change(edited: list[ZipEntry]) -> None:
        for key, value in values.items():
            setattr(edited[index], key, value)

    return change


def dist_info_renamed(edited: list[ZipEntry]) -> None:
    for entry in edited:
        entry.name = entry.name.replace(DIST_INFO.encode(), b"other-1.0.dist-info")


def second_central_directory(*, pointed_at: str) -> Callable[[], Dist]:
    """Two central directories, the first listing ``evil/__init__.py`` where the real one
    lists ``hello_world/__init__.py`` (same length, same local header). The end record
    points at the ``pointed_at`` one ("first" or "second")."""

    def make() -> Dist:
        data = wheel_from(wheel(), entries()).content
        cd_at = data.index(b"PK\x01\x02")
        eocd_at = data.rindex(b"PK\x05\x06")
        real = data[cd_at:eocd_at]
        evil = real.replace(b"hello_world/__init__.py", b"evil_world/__init__.py_")
        end = bytearray(data[eocd_at:])
        offset = cd_at if pointed_at == "first" else cd_at + len(evil)
        end[16:20] = offset.to_bytes(4, "little")
        return dataclasses.replace(wheel(), content=data[:cd_at] + evil + real + bytes(end))

    return make


def end_record_in_comment() -> Dist:
    """A second end record hidden in the first one's comment: readers that search from the
    end find the second, which points elsewhere."""
    data = wheel().content
    eocd_at = data.rindex(b"PK\x05\x06")
    end = bytearray(data[eocd_at:])
    fake = bytes(end[:16]) + (0).to_bytes(4, "little") + b"\x00\x00"
    end[20:22] = len(fake).to_bytes(2, "little")
    return dataclasses.replace(wheel(), content=data[:eocd_at] + bytes(end) + fake)


def zip_in_zip() -> Dist:
    """The real wheel stored whole as the only member of a zip uploaded under its name."""
    inner = wheel()
    outer = raw_zip(RawZip([ZipEntry(WHEEL.encode(), inner.content)]))
    return dataclasses.replace(inner, content=outer)


@functools.cache
def zip_bomb() -> Dist:
    """70 MiB of zeros, deflated to ~70 KiB (about 1000:1): built once per test process."""
    files = {"hello_world/__init__.py": b"", "hello_world/zeros.bin": bytes(70 * MiB)}
    return build_wheel(NAME, VERSION, files=files)


def metadata_saying(**values: Any) -> Callable[[], Dist]:
    """The good wheel whose METADATA says ``values`` (the form still describes the original)."""

    def change(edited: dict[str, bytes]) -> None:
        fields = {"name": NAME, "version": VERSION, **values}
        edited[f"{DIST_INFO}/METADATA"] = core_metadata(**fields)

    return with_members(change)


def record_edit(edit: Callable[[str], str]) -> Callable[[], Dist]:
    def change(edited: dict[str, bytes]) -> None:
        record = f"{DIST_INFO}/RECORD"
        edited[record] = edit(edited[record].decode()).encode()

    return with_members(change, record=False)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


INIT = "hello_world/__init__.py"


def init_py() -> bytes:
    return members()[INIT]


# -- sdists with one thing wrong -------------------------------------------------------------


def sdist_plus(*extra: Any, format: int = tarfile.PAX_FORMAT) -> Callable[[], Dist]:
    def make() -> Dist:
        good = sdist()
        return sdist_from(good, [*sdist_members(good), *extra], format=format)

    return make


def gnu_sdist_plus(*extra: Any) -> Callable[[], Dist]:
    """GNU format: the one that writes device, FIFO and old-style sparse headers as given."""
    return sdist_plus(*extra, format=tarfile.GNU_FORMAT)


PAX_SPARSE_1_0 = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}


def sdist_without(name: str) -> Callable[[], Dist]:
    def make() -> Dist:
        good = sdist()
        return sdist_from(good, [m for m in sdist_members(good) if m[0].name != name])

    return make


def pkg_info_saying(**values: Any) -> Callable[[], Dist]:
    """The good sdist whose PKG-INFO says ``values`` (the form still describes the original)."""

    def make() -> Dist:
        good = sdist()
        members = sdist_members(good)
        for info, _ in members:
            if info.name == f"{STEM}/PKG-INFO":
                pkg_info = core_metadata(**{"name": NAME, "version": VERSION, **values})
                info.size = len(pkg_info)
                members[members.index((info, _))] = (info, pkg_info)
        return sdist_from(good, members)

    return make


@functools.cache
def tar_bomb() -> Dist:
    """The good sdist plus a member of 3 GiB of zeros: a 3 MiB .tar.gz, built once per test
    process (see :func:`~cheeseshop.testing.archives.sdist_bomb`)."""
    return sdist_bomb(sdist(), 3 * 1024 * MiB)


def noisy_wheel(version: str, size: int) -> Dist:
    noise = random.Random(version).randbytes(size)
    files = {"hello_world/__init__.py": b"", "hello_world/n": noise}
    return build_wheel(NAME, version, files=files)


def described(text: str, content_type: str) -> Step:
    return post(wheel, overrides={"description": text, "description_content_type": content_type})


# -- the table -------------------------------------------------------------------------------

# One row per refusal: id, status, a fragment of the message, the request, then an optional
# setup and the headers the answer must carry. Laid out as a table, not by the formatter.
# fmt: off
ROWS: list[Row] = [
    # :action and protocol_version
    Row("action-submit", 410, "no longer supported", post(wheel, overrides={":action": "submit"})),
    Row(
        "action-doc-upload", 410, "no longer supported",
        post(wheel, overrides={":action": "doc_upload"}),
    ),
    Row("action-unknown", 400, "Unknown ':action'", post(wheel, overrides={":action": "remove"})),
    Row("action-missing", 400, "Missing ':action' field", post(wheel, overrides={":action": None})),
    Row(
        "protocol-version-2", 400, "Unknown protocol_version '2'",
        post(wheel, overrides={"protocol_version": "2"}),
    ),
    Row(
        "attestations", 400, "Attestations are not supported",
        post(wheel, overrides={"attestations": '[{"version": 1}]'}),
    ),
    # authentication and authorization
    Row(
        "no-credentials", 401, "use the username '__token__'", post(wheel, authorization=""),
        headers={"WWW-Authenticate": "Basic"},
    ),
    Row(
        "unknown-scheme", 401, "Unsupported authorization scheme",
        post(wheel, authorization="Digest username=x"), headers={"WWW-Authenticate": "Basic"},
    ),
    Row("garbage-token", 403, "Invalid API Token", post(wheel, authorization=basic("garbage"))),
    Row(
        "username-and-password", 403, "use the username '__token__'",
        post(wheel, authorization=basic("correct horse battery staple", "alice")),
    ),
    Row("malformed-basic", 403, "Malformed Basic", post(wheel, authorization="Basic !!!")),
    Row(
        "other-users-project", 403, "isn't allowed to upload to project 'hello-world'",
        post(lambda: build_wheel(NAME, "2.0"), user="bob"), setup=uploaded(wheel),
    ),
    # Permission before duplicates, as PyPI: an outsider learns nothing of the files.
    Row(
        "other-users-project-taken-filename", 403, "isn't allowed to upload to project 'hello-world'",
        post(lambda: build_wheel(NAME, VERSION, summary="Other bytes."), user="bob"),
        setup=uploaded(wheel),
    ),
    Row(
        "other-users-project-same-bytes", 403, "isn't allowed to upload to project 'hello-world'",
        post(wheel, user="bob"), setup=uploaded(wheel),
    ),
    Row(
        "token-for-another-project", 403, "This API token is not valid for project 'hello-world'",
        post(wheel, scope=["other-project"]),
        setup=uploaded(lambda: build_wheel("other-project", "1.0")),
    ),
    Row(
        "archived-project", 400, "it does not accept uploads",
        post(lambda: build_wheel(NAME, "2.0")), setup=project_set(status=ProjectStatus.ARCHIVED),
    ),
    # missing fields
    Row("missing-name", 400, "Missing 'name' field", post(wheel, overrides={"name": None})),
    Row(
        "missing-version", 400, "Missing 'version' field",
        post(wheel, overrides={"version": None}),
    ),
    Row("missing-filetype", 400, "Invalid filetype ''", post(wheel, overrides={"filetype": None})),
    Row(
        "missing-pyversion", 400, "Missing 'pyversion' field",
        post(wheel, overrides={"pyversion": None}),
    ),
    Row(
        "sdist-pyversion-not-source", 400, "use 'source' as the Python version of an sdist",
        post(sdist, overrides={"pyversion": "py3"}),
    ),
    Row(
        "missing-metadata-version", 400, "Invalid metadata_version ''",
        post(wheel, overrides={"metadata_version": None}),
    ),
    Row(
        "missing-digests", 400, "Missing digest",
        post(wheel, overrides={"sha256_digest": None, "blake2_256_digest": None}),
    ),
    Row(
        "missing-content", 400, "Missing file",
        post_body(lambda: multipart(field_parts(upload_fields(wheel())))),
    ),
    Row(
        "content-as-a-text-field", 400, "Missing file: upload it in the 'content' field",
        fields_then(lambda dist: [('name="content"', b"no filename, so not a file")]),
    ),
    # duplicated single-value fields, wrong types, huge values
    Row(
        "name-twice-differing", 400, "Field 'name' was given 2 different values",
        post(wheel, overrides={"name": [NAME, "other-project"]}),
    ),
    Row(
        "version-twice-differing", 400, "Field 'version' was given 2 different values",
        post(wheel, overrides={"version": [VERSION, "2.0"]}),
    ),
    Row(
        "digest-twice-differing", 400, "Field 'sha256_digest' was given 2 different values",
        post(wheel, overrides={"sha256_digest": [wheel().sha256, "0" * 64]}),
    ),
    Row(
        "digest-not-hex", 400, "Invalid sha256_digest",
        post(wheel, overrides={"sha256_digest": "z" * 64}),
    ),
    Row(
        "protocol-version-not-a-number", 400, "Unknown protocol_version",
        post(wheel, overrides={"protocol_version": "one"}),
    ),
    Row(
        "version-not-pep440", 400, "Invalid version 'one'",
        post(wheel, overrides={"version": "one"}),
    ),
    Row(
        "nul-in-field", 400, "contains a NUL character",
        post(wheel, overrides={"summary": "a\x00b"}),
    ),
    Row(
        "field-not-utf8", 400, "is not valid UTF-8",
        fields_then(lambda dist: [('name="author"', b"\xff\xfe"), content_part(dist)]),
    ),
    Row(
        "summary-too-long", 400, "shorten it to 512",
        post(wheel, overrides={"summary": "s" * 100_000}),
    ),
    # Longer than the columns that keep them: a 400 on every backend, never the
    # database's own refusal (a 500 on PostgreSQL, a silent overflow on SQLite).
    Row(
        "name-over-200-characters", 400, "Field 'name' is 210 characters long; shorten it to 200",
        post(lambda: build_wheel("a" * 210, VERSION)),
    ),
    Row(
        "version-over-100-characters", 400, "Field 'version' is 119 characters long; shorten it to 100",
        post(lambda: build_wheel(NAME, "1" + ".0" * 59)),
    ),
    Row(
        "pyversion-over-100-characters", 400, "Field 'pyversion' is 150 characters long",
        post(wheel, overrides={"pyversion": "py3" * 50}),
    ),
    Row(
        "content-type-over-200-characters", 400, "Field 'description_content_type' is",
        post(wheel, overrides={"description_content_type": "text/markdown; charset=UTF-8; x=" + "y" * 250}),
    ),
    Row(
        "form-fields-over-16-mib", 413, "The form fields are too large",
        post(wheel, overrides={"description": "d" * (17 * MiB)}),
    ),
    Row(
        "description-over-4-mib", 400, "over this index's limit of 4194304 bytes (4 MiB)",
        described("d" * (5 * MiB), "text/plain"),
    ),
    # malformed multipart
    Row(
        "not-multipart", 400, "multipart/form-data",
        post_body(
            lambda: b":action=file_upload&name=x", content_type="application/x-www-form-urlencoded"
        ),
    ),
    Row("no-content-type", 400, "multipart/form-data", post_body(lambda: b"x", content_type=None)),
    Row(
        "no-boundary", 400, "has no valid boundary",
        post_body(lambda: b"x", content_type="multipart/form-data"),
    ),
    Row(
        "multipart-garbage", 400, "Malformed multipart",
        post_body(lambda: b"this is not multipart"),
    ),
    Row(
        "multipart-headers-never-end", 400, "Malformed multipart",
        post_body(lambda: b"--b0undary\r\nContent-Disposition: form-data; name=x"),
    ),
    Row(
        "multipart-file-cut-short", 400, "Malformed multipart/form-data body",
        post_body(lambda: twine_body(wheel())[:-200]),
    ),
    Row(
        "multipart-two-files", 400, "Only one file",
        fields_then(lambda dist: [content_part(dist), content_part(dist)]),
    ),
    Row(
        "multipart-too-many-parts", 413, "1000 parts",
        fields_then(lambda dist: [('name="classifiers"', b"x")] * 1001 + [content_part(dist)]),
    ),
    # oversized bodies
    Row(
        "over-project-limit-true-length", 413, "File too large. Limit for project 'hello-world'",
        post(lambda: noisy_wheel("1.1", 6000)), setup=project_set(upload_limit=3000),
    ),
    Row(
        "over-project-total", 400, "Project size too large",
        post(lambda: noisy_wheel("1.1", 6000)), setup=project_set(total_size_limit=8000),
    ),
    Row(
        "content-length-lies-high", 413, "Upload too large",
        post_body(lambda: b"x", headers={"Content-Length": str(10 * 1024 * MiB)}),
    ),
    Row(
        "chunked-over-limit", 413, "File too large",
        lambda ctx: stream(ctx, chunked(twine_body(noisy_wheel("1.1", 6000)), 1000)),
        setup=project_set(upload_limit=3000),
    ),
    Row(
        "slow-loris", 408, "Request timeout",
        lambda ctx: stream(ctx, [twine_body(wheel())[:100]]),
        setup=short_body_timeout,
    ),
    # digests and filetype
    Row(
        "sha256-mismatch", 400, "The sha256_digest given",
        post(wheel, overrides={"sha256_digest": "0" * 64}),
    ),
    Row(
        "blake2-mismatch", 400, "The blake2_256_digest given",
        post(wheel, overrides={"blake2_256_digest": "0" * 64}),
    ),
    Row(
        "md5-mismatch", 400, "The md5_digest given",
        post(wheel, overrides={"md5_digest": "0" * 32}),
    ),
    Row(
        "filetype-egg", 400, "Invalid filetype 'bdist_egg'",
        post(wheel, overrides={"filetype": "bdist_egg"}),
    ),
    Row(
        "filetype-sdist-for-wheel", 400, "does not match the file",
        post(wheel, overrides={"filetype": "sdist", "pyversion": "source"}),
    ),
    # metadata rules
    Row(
        "metadata-version-2.0", 400, "Invalid metadata_version '2.0'",
        post(wheel, overrides={"metadata_version": "2.0"}),
    ),
    Row(
        "metadata-version-3.0", 400, "Invalid metadata_version '3.0'",
        post(wheel, overrides={"metadata_version": "3.0"}),
    ),
    Row(
        "classifier-unknown", 400, "is not a valid classifier",
        post(wheel, overrides={"classifiers": "Programming Language :: Cobol :: 2077"}),
    ),
    Row(
        "classifier-deprecated", 400, "is deprecated",
        post(wheel, overrides={"classifiers": DEPRECATED_CLASSIFIER}),
    ),
    Row(
        "classifier-private", 400, "is a private classifier",
        post(wheel, overrides={"classifiers": "Private :: Do Not Upload"}),
    ),
    Row(
        "project-url-label-too-long", 400, "shorten it to 32",
        post(wheel, overrides={"project_urls": "L" * 33 + ", https://example.com"}),
    ),
    Row(
        "project-url-javascript", 400, "is a javascript: URL",
        post(wheel, overrides={"project_urls": "Home, javascript:alert(1)"}),
    ),
    Row(
        "project-url-javascript-obfuscated", 400, "is a javascript: URL",
        post(wheel, overrides={"project_urls": "Home, JaVa\tScRiPt:alert(1)"}),
    ),
    Row(
        "home-page-javascript", 400, "is a javascript: URL",
        post(wheel, overrides={"home_page": "javascript:alert(1)"}),
    ),
    Row(
        "requires-dist-direct-url", 400, "direct URL reference",
        post(wheel, overrides={"requires_dist": "evil @ https://example.com/evil.whl"}),
    ),
    Row(
        "license-and-license-expression", 400, "License-Expression",
        post(wheel, overrides={"license": "MIT", "license_expression": "MIT"}),
    ),
    Row(
        "dynamic-name", 400, "never Name, Version or Metadata-Version",
        post(wheel, overrides={"dynamic": "Name"}),
    ),
    Row(
        "author-email-invalid", 400, "is not a valid list of email addresses",
        post(wheel, overrides={"author_email": "alice@"}),
    ),
    Row(
        "requires-python-invalid", 400, "Requires-Python",
        post(wheel, overrides={"requires_python": ">=three"}),
    ),
    # descriptions
    Row(
        "description-rst-broken", 400, "failed to render as 'text/x-rst'",
        described("Title\n====\n\n.. frobnicate:: x\n", "text/x-rst"),
    ),
    Row(
        "description-rst-raw-html", 400, '"raw" directive disabled',
        described(".. raw:: html\n\n   <script>alert(1)</script>\n", "text/x-rst"),
    ),
    Row(
        "description-rst-include-etc-passwd", 400, '"include" directive disabled',
        described(".. include:: /etc/passwd\n", "text/x-rst"),
    ),
    Row(
        "description-content-type-html", 400, "Description-Content-Type",
        described("<script>alert(1)</script>", "text/html"),
    ),
    # project names
    Row(
        "name-markup", 400, "Invalid project name",
        post(wheel, overrides={"name": "<script>alert(1)</script>"}),
    ),
    Row(
        "name-cyrillic-homoglyph", 400, "Invalid project name",
        post(wheel, overrides={"name": "hello-w\u043erld"}),
    ),
    Row(
        "name-confusable-F1ask", 400, "is too similar to an existing project ('Flask')",
        post(lambda: build_wheel("F1ask", "1.0")),
        setup=uploaded(lambda: build_wheel("Flask", "1.0")),
    ),
    Row(
        "name-stdlib", 400, "the name of a Python standard-library module",
        post(lambda: build_wheel("asyncio", "1.0")),
    ),
    # filenames
    Row("filename-slash", 400, "contains a path separator", file_named(f"../{WHEEL}")),
    Row("filename-backslash", 400, "contains a path separator", file_named(f"..\\{WHEEL}")),
    Row("filename-nul", 400, "contains control characters", file_named(f"{WHEEL}\x00.exe")),
    Row("filename-cr-lf", 400, "contains control characters", file_named(f"{WHEEL}\r\nX-Evil: 1")),
    Row(
        "filename-non-ascii", 400, "non-ASCII characters",
        file_named("hello_w\u00f6rld-1.0-py3-none-any.whl"),
    ),
    Row(
        "filename-cyrillic", 400, "non-ASCII characters",
        file_named("hello_w\u043erld-1.0-py3-none-any.whl"),
    ),
    Row(
        "filename-empty", 400, "the filename is empty",
        fields_then(lambda dist: [('name="content"; filename=""', dist.content)]),
    ),
    Row(
        "filename-zip-sdist", 400, ".zip sdists are no longer accepted",
        post(renamed(f"{STEM}.zip", sdist), form_from=sdist),
    ),
    Row(
        "filename-egg", 400, "Eggs (.egg) are no longer accepted",
        post(renamed(f"{STEM}-py3.11.egg"), form_from=wheel),
    ),
    Row(
        "filename-exe", 400, "Windows installers (.exe)",
        post(renamed(f"{STEM}.win32.exe"), form_from=wheel),
    ),
    Row(
        "filename-upper-case-extension", 400, "must be lower-case",
        post(renamed(f"{STEM}-py3-none-any.WHL"), form_from=wheel),
    ),
    Row(
        "sdist-name-not-normalized", 400, "expected 'hello_world-1.0.tar.gz'",
        post(renamed("hello-world-1.0.tar.gz", sdist)),
    ),
    Row(
        "wheel-filename-other-project", 400, "names another project",
        post(renamed("other_project-1.0-py3-none-any.whl")),
    ),
    Row(
        "wheel-filename-other-version", 400, "Version in filename (2.0)",
        post(renamed("hello_world-2.0-py3-none-any.whl")),
    ),
    Row(
        "wheel-filename-local-version", 400, "local",
        post(renamed("hello_world-1.0+evil-py3-none-any.whl")),
    ),
    Row(
        "wheel-filename-malformed", 400, "Invalid wheel filename",
        post(renamed("hello_world-1.0.whl"), form_from=wheel),
    ),
    # wheels: zip confusion (RELIABILITY [input], uv's CVE-2025-54368)
    Row("wheel-not-a-zip", 400, "not a zip archive", post(bytes_of(lambda _: b"not a zip" * 20))),
    Row("wheel-is-a-tar", 400, "not a zip archive", post(bytes_of(lambda _: sdist().content))),
    Row(
        "zip-two-central-directories-first-used", 400, "not where its end record says",
        post(second_central_directory(pointed_at="first")),
    ),
    Row(
        "zip-two-central-directories-second-used", 400, "unexplained bytes",
        post(second_central_directory(pointed_at="second")),
    ),
    Row("zip-two-end-records", 400, "not where its end record says", post(end_record_in_comment)),
    Row(
        "zip-concatenated", 400, "not where its end record says",
        post(bytes_of(lambda data: raw_zip(RawZip([ZipEntry(b"evil.py", b"import os\n")])) + data)),
    ),
    Row(
        "zip-prepended-data", 400, "not where its end record says",
        post(bytes_of(lambda d: b"#!/bin/sh\n" + d)),
    ),
    Row(
        "zip-data-after-end", 400, "data after its end record",
        post(bytes_of(lambda d: d + b"trailing")),
    ),
    Row(
        "zip-local-name-differs", 400, "names a different file",
        post(laid_out(set_on(0, local_name=b"evil_world/__init__.py"))),
    ),
    Row(
        "zip-local-size-differs", 400, "disagrees with the central directory",
        post(laid_out(set_on(0, local_uncompressed=1))),
    ),
    Row(
        "zip-local-compressed-size-differs", 400, "disagrees with the central directory",
        post(laid_out(set_on(0, local_compressed=1))),
    ),
    Row(
        "zip-local-crc-differs", 400, "disagrees with the central directory",
        post(laid_out(set_on(0, local_crc=0x12345678))),
    ),
    Row(
        "zip-entry-only-in-local-headers", 400, "unexplained bytes",
        post(laid_out(add_entry(ZipEntry(b"hello_world/evil.py", b"import os\n", central=False)))),
    ),
    Row(
        "zip-entry-only-in-central-directory", 400, "names a different file",
        post(laid_out(add_entry(ZipEntry(b"hello_world/evil.py", EVIL_PY, local=False), at=0))),
    ),
    Row(
        "zip-entry-count-lies", 400, "number of entries",
        post(laid_out(lambda e: None, extra_count=1)),
    ),
    Row(
        "zip-duplicate-name", 400, "appears more than once",
        post(laid_out(add_entry(ZipEntry(f"{DIST_INFO}/METADATA".encode(), b"Name: evil\n")))),
    ),
    Row(
        "zip-absolute-name", 400, "has an absolute path",
        post(laid_out(add_entry(ZipEntry(b"/etc/evil.py")))),
    ),
    Row(
        "zip-drive-name", 400, "has an absolute path",
        post(laid_out(add_entry(ZipEntry(b"C:/evil.py")))),
    ),
    Row(
        "zip-dotdot-name", 400, "has a '..' path segment",
        post(laid_out(add_entry(ZipEntry(b"hello_world/../../evil.py")))),
    ),
    Row(
        "zip-backslash-name", 400, "has a backslash",
        post(laid_out(add_entry(ZipEntry(b"..\\evil.py")))),
    ),
    Row(
        "zip-nul-in-name", 400, "control character",
        post(laid_out(add_entry(ZipEntry(b"ok.py\x00.exe")))),
    ),
    Row(
        "zip-empty-name", 400, "member with an empty name",
        post(laid_out(add_entry(ZipEntry(b"")))),
    ),
    Row("zip-in-zip", 400, "has no .dist-info directory", post(zip_in_zip)),
    Row("zip-compression-bomb", 400, "refused as a compression bomb", post(zip_bomb)),
    Row(
        "zip-bzip2-member", 400, "compression method 12",
        post(laid_out(set_on(0, method=zipfile.ZIP_BZIP2, raw=b"BZh9"))),
    ),
    Row("zip-encrypted-member", 400, "is encrypted", post(laid_out(set_on(0, flags=0x0801)))),
    Row(
        "zip-data-descriptor", 400, "uses a data descriptor",
        post(laid_out(set_on(0, flags=0x0808))),
    ),
    Row("zip-bad-crc", 400, "CRC", post(laid_out(set_on(0, crc=0x12345678)))),
    # wheels: layout
    Row(
        "wheel-without-dist-info", 400, "has no .dist-info directory",
        post(with_members(lambda m: [m.pop(k) for k in list(m) if DIST_INFO in k], record=False)),
    ),
    Row(
        "wheel-two-dist-info", 400, "more than one .dist-info directory",
        post(with_members(lambda m: m.update({"other-1.0.dist-info/METADATA": b""}), record=False)),
    ),
    Row(
        "wheel-dist-info-other-project", 400, f"but its filename calls for {DIST_INFO}",
        post(laid_out(dist_info_renamed)),
    ),
    Row(
        "wheel-without-METADATA", 400, f"lacks '{DIST_INFO}/METADATA'",
        post(with_members(lambda m: m.pop(f"{DIST_INFO}/METADATA"))),
    ),
    Row(
        "wheel-without-WHEEL", 400, f"lacks '{DIST_INFO}/WHEEL'",
        post(with_members(lambda m: m.pop(f"{DIST_INFO}/WHEEL"))),
    ),
    Row(
        "wheel-without-RECORD", 400, f"lacks '{DIST_INFO}/RECORD'",
        post(with_members(lambda m: m.pop(f"{DIST_INFO}/RECORD"), record=False)),
    ),
    # wheels: RECORD
    Row(
        "record-misses-a-file", 400, "does not list 'hello_world/evil.py'",
        post(with_members(lambda m: m.update({"hello_world/evil.py": EVIL_PY}), record=False)),
    ),
    Row(
        "record-wrong-hash", 400, "lists hash",
        post(with_members(lambda m: m.update({INIT: m[INIT][:-2] + b"#\n"}), record=False)),
    ),
    Row(
        "record-lists-absent-file", 400, "lists 'hello_world/gone.py'",
        post(record_edit(lambda r: r + f"hello_world/gone.py,sha256={_b64(b'')},0\n")),
    ),
    Row(
        "record-md5", 400, "with md5, which wheels may not use",
        post(record_edit(lambda r: r.replace(f"sha256={_b64(init_py())}", "md5=x"))),
    ),
    Row(
        "record-wrong-size", 400, "gives size 1 for 'hello_world/__init__.py'",
        post(record_edit(lambda r: r.replace(f",{len(init_py())}\n", ",1\n", 1))),
    ),
    # wheels: METADATA against the form and the filename
    Row(
        "metadata-other-name", 400, "METADATA names the project 'other-project'",
        post(metadata_saying(name="other-project")),
    ),
    Row(
        "metadata-other-version", 400, "METADATA gives version '2.0'",
        post(metadata_saying(version="2.0")),
    ),
    Row(
        "metadata-other-requires-dist", 400, "METADATA Requires-Dist differs",
        post(metadata_saying(requires_dist=["evil>=1"])),
    ),
    Row(
        "metadata-license-file-missing", 400, "License-File 'LICENSE'",
        post(metadata_saying(extra_metadata=[("License-File", "LICENSE")])),
    ),
    Row(
        "form-license-file-not-in-wheel", 400,
        f"License-File 'LICENSE' but the wheel has no '{DIST_INFO}/licenses/LICENSE'",
        post(wheel, overrides={"license_file": "LICENSE"}),
    ),
    # sdists
    Row(
        "form-license-file-not-in-sdist", 400,
        f"License-File 'LICENSE' but the sdist has no '{STEM}/LICENSE'",
        post(sdist, overrides={"license_file": "LICENSE"}),
    ),
    Row(
        "pkg-info-other-name", 400, "names the project 'other-project'",
        post(pkg_info_saying(name="other-project")),
    ),
    Row("pkg-info-other-version", 400, "gives version '2.0'", post(pkg_info_saying(version="2.0"))),
    Row(
        "sdist-not-gzip", 400, "not a valid gzip-compressed tar",
        post(bytes_of(lambda _: wheel().content, sdist)),
    ),
    Row(
        "sdist-plain-tar", 400, "not a valid gzip-compressed tar",
        post(bytes_of(lambda _: tar_bytes(sdist_members(sdist()), compress=False), sdist)),
    ),
    Row(
        "tar-dotdot", 400, "has a '..' path segment",
        post(sdist_plus(tar_member("../x", b"evil"))),
    ),
    Row(
        "tar-dotdot-inside", 400, "has a '..' path segment",
        post(sdist_plus(tar_member(f"{STEM}/../../x", b"evil"))),
    ),
    Row(
        "tar-absolute", 400, "has an absolute path",
        post(sdist_plus(tar_member("/etc/x", b"evil"))),
    ),
    Row(
        "tar-symlink-escapes", 400, "links to '../../etc/passwd', outside",
        post(sdist_plus(tar_symlink(f"{STEM}/passwd", "../../etc/passwd"))),
    ),
    Row(
        "tar-symlink-absolute", 400, "links to '/etc/passwd', outside",
        post(sdist_plus(tar_symlink(f"{STEM}/passwd", "/etc/passwd"))),
    ),
    Row(
        "tar-hardlink-escapes", 400, "links to '/etc/passwd', outside",
        post(sdist_plus(tar_hardlink(f"{STEM}/passwd", "/etc/passwd"))),
    ),
    Row(
        "tar-member-through-symlink", 400, f"is inside the symlink '{STEM}/out'",
        post(sdist_plus(tar_symlink(f"{STEM}/out", "/tmp"), tar_member(f"{STEM}/out/x", b"evil"))),
    ),
    Row(
        "tar-character-device", 400, "is a device file",
        post(gnu_sdist_plus(tar_member(f"{STEM}/tty", type=tarfile.CHRTYPE))),
    ),
    Row(
        "tar-block-device", 400, "is a device file",
        post(gnu_sdist_plus(tar_member(f"{STEM}/sda", type=tarfile.BLKTYPE))),
    ),
    Row(
        "tar-fifo", 400, "is a FIFO",
        post(gnu_sdist_plus(tar_member(f"{STEM}/pipe", type=tarfile.FIFOTYPE))),
    ),
    Row(
        "tar-gnu-sparse", 400, "is a sparse file",
        post(gnu_sdist_plus(tar_member(f"{STEM}/s", type=tarfile.GNUTYPE_SPARSE))),
    ),
    Row(
        "tar-pax-sparse", 400, "is a sparse file",
        post(sdist_plus(tar_member(f"{STEM}/s", b"1\n0\n4\n", pax_headers=PAX_SPARSE_1_0))),
    ),
    Row(
        "tar-empty-name", 400, "member with an empty name",
        post(gnu_sdist_plus(tar_member(""))),
    ),
    Row(
        "tar-duplicate-member", 400, "appears more than once",
        post(sdist_plus(tar_member(f"{STEM}/PKG-INFO", b"Name: evil\n"))),
    ),
    Row(
        "tar-second-top-level", 400, "outside the single top-level directory",
        post(sdist_plus(tar_member("evil-1.0/setup.py", b"import os\n"))),
    ),
    Row(
        "tar-without-pkg-info", 400, f"has no '{STEM}/PKG-INFO'",
        post(sdist_without(f"{STEM}/PKG-INFO")),
    ),
    Row(
        "tar-over-stream-budget", 400, "more than 1048576 bytes of tar stream",
        post(sdist_plus(tar_member(f"{STEM}/zeros.bin", bytes(2 * MiB)))),
        setup=patched(archives, "TAR_STREAM_BUDGET", MiB),
    ),
    Row(
        "tar-bomb-3-gib", 400, "more than 2147483648 bytes of tar stream", post(tar_bomb),
    ),
    Row(
        "sdist-license-file-missing", 400, f"the sdist has no '{STEM}/LICENSE'",
        post(lambda: build_sdist(NAME, VERSION, extra_metadata=[("License-File", "LICENSE")])),
    ),
    # duplicates
    Row(
        "same-filename-other-bytes", 400, "File already exists",
        post(lambda: build_wheel(NAME, VERSION, summary="Other bytes, same name.")),
        setup=uploaded(wheel),
    ),
    Row(
        "same-bytes-other-filename", 400, "File already exists: these bytes were uploaded as",
        post(renamed(f"{STEM}-py2.py3-none-any.whl")), setup=uploaded(wheel),
    ),
    Row(
        "filename-of-a-deleted-file", 400, "can never be reused",
        post(wheel), setup=registered_filename,
    ),
    Row(
        "second-sdist-for-a-release", 400, "only one sdist may be uploaded per release",
        post(lambda: build_sdist(NAME, "1.0.0")), setup=uploaded(sdist),
    ),
]
# fmt: on


# -- the test --------------------------------------------------------------------------------


async def state(services: Any, root: Path) -> dict[str, object]:
    """Everything an upload could change: row counts, projects, and files on disk."""
    async with services.db.read() as session:
        counts = {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model))
            for model in (File, Release, FilenameRegistry, OutboxEvent)
        }
        journal = await session.scalar(select(func.max(JournalEntry.id)))
        projects = sorted(await session.scalars(select(Project.normalized_name)))
    mail = services.settings.data_dir / "mail"
    files = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        # The e-mail of a setup's accepted upload lands when the outbox delivers it, at any
        # moment; a refused upload records no notification (the outbox count shows that).
        if path.is_file() and not path.name.startswith("cheeseshop.db") and mail not in path.parents
    )
    return {**counts, "journal": journal, "projects": projects, "files on disk": files}


def directory_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_rows_have_unique_ids() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_refused_with_a_reason_and_nothing_stored(
    row: Row,
    upload: Any,
    cheeseshop_client: Any,
    cheeseshop_services: Any,
    cheeseshop_app: Any,
    make_token: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    services = cheeseshop_services
    ctx = Ctx(upload, cheeseshop_client, services, make_token, cheeseshop_app.app, monkeypatch)
    if row.setup is not None:
        await row.setup(ctx)
    files_before = directory_files(services.settings.data_dir / "files")
    before = await state(services, tmp_path)

    response = await row.send(ctx)

    body = await response.get_data(as_text=True)
    assert response.status_code != 500, body
    assert response.status_code == row.status, body[:2000]
    message = body.strip()
    assert row.fragment in message, f"{row.fragment!r} not in {message[:2000]!r}"
    reason = response.headers.get(REASON_HEADER)
    assert reason == latin1_reason(message), "the reason phrase is the message, Latin-1-safe"
    assert row.fragment in reason, f"{row.fragment!r} not in the reason phrase {reason!r}"
    for name, prefix in row.headers.items():
        assert response.headers.get(name, "").startswith(prefix), name

    assert directory_files(services.settings.data_dir / "tmp") == [], "a temporary file was left"
    assert directory_files(services.settings.data_dir / "files") == files_before
    assert await state(services, tmp_path) == before


# -- not refused: markup that is rendered harmless -------------------------------------------


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        pytest.param("Hi <script>alert(1)</script>", "text/markdown", id="markdown-script"),
        pytest.param("[x](javascript:alert(1))", "text/markdown", id="markdown-javascript-link"),
        pytest.param(
            '<a href="java\tscript:alert(1)">x</a>', "text/markdown", id="markdown-obfuscated"
        ),
        pytest.param("<script>alert(1)</script>", "text/x-rst", id="rst-script-text"),
        pytest.param("`x <javascript:alert(1)>`_", "text/x-rst", id="rst-javascript-link"),
    ],
)
async def test_hostile_description_is_stored_harmless(
    upload: Any, cheeseshop_services: Any, text: str, content_type: str
) -> None:
    dist = wheel()
    fields = upload_fields(
        dist, overrides={"description": text, "description_content_type": content_type}
    )
    response = await upload(dist, fields=fields)
    assert response.status_code == 200, await response.get_data(as_text=True)
    async with cheeseshop_services.db.read() as session:
        release = await session.scalar(select(Release))
    assert release.description == text
    html = release.description_html.lower()
    assert "<script" not in html and "javascript:" not in html and "java\tscript" not in html
