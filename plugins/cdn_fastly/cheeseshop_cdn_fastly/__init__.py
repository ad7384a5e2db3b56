"""Cheeseshop plugin ``cdn_fastly``: put Fastly in front of the index.

Every cacheable response (the Simple pages, the root, the JSON API) is tagged with its
cache keys as ``Surrogate-Key`` and given a ``Surrogate-Control`` lifetime; after every
committed change, the outbox worker soft-purges the keys the change made stale through
Fastly's batch purge API. Enable with ``CHEESESHOP_PLUGINS=cdn_fastly`` and a
``[cdn_fastly]`` section (see :class:`FastlySettings`).
"""

from __future__ import annotations

from collections.abc import Mapping

import cheeseshop
from cheeseshop import CachePurge, PluginSettings, Settings

from cheeseshop_cdn_fastly.headers import surrogate_headers
from cheeseshop_cdn_fastly.purge import BATCH_LIMIT, FastlyPurgeError, batches, purge_keys
from cheeseshop_cdn_fastly.settings import DEFAULT_SURROGATE_CONTROL, FastlySettings

__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_SURROGATE_CONTROL",
    "NAME",
    "FastlyPurgeError",
    "FastlySettings",
    "batches",
    "cheeseshop_purge",
    "cheeseshop_response_headers",
    "cheeseshop_settings",
    "purge_keys",
    "surrogate_headers",
]

#: The entry-point name, which is also the settings section's name.
NAME = "cdn_fastly"


def _section(settings: Settings) -> FastlySettings:
    section: FastlySettings = settings.section(NAME)
    return section


@cheeseshop.hookimpl
def cheeseshop_settings() -> type[PluginSettings]:
    """Declare the ``[cdn_fastly]`` section: :class:`FastlySettings`."""
    return FastlySettings


@cheeseshop.hookimpl
def cheeseshop_response_headers(
    keys: tuple[str, ...], settings: Settings
) -> Mapping[str, str] | None:
    """Tag a cacheable response with its keys for Fastly, and say how long the edge keeps it."""
    return surrogate_headers(keys, _section(settings))


@cheeseshop.hookimpl
def cheeseshop_purge(event: CachePurge, settings: Settings) -> None:
    """Purge ``event.keys`` from Fastly; raises :class:`FastlyPurgeError` to be retried.

    Runs in the outbox worker after the change is committed, so the edge fetches the new
    page, not the old one.
    """
    purge_keys(event.keys, _section(settings))
