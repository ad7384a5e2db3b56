"""Helpers for the notification tests: a real SMTP server on 127.0.0.1, accounts, waiting."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from cheeseshop.db.models import Email, OutboxEvent, Project, Role, User
from cheeseshop.testing.pytest_plugin import _test_password_hash
from cheeseshop.testing.records import outbox_settled

SMTP_LOGIN = "mailer"
SMTP_PASSWORD = "s3cret password"


class Inbox:
    """An aiosmtpd handler keeping what it receives; it can refuse chosen recipients."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        #: address -> SMTP answer to RCPT TO for it (e.g. "550 5.1.1 no such user").
        self.refuse: dict[str, str] = {}
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        answer = self.refuse.get(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=default_policy).parsebytes(envelope.original_content or envelope.content)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 OK queued"

    def received(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.messages)

    def to(self, address: str) -> list[EmailMessage]:
        """Messages whose envelope named ``address``."""
        with self.lock:
            return [m for m, (_, rcpts) in zip(self.messages, self.envelopes) if address in rcpts]


@dataclass
class SMTPServer:
    """A running local SMTP server and what it received."""

    host: str
    port: int
    inbox: Inbox

    def settings(self, **extra: Any) -> dict[str, Any]:
        """Settings overrides that send e-mail through this server."""
        return {"smtp_host": self.host, "smtp_port": self.port, "smtp_security": "none", **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_LOGIN.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def start_smtp(**server_options: Any) -> tuple[Controller, SMTPServer]:
    inbox = Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=True, **server_options
    )
    controller.start()
    return controller, SMTPServer("127.0.0.1", controller.port, inbox)


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(cert, key)


# -- accounts and projects -------------------------------------------------------------------


async def add_user(services: Any, username: str, *, email: str | None = None, **columns: Any) -> int:
    """A user with one primary address (``<username>@example.com``); returns its id."""
    async with services.db.write() as session:
        user = User(username=username, password_hash=_test_password_hash(), **columns)
        session.add(user)
        await session.flush()
        session.add(Email(user_id=user.id, email=email or f"{username}@example.com", primary=True))
        return user.id


async def add_role(services: Any, username: str, project: str, role: str) -> None:
    """Give ``username`` a role on the (existing) project ``project``."""
    async with services.db.write() as session:
        user_id = await session.scalar(select(User.id).where(User.username == username))
        project_id = await session.scalar(select(Project.id).where(Project.normalized_name == project))
        assert user_id is not None and project_id is not None
        session.add(Role(user_id=user_id, project_id=project_id, role_name=role))


async def notification_events(services: Any) -> list[OutboxEvent]:
    """The Notification rows of the outbox, oldest first."""
    async with services.db.read() as session:
        return list(
            await session.scalars(
                select(OutboxEvent).where(OutboxEvent.kind == "Notification").order_by(OutboxEvent.id)
            )
        )


async def eventually(predicate: Callable[[], bool], *, timeout: float = 15.0) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout:.0f}s")
        await asyncio.sleep(0.02)


async def settled(services: Any, *, timeout: float = 15.0) -> None:
    """Wait until the outbox holds nothing undelivered."""
    await outbox_settled(services, timeout=timeout)


def mail_files(services: Any) -> list[Path]:
    """The .eml files the embedded sender wrote (data_dir/mail)."""
    directory = services.settings.data_dir / "mail"
    return sorted(directory.glob("*.eml")) if directory.exists() else []


def read_eml(path: Path) -> EmailMessage:
    return BytesParser(policy=default_policy).parsebytes(path.read_bytes())  # type: ignore[return-value]


def mails_to(services: Any, address: str) -> list[EmailMessage]:
    """The .eml messages addressed to ``address``."""
    found = []
    for path in mail_files(services):
        message = read_eml(path)
        if address in [a.addr_spec for a in message["To"].addresses]:
            found.append(message)
    return found
