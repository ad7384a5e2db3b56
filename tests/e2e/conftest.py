"""Fixtures for the end-to-end suite: a real ``cheeseshop serve`` process, real clients.

Every process gets an environment built from scratch, so a developer's ``CHEESESHOP_*``,
``PIP_*``, ``UV_*``, proxy or keyring settings cannot change an outcome, and nothing is
sent anywhere but 127.0.0.1. Every command is bounded by a timeout.

``server`` is module-scoped and parametrized over the database: SQLite in its data dir,
and a PostgreSQL database of its own. ``clients`` runs twine, uv, pip and python against it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from cheeseshop.testing.clients import client_env
from cheeseshop.testing.services import create_postgres_database, drop_postgres_database

BIN = Path(sys.executable).parent
CHEESESHOP = BIN / "cheeseshop"
TWINE = BIN / "twine"
UV = BIN / "uv"

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"

#: Bounds, in seconds. Generous for slow CI machines; the suite normally takes a fraction.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 120.0

# No proxy, even one set in this process's environment: traffic stays on 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- running commands ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Result:
    """A finished command. ``str()`` gives the command, exit status and output, for messages."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (
            f"\n$ {' '.join(self.args)}\n(exit status {self.returncode})\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def run(
    command: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    timeout: float = COMMAND_TIMEOUT,
    cwd: Path | None = None,
) -> Result:
    """Run ``command`` to completion (bounded), stdin closed, output captured as text."""
    args = [str(part) for part in command]
    try:
        completed = subprocess.run(
            args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"timed out after {timeout:.0f} s: {' '.join(args)}\n"
            f"--- stdout ---\n{_text(error.stdout)}\n--- stderr ---\n{_text(error.stderr)}",
            pytrace=False,
        )
    return Result(args, completed.returncode, completed.stdout, completed.stderr)


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the server ------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    """A running ``cheeseshop serve`` process and the environment it was started with."""

    database: str
    port: int
    env: dict[str, str] = dataclasses.field(repr=False)
    events: Path
    log: Path
    process: subprocess.Popen[bytes] = dataclasses.field(repr=False)

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    @property
    def upload_url(self) -> str:
        return f"{self.url}/legacy/"

    def output(self) -> str:
        """The server's log so far, for an assertion message."""
        try:
            return f"\n--- server log ({self.log}) ---\n{self.log.read_text(errors='replace')}"
        except FileNotFoundError:
            return "\n(no server log)"

    def stop(self) -> None:
        """SIGTERM the server and assert that it exits cleanly (see :func:`_stop`)."""
        _stop(self)

    def cli(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        """Run ``cheeseshop ARGS`` with the server's environment (plus ``env``)."""
        return run([CHEESESHOP, *args], env={**self.env, **(env or {})})

    def user_token(self, username: str, *, email: str | None = None) -> str:
        """Create ``username`` (with ``email``, else ``<username>@example.com``) and an API
        token of theirs, both with the CLI; returns the token."""
        created = self.cli(
            "user", "create", username, "--email", email or f"{username}@example.com",
            env={"CHEESESHOP_NEW_PASSWORD": "correct horse battery staple"},
        )  # fmt: skip
        assert created.returncode == 0, created
        minted = self.cli("token", "create", username)
        assert minted.returncode == 0, minted
        token = minted.stdout.strip().splitlines()[-1]
        assert token.startswith("cheeseshop-"), minted
        return token

    def get(self, path: str, *, accept: str | None = None) -> tuple[int, Message, bytes]:
        """``GET path`` directly (no proxy): status, headers, body. Error statuses too."""
        headers = {"Accept": accept} if accept else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with _HTTP.open(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def simple_json(self, path: str) -> dict[str, Any]:
        """A Simple API page (``/simple/...``) in its PEP 691 JSON form."""
        status, headers, body = self.get(path, accept=SIMPLE_JSON)
        assert status == 200, f"GET {path}: {status} {body!r}" + self.output()
        assert (headers["Content-Type"] or "").startswith(SIMPLE_JSON), dict(headers)
        return json.loads(body)


def _server_env(root: Path, database_url: str | None) -> dict[str, str]:
    home = root / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        # So the log on failure holds everything up to the moment it was read, and, should
        # shutdown hang, the stack of every thread (see _stop).
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
        "CHEESESHOP_DATA_DIR": str(root / "data"),
        "CHEESESHOP_PLUGINS": "recorder",
        "CHEESESHOP_RECORDER__PATH": str(root / "events.jsonl"),
    }
    if database_url is not None:
        env["CHEESESHOP_DATABASE_URL"] = database_url
    return env


class _PortTaken(Exception):
    """Another process got the port between our probe and the server's bind."""


def _wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if server.process.poll() is not None:
            if "address already in use" in server.output().lower():
                raise _PortTaken(server.port)
            pytest.fail(
                f"cheeseshop serve exited with status {server.process.returncode} before "
                f"answering GET /simple/" + server.output(),
                pytrace=False,
            )
        try:
            status, _, _ = server.get("/simple/")
        except OSError:
            status = None
        if status == 200:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"cheeseshop serve did not answer GET /simple/ within {READY_TIMEOUT:.0f} s "
                f"(last status: {status})" + server.output(),
                pytrace=False,
            )
        time.sleep(0.1)
    # Whoever answered might be another test run's server that took the port first; ours
    # is the one whose recorder writes to our events file.
    status, _, body = server.get("/-/recorder")
    if status != 200 or json.loads(body).get("path") != str(server.events):
        raise _PortTaken(server.port)


