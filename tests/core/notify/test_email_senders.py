"""The e-mail senders: the contract suite against each core sender, then their own failures."""

from __future__ import annotations

import types
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from notify_support import (
    SMTP_LOGIN,
    SMTP_PASSWORD,
    Certificate,
    SMTPServer,
    free_port,
    read_eml,
)

import cheeseshop
from cheeseshop.config import load_settings
from cheeseshop.notify import EmailSender, EmailSendError, FileSender, SMTPSender
from cheeseshop.plugins import PluginError, load_plugins
from cheeseshop.testing.contracts import EmailSenderContract


def message(to: str = "alice@example.com", subject: str = "Hello") -> EmailMessage:
    built = EmailMessage(policy=default_policy)
    built["Subject"] = subject
    built["From"] = "Index <noreply@example.com>"
    built["To"] = to
    built.set_content("Hello.\n")
    return built


# -- the contract, against every sender the core ships ----------------------------------------


class TestFileSenderContract(EmailSenderContract):
    @pytest.fixture
    def sender(self, tmp_path: Path) -> EmailSender:
        return FileSender(tmp_path / "mail")

    @pytest.fixture
    def received(self, tmp_path: Path) -> Callable[[], list[EmailMessage]]:
        return lambda: [read_eml(path) for path in sorted((tmp_path / "mail").glob("*.eml"))]


class TestSMTPSenderContract(EmailSenderContract):
    @pytest.fixture
    def sender(self, smtp_server: SMTPServer) -> EmailSender:
        return SMTPSender(smtp_server.host, smtp_server.port, security="none", timeout=10)

    @pytest.fixture
    def received(self, smtp_server: SMTPServer) -> Callable[[], list[EmailMessage]]:
        return smtp_server.inbox.received


class TestSMTPSenderStartTLSContract(EmailSenderContract):
    @pytest.fixture
    def sender(self, starttls_server: SMTPServer, certificate: Certificate) -> EmailSender:
        return SMTPSender(
            starttls_server.host,
            starttls_server.port,
            security="starttls",
            username=SMTP_LOGIN,
            password=SMTP_PASSWORD,
            ca_file=certificate.cert,
            timeout=10,
        )

    @pytest.fixture
    def received(self, starttls_server: SMTPServer) -> Callable[[], list[EmailMessage]]:
        return starttls_server.inbox.received


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # see ssl_server
class TestSMTPSenderSSLContract(EmailSenderContract):
    @pytest.fixture
    def sender(self, ssl_server: SMTPServer, certificate: Certificate) -> EmailSender:
        return SMTPSender(
            ssl_server.host,
            ssl_server.port,
            security="ssl",
            username=SMTP_LOGIN,
            password=SMTP_PASSWORD,
            ca_file=certificate.cert,
            timeout=10,
        )

    @pytest.fixture
    def received(self, ssl_server: SMTPServer) -> Callable[[], list[EmailMessage]]:
        return ssl_server.inbox.received


# -- the folder sender ---------------------------------------------------------------------------


def test_email_sender_file_names_a_message_after_its_message_id(tmp_path: Path) -> None:
    sender = FileSender(tmp_path / "mail")
    first = message()
    first["Message-ID"] = "<release-published-1.abc@example.com>"
    again = message()
    again["Message-ID"] = "<release-published-1.abc@example.com>"

    assert sender.send(first) == "release-published-1.abc@example.com.eml"
    assert sender.send(again) == "release-published-1.abc@example.com.eml"

    # The same message sent again replaces its file; nothing half-written is left about.
    assert [p.name for p in (tmp_path / "mail").iterdir()] == ["release-published-1.abc@example.com.eml"]


def test_email_sender_file_never_escapes_its_folder(tmp_path: Path) -> None:
    sender = FileSender(tmp_path / "mail")
    hostile = message()
    hostile["Message-ID"] = "<../../etc/passwd@example.com>"
    other = message()
    other["Message-ID"] = "<__.._etc_passwd@example.com>"

    names = {sender.send(hostile), sender.send(other)}

    assert len(names) == 2, "ids differing only in unsafe characters must not share a file"
    assert sorted(p.name for p in (tmp_path / "mail").iterdir()) == sorted(names)
    assert all("/" not in name and not name.startswith(".") for name in names)


