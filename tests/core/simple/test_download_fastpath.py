"""Downloads answered below Quart (``web/fastpath.py``), exactly as the view answers them.

The download view keeps the lookup of a visible file in the page cache under its project's
key; the ASGI fast path serves a plain GET or HEAD from that entry and the storage, and
hands everything else to the view. ``quart_requests`` counts what reaches Quart.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import update

from cheeseshop.cache.keys import project_key
from cheeseshop.db.models import Project
from cheeseshop.projects.service import set_status
from cheeseshop.simple import files as files_module
from cheeseshop.simple.files import FileRoute, file_route, not_modified
from cheeseshop.testing.asgi import QuartRequests, Sent, asgi_request
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
from cheeseshop.testing.records import outbox_settled
from cheeseshop.testing.upload import uploaded
from cheeseshop.web import fastpath as fastpath_module

JSON = "application/vnd.pypi.simple.v1+json"
PROJECT = "hello-world"


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def cheeseshop_settings_overrides() -> dict[str, Any]:
    # No journal polling: only the purges the tests make (or cause) change the cache.
    return {"page_cache_poll_seconds": 0}


@pytest.fixture
async def dists(upload: Any, cheeseshop_client: Any) -> dict[str, tuple[Dist, str]]:
    """A wheel and an sdist of hello-world 1.0, each with its download path."""
    wheel = await uploaded(upload, build_wheel(PROJECT, "1.0", description="# Hello\n" * 50))
    sdist = await uploaded(upload, build_sdist(PROJECT, "1.0"))
    response = await cheeseshop_client.get(f"/simple/{PROJECT}/", headers={"Accept": JSON})
    urls = {f["filename"]: urlsplit(f["url"]).path for f in (await response.get_json())["files"]}
    return {"wheel": (wheel, urls[wheel.filename]), "sdist": (sdist, urls[sdist.filename])}


async def view_then_fast(
    app: Any, services: Any, quart: QuartRequests, path: str, *, method: str = "GET", **headers: str
) -> tuple[Sent, Sent]:
    """The view's answer (after a purge), then the fast path's to the same request."""
    await services.cache.purge_now([project_key(PROJECT)])
    quart.paths.clear()
    view = await asgi_request(app, path, method=method, **headers)
    assert quart.paths == [path], "after a purge, the view answers (and stores the lookup)"
    fast = await asgi_request(app, path, method=method, **headers)
    assert quart.paths == [path], "the repeat is answered below Quart"
    return view, fast


# -- the fast path answers, exactly as the view ------------------------------------------------


@pytest.mark.parametrize("what", ["wheel", "sdist", "metadata"])
async def test_get_and_head_below_quart_match_the_view(
    cheeseshop_client, cheeseshop_services, quart_requests, dists, what
):
    dist, path = dists["sdist" if what == "sdist" else "wheel"]
    content = dist.content
    if what == "metadata":
        path, content = path + ".metadata", dist.metadata
    content_type = "text/plain; charset=utf-8" if what == "metadata" else "application/octet-stream"
    app = cheeseshop_client.app

    view, fast = await view_then_fast(app, cheeseshop_services, quart_requests, path)
    assert view.status == fast.status == 200
    assert view.body == fast.body == content
    assert fast.headers == view.headers
    assert fast.headers["content-type"] == content_type
    assert fast.headers["content-length"] == str(len(content))
    assert fast.headers["cache-control"] == "max-age=31536000, public, immutable"
    assert fast.headers["accept-ranges"] == "bytes"
    assert fast.headers["access-control-allow-origin"] == "*"
    assert fast.headers["x-content-type-options"] == "nosniff"
    etag = fast.headers["etag"]
    assert etag.startswith('"') and len(etag) == 66

    view, fast = await view_then_fast(app, cheeseshop_services, quart_requests, path, method="HEAD")
    assert view.status == fast.status == 200
    assert view.body == fast.body == b""
    assert fast.headers == view.headers
    assert fast.headers["content-length"] == str(len(content))

    view, fast = await view_then_fast(app, cheeseshop_services, quart_requests, path, If_None_Match=etag)
    assert view.status == fast.status == 304
    assert view.body == fast.body == b""
    assert fast.headers == view.headers
    # A 304 describes the 200 it stands for: no type or length of its own.
    assert "content-type" not in fast.headers and "content-length" not in fast.headers
    assert fast.headers["etag"] == etag


async def test_the_wheel_etag_is_its_sha256(cheeseshop_client, cheeseshop_services, quart_requests, dists):
    dist, path = dists["wheel"]
    _, fast = await view_then_fast(cheeseshop_client.app, cheeseshop_services, quart_requests, path)
    assert fast.headers["etag"] == f'"{dist.sha256}"'


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [('"other", "{sha}"', 304), ('W/"{sha}"', 304), ("*", 304), ('"other"', 200), ("", 200)],
)
async def test_if_none_match_alike_in_the_view_and_below_quart(
    cheeseshop_client, cheeseshop_services, quart_requests, dists, if_none_match, status
):
    dist, path = dists["wheel"]
    view, fast = await view_then_fast(
        cheeseshop_client.app, cheeseshop_services, quart_requests, path,
        If_None_Match=if_none_match.format(sha=dist.sha256),
    )
    assert view.status == fast.status == status
    assert fast.headers == view.headers
    assert fast.body == view.body == (dist.content if status == 200 else b"")


async def test_a_file_bigger_than_a_chunk_is_streamed_in_chunks(
    cheeseshop_client, cheeseshop_services, quart_requests, dists, monkeypatch
):
    dist, path = dists["wheel"]
    monkeypatch.setattr(files_module, "CHUNK", 100)
    monkeypatch.setattr(fastpath_module, "SMALL_FILE_BYTES", 0)  # not read whole on the loop
    view, fast = await view_then_fast(cheeseshop_client.app, cheeseshop_services, quart_requests, path)
    assert view.body == fast.body == dist.content
    assert fast.headers == view.headers
    chunks = [m["body"] for m in fast.body_messages]
    assert len(chunks) > len(dist.content) // 100, "read and sent a chunk at a time"
    assert all(len(chunk) <= 100 for chunk in chunks)
    assert [m.get("more_body", False) for m in fast.body_messages][-2:] == [True, False]


@pytest.mark.parametrize("small", [True, False])
async def test_a_small_file_is_read_on_the_loop_and_a_larger_one_in_a_thread(
    cheeseshop_client, cheeseshop_services, quart_requests, dists, monkeypatch, small
):
    dist, path = dists["wheel"]
    await view_then_fast(cheeseshop_client.app, cheeseshop_services, quart_requests, path)
    if not small:
        monkeypatch.setattr(fastpath_module, "SMALL_FILE_BYTES", len(dist.content) - 1)
    hops: list[object] = []
    real = asyncio.to_thread

    async def counting(function: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(function)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(fastpath_module.asyncio, "to_thread", counting)
    fast = await asgi_request(cheeseshop_client.app, path)
    assert quart_requests.paths == [path], "answered below Quart"
    assert fast.status == 200 and fast.body == dist.content
    assert fast.headers["content-length"] == str(len(dist.content))
    assert hops == ([] if small else [files_module.open_whole])


async def test_the_access_log_line_is_the_views(
    cheeseshop_client, cheeseshop_services, quart_requests, dists, caplog
):
    dist, path = dists["wheel"]
    caplog.set_level(logging.INFO, logger="cheeseshop.access")
    for method in ("GET", "HEAD"):
        caplog.clear()
        await view_then_fast(cheeseshop_client.app, cheeseshop_services, quart_requests, path, method=method)
        view_line, fast_line = (r.getMessage() for r in caplog.records if r.name == "cheeseshop.access")
        assert fast_line == view_line
        assert f'"{method} {path} 1.1" 200 {len(dist.content)} ' in fast_line


# -- what the fast path leaves to the view ----------------------------------------------------------


async def test_a_quarantined_projects_files_are_gone_right_after_the_change(
    cheeseshop_client, cheeseshop_services, quart_requests, dists
):
    app = cheeseshop_client.app
    _, path = dists["wheel"]
    for target in (path, path + ".metadata"):
        await asgi_request(app, target)
        assert (await asgi_request(app, target)).status == 200
    quart_requests.paths.clear()

    # What `cheeseshop project status hello-world quarantined` runs.
    await set_status(cheeseshop_services, PROJECT, "quarantined", reason="malware")

    for target in (path, path + ".metadata"):
        gone = await asgi_request(app, target)
        assert gone.status == 404
        assert gone.text == "No such file.\n"
    assert quart_requests.paths == [path, path + ".metadata"]

    await set_status(cheeseshop_services, PROJECT, "active")
    assert (await asgi_request(app, path)).status == 200
    assert (await asgi_request(app, path)).status == 200
    assert quart_requests.paths == [path, path + ".metadata", path]


async def test_ranges_go_to_the_view(cheeseshop_client, cheeseshop_services, quart_requests, dists):
    app = cheeseshop_client.app
    dist, path = dists["wheel"]
    size = len(dist.content)
    await asgi_request(app, path)
    quart_requests.paths.clear()

    ranged = await asgi_request(app, path, Range="bytes=0-9")
    assert ranged.status == 206
    assert ranged.body == dist.content[:10]
    assert ranged.headers["content-range"] == f"bytes 0-9/{size}"
    stale = await asgi_request(app, path, Range="bytes=0-9", If_Range='"stale"')
    assert stale.status == 200 and stale.body == dist.content
    refused = await asgi_request(app, path, Range=f"bytes={size}-")
    assert refused.status == 416
    head = await asgi_request(app, path, method="HEAD", Range="bytes=-5")
    assert head.status == 206 and head.headers["content-length"] == "5"
    queried = await asgi_request(app, path, query=b"x=1")
    assert queried.status == 200 and queried.body == dist.content
    assert quart_requests.paths == [path] * 5


async def test_what_is_not_found_gets_the_views_404(cheeseshop_client, cheeseshop_services, quart_requests, dists):
    app = cheeseshop_client.app
    dist, path = dists["wheel"]
    _, sdist_path = dists["sdist"]
    await asgi_request(app, path)
    await asgi_request(app, sdist_path)
    quart_requests.paths.clear()

    for unknown in (path.replace("hello_world-1.0", "hello_world-2.0"), path + "x", "/packages/x"):
        missing = await asgi_request(app, unknown)
        assert (missing.status, missing.text) == (404, "No such file.\n")
    no_metadata = await asgi_request(app, sdist_path + ".metadata")
    assert (no_metadata.status, no_metadata.text) == (404, "This file has no separate metadata.\n")
    # Neither answer was cached: asking again still reaches the view.
    again = await asgi_request(app, sdist_path + ".metadata")
    assert again.status == 404
    assert len(quart_requests.paths) == 5


async def test_missing_bytes_get_the_views_503(cheeseshop_client, cheeseshop_services, quart_requests, dists):
    app = cheeseshop_client.app
    _, path = dists["sdist"]
    await asgi_request(app, path)
    quart_requests.paths.clear()

    cheeseshop_services.storage.delete(path.removeprefix("/packages/"))
    gone = await asgi_request(app, path)
    assert gone.status == 503
    assert gone.text == "The file is temporarily unavailable; try again later.\n"
    assert quart_requests.paths == [path]


async def test_a_file_not_of_the_project_its_name_says_is_never_cached(
    cheeseshop_client, cheeseshop_services, quart_requests, dists
):
    # The upload makes every filename name its project; should a row ever disagree, its
    # lookup must not sit under a key that this project's changes would not purge.
    app = cheeseshop_client.app
    dist, path = dists["wheel"]
    await cheeseshop_services.db.run_write(
        lambda session: session.execute(
            update(Project).where(Project.normalized_name == PROJECT).values(normalized_name="renamed")
        )
    )
    quart_requests.paths.clear()
    for _ in range(2):
        response = await asgi_request(app, path)
        assert response.status == 200 and response.body == dist.content
    assert quart_requests.paths == [path, path]


# -- the pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "ab/cd/ef/Hello_World-1.0-py3-none-any.whl",
            FileRoute("hello-world", "project/hello-world", "file ab/cd/ef/Hello_World-1.0-py3-none-any.whl"),
        ),
        (
            "ab/cd/ef/hello_world-1.0-py3-none-any.whl.metadata",
            FileRoute("hello-world", "project/hello-world", "file ab/cd/ef/hello_world-1.0-py3-none-any.whl.metadata"),
        ),
        ("ab/cd/ef/zope.interface-5.0.tar.gz", FileRoute("zope-interface", "project/zope-interface", "file ab/cd/ef/zope.interface-5.0.tar.gz")),
        ("ab/cd/ef/hello-1.0.zip", None),
        ("ab/cd/ef/not a wheel.whl", None),
        ("ab/cd/ef/hello-1.0.tar.gz/", None),
        ("", None),
    ],
)
def test_file_route_names_the_project_key_from_the_filename(path, expected):
    assert file_route(path) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", True),  # werkzeug takes an unquoted tag as it is
    ],
)
def test_not_modified(header, expected):
    assert not_modified(header, '"abc"') is expected


# -- with the page cache in Redis ------------------------------------------------------------------


async def all_delivered(services: Any) -> None:
    """Wait until the outbox has delivered every event, the uploads' purges included.

    A shared cache takes purges through the outbox, delivered in the background: one
    landing between two requests of a test would send the second to Quart.
    """
    await outbox_settled(services, timeout=10.0)


class TestWithTheRedisCache:
    @pytest.fixture
    def cheeseshop_settings_overrides(self, redis_url: str) -> dict[str, Any]:
        return {"redis_url": redis_url, "page_cache_poll_seconds": 0}

    async def test_a_download_is_served_from_redis_below_quart_until_the_quarantine(
        self, cheeseshop_client, cheeseshop_services, quart_requests, dists, redis_url
    ):
        app = cheeseshop_client.app
        dist, path = dists["wheel"]
        await all_delivered(cheeseshop_services)
        view, fast = await view_then_fast(app, cheeseshop_services, quart_requests, path)
        assert fast.body == view.body == dist.content
        assert fast.headers == view.headers

        import cheeseshop.cache.redis as redis_cache

        client = redis.Redis.from_url(redis_url)
        try:
            stored = client.get(f"{redis_cache.PREFIX}page:project/{PROJECT}:file {path.removeprefix('/packages/')}")
        finally:
            client.close()
        assert stored is not None and dist.sha256.encode() in stored

        quart_requests.paths.clear()
        await set_status(cheeseshop_services, PROJECT, "quarantined")
        gone = await asgi_request(app, path)
        assert (gone.status, gone.text) == (404, "No such file.\n")
        assert quart_requests.paths == [path]


# -- open_whole: one trip, no size call for a small file -----------------------------------------


class Trickle(io.RawIOBase):
    """A raw stream that returns at most 7 bytes a read, as a raw stream may."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(7, len(buffer), len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


