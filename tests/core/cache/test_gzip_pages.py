"""Cached pages in gzip for clients that accept it: compressed once, sent as pip asks.

pip sends ``Accept-Encoding: gzip, deflate`` and uv ``gzip, deflate, br``: a large Simple
page, the root above all, then crosses the network at a fraction of its size. Each
representation has its own strong ETag, and ``Vary`` says the answer depends on the header.
"""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from cheeseshop.cache import GZIP_MIN_BYTES, make_page
from cheeseshop.cache.redis import _decode, _encode
from cheeseshop.testing.asgi import QuartRequests, asgi_request
from cheeseshop.testing.dists import build_wheel
from cheeseshop.web.cached import accepts_gzip, representation

JSON = "application/vnd.pypi.simple.v1+json"
PIP = "gzip, deflate"


@pytest.fixture
def cheeseshop_settings_overrides() -> dict[str, Any]:
    return {"page_cache_poll_seconds": 0}


async def big_project(upload: Any) -> str:
    """A project whose JSON Simple page is well over GZIP_MIN_BYTES."""
    for version in ("1.0", "1.1", "1.2", "2.0", "2.1"):
        response = await upload(build_wheel("gzip-me", version))
        assert response.status_code == 200, await response.get_data(as_text=True)
    return "/simple/gzip-me/"


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("*", True),
        ("deflate", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("*;q=0.5, gzip;q=0", False),
        ("GZIP", True),
    ],
)
def test_accepts_gzip(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_small_pages_are_not_compressed_and_large_ones_are_once() -> None:
    small = make_page(b"x" * (GZIP_MIN_BYTES - 1), "text/html", 1)
    assert small.gzipped is None
    assert representation(small, PIP).body == small.body
    body = b'{"name": "a"}' * 1000
    large = make_page(body, "application/json", 7)
    assert large.gzipped is not None and gzip.decompress(large.gzipped) == body
    assert len(large.gzipped) < len(body) // 10
    # The same bytes every time: every web process sends one representation per ETag.
    assert make_page(body, "application/json", 7).gzipped == large.gzipped
    sent = representation(large, "gzip")
    assert (sent.body, sent.encoding) == (large.gzipped, "gzip")
    assert sent.etag != large.etag and sent.etag.startswith('"') and sent.etag.endswith('-gzip"')
    assert representation(large, "identity") == (body, large.etag, None)


def test_the_redis_encoding_keeps_both_bodies() -> None:
    body = b"<html>" + b"a" * 5000
    for page in (make_page(body, "text/html", 3), make_page(b"tiny", "text/html", 4)):
        assert _decode(_encode(11, page)) == (11, page)
    # A value in the earlier format (no gzip length) is not this code's: a miss, rebuilt.
    assert _decode(b'[1, "text/html", "\\"e\\"", 3]\nbody') is None
    # A length that does not fit the value is refused, not sliced.
    assert _decode(b'[1, "text/html", "\\"e\\"", 3, 99]\nbody') is None


async def test_pip_gets_the_page_gzipped_from_the_view_and_the_fast_path(
    cheeseshop_client: Any, upload: Any, quart_requests: QuartRequests
) -> None:
    path = await big_project(upload)
    plain = await cheeseshop_client.get(path, headers={"Accept": JSON})
    body = await plain.get_data()
    assert len(body) >= GZIP_MIN_BYTES
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept, Accept-Encoding"
    calls = len(quart_requests.paths)
    answers = []
    for _ in range(2):  # the first may be built by the view; the second is a cache hit
        response = await cheeseshop_client.get(path, headers={"Accept": JSON, "Accept-Encoding": PIP})
        assert response.status_code == 200
        answers.append(response)
    assert len(quart_requests.paths) == calls, "a cached page went to Quart"
    for response in answers:
        data = await response.get_data()
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Vary"] == "Accept, Accept-Encoding"
        assert response.headers["Content-Type"] == plain.headers["Content-Type"]
        assert int(response.headers["Content-Length"]) == len(data) < len(body)
        assert gzip.decompress(data) == body
        assert response.headers["ETag"] != plain.headers["ETag"]
        assert response.headers["X-PyPI-Last-Serial"] == plain.headers["X-PyPI-Last-Serial"]


async def test_the_view_answers_gzip_like_the_fast_path(cheeseshop_client: Any, upload: Any) -> None:
    await big_project(upload)
    # The JSON API page is built by the view on the first request and served by the fast
    # path on the second: both answers must be the same.
    first = await cheeseshop_client.get("/pypi/gzip-me/json", headers={"Accept-Encoding": "gzip"})
    second = await cheeseshop_client.get("/pypi/gzip-me/json", headers={"Accept-Encoding": "gzip"})
    assert first.status_code == second.status_code == 200
    assert dict(first.headers) == dict(second.headers)
    assert await first.get_data() == await second.get_data()
    assert first.headers["Content-Encoding"] == "gzip" and first.headers["Vary"] == "Accept-Encoding"


async def test_either_etag_gives_304_and_head_has_the_gzip_length(
    cheeseshop_app: Any, cheeseshop_client: Any, upload: Any
) -> None:
    path = await big_project(upload)
    plain = await cheeseshop_client.get(path, headers={"Accept": JSON})
    zipped = await cheeseshop_client.get(path, headers={"Accept": JSON, "Accept-Encoding": "gzip"})
    for etag in (plain.headers["ETag"], zipped.headers["ETag"]):
        for encoding in ("gzip", "identity"):
            response = await cheeseshop_client.get(
                path, headers={"Accept": JSON, "Accept-Encoding": encoding, "If-None-Match": etag}
            )
            assert response.status_code == 304
            assert await response.get_data() == b""
    # HEAD through ASGI itself: the test client would recount Content-Length from the
    # (empty) body.
    head = await asgi_request(cheeseshop_app.app, path, method="HEAD", Accept=JSON, Accept_Encoding="gzip")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == zipped.headers["Content-Length"]
    assert head.headers["content-encoding"] == "gzip"


async def test_a_refused_gzip_gets_the_identity_body(cheeseshop_client: Any, upload: Any) -> None:
    path = await big_project(upload)
    for header in ("gzip;q=0", "identity", "deflate"):
        response = await cheeseshop_client.get(path, headers={"Accept": JSON, "Accept-Encoding": header})
        assert "Content-Encoding" not in response.headers
        assert (await response.get_data()).startswith(b"{")
