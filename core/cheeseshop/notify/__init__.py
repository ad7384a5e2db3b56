"""Notifications: telling people what happened, by e-mail and through plugins.

A change that people should hear about (a new release) records a
:class:`~cheeseshop.events.Notification` in the outbox, in the change's own transaction
(:mod:`cheeseshop.notify.build`). After commit the outbox delivers it to every
``cheeseshop_notify`` implementation, at least once. The default ``email`` plugin
(:mod:`cheeseshop.notify.plugin`) renders it (:mod:`cheeseshop.notify.render`) and sends
one e-mail per recipient through the :class:`Mailer`, which wraps the chosen
:class:`EmailSender` (:mod:`cheeseshop.notify.senders`) and records what was sent, so a
repeated delivery mails no one twice.
"""

from cheeseshop.notify.addresses import (
    clear_undeliverable,
    mark_address_undeliverable,
    mark_undeliverable,
    notification_choices,
)
from cheeseshop.notify.mailer import Mailer
from cheeseshop.notify.senders import EmailSender, EmailSendError, FileSender, SMTPSender

__all__ = [
    "EmailSendError",
    "EmailSender",
    "FileSender",
    "Mailer",
    "SMTPSender",
    "clear_undeliverable",
    "mark_address_undeliverable",
    "mark_undeliverable",
    "notification_choices",
]
