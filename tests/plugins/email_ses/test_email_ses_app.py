"""The whole loop in a running application: a release e-mail goes out through SES (moto),
its SES MessageId is what the core records, and SES's bounce for it, posted through SNS,
stops the next release e-mail to that address.

Every test runs on SQLite and on PostgreSQL (tests/conftest.py); the outbox is the
core's embedded one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from cheeseshop.db.models import NotificationEmail
from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.records import outbox_settled

from email_ses_kit import MotoServer, Post, SNSSigner, notification, ses_bounce


async def settled(services: Any, *, timeout: float = 20.0) -> None:
    """Wait until the outbox delivered every event (the e-mail is sent by then)."""
    await outbox_settled(services, timeout=timeout)


async def sent_rows(services: Any) -> list[NotificationEmail]:
    async with services.db.read() as session:
        return list(await session.scalars(select(NotificationEmail).order_by(NotificationEmail.id)))


async def test_email_sender_sends_release_mail_through_ses_and_a_bounce_stops_the_next(
    upload: Callable[..., Awaitable[Any]],
    cheeseshop_services: Any,
    moto: MotoServer,
    post_sns: Post,
    signer: SNSSigner,
    cert_url: str,
) -> None:
    first = await upload(build_wheel("ses-demo", "1.0"))
    assert first.status_code == 200, await first.get_data(as_text=True)
    await settled(cheeseshop_services)

    (row,) = await sent_rows(cheeseshop_services)
    (raw,) = moto.raw_messages()
    assert row.recipient == "alice@example.com" and row.error is None
    # The id the core recorded is SES's MessageId: the one SES's feedback will name.
    assert row.message_id == raw["id"]
    (mail,) = moto.received()
    assert "ses-demo" in mail["Subject"]
    assert [a.addr_spec for a in mail["To"].addresses] == ["alice@example.com"]

    bounce = ses_bounce("alice@example.com", message_id=raw["id"])
    response = await post_sns(signer.sign(notification(bounce, cert_url=cert_url)))
    assert response.status_code == 200, await response.get_data(as_text=True)

    second = await upload(build_wheel("ses-demo", "2.0"))
    assert second.status_code == 200, await second.get_data(as_text=True)
    await settled(cheeseshop_services)

    assert len(await sent_rows(cheeseshop_services)) == 1
    assert len(moto.raw_messages()) == 1
