"""What an upload looks like to ``cheeseshop_validate_upload`` implementations."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DescribedRelease", "UploadCandidate", "UploadRejected"]


class UploadRejected(Exception):
    """Raised by a plugin (or the core) to refuse an upload with a message for the user."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclasses.dataclass(frozen=True)
class UploadCandidate:
    """An upload that passed the core's checks and is about to be stored.

    ``path`` is a temporary file holding the uploaded bytes; it is removed after the
    request. ``metadata`` holds the form's metadata fields (lists for repeatable fields).
    """

    project: str
    normalized_name: str
    version: str
    filename: str
    packagetype: str
    path: Path
    size: int
    md5: str
    sha256: str
    blake2_256: str
    core_metadata: bytes | None
    metadata: Mapping[str, object]
    username: str
    new_project: bool


@dataclasses.dataclass(frozen=True)
class DescribedRelease:
    """The release whose description is being rendered (for ``cheeseshop_render_description``)."""

    project: str
    normalized_name: str
    version: str
    content_type: str