def test_email_sender_file_reports_a_write_failure_as_email_send_error(tmp_path: Path) -> None:
    blocker = tmp_path / "mail"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(EmailSendError) as raised:
        FileSender(blocker).send(message())
    assert not raised.value.permanent


def test_email_sender_file_logs_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="cheeseshop.notify.senders")
    FileSender(tmp_path / "mail").send(message(subject="Logged"))
    lines = [r.getMessage() for r in caplog.records if r.name == "cheeseshop.notify.senders"]
    assert len(lines) == 1 and "alice@example.com" in lines[0] and "Logged" in lines[0]


# -- the SMTP sender ------------------------------------------------------------------------------


def test_email_sender_smtp_unreachable_is_a_retryable_error() -> None:
    sender = SMTPSender("127.0.0.1", free_port(), security="none", timeout=5)
    with pytest.raises(EmailSendError) as raised:
        sender.send(message())
    assert not raised.value.permanent
    assert f"127.0.0.1:{sender.port}" in str(raised.value)


@pytest.mark.parametrize(
    ("answer", "permanent"),
    [("550 5.1.1 no such mailbox", True), ("450 4.2.1 mailbox busy, try later", False)],
)
def test_email_sender_smtp_refused_recipient(smtp_server: SMTPServer, answer: str, permanent: bool) -> None:
    smtp_server.inbox.refuse["gone@example.com"] = answer
    sender = SMTPSender(smtp_server.host, smtp_server.port, security="none", timeout=10)
    with pytest.raises(EmailSendError) as raised:
        sender.send(message(to="gone@example.com"))
    assert raised.value.permanent is permanent
    assert answer.split()[0] in str(raised.value)
    assert smtp_server.inbox.received() == []


def test_email_sender_smtp_wrong_password_is_not_the_address_fault(
    starttls_server: SMTPServer, certificate: Certificate
) -> None:
    sender = SMTPSender(
        starttls_server.host,
        starttls_server.port,
        username=SMTP_LOGIN,
        password="wrong",
        ca_file=certificate.cert,
        timeout=10,
    )
    with pytest.raises(EmailSendError) as raised:
        sender.send(message())
    assert not raised.value.permanent  # fixing the password makes the retries succeed
    assert starttls_server.inbox.received() == []


def test_email_sender_smtp_refuses_to_send_in_the_clear_without_starttls(smtp_server: SMTPServer) -> None:
    # The plain server offers no STARTTLS: the sender must stop, not fall back to plain text.
    sender = SMTPSender(smtp_server.host, smtp_server.port, security="starttls", timeout=10)
    with pytest.raises(EmailSendError, match="STARTTLS"):
        sender.send(message())
    assert smtp_server.inbox.received() == []


def test_email_sender_smtp_checks_the_server_certificate(starttls_server: SMTPServer) -> None:
    # Self-signed and not in the system's CAs: refused unless smtp_ca_file names it.
    sender = SMTPSender(
        starttls_server.host, starttls_server.port, username=SMTP_LOGIN, password=SMTP_PASSWORD, timeout=10
    )
    with pytest.raises(EmailSendError, match="(?i)certificate"):
        sender.send(message())
    assert starttls_server.inbox.received() == []


def test_email_sender_smtp_from_settings(tmp_path: Path, certificate: Certificate) -> None:
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": tmp_path,
            "mail_from": "Index <noreply@pypi.example.com>",
            "smtp_host": "127.0.0.1",
            "smtp_security": "ssl",
            "smtp_username": SMTP_LOGIN,
            "smtp_password": SMTP_PASSWORD,
            "smtp_ca_file": str(certificate.cert),
        },
    )
    sender = SMTPSender.from_settings(settings)
    assert (sender.host, sender.port, sender.security, sender.username) == ("127.0.0.1", 465, "ssl", SMTP_LOGIN)
    assert sender.local_hostname == "pypi.example.com"
    assert SMTP_PASSWORD not in repr(sender)


def test_email_sender_settings_are_validated(tmp_path: Path) -> None:
    for bad in ({"smtp_security": "tls"}, {"smtp_port": 0}, {"mail_from": "not an address"}):
        with pytest.raises(cheeseshop.config.ConfigError) as raised:
            load_settings(environ={}, overrides={"data_dir": tmp_path, **bad})
        (key,) = bad
        assert f"CHEESESHOP_{key.upper()}" in str(raised.value)


# -- the provider slot ------------------------------------------------------------------------------


