"""Events passed to the after-commit hooks.

Each event is a frozen dataclass of plain values, so it can be stored in the outbox as
JSON and rebuilt exactly by the worker that delivers it, possibly after a restart.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, ClassVar, Self

__all__ = [
    "CachePurge",
    "Event",
    "FileUploaded",
    "Notification",
    "ProjectChanged",
    "Recipient",
    "ReleasePublished",
    "event_from_json",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: which hook receives it, and its JSON form."""

    hook: ClassVar[str]
    #: The name of the hook parameter the event is passed as.
    argument: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data; datetimes become ISO-8601 strings."""
        return _plain(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Rebuild the event stored by :meth:`to_json`.

        Fields this version does not know are left out: during a rolling upgrade an older
        worker may read an event a newer web process recorded with a field added since.
        """
        known = {field.name: field for field in dataclasses.fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        for name, field in known.items():
            if field.type in ("datetime", datetime) and isinstance(values.get(name), str):
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


_SCALARS = frozenset({str, int, float, bool})


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: a dataclass as a dict of its fields, a tuple or list
    as a list, a dict's values and a datetime (ISO-8601) likewise, anything else as it is.
    ``dataclasses.asdict`` deep-copies every value on the way, at four times the cost, and
    an upload records three events."""
    if value is None or type(value) in _SCALARS:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileUploaded(Event):
    """A distribution file was accepted and committed.

    ``path`` is the file's storage path (``h[:2]/h[2:4]/h[4:]/<filename>``, ``h`` its
    blake2b-256); ``metadata_path`` the PEP 658 metadata file beside it, or None.
    """

    hook: ClassVar[str] = "cheeseshop_file_uploaded"

    project: str
    normalized_name: str
    version: str
    filename: str
    path: str
    metadata_path: str | None
    packagetype: str
    size: int
    sha256: str
    blake2_256: str
    uploaded_by: str
    upload_time: datetime
    serial: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReleasePublished(Event):
    """A release (a version of a project) received its first file and became visible."""

    hook: ClassVar[str] = "cheeseshop_release_published"

    project: str
    normalized_name: str
    version: str
    published_by: str
    created: datetime
    serial: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProjectChanged(Event):
    """Something about a project changed other than a new file: a yank, an unyank, a
    deletion, a status.

    ``action`` is one of ``"yank"``, ``"unyank"`` (``version`` set), ``"delete"``
    (``version`` set; ``filename`` too when one file was deleted rather than the whole
    release) or ``"status"`` (``status`` set, one of active, archived, quarantined,
    deprecated); ``reason`` is what the maintainer gave, if anything.
    """

    hook: ClassVar[str] = "cheeseshop_project_changed"

    project: str
    normalized_name: str
    action: str
    version: str | None = None
    filename: str | None = None
    status: str | None = None
    reason: str | None = None
    changed_by: str | None = None
    serial: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class CachePurge(Event):
    """Cached responses tagged with any of ``keys`` are out of date since ``serial``.

    Keys name what a response shows (see :mod:`cheeseshop.cache.keys`):
    ``project/<normalized name>`` for a project's pages, ``all-projects`` for the root index.
    """

    hook: ClassVar[str] = "cheeseshop_purge"

    keys: tuple[str, ...]
    serial: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Rebuild the event; JSON stores the keys as a list."""
        return cls(keys=tuple(data["keys"]), serial=data["serial"])


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipient:
    """Someone a notification is for: their account and the address to reach them at.

    ``role`` says why they receive it (``Owner`` or ``Maintainer`` of the project), or None.
    """

    username: str
    email: str
    role: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Notification(Event):
    """Something people should be told about, addressed to them; delivered to ``cheeseshop_notify``.

    ``notification_id`` is unique and stays the same on every delivery of this
    notification, so a receiver recognises a repeat (the e-mail plugin sends each
    recipient one e-mail per id; a webhook can pass it on as an idempotency key).
    ``kind`` names what happened and so which templates render it: ``release-published``.
    ``values`` holds the plain strings those templates show; for ``release-published``:
    ``project``, ``normalized_name``, ``version``, ``published_by``, and, when ``base_url``
    is set, ``project_url`` (the project's Simple page) and ``release_url`` (the
    release's JSON); ``created`` is when it happened.
    """

    hook: ClassVar[str] = "cheeseshop_notify"
    argument: ClassVar[str] = "notification"

    notification_id: str
    kind: str
    recipients: tuple[Recipient, ...]
    values: dict[str, str | None]
    created: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Rebuild the notification; JSON stores the recipients as a list of objects."""
        return cls(
            notification_id=data["notification_id"],
            kind=data["kind"],
            recipients=tuple(Recipient(**recipient) for recipient in data["recipients"]),
            values=dict(data["values"]),
            created=datetime.fromisoformat(data["created"]),
        )


_EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (FileUploaded, ReleasePublished, ProjectChanged, CachePurge, Notification)
}


def event_from_json(kind: str, data: dict[str, Any]) -> Event:
    """Rebuild an event from its class name and JSON data (as stored in the outbox)."""
    try:
        return _EVENT_TYPES[kind].from_json(data)
    except KeyError:
        raise ValueError(f"unknown event type {kind!r}") from None
