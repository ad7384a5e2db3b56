"""POST /_ses/sns/ in a running application: verified SES feedback stops mail to an address.

Messages are signed here with a key made for the test; its certificate is served by a
plain HTTP server on 127.0.0.1, which the settings trust in place of AWS's SNS hosts.
Every test runs on SQLite and on PostgreSQL (tests/conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from cheeseshop.db.models import Email

from email_ses_kit import (
    CERT_PATH,
    CONFIRM_PATH,
    OTHER_TOPIC_ARN,
    Post,
    FileServer,
    SNSSigner,
    notification,
    ses_bounce,
    ses_complaint,
    ses_delivery,
    sns_timestamp,
    subscription_confirmation,
)

Row = Callable[[str], Awaitable[Email | None]]


async def text(response: Any) -> str:
    return str(await response.get_data(as_text=True))


@pytest.fixture
async def alice(make_token: Callable[..., Awaitable[str]], cheeseshop_services: Any) -> str:
    """User alice, whose only address is verified."""
    await make_token("alice")
    async with cheeseshop_services.db.write() as session:
        await session.execute(
            update(Email).where(Email.email == "alice@example.com").values(verified=True)
        )
    return "alice@example.com"


# -- bounces and complaints -----------------------------------------------------------------


async def test_configure_adds_the_endpoint_and_a_permanent_bounce_stops_mail(
    post_sns: Post, signer: SNSSigner, cert_url: str, alice: str, email_row: Row
) -> None:
    fields = signer.sign(notification(ses_bounce(alice), cert_url=cert_url))

    response = await post_sns(fields)

    assert response.status_code == 200, await text(response)
    row = await email_row(alice)
    assert row is not None
    assert row.undeliverable_since is not None
    assert row.verified is False
    assert "permanent bounce" in (row.undeliverable_reason or "")
    assert "550 5.1.1" in (row.undeliverable_reason or "")


async def test_a_redelivered_bounce_changes_nothing_further(
    post_sns: Post,
    signer: SNSSigner,
    cert_url: str,
    alice: str,
    email_row: Row,
    cheeseshop_services: Any,
) -> None:
    fields = signer.sign(notification(ses_bounce(alice), cert_url=cert_url))
    assert (await post_sns(fields)).status_code == 200
    first = await email_row(alice)
    assert first is not None and first.undeliverable_since is not None
    # The owner re-verifies in between; SNS then delivers the same message again.
    async with cheeseshop_services.db.write() as session:
        await session.execute(update(Email).where(Email.email == alice).values(verified=True))

    again = await post_sns(fields)

    assert again.status_code == 200
    assert "handled already" in await text(again)
    second = await email_row(alice)
    assert second is not None
    assert second.verified is True
    assert second.undeliverable_since == first.undeliverable_since
    assert second.undeliverable_reason == first.undeliverable_reason


async def test_another_bounce_for_a_marked_address_keeps_the_first_reason(
    post_sns: Post, signer: SNSSigner, cert_url: str, alice: str, email_row: Row
) -> None:
    # A second SNS message (another id) about the same address: still harmless.
    for sub_type in ("General", "NoEmail"):
        fields = signer.sign(notification(ses_bounce(alice, sub_type=sub_type), cert_url=cert_url))
        assert (await post_sns(fields)).status_code == 200
    row = await email_row(alice)
    assert row is not None and "(General)" in (row.undeliverable_reason or "")


async def test_a_bounce_names_every_recipient_and_unknown_ones_are_harmless(
    post_sns: Post,
    signer: SNSSigner,
    cert_url: str,
    alice: str,
    make_token: Callable[..., Awaitable[str]],
    email_row: Row,
) -> None:
    await make_token("bob")
    bounce = ses_bounce("Alice@Example.com", "bob@example.com", "stranger@example.org")

    response = await post_sns(signer.sign(notification(bounce, cert_url=cert_url)))

    assert response.status_code == 200, await text(response)
    assert "2 address(es)" in await text(response)
    for address in (alice, "bob@example.com"):
        row = await email_row(address)
        assert row is not None and row.undeliverable_since is not None


async def test_a_complaint_stops_mail(
    post_sns: Post, signer: SNSSigner, cert_url: str, alice: str, email_row: Row
) -> None:
    response = await post_sns(signer.sign(notification(ses_complaint(alice), cert_url=cert_url)))

    assert response.status_code == 200, await text(response)
    row = await email_row(alice)
    assert row is not None and row.undeliverable_since is not None and row.verified is False
    assert "complaint (abuse)" in (row.undeliverable_reason or "")


@pytest.mark.parametrize(
    "event",
    [
        ses_bounce("alice@example.com", bounce_type="Transient", sub_type="MailboxFull"),
        ses_bounce("alice@example.com", bounce_type="Undetermined"),
        ses_delivery("alice@example.com"),
        ses_complaint("alice@example.com", feedback_type="not-spam"),
        json.dumps({"eventType": "Open", "open": {}, "mail": {"messageId": "ses-9"}}),
    ],
    ids=["transient", "undetermined", "delivery", "not-spam", "open"],
)
async def test_other_events_are_logged_only(
    post_sns: Post, signer: SNSSigner, cert_url: str, alice: str, email_row: Row, event: str
) -> None:
    response = await post_sns(signer.sign(notification(event, cert_url=cert_url)))

    assert response.status_code == 200, await text(response)
    assert "nothing to do" in await text(response)
    row = await email_row(alice)
    assert row is not None and row.undeliverable_since is None and row.verified is True


async def test_a_notification_that_is_no_ses_event_is_accepted_and_ignored(
    post_sns: Post, signer: SNSSigner, cert_url: str
) -> None:
    # SES posts such a text when a topic is attached to an identity.
    fields = notification(
        "Successfully validated SNS topic for Amazon SES event publishing.", cert_url=cert_url
    )

    response = await post_sns(signer.sign(fields))

    assert response.status_code == 200
    assert "not an SES event" in await text(response)


async def test_a_signed_subject_is_part_of_the_signature(
    post_sns: Post, signer: SNSSigner, cert_url: str, alice: str, email_row: Row
) -> None:
    signed = signer.sign(notification(ses_bounce(alice), cert_url=cert_url, subject="Bounce"))

    tampered = await post_sns({**signed, "Subject": "Something else"})
    assert tampered.status_code == 400
    row = await email_row(alice)
    assert row is not None and row.undeliverable_since is None

    assert (await post_sns(signed)).status_code == 200


# -- subscriptions ----------------------------------------------------------------------------


async def test_a_subscription_confirmation_fetches_the_subscribe_url_once(
    post_sns: Post, signer: SNSSigner, cert_url: str, files: FileServer
) -> None:
    subscribe_url = f"{files.url}{CONFIRM_PATH}?Action=ConfirmSubscription&TopicArn=t&Token=x"
    fields = signer.sign(subscription_confirmation(cert_url=cert_url, subscribe_url=subscribe_url))

    response = await post_sns(fields)
    again = await post_sns(fields)

    assert response.status_code == 200, await text(response)
    assert again.status_code == 200
    confirmations = [path for path in files.requests if path.startswith(CONFIRM_PATH)]
    assert confirmations == [subscribe_url.removeprefix(files.url)]


async def test_an_unsubscribe_confirmation_is_only_logged(
    post_sns: Post,
    signer: SNSSigner,
    cert_url: str,
    files: FileServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscribe_url = f"{files.url}{CONFIRM_PATH}?Action=ConfirmSubscription&Token=x"
    fields = signer.sign(
        subscription_confirmation(
            cert_url=cert_url, subscribe_url=subscribe_url, kind="UnsubscribeConfirmation"
        )
    )

    response = await post_sns(fields)

    assert response.status_code == 200, await text(response)
    assert not [path for path in files.requests if path.startswith(CONFIRM_PATH)]
    assert any("unsubscribed" in record.getMessage() for record in caplog.records)


async def test_a_subscribe_url_elsewhere_is_refused_and_not_fetched(
    post_sns: Post, signer: SNSSigner, cert_url: str, untrusted: FileServer
) -> None:
    subscribe_url = f"{untrusted.url}{CONFIRM_PATH}?Action=ConfirmSubscription&Token=x"
    fields = signer.sign(subscription_confirmation(cert_url=cert_url, subscribe_url=subscribe_url))

    response = await post_sns(fields)

    assert response.status_code == 400
    assert "SubscribeURL" in await text(response)
    assert untrusted.requests == []


async def test_a_subscribe_url_that_is_no_confirmation_is_refused(
    post_sns: Post, signer: SNSSigner, cert_url: str, files: FileServer
) -> None:
    subscribe_url = f"{files.url}{CONFIRM_PATH}?Action=Unsubscribe&Token=x"
    fields = signer.sign(subscription_confirmation(cert_url=cert_url, subscribe_url=subscribe_url))

    response = await post_sns(fields)

    assert response.status_code == 400
    assert "ConfirmSubscription" in await text(response)
    assert not [path for path in files.requests if path.startswith(CONFIRM_PATH)]


# -- refusals -----------------------------------------------------------------------------------


async def refused(
    post_sns: Post, fields: dict[str, str] | bytes, status: int, words: str, **kw: Any
) -> None:
    response = await post_sns(fields, **kw)
    body = await text(response)
    assert response.status_code == status, body
    assert words in body, body


async def test_a_tampered_message_is_refused(
    post_sns: Post, signer: SNSSigner, cert_url: str, alice: str, email_row: Row
) -> None:
    signed = signer.sign(notification(ses_delivery(alice), cert_url=cert_url))
    # A delivery turned into a bounce after signing.
    await refused(
        post_sns, {**signed, "Message": ses_bounce(alice)}, 400, "signature does not match"
    )
    row = await email_row(alice)
    assert row is not None and row.undeliverable_since is None


async def test_signature_version_1_is_refused(
    post_sns: Post, signer: SNSSigner, cert_url: str, alice: str, email_row: Row, files: FileServer
) -> None:
    # Correctly signed, with SHA1: refused all the same, before any certificate is fetched.
    fields = signer.sign(notification(ses_bounce(alice), cert_url=cert_url), version="1")
    await refused(post_sns, fields, 400, "SignatureVersion 1 (SHA1) is refused")
    assert files.requests == []
    row = await email_row(alice)
    assert row is not None and row.undeliverable_since is None


@pytest.mark.parametrize("missing", ["Signature", "SignatureVersion", "both"])
async def test_an_unsigned_message_is_refused(
    post_sns: Post, signer: SNSSigner, cert_url: str, alice: str, missing: str
) -> None:
    fields = signer.sign(notification(ses_bounce(alice), cert_url=cert_url))
    for name in ("Signature", "SignatureVersion") if missing == "both" else (missing,):
        del fields[name]
    await refused(post_sns, fields, 400, "not signed")


async def test_an_unknown_signature_version_is_refused(
    post_sns: Post, signer: SNSSigner, cert_url: str
) -> None:
    fields = signer.sign(notification(ses_delivery("a@example.com"), cert_url=cert_url))
    await refused(post_sns, {**fields, "SignatureVersion": "3"}, 400, "only 2 is accepted")


async def test_a_certificate_from_an_untrusted_host_is_refused_and_not_fetched(
    post_sns: Post, signer: SNSSigner, untrusted: FileServer, alice: str, email_row: Row
) -> None:
    fields = signer.sign(notification(ses_bounce(alice), cert_url=untrusted.url + CERT_PATH))
    await refused(post_sns, fields, 400, "SigningCertURL")
    assert untrusted.requests == []
    row = await email_row(alice)
    assert row is not None and row.undeliverable_since is None


@pytest.mark.parametrize(
    "url",
    [
        # AWS's own host: trusted by default, not in these tests' settings.
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "ftp://127.0.0.1/x.pem",
        "",
    ],
)
async def test_other_certificate_urls_are_refused(
    post_sns: Post, signer: SNSSigner, url: str
) -> None:
    fields = signer.sign(notification(ses_delivery("a@example.com"), cert_url=url))
    await refused(post_sns, fields, 400, "SigningCertURL")


async def test_a_certificate_url_with_credentials_is_refused(
    post_sns: Post, signer: SNSSigner, files: FileServer
) -> None:
    url = f"http://user:pass@127.0.0.1:{files.port}{CERT_PATH}"
    fields = signer.sign(notification(ses_delivery("a@example.com"), cert_url=url))
    await refused(post_sns, fields, 400, "SigningCertURL")
    assert files.requests == []


async def test_a_message_signed_by_another_key_is_refused(
    post_sns: Post, cert_url: str, alice: str, email_row: Row
) -> None:
    # The right certificate URL, a key that is not the certificate's.
    impostor = SNSSigner.make()
    await refused(
        post_sns,
        impostor.sign(notification(ses_bounce(alice), cert_url=cert_url)),
        400,
        "signature",
    )
    row = await email_row(alice)
    assert row is not None and row.undeliverable_since is None


async def test_an_unknown_topic_is_refused_before_any_fetch(
    post_sns: Post, signer: SNSSigner, cert_url: str, files: FileServer, alice: str, email_row: Row
) -> None:
    fields = signer.sign(notification(ses_bounce(alice), cert_url=cert_url, topic=OTHER_TOPIC_ARN))
    await refused(post_sns, fields, 403, "TopicArn")
    assert files.requests == []
    row = await email_row(alice)
    assert row is not None and row.undeliverable_since is None


async def test_an_old_message_is_refused(post_sns: Post, signer: SNSSigner, cert_url: str) -> None:
    old = sns_timestamp(datetime.now(UTC) - timedelta(hours=2))
    fields = signer.sign(
        notification(ses_delivery("a@example.com"), cert_url=cert_url, timestamp=old)
    )
    await refused(post_sns, fields, 400, "old")


async def test_a_message_from_the_future_is_refused(
    post_sns: Post, signer: SNSSigner, cert_url: str
) -> None:
    later = sns_timestamp(datetime.now(UTC) + timedelta(hours=1))
    fields = signer.sign(
        notification(ses_delivery("a@example.com"), cert_url=cert_url, timestamp=later)
    )
    await refused(post_sns, fields, 400, "future")


async def test_an_expired_certificate_is_refused(post_sns: Post, files: FileServer) -> None:
    now = datetime.now(UTC)
    expired = SNSSigner.make(not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    files.answers["/expired.pem"] = (200, expired.certificate_pem)
    fields = expired.sign(
        notification(ses_delivery("a@example.com"), cert_url=files.url + "/expired.pem")
    )
    await refused(post_sns, fields, 400, "not valid now")


async def test_a_missing_certificate_is_refused(
    post_sns: Post, signer: SNSSigner, files: FileServer
) -> None:
    fields = signer.sign(
        notification(ses_delivery("a@example.com"), cert_url=files.url + "/gone.pem")
    )
    await refused(post_sns, fields, 400, "404")


async def test_a_certificate_url_that_serves_no_certificate_is_refused(
    post_sns: Post, signer: SNSSigner, files: FileServer
) -> None:
    files.answers["/junk.pem"] = (200, b"<html>not a certificate</html>")
    fields = signer.sign(
        notification(ses_delivery("a@example.com"), cert_url=files.url + "/junk.pem")
    )
    await refused(post_sns, fields, 400, "PEM certificate")


async def test_a_certificate_host_in_trouble_is_a_503_to_retry(
    post_sns: Post, signer: SNSSigner, files: FileServer
) -> None:
    files.answers["/busy.pem"] = (502, b"bad gateway")
    fields = signer.sign(
        notification(ses_delivery("a@example.com"), cert_url=files.url + "/busy.pem")
    )
    response = await post_sns(fields)
    assert response.status_code == 503
    assert response.headers["Retry-After"]


async def test_the_certificate_is_fetched_once(
    post_sns: Post, signer: SNSSigner, cert_url: str, files: FileServer
) -> None:
    for _ in range(3):
        fields = signer.sign(notification(ses_delivery("a@example.com"), cert_url=cert_url))
        assert (await post_sns(fields)).status_code == 200
    assert [path for path in files.requests if path == CERT_PATH] == [CERT_PATH]


async def test_a_malformed_bounce_is_refused(
    post_sns: Post, signer: SNSSigner, cert_url: str
) -> None:
    event = json.dumps(
        {"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}, "mail": {}}
    )
    await refused(
        post_sns, signer.sign(notification(event, cert_url=cert_url)), 400, "bouncedRecipients"
    )


async def test_a_header_that_contradicts_the_type_is_refused(
    post_sns: Post, signer: SNSSigner, cert_url: str
) -> None:
    fields = signer.sign(notification(ses_delivery("a@example.com"), cert_url=cert_url))
    await refused(
        post_sns, fields, 400, "x-amz-sns-message-type", message_type="SubscriptionConfirmation"
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe not utf-8", "not JSON"),
        (b"{", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"Notification"', "not a JSON object"),
        (b'{"Type": 7}', "not a string"),
        (b'{"Type": "Notification"}', "not signed"),
        (
            b'{"Type": "Weird", "SignatureVersion": "2", "Signature": "AAAA"}',
            "unknown message Type",
        ),
        (
            b'{"Type": "Notification", "SignatureVersion": "2", "Signature": "AAAA"}',
            "needs the field",
        ),
        (
            (
                b'{"Type": "Notification", "SignatureVersion": "2", "Signature": "not base64!",'
                b' "Message": "m", "MessageId": "1", "Timestamp": "t", "TopicArn": "a"}'
            ),
            "not base64",
        ),
    ],
)
async def test_bad_bodies_get_a_400_saying_what_is_wrong(
    post_sns: Post, body: bytes, words: str
) -> None:
    await refused(post_sns, body, 400, words)


async def test_a_bad_timestamp_is_refused(post_sns: Post, signer: SNSSigner, cert_url: str) -> None:
    fields = signer.sign(
        notification(ses_delivery("a@example.com"), cert_url=cert_url, timestamp="yesterday")
    )
    await refused(post_sns, fields, 400, "Timestamp")


async def test_a_huge_body_is_refused(post_sns: Post) -> None:
    await refused(post_sns, b"{" + b" " * (1024 * 1024 + 1) + b"}", 413, "larger than")


async def test_only_post_is_allowed(cheeseshop_client: Any) -> None:
    response = await cheeseshop_client.get("/_ses/sns/")
    assert response.status_code == 405
