"""Celery on SQS (kombu's SQS transport, boto3) against a real moto server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from cheeseshop.services import Services
from cheeseshop.testing.dists import build_wheel

from worker_kit import Processes, records, wait_for

QUEUE_PREFIX = "cstest-"
VISIBILITY = 123


@pytest.fixture
def cheeseshop_database_url(tmp_path: Path, _cheeseshop_sqlite_template: Path) -> str:
    """SQLite only: the broker is what these tests are about (Redis's run on both)."""
    from cheeseshop.testing.services import migrated_sqlite

    return migrated_sqlite(_cheeseshop_sqlite_template, tmp_path / "cheeseshop.db")


@pytest.fixture
def cheeseshop_settings_overrides(moto_endpoint: str, recorder_path: Path) -> dict[str, Any]:
    return {
        # moto takes any credentials; they travel in the URL as they would to AWS.
        "broker_url": "sqs://testing:testing@",
        "sqs_endpoint_url": moto_endpoint,
        "sqs_region": "eu-west-1",
        "sqs_queue_name_prefix": QUEUE_PREFIX,
        "broker_visibility_timeout_seconds": VISIBILITY,
        "plugins": ["recorder"],
        "recorder": {"path": str(recorder_path)},
    }


def sqs_client(endpoint: str) -> Any:
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name="eu-west-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


async def test_upload_events_are_delivered_by_a_celery_worker_on_sqs(
    upload: Any, cheeseshop_services: Services, cheeseshop_settings: Any,
    processes: Processes, recorder_path: Path, moto_endpoint: str,
) -> None:  # fmt: skip
    worker = processes.worker("worker", cheeseshop_settings)
    dist = build_wheel("sqs-demo", "2.0")

    response = await upload(dist)
    assert response.status_code == 200

    await asyncio.to_thread(
        wait_for,
        lambda: (
            records(recorder_path, "file_uploaded") and records(recorder_path, "release_published")
        ),
        what="both events recorded",
    )
    uploaded = records(recorder_path, "file_uploaded")
    published = records(recorder_path, "release_published")
    assert [r["filename"] for r in uploaded] == [dist.filename]
    assert [(r["project"], r["version"]) for r in published] == [("sqs-demo", "2.0")]
    assert {r["pid"] for r in uploaded + published}.isdisjoint({os.getpid()})
    assert "Task cheeseshop.deliver[" in worker.output()

    # The queue kombu made: our prefix and name, and our visibility timeout.
    client = sqs_client(moto_endpoint)
    url = client.get_queue_url(QueueName=f"{QUEUE_PREFIX}cheeseshop")["QueueUrl"]
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert attributes["Attributes"]["VisibilityTimeout"] == str(VISIBILITY)
