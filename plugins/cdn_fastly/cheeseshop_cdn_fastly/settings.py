"""The ``[cdn_fastly]`` settings section (variables ``CHEESESHOP_CDN_FASTLY__<KEY>``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from cheeseshop import PluginSettings

__all__ = ["DEFAULT_SURROGATE_CONTROL", "FastlySettings"]

#: What PyPI (warehouse) sends for its Simple and JSON pages: the edge keeps a page a day,
#: may serve it 5 minutes stale while it fetches a fresh one, and a day stale if the
#: origin is down. A purge ends the day early, so the long lifetime costs no freshness.
DEFAULT_SURROGATE_CONTROL = "max-age=86400, stale-while-revalidate=300, stale-if-error=86400"


class FastlySettings(PluginSettings):
    """How to reach the Fastly API, and what the edge is told about cacheable pages."""

    api_key: SecretStr = Field(
        description="Fastly API token with the purge_select scope. Never printed or logged."
    )
    # Fastly service ids are alphanumeric; refusing anything else keeps the id from
    # changing the shape of the purge URL it is put into.
    service_id: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$", description="The Fastly service that fronts this index."
    )
    api_url: str = Field(
        default="https://api.fastly.com",
        description="Base URL of the Fastly API (or of a Fastly-compatible purge API).",
    )
    surrogate_control: str = Field(
        default=DEFAULT_SURROGATE_CONTROL,
        description="Surrogate-Control sent with cacheable pages: how long the edge keeps "
        "them. Empty: not sent (the edge then follows Cache-Control).",
    )
    soft_purge: bool = Field(
        default=True,
        description="Mark purged pages stale (Fastly-Soft-Purge) rather than dropping them, "
        "so the edge can still serve them if the origin is down.",
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of each call to the Fastly API."
    )

    @field_validator("api_key")
    @classmethod
    def _header_safe(cls, value: SecretStr) -> SecretStr:
        # Checked here, once, because httpx would refuse it on every purge with an
        # exception whose repr holds the whole value; the message names no character.
        secret = value.get_secret_value()
        if not secret or not all("!" <= char <= "~" for char in secret):
            raise ValueError("must be a non-empty Fastly API token (printable ASCII, no spaces)")
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://api.fastly.com")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or a fragment")
        # Paths are appended to it; a trailing slash would double up.
        return value.rstrip("/")
