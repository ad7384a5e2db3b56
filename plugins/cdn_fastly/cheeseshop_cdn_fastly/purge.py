"""Purging by surrogate key through the Fastly API.

Always the batch endpoint, ``POST /service/{service_id}/purge`` with the keys in a
``Surrogate-Key`` header, even for one key: Cheeseshop's keys contain ``/``
(``project/numpy``), which the single-key form would need percent-encoded in its path
(``project%2Fnumpy``), an encoding that proxies and HTTP libraries may undo on the way. One
form also means one code path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import httpx

from cheeseshop_cdn_fastly.settings import FastlySettings

__all__ = ["BATCH_LIMIT", "FastlyPurgeError", "batches", "purge_keys"]

log = logging.getLogger(__name__)

#: Most keys Fastly accepts in one batch purge request.
BATCH_LIMIT = 256

_USER_AGENT = "cheeseshop-cdn-fastly/0.1.0"
#: How much of an error response is quoted in the exception: enough for Fastly's ``msg``.
_QUOTED_BODY = 300
#: How many keys an error message names before it says "…".
_NAMED_KEYS = 5


class FastlyPurgeError(RuntimeError):
    """Fastly did not confirm a purge; raised so the outbox retries this plugin.

    The message never contains the API key. ``status`` is the HTTP status, or ``None``
    when no answer came (connection refused, time-out).
    """

    def __init__(self, message: str, *, status: int | None, keys: Sequence[str]) -> None:
        super().__init__(message)
        self.status = status
        self.keys = tuple(keys)


def batches(keys: Iterable[str], *, size: int = BATCH_LIMIT) -> list[tuple[str, ...]]:
    """``keys`` without duplicates or blanks, in order, cut into groups of at most ``size``."""
    if size < 1:
        raise ValueError(f"batch size must be positive, not {size}")
    unique = [key for key in dict.fromkeys(keys) if key]
    return [tuple(unique[start : start + size]) for start in range(0, len(unique), size)]


def purge_keys(keys: Iterable[str], settings: FastlySettings) -> None:
    """Purge every response tagged with any of ``keys`` from the Fastly service.

    Sends one request per :data:`BATCH_LIMIT` keys, soft unless ``settings.soft_purge``
    is off. Purging a key twice is harmless, so a retry after a partial failure may
    repeat batches that already went through.

    :raises FastlyPurgeError: on a non-2xx answer or a transport error.
    """
    groups = batches(keys)
    if not groups:
        return
    secret = settings.api_key.get_secret_value()
    headers = {"Fastly-Key": secret, "Accept": "application/json", "User-Agent": _USER_AGENT}
    if settings.soft_purge:
        # Any value turns it on; "1" is what Fastly's own clients send.
        headers["Fastly-Soft-Purge"] = "1"
    url = f"{settings.api_url}/service/{settings.service_id}/purge"
    # No redirects: following one would hand the API key to whatever host it names.
    client = httpx.Client(headers=headers, timeout=settings.timeout_seconds, follow_redirects=False)
    with client:
        for group in groups:
            _purge_batch(client, url, group, settings, secret)


def _purge_batch(
    client: httpx.Client, url: str, keys: tuple[str, ...], settings: FastlySettings, secret: str
) -> None:
    what = f"Fastly purge of {_describe_keys(keys)} on service {settings.service_id}"
    try:
        response = client.post(url, headers={"Surrogate-Key": " ".join(keys)})
    except httpx.HTTPError as error:
        # "from None": the chained exception carries the request, headers and all.
        raise FastlyPurgeError(
            f"{what} failed: {type(error).__name__}: {_redact(str(error), secret)}",
            status=None,
            keys=keys,
        ) from None
    if not response.is_success:
        # Redacted before it is cut: a cut through the key would leave part of it.
        body = _redact(response.text, secret)[:_QUOTED_BODY].strip()
        raise FastlyPurgeError(
            f"{what} failed: HTTP {response.status_code}" + (f": {body}" if body else ""),
            status=response.status_code,
            keys=keys,
        )
    log.info(
        "%s-purged %d key(s) on Fastly service %s",
        "soft" if settings.soft_purge else "hard",
        len(keys),
        settings.service_id,
    )


def _describe_keys(keys: Sequence[str]) -> str:
    shown = " ".join(keys[:_NAMED_KEYS])
    more = f" (+{len(keys) - _NAMED_KEYS} more)" if len(keys) > _NAMED_KEYS else ""
    return f"{len(keys)} key(s) [{shown}{more}]"


def _redact(text: str, secret: str) -> str:
    # A misbehaving proxy could echo the request back; never let the key through.
    return text.replace(secret, "********") if secret else text
