"""The endpoint SNS posts SES's feedback to: ``POST /_ses/sns/``.

Warehouse (PyPI) calls its own ``/_/ses-hook/``; this one sits under the ``/_ses/``
prefix so that it cannot clash with a project's pages. Every message is verified first
(:mod:`cheeseshop_email_ses.sns`); then

- a ``SubscriptionConfirmation`` is confirmed by fetching its ``SubscribeURL`` (which
  must be a trusted SNS URL too);
- a ``Notification`` carrying an SES bounce or complaint marks the addresses concerned
  undeliverable (:func:`cheeseshop.mark_undeliverable`), so the index stops mailing them;
- an ``UnsubscribeConfirmation`` is logged, as is every other SES event.

Answers are plain text. A refused message gets a 4xx saying what was wrong; a check
that needs a certificate that cannot be fetched right now gets a 503, which SNS retries.
SNS delivers at least once: a message handled already is answered 200 again and changes
nothing (and marking an address twice would change nothing either).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import OrderedDict
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from quart import Blueprint, Response, current_app, request
from sqlalchemy.orm import Session

from cheeseshop import mark_undeliverable
from cheeseshop.services import current_services

from cheeseshop_email_ses.feedback import MalformedEvent, parse_ses_event
from cheeseshop_email_ses.settings import SESSettings
from cheeseshop_email_ses.sns import (
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    CertificateCache,
    MessageVerifier,
    SNSMessage,
    SNSRejected,
    SNSUnavailable,
    fetch_url,
    parse_message,
)

__all__ = ["EXTENSION_KEY", "MAX_BODY_BYTES", "SNS_PATH", "SNSEndpoint", "blueprint"]

log = logging.getLogger(__name__)

#: Where SNS posts; subscribe ``https://<your index>/_ses/sns/`` to the topics.
SNS_PATH = "/_ses/sns/"
#: The endpoint's state on ``app.extensions``.
EXTENSION_KEY = "email_ses"
#: Largest body read. SNS messages are at most 256 KiB; JSON escaping can double that.
MAX_BODY_BYTES = 1024 * 1024
#: How many handled messages are remembered, to answer a redelivery without acting again.
REMEMBERED = 10_000

blueprint = Blueprint("email_ses", __name__)


@dataclasses.dataclass
class SNSEndpoint:
    """What the endpoint needs, built once per application (kept on ``app.extensions``)."""

    section: SESSettings
    verifier: MessageVerifier
    handled: OrderedDict[tuple[str, str], None] = dataclasses.field(default_factory=OrderedDict)

    @classmethod
    def from_settings(cls, section: SESSettings) -> SNSEndpoint:
        """The endpoint the ``[email_ses]`` section describes."""
        fetch = functools.partial(fetch_url, timeout=section.timeout_seconds)
        verifier = MessageVerifier(
            topics=section.sns_topic_arns,
            trusts=section.trusts,
            certificates=CertificateCache(fetch),
            max_age=timedelta(seconds=section.sns_max_age_seconds),
        )
        return cls(section=section, verifier=verifier)

    def fetch(self, url: str) -> bytes:
        """GET a trusted URL (blocking), with the section's timeout."""
        return fetch_url(url, timeout=self.section.timeout_seconds)

    # Only touched from the event loop, so no lock.
    def seen(self, message: SNSMessage) -> bool:
        """Whether this message was handled already (by this process)."""
        return (message.topic_arn, message.message_id) in self.handled

    def remember(self, message: SNSMessage) -> None:
        """Note that this message was handled; forget the oldest beyond ``REMEMBERED``."""
        self.handled[(message.topic_arn, message.message_id)] = None
        while len(self.handled) > REMEMBERED:
            self.handled.popitem(last=False)


