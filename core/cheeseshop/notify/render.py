"""Rendering a notification into an e-mail: a subject, a text and an HTML template per kind.

Templates live in ``cheeseshop/notify/templates`` as ``<kind>.subject.txt``,
``<kind>.txt`` and ``<kind>.html`` (Jinja2). The HTML template is autoescaped: every
value a notification carries is shown as text, whatever characters it holds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime

import jinja2

from cheeseshop.events import Notification, Recipient
from cheeseshop.notify.senders import sender_domain

__all__ = ["RenderedEmail", "UnknownKind", "build_message", "message_id", "render"]


class UnknownKind(LookupError):
    """There are no templates for this kind of notification."""


@dataclasses.dataclass(frozen=True)
class RenderedEmail:
    """The three parts of one notification's e-mail to one recipient."""

    subject: str
    text: str
    html: str


@functools.cache
def _environment() -> jinja2.Environment:
    # Built once per process; templates are compiled on first use and kept.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cheeseshop.notify", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(notification: Notification, recipient: Recipient) -> RenderedEmail:
    """Render ``notification`` for ``recipient``; :class:`UnknownKind` without templates."""
    environment = _environment()
    context = {
        "notification": notification,
        "recipient": recipient,
        "values": notification.values,
        "created": notification.created.strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        subject, text, html = (
            environment.get_template(f"{notification.kind}{suffix}")
            for suffix in (".subject.txt", ".txt", ".html")
        )
    except jinja2.TemplateNotFound:
        raise UnknownKind(f"no e-mail templates for notifications of kind {notification.kind!r}") from None
    return RenderedEmail(
        # One line: a header cannot hold a line break.
        subject=" ".join(subject.render(context).split()),
        text=text.render(context),
        html=html.render(context),
    )


def message_id(notification_id: str, recipient: str, mail_from: str) -> str:
    """The Message-ID of a notification's e-mail to ``recipient``: the same on every resend.

    The address is hashed rather than shown, so the id says nothing about who got it.
    """
    digest = hashlib.sha256(recipient.strip().lower().encode()).hexdigest()[:16]
    return f"<{notification_id}.{digest}@{sender_domain(mail_from) or 'cheeseshop.invalid'}>"


def build_message(notification: Notification, recipient: Recipient, *, mail_from: str) -> EmailMessage:
    """The whole e-mail: headers, a text part and its HTML alternative."""
    rendered = render(notification, recipient)
    message = EmailMessage(policy=default_policy)
    message["Subject"] = rendered.subject
    message["From"] = mail_from
    message["To"] = Address(display_name=recipient.username, addr_spec=recipient.email)
    # From the notification, not the clock: a resend is the very same message.
    message["Date"] = format_datetime(notification.created)
    message["Message-ID"] = message_id(notification.notification_id, recipient.email, mail_from)
    # RFC 3834: no out-of-office replies to a robot.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    # Derived, not random, so that a resend is the same message byte for byte. A part
    # holding this hash of the Message-ID by chance is as unlikely as a random clash.
    boundary = hashlib.sha256(message["Message-ID"].encode()).hexdigest()[:32]
    message.set_boundary(f"==============={boundary}==")
    return message
