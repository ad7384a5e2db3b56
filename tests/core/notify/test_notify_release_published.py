"""A new release e-mails the project's Owners and Maintainers, once, through the outbox."""

from __future__ import annotations

from typing import Any

import pytest
from notify_support import (
    SMTPServer,
    add_role,
    add_user,
    eventually,
    mail_files,
    mails_to,
    notification_events,
    settled,
)
from sqlalchemy import select

import cheeseshop.upload.service
from cheeseshop.db.models import NotificationEmail, OutboxEvent
from cheeseshop.events import Notification
from cheeseshop.notify import mark_address_undeliverable
from cheeseshop.testing.dists import build_sdist, build_wheel


@pytest.fixture
def cheeseshop_settings_overrides() -> dict[str, Any]:
    return {"base_url": "https://pypi.example.com/", "mail_from": "Example Index <noreply@pypi.example.com>"}


async def first_release(upload: Any, name: str) -> None:
    """alice creates the project with release 1.0 (she is its Owner); its e-mail is sent."""
    response = await upload(build_wheel(name, "1.0"))
    assert response.status_code == 200, await response.get_data(as_text=True)


async def test_notify_release_published_mails_owners_and_maintainers(
    upload: Any, make_token: Any, cheeseshop_services: Any
) -> None:
    services = cheeseshop_services
    await first_release(upload, "notified")
    await settled(services)
    assert [m["Subject"] for m in mails_to(services, "alice@example.com")] == ["New release: notified 1.0"]

    await add_user(services, "bob")  # Maintainer
    await add_user(services, "carol")  # Owner
    await add_user(services, "dave", notify_release_published=False)  # opted out
    await add_user(services, "erin")  # an address that bounced
    await add_user(services, "frank", is_active=False)  # a disabled account
    await add_user(services, "grace")  # no role at all
    for username, role in [("bob", "Maintainer"), ("carol", "Owner"), ("dave", "Maintainer"),
                           ("erin", "Maintainer"), ("frank", "Owner")]:
        await add_role(services, username, "notified", role)
    assert await mark_address_undeliverable(services.db, "ERIN@example.com", "Permanent bounce: General")

    response = await upload(build_wheel("notified", "2.0"), token=await make_token("bob"))
    assert response.status_code == 200
    await settled(services)

    got = {
        address: sorted(m["Subject"] for m in mails_to(services, address))
        for address in ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
        for address in [f"{address}@example.com"]
    }
    assert got == {
        "alice@example.com": ["New release: notified 1.0", "New release: notified 2.0"],
        "bob@example.com": ["New release: notified 2.0"],
        "carol@example.com": ["New release: notified 2.0"],
        "dave@example.com": [],
        "erin@example.com": [],
        "frank@example.com": [],
        "grace@example.com": [],
    }
    (notification,) = [
        Notification.from_json(e.payload) for e in await notification_events(services)
        if e.payload["values"]["version"] == "2.0"
    ]
    assert notification.kind == "release-published"
    assert [(r.username, r.email, r.role) for r in notification.recipients] == [
        ("alice", "alice@example.com", "Owner"),
        ("bob", "bob@example.com", "Maintainer"),
        ("carol", "carol@example.com", "Owner"),
    ]
    assert notification.values["published_by"] == "bob"


async def test_notify_release_published_once_per_release(upload: Any, cheeseshop_services: Any) -> None:
    services = cheeseshop_services
    assert (await upload(build_wheel("once", "1.0"))).status_code == 200
    assert (await upload(build_sdist("once", "1.0"))).status_code == 200
    assert (await upload(build_wheel("once", "1.0", tag="py2.py3-none-any"))).status_code == 200
    await settled(services)

    assert len(await notification_events(services)) == 1
    assert len(mail_files(services)) == 1


async def test_notify_release_published_email_content(upload: Any, cheeseshop_services: Any) -> None:
    services = cheeseshop_services
    await first_release(upload, "Content.Demo")
    await settled(services)

    (message,) = mails_to(services, "alice@example.com")
    (event,) = await notification_events(services)
    notification = Notification.from_json(event.payload)

    assert message["From"] == "Example Index <noreply@pypi.example.com>"
    assert message["To"] == "alice <alice@example.com>"
    assert message["Subject"] == "New release: Content.Demo 1.0"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].startswith(f"<{notification.notification_id}.")
    assert message["Message-ID"].endswith("@pypi.example.com>")
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "alice published version" in " ".join(body.split())
        assert "https://pypi.example.com/pypi/content-demo/1.0/json" in body
        assert "https://pypi.example.com/simple/content-demo/" in body
        assert "--no-release-published" in body
    assert "as an Owner of Content.Demo" in text
    assert '<a href="https://pypi.example.com/simple/content-demo/">' in html

    async with services.db.read() as session:
        (row,) = await session.scalars(select(NotificationEmail))
    assert (row.notification_id, row.recipient, row.error) == (
        notification.notification_id, "alice@example.com", None,
    )
    assert row.message_id == mail_files(services)[0].name  # the folder sender's id: the file


