"""What the email_ses tests stand on: a moto server, a signing key, a small file server.

- :class:`MotoServer`: ``moto_server`` as a real subprocess on 127.0.0.1, reached over
  HTTP like SES itself; what it "sent" is read back from its ``/moto-api/data.json``.
- :class:`SNSSigner`: an RSA key and a self-signed certificate made here, signing SNS
  messages the way SNS does. Its canonical string is written out independently of the
  plugin's, from AWS's documentation, so a mistake in one is not copied by the other.
- :class:`FileServer`: a plain HTTP server on 127.0.0.1 that serves the certificate and
  answers SubscribeURLs, recording every request.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cheeseshop.testing.moto import MotoServer as BaseMotoServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

REGION = "us-east-1"
ACCOUNT = "123456789012"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:ses-feedback"
OTHER_TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:someone-elses-topic"
#: Where the trusted file server keeps the signing certificate, named like SNS's own.
CERT_PATH = "/SimpleNotificationService-0000000000000000000000000000000a.pem"
#: Where it answers SubscribeURLs.
CONFIRM_PATH = "/confirm"
#: ``await post_sns(fields_or_body, message_type=None)``, the conftest's fixture.
Post = Callable[..., Awaitable[Any]]
#: The identity verified in moto before each test; SES sends only from verified ones.
VERIFIED_SENDER = "noreply@example.com"


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- moto ---------------------------------------------------------------------------------


class MotoServer(BaseMotoServer):
    """``moto_server`` serving SES (see :class:`cheeseshop.testing.moto.MotoServer`)."""

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for a boto3 client of this server."""
        return {
            "endpoint_url": self.url,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }

    def section(self, **changes: Any) -> dict[str, Any]:
        """An ``[email_ses]`` section sending through this server."""
        return {
            "region": REGION,
            "endpoint_url": self.url,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "timeout_seconds": 5,
            **changes,
        }

    def raw_messages(self) -> list[dict[str, Any]]:
        """What SES accepted so far: id, source, destinations, raw_data of each."""
        data = json.loads(self._get("/moto-api/data.json"))
        return list(data.get("ses", {}).get("RawMessage", []))

    def received(self) -> list[EmailMessage]:
        """The accepted messages, parsed as a mail program would."""
        from email import message_from_bytes

        # moto keeps the bytes it was given decoded as UTF-8; encoded back they are the
        # very bytes sent.
        return [
            message_from_bytes(raw["raw_data"].encode("utf-8"), policy=default_policy)  # type: ignore[misc]
            for raw in self.raw_messages()
        ]


# -- SNS signing ---------------------------------------------------------------------------


@dataclasses.dataclass
class SNSSigner:
    """A key and a certificate made here; signs messages as SNS would."""

    key: rsa.RSAPrivateKey
    certificate_pem: bytes

    @classmethod
    def make(
        cls,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> SNSSigner:
        """A fresh 2048-bit key and a self-signed certificate for it (valid a day)."""
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.now(UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def canonical(fields: dict[str, str]) -> bytes:
        """The string SNS signs, as AWS documents it for each message type."""
        if fields["Type"] == "Notification":
            names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            names = [
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        text = "".join(f"{name}\n{fields[name]}\n" for name in names if name in fields)
        return text.encode("utf-8")

    def sign(self, fields: dict[str, str], *, version: str = "2") -> dict[str, str]:
        """``fields`` with SignatureVersion and Signature (SHA256 for 2, SHA1 for 1)."""
        digest = hashes.SHA256() if version == "2" else hashes.SHA1()
        signature = self.key.sign(self.canonical(fields), padding.PKCS1v15(), digest)
        return {
            **fields,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
        }


def sns_timestamp(when: datetime | None = None) -> str:
    """A Timestamp as SNS writes it: UTC, milliseconds, a Z."""
    when = when or datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def notification(
    message: str,
    *,
    cert_url: str,
    topic: str = TOPIC_ARN,
    subject: str | None = None,
    timestamp: str | None = None,
) -> dict[str, str]:
    """An unsigned SNS Notification carrying ``message``."""
    fields = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message,
        "Timestamp": timestamp or sns_timestamp(),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        fields["Subject"] = subject
    return fields


def subscription_confirmation(
    *,
    cert_url: str,
    subscribe_url: str,
    topic: str = TOPIC_ARN,
    kind: str = "SubscriptionConfirmation",
) -> dict[str, str]:
    """An unsigned SNS SubscriptionConfirmation (or UnsubscribeConfirmation)."""
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37fb687f5d51e6e2425dacbba2e55ea1" + "c" * 20,
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url,
        "Timestamp": sns_timestamp(),
        "SigningCertURL": cert_url,
    }


# -- SES events ----------------------------------------------------------------------------


def _mail(message_id: str, destination: list[str]) -> dict[str, Any]:
    return {
        "timestamp": sns_timestamp(),
        "source": VERIFIED_SENDER,
        "sourceArn": f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/example.com",
        "messageId": message_id,
        "destination": destination,
    }


def ses_bounce(
    *recipients: str,
    bounce_type: str = "Permanent",
    sub_type: str = "General",
    message_id: str = "ses-1",
) -> str:
    """An SES bounce notification (identity-notification shape), as SNS's Message."""
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": bounce_type,
                "bounceSubType": sub_type,
                "bouncedRecipients": [
                    {
                        "emailAddress": address,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                    for address in recipients
                ],
                "timestamp": sns_timestamp(),
                "feedbackId": "0100abc-feedback",
            },
            "mail": _mail(message_id, list(recipients)),
        }
    )


def ses_complaint(
    *recipients: str, feedback_type: str | None = "abuse", message_id: str = "ses-2"
) -> str:
    """An SES complaint event (event-publishing shape, ``eventType``), as SNS's Message."""
    complaint: dict[str, Any] = {
        "complainedRecipients": [{"emailAddress": address} for address in recipients],
        "timestamp": sns_timestamp(),
        "feedbackId": "0100abc-complaint",
    }
    if feedback_type is not None:
        complaint["complaintFeedbackType"] = feedback_type
    return json.dumps(
        {
            "eventType": "Complaint",
            "complaint": complaint,
            "mail": _mail(message_id, list(recipients)),
        }
    )


def ses_delivery(*recipients: str, message_id: str = "ses-3") -> str:
    """An SES delivery notification, as SNS's Message."""
    return json.dumps(
        {
            "notificationType": "Delivery",
            "delivery": {
                "recipients": list(recipients),
                "smtpResponse": "250 ok",
                "timestamp": sns_timestamp(),
            },
            "mail": _mail(message_id, list(recipients)),
        }
    )


# -- a small HTTP server -------------------------------------------------------------------


class FileServer:
    """Serves fixed answers by path on 127.0.0.1 and records every request's path."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self._requests: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Its base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[str]:
        """Paths (with query) requested so far, in order."""
        with self._lock:
            return list(self._requests)

    def start(self) -> FileServer:
        """Serve from a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server._requests.append(self.path)
                status, body = server.answers.get(self.path.partition("?")[0], (404, b"not here"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class FailingSES:
    """SES API v2 answering every request with one error, as AWS shapes it.

    For the refusals moto cannot produce (throttling, an unavailable service, a sandbox
    refusal naming the recipient). Counts the requests it got.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        self.count = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Its endpoint URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FailingSES:
        """Serve from a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.count += 1
                body = json.dumps({"message": fake.message}).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header(
                    "x-amzn-ErrorType", f"{fake.code}:http://internal.amazon.com/coral/"
                )
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
