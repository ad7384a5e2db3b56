"""How every Cheeseshop command logs: to stderr, as ``time LEVEL logger: message``."""

from __future__ import annotations

import logging

__all__ = ["LOG_FORMAT", "configure"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure() -> None:
    """Log INFO and above to stderr in :data:`LOG_FORMAT` (unless the root logger has a
    handler already), and only warnings of alembic's."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("alembic").setLevel(logging.WARNING)
