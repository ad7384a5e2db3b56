"""The mailer: the index's e-mail sender behind a record of what was sent.

Notifications are delivered at least once (the outbox retries after any failure or
crash), yet each person should get one e-mail, not two. So every e-mail of a
notification is recorded, per (notification id, address), in ``notification_emails``
right after the sender accepted it, and a repeated delivery sends only what has no row.

The window that remains, honestly: when the process dies, or the database fails, after
the sender accepted an e-mail and before its row is committed, the next delivery sends
it again. It carries the same ``Message-ID`` then (derived from the notification id and
the address), which lets mail programs and some providers fold the two; the embedded
default even replaces its own file. Recording *before* sending would close this window
only by opening a worse one: an e-mail recorded but never sent is lost for good.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from email.message import EmailMessage
from typing import TypeVar

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from cheeseshop.db import Database, Executor, dialect_name
from cheeseshop.db.models import NotificationEmail, utcnow
from cheeseshop.db.prepared import Prepared
from cheeseshop.notify.addresses import mark_undeliverable
from cheeseshop.notify.senders import EmailSender, EmailSendError

__all__ = ["Mailer"]

T = TypeVar("T")

#: Longest wait for one database step of the mailer, from a worker thread.
DATABASE_TIMEOUT = 120.0


class Mailer:
    """Sends e-mail through the chosen :class:`EmailSender` and records what was sent.

    Handed to ``cheeseshop_notify`` implementations. Its methods block: event hooks run
    in worker threads while the event loop goes on, and the record lives in the database
    (see :meth:`Database.call_core_blocking`: in the calling thread, or, with no blocking
    engine, through the event loop, since an async connection belongs to its loop). So
    the outbox hands each delivery a mailer :meth:`bound` to the running loop; calling
    one on the loop itself is refused, since it could wait for itself.
    """

    def __init__(
        self, db: Database, sender: EmailSender | None, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.db = db
        self.sender = sender
        self._loop = loop

    @property
    def enabled(self) -> bool:
        """Whether e-mail can be sent at all (False when no plugin provides a sender)."""
        return self.sender is not None

    def bound(self, loop: asyncio.AbstractEventLoop) -> Mailer:
        """This mailer, reaching the database through ``loop`` (the outbox's running loop)."""
        return Mailer(self.db, self.sender, loop=loop)

    # -- the record ---------------------------------------------------------------------

    def settled(self, notification_id: str) -> set[str]:
        """Addresses the notification's e-mail was already sent to, or refused for good."""
        return self._call(functools.partial(_settled, notification_id=notification_id), write=False)

    def send(self, message: EmailMessage, *, notification_id: str, recipient: str) -> str:
        """Send ``message`` (one notification's e-mail to ``recipient``) and record it.

        Returns the sender's id for it. Does not look at the record first: call
        :meth:`settled` once for the whole notification and skip what it lists.

        :raises EmailSendError: the sender failed; nothing is recorded, except that a
            permanent refusal is recorded too (see :meth:`refused`), so it is not retried.
        """
        if self.sender is None:
            raise EmailSendError("no plugin provides an e-mail sender (is the email plugin blocked?)")
        try:
            provider_id = self.sender.send(message)
        except EmailSendError as error:
            if error.permanent:
                self.refused(notification_id, recipient, str(error))
            raise
        self._call(
            functools.partial(
                _record, notification_id=notification_id, recipient=recipient, message_id=provider_id[:255]
            ),
            write=True,
        )
        return provider_id

    def refused(self, notification_id: str, recipient: str, error: str) -> None:
        """Record that ``recipient`` can never be sent this notification (not retried)."""
        self._call(
            functools.partial(_record, notification_id=notification_id, recipient=recipient, error=error),
            write=True,
        )

    def mark_undeliverable(self, address: str, reason: str) -> bool:
        """Stop mailing ``address`` (see :func:`cheeseshop.notify.mark_undeliverable`)."""
        return self._call(
            functools.partial(mark_undeliverable, address=address, reason=reason), write=True
        )

    # -- reaching the database from a worker thread ---------------------------------------

    def _call(self, work: Callable[[Connection], T], *, write: bool) -> T:
        if self._loop is None:
            raise RuntimeError("this Mailer is not bound to an event loop (see Mailer.bound)")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("Mailer methods block: call them from a worker thread, not the event loop")
        # Core statements on a Connection: every e-mail sent costs two of these visits.
        return self.db.call_core_blocking(work, write=write, loop=self._loop, timeout=DATABASE_TIMEOUT)


# Built once: SQLAlchemy compiles each once, and a delivery only binds values.
# Prepared: the deliverer runs both for every e-mail it sends.
_SETTLED = Prepared(
    select(NotificationEmail.recipient).where(NotificationEmail.notification_id == bindparam("notification_id"))
)
# ON CONFLICT DO NOTHING: a row already there (a racing deliverer's) says the same.
_ONE_PER_ADDRESS = ["notification_id", "recipient"]
_RECORD = {
    "postgresql": Prepared(
        postgresql.insert(NotificationEmail.__table__).on_conflict_do_nothing(index_elements=_ONE_PER_ADDRESS)
    ),
    "sqlite": Prepared(
        sqlite.insert(NotificationEmail.__table__).on_conflict_do_nothing(index_elements=_ONE_PER_ADDRESS)
    ),
}


def _settled(connection: Executor, *, notification_id: str) -> set[str]:
    return {row[0] for row in _SETTLED.rows(connection, {"notification_id": notification_id})}


def _record(
    connection: Executor,
    *,
    notification_id: str,
    recipient: str,
    message_id: str | None = None,
    error: str | None = None,
) -> None:
    _RECORD[dialect_name(connection)].rows(
        connection,
        {
            "notification_id": notification_id,
            "recipient": recipient,
            "message_id": message_id,
            "error": error[:2000] if error else None,
            "created": utcnow(),
        },
    )
