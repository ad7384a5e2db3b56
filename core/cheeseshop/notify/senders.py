"""E-mail senders: the ``email_sender`` provider slot and the core's two implementations.

An :class:`EmailSender` takes a finished :class:`email.message.EmailMessage` and hands it
to whatever delivers it. The core ships two: :class:`FileSender` (the embedded default:
one ``.eml`` file per message in ``data_dir/mail``, and a log line) and
:class:`SMTPSender` (chosen when ``smtp_host`` is set). A plugin provides another (SES,
say) through ``cheeseshop_email_sender`` and re-runs
:class:`cheeseshop.testing.contracts.EmailSenderContract` against it.

Whatever goes wrong in a sender leaves it as :class:`EmailSendError` (or ``ValueError``
for a message that cannot be sent at all), never as a vendor's exception.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import smtplib
import ssl
import tempfile
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import getaddresses, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol, runtime_checkable

from cheeseshop.config import Settings

__all__ = [
    "DOT_ATOM_ADDRESS",
    "EmailSendError",
    "EmailSender",
    "FileSender",
    "SMTPSender",
    "envelope",
    "ensure_message_id",
    "sender_domain",
]

log = logging.getLogger(__name__)


class EmailSendError(Exception):
    """An e-mail could not be sent.

    ``permanent`` is True when the recipient's address itself was refused (a 5xx answer
    to it, an address the provider will never deliver to): sending again will not help.
    Every other failure (the service unreachable, a login refused, a full queue) is worth
    retrying later.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@runtime_checkable
class EmailSender(Protocol):
    """What sends the index's e-mail (the ``email_sender`` slot).

    Synchronous: it is called from event hooks, which run in worker threads, possibly
    several at once, so an implementation must be thread-safe.
    """

    def send(self, message: EmailMessage) -> str:
        """Send ``message`` and return the id the provider gave it.

        The envelope is taken from the message: its ``From`` address is the sender, its
        ``To``, ``Cc`` and ``Bcc`` addresses the recipients. A message without a
        ``Message-ID`` gets one. Sending the same message twice may deliver it twice:
        avoiding that is the caller's business (see :class:`cheeseshop.notify.Mailer`).

        :raises ValueError: the message has no ``From`` address or no recipient.
        :raises EmailSendError: it could not be sent.
        """
        ...


#: A header value that is one plain address, bare or as ``Name <address>`` with a name of
#: letters, digits, spaces and ``._+-``: what the index's own e-mail carries. Its address
#: is read with this pattern; any other value goes through the ``email`` package's parser,
#: which takes ten times longer and is what every sent e-mail used to cost (see
#: :func:`envelope`).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
#: An address with a dot-atom local part and a plain ASCII domain: one that needs neither
#: quoting nor encoding (render.py writes such a To header as it is).
DOT_ATOM_ADDRESS = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS = re.compile(
    rf"(?:[A-Za-z0-9._+-]+(?: [A-Za-z0-9._+-]+)* <(?P<quoted>{DOT_ATOM_ADDRESS})>|(?P<bare>{DOT_ATOM_ADDRESS}))"
)
_ENVELOPE_HEADERS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc"}


def envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """The envelope sender and recipients of ``message``; ``ValueError`` if either is missing."""
    plain = _plain_envelope(message)
    if plain is not None:
        senders, recipients = plain
    else:
        senders, recipients = _parsed_envelope(message)
    if len(senders) != 1:
        raise ValueError("an e-mail needs exactly one From address")
    if not recipients:
        raise ValueError("an e-mail needs at least one recipient (To, Cc or Bcc)")
    return senders[0], recipients


def _plain_envelope(message: EmailMessage) -> tuple[list[str], list[str]] | None:
    """The From addresses and the To, Cc and Bcc ones, read from the stored header values
    without the ``email`` package's parser; None unless every such value is one plain
    address (:data:`_PLAIN_ADDRESS`) stored as a string, as the index's own e-mail does."""
    found: dict[str, list[str]] = {"From": [], "To": [], "Cc": [], "Bcc": []}
    for name, value in message.raw_items():
        header = _ENVELOPE_HEADERS.get(name.lower())
        if header is None:
            continue
        # A parsed header object (a str subclass) may say more than its text: parse it.
        match = _PLAIN_ADDRESS.fullmatch(value) if type(value) is str else None
        if match is None:
            return None
        found[header].append(match["quoted"] or match["bare"])
    return found["From"], [*found["To"], *found["Cc"], *found["Bcc"]]


def _parsed_envelope(message: EmailMessage) -> tuple[list[str], list[str]]:
    """:func:`envelope`'s addresses, by way of the ``email`` package's header parser."""
    try:
        senders = [address for _, address in getaddresses(message.get_all("From", [])) if "@" in address]
        recipients = [
            address
            for header in ("To", "Cc", "Bcc")
            for _, address in getaddresses(message.get_all(header, []))
            if "@" in address
        ]
    except (IndexError, TypeError) as error:
        # The stdlib's header parser fails this way on some malformed addresses ("alice@").
        raise ValueError(f"an address header of the e-mail cannot be parsed: {error!r}") from None
    return senders, recipients


def sender_domain(address: str) -> str:
    """The domain of an address such as ``Name <user@example.com>`` ('' when it has none)."""
    return parseaddr(address)[1].rpartition("@")[2]


def _header_text(message: EmailMessage, name: str) -> str | None:
    """The first ``name`` header's text (None without one): as stored when it is a plain
    printable ASCII string, which needs no decoding, else as the ``email`` package reads it."""
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            if type(value) is str and value.isascii() and value.isprintable() and "=?" not in value:
                return value
            return str(message.get(name))
    return None


