"""Amazon SNS messages posted to an HTTP endpoint: parsing and signature verification.

SNS signs every message it posts. A message is believed only when all of this holds:

- it is a JSON object whose fields are strings, of a ``Type`` this endpoint knows;
- it is signed with ``SignatureVersion`` 2 (RSA over SHA-256); version 1 (SHA-1) and
  unsigned messages are refused;
- its ``TopicArn`` is one the deployer configured;
- its ``Timestamp`` is recent (a replayed old message is refused);
- its ``SigningCertURL`` matches the trusted pattern (https on an AWS SNS host), the
  certificate found there is in its validity period, and its RSA key verifies the
  signature over the canonical string AWS documents for the message's type.

Checks that cost nothing come first: no certificate is fetched for a message that the
fields alone condemn. Every refusal is an :class:`SNSRejected` carrying the HTTP status
and a message saying what was wrong; a certificate that cannot be fetched for now is an
:class:`SNSUnavailable` (SNS retries on a 5xx).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "CertificateCache",
    "MessageVerifier",
    "SNSMessage",
    "SNSRejected",
    "SNSUnavailable",
    "fetch_url",
    "parse_message",
    "string_to_sign",
]

log = logging.getLogger(__name__)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
TYPES = (NOTIFICATION, SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION)

# The fields signed, in the order AWS documents, by message type. ``Subject`` is signed
# only when the notification has one.
_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS[UNSUBSCRIBE_CONFIRMATION] = _SIGNED_FIELDS[SUBSCRIPTION_CONFIRMATION]
_OPTIONAL_FIELDS = frozenset({"Subject"})

#: How far in the future a Timestamp may be: clocks differ a little, never by much.
CLOCK_SKEW = timedelta(minutes=5)
#: Largest certificate or SubscribeURL answer read (a PEM certificate is ~2 KB).
MAX_FETCH_BYTES = 64 * 1024


class SNSRejected(ValueError):
    """An SNS message was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SNSUnavailable(Exception):
    """Something the check needs (a certificate, a URL) cannot be fetched for now."""


@dataclasses.dataclass(frozen=True)
class SNSMessage:
    """One SNS message, as the fields the endpoint acts on."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    subject: str | None = None
    subscribe_url: str | None = None
    token: str | None = None


def parse_message(body: bytes) -> dict[str, str]:
    """The posted JSON object; :class:`SNSRejected` if it is not one of strings.

    ``null`` values are dropped (a field SNS left empty), anything else that is not a
    string is refused: every signed field must be text to be signed at all.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise SNSRejected("the body is not JSON: SNS posts a JSON object") from None
    if not isinstance(data, dict):
        raise SNSRejected("the body is not a JSON object")
    fields: dict[str, str] = {}
    for key, value in data.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise SNSRejected(f"field {key!r} is not a string")
        fields[key] = value
    return fields