def _answer(status: int, text: str, *, retry_after: int | None = None) -> Response:
    response = Response(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def _body() -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise SNSRejected(f"the body is larger than {MAX_BODY_BYTES} bytes", status=413)
    body = bytearray()
    async for chunk in request.body:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise SNSRejected(f"the body is larger than {MAX_BODY_BYTES} bytes", status=413)
    return bytes(body)


@blueprint.post(SNS_PATH)
async def sns_message() -> Response:
    """Receive one SNS message: verify it, then act on it (see the module's documentation)."""
    endpoint: SNSEndpoint = current_app.extensions[EXTENSION_KEY]
    try:
        fields = parse_message(await _body())
        header = request.headers.get("x-amz-sns-message-type")
        if header is not None and header != fields.get("Type"):
            raise SNSRejected(
                f"the x-amz-sns-message-type header ({header}) and the Type "
                f"({fields.get('Type')}) differ"
            )
        # Verification may fetch a certificate over the network: not on the event loop.
        message = await asyncio.to_thread(endpoint.verifier.verify, fields)
        if endpoint.seen(message):
            return _answer(200, f"message {message.message_id} was handled already")
        if message.type == NOTIFICATION:
            text = await _notification(message)
        elif message.type == SUBSCRIPTION_CONFIRMATION:
            text = await _confirm(endpoint, message)
        else:
            log.warning(
                "SNS unsubscribed this endpoint from %s (message %s); to subscribe again, "
                "visit its SubscribeURL: %s",
                message.topic_arn,
                message.message_id,
                message.subscribe_url,
            )
            text = f"unsubscription from {message.topic_arn} noted"
    except SNSRejected as error:
        # %r: the message quotes what was posted, which must not forge log lines.
        log.info("SNS message refused (%d): %r", error.status, error.message)
        return _answer(error.status, error.message)
    except SNSUnavailable as error:
        log.warning("SNS message not checked for now: %s", error)
        return _answer(503, f"cannot check the message now, try again: {error}", retry_after=60)
    endpoint.remember(message)
    return _answer(200, text)


async def _notification(message: SNSMessage) -> str:
    try:
        event = parse_ses_event(message.message)
    except MalformedEvent as error:
        raise SNSRejected(
            f"the SES event in message {message.message_id} is malformed: {error}"
        ) from None
    if event is None:
        # Authentic (it is signed, from our topic) yet no SES event: SES's own "topic
        # attached" test message, say. Refusing it would only make SNS resend it.
        log.info(
            "SNS message %s on %s is not an SES event; ignored",
            message.message_id,
            message.topic_arn,
        )
        return "not an SES event; nothing to do"
    if not event.undeliverable:
        log.info("SES via SNS message %s: %s", message.message_id, event.summary)
        return f"{event.kind}: nothing to do"
    matched = await current_services().db.run_write(
        functools.partial(_mark_all, undeliverable=event.undeliverable)
    )
    log.warning(
        "SES via SNS message %s: %s; no longer mailing %s%s",
        message.message_id,
        event.summary,
        ", ".join(matched) or "anyone",
        "" if len(matched) == len(event.undeliverable) else " (the others are no user's address)",
    )
    return f"{event.kind}: {len(matched)} address(es) marked undeliverable"


def _mark_all(session: Session, *, undeliverable: tuple[tuple[str, str], ...]) -> list[str]:
    # One transaction for the whole event: all of its addresses are marked, or none.
    return [
        address for address, reason in undeliverable if mark_undeliverable(session, address, reason)
    ]


async def _confirm(endpoint: SNSEndpoint, message: SNSMessage) -> str:
    url = message.subscribe_url or ""
    # Signed, so SNS wrote it; checked like the certificate's URL all the same, so that
    # whatever a message says, the index fetches nothing but the SNS hosts it trusts.
    if not endpoint.section.trusts(url):
        raise SNSRejected(
            f"SubscribeURL {url!r} is not an SNS URL this endpoint trusts "
            "(email_ses.sns_trusted_url_pattern)"
        )
    if parse_qs(urlsplit(url).query).get("Action") != ["ConfirmSubscription"]:
        raise SNSRejected("the SubscribeURL is not a ConfirmSubscription URL")
    await asyncio.to_thread(endpoint.fetch, url)
    log.warning("SNS subscription of this endpoint to %s confirmed", message.topic_arn)
    return f"subscription to {message.topic_arn} confirmed"
