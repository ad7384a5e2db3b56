"""The headers that tell Fastly how long to keep a page and which keys purge it."""

from __future__ import annotations

from cheeseshop.cache.keys import is_file_key

from cheeseshop_cdn_fastly.settings import FastlySettings

__all__ = ["surrogate_headers"]


def surrogate_headers(keys: tuple[str, ...], settings: FastlySettings) -> dict[str, str] | None:
    """``Surrogate-Key`` (the keys, space-separated) and ``Surrogate-Control`` for ``keys``.

    Fastly reads both from the origin's response and strips ``Surrogate-Control`` before
    the response leaves the edge, so it governs the edge alone while ``Cache-Control``
    (set by the core) governs browsers and pip.

    :returns: the headers, or ``None`` when there are no keys: a page that no purge can
        reach must not be kept at the edge for longer than ``Cache-Control`` allows.
    """
    if not keys:
        return None
    headers = {"Surrogate-Key": " ".join(dict.fromkeys(keys))}
    # A download is immutable: the edge keeps it as long as its Cache-Control says (a
    # year); its key is only for purging it when the file is deleted.
    if settings.surrogate_control and not all(is_file_key(key) for key in keys):
        headers["Surrogate-Control"] = settings.surrogate_control
    return headers
