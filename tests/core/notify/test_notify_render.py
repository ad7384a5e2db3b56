"""Rendering a notification: escaped HTML, one-line subjects, the same message on every resend."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, default

import pytest

from cheeseshop.config import load_settings
from cheeseshop.db import Database
from cheeseshop.events import Notification, Recipient, event_from_json
from cheeseshop.notify import Mailer
from cheeseshop.notify.plugin import cheeseshop_notify
from cheeseshop.notify.render import UnknownKind, _text_part, build_message, message_id, render

HOSTILE = '<script>alert("x")</script>'


def notification(**values: str | None) -> Notification:
    return Notification(
        notification_id="release-published-0123456789abcdef0123456789abcdef",
        kind="release-published",
        recipients=(Recipient(username="alice", email="alice@example.com", role="Owner"),),
        values={
            "project": "demo",
            "normalized_name": "demo",
            "version": "1.0",
            "published_by": "alice",
            "project_url": "https://pypi.example.com/simple/demo/",
            "release_url": "https://pypi.example.com/pypi/demo/1.0/json",
            **values,
        },
        created=datetime(2026, 11, 28, 12, 30, tzinfo=UTC),
    )


def test_notify_templates_escape_html() -> None:
    hostile = notification(
        project=HOSTILE,
        version='1.0"><img src=x onerror=alert(1)>',
        published_by="<b>mallory</b>",
        project_url='https://pypi.example.com/simple/x/" onmouseover="alert(1)',
    )
    rendered = render(hostile, Recipient(username="<i>alice</i>", email="alice@example.com", role="Owner"))

    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert "<img" not in rendered.html and "&lt;img src=x onerror=alert(1)&gt;" in rendered.html
    assert "<b>mallory" not in rendered.html and "<i>alice" not in rendered.html
    assert '" onmouseover="' not in rendered.html and "&#34; onmouseover=&#34;" in rendered.html
    # Plain text is shown as text by any mail program: no escaping there.
    assert HOSTILE in rendered.text and "<b>mallory</b> published" in rendered.text


def test_notify_subject_is_one_line() -> None:
    rendered = render(notification(project="two\nlines\r\nBcc: victim@example.com"), notification().recipients[0])
    assert rendered.subject == "New release: two lines Bcc: victim@example.com 1.0"
    message = build_message(notification(project="two\nlines"), notification().recipients[0], mail_from="a@b.example")
    assert message["Subject"] == "New release: two lines 1.0"
    assert "Bcc" not in message


def test_notify_message_is_the_same_on_every_build() -> None:
    recipient = notification().recipients[0]
    first = build_message(notification(), recipient, mail_from="Index <noreply@pypi.example.com>")
    second = build_message(notification(), recipient, mail_from="Index <noreply@pypi.example.com>")

    assert first.as_bytes() == second.as_bytes()
    assert first["Message-ID"] == message_id(
        "release-published-0123456789abcdef0123456789abcdef", "ALICE@example.com", "noreply@pypi.example.com"
    )
    assert first["Message-ID"].endswith("@pypi.example.com>")
    assert "alice" not in first["Message-ID"], "the address is hashed, not shown"
    assert first["Date"] == "Sat, 28 Nov 2026 12:30:00 +0000"
    assert [part.get_content_type() for part in first.iter_parts()] == ["text/plain", "text/html"]
    other = build_message(
        notification(), Recipient(username="bob", email="bob@example.com"), mail_from="noreply@pypi.example.com"
    )
    assert other["Message-ID"] != first["Message-ID"]


def test_notify_unknown_kind_raises() -> None:
    odd = Notification(
        notification_id="odd-1", kind="no-such-kind", recipients=notification().recipients, values={},
        created=notification().created,
    )
    with pytest.raises(UnknownKind, match="no-such-kind"):
        render(odd, odd.recipients[0])


class CountingSender:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> str:
        self.sent.append(message)
        return "id"


def test_notify_unknown_kind_is_logged_and_not_retried(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    # No templates will appear on a retry: the e-mail plugin says so and returns.
    sender = CountingSender()
    mailer = Mailer(Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"), sender)
    odd = Notification(
        notification_id="odd-2", kind="no-such-kind", recipients=notification().recipients, values={},
        created=notification().created,
    )
    caplog.set_level(logging.WARNING, logger="cheeseshop.notify.plugin")
    cheeseshop_notify(odd, mailer, load_settings(environ={}, overrides={"data_dir": tmp_path}))
    assert sender.sent == []
    assert "no-such-kind" in caplog.text
    asyncio.run(mailer.db.dispose())


def test_notify_notification_round_trips_through_json() -> None:
    original = notification()
    data = json.loads(json.dumps(original.to_json()))  # as the outbox stores it
    assert data["recipients"] == [{"username": "alice", "email": "alice@example.com", "role": "Owner"}]
    assert event_from_json("Notification", data) == original
    assert Notification.hook == "cheeseshop_notify" and Notification.argument == "notification"


def test_notify_mailer_refuses_to_block_the_event_loop(tmp_path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")

    async def on_the_loop() -> None:
        mailer = Mailer(db, CountingSender()).bound(asyncio.get_running_loop())
        with pytest.raises(RuntimeError, match="worker thread"):
            mailer.settled("x")
        await db.dispose()

    asyncio.run(on_the_loop())
    with pytest.raises(RuntimeError, match="not bound"):
        Mailer(db, CountingSender()).settled("x")


def _as_sent(message: EmailMessage) -> EmailMessage:
    """The message as a mail program reads it: written as for SMTP, parsed back."""
    return BytesParser(policy=default).parsebytes(message.as_bytes(policy=SMTP))


LONG_NAME = "a-project-" + "with-a-very-long-name-" * 4


@pytest.mark.parametrize(
    ("project", "mail_from", "email"),
    [
        # Every header short ASCII: stored as given, without the email package's parsing.
        ("demo", "Index <noreply@pypi.example.com>", "alice@example.com"),
        # A subject too long for one line, a sender's name beyond ASCII, a dot in the
        # recipient's name: each of those headers goes the email package's way.
        (LONG_NAME, "Índice Ñ <noreply@pypi.example.com>", "al.ice@example.com"),
    ],
)
def test_notify_message_reads_back_as_built(project: str, mail_from: str, email: str) -> None:
    recipient = Recipient(username=email.split("@")[0], email=email, role="Owner")
    built = notification(project=project)
    rendered = render(built, recipient)
    sent = _as_sent(build_message(built, recipient, mail_from=mail_from))

    assert sent["Subject"] == rendered.subject
    assert sent["From"].addresses[0].display_name == mail_from.split(" <")[0]
    assert sent["To"].addresses[0].display_name == recipient.username
    assert sent["To"].addresses[0].addr_spec == email
    assert sent["Date"] == "Sat, 28 Nov 2026 12:30:00 +0000"
    assert sent["Message-ID"] == message_id(built.notification_id, email, mail_from)
    assert sent["Auto-Submitted"] == "auto-generated"
    assert sent["MIME-Version"] == "1.0"
    assert not sent["To"].defects and not sent["From"].defects
    assert sent.get_content_type() == "multipart/alternative"
    # Read back with the wire's CRLF line ends, as from any message written for SMTP.
    for subtype, text in (("plain", rendered.text), ("html", rendered.html)):
        assert sent.get_body(preferencelist=(subtype,)).get_content().replace("\r\n", "\n") == text
    # Every line within SMTP's limit, and every line of the parts within 78 characters,
    # whatever the text held (a Message-ID has no place to fold, so headers may be longer).
    written = build_message(built, recipient, mail_from=mail_from).as_bytes(policy=SMTP)
    assert max(map(len, written.split(b"\r\n"))) <= 998
    assert max(map(len, written.partition(b"\r\n\r\n")[2].split(b"\r\n"))) <= 78


def test_notify_short_ascii_text_goes_as_7bit_and_anything_else_quoted_printable() -> None:
    plain = _text_part("Hello\nworld\n", "plain")
    assert (plain.get_content_type(), plain["Content-Transfer-Encoding"]) == ("text/plain", "7bit")
    assert plain.get_content() == "Hello\nworld\n"
    # Beyond ASCII, a long line, and characters that str.splitlines() would break at.
    for text in ("Grüße\n", "x" * 79 + "\n", "a\x0cb\u2028c\x85d\n"):
        part = _text_part(text, "html")
        assert part.get_content_type() == "text/html"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content() == text


@pytest.mark.parametrize(
    "email",
    [
        "alice@example.com",
        "al.ice@example.com",  # the name needs quotes: "al.ice"
        "o'neil+tag@sub.example.com",
        "bob@exämple.de",  # a domain beyond ASCII: encoded
        "a" * 60 + "@example.com",  # a To header longer than a line
        "root,alice@example.com",  # refused, never split into two recipients
        "a>b@example.com",
        'a"b@example.com',
        "a..b@example.com",
    ],
)
def test_notify_to_header_is_the_one_the_email_package_writes(email: str) -> None:
    # Whatever the address, the To header is what the email package makes of it, or the
    # message is refused as the package refuses the address.
    username = "al.ice" if email.startswith("al.") else "alice"
    recipient = Recipient(username=username, email=email, role="Owner")
    reference = EmailMessage(policy=default)
    try:
        reference["To"] = Address(display_name=username, addr_spec=email)
        expected = _to_line(reference)
    except Exception as error:
        with pytest.raises(type(error)):
            build_message(notification(), recipient, mail_from="noreply@pypi.example.com")
        return
    built = build_message(notification(), recipient, mail_from="noreply@pypi.example.com")
    assert _to_line(built) == expected


def _to_line(message: EmailMessage) -> bytes:
    """The To header as written for SMTP, folded lines included."""
    written = message.as_bytes(policy=SMTP).partition(b"\r\n\r\n")[0]
    return re.search(rb"^To: .*?(?=\r\n[^ \t])", written + b"\r\nX", re.M | re.S).group(0)
