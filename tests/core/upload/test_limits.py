"""Upload size limits and the body timeout, enforced while the body streams.

Two levels: :func:`receive_upload` with async generator bodies (limits asked for when
the file part starts, the non-file budget, the deadline, cancellation), and ``POST
/legacy/`` through the test client (per-project file limits smaller and larger than the
index-wide one, the project total, a file sent before the ``name`` field, the declared
Content-Length). A refusal must leave no temporary file and store nothing.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from werkzeug.exceptions import RequestTimeout

from cheeseshop.accounts.service import authenticate_token
from cheeseshop.db.models import File, Project
from cheeseshop.errors import APIError
from cheeseshop.testing.dists import Dist, build_wheel
from cheeseshop.testing.upload import encode_multipart, upload_fields
from cheeseshop.upload.multipart import MAX_FORM_BYTES, SPOOL_BYTES, FileLimit, mib, receive_upload
from cheeseshop.upload.views import file_limits
from cheeseshop.web.reason import REASON_HEADER

pytestmark = pytest.mark.usefixtures("spool")  # every test in memory and on disk

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
FIELDS = [(":action", "file_upload"), ("name", "hello-world"), ("version", "1.0")]
FILENAME = "hello_world-1.0-py3-none-any.whl"
#: Bounds every test that waits on a body that never ends.
TEST_TIMEOUT = 10.0


# -- helpers ------------------------------------------------------------------------------


def multipart(parts: Sequence[tuple[str, str | bytes, str | None]]) -> bytes:
    """A body of (name, value, filename or None) parts, in the order given."""
    out = bytearray()
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value.encode() if isinstance(value, str) else value
        out += b"\r\n"
    return bytes(out) + f"--{BOUNDARY}--\r\n".encode()


def file_part_head(fields: Sequence[tuple[str, str]] = FIELDS) -> bytes:
    """The fields, then the headers of the file part: a body whose file data comes next."""
    body = multipart([*((k, v, None) for k, v in fields), ("content", b"", FILENAME)])
    return body[: body.index(b"\r\n--" + BOUNDARY.encode() + b"--")]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class Recorder:
    """A ``limit_for`` that records what it was given and returns fixed limits."""

    def __init__(self, *limits: FileLimit) -> None:
        self.limits = list(limits)
        self.calls: list[dict[str, tuple[str, ...]]] = []
        self.filenames: list[str] = []

    async def __call__(self, fields: Mapping[str, Sequence[str]], filename: str) -> list[FileLimit]:
        self.calls.append({key: tuple(values) for key, values in fields.items()})
        self.filenames.append(filename)
        return self.limits


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()


def noisy_wheel(version: str, size: int, name: str = "hello-world") -> Dist:
    """A wheel of more than ``size`` bytes (incompressible content)."""
    noise = random.Random(f"{name}{version}").randbytes(size)
    dist = build_wheel(
        name, version, files={"hello_world/__init__.py": b"", "hello_world/data.bin": noise}
    )
    assert len(dist.content) > size
    return dist


async def refused(response: Any, status: int, *fragments: str) -> str:
    """Assert a refusal: status, message in the body and (Latin-1) in the reason header."""
    body = await response.get_data(as_text=True)
    assert response.status_code == status, body
    message = body.strip()
    assert response.headers.get(REASON_HEADER) == " ".join(message.split())[:300]
    response.headers[REASON_HEADER].encode("latin-1")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def temporary_files(services: Any) -> list[Path]:
    root = services.settings.data_dir / "tmp"
    return sorted(root.iterdir()) if root.exists() else []


def stored_files(services: Any) -> list[Path]:
    root = services.settings.data_dir / "files"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def file_count(services: Any) -> int:
    async with services.db.read() as session:
        return await session.scalar(select(func.count()).select_from(File))


async def set_project(services: Any, normalized: str, **values: Any) -> None:
    async with services.db.write() as session:
        result = await session.execute(
            update(Project).where(Project.normalized_name == normalized).values(**values)
        )
        assert result.rowcount == 1


async def project_total(services: Any, normalized: str) -> int:
    async with services.db.read() as session:
        return await session.scalar(
            select(Project.total_size).where(Project.normalized_name == normalized)
        )


async def post(client: Any, token: str, body: bytes, **headers: str) -> Any:
    return await client.post(
        "/legacy/",
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "Authorization": basic(token), **headers},
    )


def twine_body(dist: Dist, *, name: str | None = None) -> bytes:
    """The body twine sends: the fields, then the file."""
    fields = upload_fields(dist, name=name)
    return multipart([*((k, v, None) for k, v in fields), ("content", dist.content, dist.filename)])


def file_first_body(dist: Dist) -> bytes:
    """The same form with the file part first, before ``name`` has arrived."""
    fields = upload_fields(dist)
    return multipart([("content", dist.content, dist.filename), *((k, v, None) for k, v in fields)])


def without_end(body: bytes) -> bytes:
    """``body`` cut before its closing delimiter: the file data is whole, the form is not."""
    return body[: body.rindex(b"\r\n--" + BOUNDARY.encode())]


# -- receive_upload: limits asked for when the file starts ---------------------------------


async def test_limit_for_gets_the_fields_before_the_file(tmp_path: Path) -> None:
    limit_for = Recorder(FileLimit(100, 413, "too big"))
    body = multipart(
        [*((k, v, None) for k, v in FIELDS), ("content", b"x" * 50, FILENAME), ("after", "1", None)]
    )
    form = await receive_upload(
        chunks(body), CONTENT_TYPE, directory=tmp_path, max_file_size=1, limit_for=limit_for
    )
    assert limit_for.calls == [
        {":action": ("file_upload",), "name": ("hello-world",), "version": ("1.0",)}
    ]
    assert limit_for.filenames == [FILENAME]
    assert form.file is not None and form.file.size == 50  # the limit given, not max_file_size
    assert form.fields["after"] == ["1"]
    form.cleanup()


async def test_limit_for_without_name_when_the_file_comes_first(tmp_path: Path) -> None:
    limit_for = Recorder(FileLimit(100, 413, "too big"))
    body = multipart([("content", b"x" * 50, FILENAME), *((k, v, None) for k, v in FIELDS)])
    form = await receive_upload(
        chunks(body), CONTENT_TYPE, directory=tmp_path, max_file_size=1, limit_for=limit_for
    )
    assert limit_for.calls == [{}]
    assert form.fields["name"] == ["hello-world"]
    form.cleanup()


async def test_no_limits_from_limit_for_means_max_file_size(tmp_path: Path) -> None:
    body = multipart([("content", b"x" * 101, FILENAME)])
    with pytest.raises(APIError) as info:
        await receive_upload(
            chunks(body), CONTENT_TYPE, directory=tmp_path, max_file_size=100, limit_for=Recorder()
        )
    assert info.value.status == 413
    assert (
        "File too large. Limit for this upload is 9.54e-05 MiB (100 bytes)." == info.value.message
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "size, status, message", [(100, None, None), (101, 400, "total"), (5001, 400, "total")]
)
async def test_smallest_limit_crossed_refuses_with_its_own_status(
    tmp_path: Path, size: int, status: int | None, message: str | None
) -> None:
    # In one chunk, 5001 bytes cross both: the smallest decides, as byte by byte.
    limit_for = Recorder(FileLimit(5000, 413, "file"), FileLimit(100, 400, "total"))
    body = multipart([("content", b"x" * size, FILENAME)])
    if status is None:
        form = await receive_upload(
            chunks(body), CONTENT_TYPE, directory=tmp_path, max_file_size=1, limit_for=limit_for
        )
        assert form.file is not None and form.file.size == size
        form.cleanup()
    else:
        with pytest.raises(APIError) as info:
            await receive_upload(
                chunks(body), CONTENT_TYPE, directory=tmp_path, max_file_size=1, limit_for=limit_for
            )
        assert (info.value.status, info.value.message) == (status, message)
    assert list(tmp_path.iterdir()) == []


async def test_negative_limit_refuses_even_an_empty_file(tmp_path: Path) -> None:
    # A project already over its total: refused before a temporary file is made.
    limit_for = Recorder(FileLimit(-5, 400, "Project size too large"))
    body = multipart([("content", b"", FILENAME)])
    with pytest.raises(APIError) as info:
        await receive_upload(
            chunks(body), CONTENT_TYPE, directory=tmp_path, max_file_size=1, limit_for=limit_for
        )
    assert info.value.status == 400
    assert list(tmp_path.iterdir()) == []


async def test_limit_from_limit_for_stops_reading(tmp_path: Path) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        yield file_part_head()
        for _ in range(100_000):
            consumed += 1
            yield b"x" * 1024

    limit_for = Recorder(FileLimit(8 * 1024, 413, "File too large"))
    with pytest.raises(APIError) as info:
        await receive_upload(
            endless(), CONTENT_TYPE, directory=tmp_path, max_file_size=10**9, limit_for=limit_for
        )
    assert info.value.status == 413
    assert consumed < 20
    assert list(tmp_path.iterdir()) == []


# -- receive_upload: what is not file data ---------------------------------------------------


@pytest.mark.parametrize("where", ["preamble", "part headers", "epilogue"])
async def test_endless_non_file_data_413_after_the_form_budget(tmp_path: Path, where: str) -> None:
    """Junk the decoder would buffer whole (no boundary, no blank line) is bounded."""
    consumed = 0
    chunk = 64 * 1024
    heads = {
        "preamble": b"",
        "part headers": f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=a\r\nX: ".encode(),
        "epilogue": multipart([("content", b"data", FILENAME)]),
    }

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        consumed = len(heads[where])
        yield heads[where]
        for _ in range(MAX_FORM_BYTES // chunk + 100):
            consumed += chunk
            yield b"j" * chunk

    with pytest.raises(APIError) as info:
        await receive_upload(endless(), CONTENT_TYPE, directory=tmp_path, max_file_size=10**6)
    assert info.value.status == 413
    assert mib(MAX_FORM_BYTES) in info.value.message
    assert MAX_FORM_BYTES < consumed <= MAX_FORM_BYTES + 2 * chunk
    assert list(tmp_path.iterdir()) == []


async def test_large_file_does_not_count_against_the_form_budget(tmp_path: Path) -> None:
    size = MAX_FORM_BYTES + 1024 * 1024
    body = multipart([("content", b"f" * size, FILENAME)])
    parts = [body[i : i + 256 * 1024] for i in range(0, len(body), 256 * 1024)]
    form = await receive_upload(
        chunks(*parts), CONTENT_TYPE, directory=tmp_path, max_file_size=size
    )
    assert form.file is not None and form.file.size == size
    form.cleanup()


# -- receive_upload: the deadline -----------------------------------------------------------


async def test_stalled_body_408_leaves_no_temp_file(tmp_path: Path) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield file_part_head()
        yield b"x" * 1000
        await asyncio.sleep(3600)
        yield b""  # pragma: no cover

    async with asyncio.timeout(TEST_TIMEOUT):
        with pytest.raises(APIError) as info:
            await receive_upload(
                stalls(), CONTENT_TYPE, directory=tmp_path, max_file_size=10**6, timeout=0.3
            )
    assert info.value.status == 408
    assert "did not arrive within 0.3 seconds" in info.value.message
    assert list(tmp_path.iterdir()) == []


async def test_trickling_body_408_at_the_deadline(tmp_path: Path) -> None:
    """The deadline is for the whole body: a byte now and then does not extend it."""
    sent = 0

    async def trickles() -> AsyncIterator[bytes]:
        nonlocal sent
        yield file_part_head()
        for _ in range(1000):
            await asyncio.sleep(0.02)
            sent += 1
            yield b"x"

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(TEST_TIMEOUT):
        with pytest.raises(APIError) as info:
            await receive_upload(
                trickles(), CONTENT_TYPE, directory=tmp_path, max_file_size=10**6, timeout=0.3
            )
    assert info.value.status == 408
    assert 0.3 <= loop.time() - started < 2
    assert 3 < sent < 100
    assert list(tmp_path.iterdir()) == []


async def test_cancelled_while_receiving_leaves_no_temp_file(tmp_path: Path) -> None:
    """The client went away: Quart cancels the view; the temporary file goes too."""
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield file_part_head()
        yield b"x" * (SPOOL_BYTES + 1000)  # on disk by now
        started.set()
        await asyncio.sleep(3600)
        yield b""  # pragma: no cover

    task = asyncio.create_task(
        receive_upload(stalls(), CONTENT_TYPE, directory=tmp_path, max_file_size=10**6)
    )
    async with asyncio.timeout(TEST_TIMEOUT):
        await started.wait()
        assert len(list(tmp_path.iterdir())) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "cheeseshop_settings_overrides", [{"upload_timeout_seconds": 7.5}], ids=["7.5s"]
)
async def test_body_timeout_is_the_upload_timeout_setting(
    cheeseshop_app, cheeseshop_settings_overrides
):
    assert cheeseshop_app.app.config["BODY_TIMEOUT"] == 7.5


async def test_quart_request_timeout_rendered_as_text_with_reason(cheeseshop_app):
    """Quart's own body timeout (``await request.body``, forms) is a 408 like ours."""
    app = cheeseshop_app.app
    async with app.test_request_context("/legacy/", method="POST"):
        response = await app.handle_user_exception(RequestTimeout())
    body = await response.get_data(as_text=True)
    assert response.status_code == 408
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "finish the request within the specified time" in body
    assert response.headers[REASON_HEADER] == " ".join(body.split())


