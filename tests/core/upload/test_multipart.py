"""Tests of cheeseshop.upload.multipart.receive_upload with an async generator body."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from werkzeug.http import parse_options_header

from cheeseshop.errors import APIError
from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.upload import encode_multipart, upload_fields
from cheeseshop.upload import multipart
from cheeseshop.upload.multipart import ReceivedFile, UploadForm, boundary_of, receive_upload

pytestmark = pytest.mark.usefixtures("spool")  # every test in memory and on disk

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


def read_back(file: ReceivedFile) -> bytes:
    with file.open() as handle:
        return handle.read()


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
        read_back(form.file),
        form.file.md5,
        form.file.sha256,
        form.file.blake2_256,
    )


async def test_fields_and_file(tmp_path: Path, spool: str) -> None:
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
    if spool == "disk":
        assert form.file.path is not None and form.file.path.parent == tmp_path
        assert form.file.data is None
    else:
        assert form.file.path is None and list(tmp_path.iterdir()) == []
        assert form.file.data == FILE_BYTES
    assert read_back(form.file) == FILE_BYTES
    assert form.file.size == len(FILE_BYTES)
    form.cleanup()
    assert list(tmp_path.iterdir()) == []


async def test_a_file_goes_to_disk_once_it_outgrows_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multipart, "SPOOL_BYTES", 100)
    content = random.Random(2).randbytes(250)
    body = body_for(content=content)
    # A byte at a time: the file crosses the spool size in the middle of the data.
    form = await receive(tmp_path, *(body[i : i + 1] for i in range(len(body))))
    assert form.file is not None and form.file.data is None
    assert form.file.path is not None and form.file.path.read_bytes() == content
    assert form.file.sha256 == hashlib.sha256(content).hexdigest()
    form.cleanup()
    assert list(tmp_path.iterdir()) == []


async def test_spill_writes_a_file_in_memory_to_the_upload_directory(tmp_path: Path) -> None:
    form = await receive(tmp_path, body_for())
    assert form.file is not None
    path = form.file.spill()
    assert path.parent == tmp_path and path.read_bytes() == FILE_BYTES
    assert form.file.spill() == path  # once
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
    assert read_back(form.file) == FILE_BYTES
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
    # pallets/werkzeug#3285: werkzeug's decoder added b"\r" when a chunk ended inside the
    # closing delimiter; python-multipart needs no workaround, and this shows it.
    for value in ["", "value"]:
        body, content_type = encode_multipart([("name", "x"), ("last", value)], boundary=BOUNDARY)
        single = [body[i : i + 1] for i in range(len(body))]
        form = await receive(tmp_path, *single, content_type=content_type)
        assert form.fields == {"name": ["x"], "last": [value]}
        assert form.file is None


# -- a twine-shaped body, however it is chunked -----------------------------------------------


def twine_body() -> tuple[bytes, str, dict[str, list[str]], bytes]:
    """A wheel's upload as twine sends it: (body, Content-Type, fields, file bytes)."""
    dist = build_wheel("hello-world", "1.0")
    fields = upload_fields(dist)
    body, content_type = encode_multipart(
        fields,
        [("content", dist.filename, dist.content, "application/octet-stream")],
        boundary=random.Random(5).randbytes(16).hex(),  # random, as twine, httpx and uv make
    )
    expected: dict[str, list[str]] = {}
    for key, value in fields:
        expected.setdefault(key, []).append(value)
    return body, content_type, expected, dist.content


def assert_is_twine_upload(form: UploadForm, fields: dict[str, list[str]], content: bytes) -> None:
    assert form.fields == fields
    assert form.file is not None
    assert form.file.filename == "hello_world-1.0-py3-none-any.whl"
    assert read_back(form.file) == content
    assert form.file.size == len(content)
    assert form.file.md5 == hashlib.md5(content).hexdigest()
    assert form.file.sha256 == hashlib.sha256(content).hexdigest()
    assert form.file.blake2_256 == hashlib.blake2b(content, digest_size=32).hexdigest()