async def test_notify_release_published_recorded_in_the_upload_transaction(
    upload: Any, cheeseshop_services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The transaction fails after the notification was built and recorded: it must vanish
    # with the upload, and no one may be told of a release that does not exist.
    real_record = cheeseshop.upload.service.record
    recorded: list[str] = []

    def record_then_fail(session: Any, events: Any) -> list[int]:
        ids = real_record(session, events)
        recorded.extend(type(event).__name__ for event in events)
        raise RuntimeError("the commit fails after the outbox rows were written")

    monkeypatch.setattr(cheeseshop.upload.service, "record", record_then_fail)
    response = await upload(build_wheel("rolled-back", "1.0"))
    assert response.status_code == 500
    assert "Notification" in recorded

    monkeypatch.setattr(cheeseshop.upload.service, "record", real_record)
    async with cheeseshop_services.db.read() as session:
        assert list(await session.scalars(select(OutboxEvent))) == []
        assert list(await session.scalars(select(NotificationEmail))) == []
    assert mail_files(cheeseshop_services) == []


class TestWithoutEmail:
    @pytest.fixture
    def cheeseshop_settings_overrides(self) -> dict[str, Any]:
        return {"blocked_plugins": ["email"]}

    async def test_notify_nothing_recorded_when_no_plugin_receives_it(
        self, upload: Any, cheeseshop_services: Any
    ) -> None:
        assert (await upload(build_wheel("unmailed", "1.0"))).status_code == 200
        await settled(cheeseshop_services)
        assert await notification_events(cheeseshop_services) == []
        assert mail_files(cheeseshop_services) == []


class TestWithoutBaseURL:
    @pytest.fixture
    def cheeseshop_settings_overrides(self) -> dict[str, Any]:
        return {}

    async def test_notify_release_published_has_no_links_without_base_url(
        self, upload: Any, cheeseshop_services: Any
    ) -> None:
        # Links built from the request's Host header would let an uploader choose where
        # the other maintainers' e-mail points: without base_url there are none.
        response = await upload(build_wheel("linkless", "1.0"))
        assert response.status_code == 200
        await settled(cheeseshop_services)
        (message,) = mails_to(cheeseshop_services, "alice@example.com")
        for subtype in ("plain", "html"):
            body = message.get_body((subtype,)).get_content()
            assert "http" not in body, body
        assert message["Message-ID"].endswith("@localhost>")


class TestThroughSMTP:
    @pytest.fixture
    def cheeseshop_settings_overrides(self, smtp_server: SMTPServer) -> dict[str, Any]:
        return smtp_server.settings(mail_from="Example Index <noreply@pypi.example.com>")

    async def test_notify_release_published_through_smtp(
        self, upload: Any, cheeseshop_services: Any, smtp_server: SMTPServer
    ) -> None:
        services = cheeseshop_services
        await first_release(upload, "over-smtp")
        await add_user(services, "bob")
        await add_role(services, "bob", "over-smtp", "Maintainer")
        assert (await upload(build_sdist("over-smtp", "2.0"))).status_code == 200

        await eventually(lambda: len(smtp_server.inbox.received()) == 3)
        await settled(services)
        inbox = smtp_server.inbox
        assert sorted((rcpts, m["Subject"]) for m, (_, rcpts) in zip(inbox.received(), inbox.envelopes)) == [
            (["alice@example.com"], "New release: over-smtp 1.0"),
            (["alice@example.com"], "New release: over-smtp 2.0"),
            (["bob@example.com"], "New release: over-smtp 2.0"),
        ]
        assert {mail_from for mail_from, _ in inbox.envelopes} == {"noreply@pypi.example.com"}
        assert mail_files(services) == []
        async with services.db.read() as session:
            recorded = {(r.recipient, r.message_id) for r in await session.scalars(select(NotificationEmail))}
        assert recorded == {(m["To"].addresses[0].addr_spec, m["Message-ID"]) for m in inbox.received()}
