"""The plugin's pure parts: settings, the canonical string, SES event parsing, the verifier."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cheeseshop.config import ConfigError, load_settings
from cheeseshop.plugins import load_plugins

from cheeseshop_email_ses import (
    DEFAULT_SNS_TRUSTED_URL_PATTERN,
    MalformedEvent,
    SESSettings,
    SNSRejected,
    parse_ses_event,
)
from cheeseshop_email_ses.sns import CertificateCache, MessageVerifier, string_to_sign

from email_ses_kit import (
    TOPIC_ARN,
    SNSSigner,
    notification,
    ses_bounce,
    ses_complaint,
    subscription_confirmation,
)

OTHER = "arn:aws:sns:eu-west-1:123456789012:other"

# -- settings -------------------------------------------------------------------------------


def plugin_settings(environ: dict[str, str]) -> Any:
    settings = load_settings(environ={"CHEESESHOP_PLUGINS": "email_ses", **environ})
    return load_plugins(settings).apply_settings(settings).section("email_ses")


def test_settings_from_the_environment() -> None:
    section = plugin_settings(
        {
            "CHEESESHOP_EMAIL_SES__REGION": "eu-west-1",
            "CHEESESHOP_EMAIL_SES__SNS_TOPIC_ARNS": f"{TOPIC_ARN}, {OTHER}",
            "CHEESESHOP_EMAIL_SES__ACCESS_KEY_ID": "AKIAEXAMPLE",
            "CHEESESHOP_EMAIL_SES__SECRET_ACCESS_KEY": "s3cr3t-value",
        }
    )

    assert isinstance(section, SESSettings)
    assert section.region == "eu-west-1"
    assert section.sns_topic_arns == [TOPIC_ARN, OTHER]
    assert section.sns_trusted_url_pattern == DEFAULT_SNS_TRUSTED_URL_PATTERN
    assert "s3cr3t-value" not in repr(section)
    assert section.secret_access_key.get_secret_value() == "s3cr3t-value"


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({}, "email_ses.region"),
        ({"CHEESESHOP_EMAIL_SES__REGION": "Europe"}, "email_ses.region"),
        (
            {
                "CHEESESHOP_EMAIL_SES__REGION": "eu-west-1",
                "CHEESESHOP_EMAIL_SES__SNS_TOPIC_ARNS": "my-topic",
            },
            "email_ses.sns_topic_arns",
        ),
        (
            {
                "CHEESESHOP_EMAIL_SES__REGION": "eu-west-1",
                "CHEESESHOP_EMAIL_SES__SNS_TRUSTED_URL_PATTERN": "((",
            },
            "email_ses.sns_trusted_url_pattern",
        ),
        (
            {
                "CHEESESHOP_EMAIL_SES__REGION": "eu-west-1",
                "CHEESESHOP_EMAIL_SES__ENDPOINT_URL": "localhost:5000",
            },
            "email_ses.endpoint_url",
        ),
        (
            {
                "CHEESESHOP_EMAIL_SES__REGION": "eu-west-1",
                "CHEESESHOP_EMAIL_SES__ACCESS_KEY_ID": "AKIA",
            },
            "access_key_id and secret_access_key together",
        ),
        (
            {"CHEESESHOP_EMAIL_SES__REGION": "eu-west-1", "CHEESESHOP_EMAIL_SES__REGOIN": "x"},
            "email_ses.regoin",
        ),
    ],
)
def test_settings_a_bad_value_names_its_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        plugin_settings(environ)
    assert key in str(raised.value)


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=x", True),
        ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
        ("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com@evil.example/x.pem", False),
        ("https://x@sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://s3.amazonaws.com/x.pem", False),
        ("", False),
    ],
)
def test_the_default_pattern_trusts_only_aws_sns_hosts(url: str, trusted: bool) -> None:
    assert SESSettings(region="us-east-1").trusts(url) is trusted


# -- the canonical string ----------------------------------------------------------------------


def test_canonical_string_of_a_notification_with_and_without_subject() -> None:
    fields = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC_ARN,
        "Message": "line one\nline two",
        "Timestamp": "2012-05-02T00:54:06.655Z",
        "SignatureVersion": "2",
        "Signature": "ignored",
        "SigningCertURL": "ignored",
        "UnsubscribeURL": "ignored",
    }
    expected = (
        "Message\nline one\nline two\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n"
        f"Timestamp\n2012-05-02T00:54:06.655Z\nTopicArn\n{TOPIC_ARN}\nType\nNotification\n"
    )
    assert string_to_sign(fields) == expected.encode()
    with_subject = expected.replace("Timestamp\n", "Subject\nMy subject\nTimestamp\n")
    assert string_to_sign({**fields, "Subject": "My subject"}) == with_subject.encode()


def test_canonical_string_of_a_subscription_confirmation() -> None:
    fields = subscription_confirmation(cert_url="x", subscribe_url="https://sns.example/?a=1")
    expected = "".join(
        f"{name}\n{fields[name]}\n"
        for name in (
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        )
    )
    assert string_to_sign(fields) == expected.encode()
    assert (
        string_to_sign({**fields, "Type": "UnsubscribeConfirmation"})
        == expected.replace("SubscriptionConfirmation\n", "UnsubscribeConfirmation\n").encode()
    )
    with pytest.raises(SNSRejected, match="Token"):
        string_to_sign({k: v for k, v in fields.items() if k != "Token"})


# -- the verifier, without HTTP ------------------------------------------------------------------


class Fetches:
    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.answers[url]


CERT = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"


def verifier(signer: SNSSigner, *, now: datetime | None = None) -> tuple[MessageVerifier, Fetches]:
    fetches = Fetches({CERT: signer.certificate_pem})
    section = SESSettings(region="us-east-1")
    return (
        MessageVerifier(
            topics=[TOPIC_ARN],
            trusts=section.trusts,
            certificates=CertificateCache(fetches),
            max_age=timedelta(hours=1),
            clock=(lambda: now) if now else (lambda: datetime.now(UTC)),
        ),
        fetches,
    )


def test_a_valid_message_is_verified_with_the_default_aws_pattern(signer: SNSSigner) -> None:
    check, fetches = verifier(signer)
    fields = signer.sign(notification(ses_bounce("a@example.com"), cert_url=CERT, subject="Bounce"))

    message = check.verify(fields)

    assert message.type == "Notification" and message.topic_arn == TOPIC_ARN
    assert message.subject == "Bounce"
    assert fetches.calls == [CERT]


def test_the_certificate_cache_is_bounded(signer: SNSSigner) -> None:
    urls = [f"https://sns.us-east-1.amazonaws.com/c{n}.pem" for n in range(5)]
    fetches = Fetches(dict.fromkeys(urls, signer.certificate_pem))
    cache = CertificateCache(fetches, size=2)
    for url in urls + urls[-2:]:
        cache.get(url)
    assert fetches.calls == urls


def test_replay_window_follows_the_clock(signer: SNSSigner) -> None:
    fields = signer.sign(notification(ses_bounce("a@example.com"), cert_url=CERT))
    later, _ = verifier(signer, now=datetime.now(UTC) + timedelta(minutes=61))
    with pytest.raises(SNSRejected, match="old"):
        later.verify(fields)
    soon, _ = verifier(signer, now=datetime.now(UTC) + timedelta(minutes=59))
    assert soon.verify(fields).message_id == fields["MessageId"]


# -- SES events -------------------------------------------------------------------------------


def test_a_permanent_bounce_names_each_address_and_why() -> None:
    event = parse_ses_event(ses_bounce("a@example.com", '"B" <b@example.com>', message_id="0100-x"))
    assert event is not None
    assert event.kind == "Bounce" and event.ses_message_id == "0100-x"
    assert [address for address, _ in event.undeliverable] == ["a@example.com", "b@example.com"]
    assert all("550 5.1.1" in reason and "0100-x" in reason for _, reason in event.undeliverable)


def test_a_complaint_without_a_feedback_type_still_counts() -> None:
    event = parse_ses_event(ses_complaint("a@example.com", feedback_type=None))
    assert event is not None
    assert event.undeliverable == (
        ("a@example.com", "SES: complaint (unspecified) about mail ses-2"),
    )


@pytest.mark.parametrize("text", ["plain words", "[1]", "{}", json.dumps({"notificationType": 5})])
def test_what_is_no_ses_event_is_none(text: str) -> None:
    assert parse_ses_event(text) is None


@pytest.mark.parametrize(
    "data",
    [
        {"notificationType": "Bounce"},
        {"notificationType": "Bounce", "bounce": "x"},
        {
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bouncedRecipients": []},
        },
        {
            "notificationType": "Bounce",
            "bounce": {"bouncedRecipients": [{"emailAddress": "nobody"}]},
        },
        {"notificationType": "Bounce", "bounce": {"bouncedRecipients": ["a@example.com"]}},
        {"eventType": "Complaint", "complaint": {}},
    ],
)
def test_a_malformed_bounce_or_complaint_is_an_error(data: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent):
        parse_ses_event(json.dumps(data))
