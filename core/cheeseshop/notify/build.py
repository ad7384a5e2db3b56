"""Building notifications inside the transaction of the change they announce.

A notification is recorded in the outbox with its change, so it is sent if and only if
the change commits. Its recipients are chosen then, from the rows of that moment: the
project's Owners and Maintainers who have not opted out, each at their primary address
unless it is undeliverable.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import quote

from sqlalchemy import bindparam, or_, select

from cheeseshop.db import Executor
from cheeseshop.db.prepared import Prepared
from cheeseshop.db.models import Email, Role, RoleName, User
from cheeseshop.events import Notification, Recipient

__all__ = ["RELEASE_PUBLISHED", "new_notification_id", "release_published"]

RELEASE_PUBLISHED = "release-published"

# Built once, with a bound parameter: the upload path only binds the project's id.
_RELEASE_RECIPIENTS = Prepared(
    select(User.username, Email.email, Role.role_name)
    .join(Role, Role.user_id == User.id)
    .join(Email, Email.user_id == User.id)
    .where(
        Role.project_id == bindparam("project_id"),
        # Not IN (...): a literal list is a post-compile parameter, which Prepared refuses.
        or_(Role.role_name == RoleName.OWNER.value, Role.role_name == RoleName.MAINTAINER.value),
        User.is_active.is_(True),
        User.notify_release_published.is_(True),
        Email.primary.is_(True),
        Email.undeliverable_since.is_(None),
    )
    .order_by(User.username)
)


def new_notification_id(kind: str) -> str:
    """A new notification id: the kind and a random UUID, unique across indexes.

    Made once, when the notification is recorded, and stored with it in the outbox, so
    every delivery of the notification carries the same id. Only ``[a-z0-9-]``: it goes
    into Message-IDs and idempotency keys as it is.
    """
    return f"{kind}-{uuid.uuid4().hex}"


def release_published(
    session: Executor,
    *,
    project_id: int,
    project: str,
    normalized_name: str,
    version: str,
    published_by: str,
    created: datetime,
    base_url: str | None,
) -> Notification | None:
    """The ``release-published`` notification of a new release, or None when no one gets it.

    One ``SELECT``. Synchronous, for the upload's write transaction. Links are given
    only when ``base_url`` is set: one built from the request's Host header would let an
    uploader send the project's other maintainers links to a host of their choosing.
    """
    recipients: dict[str, Recipient] = {}
    for username, email, role in _RELEASE_RECIPIENTS.rows(session, {"project_id": project_id}):
        recipients.setdefault(email, Recipient(username=username, email=email, role=role))
    if not recipients:
        return None
    base = base_url.rstrip("/") if base_url else None
    return Notification(
        notification_id=new_notification_id(RELEASE_PUBLISHED),
        kind=RELEASE_PUBLISHED,
        recipients=tuple(recipients.values()),
        values={
            "project": project,
            "normalized_name": normalized_name,
            "version": version,
            "published_by": published_by,
            "project_url": f"{base}/simple/{normalized_name}/" if base else None,
            "release_url": f"{base}/pypi/{normalized_name}/{quote(version, safe='')}/json" if base else None,
        },
        created=created,
    )