def ensure_message_id(message: EmailMessage) -> str:
    """The message's ``Message-ID``, set first when it has none."""
    existing = _header_text(message, "Message-ID")
    if existing:
        return existing.strip()
    sender, _ = envelope(message)
    # The sender's domain, not make_msgid's default: that asks DNS for this host's name.
    message["Message-ID"] = make_msgid(domain=sender_domain(sender) or "cheeseshop.invalid")
    return str(message["Message-ID"]).strip()


# -- the embedded default: a folder ------------------------------------------------------


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


def _file_name(message_id: str) -> str:
    """A file name for the message: its Message-ID, made safe, so a re-send replaces it."""
    bare = message_id.strip().removeprefix("<").removesuffix(">")
    safe = _UNSAFE.sub("_", bare).lstrip(".")[:180]
    if safe != bare or not safe:
        # Two ids that differ only in replaced characters must not share a file.
        safe = f"{safe}-{hashlib.sha256(message_id.encode()).hexdigest()[:12]}"
    return f"{safe}.eml"


class FileSender:
    """Writes each e-mail as an ``.eml`` file into one folder and logs a line about it.

    The embedded default: it needs no mail service, and every message can be read (and
    opened in a mail program) where it landed. A file is written whole under a temporary
    name, synced and renamed into place, so a reader never sees half a message. It is
    named after the message's ``Message-ID``: the same message sent again replaces its
    file instead of adding one. The provider id returned is the file name.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def from_settings(cls, settings: Settings) -> FileSender:
        """A sender writing to ``data_dir/mail``."""
        return cls(settings.data_dir / "mail")

    def send(self, message: EmailMessage) -> str:
        """Write ``message`` to ``<directory>/<Message-ID>.eml``; returns the file name."""
        _, recipients = envelope(message)
        name = _file_name(ensure_message_id(message))
        # The bytes an SMTP server would get: CRLF line ends, non-ASCII headers encoded.
        data = message.as_bytes(policy=SMTP)
        try:
            try:
                fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".writing-", suffix=".tmp")
            except FileNotFoundError:  # the first e-mail: create the folder (only then)
                self.directory.mkdir(parents=True, exist_ok=True)
                fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".writing-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self.directory / name)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise EmailSendError(f"could not write e-mail {name} into {self.directory}: {error}") from None
        log.info(
            "e-mail to %s written to %s: %s",
            ", ".join(recipients), self.directory / name, _header_text(message, "Subject") or "",
        )
        return name


# -- SMTP ---------------------------------------------------------------------------------


#: The port each kind of connection uses unless ``smtp_port`` says otherwise.
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


class SMTPSender:
    """Sends each e-mail over its own SMTP connection.

    ``security`` is ``starttls`` (a plain connection upgraded to TLS; a server that does
    not offer STARTTLS is refused, never talked to in the clear), ``ssl`` (TLS from the
    start) or ``none``. The server's certificate is checked against the system's CAs, or
    against ``ca_file``. A login happens only when ``username`` is given. One connection
    per message keeps the sender thread-safe at no real cost for the index's volume of
    mail. The provider id returned is the message's ``Message-ID``: the SMTP protocol has
    no other id that a client is told reliably.
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 30.0,
        local_hostname: str | None = None,
    ) -> None:
        if security not in DEFAULT_PORTS:
            raise ValueError(f"security must be one of {', '.join(DEFAULT_PORTS)}, not {security!r}")
        self.host = host
        self.port = port or DEFAULT_PORTS[security]
        self.security = security
        self.username = username
        self._password = password or ""
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    @classmethod
    def from_settings(cls, settings: Settings) -> SMTPSender:
        """The sender described by the ``smtp_*`` settings (``smtp_host`` must be set)."""
        if not settings.smtp_host:
            raise ValueError("smtp_host is not set")
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            ca_file=settings.smtp_ca_file,
            timeout=settings.smtp_timeout_seconds,
            # EHLO names the sending host; left to smtplib it would be looked up in DNS.
            local_hostname=sender_domain(settings.mail_from) or None,
        )

    def __repr__(self) -> str:
        return f"SMTPSender({self.host!r}, {self.port}, security={self.security!r}, username={self.username!r})"

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(
                self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout, context=self._tls
            )
        smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=self._tls)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: EmailMessage) -> str:
        """Send ``message`` through the SMTP server; returns its ``Message-ID``."""
        _, recipients = envelope(message)
        message_id = ensure_message_id(message)
        where = f"{self.host}:{self.port}"
        try:
            with self._connect() as smtp:
                if self.username is not None:
                    smtp.login(self.username, self._password)
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            answers = {address: (code, _text(reply)) for address, (code, reply) in error.recipients.items()}
            raise EmailSendError(
                f"{where} refused the recipient(s): {answers}",
                permanent=all(500 <= code < 600 for code, _ in answers.values()),
            ) from None
        except smtplib.SMTPResponseException as error:
            # The sender, the login or the message was refused: not the address's fault.
            raise EmailSendError(f"{where} answered {error.smtp_code} {_text(error.smtp_error)}") from None
        except (smtplib.SMTPException, OSError) as error:
            raise EmailSendError(f"could not send e-mail through {where}: {error}") from None
        if refused:
            # Only for a message with several recipients, which the core never sends.
            log.warning("%s refused some recipients of %s: %s", where, message_id, refused)
        log.info("e-mail %s to %s sent through %s", message_id, ", ".join(recipients), where)
        return message_id


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
