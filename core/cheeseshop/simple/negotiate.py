"""Content negotiation for the Simple API (PEP 691). Pure.

An explicit match beats a wildcard at equal quality; among explicit matches JSON is
preferred (pip and uv list it first), while a bare ``*/*`` or no Accept at all gets
``text/html`` (what browsers and old clients expect).
"""

from __future__ import annotations

import functools

__all__ = ["HTML", "JSON", "V1_HTML", "NotAcceptable", "choose"]

JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
HTML = "text/html"
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON,
    "application/vnd.pypi.simple.latest+html": V1_HTML,
}
_OFFERS = (JSON, V1_HTML, HTML)


class NotAcceptable(ValueError):
    """None of the Simple API's formats is acceptable to the client."""


def _parse(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value)))
                except ValueError:
                    quality = 0.0
        ranges.append((_ALIASES.get(media.lower(), media.lower()), quality))
    return ranges


def _match(offer: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """Quality and specificity (2 exact, 1 ``type/*``, 0 ``*/*``) of the best range for offer."""
    best: tuple[int, float] | None = None
    for media, quality in ranges:
        if media == offer:
            specificity = 2
        elif media.endswith("/*") and offer.startswith(media[:-1]):
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        # The most specific matching range decides the quality (RFC 9110 §12.5.1).
        if best is None or specificity > best[0]:
            best = (specificity, quality)
    return (0.0, -1) if best is None else (best[1], best[0])


@functools.lru_cache(maxsize=256)
def choose(accept: str | None, format_override: str | None = None) -> str:
    """The content type to answer with; raises NotAcceptable.

    Cached: installers send the same few Accept headers on every request. (An unbounded
    variety of headers only cycles the 256 entries; exceptions are not cached.)
    """
    if format_override:
        wanted = _ALIASES.get(format_override.lower(), format_override.lower())
        if wanted in _OFFERS:
            return wanted
        raise NotAcceptable(f"unknown format {format_override!r}")
    if not accept or not accept.strip():
        return HTML
    ranges = _parse(accept)
    scored = []
    for offer in _OFFERS:
        quality, specificity = _match(offer, ranges)
        if quality > 0:
            # Explicit: prefer JSON; wildcard: prefer text/html.
            preference = _OFFERS.index(offer) if specificity == 2 else -_OFFERS.index(offer)
            scored.append((-quality, -specificity, preference, offer))
    if not scored:
        raise NotAcceptable(accept)
    return min(scored)[3]
