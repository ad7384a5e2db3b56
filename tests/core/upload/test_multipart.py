"""Tests of cheeseshop.upload.multipart.receive_upload with an async generator body."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from cheeseshop.errors import APIError
from cheeseshop.testing.upload import encode_multipart
from cheeseshop.upload.multipart import UploadForm, boundary_of, receive_upload

BOUNDARY = "f00dcafe"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
FILE_BYTES = b"PK\x03\x04 not really a wheel\r\n--f00dcaf\r\n\x00\xff" * 3
FIELDS = [
    (":action", "file_upload"),
    ("name", "hello-world"),
    ("classifiers", "Typing :: Typed"),
    ("classifiers", "License :: OSI Approved"),
    ("summary", "Ünïcode, and a line\r\nbreak"),
    ("empty", ""),
]


def body_for(
    fields: Iterable[tuple[str, str]] = FIELDS,
    content: bytes = FILE_BYTES,
    *,
    file_content_type: str | None = "application/octet-stream",
) -> bytes:
    body, _ = encode_multipart(
        fields,
        [("content", "hello_world-1.0-py3-none-any.whl", content, file_content_type)],
        boundary=BOUNDARY,
    )
    return body


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def receive(
    directory: Path, *parts: bytes, limit: int = 10_000, content_type: str = CONTENT_TYPE
) -> UploadForm:
    return await receive_upload(
        chunks(*parts), content_type, directory=directory, max_file_size=limit
    )


def snapshot(form: UploadForm) -> tuple[object, ...]:
    assert form.file is not None
    return (
        form.fields,
        form.file.filename,
        form.file.size,
        form.file.path.read_bytes(),
        form.file.md5,
        form.file.sha256,
        form.file.blake2_256,
    )


async def test_fields_and_file(tmp_path: Path) -> None:
    form = await receive(tmp_path, body_for())
    assert form.fields == {
        ":action": ["file_upload"],
        "name": ["hello-world"],
        "classifiers": ["Typing :: Typed", "License :: OSI Approved"],
        "summary": ["Ünïcode, and a line\r\nbreak"],
        "empty": [""],
    }
    assert form.file is not None
    assert form.file.filename == "hello_world-1.0-py3-none-any.whl"
    assert form.file.path.parent == tmp_path
    assert form.file.path.read_bytes() == FILE_BYTES
    assert form.file.size == len(FILE_BYTES)
    form.cleanup()
    assert list(tmp_path.iterdir()) == []


async def test_digests(tmp_path: Path) -> None:
    content = random.Random(1).randbytes(5000)
    form = await receive(tmp_path, body_for(content=content))
    assert form.file is not None
    assert form.file.md5 == hashlib.md5(content).hexdigest()
    assert form.file.sha256 == hashlib.sha256(content).hexdigest()
    assert form.file.blake2_256 == hashlib.blake2b(content, digest_size=32).hexdigest()
    assert form.file.size == 5000
    form.cleanup()


async def test_every_chunk_boundary_gives_the_same_result(tmp_path: Path) -> None:
    body = body_for()
    reference_form = await receive(tmp_path, body)
    reference = snapshot(reference_form)
    assert reference[3] == FILE_BYTES
    reference_form.cleanup()
    for cut in range(len(body) + 1):
        form = await receive(tmp_path, body[:cut], body[cut:])
        assert snapshot(form) == reference, f"split at {cut}"
        form.cleanup()
    for first in range(0, len(body), 29):
        for second in range(first, len(body), 41):
            form = await receive(tmp_path, body[:first], body[first:second], body[second:])
            assert snapshot(form) == reference, f"split at {first} and {second}"
            form.cleanup()
    assert list(tmp_path.iterdir()) == []


async def test_one_byte_chunks_and_empty_chunks(tmp_path: Path) -> None:
    body = body_for()
    whole = snapshot(await receive(tmp_path, body))
    single = [body[i : i + 1] for i in range(len(body))]
    assert snapshot(await receive(tmp_path, *single)) == whole
    with_empties = [part for byte in single for part in (b"", byte)]
    assert snapshot(await receive(tmp_path, *with_empties)) == whole


async def test_file_part_without_content_type(tmp_path: Path) -> None:
    # uv sends the file part with no Content-Type header.
    form = await receive(tmp_path, body_for(file_content_type=None))
    assert form.file is not None
    assert form.file.path.read_bytes() == FILE_BYTES
    assert "content" not in form.fields


async def test_empty_file(tmp_path: Path) -> None:
    form = await receive(tmp_path, body_for(content=b""))
    assert form.file is not None
    assert form.file.size == 0
    assert form.file.sha256 == hashlib.sha256(b"").hexdigest()


async def test_no_file_part(tmp_path: Path) -> None:
    body, content_type = encode_multipart(FIELDS, boundary=BOUNDARY)
    form = await receive(tmp_path, body, content_type=content_type)
    assert form.file is None
    assert form.fields["name"] == ["hello-world"]
    assert list(tmp_path.iterdir()) == []


async def test_exactly_at_limit_accepted(tmp_path: Path) -> None:
    form = await receive(tmp_path, body_for(content=b"x" * 1000), limit=1000)
    assert form.file is not None and form.file.size == 1000


@pytest.mark.parametrize("chunk_size", [1, 100, 64 * 1024])
async def test_over_limit_413_leaves_no_temp_file(tmp_path: Path, chunk_size: int) -> None:
    body = body_for(content=b"x" * 1001)
    parts = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
    with pytest.raises(APIError) as info:
        await receive(tmp_path, *parts, limit=1000)
    assert info.value.status == 413
    assert "too large" in info.value.message
    assert list(tmp_path.iterdir()) == []


async def test_over_limit_stops_reading(tmp_path: Path) -> None:
    # The limit is enforced while streaming: the rest of the body is never consumed.
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        head = body_for(content=b"")
        yield head[: head.index(b"\r\n--" + BOUNDARY.encode() + b"--")]
        while True:
            consumed += 1
            yield b"x" * 1024

    with pytest.raises(APIError) as info:
        await receive_upload(endless(), CONTENT_TYPE, directory=tmp_path, max_file_size=10 * 1024)
    assert info.value.status == 413
    assert consumed < 20
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
async def test_truncated_body_400_leaves_no_temp_file(tmp_path: Path, keep: float) -> None:
    body = body_for(content=random.Random(2).randbytes(3000))
    with pytest.raises(APIError) as info:
        await receive(tmp_path, body[: int(len(body) * keep)])
    assert info.value.status == 400
    assert info.value.message
    assert list(tmp_path.iterdir()) == []


async def test_two_content_files_400(tmp_path: Path) -> None:
    body, content_type = encode_multipart(
        FIELDS,
        [("content", "a.whl", b"one", None), ("content", "b.whl", b"two", None)],
        boundary=BOUNDARY,
    )
    with pytest.raises(APIError) as info:
        await receive(tmp_path, body, content_type=content_type)
    assert info.value.status == 400
    assert "content" in info.value.message
    assert list(tmp_path.iterdir()) == []


async def test_field_not_utf8_400(tmp_path: Path) -> None:
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="summary"\r\n\r\n'.encode()
        + b"\xff\xfe"
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    with pytest.raises(APIError) as info:
        await receive(tmp_path, body)
    assert info.value.status == 400
    assert "summary" in info.value.message and "UTF-8" in info.value.message


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=",
    ],
)
async def test_bad_content_type_400(tmp_path: Path, content_type: str | None) -> None:
    with pytest.raises(APIError) as info:
        await receive_upload(chunks(body_for()), content_type, directory=tmp_path, max_file_size=10_000)
    assert info.value.status == 400
    assert "multipart/form-data" in info.value.message


def test_boundary_of() -> None:
    assert boundary_of('multipart/form-data; boundary="abc def"') == b"abc def"
    assert boundary_of("Multipart/Form-Data; boundary=xyz") == b"xyz"
    for bad in ("multipart/form-data; boundary=" + "a" * 201, "multipart/form-data; boundary=é"):
        with pytest.raises(APIError) as info:
            boundary_of(bad)
        assert info.value.status == 400


async def test_last_part_a_field_in_one_byte_chunks(tmp_path: Path) -> None:
    # pallets/werkzeug#3285: a chunk ending inside the closing delimiter added b"\r".
    for value in ["", "value"]:
        body, content_type = encode_multipart([("name", "x"), ("last", value)], boundary=BOUNDARY)
        single = [body[i : i + 1] for i in range(len(body))]
        form = await receive(tmp_path, *single, content_type=content_type)
        assert form.fields == {"name": ["x"], "last": [value]}
        assert form.file is None