# -- file_limits: which limits an upload gets -------------------------------------------------


async def _principal(services: Any, token: str) -> Any:
    async with services.db.read() as session:
        return await authenticate_token(session, token, prefix=services.settings.token_prefix)


@pytest.mark.parametrize(
    "cheeseshop_settings_overrides",
    [{"max_file_size": 3 * 2**20, "max_project_size": 2**30}],
    ids=["3MiB-1GiB"],
)
async def test_file_limits(upload, make_token, cheeseshop_services, cheeseshop_settings_overrides):
    services = cheeseshop_services
    assert (await upload(build_wheel("hello-world", "1.0"))).status_code == 200
    assert (await upload(build_wheel("other", "1.0"))).status_code == 200
    used = await project_total(services, "hello-world")
    await set_project(services, "hello-world", upload_limit=5 * 2**20, total_size_limit=2 * 2**30)
    alice = await _principal(services, await make_token("alice"))
    scoped = await _principal(services, await make_token("alice", projects=["other"]))
    bob = await _principal(services, await make_token("bob"))
    default = [(3 * 2**20, 413, "File too large. Limit for this upload is 3 MiB.")]

    def summary(limits: list[FileLimit]) -> list[tuple[int, int, str]]:
        return [(limit.max_bytes, limit.status, limit.message) for limit in limits]

    # No name yet (file first), an outsider, a token for other projects: index-wide limit only.
    assert summary(await file_limits(services, alice, {})) == default
    assert summary(await file_limits(services, alice, {"name": ("  ",)})) == default
    assert summary(await file_limits(services, bob, {"name": ("Hello_World",)})) == default
    assert summary(await file_limits(services, scoped, {"name": ("hello-world",)})) == default
    # Its uploader: the project's own limits, by normalized name.
    own = await file_limits(services, alice, {"name": ("Hello.World", "ignored")})
    assert [(limit.max_bytes, limit.status) for limit in own] == [
        (5 * 2**20, 413),
        (2 * 2**30 - used, 400),
    ]
    assert own[0].message.startswith("File too large. Limit for project 'hello-world' is 5 MiB")
    assert own[1].message.startswith(
        "Project size too large: the limit for project 'hello-world' is 2 GiB in total."
    )
    # A new project: the index-wide limits, nothing used.
    new = await file_limits(services, bob, {"name": ("Brand-New",)})
    assert [(limit.max_bytes, limit.status) for limit in new] == [(3 * 2**20, 413), (2**30, 400)]
    assert "'Brand-New'" in new[0].message and "3 MiB" in new[0].message


