"""The core's page cache as a purge subscriber (default plugin ``page_cache``).

Blocking this plugin (``blocked_plugins = ["page_cache"]``) turns the page cache off:
without its purges, a cached page could outlive its data.
"""

from __future__ import annotations

from cheeseshop.config import Settings
from cheeseshop.events import CachePurge
from cheeseshop.plugins import hookimpl

from cheeseshop.cache.memory import purge_local_caches

__all__ = ["cheeseshop_purge"]


# tryfirst: the outbox delivers in hook order, and a CDN purged before the origin's own
# cache would refetch the stale page from it and keep it.
@hookimpl(tryfirst=True)
def cheeseshop_purge(event: CachePurge, settings: Settings) -> None:
    """Purge the keys from this process's memory caches and from the shared Redis cache."""
    purge_local_caches(event.keys)
    if settings.redis_url is not None:
        from cheeseshop.cache.redis import purge_redis

        purge_redis(settings.redis_url.get_secret_value(), event.keys)
