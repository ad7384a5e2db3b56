"""Cheeseshop: a self-hostable, PyPI-compatible Python package index.

The public facade for plugin authors: import from here, never from ``cheeseshop.app``.
"""

from cheeseshop.config import PluginSettings, Settings
from cheeseshop.events import (
    CachePurge,
    Event,
    FileUploaded,
    Notification,
    ProjectChanged,
    Recipient,
    ReleasePublished,
)
from cheeseshop.notify import (
    EmailSender,
    EmailSendError,
    Mailer,
    mark_address_undeliverable,
    mark_undeliverable,
)
from cheeseshop.plugins import hookimpl
from cheeseshop.storage import FileStorage, StorageUnavailable, StoredFileInfo, storage_path
from cheeseshop.upload.candidate import DescribedRelease, UploadCandidate, UploadRejected
from cheeseshop.worker.schedule import PeriodicTask

__all__ = [
    "CachePurge",
    "DescribedRelease",
    "EmailSendError",
    "EmailSender",
    "Event",
    "FileStorage",
    "FileUploaded",
    "Mailer",
    "Notification",
    "PeriodicTask",
    "PluginSettings",
    "ProjectChanged",
    "Recipient",
    "ReleasePublished",
    "Settings",
    "StorageUnavailable",
    "StoredFileInfo",
    "UploadCandidate",
    "UploadRejected",
    "hookimpl",
    "mark_address_undeliverable",
    "mark_undeliverable",
    "storage_path",
]
__version__ = "0.1.0"