class FakeStorage:
    def __init__(self, data: bytes, *, trickle: bool = False) -> None:
        self.data = data
        self.trickle = trickle
        self.sized = 0
        self.opened: list[Any] = []

    def open(self, path: str, *, sha256: str | None = None) -> Any:
        handle = Trickle(self.data) if self.trickle else io.BytesIO(self.data)
        self.opened.append(handle)
        return handle

    def size(self, path: str) -> int:
        self.sized += 1
        return len(self.data)


async def read_all(storage: FakeStorage) -> tuple[Any, bytes]:
    opened = files_module.open_whole(storage, "p", sha256="s")  # type: ignore[arg-type]
    return opened, b"".join([chunk async for chunk in files_module.stream(opened, opened.size)])


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 250])
async def test_open_whole_reads_a_small_file_without_sizing_it(monkeypatch, size):
    monkeypatch.setattr(files_module, "CHUNK", 100)
    data = bytes(range(256))[:size]
    storage = FakeStorage(data)
    opened, sent = await read_all(storage)
    assert sent == data and opened.size == size
    assert storage.sized == (0 if size < 100 else 1), "only a file as big as a chunk is sized"
    assert all(handle.closed for handle in storage.opened)


@pytest.mark.parametrize("size", [0, 5, 50, 250])
async def test_open_whole_is_not_fooled_by_a_short_read(monkeypatch, size):
    monkeypatch.setattr(files_module, "CHUNK", 100)
    data = bytes(range(256))[:size]
    storage = FakeStorage(data, trickle=True)
    opened, sent = await read_all(storage)
    assert sent == data and opened.size == size
    assert storage.sized == (0 if size < 7 else 1)
    assert all(handle.closed for handle in storage.opened)
