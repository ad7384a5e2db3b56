"""The services one application instance runs with, built once by ``create_app``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from quart import current_app

if TYPE_CHECKING:
    from cheeseshop.cache import PageCache
    from cheeseshop.config import Settings
    from cheeseshop.db import Database
    from cheeseshop.outbox import Outbox
    from cheeseshop.plugins import Hooks
    from cheeseshop.storage import FileStorage

__all__ = ["EXTENSION_KEY", "Services", "current_services"]

EXTENSION_KEY = "cheeseshop"


@dataclasses.dataclass
class Services:
    """Settings, hooks and the service objects chosen by plugins."""

    settings: Settings
    hooks: Hooks
    db: Database
    storage: FileStorage
    outbox: Outbox
    cache: PageCache


def current_services() -> Services:
    """The services of the application handling the current request."""
    return current_app.extensions[EXTENSION_KEY]
