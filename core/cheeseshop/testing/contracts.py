"""Contract tests every implementation of a provider slot must pass.

The core runs them against its own defaults; a plugin re-runs the very same tests against
its implementation, so "it behaves like the default" is checked, not hoped for.

File storage
------------

Subclass :class:`FileStorageContract` in a test module (the class name must start with
``Test`` for pytest to collect it) and provide a ``storage`` fixture returning a fresh,
empty storage::

    import pytest

    from cheeseshop.testing.contracts import FileStorageContract
    from my_plugin import MyStorage


    class TestMyStorage(FileStorageContract):
        @pytest.fixture
        def storage(self, tmp_path):
            return MyStorage(...)

Every test of the contract then runs against ``MyStorage``. The tests are plain
synchronous methods, as the :class:`~cheeseshop.storage.FileStorage` protocol is
synchronous. They only use the public protocol, so a fixture may also clean up after
itself (``yield`` the storage, then empty a bucket). A single test can be overridden in
the subclass, with a comment saying why the implementation differs.

E-mail senders
--------------

Subclass :class:`EmailSenderContract` and provide two fixtures: ``sender``, a fresh
sender, and ``received``, a callable returning every message that reached the far end
so far (the files written, what a local SMTP server took, what a mocked provider
recorded), parsed with ``email.policy.default``::

    class TestMySender(EmailSenderContract):
        @pytest.fixture
        def sender(self, my_service):
            return MySender(endpoint=my_service.url)

        @pytest.fixture
        def received(self, my_service):
            return my_service.messages

Addresses come from the class attributes ``SENDER`` and ``RECIPIENT``; override them
when the service accepts only some (a provider's verified identities).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest

from cheeseshop.notify.senders import EmailSender
from cheeseshop.storage import FileStorage, StoredFileInfo, storage_path

__all__ = ["EmailSenderContract", "FileStorageContract"]

_MiB = 1024 * 1024
_DIGEST = "0123456789abcdef" * 4


def _blake2(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=32).hexdigest()


class FileStorageContract:
    """The behaviour every :class:`~cheeseshop.storage.FileStorage` must have.

    Subclasses provide the ``storage`` fixture; the tests use pytest's ``tmp_path`` for
    the source files they store.
    """

    @pytest.fixture
    def storage(self) -> FileStorage:
        """A fresh, empty storage. Subclasses must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must provide a `storage` fixture returning the "
            "FileStorage under test"
        )

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _source(tmp_path: Path, content: bytes, name: str = "source.bin") -> Path:
        directory = tmp_path / "contract-sources"
        directory.mkdir(exist_ok=True)
        source = directory / name
        source.write_bytes(content)
        return source

    def _store(
        self, storage: FileStorage, tmp_path: Path, content: bytes, filename: str = "pkg-1.0.tar.gz"
    ) -> str:
        path = storage_path(_blake2(content), filename)
        storage.put(path, self._source(tmp_path, content))
        return path

    @staticmethod
    def _read(storage: FileStorage, path: str) -> bytes:
        with storage.open(path) as handle:
            return handle.read()

    # -- the protocol -------------------------------------------------------------------

    def test_is_a_file_storage(self, storage: FileStorage) -> None:
        assert isinstance(storage, FileStorage)

    def test_put_then_open_returns_the_exact_bytes(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        # Every byte value, and line endings that a text-mode mistake would rewrite.
        content = bytes(range(256)) + b"\r\n\n\r\x00\x1a"
        path = self._store(storage, tmp_path, content)
        assert self._read(storage, path) == content

    def test_open_returns_a_binary_stream(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"0123456789")
        with storage.open(path) as handle:
            assert handle.read(4) == b"0123"
            assert handle.read() == b"456789"

    def test_empty_file_round_trips(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"")
        assert self._read(storage, path) == b""
        assert storage.size(path) == 0
        assert storage.exists(path)

    def test_size(self, storage: FileStorage, tmp_path: Path) -> None:
        content = b"x" * 12345
        path = self._store(storage, tmp_path, content)
        assert storage.size(path) == 12345

    def test_exists(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"present")
        assert storage.exists(path) is True
        assert storage.exists(storage_path(_blake2(b"absent"), "pkg-1.0.tar.gz")) is False

    def test_exists_is_per_file_not_per_directory(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        path = self._store(storage, tmp_path, b"content")
        parent = path.rpartition("/")[0]
        assert storage.exists(parent) is False
        assert storage.exists(path.replace("pkg-1.0.tar.gz", "pkg-1.0.zip")) is False

    def test_put_the_same_bytes_again_is_harmless(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        content = b"the same bytes, stored twice"
        path = self._store(storage, tmp_path, content)
        self._store(storage, tmp_path, content)
        assert self._read(storage, path) == content
        assert storage.size(path) == len(content)

    def test_reput_never_exposes_a_partial_file(self, storage: FileStorage, tmp_path: Path) -> None:
        # A reader that opened the file before a second put of the same path still reads
        # every byte: the target is replaced whole, never truncated and rewritten in place.
        content = random.Random(1).randbytes(256 * 1024)
        path = self._store(storage, tmp_path, content)
        with storage.open(path) as before:
            self._store(storage, tmp_path, content)
            assert before.read() == content
        assert self._read(storage, path) == content

    def test_files_are_independent(self, storage: FileStorage, tmp_path: Path) -> None:
        first = self._store(storage, tmp_path, b"first", "one-1.0.tar.gz")
        second = self._store(storage, tmp_path, b"second", "two-1.0.tar.gz")
        # PEP 658 metadata lives beside its wheel, under the same directory.
        metadata = first + ".metadata"
        storage.put(metadata, self._source(tmp_path, b"Metadata-Version: 2.4\n"))
        assert self._read(storage, first) == b"first"
        assert self._read(storage, second) == b"second"
        assert self._read(storage, metadata) == b"Metadata-Version: 2.4\n"
        storage.delete(first)
        assert storage.exists(metadata)
        assert self._read(storage, second) == b"second"

    def test_open_missing_raises_file_not_found(self, storage: FileStorage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.open(storage_path(_DIGEST, "missing-1.0.tar.gz"))

    def test_size_missing_raises_file_not_found(self, storage: FileStorage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.size(storage_path(_DIGEST, "missing-1.0.tar.gz"))

    def test_delete_removes(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"short-lived")
        storage.delete(path)
        assert storage.exists(path) is False
        with pytest.raises(FileNotFoundError):
            storage.open(path)
        with pytest.raises(FileNotFoundError):
            storage.size(path)

    def test_delete_missing_is_no_error(self, storage: FileStorage, tmp_path: Path) -> None:
        storage.delete(storage_path(_DIGEST, "never-stored-1.0.tar.gz"))
        path = self._store(storage, tmp_path, b"deleted twice")
        storage.delete(path)
        storage.delete(path)
        assert storage.exists(path) is False

    def test_put_after_delete_stores_again(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"back again")
        storage.delete(path)
        self._store(storage, tmp_path, b"back again")
        assert self._read(storage, path) == b"back again"

    def test_url_is_none_or_a_string(self, storage: FileStorage, tmp_path: Path) -> None:
        path = self._store(storage, tmp_path, b"downloadable")
        url = storage.url(path)
        assert url is None or (isinstance(url, str) and url)

    @pytest.mark.parametrize(
        "path",
        [
            "../../etc/passwd",
            # Deep enough to reach / from any root, so a missing guard really finds the file.
            "../" * 64 + "etc/passwd",
            "ab/cd/" + "../" * 64 + "etc/passwd",
            "/etc/passwd",
        ],
    )
    def test_escaping_path_never_reads_outside(self, storage: FileStorage, path: str) -> None:
        with pytest.raises((FileNotFoundError, ValueError)):
            with storage.open(path) as handle:
                handle.read()
        with pytest.raises((FileNotFoundError, ValueError)):
            storage.size(path)
        try:
            found = storage.exists(path)
        except ValueError:
            found = False
        assert found is False

    def test_put_with_info_round_trips(self, storage: FileStorage, tmp_path: Path) -> None:
        # What the upload passes: the file's project, version, type and sha256.
        content = b"described bytes"
        path = storage_path(_blake2(content), "described-1.0-py3-none-any.whl")
        info = StoredFileInfo(
            project="described",
            version="1.0",
            packagetype="bdist_wheel",
            sha256=hashlib.sha256(content).hexdigest(),
        )
        storage.put(path, self._source(tmp_path, content), info=info)
        metadata = b"Metadata-Version: 2.4\nName: described\n"
        metadata_info = StoredFileInfo(
            project="described",
            version="1.0",
            packagetype="bdist_wheel",
            sha256=hashlib.sha256(metadata).hexdigest(),
        )
        storage.put(path + ".metadata", self._source(tmp_path, metadata), info=metadata_info)
        assert self._read(storage, path) == content
        assert self._read(storage, path + ".metadata") == metadata
        assert storage.size(path) == len(content)

    def test_open_with_the_recorded_digest(self, storage: FileStorage, tmp_path: Path) -> None:
        content = random.Random(7).randbytes(300 * 1024)
        path = self._store(storage, tmp_path, content)
        with storage.open(path, sha256=hashlib.sha256(content).hexdigest()) as handle:
            assert handle.read(10) == content[:10]
            handle.seek(1000)
            assert handle.read() == content[1000:]

    def test_open_with_another_digest_never_returns_other_bytes(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        # A storage may ignore the digest (one atomically written copy) or refuse with an
        # OSError (StorageUnavailable) because no copy matches it; it never serves bytes
        # that are neither what was stored nor what was asked for.
        content = b"the only bytes ever stored here"
        path = self._store(storage, tmp_path, content)
        try:
            with storage.open(path, sha256="0" * 64) as handle:
                served = handle.read()
        except FileNotFoundError:
            raise AssertionError("the file is there: a digest mismatch is not 'absent'") from None
        except OSError:
            return
        assert served == content

    def test_open_missing_with_a_digest_raises_file_not_found(self, storage: FileStorage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.open(storage_path(_DIGEST, "missing-1.0.tar.gz"), sha256="0" * 64)

    def test_large_file_round_trips(self, storage: FileStorage, tmp_path: Path) -> None:
        content = random.Random(5).randbytes(5 * _MiB + 17)
        path = self._store(storage, tmp_path, content, "big-1.0-py3-none-any.whl")
        assert storage.size(path) == len(content)
        digest = hashlib.sha256()
        with storage.open(path) as handle:
            while chunk := handle.read(64 * 1024):
                digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(content).hexdigest()

    # -- listing, for the orphan collector ----------------------------------------------

    #: How far a listed modification time may stray from this machine's clock: a remote
    #: store stamps objects with its own clock.
    CLOCK_TOLERANCE = 300.0

    def test_iter_paths_of_an_empty_storage_is_empty(self, storage: FileStorage) -> None:
        assert list(storage.iter_paths()) == []

    def test_iter_paths_lists_every_stored_path_once(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        first = self._store(storage, tmp_path, b"first", "one-1.0-py3-none-any.whl")
        second = self._store(storage, tmp_path, b"second", "two-1.0.tar.gz")
        metadata = first + ".metadata"
        storage.put(metadata, self._source(tmp_path, b"Metadata-Version: 2.4\n"))
        self._store(storage, tmp_path, b"second", "two-1.0.tar.gz")  # stored twice, listed once

        listed = [path for path, _ in storage.iter_paths()]

        assert sorted(listed) == sorted([first, second, metadata])

    def test_iter_paths_gives_paths_the_storage_accepts(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        path = self._store(storage, tmp_path, b"addressable")
        (listed, _), = storage.iter_paths()
        assert listed == path
        assert not listed.startswith("/") and ".." not in listed.split("/")
        assert storage.exists(listed)
        assert self._read(storage, listed) == b"addressable"

    def test_iter_paths_gives_recent_modification_times(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        before = time.time()
        self._store(storage, tmp_path, b"timed")
        (_, modified), = storage.iter_paths()
        assert isinstance(modified, float)
        assert before - self.CLOCK_TOLERANCE <= modified <= time.time() + self.CLOCK_TOLERANCE

    def test_storing_again_makes_a_path_young_again(
        self, storage: FileStorage, tmp_path: Path
    ) -> None:
        # An upload may store the bytes of an old orphan again (a client retrying after a
        # crash): the collector must then see a new file, not the old one it may delete.
        path = self._store(storage, tmp_path, b"stored twice")
        (_, first), = storage.iter_paths()
        time.sleep(1.1)  # object stores keep whole seconds
        self._store(storage, tmp_path, b"stored twice")
        (listed, second), = storage.iter_paths()
        assert listed == path
        assert second > first

    def test_deleted_paths_are_not_listed(self, storage: FileStorage, tmp_path: Path) -> None:
        kept = self._store(storage, tmp_path, b"kept", "kept-1.0.tar.gz")
        gone = self._store(storage, tmp_path, b"gone", "gone-1.0.tar.gz")
        storage.delete(gone)
        assert [path for path, _ in storage.iter_paths()] == [kept]

    # -- the path layout the core addresses storage with ----------------------------------

    def test_storage_path_layout(self) -> None:
        content = b"layout"
        h = _blake2(content)
        path = storage_path(h, "pkg-1.0-py3-none-any.whl")
        assert path == f"{h[:2]}/{h[2:4]}/{h[4:]}/pkg-1.0-py3-none-any.whl"
        assert path.split("/")[:3] == [h[:2], h[2:4], h[4:]]
        assert "".join(path.split("/")[:3]) == h

    @pytest.mark.parametrize(
        "digest",
        [
            "",
            "0" * 63,
            "0" * 65,
            "A" * 64,  # upper case: one file would get two paths
            "g" * 64,
            "0" * 62 + "/x",
            "0" * 62 + "..",
            " " + "0" * 63,
        ],
    )
    def test_storage_path_rejects_bad_digests(self, digest: str) -> None:
        with pytest.raises(ValueError):
            storage_path(digest, "pkg-1.0.tar.gz")

    @pytest.mark.parametrize(
        "filename", ["", ".", "..", "a/b.whl", "../pkg.whl", "a\\b.whl", "/pkg.whl"]
    )
    def test_storage_path_rejects_bad_filenames(self, filename: str) -> None:
        with pytest.raises(ValueError):
            storage_path(_DIGEST, filename)


# -- e-mail senders -------------------------------------------------------------------------


class EmailSenderContract:
    """The behaviour every :class:`~cheeseshop.EmailSender` must have.

    Subclasses provide the ``sender`` and ``received`` fixtures (see the module's
    documentation).
    """

    SENDER = "Chéeseshop Index <noreply@example.com>"
    RECIPIENT = "alice@example.com"
    #: How long a message may take to reach the far end after ``send`` returned.
    ARRIVAL_SECONDS = 10.0

    @pytest.fixture
    def sender(self) -> EmailSender:
        """A fresh sender. Subclasses must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must provide a `sender` fixture returning the EmailSender under test"
        )

    @pytest.fixture
    def received(self) -> Callable[[], list[EmailMessage]]:
        """Every message that reached the far end so far. Subclasses must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must provide a `received` fixture: a callable returning "
            "the messages that arrived"
        )

    # -- helpers ------------------------------------------------------------------------

    def _message(self, subject: str = "Hello", *, text: str = "Plain text.\n", html: str | None = None) -> EmailMessage:
        message = EmailMessage(policy=default_policy)
        message["Subject"] = subject
        message["From"] = self.SENDER
        message["To"] = self.RECIPIENT
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        return message

    def _arrived(
        self, received: Callable[[], list[EmailMessage]], count: int
    ) -> list[EmailMessage]:
        deadline = time.monotonic() + self.ARRIVAL_SECONDS
        while True:
            messages = received()
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.05)

    @staticmethod
    def _part(message: EmailMessage, subtype: str) -> str:
        part = message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        return part.get_content().replace("\r\n", "\n")

    # -- the protocol -------------------------------------------------------------------

    def test_is_an_email_sender(self, sender: EmailSender) -> None:
        assert isinstance(sender, EmailSender)

    def test_send_returns_a_provider_id(self, sender: EmailSender) -> None:
        provider_id = sender.send(self._message())
        assert isinstance(provider_id, str) and provider_id.strip()

    def test_message_arrives_whole(
        self, sender: EmailSender, received: Callable[[], list[EmailMessage]]
    ) -> None:
        # Non-ASCII everywhere a notification puts it: subject, display names, both bodies.
        message = self._message(
            "Nouvelle version : café 1.0 ✓",
            text="Bonjour Zoë,\n\ncafé 1.0 est publiée. 🧀\n",
            html="<p>Bonjour <b>Zoë</b>, café 1.0 est publiée. 🧀</p>\n",
        )
        message.replace_header("To", f"Zoë Müller <{self.RECIPIENT}>")
        message["Message-ID"] = "<contract-arrives-whole.1@example.com>"
        sender.send(message)

        (got,) = self._arrived(received, 1)

        assert got["Subject"] == "Nouvelle version : café 1.0 ✓"
        assert got["From"].addresses[0].display_name == "Chéeseshop Index"
        assert [a.addr_spec for a in got["To"].addresses] == [self.RECIPIENT]
        assert got["To"].addresses[0].display_name == "Zoë Müller"
        assert got["Message-ID"].strip() == "<contract-arrives-whole.1@example.com>"
        assert self._part(got, "plain") == "Bonjour Zoë,\n\ncafé 1.0 est publiée. 🧀\n"
        assert self._part(got, "html") == "<p>Bonjour <b>Zoë</b>, café 1.0 est publiée. 🧀</p>\n"

    def test_a_message_without_message_id_gets_one(
        self, sender: EmailSender, received: Callable[[], list[EmailMessage]]
    ) -> None:
        sender.send(self._message())
        (got,) = self._arrived(received, 1)
        assert got["Message-ID"] and "@" in got["Message-ID"]

    def test_each_message_gets_its_own_id(
        self, sender: EmailSender, received: Callable[[], list[EmailMessage]]
    ) -> None:
        ids = {sender.send(self._message(f"message {n}")) for n in range(3)}
        assert len(ids) == 3
        assert sorted(m["Subject"] for m in self._arrived(received, 3)) == [
            "message 0", "message 1", "message 2"
        ]

    def test_long_lines_and_a_large_body_arrive_intact(
        self, sender: EmailSender, received: Callable[[], list[EmailMessage]]
    ) -> None:
        # Longer than SMTP's 998-character line limit: the sender must encode, not cut.
        line = "x" * 3000
        body = "\n".join(f"{n:05d} {line}" for n in range(60)) + "\n"
        sender.send(self._message("large", text=body, html=f"<p>{line}</p>\n"))
        (got,) = self._arrived(received, 1)
        assert self._part(got, "plain") == body
        assert self._part(got, "html") == f"<p>{line}</p>\n"

    def test_sends_from_several_threads_at_once(
        self, sender: EmailSender, received: Callable[[], list[EmailMessage]]
    ) -> None:
        # Event hooks run in worker threads, several at a time.
        errors: list[BaseException] = []

        def send(n: int) -> None:
            try:
                sender.send(self._message(f"threaded {n}"))
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        subjects = sorted(m["Subject"] for m in self._arrived(received, 8))
        assert subjects == sorted(f"threaded {n}" for n in range(8))

    @pytest.mark.parametrize("missing", ["From", "To"])
    def test_a_message_without_sender_or_recipient_is_refused(
        self, sender: EmailSender, received: Callable[[], list[EmailMessage]], missing: str
    ) -> None:
        message = self._message()
        del message[missing]
        with pytest.raises(ValueError):
            sender.send(message)
        time.sleep(0.2)
        assert received() == []
