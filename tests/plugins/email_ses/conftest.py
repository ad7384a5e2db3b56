"""Fixtures of the email_ses tests: moto, SNS signing, the application with the plugin.

One moto server per test process (an xdist worker runs its tests one at a time), reset
before every test that uses it, with the sender's identity verified again. Everything
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from cheeseshop.db.models import Email

from email_ses_kit import (
    CERT_PATH,
    CONFIRM_PATH,
    TOPIC_ARN,
    VERIFIED_SENDER,
    FileServer,
    MotoServer,
    Post,
    SNSSigner,
)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """``moto_server`` running for this test process."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The moto server, emptied, with :data:`VERIFIED_SENDER` verified in SES."""
    moto_server.reset()
    boto3.client("ses", **moto_server.client_kwargs()).verify_email_identity(
        EmailAddress=VERIFIED_SENDER
    )
    return moto_server


@pytest.fixture(scope="session")
def signer() -> SNSSigner:
    """An RSA key and its self-signed certificate, made once per test process."""
    return SNSSigner.make()


@pytest.fixture
def files(signer: SNSSigner) -> Iterator[FileServer]:
    """The trusted file server: the certificate at CERT_PATH, a 200 at CONFIRM_PATH."""
    server = FileServer()
    server.answers[CERT_PATH] = (200, signer.certificate_pem)
    server.answers[CONFIRM_PATH] = (200, b"<ConfirmSubscriptionResponse/>")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def untrusted(signer: SNSSigner) -> Iterator[FileServer]:
    """Another file server, on a port the settings do not trust, serving the same files."""
    server = FileServer()
    server.answers[CERT_PATH] = (200, signer.certificate_pem)
    server.answers[CONFIRM_PATH] = (200, b"<ConfirmSubscriptionResponse/>")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cert_url(files: FileServer) -> str:
    """The SigningCertURL of the trusted certificate."""
    return files.url + CERT_PATH


@pytest.fixture
def ses_section(moto: MotoServer, files: FileServer) -> dict[str, Any]:
    """The ``[email_ses]`` section: SES on moto, SNS certificates from the file server."""
    return moto.section(
        sns_topic_arns=[TOPIC_ARN],
        # Only this server's exact origin: the untrusted one differs by its port.
        sns_trusted_url_pattern=rf"^{re.escape(files.url)}/",
    )


@pytest.fixture
def cheeseshop_settings_overrides(ses_section: dict[str, Any]) -> dict[str, Any]:
    """The plugin enabled by name, as a deployer would: loaded through its entry point."""
    return {
        "plugins": ["email_ses"],
        "email_ses": ses_section,
        "mail_from": f"Cheeseshop <{VERIFIED_SENDER}>",
    }


@pytest.fixture
def post_sns(cheeseshop_client: Any) -> Post:
    """``await post_sns(fields)``: POST an SNS message as SNS does; returns the response."""

    async def post(fields: dict[str, str] | bytes, *, message_type: str | None = None) -> Any:
        body = fields if isinstance(fields, bytes) else json.dumps(fields).encode()
        headers = {"Content-Type": "text/plain; charset=UTF-8"}
        kind = message_type or (fields.get("Type") if isinstance(fields, dict) else None)
        if kind:
            headers["x-amz-sns-message-type"] = kind
        return await cheeseshop_client.post("/_ses/sns/", data=body, headers=headers)

    return post


@pytest.fixture
def email_row(cheeseshop_services: Any) -> Callable[[str], Awaitable[Email | None]]:
    """``await email_row(address)``: the address's row as it is in the database now."""

    async def row(address: str) -> Email | None:
        async with cheeseshop_services.db.read() as session:
            found: Email | None = await session.scalar(select(Email).where(Email.email == address))
            return found

    return row