def string_to_sign(fields: Mapping[str, str]) -> bytes:
    """The canonical string SNS signs: each signed field's name and value, a line each.

    :raises SNSRejected: the type is unknown, or a field it signs is missing.
    """
    kind = fields.get("Type")
    if kind not in _SIGNED_FIELDS:
        raise SNSRejected(f"unknown message Type {kind!r}: expected one of {', '.join(TYPES)}")
    lines: list[str] = []
    for name in _SIGNED_FIELDS[kind]:
        if name not in fields:
            if name in _OPTIONAL_FIELDS:
                continue
            raise SNSRejected(f"a {kind} message needs the field {name!r}")
        lines += [name, fields[name]]
    return ("\n".join(lines) + "\n").encode("utf-8")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would lead away from the host the URL was checked against.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def fetch_url(url: str, timeout: float) -> bytes:
    """GET ``url`` (already checked as trusted), without following redirects.

    :raises SNSRejected: it answered with a 3xx or 4xx (the URL is wrong, not the network).
    :raises SNSUnavailable: it could not be reached, or answered with a 5xx.
    """
    try:
        with _OPENER.open(urllib.request.Request(url, method="GET"), timeout=timeout) as answer:
            data: bytes = answer.read(MAX_FETCH_BYTES + 1)
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise SNSUnavailable(f"{url} answered {error.code}") from None
        raise SNSRejected(f"{url} answered {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise SNSUnavailable(f"could not fetch {url}: {error}") from None
    if len(data) > MAX_FETCH_BYTES:
        raise SNSRejected(f"{url} answered more than {MAX_FETCH_BYTES} bytes")
    return data


class CertificateCache:
    """Signing certificates by URL, fetched once each (SNS rotates them rarely).

    Bounded, so a stream of distinct (trusted) URLs cannot grow it without end; only
    parsed certificates are kept, never a failure. Thread-safe: verification runs in
    worker threads.
    """

    def __init__(self, fetch: Callable[[str], bytes], *, size: int = 32) -> None:
        self._fetch = fetch
        self._size = size
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> x509.Certificate:
        """The certificate at ``url``, fetched the first time."""
        with self._lock:
            known = self._certificates.get(url)
            if known is not None:
                self._certificates.move_to_end(url)
                return known
        # Fetched outside the lock: one slow fetch must not hold up every other message.
        data = self._fetch(url)
        try:
            certificate = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise SNSRejected(f"SigningCertURL {url} does not hold a PEM certificate") from None
        with self._lock:
            self._certificates[url] = certificate
            while len(self._certificates) > self._size:
                self._certificates.popitem(last=False)
        return certificate


class MessageVerifier:
    """Checks SNS messages (see the module's documentation) for the configured topics."""

    def __init__(
        self,
        *,
        topics: Collection[str],
        trusts: Callable[[str], bool],
        certificates: CertificateCache,
        max_age: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.topics = frozenset(topics)
        self.trusts = trusts
        self.certificates = certificates
        self.max_age = max_age
        self.clock = clock

    def verify(self, fields: Mapping[str, str]) -> SNSMessage:
        """The message, once every check passed. Blocks when a certificate is fetched.

        :raises SNSRejected: the message is refused; its status and message say why.
        :raises SNSUnavailable: the signing certificate cannot be fetched for now.
        """
        # Unsigned and SHA-1 messages are refused before anything else is looked at.
        signature = self._signature(fields)
        data = string_to_sign(fields)
        topic = fields["TopicArn"]
        if topic not in self.topics:
            raise SNSRejected(
                f"TopicArn {topic} is not one this endpoint accepts (email_ses.sns_topic_arns)",
                status=403,
            )
        timestamp = self._timestamp(fields["Timestamp"])
        url = fields.get("SigningCertURL", "")
        if not self.trusts(url):
            raise SNSRejected(
                f"SigningCertURL {url!r} is not an SNS certificate URL this endpoint trusts "
                "(https on an AWS SNS host; email_ses.sns_trusted_url_pattern)"
            )
        certificate = self.certificates.get(url)
        now = self.clock()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SNSRejected(f"the certificate at {url} is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SNSRejected(f"the certificate at {url} does not hold an RSA key")
        try:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SNSRejected("the signature does not match the message") from None
        return SNSMessage(
            type=fields["Type"],
            message_id=fields["MessageId"],
            topic_arn=topic,
            message=fields["Message"],
            timestamp=timestamp,
            subject=fields.get("Subject"),
            subscribe_url=fields.get("SubscribeURL"),
            token=fields.get("Token"),
        )

    @staticmethod
    def _signature(fields: Mapping[str, str]) -> bytes:
        version = fields.get("SignatureVersion")
        if version is None or "Signature" not in fields:
            raise SNSRejected("the message is not signed (no SignatureVersion or Signature)")
        if version == "1":
            raise SNSRejected(
                "SignatureVersion 1 (SHA1) is refused: set the topic's SignatureVersion "
                "attribute to 2 (aws sns set-topic-attributes --attribute-name "
                "SignatureVersion --attribute-value 2)"
            )
        if version != "2":
            raise SNSRejected(f"unknown SignatureVersion {version!r}: only 2 is accepted")
        try:
            return base64.b64decode(fields["Signature"], validate=True)
        except (binascii.Error, ValueError):
            raise SNSRejected("the Signature is not base64") from None

    def _timestamp(self, value: str) -> datetime:
        try:
            timestamp = datetime.fromisoformat(value)
        except ValueError:
            raise SNSRejected(f"Timestamp {value!r} is not an ISO 8601 time") from None
        if timestamp.tzinfo is None:
            raise SNSRejected(f"Timestamp {value!r} has no time zone")
        age = self.clock() - timestamp
        if age > self.max_age:
            raise SNSRejected(
                f"the message is {age.total_seconds():.0f} s old, older than "
                f"{self.max_age.total_seconds():.0f} s (email_ses.sns_max_age_seconds): a replay?"
            )
        if age < -CLOCK_SKEW:
            raise SNSRejected("the message's Timestamp is in the future")
        return timestamp
