"""Cheeseshop plugin ``email_ses``: the index's e-mail through Amazon SES.

It fills the ``email_sender`` slot with :class:`SESSender` (SES API v2, raw messages), so
the core's notifications go out through SES, and adds ``POST /_ses/sns/``, where SES's
bounce and complaint notifications arrive through SNS: an address that bounced for good
or complained is marked undeliverable and mailed no more. Enable with
``CHEESESHOP_PLUGINS=email_ses`` and an ``[email_ses]`` section (see :class:`SESSettings`).
"""

from __future__ import annotations

import logging

from quart import Quart

import cheeseshop
from cheeseshop import EmailSender, PluginSettings, Settings

from cheeseshop_email_ses.feedback import MalformedEvent, SESEvent, parse_ses_event
from cheeseshop_email_ses.sender import PERMANENT_ERROR_CODES, SESSender
from cheeseshop_email_ses.settings import DEFAULT_SNS_TRUSTED_URL_PATTERN, SESSettings
from cheeseshop_email_ses.sns import MessageVerifier, SNSMessage, SNSRejected, SNSUnavailable
from cheeseshop_email_ses.views import EXTENSION_KEY, SNS_PATH, SNSEndpoint, blueprint

__all__ = [
    "DEFAULT_SNS_TRUSTED_URL_PATTERN",
    "NAME",
    "PERMANENT_ERROR_CODES",
    "SNS_PATH",
    "MalformedEvent",
    "MessageVerifier",
    "SESEvent",
    "SESSender",
    "SESSettings",
    "SNSMessage",
    "SNSRejected",
    "SNSUnavailable",
    "cheeseshop_configure",
    "cheeseshop_email_sender",
    "cheeseshop_settings",
    "parse_ses_event",
]

log = logging.getLogger(__name__)

#: The entry-point name, which is also the settings section's name.
NAME = "email_ses"


def _section(settings: Settings) -> SESSettings:
    section: SESSettings = settings.section(NAME)
    return section


@cheeseshop.hookimpl
def cheeseshop_settings() -> type[PluginSettings]:
    """Declare the ``[email_ses]`` section: :class:`SESSettings`."""
    return SESSettings


@cheeseshop.hookimpl
def cheeseshop_email_sender(settings: Settings) -> EmailSender:
    """Send the index's e-mail through SES, as the ``[email_ses]`` section says."""
    return SESSender.from_settings(_section(settings))


@cheeseshop.hookimpl
def cheeseshop_configure(app: Quart, settings: Settings) -> None:
    """Add ``POST /_ses/sns/``, where SNS delivers SES's bounces and complaints."""
    section = _section(settings)
    if not section.sns_topic_arns:
        log.warning(
            "email_ses: no sns_topic_arns configured: %s refuses every message, so bounces "
            "and complaints are not acted on",
            SNS_PATH,
        )
    if section.sns_trusted_url_pattern != DEFAULT_SNS_TRUSTED_URL_PATTERN:
        log.warning(
            "email_ses: SNS certificates and subscription URLs are fetched from URLs matching "
            "%r, not only AWS's: meant for tests",
            section.sns_trusted_url_pattern,
        )
    app.extensions[EXTENSION_KEY] = SNSEndpoint.from_settings(section)
    app.register_blueprint(blueprint)