# -- POST /legacy/: per-project file limits ---------------------------------------------------


async def test_project_limit_smaller_than_the_global_one_413(
    upload, make_token, cheeseshop_client, cheeseshop_services
):
    services = cheeseshop_services
    assert (await upload(build_wheel("hello-world", "1.0"))).status_code == 200
    await set_project(services, "hello-world", upload_limit=3000)
    before = stored_files(services)
    big = noisy_wheel("1.1", 6000)
    token = await make_token()
    await refused(
        await post(cheeseshop_client, token, twine_body(big)),
        413,
        "File too large",
        "'hello-world'",
        "0.00286 MiB (3000 bytes)",
    )
    # Refused while streaming: a body cut after the file data gets the same 413.
    await refused(
        await post(cheeseshop_client, token, without_end(twine_body(big))), 413, "'hello-world'"
    )
    assert temporary_files(services) == []
    assert stored_files(services) == before
    assert await file_count(services) == 1
    # Under the project's limit: accepted.
    assert (await upload(noisy_wheel("1.2", 1000))).status_code == 200


@pytest.mark.parametrize(
    "cheeseshop_settings_overrides", [{"max_file_size": 3000}], ids=["limit-3000"]
)
async def test_project_limit_larger_than_the_global_one_accepted(
    upload, make_token, cheeseshop_client, cheeseshop_services, cheeseshop_settings_overrides
):
    services = cheeseshop_services
    assert (await upload(build_wheel("hello-world", "1.0"))).status_code == 200
    await set_project(services, "hello-world", upload_limit=20_000)
    response = await upload(noisy_wheel("1.1", 6000))
    assert response.status_code == 200, await response.get_data(as_text=True)
    # Another project of the same uploader keeps the index-wide limit.
    other = noisy_wheel("1.0", 6000, name="other-project")
    await refused(
        await post(cheeseshop_client, await make_token(), twine_body(other)),
        413,
        "Limit for project 'other-project' is 0.00286 MiB (3000 bytes)",
    )
    assert temporary_files(services) == []
    assert await file_count(services) == 2


