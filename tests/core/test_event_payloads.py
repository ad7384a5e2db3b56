"""Events survive the outbox's JSON, also across versions of the code (a rolling upgrade)."""

from __future__ import annotations

from datetime import UTC, datetime

from cheeseshop.events import FileUploaded, ProjectChanged


def test_an_event_round_trips_through_its_json() -> None:
    event = FileUploaded(
        project="Hello_World",
        normalized_name="hello-world",
        version="1.0",
        filename="hello_world-1.0-py3-none-any.whl",
        path="ab/cd/ef/hello_world-1.0-py3-none-any.whl",
        metadata_path=None,
        packagetype="bdist_wheel",
        size=1041,
        sha256="0" * 64,
        blake2_256="1" * 64,
        uploaded_by="alice",
        upload_time=datetime(2026, 11, 28, 21, 0, tzinfo=UTC),
        serial=7,
    )
    assert FileUploaded.from_json(event.to_json()) == event


def test_fields_a_newer_version_added_are_left_out() -> None:
    # Recorded by a newer web process, read by a worker not upgraded yet.
    payload = ProjectChanged(project="p", normalized_name="p", action="yank", version="1.0", serial=3).to_json()
    payload["added_in_a_later_version"] = ["x"]
    event = ProjectChanged.from_json(payload)
    assert (event.action, event.version, event.serial) == ("yank", "1.0", 3)
    assert not hasattr(event, "added_in_a_later_version")