def _start(database: str, root: Path, env: dict[str, str], *options: str) -> Server:
    """Start the server (with ``options`` for ``cheeseshop serve``) on a free port, trying
    another port if that one is taken first."""
    for attempt in range(3):
        port = _free_port()
        log = root / f"server-{attempt}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(CHEESESHOP), "serve", "--host", "127.0.0.1", "--port", str(port), *options],
                env=env,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = Server(database, port, env, root / "events.jsonl", log, process)
        try:
            _wait_until_ready(server)
        except _PortTaken:
            _stop(server, check=False)
            if attempt == 2:
                pytest.fail(f"port {port} was taken by another process" + server.output())
            continue
        except BaseException:
            _stop(server, check=False)
            raise
        return server
    raise AssertionError("unreachable")


def _stop(server: Server, *, check: bool = True) -> None:
    """SIGTERM, then kill after STOP_TIMEOUT; with ``check``, assert a clean exit.

    The kill is a SIGABRT first, so that faulthandler writes every thread's stack to the
    server log, saying where shutdown hung; then SIGKILL if even that did not end it.
    """
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
            if check:
                pytest.fail(
                    f"cheeseshop serve ignored SIGTERM for {STOP_TIMEOUT:.0f} s and was killed"
                    + server.output(),
                    pytrace=False,
                )
    if check:
        assert process.returncode is not None, "cheeseshop serve is still running"
        assert process.returncode == 0, (
            f"cheeseshop serve exited with status {process.returncode} on SIGTERM" + server.output()
        )


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a ``cheeseshop serve`` on SQLite with extra options (once per test); whatever
    is still running at the end is stopped, and must exit cleanly."""
    started: list[Server] = []

    def start(*options: str) -> Server:
        server = _start("sqlite", tmp_path, _server_env(tmp_path, None), *options)
        started.append(server)
        return server

    yield start
    for server in started:
        _stop(server)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``cheeseshop serve`` on a free port of 127.0.0.1, with the recorder plugin enabled.

    On SQLite the database lives in the data dir; on PostgreSQL it is a database of its
    own, dropped afterwards. Either way ``serve`` migrates it itself (auto_migrate).
    """
    database: str = request.param
    root = tmp_path_factory.mktemp(f"e2e-{database}")
    database_url = None
    name = f"cheeseshop_e2e_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    if database == "postgresql":
        database_url = create_postgres_database(name)
    try:
        server = _start(database, root, _server_env(root, database_url))
        try:
            yield server
        finally:
            _stop(server)
    finally:
        if database_url is not None:
            drop_postgres_database(name)


