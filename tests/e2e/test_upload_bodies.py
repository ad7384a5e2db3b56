"""Hostile upload bodies, sent over raw sockets to a real ``cheeseshop serve`` process.

Over the limit with a true Content-Length, chunked, a Content-Length that lies low (more
bytes follow) or high (the body stops short and stalls), and a slow-loris trickle. Each
must end in a 4xx whose reason phrase is our message, never a 500; the server must go on
serving; nothing may be stored and no temporary file may remain.

The server here is this module's own (SQLite), started with a 64 KiB file limit and a
2 s upload timeout; its start-up follows ``conftest.py``. Every socket talks to
127.0.0.1 only, and every wait is bounded in time and in count.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.upload import upload_fields
from cheeseshop.upload.multipart import MAX_FORM_BYTES

pytestmark = pytest.mark.e2e

CHEESESHOP = Path(sys.executable).parent / "cheeseshop"
MAX_FILE_SIZE = 64 * 1024
UPLOAD_TIMEOUT = 2
BOUNDARY = "e2eb0undary"
PROJECT = "body-test"
#: Bounds, in seconds.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
ANSWER_TIMEOUT = 15.0
CLEAN_TIMEOUT = 5.0

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the server ------------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    port: int
    root: Path
    env: dict[str, str] = dataclasses.field(repr=False)
    process: subprocess.Popen[bytes] = dataclasses.field(repr=False)
    log: Path
    token: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    def output(self) -> str:
        try:
            return f"\n--- server log ({self.log}) ---\n{self.log.read_text(errors='replace')}"
        except FileNotFoundError:
            return "\n(no server log)"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with _HTTP.open(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ready(server: Server) -> bool:
    """True once our server answers; False if the port was taken by another process."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if server.process.poll() is not None:
            if "address already in use" in server.output().lower():
                return False
            pytest.fail(f"cheeseshop serve exited early{server.output()}", pytrace=False)
        try:
            status, _ = server.get("/simple/")
        except OSError:
            status = None
        if status == 200:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"cheeseshop serve did not start{server.output()}", pytrace=False)
        time.sleep(0.1)
    # Whoever answered might be another run's server; ours writes to our recorder file.
    status, body = server.get("/-/recorder")
    return status == 200 and json.loads(body).get("path") == server.env["CHEESESHOP_RECORDER__PATH"]


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=STOP_TIMEOUT)


async def _make_token(env: dict[str, str]) -> str:
    """User alice and an API token, written straight into the server's database."""
    from cheeseshop.accounts.service import create_token, create_user
    from cheeseshop.config import load_settings
    from cheeseshop.db import Database

    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("CHEESESHOP_")})
    database = Database(settings.resolved_database_url)
    try:
        async with database.write() as session:
            user = await create_user(
                session, "alice", email="alice@example.com", password="correct horse battery staple"
            )
            _, token = await create_token(session, user, prefix=settings.token_prefix)
    finally:
        await database.dispose()
    return token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``cheeseshop serve`` with small limits, and an API token of its user alice."""
    root = tmp_path_factory.mktemp("bodies")
    (root / "home").mkdir()
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root / "home"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
        "CHEESESHOP_DATA_DIR": str(root / "data"),
        "CHEESESHOP_PLUGINS": "recorder",
        "CHEESESHOP_RECORDER__PATH": str(root / "events.jsonl"),
        "CHEESESHOP_MAX_FILE_SIZE": str(MAX_FILE_SIZE),
        "CHEESESHOP_UPLOAD_TIMEOUT_SECONDS": str(UPLOAD_TIMEOUT),
    }
    for attempt in range(3):
        log = root / f"server-{attempt}.log"
        port = _free_port()
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(CHEESESHOP), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = Server(port, root, env, process, log)
        try:
            if _ready(server):
                break
        except BaseException:
            _stop(server)
            raise
        _stop(server)
    else:
        pytest.fail("no free port for cheeseshop serve after 3 attempts")
    try:
        # In this process, as the test kit's make_token does: two CLI runs would double
        # the module's start-up time.
        server.token = asyncio.run(_make_token(env))
        yield server
    finally:
        _stop(server)
    assert "Traceback" not in server.log.read_text(errors="replace"), server.output()


# -- raw HTTP ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    seconds: float


def _answer_complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def exchange(port: int, head: bytes, pieces: Iterable[bytes] = (), *, pause: float = 0.0) -> Reply:
    """Send ``head``, then ``pieces`` (``pause`` s apart) until the server answers; read it.

    Stops sending as soon as the server has answered, as a client should, and watches for
    the answer between pieces, so an early answer is read before the server, closing a
    connection whose body it did not read, resets it.
    """
    started = time.monotonic()
    deadline = started + ANSWER_TIMEOUT
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        for piece in pieces:
            if select.select([sock], [], [], pause)[0] or time.monotonic() > deadline:
                break
            try:
                sock.sendall(piece)
            except OSError:  # reset, or the server stopped reading: read what it answered
                break
        for _ in range(10_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or _answer_complete(bytes(received)):
                break
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            received += data
    seconds = time.monotonic() - started
    assert received, f"no answer within {seconds:.1f} s"
    status_line, _, rest = bytes(received).partition(b"\r\n")
    version, status, reason = status_line.decode("latin-1").split(" ", 2)
    assert version == "HTTP/1.1", status_line
    header_block, _, body = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    # Only this answer: the server may have answered what followed it too (a lying length).
    body = body[: int(headers.get("content-length", len(body)))]
    return Reply(int(status), reason, headers, body, seconds)


def request_head(server: Server, **headers: str) -> bytes:
    lines = [
        "POST /legacy/ HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Authorization: Basic " + base64.b64encode(f"__token__:{server.token}".encode()).decode(),
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def form(version: str) -> tuple[bytes, bytes]:
    """(what precedes the file data, what follows it) in a twine-ordered upload form.

    The fields are those of a real wheel of ``version``, sent before its file part.
    """
    dist = build_wheel(PROJECT, version)
    head = bytearray()
    for name, value in upload_fields(dist):
        head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        head += f"{value}\r\n".encode()
    head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '.encode()
    head += f'filename="{dist.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
    return bytes(head), f"\r\n--{BOUNDARY}--\r\n".encode()


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def files_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


#: What an upload records: none of these may change when one is refused.
RECORDED = ("projects", "releases", "files", "filename_registry", "journal_entries")


def rows_of(database: Path) -> dict[str, int]:
    """How many rows each table of RECORDED holds, read from the server's SQLite file."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in RECORDED}