async def test_twine_body_split_at_every_offset(tmp_path: Path) -> None:
    """Whatever the chunking, the same fields, file bytes and digests: none is lost or added.

    Compared with what was sent, not with another parse, so a parser that is wrong the
    same way for every split still fails.
    """
    body, content_type, fields, content = twine_body()
    for cut in range(len(body) + 1):
        form = await receive(tmp_path, body[:cut], body[cut:], content_type=content_type)
        assert_is_twine_upload(form, fields, content)
        form.cleanup()
    rng = random.Random(3)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(body)), 6))
        pieces = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)])]
        form = await receive(tmp_path, *pieces, content_type=content_type)
        assert_is_twine_upload(form, fields, content)
        form.cleanup()
    for size in range(1, 80):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        form = await receive(tmp_path, *pieces, content_type=content_type)
        assert_is_twine_upload(form, fields, content)
        form.cleanup()
    assert list(tmp_path.iterdir()) == []


async def test_a_whole_body_in_pieces_is_split_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``whole``: however the body arrived, it is joined and takes the fast way, and gives
    the same form; python-multipart is never called."""
    body, content_type, fields, content = twine_body()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("python-multipart parsed a whole body")

    monkeypatch.setattr(multipart.MultipartParser, "write", refuse)
    rng = random.Random(7)
    for pieces in ([body], [body[:100], body[100:]], [body[i : i + 7] for i in range(0, len(body), 7)]):
        form = await receive_upload(
            chunks(*pieces), content_type, directory=tmp_path, max_file_size=10_000, whole=True
        )
        assert_is_twine_upload(form, fields, content)
        form.cleanup()
    cut = rng.randrange(len(body))
    with pytest.raises(AssertionError, match="python-multipart"):  # not whole: the parser
        await receive(tmp_path, body[:cut], body[cut:], content_type=content_type)


async def test_preamble_and_epilogue_ignored_at_every_offset(tmp_path: Path) -> None:
    body, content_type, fields, content = twine_body()
    boundary = content_type.partition("boundary=")[2]
    # The preamble mentions the boundary without being a delimiter line's start.
    framed = f"This is a preamble; -{boundary}- is\r\n".encode() + body + b"\r\nan epilogue\r\n"
    for cut in range(len(framed) + 1):
        form = await receive(tmp_path, framed[:cut], framed[cut:], content_type=content_type)
        assert_is_twine_upload(form, fields, content)
        form.cleanup()
    assert list(tmp_path.iterdir()) == []


# -- parts as clients may write them -----------------------------------------------------------


def one_part(disposition: str, value: bytes = b"v", *headers: str) -> bytes:
    head = "".join(f"{header}\r\n" for header in (f"Content-Disposition: {disposition}", *headers))
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + value + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(
    "disposition",
    [
        'form-data; name="summary"',
        "form-data; name=summary",
        'form-data;name="summary"',
        'FORM-DATA; NAME="summary"',
        'form-data; name="a;b=c"',
        'form-data; name="say \\"hi\\""',
        'form-data; name="say %22hi%22"',
        'form-data; name="ünïcode"',
        'form-data; name=""',
        "form-data; name*=UTF-8''%C3%A9t%C3%A9",
        'form-data; name="summary" ',
        'form-data; name="summary"; filename="notes.txt"',
        'form-data; name="content"; filename=""',
        'form-data; name="content"; filename="hello_world-1.0-py3-none-any.whl"',
        'form-data; name="content"; filename="C:\\\\wheels\\\\a.whl"',
        "form-data; name=\"content\"; filename*=UTF-8''h%C3%A9llo-1.0.tar.gz",
        'form-data; filename="nameless.whl"',
        "attachment",
    ],
)
async def test_names_and_filenames_read_as_werkzeug_reads_them(
    tmp_path: Path, disposition: str
) -> None:
    """The part's name and filename are what werkzeug's parser makes of the header."""
    _, options = parse_options_header(disposition)
    name, filename = options.get("name"), options.get("filename")
    form = await receive(tmp_path, one_part(disposition))
    if name == "content" and filename is not None:
        assert form.fields == {}
        assert form.file is not None and form.file.filename == filename
        assert read_back(form.file) == b"v"
        form.cleanup()
    elif name is None:
        assert form.fields == {} and form.file is None  # a part without a name is dropped
    else:
        assert form.fields == {name: ["v"]} and form.file is None
    assert list(tmp_path.iterdir()) == []


async def test_many_and_long_part_headers_accepted(tmp_path: Path) -> None:
    # python-multipart's own limits (8 headers of 4 KiB a part) are lifted: the form
    # budget bounds headers, as it did with werkzeug.
    extra = [f"X-Header-{i}: {i}" for i in range(20)] + ["X-Long: " + "y" * 20_000]
    form = await receive(tmp_path, one_part('form-data; name="summary"', b"v", *extra))
    assert form.fields == {"summary": ["v"]}


async def test_max_parts(tmp_path: Path) -> None:
    fields = [("classifiers", "x")] * 999
    body, content_type = encode_multipart(
        fields, [("content", "a.whl", b"data", None)], boundary=BOUNDARY
    )
    form = await receive(tmp_path, body, content_type=content_type)
    assert len(form.fields["classifiers"]) == 999 and form.file is not None
    form.cleanup()
    body, content_type = encode_multipart(
        [*fields, ("one", "more")], [("content", "a.whl", b"data", None)], boundary=BOUNDARY
    )
    with pytest.raises(APIError) as info:
        await receive(tmp_path, body, content_type=content_type)
    assert info.value.status == 413
    assert info.value.message == (
        "The form has more than 1000 parts; send each field once per value."
    )
    assert list(tmp_path.iterdir()) == []


# -- malformed and incomplete bodies: a 400 that says so, never a 500 --------------------------


@pytest.mark.parametrize("cut", [1, 100, 2000, -200, -(len(BOUNDARY) + 4)])
async def test_ended_inside_the_file_400(tmp_path: Path, cut: int) -> None:
    body = body_for(content=random.Random(4).randbytes(3000))
    head = body.index(b"\r\n\r\n", body.index(b'filename="')) + 4  # where the file starts
    end = head + cut if cut > 0 else len(body) + cut
    with pytest.raises(APIError) as info:
        await receive(tmp_path, body[:end])
    assert info.value.status == 400
    assert "Malformed multipart/form-data body" in info.value.message
    assert "The upload ended before the file was complete." in info.value.message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(f"--{BOUNDARY}\r\n".encode(), id="after-the-first-delimiter"),
        pytest.param(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"'.encode(), id="in-headers"
        ),
        pytest.param(one_part('form-data; name="a"')[:-20], id="in-a-field"),
        pytest.param(body_for()[:-3], id="in-the-closing-delimiter"),
    ],
)
async def test_ended_before_the_closing_boundary_400(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(APIError) as info:
        await receive(tmp_path, body)
    assert info.value.status == 400
    assert info.value.message.startswith("Malformed multipart/form-data body")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "body, fragment",
    [
        pytest.param(
            f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nv\r\n--{BOUNDARY}--\r\n".encode(),
            "no Content-Disposition header",
            id="no-content-disposition",
        ),
        pytest.param(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="\xe9"\r\n\r\nv'.encode(
                "latin-1"
            ),
            "Content-Disposition header is not valid UTF-8",
            id="content-disposition-latin-1",
        ),
        pytest.param(
            f"--{BOUNDARY}\r\nContent-Disposition form-data\r\n\r\nv\r\n--{BOUNDARY}--".encode(),
            "Malformed multipart/form-data body",
            id="header-without-colon",
        ),
        pytest.param(
            f'--{BOUNDARY}junk\r\nContent-Disposition: form-data; name="a"\r\n\r\nv'.encode(),
            "Malformed multipart/form-data body",
            id="junk-after-the-delimiter",
        ),
        pytest.param(
            body_for().replace(b"\r\n", b"\n"),
            "Malformed multipart/form-data body",
            id="bare-line-feeds",
        ),
    ],
)
async def test_malformed_body_400(tmp_path: Path, body: bytes, fragment: str) -> None:
    for pieces in ([body], [body[i : i + 1] for i in range(len(body))]):
        with pytest.raises(APIError) as info:
            await receive(tmp_path, *pieces)
        assert info.value.status == 400
        assert fragment in info.value.message
        assert list(tmp_path.iterdir()) == []


async def test_limit_crossed_before_a_malformed_spot_is_the_answer(tmp_path: Path) -> None:
    # In one chunk: a file over the limit, then garbage. Read byte by byte, the limit
    # is crossed first, so that is the answer however the body is chunked.
    body = body_for(content=b"x" * 2000)
    garbage = body[: body.rindex(b"\r\n--")] + f"\r\n--{BOUNDARY}junk".encode()
    for pieces in ([garbage], [garbage[i : i + 700] for i in range(0, len(garbage), 700)]):
        with pytest.raises(APIError) as info:
            await receive(tmp_path, *pieces, limit=1000)
        assert info.value.status == 413
        assert list(tmp_path.iterdir()) == []


# -- a body that arrives whole: parsed without python-multipart, to the same events ----------


def _events(stream: multipart._PartStream, *pieces: bytes) -> list[object]:
    """Every event of ``pieces`` fed in order, a part's data joined: comparable across parses."""
    out: list[object] = []
    for piece in pieces:
        events, error = stream.feed(piece)
        for event in events:
            if isinstance(event, memoryview):
                if out and isinstance(out[-1], bytes):
                    out[-1] += bytes(event)
                else:
                    out.append(bytes(event))
            elif isinstance(event, multipart._PartStart):
                out.append(("start", event.headers))
            else:
                out.append("end")
        if error is not None:
            out.append(("error", error.status))
    out.append(("complete", stream.complete))
    return out


