"""SQLAlchemy models. Schema changes go through Alembic migrations only (db/migrations).

Every uniqueness rule that racing requests could break lives here, as a constraint:
one file per filename, one file per content digest, one sdist per release, a filename
registry that is never emptied.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from cheeseshop.packaging.names import confusable_fold
from cheeseshop.storage import metadata_path

__all__ = [
    "ApiToken",
    "Base",
    "Email",
    "File",
    "FilenameRegistry",
    "JournalEntry",
    "NotificationEmail",
    "OutboxDelivery",
    "OutboxEvent",
    "Project",
    "ProjectStatus",
    "Release",
    "Role",
    "RoleName",
    "User",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class ProjectStatus(enum.StrEnum):
    """PEP 792 project status."""

    ACTIVE = "active"
    ARCHIVED = "archived"
    QUARANTINED = "quarantined"
    DEPRECATED = "deprecated"


class RoleName(enum.StrEnum):
    """What a user may do on a project."""

    OWNER = "Owner"
    MAINTAINER = "Maintainer"


class Project(Base):
    """A named project; ``normalized_name`` is what every lookup uses."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    normalized_name: Mapped[str] = mapped_column(String(200), unique=True)
    # confusable_fold(name): "F1ask" and "Flask" fold alike, so only one can exist.
    ultranormalized_name: Mapped[str] = mapped_column(
        String(200),
        unique=True,
        default=lambda context: confusable_fold(context.get_current_parameters()["name"]),
    )
    status: Mapped[str] = mapped_column(String(20), default=ProjectStatus.ACTIVE.value)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    upload_limit: Mapped[int | None] = mapped_column(BigInteger)
    total_size_limit: Mapped[int | None] = mapped_column(BigInteger)
    total_size: Mapped[int] = mapped_column(BigInteger, default=0)
    last_serial: Mapped[int] = mapped_column(Integer, default=0)

    releases: Mapped[list[Release]] = relationship(back_populates="project")


