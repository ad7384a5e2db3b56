"""Helpers the benchmarks share: peer venvs, free ports, server processes, upload forms.

Imported by ``upload_bench.py`` and ``read_bench.py`` (run as scripts, so this directory is
on ``sys.path``). Nothing here measures anything.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from cheeseshop.testing.dists import Dist

PYTHON = sys.executable
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cheeseshop-bench"
USERNAME = "bench"
PASSWORD = "bench-password-1"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0

PYPISERVER_PACKAGES = ["pypiserver", "passlib"]
DEVPI_PACKAGES = ["devpi-server", "devpi-client"]


class PeerUnavailable(Exception):
    """A server could not be installed, set up or started; the message says why."""


# -- the workload ------------------------------------------------------------------------


def upload_form(dist: Dist) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """The fields and file twine sends for this wheel (plus md5_digest, as twine < 6 did)."""
    # Our wheels' METADATA has one-line fields only, so "Key: value" lines are enough.
    metadata = dict(
        line.split(": ", 1) for line in dist.metadata.decode().splitlines() if ": " in line
    )
    data = {
        "metadata_version": metadata["Metadata-Version"],
        "name": metadata["Name"],
        "version": metadata["Version"],
        "summary": metadata["Summary"],
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "md5_digest": hashlib.md5(dist.content).hexdigest(),
        "sha256_digest": dist.sha256,
        "blake2_256_digest": hashlib.blake2b(dist.content, digest_size=32).hexdigest(),
        ":action": "file_upload",
        "protocol_version": "1",
    }
    return data, {"content": (dist.filename, dist.content, "application/octet-stream")}


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(
    command: Sequence[str | Path], *, env: dict[str, str] | None = None, timeout: float = 300
) -> str:
    """Run a set-up command; raise PeerUnavailable with its output when it fails."""
    try:
        completed = subprocess.run(
            [str(part) for part in command],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PeerUnavailable(f"{Path(command[0]).name}: {error}") from None
    if completed.returncode != 0:
        tail = (completed.stdout + completed.stderr).strip()[-800:]
        raise PeerUnavailable(f"`{' '.join(map(str, command[:4]))} ...` failed:\n{tail}")
    return completed.stdout


@contextlib.contextmanager
def server_process(
    command: Sequence[str | Path],
    *,
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    start_timeout: float = START_TIMEOUT,
    ready_text: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait (up to ``start_timeout`` seconds) until its port accepts
    connections and, given ``ready_text``, until its log holds that text; stop it on exit.

    ``ready_text`` is for a server whose start-up goes on after it listens (Cheeseshop's
    deliverer process): timing it then would count its start-up against the first uploads.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(part) for part in command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise PeerUnavailable(
                    f"{Path(command[0]).name} exited with {process.returncode} at start-up:\n"
                    + log.read_text(errors="replace")[-800:]
                )
            if _listening(port) and (ready_text is None or ready_text in log.read_text(errors="replace")):
                break
            if time.monotonic() > deadline:
                raise PeerUnavailable(
                    f"{Path(command[0]).name} was not ready within {start_timeout:.0f} s"
                )
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def ensure_venv(name: str, packages: Sequence[str]) -> Path:
    """A venv under the cache dir holding ``packages``, created (with pip) when missing."""
    venv = CACHE / "venvs" / name
    marker = venv / ".bench-packages"
    wanted = " ".join(packages)
    if marker.exists() and marker.read_text() == wanted:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    print(f"  installing {wanted} into {venv} ...", flush=True)
    run([PYTHON, "-m", "venv", venv], timeout=120)
    run(
        [
            venv / "bin" / "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *packages,
        ],
        timeout=600,
    )
    marker.write_text(wanted)
    return venv


def log_errors(log: Path, lines: int = 4) -> str | None:
    """The server's last logged error: its first line and the end of its traceback."""
    if not log.exists():
        return None
    text = log.read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(text) if " ERROR " in line or line.startswith("Traceback")]
    if not starts:
        return None
    first = starts[-1]
    # The block runs until the next log record (a line starting with a timestamp digit).
    end = next((i for i in range(first + 1, len(text)) if text[i][:1].isdigit()), len(text))
    block = text[first:end]
    return "\n".join(block[:1] + block[1:][-lines:])


def version_of(venv: Path, distribution: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    return run([venv / "bin" / "python", "-c", code]).strip()



# -- Cheeseshop -------------------------------------------------------------------------


def cheeseshop_env(workdir: Path, database_url: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHEESESHOP_")}
    env["CHEESESHOP_DATA_DIR"] = str(workdir / "data")
    # Every benchmark upload creates a project, from one user and one address: PyPI's
    # limits (20 and 40 new projects an hour) would refuse all but the first few.
    env["CHEESESHOP_RATE_NEW_PROJECTS_PER_USER"] = "1000000/hour"
    env["CHEESESHOP_RATE_NEW_PROJECTS_PER_IP"] = "1000000/hour"
    if database_url:
        env["CHEESESHOP_DATABASE_URL"] = database_url
    return env


def cheeseshop_token(env: dict[str, str]) -> str:
    """Migrate, create the user and return a new API token, all through the CLI."""
    cli = [PYTHON, "-m", "cheeseshop"]
    run([*cli, "db", "upgrade"], env=env)
    run(
        [*cli, "user", "create", USERNAME, "--email", "bench@example.com"],
        env={**env, "CHEESESHOP_NEW_PASSWORD": PASSWORD},
    )
    return run([*cli, "token", "create", USERNAME, "--description", "benchmark"], env=env).strip()


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for a Cheeseshop server, dropped afterwards.

    Raises PeerUnavailable when PostgreSQL cannot be reached.
    """
    from cheeseshop.testing.services import ServiceUnavailable, drop_postgres_database, make_postgres_database

    try:
        url = make_postgres_database(name)
    except ServiceUnavailable as error:
        raise PeerUnavailable(f"PostgreSQL is not available: {error}") from None
    try:
        yield url
    finally:
        drop_postgres_database(name)


def cheeseshop_revision() -> str:
    """The commit measured, marked ``+dirty`` when core/ has uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], timeout=30).strip()
        dirty = run(["git", "-C", repo, "status", "--porcelain", "--", "core"], timeout=30).strip()
    except PeerUnavailable:
        return "not a git checkout"
    return f"git {commit}{'+dirty' if dirty else ''}"


# The end of the scripts of the benchmarks' bare ceilings (run with ``python -c``): serve
# their ``app`` on ``port`` with hypercorn, as `cheeseshop serve` does (one process, no
# hypercorn access log, on uvloop where it is installed), until SIGTERM or SIGINT.
ON_HYPERCORN = """
config = Config()
config.bind = [f"127.0.0.1:{port}"]
config.accesslog = None
config.errorlog = logging.getLogger("hypercorn.error")

async def main():
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)

try:
    import uvloop
except ImportError:
    asyncio.run(main())
else:
    uvloop.run(main())
"""


def event_loop() -> str:
    """The event loop the bare ceilings and ``cheeseshop serve`` run on, for the tables."""
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        return "asyncio's loop"
