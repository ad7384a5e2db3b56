"""SESSender against a real moto server (SES API v2 over HTTP on 127.0.0.1).

The core's EmailSender contract runs here unchanged; the tests after it check what is
SES's own: the MessageId returned and logged, the envelope, the configuration set, and
which refusals are permanent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest

from cheeseshop import EmailSendError
from cheeseshop.config import load_settings
from cheeseshop.plugins import load_plugins
from cheeseshop.testing.contracts import EmailSenderContract

from cheeseshop_email_ses import SESSender, SESSettings

from email_ses_kit import VERIFIED_SENDER, FailingSES, MotoServer, free_port


def make_sender(section: dict[str, Any]) -> SESSender:
    return SESSender.from_settings(SESSettings.model_validate(section))


def message(
    *, sender: str = f"Index <{VERIFIED_SENDER}>", to: str = "alice@example.com", **headers: str
) -> EmailMessage:
    built = EmailMessage(policy=default_policy)
    built["Subject"] = "Hello"
    built["From"] = sender
    built["To"] = to
    for name, value in headers.items():
        built[name] = value
    built.set_content("Plain text.\n")
    return built


class TestSESSenderContract(EmailSenderContract):
    """The core's contract, against SES on moto."""

    SENDER = f"Chéeseshop Index <{VERIFIED_SENDER}>"

    @pytest.fixture
    def sender(self, moto: MotoServer) -> SESSender:
        return make_sender(moto.section())

    @pytest.fixture
    def received(self, moto: MotoServer) -> Callable[[], list[EmailMessage]]:
        return moto.received


def test_email_sender_hook_provides_an_ses_sender_through_the_entry_point(moto: MotoServer) -> None:
    # Enabled by name, as a deployer does: stevedore finds the installed distribution.
    settings = load_settings(
        environ={}, overrides={"plugins": ["email_ses"], "email_ses": moto.section()}
    )
    hooks = load_plugins(settings)
    settings = hooks.apply_settings(settings)

    sender = hooks.email_sender(settings)

    assert isinstance(sender, SESSender)
    provider_id = sender.send(message())
    (raw,) = moto.raw_messages()
    assert raw["id"] == provider_id


def test_send_returns_and_logs_the_ses_message_id(
    moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    sender = make_sender(moto.section())
    outgoing = message(**{"Message-ID": "<logged.1@example.com>"})

    with caplog.at_level(logging.INFO, logger="cheeseshop_email_ses"):
        provider_id = sender.send(outgoing)

    (raw,) = moto.raw_messages()
    assert raw["id"] == provider_id
    assert raw["source"] == VERIFIED_SENDER
    (line,) = [r.getMessage() for r in caplog.records if provider_id in r.getMessage()]
    assert "alice@example.com" in line and "<logged.1@example.com>" in line


def test_the_wire_message_is_seven_bit_and_the_callers_message_is_untouched(
    moto: MotoServer,
) -> None:
    sender = make_sender(moto.section())
    # With its Message-ID already, so that the sender has no reason to add a header.
    outgoing = message(**{"Message-ID": "<seven-bit.1@example.com>"})
    outgoing.set_content("Zoë 🧀\n")
    before = outgoing.as_bytes()

    sender.send(outgoing)

    (raw,) = moto.raw_messages()
    assert raw["raw_data"].isascii()
    (got,) = moto.received()
    assert got.get_content() == "Zoë 🧀\n"
    assert outgoing.as_bytes() == before


def test_bcc_recipients_are_in_the_envelope_only(moto: MotoServer) -> None:
    sender = make_sender(moto.section())

    sender.send(message(Cc="carol@example.com", Bcc="bob@example.com"))

    (raw,) = moto.raw_messages()
    assert "bob@example.com" in raw["destinations"]
    assert "carol@example.com" in raw["destinations"]
    (got,) = moto.received()
    assert got["Bcc"] is None
    assert "bob@example.com" not in raw["raw_data"]


def test_the_configuration_set_is_sent_when_configured(moto: MotoServer) -> None:
    sent: list[dict[str, Any]] = []
    with_set = make_sender(moto.section(configuration_set="cheeseshop-feedback"))
    without = make_sender(moto.section())
    for sender in (with_set, without):
        sender.client.meta.events.register(
            "provide-client-params.sesv2.SendEmail", lambda params, **_: sent.append(dict(params))
        )

    with_set.send(message())
    without.send(message())

    assert sent[0]["ConfigurationSetName"] == "cheeseshop-feedback"
    assert "ConfigurationSetName" not in sent[1]
    assert len(moto.raw_messages()) == 2


def test_an_unverified_sender_is_a_retryable_error(moto: MotoServer) -> None:
    # The account's set-up is wrong, not the recipient: once fixed, the mail must go.
    sender = make_sender(moto.section())

    with pytest.raises(EmailSendError) as raised:
        sender.send(message(sender="Index <unverified@example.com>"))

    assert raised.value.permanent is False
    assert "MessageRejected" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert moto.raw_messages() == []


@pytest.fixture
def failing_ses() -> Iterator[Callable[[int, str, str], FailingSES]]:
    servers: list[FailingSES] = []

    def make(status: int, code: str, text: str) -> FailingSES:
        server = FailingSES(status, code, text).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.mark.parametrize(
    ("status", "code", "text", "permanent"),
    [
        (429, "TooManyRequestsException", "Rate exceeded", False),
        (503, "ServiceUnavailable", "Service unavailable", False),
        (400, "AccountSuspendedException", "The account is suspended", False),
        (400, "SendingPausedException", "Sending is paused for this account", False),
        (400, "LimitExceededException", "Daily message quota exceeded", False),
        (
            400,
            "MessageRejected",
            (
                "Email address is not verified. The following identities failed the check "
                "in region US-EAST-1: alice@example.com"
            ),
            True,
        ),
        (
            400,
            "MessageRejected",
            (
                "Email address is not verified. The following identities failed the check "
                f"in region US-EAST-1: {VERIFIED_SENDER}, alice@example.com"
            ),
            False,
        ),
        (400, "BadRequestException", "Illegal address", True),
        # What moto answers for a recipient without a domain.
        (400, "InvalidParameterValue", "Missing domain", True),
    ],
)
def test_ses_refusals_become_email_send_errors(
    failing_ses: Callable[[int, str, str], FailingSES],
    status: int,
    code: str,
    text: str,
    permanent: bool,
) -> None:
    server = failing_ses(status, code, text)
    sender = make_sender(
        {
            "region": "us-east-1",
            "endpoint_url": server.url,
            "access_key_id": "k",
            "secret_access_key": "s",
            "max_attempts": 2,
        }
    )

    with pytest.raises(EmailSendError) as raised:
        sender.send(message())

    assert raised.value.permanent is permanent
    assert code in str(raised.value)
    # Raised "from None": no botocore exception travels on with it.
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    # boto3 retries throttling and unavailability itself, max_attempts in all; a refusal
    # for good is not asked twice.
    assert server.count == 1 if permanent else 1 <= server.count <= 2
    if status in (429, 503):
        assert server.count == 2


def test_an_unreachable_endpoint_is_a_retryable_error() -> None:
    sender = make_sender(
        {
            "region": "us-east-1",
            "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "access_key_id": "k",
            "secret_access_key": "s",
            "timeout_seconds": 2,
        }
    )

    with pytest.raises(EmailSendError) as raised:
        sender.send(message())

    assert raised.value.permanent is False
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