class Release(Base):
    """One version of a project, with the core metadata of its first upload."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("project_id", "canonical_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(100))
    canonical_version: Mapped[str] = mapped_column(String(100))
    is_prerelease: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    metadata_version: Mapped[str | None] = mapped_column(String(10))
    summary: Mapped[str | None] = mapped_column(String(512))
    description: Mapped[str | None] = mapped_column(Text)
    description_content_type: Mapped[str | None] = mapped_column(String(200))
    # Rendered and sanitized at upload (readme_renderer), then passed through plugins'
    # cheeseshop_render_description; None when there is no description.
    description_html: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(Text)
    author_email: Mapped[str | None] = mapped_column(Text)
    maintainer: Mapped[str | None] = mapped_column(Text)
    maintainer_email: Mapped[str | None] = mapped_column(Text)
    license: Mapped[str | None] = mapped_column(Text)
    license_expression: Mapped[str | None] = mapped_column(Text)
    keywords: Mapped[str | None] = mapped_column(Text)
    home_page: Mapped[str | None] = mapped_column(Text)
    download_url: Mapped[str | None] = mapped_column(Text)
    requires_python: Mapped[str | None] = mapped_column(Text)
    classifiers: Mapped[list[Any]] = mapped_column(default=list)
    platforms: Mapped[list[Any]] = mapped_column(default=list)
    requires_dist: Mapped[list[Any]] = mapped_column(default=list)
    provides_extra: Mapped[list[Any]] = mapped_column(default=list)
    license_files: Mapped[list[Any]] = mapped_column(default=list)
    dynamic: Mapped[list[Any]] = mapped_column(default=list)
    supported_platforms: Mapped[list[Any]] = mapped_column(default=list)
    provides_dist: Mapped[list[Any]] = mapped_column(default=list)
    obsoletes_dist: Mapped[list[Any]] = mapped_column(default=list)
    requires_external: Mapped[list[Any]] = mapped_column(default=list)
    import_names: Mapped[list[Any]] = mapped_column(default=list)
    import_namespaces: Mapped[list[Any]] = mapped_column(default=list)
    project_urls: Mapped[dict[str, Any]] = mapped_column(default=dict)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yanked_reason: Mapped[str | None] = mapped_column(Text)
    uploader_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    project: Mapped[Project] = relationship(back_populates="releases")
    files: Mapped[list[File]] = relationship(back_populates="release")


class File(Base):
    """A stored distribution file. Visible only once both its bytes and this row exist."""

    __tablename__ = "files"
    __table_args__ = (
        # One sdist per release; any number of wheels.
        Index(
            "uq_files_one_sdist_per_release",
            "release_id",
            unique=True,
            sqlite_where=text("packagetype = 'sdist'"),
            postgresql_where=text("packagetype = 'sdist'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255), unique=True)
    path: Mapped[str] = mapped_column(String(400))
    size: Mapped[int] = mapped_column(BigInteger)
    md5_digest: Mapped[str] = mapped_column(String(32))
    sha256_digest: Mapped[str] = mapped_column(String(64), index=True)
    blake2_256_digest: Mapped[str] = mapped_column(String(64), unique=True)
    packagetype: Mapped[str] = mapped_column(String(20))
    python_version: Mapped[str] = mapped_column(String(100))
    requires_python: Mapped[str | None] = mapped_column(Text)
    upload_time: Mapped[datetime] = mapped_column(default=utcnow)
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    metadata_sha256: Mapped[str | None] = mapped_column(String(64))
    metadata_blake2_256: Mapped[str | None] = mapped_column(String(64))
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)

    release: Mapped[Release] = relationship(back_populates="files")

    @property
    def metadata_path(self) -> str | None:
        """Storage path of the PEP 658 metadata file, when there is one."""
        return metadata_path(self.path) if self.metadata_sha256 else None


class FilenameRegistry(Base):
    """Every filename ever accepted. Never deleted: a filename is never reusable."""

    __tablename__ = "filename_registry"

    filename: Mapped[str] = mapped_column(String(255), primary_key=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class JournalEntry(Base):
    """One change to a project. ``id`` is the serial mirrors follow: it only grows.

    Written only by :func:`cheeseshop.journal.record_changes`, which on PostgreSQL numbers
    the rows itself under its lock (the column's sequence is not used there).
    """

    __tablename__ = "journal_entries"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(Text)
    submitted_date: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_by: Mapped[str | None] = mapped_column(String(100))


class User(Base):
    """An account. Passwords are argon2id hashes."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    date_joined: Mapped[datetime] = mapped_column(default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column()
    password_changed: Mapped[datetime | None] = mapped_column()
    # Whether to e-mail this user when a project they own or maintain publishes a release.
    notify_release_published: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    emails: Mapped[list[Email]] = relationship(back_populates="user")


class Email(Base):
    """An e-mail address of a user."""

    __tablename__ = "emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when mail to this address bounced for good or drew a complaint: no more is sent.
    undeliverable_since: Mapped[datetime | None] = mapped_column()
    undeliverable_reason: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship(back_populates="emails")


class Role(Base):
    """A user's role on a project."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("user_id", "project_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    role_name: Mapped[str] = mapped_column(String(20))


class ApiToken(Base):
    """An API token: the root key of its macaroon, and what it may do (for display)."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    key: Mapped[str] = mapped_column(String(64))
    projects: Mapped[list[Any] | None] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    expires: Mapped[datetime | None] = mapped_column()
    last_used: Mapped[datetime | None] = mapped_column()
    revoked: Mapped[datetime | None] = mapped_column()


class OutboxEvent(Base):
    """An event committed with the change it describes, waiting to be delivered.

    ``lease_until`` lets exactly one deliverer work on an event at a time;
    ``completed`` is set once every receiving plugin has taken it.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_pending", "completed", "next_attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    hook: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column()
    created: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column()
    completed: Mapped[datetime | None] = mapped_column()


class OutboxDelivery(Base):
    """The delivery of one event to one plugin: done, or failing with retries."""

    __tablename__ = "outbox_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "plugin"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"))
    plugin: Mapped[str] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[datetime | None] = mapped_column()
    next_attempt: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)


class NotificationEmail(Base):
    """The e-mail of one notification to one address: sent, or refused for good.

    The default e-mail plugin writes a row right after the sender accepted the message
    (``message_id``, the sender's id for it) or refused the address itself (``error``),
    and sends nothing for a (notification, address) that has a row: a repeated delivery
    of the notification mails nobody twice.
    """

    __tablename__ = "notification_emails"
    __table_args__ = (UniqueConstraint("notification_id", "recipient"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    notification_id: Mapped[str] = mapped_column(String(100))
    recipient: Mapped[str] = mapped_column(String(254))
    message_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
