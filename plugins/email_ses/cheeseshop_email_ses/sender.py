"""Sending the index's e-mail through Amazon SES (API v2, raw messages)."""

from __future__ import annotations

import copy
import logging
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cheeseshop import EmailSendError
from cheeseshop.notify.senders import ensure_message_id, envelope

from cheeseshop_email_ses.settings import SESSettings

__all__ = ["PERMANENT_ERROR_CODES", "SESSender", "make_session"]

log = logging.getLogger(__name__)

#: The bytes SES is given: CRLF line ends and nothing but 7-bit ASCII. SES takes 8-bit
#: parts, but not every hop after it does; the generator base64-encodes such parts on
#: the way out, without touching the caller's message.
_WIRE_POLICY = SMTP.clone(cte_type="7bit")

#: SES error codes that refuse this message or its recipient. Sending the same message
#: again gets the same answer, so they are permanent, unless the answer is about the
#: sender (see :func:`_about_the_sender`), which the operator can fix.
PERMANENT_ERROR_CODES = frozenset(
    {"MessageRejected", "InvalidParameterValue", "BadRequestException"}
)


def make_session(section: SESSettings) -> boto3.session.Session:
    """A boto3 session of its own (the default one is shared and not thread-safe).

    With explicit keys in the section it uses them; otherwise boto3's usual chain.
    """
    return boto3.session.Session(
        aws_access_key_id=section.access_key_id,
        aws_secret_access_key=(
            section.secret_access_key.get_secret_value() if section.secret_access_key else None
        ),
        aws_session_token=section.session_token.get_secret_value()
        if section.session_token
        else None,
        region_name=section.region,
    )


def _about_the_sender(text: str, sender: str) -> bool:
    # "Did not have authority to send from email X", "Email address is not verified ...: X"
    # naming the From address, a MAIL FROM domain: the account's set-up is wrong, not the
    # recipient. Retrying after the operator fixes it must still send the mail.
    lowered = text.lower()
    return sender.lower() in lowered or "authority" in lowered or "mail from" in lowered


class SESSender:
    """Sends each e-mail as a raw message through SES's ``SendEmail`` (API v2).

    The envelope comes from the message (``From``; ``To``, ``Cc`` and ``Bcc``); the
    ``Bcc`` header itself is not sent. Returns SES's MessageId, which the core's mailer
    records and which SES's bounce and complaint notifications name again. The boto3
    client is made once and shared between threads, which boto3 allows for clients.
    """

    def __init__(self, client: Any, *, configuration_set: str | None = None) -> None:
        self.client = client
        self.configuration_set = configuration_set

    @classmethod
    def from_settings(cls, section: SESSettings) -> SESSender:
        """The sender the ``[email_ses]`` section describes."""
        config = Config(
            connect_timeout=section.timeout_seconds,
            read_timeout=section.timeout_seconds,
            # A few quick retries for throttling here; the outbox retries the rest later.
            retries={"mode": "standard", "total_max_attempts": section.max_attempts},
            # Event hooks run in several worker threads at once, each wanting a connection.
            max_pool_connections=16,
        )
        client = make_session(section).client(
            "sesv2", endpoint_url=section.endpoint_url, config=config
        )
        return cls(client, configuration_set=section.configuration_set)

    def __repr__(self) -> str:
        meta = self.client.meta
        return f"SESSender(region={meta.region_name!r}, endpoint={meta.endpoint_url!r})"

    def send(self, message: EmailMessage) -> str:
        """Send ``message`` through SES; returns the MessageId SES gave it.

        :raises ValueError: the message has no ``From`` address or no recipient.
        :raises EmailSendError: SES refused it (``permanent`` when it refused the message
            or recipient for good) or could not be reached.
        """
        sender, recipients = envelope(message)
        message_id = ensure_message_id(message)
        if "Bcc" in message:
            # What smtplib's send_message does too: Bcc recipients are in the envelope only.
            message = copy.deepcopy(message)
            del message["Bcc"]
        request: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": recipients},
            "Content": {"Raw": {"Data": message.as_bytes(policy=_WIRE_POLICY)}},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        try:
            answer = self.client.send_email(**request)
        except ClientError as error:
            details = error.response.get("Error", {})
            code = str(details.get("Code", "Unknown"))
            text = str(details.get("Message", ""))
            permanent = code in PERMANENT_ERROR_CODES and not _about_the_sender(text, sender)
            raise EmailSendError(
                f"SES refused e-mail {message_id} to {', '.join(recipients)}: {code}: {text}",
                permanent=permanent,
            ) from None
        except BotoCoreError as error:
            # Unreachable endpoint, timeout, no credentials: worth retrying later.
            raise EmailSendError(
                f"could not send e-mail {message_id} through SES: {error}"
            ) from None
        provider_id = str(answer["MessageId"])
        log.info(
            "e-mail %s to %s sent through SES as %s: %s",
            message_id,
            ", ".join(recipients),
            provider_id,
            message.get("Subject", ""),
        )
        return provider_id