# -- clients ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clients:
    """twine, uv, pip and python, each run as its own process against ``server``.

    Their environment names no user config, keyring, cache or terminal, so none can prompt
    or read anything from the developer's machine.
    """

    server: Server
    env: dict[str, str]

    def twine_upload(self, token: str, files: Sequence[Path]) -> Result:
        """``twine upload`` of ``files`` with an API token."""
        return run(
            [
                TWINE, "upload",
                "--repository-url", self.server.upload_url,
                "-u", "__token__", "-p", token,
                "--non-interactive", "--disable-progress-bar",
                *files,
            ],
            env=self.env,
        )  # fmt: skip

    def uv_publish(self, token: str, files: Sequence[Path]) -> Result:
        """``uv publish`` of ``files``, asking the Simple API first which already exist."""
        return run(
            [
                UV, "publish", "--no-config",
                "--publish-url", self.server.upload_url,
                "--token", token,
                "--check-url", self.server.simple_url,
                *files,
            ],
            env=self.env,
        )  # fmt: skip

    def pip_install(self, target: Path, *requirements: str) -> Result:
        """``pip install --target`` from this index only."""
        return run(
            [
                sys.executable, "-m", "pip", "install",
                "--isolated", "--no-cache-dir", "--disable-pip-version-check",
                "--index-url", self.server.simple_url,
                "--target", target,
                *requirements,
            ],
            env=self.env,
        )  # fmt: skip

    def uv_install(self, target: Path, *requirements: str) -> Result:
        """``uv pip install --target`` from this index only, for this interpreter."""
        return run(
            [
                UV, "pip", "install", "--no-config", "--no-cache",
                "--index-url", self.server.simple_url,
                "--target", target,
                "--python", sys.executable,
                *requirements,
            ],
            env=self.env,
        )  # fmt: skip

    def pip(self, command: str, *args: str | os.PathLike[str]) -> Result:
        """``pip COMMAND ARGS`` from this index only (isolated, no cache)."""
        return run(
            [
                sys.executable, "-m", "pip", command,
                "--isolated", "--no-cache-dir", "--disable-pip-version-check",
                "--index-url", self.server.simple_url,
                *args,
            ],
            env=self.env,
        )  # fmt: skip

    def uv_pip(self, command: str, *args: str | os.PathLike[str]) -> Result:
        """``uv pip COMMAND ARGS`` from this index only, for this interpreter."""
        return run(
            [
                UV, "pip", command, "--no-config", "--no-cache",
                "--index-url", self.server.simple_url,
                "--python", sys.executable,
                *args,
            ],
            env=self.env,
        )  # fmt: skip

    def python(self, code: str, *, path: Path) -> Result:
        """``python -c code`` with only ``path`` added to its import path."""
        return run([sys.executable, "-c", code], env={**self.env, "PYTHONPATH": str(path)})


