"""The production plugins together, end to end: an upload through twine to a real
``cheeseshop serve`` with ``cdn_fastly`` and ``email_ses`` enabled, delivered by a real
``cheeseshop worker`` on Redis.

Done when: "With both plugins enabled, an end-to-end upload produces: the Surrogate-Key
headers on the simple page, a recorded soft purge for that project's keys after commit,
and an SES message to the owner."

Every process and service is real and listens on 127.0.0.1 only: the server and the
worker (one environment, built from scratch, for both), Redis as the broker (a key prefix
and a queue of this test's own), ``moto_server`` as SES (the sender's identity verified in
it), and the cdn_fastly suite's checking fake of Fastly's purge API. ``base_url`` is a
public-looking name that nothing fetches: it only shapes the links in pages and e-mail.
The recorder plugin is enabled too, because the e2e server kit identifies its server by it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.services import (
    create_postgres_database,
    drop_postgres_database,
    postgres_server_url,
)

from production_kit import (
    VERIFIED_SENDER,
    FakeFastly,
    MotoServer,
    Process,
    Received,
    client_env,
    read_database,
    wait_for,
)
from production_kit import redis_url, worker_key_prefix  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
CHEESESHOP = BIN / "cheeseshop"
TWINE = BIN / "twine"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"

PROJECT = "Fresh-Cheese"
NORMALIZED = "fresh-cheese"
VERSION = "1.0"
OWNER = "cheese-owner"
OWNER_EMAIL = "owner@example.com"
BASE_URL = "https://pypi.example.com"
MAIL_FROM = f"Cheeseshop <{VERIFIED_SENDER}>"
PROJECT_KEY = f"project/{NORMALIZED}"
ROOT_KEY = "all-projects"
#: Bounds, in seconds.
WORKER_READY = 30.0
DELIVERED = 30.0
UPLOAD_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class PageAtPurge:
    """What the server showed of the project at the moment the fake received a purge."""

    keys: tuple[str, ...]
    status: int
    versions: list[str]


@dataclasses.dataclass
class Production:
    """The running set-up: server, worker, fake Fastly, moto, and where the data lives."""

    server: Any
    worker: Process
    fastly: FakeFastly
    ses: MotoServer
    root: Path
    libpq_url: str | None
    pages_at_purge: list[PageAtPurge]

    def database(self) -> dict[str, list[tuple]]:
        sqlite_path = self.root / "data" / "cheeseshop.db" if self.libpq_url is None else None
        return read_database(sqlite_path, self.libpq_url)

    def context(self) -> str:
        """Everything worth reading when an assertion fails."""
        received = [(r.method, r.path, r.status, r.keys) for r in self.fastly.received]
        return (
            f"\n--- fake Fastly received ---\n{received}"
            f"\n--- pages at purge ---\n{self.pages_at_purge}"
            f"\n--- worker log ---\n{self.worker.output()[-6000:]}"
            + self.server.output()
        )


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[str | None, str | None]]:
    """(SQLAlchemy URL, libpq URL): both None on SQLite (the data dir's file); on PostgreSQL
    a migrated database of this test's own, dropped afterwards."""
    if request.param == "sqlite":
        yield None, None
        return
    name = f"cheeseshop_e2e_prod_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    url = create_postgres_database(name)
    try:
        yield url, f"{postgres_server_url().rpartition('/')[0]}/{name}"
    finally:
        drop_postgres_database(name)


@pytest.fixture
def fastly() -> Iterator[FakeFastly]:
    """The checking fake of Fastly's purge API, on 127.0.0.1."""
    fake = FakeFastly()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def ses(tmp_path: Path) -> Iterator[MotoServer]:
    """``moto_server`` of this test's own, with the sender's identity verified in its SES."""
    moto = MotoServer(tmp_path / "moto.log")
    try:
        boto3.client("ses", **moto.client_kwargs()).verify_email_identity(
            EmailAddress=VERIFIED_SENDER
        )
        yield moto
    finally:
        moto.stop()


@pytest.fixture
def production(
    tmp_path: Path,
    server_control: Any,
    redis_url: str,  # noqa: F811
    worker_key_prefix: str,  # noqa: F811
    fastly: FakeFastly,
    ses: MotoServer,
    database: tuple[str | None, str | None],
) -> Iterator[Production]:
    """``cheeseshop serve`` and ``cheeseshop worker`` with both plugins, one environment.

    Stopped at the end, pass or fail: the worker (SIGTERM, then SIGKILL of its process
    group), then the server (SIGTERM; a non-zero exit fails the test).
    """
    database_url, libpq_url = database
    env = server_control.env(tmp_path, database_url)
    env.update(
        {
            "CHEESESHOP_PLUGINS": "recorder,cdn_fastly,email_ses",
            "CHEESESHOP_BASE_URL": BASE_URL,
            "CHEESESHOP_MAIL_FROM": MAIL_FROM,
            "CHEESESHOP_BROKER_URL": redis_url,
            "CHEESESHOP_WORKER_KEY_PREFIX": worker_key_prefix,
            "CHEESESHOP_BROKER_QUEUE": f"e2e-production-{uuid.uuid4().hex[:12]}",
            "CHEESESHOP_CDN_FASTLY__API_KEY": fastly.api_key,
            "CHEESESHOP_CDN_FASTLY__SERVICE_ID": fastly.service_id,
            "CHEESESHOP_CDN_FASTLY__API_URL": fastly.url,
            "CHEESESHOP_CDN_FASTLY__TIMEOUT_SECONDS": "5",
            **{
                f"CHEESESHOP_EMAIL_SES__{key.upper()}": str(value)
                for key, value in ses.section().items()
            },
        }
    )
    server = server_control.start("sqlite" if libpq_url is None else "postgresql", tmp_path, env)
    worker: Process | None = None
    try:
        # After the server: on SQLite, `serve` is what migrates the database.
        worker = Process(
            "worker",
            [
                str(CHEESESHOP), "worker", "--concurrency=1", "--loglevel=INFO",
                f"--hostname=e2e-production-{uuid.uuid4().hex[:8]}@%h",
            ],
            env,
            tmp_path / "worker.log",
        )  # fmt: skip
        worker.wait_for_output(" ready.", timeout=WORKER_READY)
        production = Production(server, worker, fastly, ses, tmp_path, libpq_url, [])
        fastly.on_purge = _page_at_purge(production)
        yield production
    finally:
        try:
            if worker is not None:
                worker.stop()
        finally:
            server_control.stop(server)


def _page_at_purge(production: Production) -> Any:
    """An ``on_purge`` for the fake: note what the server shows of the project right then.

    It runs in the fake's thread before the purge is answered, so the worker is still
    inside its delivery: what the page shows now was committed before the purge was sent.
    """
    lock = threading.Lock()

    def on_purge(received: Received) -> None:
        status, _, body = production.server.get(f"/simple/{NORMALIZED}/", accept=SIMPLE_JSON)
        versions = json.loads(body)["versions"] if status == 200 else []
        with lock:
            production.pages_at_purge.append(PageAtPurge(received.keys, status, versions))

    return on_purge


# -- the test ------------------------------------------------------------------------------


def test_upload_is_tagged_soft_purged_after_commit_and_mailed_to_the_owner(
    production: Production, run_command: Any, tmp_path: Path
) -> None:
    server, fastly, ses = production.server, production.fastly, production.ses
    token = server.user_token(OWNER, email=OWNER_EMAIL)
    wheel = build_wheel(PROJECT, VERSION).write(tmp_path)

    uploaded = run_command(
        [
            TWINE, "upload",
            "--repository-url", server.upload_url,
            "-u", "__token__", "-p", token,
            "--non-interactive", "--disable-progress-bar",
            wheel,
        ],
        env=client_env(tmp_path),
        timeout=UPLOAD_TIMEOUT,
    )  # fmt: skip
    assert uploaded.returncode == 0, f"{uploaded}{production.context()}"

    # (1) The Simple page is tagged for Fastly with the project's key, and told how long
    # the edge may keep it; the root is tagged with the key of every project list.
    status, headers, body = server.get(f"/simple/{NORMALIZED}/", accept=SIMPLE_JSON)
    assert status == 200, body
    assert json.loads(body)["versions"] == [VERSION]
    assert PROJECT_KEY in (headers["Surrogate-Key"] or "").split(), dict(headers)
    assert "max-age=" in (headers["Surrogate-Control"] or ""), dict(headers)
    status, headers, _ = server.get("/simple/", accept=SIMPLE_JSON)
    assert status == 200
    assert ROOT_KEY in (headers["Surrogate-Key"] or "").split(), dict(headers)

    # Everything the upload queued gets delivered by the worker (bounded).
    def settled() -> dict[str, list[tuple]] | None:
        rows = production.database()
        done = rows["events"] and not rows["pending_events"] and not rows["pending_deliveries"]
        return rows if done else None

    try:
        rows = wait_for(settled, timeout=DELIVERED, what="every outbox event delivered")
    except AssertionError as error:
        raise AssertionError(f"{error}: {production.database()}{production.context()}") from None

    # (2) Fastly was asked, with the service's key, to soft-purge the project's page and
    # the project lists; every purge of the project found its upload already committed.
    naming_project = [p for p in fastly.purges if PROJECT_KEY in p.keys]
    assert naming_project, production.context()
    assert any(ROOT_KEY in p.keys for p in naming_project), production.context()
    for purge in naming_project:
        assert purge.method == "POST", purge
        assert purge.path == f"/service/{fastly.service_id}/purge", purge
        assert purge.headers.get("fastly-key") == fastly.api_key
        assert purge.headers.get("fastly-soft-purge") == "1", purge.headers
    assert [r for r in fastly.received if r.status != 200] == [], production.context()
    at_purge = [page for page in production.pages_at_purge if PROJECT_KEY in page.keys]
    assert len(at_purge) == len(naming_project), production.context()
    assert all(p.status == 200 and VERSION in p.versions for p in at_purge), production.context()

    # (3) SES (moto) accepted exactly one message, from the verified sender to the owner,
    # naming the project and version, its links built on base_url; the core recorded the
    # message id SES gave it.
    raws, mails = ses.raw_messages(), ses.received()
    sent_to = [[a.addr_spec for a in m["To"].addresses] for m in mails]
    assert len(raws) == len(mails) == 1, f"SES accepted {sent_to}{production.context()}"
    (raw,), (mail,) = raws, mails
    assert [a.addr_spec for a in mail["To"].addresses] == [OWNER_EMAIL], mail["To"]
    assert mail["From"].addresses[0].addr_spec == VERIFIED_SENDER, mail["From"]
    assert f"{PROJECT} {VERSION}" in mail["Subject"], mail["Subject"]
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert f"version {VERSION} of {PROJECT}" in text, text
    assert f"{BASE_URL}/pypi/{NORMALIZED}/{VERSION}/json" in text, text
    assert rows["sent"] == [(OWNER_EMAIL, raw["id"], None)], rows["sent"]

    # (4) Nothing is left in the outbox, and the deliveries ran in the worker: the web
    # process, with a broker configured, delivers nothing itself.
    assert rows["pending_events"] == [] and rows["pending_deliveries"] == []
    assert "Task cheeseshop.deliver[" in production.worker.output(), production.context()
    delivered_in = {
        json.loads(line).get("pid")
        for line in server.events.read_text().splitlines()
        if line.strip()
    }
    assert delivered_in and server.process.pid not in delivered_in, delivered_in
