"""At least once, yet one e-mail per person: repeats, retries and refusals of a notification."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from notify_support import SMTPServer, add_role, add_user, eventually, notification_events, settled
from sqlalchemy import delete, select, update

import cheeseshop.notify.mailer
from cheeseshop.db.models import NotificationEmail, OutboxDelivery, OutboxEvent, utcnow
from cheeseshop.testing.dists import build_wheel


@pytest.fixture
def cheeseshop_settings_overrides(smtp_server: SMTPServer) -> dict[str, Any]:
    # A real SMTP server counts what is really sent: the folder sender would overwrite a
    # repeat's file and so hide it.
    return smtp_server.settings()


async def two_maintainers(upload: Any, services: Any, inbox: Any) -> int:
    """alice's project with bob as Maintainer; release 2.0 uploaded; its notification's id."""
    assert (await upload(build_wheel("twice", "1.0"))).status_code == 200
    await eventually(lambda: len(inbox.to("alice@example.com")) == 1)
    await settled(services)
    await add_user(services, "bob")
    await add_role(services, "bob", "twice", "Maintainer")
    assert (await upload(build_wheel("twice", "2.0"))).status_code == 200
    return (await notification_events(services))[-1].id


async def deliver_again(services: Any, event_id: int) -> None:
    """Deliver the event once more, as after a crash before its outcome was recorded."""
    async with services.db.write() as session:
        await session.execute(delete(OutboxDelivery).where(OutboxDelivery.event_id == event_id))
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == event_id)
            .values(completed=None, lease_until=None, next_attempt=utcnow())
        )
    await services.outbox.deliver(event_id)  # or the background loop takes it first
    await settled(services)


async def test_notify_repeated_delivery_sends_once(
    upload: Any, cheeseshop_services: Any, smtp_server: SMTPServer
) -> None:
    services, inbox = cheeseshop_services, smtp_server.inbox
    event_id = await two_maintainers(upload, services, inbox)
    await settled(services)
    assert (len(inbox.to("alice@example.com")), len(inbox.to("bob@example.com"))) == (2, 1)

    await deliver_again(services, event_id)
    await deliver_again(services, event_id)
    assert (len(inbox.to("alice@example.com")), len(inbox.to("bob@example.com"))) == (2, 1)

    # The record is what holds the repeat back: without bob's row, bob is mailed again.
    async with services.db.write() as session:
        await session.execute(delete(NotificationEmail).where(NotificationEmail.recipient == "bob@example.com"))
    await deliver_again(services, event_id)
    assert (len(inbox.to("alice@example.com")), len(inbox.to("bob@example.com"))) == (2, 2)


async def test_notify_retry_sends_only_what_failed(
    upload: Any, cheeseshop_services: Any, smtp_server: SMTPServer
) -> None:
    services, inbox = cheeseshop_services, smtp_server.inbox
    inbox.refuse["bob@example.com"] = "451 4.3.0 try again later"
    event_id = await two_maintainers(upload, services, inbox)

    async def email_delivery() -> OutboxDelivery | None:
        async with services.db.read() as session:
            return await session.scalar(
                select(OutboxDelivery).where(OutboxDelivery.event_id == event_id, OutboxDelivery.plugin == "email")
            )

    deadline = asyncio.get_running_loop().time() + 15
    while (delivery := await email_delivery()) is None or delivery.attempts < 2:
        assert asyncio.get_running_loop().time() < deadline, "the failing delivery is not retried"
        await asyncio.sleep(0.05)
    assert delivery.delivered is None and "bob@example.com" in (delivery.last_error or "")

    del inbox.refuse["bob@example.com"]
    await settled(services)
    assert (len(inbox.to("alice@example.com")), len(inbox.to("bob@example.com"))) == (2, 1)


async def test_notify_permanent_refusal_is_recorded_and_not_retried(
    upload: Any, cheeseshop_services: Any, smtp_server: SMTPServer
) -> None:
    services, inbox = cheeseshop_services, smtp_server.inbox
    inbox.refuse["bob@example.com"] = "550 5.1.1 no such mailbox"
    await two_maintainers(upload, services, inbox)
    await settled(services)
    await asyncio.sleep(0.5)  # several sweeps: nothing may be tried again

    async with services.db.read() as session:
        rows = {r.recipient: r for r in await session.scalars(select(NotificationEmail))}
        attempts = list(await session.scalars(select(OutboxDelivery.attempts)))
    assert rows["bob@example.com"].message_id is None
    assert "550" in (rows["bob@example.com"].error or "")
    assert rows["alice@example.com"].error is None
    assert set(attempts) == {1}
    assert (len(inbox.to("alice@example.com")), len(inbox.to("bob@example.com"))) == (2, 0)


async def test_notify_resend_after_a_lost_record_keeps_its_message_id(
    upload: Any, cheeseshop_services: Any, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The documented window: the server took the e-mail, then recording it failed. The
    # retry sends it again, as the very same message (same Message-ID, same Date).
    services, inbox = cheeseshop_services, smtp_server.inbox
    real_record = cheeseshop.notify.mailer._record
    failures = [1]

    def record_failing_once(session: Any, **values: Any) -> None:
        if failures:
            failures.pop()
            raise ConnectionError("the database went away")
        real_record(session, **values)

    monkeypatch.setattr(cheeseshop.notify.mailer, "_record", record_failing_once)
    assert (await upload(build_wheel("window", "1.0"))).status_code == 200
    await eventually(lambda: len(inbox.to("alice@example.com")) == 2)
    await settled(services)

    first, second = inbox.to("alice@example.com")
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Date"] == second["Date"]
    assert first.as_bytes() == second.as_bytes()
