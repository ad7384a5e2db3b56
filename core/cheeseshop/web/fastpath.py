"""Cache hits answered below Quart: the hot read path in plain ASGI.

Nearly all of an index's traffic is a resolver asking for a page that has not changed:
``/simple/<project>/``, ``/simple/`` and ``/pypi/<project>[/<version>]/json``. Once such a
page is in the page cache, answering it needs a lookup and a few headers; Quart's request
and response objects, routing and hooks cost more than that, twice over. So this
middleware, wrapped around ``app.asgi_app``, serves a GET or HEAD whose page is in the
cache and current, and hands everything else to Quart untouched.

It can never answer differently from the views. It only *reads* the cache, under the
same (key, variant) the views store pages under, and a view stores a page only for a
canonical request it would answer with that page (a non-normalized name is redirected, a
bad version refused, and neither is ever cached). A query string, an unacceptable
``Accept`` or any miss goes to Quart, which renders, stores, and answers. The headers
come from the same :func:`~cheeseshop.web.cached.page_headers` the views use, encoded once
per page, route, representation and status, and reused for every hit after that.

Downloads (``/packages/<path>``) are served here the same way: the download view keeps the
lookup of a visible file (its sha256) in the page cache under its project's key (see
:mod:`cheeseshop.simple.files`), and with that entry current a plain GET or HEAD needs no
database, only the storage: this path answers 200 or 304 and nothing else. A ``Range``
(hence ``If-Range``), a query string, a storage that redirects to a public URL, and any
storage error go to the view, which answers them as always (206, 302, 416, 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple

from werkzeug.http import parse_etags

from cheeseshop.cache import CachedPage
from cheeseshop.cache.keys import ALL_PROJECTS, file_key, project_key
from cheeseshop.jsonapi import views as jsonapi_views
from cheeseshop.services import Services
from cheeseshop.simple import files, negotiate
from cheeseshop.storage import SmallFileReads
from cheeseshop.simple import views as simple_views
from cheeseshop.web import COMMON_HEADERS, access
from cheeseshop.web.cached import Representation, not_modified, page_headers, representation, variant_for

__all__ = ["CachedPageFastPath", "PageRoute", "route"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Send = Callable[..., Awaitable[None]]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[None]]], Awaitable[None]]


class PageRoute(NamedTuple):
    """Where a request's page would be cached, and the headers a view adds to it."""

    key: str
    variant: str
    cache_control: str
    vary: str | None
    headers: tuple[tuple[str, str], ...]


def route(path: str, accept: str | None, *, base_url: str | None, origin: str) -> PageRoute | None:
    """The cached page a GET of ``path`` (no query string) is answered with, if any. Pure.

    ``origin`` is the request's ``scheme://host``, which pages embedding absolute URLs are
    kept apart by when no ``base_url`` is set. None for a path that is not a cacheable
    page, or an ``Accept`` the Simple API cannot satisfy (Quart answers 406).
    """
    if path.startswith("/simple/"):
        name = path[8:]
        try:
            content_type = negotiate.choose(accept, None)
        except negotiate.NotAcceptable:
            return None
        variant = simple_views.VARIANTS[content_type]
        if not name:
            return PageRoute(ALL_PROJECTS, variant, simple_views.CACHE_CONTROL, "Accept", ())
        if name.count("/") != 1 or not name.endswith("/"):
            return None
        return PageRoute(
            project_key(name[:-1]),
            variant_for(variant, base_url=base_url, origin=origin),
            simple_views.CACHE_CONTROL,
            "Accept",
            (),
        )
    if path.startswith("/pypi/") and path.endswith("/json"):
        parts = path[6:-5].split("/")
        if len(parts) == 1:
            name, variant = parts[0], "pypi-json"
        elif len(parts) == 2:
            name, variant = parts[0], f"pypi-json {parts[1]}"
        else:
            return None
        return PageRoute(
            project_key(name),
            variant_for(variant, base_url=base_url, origin=origin),
            jsonapi_views.CACHE_CONTROL,
            None,
            _JSON_API_HEADERS,
        )
    return None


_JSON_API_HEADERS = tuple(jsonapi_views.CORS_HEADERS.items())
#: Encoded header lists kept for cached pages, at most (forgotten all at once beyond it).
HEADER_LISTS_KEPT = 4096

RawHeaders = tuple[tuple[bytes, bytes], ...]


