"""Cache keys: what a cached response shows, so a change can name what it makes stale.

The same keys tag the core's page cache entries, go to a CDN as ``Surrogate-Key`` (through
``cheeseshop_response_headers``) and come back in ``cheeseshop_purge``.
"""

from __future__ import annotations

__all__ = ["ALL_PROJECTS", "change_keys", "file_key", "is_file_key", "project_key"]

#: The root index: it lists every project with its serial, so every change touches it.
ALL_PROJECTS = "all-projects"
_FILE = "file/"


def project_key(normalized_name: str) -> str:
    """The key of everything shown about one project (Simple page, JSON API)."""
    return f"project/{normalized_name}"


def file_key(path: str) -> str:
    """The key of one stored file's download (``path``: its storage path).

    Files never change, so only a deletion purges it: for a CDN in front of
    ``/packages/``, which would otherwise keep serving a deleted file for a year.
    """
    return f"{_FILE}{path}"


def is_file_key(key: str) -> bool:
    """Whether ``key`` names a file's download (see :func:`file_key`)."""
    return key.startswith(_FILE)


def change_keys(normalized_name: str) -> tuple[str, ...]:
    """The keys a committed change to ``normalized_name`` makes stale."""
    return (project_key(normalized_name), ALL_PROJECTS)
