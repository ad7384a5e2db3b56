"""End to end: ``cheeseshop serve`` with storage_b2s3, twine upload, pip install, both buckets.

The server is a real subprocess archiving in S3 on moto_server. Its B2 is down for the
whole test (its realm is a port of 127.0.0.1 nothing listens on): b2sdk's simulator lives
in one process and cannot be shared with a subprocess, and a B2 that is down is the case
worth showing anyway. So twine's upload must succeed and pip's downloads come from S3
through the B2 fallback. Then the worker's job (the periodic reconcile) runs here, in
this process, against the server's database and S3, with B2 back (the simulator): every
file and its metadata must then be in both buckets with equal digests, the recorded ones.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from cheeseshop.testing.dists import build_sdist, build_wheel

from cheeseshop_storage_b2s3 import B2S3Storage
from cheeseshop_storage_b2s3.testing import B2Simulator

from b2s3_kit import (
    B2_BUCKET,
    BIN,
    MotoS3,
    Serve,
    client_env,
    free_port,
    plugin_settings,
    run,
    section,
    sha256,
)

pytestmark = pytest.mark.e2e

PROJECT = "Archived-Cheese"
IMPORT_NAME = "archived_cheese"


def _server_env(root: Path, s3_url: str) -> dict[str, str]:
    plugin = {
        **section(s3_url),
        # B2 is down: nothing listens there.
        "b2_realm": f"http://127.0.0.1:{free_port()}",
        "b2_key_id": "unused",
        "b2_application_key": "unused",
        "b2_read_deadline_seconds": 1.0,
        "timeout_seconds": 2.0,
    }
    env = {
        "CHEESESHOP_DATA_DIR": str(root / "data"),
        "CHEESESHOP_PLUGINS": "storage_b2s3",
    }
    env.update(
        {f"CHEESESHOP_STORAGE_B2S3__{key.upper()}": str(value) for key, value in plugin.items()}
    )
    return env


def test_twine_upload_pip_install_and_both_buckets_agree(s3: MotoS3, tmp_path: Path) -> None:
    server = Serve(tmp_path / "server", _server_env(tmp_path / "server", s3.url))
    try:
        created = server.cli(
            "user", "create", "alice", "--email", "alice@example.com",
            env={"CHEESESHOP_NEW_PASSWORD": "correct horse battery staple"},
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        minted = server.cli("token", "create", "alice")
        assert minted.returncode == 0, minted.stdout + minted.stderr
        token = minted.stdout.strip().splitlines()[-1]

        dists = tmp_path / "dists"
        dists.mkdir()
        built = [
            build_wheel(PROJECT, "1.0", import_name=IMPORT_NAME),
            build_sdist(PROJECT, "1.0", import_name=IMPORT_NAME),
        ]
        files = [dist.write(dists) for dist in built]
        clients = client_env(tmp_path / "clients")

        uploaded = run(
            [
                str(BIN / "twine"), "upload", "--repository-url", f"{server.url}/legacy/",
                "-u", "__token__", "-p", token, "--non-interactive", "--disable-progress-bar",
                *map(str, files),
            ],
            env=clients,
        )  # fmt: skip
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr + server.output()

        target = tmp_path / "installed"
        installed = run(
            [
                sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
                "--disable-pip-version-check", "--no-deps", "--only-binary", ":all:",
                "--index-url", f"{server.url}/simple/", "--target", str(target), PROJECT,
            ],
            env=clients,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stdout + installed.stderr + server.output()
        imported = run(
            [sys.executable, "-c", f"import {IMPORT_NAME}; print({IMPORT_NAME}.VERSION)"],
            env={**clients, "PYTHONPATH": str(target)},
        )
        assert imported.stdout.strip() == "1.0", imported.stdout + imported.stderr

        database = tmp_path / "server" / "data" / "cheeseshop.db"
        with sqlite3.connect(database) as connection:
            rows = connection.execute(
                "SELECT path, sha256_digest, metadata_sha256 FROM files"
            ).fetchall()
        recorded = {path: digest for path, digest, _ in rows}
        recorded.update({f"{path}.metadata": m for path, _, m in rows if m is not None})
        assert len(rows) == 2 and len(recorded) >= 3

        # Archived in S3 before each upload committed; what the index serves (pip's
        # wheel and its metadata included) comes from there while B2 is down, checked.
        archived = s3.objects("files/")
        assert {path: sha256(archived[path]) for path in recorded} == recorded
        for path, digest in recorded.items():
            status, body = server.get(f"/packages/{path}")
            assert status == 200 and sha256(body) == digest, path

        # The worker's reconcile, with B2 back, against the server's database and S3.
        simulator = B2Simulator(B2_BUCKET)
        settings = plugin_settings(section(s3.url), f"sqlite+aiosqlite:///{database}")
        storage = B2S3Storage.from_settings(settings, b2_api_factory=simulator.factory)
        report = storage.reconcile()
        assert report.failed == 0 and report.copied == len(recorded), report

        for path, digest in recorded.items():
            cached = simulator.read(f"cache/{path}")
            assert cached is not None, path
            assert sha256(cached) == sha256(archived[path]) == digest, path
    finally:
        status = server.stop()
    assert status == 0, f"cheeseshop serve exited with {status}" + server.output()