class CachedPageFastPath:
    """ASGI middleware: serve current cached pages directly; pass the rest to ``app``."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self._headers: dict[tuple[object, ...], RawHeaders] = {}

    async def __call__(self, scope: Scope, receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> None:
        """Answer a cache hit here; call the wrapped app for everything else."""
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and not scope["query_string"]
            and await self._answer(scope, send)
        ):
            return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send) -> bool:
        path: str = scope["path"]
        if path.startswith(_PACKAGES):
            return await self._answer_download(scope, send, path[len(_PACKAGES) :])
        if not (path.startswith("/simple/") or path.startswith("/pypi/")):
            return False
        headers = _request_headers(scope)
        settings = self.services.settings
        found = route(
            path,
            headers.get(b"accept"),
            base_url=settings.base_url,
            origin=f"{scope['scheme']}://{headers.get(b'host', '')}",
        )
        if found is None:
            return False
        page = await self.services.cache.peek(found.key, found.variant)
        if page is None:
            return False
        await self._send_page(scope, send, page, found, headers)
        return True

    async def _send_page(
        self,
        scope: Scope,
        send: Send,
        page: CachedPage,
        found: PageRoute,
        headers: dict[bytes, str],
    ) -> None:
        sent = representation(page, headers.get(b"accept-encoding"))
        if_none_match = headers.get(b"if-none-match")
        status = 304 if if_none_match is not None and not_modified(page, parse_etags(if_none_match)) else 200
        # A new list: an ASGI middleware around this one may add to the list it is given.
        raw = list(self._page_headers(page, found, sent, status))
        if status == 200:
            # Not kept with the rest: the gzipped body's length depends on the zlib that
            # compressed it, which may not be this process's (a shared Redis cache).
            raw.append((b"content-length", str(len(sent.body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        body = sent.body if status == 200 and scope["method"] != "HEAD" else b""
        await send({"type": "http.response.body", "body": body})
        _log(scope, status, len(sent.body) if status == 200 else None, headers)

    def _page_headers(self, page: CachedPage, found: PageRoute, sent: Representation, status: int) -> RawHeaders:
        """The encoded headers of a response with ``page``, bar Content-Length: built once,
        then reused.

        They depend on the route's key and constants (not its variant, which holds the
        client's Host), the page's ETag (which stands for its body and type) and serial,
        whether it has a gzipped body (``Vary``), the representation sent and the status;
        the plugins' part on the key alone (``cheeseshop_response_headers``).
        """
        kept = (
            found.key, found.cache_control, found.vary, found.headers,
            page.etag, page.serial, page.gzipped is None, sent.encoding, status,
        )  # fmt: skip
        raw = self._headers.get(kept)
        if raw is None:
            out = page_headers(
                page,
                cache_control=found.cache_control,
                vary=found.vary,
                headers=found.headers,
                plugin_headers=self.services.hooks.response_headers((found.key,), self.services.settings),
                sent=sent,
            )
            if status == 200:
                out["Content-Type"] = page.content_type
            raw = _encoded(out)
            if len(self._headers) >= HEADER_LISTS_KEPT:
                self._headers.clear()
            self._headers[kept] = raw
        return raw

    async def _answer_download(self, scope: Scope, send: Send, path: str) -> bool:
        """Serve a download whose lookup is cached with 200 or 304; False to let the view answer."""
        found = files.file_route(path)
        if found is None:
            return False
        headers = _request_headers(scope)
        # Ranges (and so If-Range, which only qualifies a Range) are the view's: 206 and 416.
        if b"range" in headers:
            return False
        entry = await self.services.cache.peek(found.key, found.variant)
        if entry is None:
            return False
        storage = self.services.storage
        if storage.url(path):
            return False  # the view redirects
        out = files.download_headers(
            entry.etag, self.services.hooks.response_headers((file_key(path),), self.services.settings)
        )
        head = scope["method"] == "HEAD"
        if files.not_modified(headers.get(b"if-none-match"), entry.etag):
            await _start(send, 304, out)
            await send({"type": "http.response.body", "body": b""})
            _log(scope, 304, None, headers)
            return True
        sha256 = entry.etag.strip('"')
        try:
            # A small file from a local disk is read right here: that costs less than the
            # thread hop below, and .metadata files, which resolvers fetch for every
            # candidate version, are nearly all small.
            small = (
                storage.read_small(path, limit=SMALL_FILE_BYTES)
                if not head and isinstance(storage, SmallFileReads)
                else None
            )
            if small is not None:
                out["Content-Type"] = entry.content_type
                out["Content-Length"] = str(len(small))
                await _start(send, 200, out)
                await send({"type": "http.response.body", "body": small})
                _log(scope, 200, len(small), headers)
                return True
            # One thread trip: the size for HEAD; for GET, all of a small file or the first
            # chunk of a larger one, as the view does.
            if head:
                opened = await asyncio.to_thread(
                    files.open_stored, storage, path, sha256=sha256, read=False
                )
            else:
                opened = await asyncio.to_thread(files.open_whole, storage, path, sha256=sha256)
        except OSError:
            # Missing bytes, a storage outage (StorageUnavailable is an OSError) or a disk
            # error: the view answers these, with its own messages and logging.
            return False
        out["Content-Type"] = entry.content_type
        out["Content-Length"] = str(opened.size)
        await _start(send, 200, out)
        if head or opened.handle is None:
            await send({"type": "http.response.body", "body": opened.first})
        else:
            # aclosing: the handle is closed even when the client goes away mid-stream.
            async with contextlib.aclosing(files.stream(opened, opened.size)) as chunks:
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        _log(scope, 200, opened.size, headers)
        return True


async def _start(send: Send, status: int, headers: dict[str, str]) -> None:
    """Send the status line and ``headers``, with the common headers the app adds to all."""
    await send({"type": "http.response.start", "status": status, "headers": list(_encoded(headers))})


def _encoded(headers: dict[str, str]) -> RawHeaders:
    """``headers`` and the common headers the app adds to all, as ASGI's byte pairs."""
    for name, value in COMMON_HEADERS.items():
        headers.setdefault(name, value)
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())


def _log(scope: Scope, status: int, length: int | None, headers: dict[bytes, str]) -> None:
    """The access-log line Quart's ``after_request`` would have written."""
    access.log_response(
        scope.get("client"),
        scope["method"],
        scope["path"],
        scope.get("http_version", "1.1"),
        status,
        length,
        headers.get(b"user-agent"),
    )


def _request_headers(scope: Scope) -> dict[bytes, str]:
    """The request headers this path reads, first of each name, decoded as latin-1."""
    wanted: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _READ and name not in wanted:
            wanted[name] = value.decode("latin-1")
    return wanted


_READ = frozenset({b"accept", b"accept-encoding", b"host", b"if-none-match", b"range", b"user-agent"})
_PACKAGES = "/packages/"
#: Files up to this size are read on the event loop from a storage that offers it (a
#: local disk): a read from the page cache takes microseconds, a thread hop more.
SMALL_FILE_BYTES = 64 * 1024
