"""Fixtures for the notification tests: real SMTP servers on 127.0.0.1 (plain, STARTTLS, SMTPS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from notify_support import Certificate, SMTPServer, authenticate, make_certificate, start_smtp


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A plain SMTP server on 127.0.0.1 (no TLS, no login)."""
    controller, server = start_smtp()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def starttls_server(certificate: Certificate) -> Iterator[SMTPServer]:
    """An SMTP server requiring STARTTLS, then a login, before it takes mail."""
    controller, server = start_smtp(
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
    )
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def ssl_server(certificate: Certificate) -> Iterator[SMTPServer]:
    """An SMTP server speaking TLS from the first byte (SMTPS), with a login required."""
    controller, server = start_smtp(
        ssl_context=certificate.server_context(),
        authenticator=authenticate,
        auth_required=True,
        # aiosmtpd counts only STARTTLS as TLS; here the whole connection is TLS already.
        auth_require_tls=False,
    )
    try:
        yield server
    finally:
        controller.stop()
