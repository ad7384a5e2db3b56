"""SES's feedback (bounces, complaints, deliveries) as carried in an SNS notification.

SES publishes two shapes of the same events: identity notifications (``notificationType``)
and configuration-set event publishing (``eventType``). Both carry a ``bounce`` or
``complaint`` object naming the recipients concerned, and a ``mail`` object naming the
message (``mail.messageId`` is the id :class:`~cheeseshop_email_ses.SESSender` returned).

What the index does about each is decided here, without I/O:

- a ``Permanent`` bounce: every bounced recipient is undeliverable;
- a complaint: every complaining recipient is undeliverable, unless the feedback type is
  ``not-spam`` (the mailbox provider reporting that its user said it was *not* spam);
- ``Transient`` and ``Undetermined`` bounces, deliveries and every other event: nothing
  but a log line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any

__all__ = ["MalformedEvent", "SESEvent", "parse_ses_event"]

#: The longest diagnostic kept in a reason; the core keeps 2000 characters in all.
_DIAGNOSTIC_LIMIT = 500


class MalformedEvent(ValueError):
    """An SES event that says it is a bounce or complaint but is not shaped like one."""


@dataclasses.dataclass(frozen=True)
class SESEvent:
    """One SES event: its kind, the mail it is about, and whom to stop mailing, and why."""

    kind: str
    ses_message_id: str | None
    summary: str
    #: (address, reason) for each address that must not be mailed again.
    undeliverable: tuple[tuple[str, str], ...] = ()


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedEvent(f"{what} is not a JSON object")
    return value


def _recipients(event: Mapping[str, Any], key: str, what: str) -> list[Mapping[str, Any]]:
    listed = event.get(key)
    if not isinstance(listed, list) or not listed:
        raise MalformedEvent(f"{what} has no {key}")
    recipients: list[Mapping[str, Any]] = []
    for entry in listed:
        entry = _object(entry, f"an entry of {what}.{key}")
        address = entry.get("emailAddress")
        # SES gives the bare address, or the DSN's Final-Recipient; take the address out
        # of a "Name <address>" form all the same.
        bare = parseaddr(address)[1] if isinstance(address, str) else ""
        if "@" not in bare:
            raise MalformedEvent(f"an entry of {what}.{key} has no emailAddress")
        recipients.append({**entry, "emailAddress": bare})
    return recipients


def parse_ses_event(text: str) -> SESEvent | None:
    """The SES event an SNS notification's ``Message`` carries.

    :returns: the event, or ``None`` when the message is not an SES event at all (the
        text SES posts when a topic is first attached, or a test message published by
        hand).
    :raises MalformedEvent: it is an SES bounce or complaint without the parts that say
        whom it concerns.
    """
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, Mapping):
        return None
    kind = data.get("notificationType", data.get("eventType"))
    if not isinstance(kind, str):
        return None
    mail = data.get("mail")
    ses_message_id = mail.get("messageId") if isinstance(mail, Mapping) else None
    if not isinstance(ses_message_id, str):
        ses_message_id = None
    about = f"mail {ses_message_id or '(no messageId)'}"
    if kind == "Bounce":
        bounce = _object(data.get("bounce"), "bounce")
        bounce_type = str(bounce.get("bounceType", "Undetermined"))
        sub_type = str(bounce.get("bounceSubType", "General"))
        recipients = _recipients(bounce, "bouncedRecipients", "bounce")
        addresses = ", ".join(r["emailAddress"] for r in recipients)
        summary = f"{bounce_type} bounce ({sub_type}) of {about} to {addresses}"
        if bounce_type != "Permanent":
            return SESEvent(kind, ses_message_id, summary)
        undeliverable = []
        for recipient in recipients:
            diagnostic = recipient.get("diagnosticCode") or recipient.get("status") or ""
            reason = f"SES: permanent bounce ({sub_type}) of {about}"
            if diagnostic:
                reason += f": {str(diagnostic)[:_DIAGNOSTIC_LIMIT]}"
            undeliverable.append((recipient["emailAddress"], reason))
        return SESEvent(kind, ses_message_id, summary, tuple(undeliverable))
    if kind == "Complaint":
        complaint = _object(data.get("complaint"), "complaint")
        recipients = _recipients(complaint, "complainedRecipients", "complaint")
        feedback = complaint.get("complaintFeedbackType")
        feedback = str(feedback) if feedback else "unspecified"
        addresses = ", ".join(r["emailAddress"] for r in recipients)
        summary = f"complaint ({feedback}) about {about} from {addresses}"
        if feedback == "not-spam":
            return SESEvent(kind, ses_message_id, summary)
        reason = f"SES: complaint ({feedback}) about {about}"
        return SESEvent(
            kind, ses_message_id, summary, tuple((r["emailAddress"], reason) for r in recipients)
        )
    return SESEvent(kind, ses_message_id, f"{kind} event about {about}")