@pytest.fixture
def after(server: Server) -> Iterator[None]:
    """After the test: the server still serves, stored and recorded nothing, and kept no
    temporary file."""
    stored = files_of(server.data / "files")
    recorded = rows_of(server.data / "cheeseshop.db")
    yield
    status, _ = server.get("/simple/")
    assert status == 200, server.output()
    assert files_of(server.data / "files") == stored
    assert rows_of(server.data / "cheeseshop.db") == recorded
    deadline = time.monotonic() + CLEAN_TIMEOUT
    while files_of(server.data / "tmp") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert files_of(server.data / "tmp") == [], server.output()


def assert_refused(reply: Reply, status: int, *fragments: str) -> None:
    """Our refusal: the status, our message in the body and as the reason phrase."""
    message = reply.body.decode().strip()
    assert reply.status == status, (reply, message)
    assert reply.reason == " ".join(message.split())[:300], reply
    for fragment in fragments:
        assert fragment in reply.reason, (fragment, reply)


# -- the bodies -------------------------------------------------------------------------------


def test_true_content_length_over_the_limit_refused_before_reading(
    server: Server, after: None
) -> None:
    declared = MAX_FILE_SIZE + MAX_FORM_BYTES + 1
    reply = exchange(server.port, request_head(server, Content_Length=str(declared)))
    assert_refused(reply, 413, "Upload too large", "0.0625 MiB (65536 bytes) per file")
    assert reply.seconds < 5  # answered without waiting for a body that never came


def test_chunked_body_over_the_limit_413_while_streaming(server: Server, after: None) -> None:
    before, _ = form("1.0")
    pieces = [chunked(before)] + [chunked(b"x" * 8192)] * 256  # 2 MiB, far over 64 KiB
    reply = exchange(server.port, request_head(server, Transfer_Encoding="chunked"), pieces)
    assert_refused(reply, 413, "File too large", f"'{PROJECT}'", "65536 bytes")


def test_chunked_body_under_the_limit_accepted(server: Server) -> None:
    """The control: a chunked body is read like any other (no file stays in tmp either)."""
    dist = build_wheel(PROJECT, "2.0")
    before, end = form("2.0")
    body = before + dist.content + end
    pieces = [chunked(body[i : i + 4096]) for i in range(0, len(body), 4096)] + [b"0\r\n\r\n"]
    reply = exchange(server.port, request_head(server, Transfer_Encoding="chunked"), pieces)
    assert reply.status == 200, (reply, server.output())
    status, page = server.get(f"/simple/{PROJECT}/")
    assert status == 200 and dist.filename.encode() in page
    assert files_of(server.data / "tmp") == []


def test_content_length_lying_low_400(server: Server, after: None) -> None:
    """The body ends where Content-Length says, inside the file; the rest is not a request."""
    before, end = form("3.0")
    body = before + b"y" * 30_000 + end
    reply = exchange(
        server.port, request_head(server, Content_Length=str(len(before) + 1000)) + body
    )
    assert_refused(reply, 400, "Malformed multipart/form-data body")


def test_content_length_lying_high_then_stalling_408(server: Server, after: None) -> None:
    before, end = form("4.0")
    body = before + b"z" * 30_000 + end
    head = request_head(server, Content_Length=str(len(body) + 10_000))
    reply = exchange(server.port, head + body)
    assert_refused(reply, 408, f"did not arrive within {UPLOAD_TIMEOUT} seconds")
    assert UPLOAD_TIMEOUT - 0.5 < reply.seconds < UPLOAD_TIMEOUT + 5


def test_slow_loris_body_408_at_the_deadline(server: Server, after: None) -> None:
    """A few bytes every 0.2 s keep the connection busy, but not past the deadline."""
    before, end = form("5.0")
    size = 10_000
    head = request_head(server, Content_Length=str(len(before) + size + len(end)))
    pieces = [b"w" * 10] * 200  # 40 s of trickle at most; the answer comes at 2 s
    reply = exchange(server.port, head + before, pieces, pause=0.2)
    assert_refused(reply, 408, f"did not arrive within {UPLOAD_TIMEOUT} seconds")
    assert UPLOAD_TIMEOUT - 0.5 < reply.seconds < UPLOAD_TIMEOUT + 5