def _bodies() -> list[tuple[bytes, bytes]]:
    """(boundary, body): the ones every client sends, and ones made to trip a parser."""
    boundary = BOUNDARY.encode()
    rng = random.Random(7)
    bodies = [(boundary, body_for()), (boundary, body_for(content=b"")), (boundary, body_for([]))]
    body, content_type, _, _ = twine_body()
    bodies.append((boundary_of(content_type), body))
    tricky = [
        b"", b"\r\n", b"--", b"\r\n--" + boundary, b"\r\n--" + boundary + b"x", b"\r\n\r\n",
        b"--" + boundary + b"--", b"a: b\r\n\r\n", "Ünï".encode(), b"\r",
    ]
    for _ in range(300):
        fields = [
            (rng.choice(["name", "summary", "a b", "x"]), rng.choice(["", "v", "\r\n", "  padded "]))
            for _ in range(rng.randrange(4))
        ]
        content = b"".join(rng.choice(tricky) for _ in range(rng.randrange(6)))
        body = body_for(fields, content, file_content_type=rng.choice([None, "application/zip"]))
        cut = rng.choice([None, rng.randrange(len(body) + 1)])
        if cut is not None:  # a mangled body: cut, or a byte changed
            body = body[:cut] if rng.random() < 0.5 else body[:cut] + rng.choice(tricky) + body[cut + 1 :]
        if rng.random() < 0.2:
            body = rng.choice([b"preamble\r\n", b" ", b""]) + body + rng.choice([b"", b"\r\n", b"epilogue"])
        bodies.append((boundary, body))
    return bodies


@pytest.mark.parametrize("boundary, body", _bodies())
def test_a_whole_body_gives_the_events_python_multipart_gives(boundary: bytes, body: bytes) -> None:
    whole = _events(multipart._PartStream(boundary), body)
    # Its first byte alone is never a whole body: python-multipart parses the rest.
    assert whole == _events(multipart._PartStream(boundary), body[:1], body[1:])


def test_what_clients_send_takes_the_fast_way() -> None:
    body, content_type, _, _ = twine_body()
    events = multipart._whole_body_events(body, b"--" + boundary_of(content_type))
    assert events is not None and sum(isinstance(event, multipart._PartStart) for event in events) == 11
    assert multipart._whole_body_events(body_for(), b"--" + BOUNDARY.encode()) is not None
    # A preamble, or a delimiter followed by neither CRLF nor "--", is left to python-multipart.
    assert multipart._whole_body_events(b"x" + body_for(), b"--" + BOUNDARY.encode()) is None
