"""Cheeseshop: a self-hostable, PyPI-compatible Python package index.

The public facade for plugin authors: import from here, never from ``cheeseshop.app``.
"""

from cheeseshop.config import PluginSettings, Settings
from cheeseshop.events import CachePurge, Event, FileUploaded, ProjectChanged, ReleasePublished
from cheeseshop.plugins import hookimpl
from cheeseshop.storage import FileStorage, storage_path
from cheeseshop.upload.candidate import DescribedRelease, UploadCandidate, UploadRejected

__all__ = [
    "CachePurge",
    "DescribedRelease",
    "Event",
    "FileStorage",
    "FileUploaded",
    "PluginSettings",
    "ProjectChanged",
    "ReleasePublished",
    "Settings",
    "UploadCandidate",
    "UploadRejected",
    "hookimpl",
    "storage_path",
]
__version__ = "0.1.0"
