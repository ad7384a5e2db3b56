"""The core's e-mail, as a default plugin (``email``).

It provides the ``email_sender`` slot (SMTP when ``smtp_host`` is set, else a folder of
``.eml`` files) and turns each notification into one e-mail per recipient. Both are
``trylast``: a plugin providing a sender (SES) replaces the sender only, and the
notifications still go out rendered from these templates. Blocking the plugin
(``blocked_plugins = ["email"]``) turns e-mail off: notifications are then not even
recorded, unless another plugin receives them.
"""

from __future__ import annotations

import logging

from cheeseshop.config import Settings
from cheeseshop.events import Notification
from cheeseshop.notify.mailer import Mailer
from cheeseshop.notify.render import UnknownKind, build_message
from cheeseshop.notify.senders import EmailSender, EmailSendError, FileSender, SMTPSender
from cheeseshop.plugins import hookimpl

__all__ = ["cheeseshop_email_sender", "cheeseshop_notify"]

log = logging.getLogger(__name__)


@hookimpl(trylast=True)
def cheeseshop_email_sender(settings: Settings) -> EmailSender:
    """SMTP when ``smtp_host`` is set; otherwise ``.eml`` files in ``data_dir/mail``."""
    if settings.smtp_host:
        return SMTPSender.from_settings(settings)
    return FileSender.from_settings(settings)


@hookimpl(trylast=True)
def cheeseshop_notify(notification: Notification, mailer: Mailer, settings: Settings) -> None:
    """E-mail the notification to each recipient who has not had it yet.

    Every recipient is tried even when one fails; then, if any failed for a reason that
    may pass, this raises, and the outbox retries this plugin later. The retry sends
    only what is still unsent: the mailer's record makes the repeat harmless.
    """
    if not mailer.enabled:
        return
    try:
        messages = [
            (recipient, build_message(notification, recipient, mail_from=settings.mail_from))
            for recipient in notification.recipients
        ]
    except UnknownKind as error:
        # Retrying cannot make templates appear: say so once and let the delivery complete.
        log.warning("notification %s not e-mailed: %s", notification.notification_id, error)
        return
    settled = mailer.settled(notification.notification_id)
    failures: list[str] = []
    for recipient, message in messages:
        if recipient.email in settled:
            continue
        try:
            mailer.send(message, notification_id=notification.notification_id, recipient=recipient.email)
        except EmailSendError as error:
            if error.permanent:  # recorded by the mailer: not retried
                log.warning(
                    "notification %s: %s refused for good: %s",
                    notification.notification_id, recipient.email, error,
                )
            else:
                failures.append(f"{recipient.email}: {error}")
    if failures:
        raise EmailSendError(
            f"notification {notification.notification_id} not yet e-mailed to " + "; ".join(failures)
        )
