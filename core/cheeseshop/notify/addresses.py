"""Who gets e-mail: undeliverable addresses and each user's notification choices.

An address that bounced for good or drew a complaint is marked undeliverable (why, and
since when) and unverified, and the index stops mailing it; an e-mail plugin that learns
of bounces (SES's, say) calls :func:`mark_undeliverable`. A user opts out of release
e-mail with ``cheeseshop user notifications NAME --no-release-published``.
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cheeseshop.accounts.service import AccountError
from cheeseshop.db import Database, Executor
from cheeseshop.db.models import Email, User, utcnow

__all__ = [
    "AddressState",
    "NotificationChoices",
    "clear_undeliverable",
    "mark_address_undeliverable",
    "mark_undeliverable",
    "notification_choices",
]


def _matching(address: str) -> object:
    # Providers report addresses in their own case; the mailbox part is case-insensitive
    # in practice, and no one registers two addresses differing only in case to be told apart.
    return func.lower(Email.email) == address.strip().lower()


def mark_undeliverable(session: Executor, address: str, reason: str) -> bool:
    """Stop mailing ``address``: mark it undeliverable and unverified.

    Synchronous, for ``Database.run_core``/``run_write`` (or ``AsyncSession.run_sync``); from async
    code use :func:`mark_address_undeliverable`. Idempotent, as bounce reports may come
    more than once: the first reason and time are kept. Returns whether the address is
    one of a user's.
    """
    matched = session.execute(update(Email).where(_matching(address)).values(verified=False))
    session.execute(
        update(Email)
        .where(_matching(address), Email.undeliverable_since.is_(None))
        .values(undeliverable_since=utcnow(), undeliverable_reason=reason[:2000])
    )
    return bool(matched.rowcount)  # type: ignore[attr-defined]


async def mark_address_undeliverable(db: Database, address: str, reason: str) -> bool:
    """:func:`mark_undeliverable` in its own transaction, from async code."""
    return await db.run_write(functools.partial(mark_undeliverable, address=address, reason=reason))


def clear_undeliverable(session: Session, address: str) -> bool:
    """Mail ``address`` again (its owner fixed it); it stays unverified. Returns whether it exists."""
    result = session.execute(
        update(Email).where(_matching(address)).values(undeliverable_since=None, undeliverable_reason=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class AddressState:
    """One of a user's addresses, as far as notifications are concerned."""

    email: str
    primary: bool
    verified: bool
    undeliverable_since: datetime | None
    undeliverable_reason: str | None


@dataclasses.dataclass(frozen=True)
class NotificationChoices:
    """What a user is e-mailed about, and the addresses they have."""

    username: str
    release_published: bool
    addresses: tuple[AddressState, ...]


async def notification_choices(
    session: AsyncSession, username: str, *, release_published: bool | None = None
) -> NotificationChoices:
    """A user's notification choices, changing ``release_published`` first when given.

    Raises :class:`cheeseshop.accounts.service.AccountError` for an unknown user.
    """
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise AccountError(f"no user {username!r}")
    if release_published is not None:
        user.notify_release_published = release_published
        await session.flush()
    emails = await session.scalars(select(Email).where(Email.user_id == user.id).order_by(Email.id))
    return NotificationChoices(
        username=user.username,
        release_published=user.notify_release_published,
        addresses=tuple(
            AddressState(e.email, e.primary, e.verified, e.undeliverable_since, e.undeliverable_reason)
            for e in emails
        ),
    )