def settings_for(tmp_path: Path, **values: object) -> cheeseshop.Settings:
    return load_settings(environ={}, overrides={"data_dir": tmp_path, **values})


def sender_plugin(name: str, sender: object) -> object:
    @cheeseshop.hookimpl
    def cheeseshop_email_sender(settings: cheeseshop.Settings) -> object:
        return sender

    return types.SimpleNamespace(cheeseshop_email_sender=cheeseshop_email_sender, __name__=name)


def test_email_sender_default_is_the_folder_then_smtp_when_configured(tmp_path: Path) -> None:
    folder = load_plugins(settings_for(tmp_path)).email_sender(settings_for(tmp_path))
    assert isinstance(folder, FileSender) and folder.directory == tmp_path / "mail"

    configured = settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=2525, smtp_security="none")
    smtp = load_plugins(configured).email_sender(configured)
    assert isinstance(smtp, SMTPSender) and (smtp.host, smtp.port) == ("127.0.0.1", 2525)


def test_email_sender_of_a_plugin_replaces_the_default(tmp_path: Path) -> None:
    mine = FileSender(tmp_path / "elsewhere")
    hooks = load_plugins(settings_for(tmp_path), extra=[("mymail", sender_plugin("mymail", mine))])
    assert hooks.email_sender(settings_for(tmp_path)) is mine


def test_email_sender_two_plugins_stop_start_up(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="one and two both provide email_sender"):
        load_plugins(
            settings_for(tmp_path),
            extra=[("one", sender_plugin("one", object())), ("two", sender_plugin("two", object()))],
        )


def test_email_sender_none_when_the_email_plugin_is_blocked(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, blocked_plugins=["email"])
    hooks = load_plugins(settings)
    assert hooks.email_sender(settings) is None
    assert hooks.receiver_names("cheeseshop_notify") == []



# The envelope, read without the email package's parser when every address header is plain.
ADDRESS_HEADERS = [
    ("alice <alice@example.com>", "bob@example.org"),
    ("Cheeseshop Index <noreply@pypi.example.com>", "J. Doe <j.doe+pkg@mail.example.com>"),
    ("noreply@example.com", '"Doe, Jane" <jane@example.com>'),  # a quoted name: parsed
    ("noreply@example.com", "root,alice@example.com"),  # two addresses in one: parsed
    ("noreply@example.com", "Zoë <zoe@example.com>"),  # beyond ASCII: parsed
    ("noreply@example.com", "a <b@c.example>, d@e.example"),
    ("noreply@example.com", "alice@"),  # malformed: refused as before
    ("noreply@example.com", "undisclosed-recipients:;"),
]


@pytest.mark.parametrize(("sender", "to"), ADDRESS_HEADERS)
@pytest.mark.parametrize("stored", ["raw", "parsed"])
def test_email_envelope_is_the_parsers_own(sender: str, to: str, stored: str) -> None:
    from cheeseshop.notify.senders import _parsed_envelope, envelope

    message = EmailMessage(policy=default_policy)
    for name, value in (("From", sender), ("To", to), ("Cc", "carol@example.net")):
        if stored == "raw" and value.isascii():
            message.set_raw(name, value)
        else:
            try:
                message[name] = value
            except IndexError:  # the package refuses to store "alice@" parsed
                message.set_raw(name, value)
    try:
        expected: object = _parsed_envelope(message)
        senders, recipients = expected  # type: ignore[misc]
        expected = (senders[0], recipients)
    except ValueError as error:
        expected = type(error)
    try:
        got: object = envelope(message)
    except ValueError as error:
        got = type(error)
    assert got == expected


def test_email_envelope_of_plain_headers_does_not_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the plain path: the index's own e-mail is not run through the parser."""
    from cheeseshop.notify import senders

    def refuse(*args: object) -> None:
        raise AssertionError("the header parser was used")

    monkeypatch.setattr(senders, "_parsed_envelope", refuse)
    message = EmailMessage(policy=default_policy)
    message.set_raw("From", "Cheeseshop <noreply@example.com>")
    message.set_raw("To", "alice <alice@example.com>")
    message.set_raw("Message-ID", "<n1.abc@example.com>")
    assert senders.envelope(message) == ("noreply@example.com", ["alice@example.com"])
    assert senders.ensure_message_id(message) == "<n1.abc@example.com>"
