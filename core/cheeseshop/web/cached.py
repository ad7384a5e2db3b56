"""Serving cacheable pages: the page cache, conditional requests and cache headers, once.

The Simple API and the JSON API render a page to bytes once, keep it in the page cache
(:mod:`cheeseshop.cache`) under the key of what it shows, and answer from there until a
purge names that key. A hit costs a dictionary lookup (or one Redis ``MGET``) and the
headers: no database, no rendering, no hashing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from quart import Response, request
from werkzeug.datastructures import ETags
from werkzeug.http import parse_accept_header

from cheeseshop.cache import Build, CachedPage
from cheeseshop.errors import APIError
from cheeseshop.services import current_services

__all__ = [
    "Representation",
    "accepts_gzip",
    "cached_response",
    "not_modified",
    "page_headers",
    "page_response",
    "representation",
    "url_variant",
    "variant_for",
]


def url_variant(name: str) -> str:
    """A cache variant for a page rendered as ``name`` that embeds absolute URLs.

    Without ``base_url`` set, file URLs are built from the request's host, so pages for
    different hosts (``localhost`` and ``127.0.0.1``, say) are kept apart.
    """
    # The scheme and Host header, not request.host_url: that one re-parses the whole URL.
    return variant_for(
        name,
        base_url=current_services().settings.base_url,
        origin=f"{request.scheme}://{request.headers.get('Host', '')}",
    )


def variant_for(name: str, *, base_url: str | None, origin: str) -> str:
    """The variant of :func:`url_variant` from its parts (``origin``: ``scheme://host``). Pure."""
    return name if base_url else f"{name} {origin}"


async def cached_response(
    key: str,
    variant: str,
    build: Build,
    *,
    cache_control: str,
    not_found: str = "Not found.",
    vary: str | None = None,
) -> Response:
    """The page for (key, variant) from the cache, else built; 404 when ``build`` finds nothing.

    ``build`` returns None when there is nothing to show: a 404 with ``not_found``.
    """
    page = await current_services().cache.fetch(key, variant, build)
    if page is None:
        raise APIError(404, not_found)
    return page_response(page, key, cache_control=cache_control, vary=vary)


@functools.lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header admits gzip (``gzip`` or ``*`` with q > 0). Pure.

    Remembered per header value: clients send a handful of distinct ones.
    """
    if not accept_encoding:
        return False
    return parse_accept_header(accept_encoding)["gzip"] > 0


class Representation(NamedTuple):
    """What is sent for a cached page: its body, ETag and Content-Encoding (None: identity)."""

    body: bytes
    etag: str
    encoding: str | None


def representation(page: CachedPage, accept_encoding: str | None) -> Representation:
    """The gzipped body when the page has one and the client accepts gzip, else the
    body as it is. Pure."""
    if page.gzipped is not None and accepts_gzip(accept_encoding):
        return Representation(page.gzipped, page.gzip_etag, "gzip")
    return Representation(page.body, page.etag, None)


def not_modified(page: CachedPage, if_none_match: ETags) -> bool:
    """Whether ``If-None-Match`` names either representation of the page (compared weakly,
    RFC 9110 13.1.2): both stand for the same content. Pure."""
    return if_none_match.contains_weak(page.etag.strip('"')) or (
        page.gzipped is not None and if_none_match.contains_weak(page.gzip_etag.strip('"'))
    )


def page_headers(
    page: CachedPage,
    *,
    cache_control: str,
    vary: str | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    plugin_headers: Sequence[tuple[str, str]] = (),
    sent: Representation | None = None,
) -> dict[str, str]:
    """Every header of the response for a cached page, bar Content-Type and Content-Length.

    ETag (of the representation ``sent``; the identity one by default), Content-Encoding,
    Cache-Control, X-PyPI-Last-Serial, CORS, ``Vary`` (plus ``Accept-Encoding`` for a page
    that has a gzipped body) and ``headers``, then the plugins' (``cheeseshop_response_headers``,
    as given by ``Hooks.response_headers``), which win on a clash. The same for a 200 and a
    304. Pure: the Quart views and the ASGI fast path (:mod:`cheeseshop.web.fastpath`)
    both send exactly these.
    """
    out = {
        "ETag": sent.etag if sent is not None else page.etag,
        "Cache-Control": cache_control,
        "X-PyPI-Last-Serial": str(page.serial),
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "X-PyPI-Last-Serial",
    }
    if sent is not None and sent.encoding is not None:
        out["Content-Encoding"] = sent.encoding
    if page.gzipped is not None:
        vary = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
    if vary:
        out["Vary"] = vary
    out.update(headers)
    out.update(plugin_headers)
    return out


def page_response(
    page: CachedPage,
    key: str,
    *,
    cache_control: str,
    vary: str | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
) -> Response:
    """The response for a cached page (gzipped when accepted): 304 when the client's ETag
    matches."""
    sent = representation(page, request.headers.get("Accept-Encoding"))
    if not_modified(page, request.if_none_match):
        response = Response(b"", status=304)
        # A 304 describes the 200 it stands for: no type or length of its own.
        del response.headers["Content-Type"]
        del response.headers["Content-Length"]
    else:
        response = Response(sent.body, content_type=page.content_type)
    services = current_services()
    response.headers.update(
        page_headers(
            page,
            cache_control=cache_control,
            vary=vary,
            headers=headers,
            plugin_headers=services.hooks.response_headers((key,), services.settings),
            sent=sent,
        )
    )
    return response