@pytest.mark.parametrize(
    "cheeseshop_settings_overrides", [{"max_file_size": 3000}], ids=["limit-3000"]
)
async def test_project_limit_is_for_its_uploaders_only(
    upload, make_token, cheeseshop_client, cheeseshop_services, cheeseshop_settings_overrides
):
    services = cheeseshop_services
    assert (await upload(build_wheel("hello-world", "1.0"))).status_code == 200
    await set_project(services, "hello-world", upload_limit=20_000)
    # bob has no role: the file is refused at the index-wide limit, before the 403 after reading.
    message = await refused(
        await post(
            cheeseshop_client, await make_token("bob"), twine_body(noisy_wheel("1.1", 6000))
        ),
        413,
        "Limit for this upload is",
    )
    assert "20000" not in message and "hello-world" not in message
    assert temporary_files(services) == []
    assert await file_count(services) == 1


@pytest.mark.parametrize(
    "cheeseshop_settings_overrides", [{"max_file_size": 3000}], ids=["limit-3000"]
)
async def test_file_before_name_gets_the_global_limit(
    upload, make_token, cheeseshop_client, cheeseshop_services, cheeseshop_settings_overrides
):
    """Documented: the project is not known yet, so its own (larger) limit cannot apply."""
    services = cheeseshop_services
    assert (await upload(build_wheel("hello-world", "1.0"))).status_code == 200
    await set_project(services, "hello-world", upload_limit=20_000)
    token = await make_token()
    await refused(
        await post(cheeseshop_client, token, file_first_body(noisy_wheel("1.1", 6000))),
        413,
        "Limit for this upload is 0.00286 MiB (3000 bytes)",
    )
    assert temporary_files(services) == []
    # A file under the global limit is accepted in that order; in twine's order, the larger one.
    response = await post(
        cheeseshop_client, token, file_first_body(build_wheel("hello-world", "1.2"))
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    response = await post(cheeseshop_client, token, twine_body(noisy_wheel("1.1", 6000)))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert await file_count(services) == 3


# -- POST /legacy/: the project's total -------------------------------------------------------


async def test_project_total_refused_while_streaming(
    upload, make_token, cheeseshop_client, cheeseshop_services
):
    services = cheeseshop_services
    assert (await upload(build_wheel("hello-world", "1.0"))).status_code == 200
    used = await project_total(services, "hello-world")
    big = noisy_wheel("1.1", 2000)
    # 100 bytes short: the last few bytes of a cut body are held back as a possible boundary.
    await set_project(services, "hello-world", total_size_limit=used + len(big.content) - 100)
    token = await make_token()
    streaming = await refused(
        await post(cheeseshop_client, token, without_end(twine_body(big))),
        400,
        "Project size too large: the limit for project 'hello-world' is",
        "Delete old files or ask for a higher limit.",
    )
    complete = await refused(await post(cheeseshop_client, token, twine_body(big)), 400)
    assert complete == streaming
    assert temporary_files(services) == []
    assert await file_count(services) == 1
    # Exactly the limit is allowed, as at commit.
    await set_project(services, "hello-world", total_size_limit=used + len(big.content))
    response = await post(cheeseshop_client, token, twine_body(big))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert await project_total(services, "hello-world") == used + len(big.content)


@pytest.mark.parametrize(
    "cheeseshop_settings_overrides", [{"max_project_size": 1500}], ids=["total-1500"]
)
async def test_new_project_over_max_project_size_refused(
    make_token, cheeseshop_client, cheeseshop_services, cheeseshop_settings_overrides
):
    body = without_end(twine_body(noisy_wheel("1.0", 2000)))
    await refused(
        await post(cheeseshop_client, await make_token(), body),
        400,
        "Project size too large",
        "'hello-world'",
    )
    assert temporary_files(cheeseshop_services) == []


# -- POST /legacy/: the declared Content-Length -----------------------------------------------


@pytest.mark.parametrize(
    "cheeseshop_settings_overrides", [{"max_file_size": 100_000}], ids=["limit-100k"]
)
async def test_declared_length_against_the_largest_limit_of_the_uploader(
    upload, make_token, cheeseshop_client, cheeseshop_services, cheeseshop_settings_overrides
):
    services = cheeseshop_services
    assert (await upload(build_wheel("hello-world", "1.0"))).status_code == 200
    declared = str(100_000 + MAX_FORM_BYTES + 1)
    # Over the index-wide limit plus the form: refused before reading, naming the limit.
    await refused(
        await post(
            cheeseshop_client, await make_token("bob"), b"x", **{"Content-Length": declared}
        ),
        413,
        "Upload too large",
        "0.0954 MiB (100000 bytes) per file",
    )
    # alice's project allows 64 MiB, so the body is read (and here found malformed).
    await set_project(services, "hello-world", upload_limit=64 * 2**20)
    alice = await make_token("alice")
    await refused(
        await post(cheeseshop_client, alice, b"x", **{"Content-Length": declared}), 400, "Malformed"
    )
    await refused(
        await post(
            cheeseshop_client,
            alice,
            b"x",
            **{"Content-Length": str(64 * 2**20 + MAX_FORM_BYTES + 1)},
        ),
        413,
        "64 MiB per file",
    )
    # A token scoped to another project does not get that project's limit.
    assert (await upload(build_wheel("other", "1.0"))).status_code == 200
    scoped = await make_token("alice", projects=["other"])
    await refused(await post(cheeseshop_client, scoped, b"x", **{"Content-Length": declared}), 413)
    assert temporary_files(services) == []


async def test_twine_form_with_many_fields_fits_the_form_budget(upload, cheeseshop_services):
    """1000 parts of twine-sized headers are within the framing allowance."""
    dist = build_wheel("hello-world", "1.0")
    fields = upload_fields(dist) + [("classifiers", "Programming Language :: Python :: 3")] * 900
    body, _ = encode_multipart(fields, [("content", dist.filename, dist.content, None)])
    assert len(body) - len(dist.content) < MAX_FORM_BYTES
    response = await upload(dist, fields=fields)
    assert response.status_code == 200, await response.get_data(as_text=True)


# -- POST /legacy/: a small body with its length declared, received whole before its token ---


def declared(body: bytes) -> dict[str, str]:
    """The header every client sends: a body this small is then received whole, in
    memory, and its token read in the upload's one trip to an upload thread."""
    return {"Content-Length": str(len(body))}


async def test_a_small_body_is_held_to_the_projects_limits_once_received(
    upload, make_token, cheeseshop_client, cheeseshop_services
):
    services = cheeseshop_services
    assert (await upload(build_wheel("hello-world", "1.0"))).status_code == 200
    used = await project_total(services, "hello-world")
    big = noisy_wheel("1.1", 6000)
    token = await make_token()
    before = stored_files(services)
    # The same answer as while streaming (no length declared), for the file's limit...
    await set_project(services, "hello-world", upload_limit=3000)
    body = twine_body(big)
    whole = await refused(await post(cheeseshop_client, token, body, **declared(body)), 413, "'hello-world'")
    assert whole == await refused(await post(cheeseshop_client, token, body), 413)
    # ...and for the project's total.
    await set_project(services, "hello-world", upload_limit=None, total_size_limit=used + 100)
    whole = await refused(
        await post(cheeseshop_client, token, body, **declared(body)), 400, "Project size too large"
    )
    assert whole == await refused(await post(cheeseshop_client, token, body), 400)
    assert temporary_files(services) == [] and stored_files(services) == before
    assert await file_count(services) == 1


async def test_a_small_body_with_a_bad_token_is_refused_and_nothing_is_written(
    make_token, cheeseshop_client, cheeseshop_services
):
    body = twine_body(noisy_wheel("1.0", 2000))
    token = await make_token()
    await refused(await post(cheeseshop_client, token + "x", body, **declared(body)), 403, "Invalid API Token")
    assert temporary_files(cheeseshop_services) == [] and stored_files(cheeseshop_services) == []
    response = await post(cheeseshop_client, token, body, **declared(body))
    assert response.status_code == 200, await response.get_data(as_text=True)


async def test_a_body_too_large_to_hold_whole_has_its_token_read_when_its_file_starts(
    make_token, cheeseshop_client, cheeseshop_services, monkeypatch
):
    # Past SPOOL_BYTES the file may be written to disk: the token is read first, as the
    # file part starts, even when the length is declared.
    import cheeseshop.upload.views as views

    asked: list[str] = []
    real = views._Uploader.file_limits

    async def file_limits(self: Any, fields: Any, filename: str) -> Any:
        asked.append(filename)
        return await real(self, fields, filename)

    monkeypatch.setattr(views._Uploader, "file_limits", file_limits)
    token = await make_token()
    small, large = noisy_wheel("1.0", 2000), noisy_wheel("1.1", SPOOL_BYTES + 1000)
    for dist in (small, large):
        body = twine_body(dist)
        response = await post(cheeseshop_client, token, body, **declared(body))
        assert response.status_code == 200, await response.get_data(as_text=True)
    assert asked == [large.filename]
    await refused(
        await post(cheeseshop_client, token + "x", twine_body(large), **declared(twine_body(large))), 403
    )
    assert temporary_files(cheeseshop_services) == []
