"""``/packages/<path>``: file and metadata downloads, and pure tests of ``parse_range``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cheeseshop.simple.files import parse_range
from cheeseshop.storage import storage_path
from cheeseshop.testing.dists import build_sdist, build_wheel
from cheeseshop.testing.upload import uploaded

JSON = "application/vnd.pypi.simple.v1+json"


# -- helpers ------------------------------------------------------------------------------


class Raw:
    """A response as the application sent it over ASGI.

    The test client's Response recomputes Content-Length from the body it received, which
    hides what a HEAD or ranged response really declares; this keeps the sent headers.
    """

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.body = body


async def get(client: Any, path: str, method: str = "GET", **headers: str) -> Raw:
    async with client.request(path, method=method, headers=headers) as connection:
        await connection.send_complete()
    response = Raw(connection.status_code, connection.headers, bytes(connection.response_data))
    assert response.status_code != 500, response.body
    return response


@pytest.fixture
async def files(upload: Any, cheeseshop_client: Any) -> dict[str, dict[str, Any]]:
    """A wheel and an sdist of hello-world 1.0, with their Simple API entries."""
    wheel = await uploaded(upload, build_wheel("hello-world", "1.0", description="# Hello\n" * 50))
    sdist = await uploaded(upload, build_sdist("hello-world", "1.0"))
    response = await cheeseshop_client.get("/simple/hello-world/", headers={"Accept": JSON})
    entries = {f["filename"]: f for f in (await response.get_json())["files"]}
    return {
        kind: {
            "dist": dist,
            "entry": entries[dist.filename],
            "path": urlsplit(entries[dist.filename]["url"]).path,
        }
        for kind, dist in (("wheel", wheel), ("sdist", sdist))
    }


# -- downloads ------------------------------------------------------------------------------


async def test_download_exact_bytes(cheeseshop_client, files):
    for kind in ("wheel", "sdist"):
        dist, path = files[kind]["dist"], files[kind]["path"]
        assert path.startswith("/packages/")
        response = await get(cheeseshop_client, path)
        assert response.status_code == 200
        assert response.body == dist.content
        assert response.headers["Content-Length"] == str(len(dist.content))
        assert response.headers["ETag"] == f'"{dist.sha256}"'
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "immutable" in response.headers["Cache-Control"]


async def test_path_is_content_addressed(cheeseshop_client, files):
    dist = files["wheel"]["dist"]
    blake2 = hashlib.blake2b(dist.content, digest_size=32).hexdigest()
    assert files["wheel"]["path"] == "/packages/" + storage_path(blake2, dist.filename)


async def test_if_none_match_304(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    response = await get(cheeseshop_client, path, **{"If-None-Match": f'"{dist.sha256}"'})
    assert response.status_code == 304
    assert response.body == b""
    assert response.headers["ETag"] == f'"{dist.sha256}"'
    response = await get(cheeseshop_client, path, **{"If-None-Match": f'"other", "{dist.sha256}"'})
    assert response.status_code == 304
    response = await get(cheeseshop_client, path, **{"If-None-Match": '"other"'})
    assert response.status_code == 200
    assert response.body == dist.content


async def test_head(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    response = await get(cheeseshop_client, path, method="HEAD")
    assert response.status_code == 200
    assert response.body == b""
    assert response.headers["Content-Length"] == str(len(dist.content))
    assert response.headers["ETag"] == f'"{dist.sha256}"'


async def test_head_with_range(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    response = await get(cheeseshop_client, path, method="HEAD", Range="bytes=0-9")
    assert response.status_code == 206
    assert response.body == b""
    assert response.headers["Content-Length"] == "10"
    assert response.headers["Content-Range"] == f"bytes 0-9/{len(dist.content)}"


async def test_range_first_ten_bytes(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    response = await get(cheeseshop_client, path, Range="bytes=0-9")
    assert response.status_code == 206
    assert response.body == dist.content[:10]
    assert response.headers["Content-Range"] == f"bytes 0-9/{len(dist.content)}"
    assert response.headers["Content-Length"] == "10"


async def test_range_suffix(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    size = len(dist.content)
    response = await get(cheeseshop_client, path, Range="bytes=-5")
    assert response.status_code == 206
    assert response.body == dist.content[-5:]
    assert response.headers["Content-Range"] == f"bytes {size - 5}-{size - 1}/{size}"
    assert response.headers["Content-Length"] == "5"


async def test_range_open_ended_and_clamped(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    size = len(dist.content)
    response = await get(cheeseshop_client, path, Range=f"bytes={size - 22}-")
    assert response.status_code == 206
    assert response.body == dist.content[-22:]  # a zip's end of central directory
    response = await get(cheeseshop_client, path, Range=f"bytes=100-{size * 2}")
    assert response.status_code == 206
    assert response.body == dist.content[100:]
    assert response.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"


async def test_range_unsatisfiable_416(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    size = len(dist.content)
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0", "bytes=9-3"):
        response = await get(cheeseshop_client, path, Range=header)
        assert response.status_code == 416, header
        assert response.headers["Content-Range"] == f"bytes */{size}"


async def test_range_ignored_when_unusable(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    for header in ("bytes=0-1,5-9", "items=0-9", "bytes=a-b"):
        response = await get(cheeseshop_client, path, Range=header)
        assert response.status_code == 200, header
        assert response.body == dist.content


async def test_if_range(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"]
    response = await get(cheeseshop_client, path, Range="bytes=0-9", **{"If-Range": f'"{dist.sha256}"'})
    assert response.status_code == 206
    response = await get(cheeseshop_client, path, Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert response.status_code == 200
    assert response.body == dist.content


# -- PEP 658 metadata -------------------------------------------------------------------------


async def test_wheel_metadata_served_exactly(cheeseshop_client, files):
    dist, entry, path = files["wheel"]["dist"], files["wheel"]["entry"], files["wheel"]["path"]
    response = await get(cheeseshop_client, path + ".metadata")
    assert response.status_code == 200
    content = response.body
    assert content == dist.metadata
    digest = hashlib.sha256(content).hexdigest()
    assert entry["core-metadata"] == {"sha256": digest}
    assert response.headers["ETag"] == f'"{digest}"'
    assert response.headers["Content-Length"] == str(len(dist.metadata))


async def test_wheel_metadata_head_and_range(cheeseshop_client, files):
    dist, path = files["wheel"]["dist"], files["wheel"]["path"] + ".metadata"
    response = await get(cheeseshop_client, path, method="HEAD")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(dist.metadata))
    response = await get(cheeseshop_client, path, Range="bytes=0-15")
    assert response.status_code == 206
    assert response.body == dist.metadata[:16]


async def test_sdist_has_no_metadata_file(cheeseshop_client, files):
    response = await get(cheeseshop_client, files["sdist"]["path"] + ".metadata")
    assert response.status_code == 404
    assert files["sdist"]["entry"]["core-metadata"] is False


# -- refused ----------------------------------------------------------------------------------


async def test_unknown_path_404(cheeseshop_client, files):
    wheel_path = files["wheel"]["path"]
    for path in (
        "/packages/aa/bb/cccc/nothing-1.0-py3-none-any.whl",
        "/packages/",
        "/packages/x",
        wheel_path + "x",
        wheel_path.replace("hello_world", "other"),
        wheel_path + ".metadata.metadata",
    ):
        response = await get(cheeseshop_client, path)
        assert response.status_code == 404, path


async def test_path_traversal_404(cheeseshop_client, files, subtests):
    for path in (
        "/packages/..%2f..%2fetc%2fpasswd",
        "/packages/../../etc/passwd",
        "/packages/%2e%2e/%2e%2e/etc/passwd",
        "/packages/..%5c..%5cetc%5cpasswd",
        "/packages//etc/passwd",
        "/packages/%00",
        "/packages/..%2f..%2f..%2fcheeseshop.db",
    ):
        with subtests.test(path=path):
            response = await get(cheeseshop_client, path)
            if response.status_code == 308:  # werkzeug merges "//"; the target must 404 too
                location = urlsplit(response.headers["Location"]).path
                assert location.startswith("/packages/")
                response = await get(cheeseshop_client, location)
            assert response.status_code == 404, path
            assert b"root:" not in response.body


async def test_traversal_through_metadata_suffix_404(cheeseshop_client, files):
    response = await get(cheeseshop_client, "/packages/..%2f..%2f..%2fcheeseshop.db.metadata")
    assert response.status_code == 404


async def test_stored_file_without_row_not_served(cheeseshop_client, cheeseshop_services, tmp_path: Path):
    content = b"bytes whose upload never committed"
    path = storage_path(hashlib.blake2b(content, digest_size=32).hexdigest(), "orphan-1.0-py3-none-any.whl")
    source = tmp_path / "orphan"
    source.write_bytes(content)
    cheeseshop_services.storage.put(path, source)
    assert cheeseshop_services.storage.exists(path)
    for suffix in ("", ".metadata"):
        response = await get(cheeseshop_client, f"/packages/{path}{suffix}")
        assert response.status_code == 404
        assert content not in response.body


async def test_row_without_bytes_503(cheeseshop_client, cheeseshop_services, files):
    # An operator lost the bytes: not the client's fault, and never a 500.
    stored = files["sdist"]["path"].removeprefix("/packages/")
    cheeseshop_services.storage.delete(stored)
    response = await get(cheeseshop_client, files["sdist"]["path"])
    assert response.status_code == 503


# -- parse_range (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("", 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=0-0", 100, (0, 0)),
        (" bytes=10-19 ", 100, (10, 19)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=0-", 100, (0, 99)),
        ("bytes=99-99", 100, (99, 99)),
        ("bytes=50-1000", 100, (50, 99)),
        ("bytes=-5", 100, (95, 99)),
        ("bytes=-100", 100, (0, 99)),
        ("bytes=-500", 100, (0, 99)),
        ("bytes=-", 100, None),
        ("bytes=0-1,5-9", 100, None),
        ("items=0-9", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=1.5-3", 100, None),
        ("0-9", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=100-200", 100),
        ("bytes=5-2", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
        ("bytes=0-0", 0),
    ],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(ValueError):
        parse_range(header, size)


def test_parse_range_span_within_file() -> None:
    for size in (1, 2, 10):
        headers = ("bytes=0-", "bytes=-1", f"bytes=-{size}", f"bytes=-{size + 1}", f"bytes={size - 1}-")
        for header in headers:
            start, end = parse_range(header, size)  # type: ignore[misc]
            assert 0 <= start <= end < size, (header, size)