@pytest.fixture(scope="module")
def clients(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Clients:
    """The real clients, pointed at ``server``."""
    root = tmp_path_factory.mktemp("clients")
    env = {
        **client_env(root / "home"),
        "UV_CACHE_DIR": str(root / "uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    }
    return Clients(server, env)


# -- clients fetched from PyPI -------------------------------------------------------------

#: How long fetching one tool from PyPI may take (once a session; later runs are offline).
FETCH_TIMEOUT = 300.0
#: What uv prints when PyPI cannot be reached, as opposed to any other failure to fetch.
_NETWORK_ERRORS = (
    "error sending request",
    "failed to fetch",
    "dns error",
    "connection refused",
    "client error (connect)",
    "operation timed out",
    "certificate",
    "network",
)


@dataclasses.dataclass
class Tools:
    """Clients that are not in the venv (an older twine, hatch), run with ``uv tool run``.

    A tool is fetched from PyPI at most once a session, into a uv cache and tool directory
    that last the session. The fetch runs in an environment built from scratch that names
    no index, so uv uses its default (PyPI) and never the server under test; it names no
    proxy either. Only the trust roots of this machine (``SSL_CERT_FILE``, ``SSL_CERT_DIR``)
    are passed on, since a TLS-inspecting network needs them. When the fetch fails for
    want of a network, :func:`service_missing` skips the test, or fails it under ``CI=true``.

    Every run after the fetch is ``--offline``: uv only reads its cache, and the tool
    itself talks to the URL the test gives it (127.0.0.1), in the environment given.
    """

    root: Path
    fetch_env: dict[str, str] = dataclasses.field(repr=False)
    #: spec -> None when fetched, or why the fetch failed (not retried in the session).
    fetched: dict[str, str | None] = dataclasses.field(default_factory=dict)

    @property
    def uv_env(self) -> dict[str, str]:
        """What every ``uv tool run`` gets: the session cache, no config, no downloads."""
        return {
            "UV_CACHE_DIR": str(self.root / "uv-cache"),
            "UV_TOOL_DIR": str(self.root / "uv-tools"),
            "UV_TOOL_BIN_DIR": str(self.root / "uv-tools-bin"),
            "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
        }

    def _command(self, spec: str, command: str, *, offline: bool) -> list[str]:
        return [
            str(UV), "tool", "run", "--no-config",
            *(["--offline"] if offline else []),
            "--python", sys.executable,
            "--from", spec, command,
        ]  # fmt: skip

    def fetch(self, spec: str, command: str) -> None:
        """Make ``uv tool run --from spec command`` runnable offline (``command --version``)."""
        if spec not in self.fetched:
            result = run(
                [*self._command(spec, command, offline=False), "--version"],
                env={**self.fetch_env, **self.uv_env},
                timeout=FETCH_TIMEOUT,
                cwd=self.root,
            )
            if result.returncode == 0:
                self.fetched[spec] = None
            elif any(error in result.output.lower() for error in _NETWORK_ERRORS):
                self.fetched[spec] = f"uv could not fetch {spec}: {' '.join(result.output.split())}"
            else:
                pytest.fail(f"uv could not install {spec}{result}", pytrace=False)
        reason = self.fetched[spec]
        if reason is not None:
            from cheeseshop.testing.services import service_missing

            service_missing("PyPI", reason)

    def run(
        self,
        spec: str,
        command: str,
        *args: str | os.PathLike[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> Result:
        """``command ARGS`` of the tool ``spec`` (fetched first), offline, with ``env``."""
        self.fetch(spec, command)
        return run(
            [*self._command(spec, command, offline=True), *args],
            env={**env, **self.uv_env, "UV_OFFLINE": "1"},
            cwd=cwd or self.root,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """Clients fetched from PyPI with uv, cached for the whole session (see :class:`Tools`)."""
    root = tmp_path_factory.mktemp("tools")
    (root / "home").mkdir()
    fetch_env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root / "home"),
        "PIP_CONFIG_FILE": os.devnull,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        **{k: os.environ[k] for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if k in os.environ},
    }
    return Tools(root, fetch_env)


@pytest.fixture(scope="session")
def run_command() -> Any:
    """This module's :func:`run` (bounded, captured), for test modules, which cannot import it."""
    return run


@dataclasses.dataclass(frozen=True)
class ServerControl:
    """Start, kill and restart servers by hand, on a data dir and database the test owns."""

    def env(self, root: Path, database_url: str | None) -> dict[str, str]:
        """The environment ``server`` gives its process (data dir ``root/data``)."""
        return _server_env(root, database_url)

    def start(self, database: str, root: Path, env: dict[str, str]) -> Server:
        """Start ``cheeseshop serve`` and wait until it answers (bounded)."""
        return _start(database, root, env)

    def stop(self, server: Server, *, check: bool = True) -> None:
        """SIGTERM (then harder, bounded); with ``check``, assert a clean exit."""
        _stop(server, check=check)


@pytest.fixture(scope="session")
def server_control() -> ServerControl:
    """:class:`ServerControl`, for tests that kill and restart their own server."""
    return ServerControl()
