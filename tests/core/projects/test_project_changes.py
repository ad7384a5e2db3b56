"""Yank, unyank and project status: one journal entry each, refused cleanly, shown by every API.

(Deletions: test_project_deletes.py; their event is checked here, with the others.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

import cheeseshop
from cheeseshop.db.models import JournalEntry, OutboxEvent, Project, Release
from cheeseshop.events import ProjectChanged
from cheeseshop.projects import service
from cheeseshop.projects.service import MAX_REASON, ChangeRefused
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
from cheeseshop.testing.records import journal_of
from cheeseshop.testing.upload import uploaded

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"
NAME = "Change_Me"
NORMALIZED = "change-me"


# -- helpers ------------------------------------------------------------------------------


async def journal(services: Any) -> list[tuple[int, str, str | None, str | None]]:
    return await journal_of(services, NAME)


async def max_serial(services: Any) -> int:
    async with services.db.read() as session:
        return await session.scalar(select(func.max(JournalEntry.id))) or 0


async def project_row(services: Any) -> tuple[str, str | None, int]:
    async with services.db.read() as session:
        row = (
            await session.execute(
                select(Project.status, Project.status_reason, Project.last_serial).where(
                    Project.normalized_name == NORMALIZED
                )
            )
        ).one()
        return tuple(row)


async def release_row(services: Any, version: str = "1.0") -> tuple[bool, str | None]:
    async with services.db.read() as session:
        row = (
            await session.execute(
                select(Release.yanked, Release.yanked_reason)
                .join(Project, Project.id == Release.project_id)
                .where(Project.normalized_name == NORMALIZED, Release.version == version)
            )
        ).one()
        return tuple(row)


async def simple_json(client: Any, name: str = NORMALIZED) -> tuple[Any, dict[str, Any]]:
    response = await client.get(f"/simple/{name}/", headers={"Accept": JSON})
    assert response.status_code == 200
    return response, json.loads(await response.get_data())


async def simple_html(client: Any, path: str = f"/simple/{NORMALIZED}/") -> str:
    response = await client.get(path, headers={"Accept": HTML})
    assert response.status_code == 200
    return await response.get_data(as_text=True)


def metas(html: str) -> dict[str, str]:
    return dict(re.findall(r'<meta name="([^"]+)" content="([^"]*)">', html))


@pytest.fixture
async def released(upload: Any) -> Dist:
    """Project Change_Me with release 1.0 (a wheel)."""
    return await uploaded(upload, build_wheel(NAME, "1.0"))


# -- the same change, through the service or the CLI ----------------------------------------------


Change = Callable[..., Awaitable[int]]


@pytest.fixture(params=["service", "cli"])
def change(request: pytest.FixtureRequest, cheeseshop_services: Any, run_cli: Any) -> Change:
    """``await change("yank", project, version, reason=…)`` → the new serial, either way."""
    via_cli = request.param == "cli"

    async def apply(action: str, *args: str, reason: str | None = None) -> int:
        if via_cli:
            command = ["project", "status"] if action == "status" else [action]
            extra = ["--reason", reason] if reason is not None else []
            result = await run_cli(*command, *args, *extra)
            assert result.exit_code == 0, result.output
            [serial] = re.findall(r"done \(serial (\d+)\)", result.stderr)
            return int(serial)
        kwargs = {"reason": reason} if reason is not None else {}
        function = {"yank": service.yank, "unyank": service.unyank, "status": service.set_status}[action]
        changed = await function(cheeseshop_services, *args, **kwargs)
        return changed.serial

    return apply


async def test_yank_writes_one_journal_entry_with_a_new_serial(released, change, cheeseshop_services):
    before = await journal(cheeseshop_services)
    highest = await max_serial(cheeseshop_services)

    serial = await change("yank", NAME, "1.0", reason="  broken\n  wheel ")

    after = await journal(cheeseshop_services)
    assert after[: len(before)] == before
    [(entry_id, action, version, _)] = after[len(before) :]
    assert entry_id == serial > highest
    assert (action, version) == ("yank release", "1.0")
    assert await max_serial(cheeseshop_services) == serial
    assert (await project_row(cheeseshop_services))[2] == serial
    assert await release_row(cheeseshop_services) == (True, "broken wheel")


async def test_unyank_writes_one_journal_entry_with_a_new_serial(released, change, cheeseshop_services):
    yanked = await change("yank", NAME, "1.0", reason="oops")
    before = await journal(cheeseshop_services)

    serial = await change("unyank", NAME, "1.0")

    after = await journal(cheeseshop_services)
    [(entry_id, action, version, _)] = after[len(before) :]
    assert entry_id == serial > yanked
    assert (action, version) == ("unyank release", "1.0")
    assert (await project_row(cheeseshop_services))[2] == serial
    assert await release_row(cheeseshop_services) == (False, None)


async def test_status_writes_one_journal_entry_with_a_new_serial(released, change, cheeseshop_services):
    before = await journal(cheeseshop_services)
    highest = await max_serial(cheeseshop_services)

    serial = await change("status", NAME, "archived", reason="moved to new-thing")

    after = await journal(cheeseshop_services)
    [(entry_id, action, version, _)] = after[len(before) :]
    assert entry_id == serial > highest
    assert (action, version) == ("set status archived", None)
    assert await project_row(cheeseshop_services) == ("archived", "moved to new-thing", serial)

    again = await change("status", NAME, "active")
    assert again > serial
    assert await project_row(cheeseshop_services) == ("active", None, again)
    assert len(await journal(cheeseshop_services)) == len(after) + 1


async def test_yank_by_a_non_canonical_spelling_of_the_version(released, change, cheeseshop_services):
    serial = await change("yank", NAME, "1.0.0")
    assert await release_row(cheeseshop_services) == (True, None)
    assert (await journal(cheeseshop_services))[-1][:3] == (serial, "yank release", "1.0")
    await change("unyank", "change.me", "v1")
    assert await release_row(cheeseshop_services) == (False, None)


async def test_serials_only_grow_across_uploads_and_changes(released, upload, cheeseshop_services):
    serials = [(await project_row(cheeseshop_services))[2]]
    serials.append((await service.yank(cheeseshop_services, NAME, "1.0")).serial)
    await uploaded(upload, build_sdist(NAME, "1.0"))
    serials.append((await project_row(cheeseshop_services))[2])
    serials.append((await service.unyank(cheeseshop_services, NAME, "1.0")).serial)
    serials.append((await service.set_status(cheeseshop_services, NAME, "deprecated")).serial)
    assert serials == sorted(set(serials)), serials
    ids = [entry[0] for entry in await journal(cheeseshop_services)]
    assert ids == sorted(set(ids)) and ids[-1] == serials[-1]


async def test_concurrent_changes_get_distinct_serials(released, cheeseshop_services):
    results = await asyncio.gather(
        service.yank(cheeseshop_services, NAME, "1.0"),
        service.set_status(cheeseshop_services, NAME, "deprecated", reason="use other"),
    )
    serials = sorted(r.serial for r in results)
    assert serials[0] < serials[1]
    entries = await journal(cheeseshop_services)
    assert [e[0] for e in entries[-2:]] == serials
    assert await project_row(cheeseshop_services) == ("deprecated", "use other", serials[1])
    assert await release_row(cheeseshop_services) == (True, None)


# -- refused changes ------------------------------------------------------------------------------

REFUSED = [
    pytest.param(("yank", "no-such-project", "1.0"), None, "no project named 'no-such-project'", id="unknown-project"),
    pytest.param(("yank", NAME, "2.0"), None, "project 'Change_Me' has no release '2.0'", id="unknown-version"),
    pytest.param(("yank", NAME, "not a version"), None, "'not a version' is not a valid version", id="invalid-version"),
    pytest.param(("unyank", NAME, "1.0"), None, "release 1.0 of 'Change_Me' is not yanked", id="not-yanked"),
    pytest.param(("yank", NAME, "1.0"), "x" * (MAX_REASON + 1), "the reason is too long", id="long-yank-reason"),
    pytest.param(("status", NAME, "archived"), "y" * (MAX_REASON + 1), "the reason is too long", id="long-status-reason"),
    pytest.param(("status", NAME, "active"), None, "project 'Change_Me' is already active", id="same-status"),
]


async def _refused_state(services: Any) -> tuple[Any, ...]:
    return (await journal(services), await max_serial(services), await project_row(services), await release_row(services))


@pytest.mark.parametrize(("args", "reason", "message"), REFUSED)
async def test_service_refuses_with_a_reason_and_changes_nothing(released, cheeseshop_services, args, reason, message):
    before = await _refused_state(cheeseshop_services)
    action, *rest = args
    function = {"yank": service.yank, "unyank": service.unyank, "status": service.set_status}[action]
    kwargs = {"reason": reason} if reason is not None else {}
    with pytest.raises(ChangeRefused, match=re.escape(message)):
        await function(cheeseshop_services, *rest, **kwargs)
    assert await _refused_state(cheeseshop_services) == before


async def test_cli_exits_non_zero_with_the_reason(released, cheeseshop_services, run_cli):
    # One application for every case: each CLI run costs a start-up, not a new database.
    before = await _refused_state(cheeseshop_services)
    for case in REFUSED:
        (action, *rest), reason, message = case.values
        command = ["project", "status"] if action == "status" else [action]
        result = await run_cli(*command, *rest, *(["--reason", reason] if reason is not None else []))
        assert result.exit_code == 1, (case.id, result.output)
        assert f"Error: {message}" in result.output, (case.id, result.output)
        assert "Traceback" not in result.output
        assert await _refused_state(cheeseshop_services) == before, case.id


async def test_yanking_twice_is_refused_and_writes_one_entry(released, cheeseshop_services, run_cli):
    first = await service.yank(cheeseshop_services, NAME, "1.0", reason="first")
    entries = await journal(cheeseshop_services)
    with pytest.raises(ChangeRefused, match="release 1.0 of 'Change_Me' is already yanked"):
        await service.yank(cheeseshop_services, NAME, "1.0", reason="second")
    result = await run_cli("yank", NAME, "1.0")
    assert result.exit_code == 1 and "is already yanked" in result.output
    assert await journal(cheeseshop_services) == entries
    assert await release_row(cheeseshop_services) == (True, "first")
    assert (await project_row(cheeseshop_services))[2] == first.serial


async def test_unknown_status_is_refused(released, cheeseshop_services, run_cli):
    before = await _refused_state(cheeseshop_services)
    with pytest.raises(ChangeRefused, match=r"unknown status 'gone'; use one of active, archived, quarantined, deprecated"):
        await service.set_status(cheeseshop_services, NAME, "gone")
    result = await run_cli("project", "status", NAME, "gone")
    assert result.exit_code == 2
    assert "Invalid value" in result.output and "'gone' is not one of" in result.output
    assert await _refused_state(cheeseshop_services) == before


# -- what the APIs show ---------------------------------------------------------------------------


async def test_quarantine_hides_the_project_from_every_list_and_offers_no_files(
    released, upload, cheeseshop_client, cheeseshop_services
):
    await uploaded(upload, build_wheel("bystander", "1.0"))
    wheel_path = urlsplit((await simple_json(cheeseshop_client))[1]["files"][0]["url"]).path

    changed = await service.set_status(cheeseshop_services, NAME, "quarantined", reason="malware <found>")

    root = json.loads(await (await cheeseshop_client.get("/simple/", headers={"Accept": JSON})).get_data())
    assert [p["name"] for p in root["projects"]] == ["bystander"]
    assert root["meta"]["_last-serial"] == changed.serial, "the global serial still counts the change"
    root_html = await simple_html(cheeseshop_client, "/simple/")
    assert 'href="bystander/"' in root_html and NORMALIZED not in root_html

    response, body = await simple_json(cheeseshop_client)
    assert body["files"] == [] and body["versions"] == []
    assert body["project-status"] == {"status": "quarantined", "reason": "malware <found>"}
    assert response.headers["X-PyPI-Last-Serial"] == str(changed.serial)
    html = await simple_html(cheeseshop_client)
    assert "<a " not in html
    assert metas(html)["pypi:project-status"] == "quarantined"
    assert metas(html)["pypi:project-status-reason"] == "malware &lt;found&gt;"

    pypi = await cheeseshop_client.get(f"/pypi/{NORMALIZED}/json")
    assert pypi.status_code == 404

    refused = await upload(build_wheel(NAME, "2.0"))
    assert refused.status_code == 400
    assert "quarantined" in await refused.get_data(as_text=True)
    assert (await project_row(cheeseshop_services))[2] == changed.serial, "a refused upload journals nothing"

    # Lifting the quarantine brings everything back.
    await service.set_status(cheeseshop_services, NAME, "active")
    _, body = await simple_json(cheeseshop_client)
    assert [f["filename"] for f in body["files"]] == [released.filename]
    assert body["project-status"] == {"status": "active"}
    assert "pypi:project-status" not in metas(await simple_html(cheeseshop_client))
    download = await cheeseshop_client.get(wheel_path)
    assert download.status_code == 200 and await download.get_data() == released.content


async def test_archived_project_keeps_its_files_and_refuses_uploads(
    released, upload, cheeseshop_client, cheeseshop_services
):
    changed = await service.set_status(cheeseshop_services, NAME, "archived", reason="moved to new-thing")

    response, body = await simple_json(cheeseshop_client)
    assert [f["filename"] for f in body["files"]] == [released.filename]
    assert body["versions"] == ["1.0"]
    assert body["project-status"] == {"status": "archived", "reason": "moved to new-thing"}
    assert body["meta"]["api-version"] == "1.4"
    assert response.headers["X-PyPI-Last-Serial"] == str(changed.serial)
    html = await simple_html(cheeseshop_client)
    assert f">{released.filename}</a>" in html
    assert metas(html)["pypi:project-status"] == "archived"
    assert metas(html)["pypi:project-status-reason"] == "moved to new-thing"
    assert metas(html)["pypi:repository-version"] == "1.4"

    root = json.loads(await (await cheeseshop_client.get("/simple/", headers={"Accept": JSON})).get_data())
    assert {"name": NAME, "_last-serial": changed.serial} in root["projects"]

    download = await cheeseshop_client.get(urlsplit(body["files"][0]["url"]).path)
    assert download.status_code == 200 and await download.get_data() == released.content

    for dist in (build_wheel(NAME, "2.0"), build_sdist(NAME, "1.0")):
        refused = await upload(dist)
        assert refused.status_code == 400
        text = (await refused.get_data(as_text=True)).strip()
        assert text == "Project 'Change_Me' is archived; it does not accept uploads.", text
    _, body = await simple_json(cheeseshop_client)
    assert [f["filename"] for f in body["files"]] == [released.filename]
    assert (await project_row(cheeseshop_services))[2] == changed.serial


async def test_deprecated_project_is_a_notice_only(released, upload, cheeseshop_client, cheeseshop_services):
    await service.set_status(cheeseshop_services, NAME, "deprecated", reason="use other")
    sdist = await uploaded(upload, build_sdist(NAME, "1.0"))
    _, body = await simple_json(cheeseshop_client)
    assert {f["filename"] for f in body["files"]} == {released.filename, sdist.filename}
    assert body["project-status"] == {"status": "deprecated", "reason": "use other"}
    assert metas(await simple_html(cheeseshop_client))["pypi:project-status"] == "deprecated"


async def test_status_without_a_reason_has_no_reason_anywhere(released, cheeseshop_client, cheeseshop_services):
    await service.set_status(cheeseshop_services, NAME, "archived")
    _, body = await simple_json(cheeseshop_client)
    assert body["project-status"] == {"status": "archived"}
    found = metas(await simple_html(cheeseshop_client))
    assert found["pypi:project-status"] == "archived" and "pypi:project-status-reason" not in found


async def test_cli_changes_show_on_the_running_servers_cached_pages(
    released, tmp_path, cheeseshop_settings, cheeseshop_client, cheeseshop_services
):
    """The CLI is another process: the server's journal poller purges the server's cache."""
    # The upload's own purge event is delivered first (it would purge the page below), then
    # delivery stops: else the server's sweep might take the CLI's purge event and deliver
    # it here, and the poller would go untested.
    deadline = time.monotonic() + 10
    while (await cheeseshop_services.outbox.due())[0]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await cheeseshop_services.outbox.dispatcher.stop()
    _, body = await simple_json(cheeseshop_client)  # cached now
    assert body["files"][0]["yanked"] is False
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHEESESHOP_")}
    env |= {
        "CHEESESHOP_DATA_DIR": str(tmp_path / "cli"),
        "CHEESESHOP_DATABASE_URL": cheeseshop_settings.resolved_database_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cheeseshop", "yank", NAME, "1.0", "--reason", "from the cli",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    [serial] = re.findall(r"done \(serial (\d+)\)", stderr.decode())

    # Within a few poll intervals (page_cache_poll_seconds, 0.5 s by default).
    deadline = time.monotonic() + 5
    while True:
        response, body = await simple_json(cheeseshop_client)
        if body["files"][0]["yanked"] == "from the cli":
            break
        assert time.monotonic() < deadline, "the server kept serving the page from before the CLI's yank"
        await asyncio.sleep(0.05)
    assert response.headers["X-PyPI-Last-Serial"] == serial


# -- the event ------------------------------------------------------------------------------------


class ChangeListener:
    """Receives cheeseshop_project_changed, as a plugin would."""

    def __init__(self) -> None:
        self.events: list[ProjectChanged] = []
        self.lock = threading.Lock()

    @cheeseshop.hookimpl
    def cheeseshop_project_changed(self, event: ProjectChanged) -> None:
        with self.lock:
            self.events.append(event)


class TestProjectChangedHook:
    @pytest.fixture
    def listener(self) -> ChangeListener:
        return ChangeListener()

    @pytest.fixture
    def cheeseshop_plugins(self, listener: ChangeListener) -> list[tuple[str, object]]:
        return [("listener", listener)]

    @pytest.fixture
    def cheeseshop_settings_overrides(self, tmp_path: Path) -> dict[str, Any]:
        # The installed test plugin too: its hooks must not disturb this one's delivery.
        return {"plugins": ["recorder"], "recorder": {"path": str(tmp_path / "recorded.jsonl")}}

    async def test_project_changed_is_delivered_once_per_change(self, released, cheeseshop_services, listener):
        yanked = await service.yank(cheeseshop_services, NAME, "1.0.0", reason="bad  build", by="alice")
        unyanked = await service.unyank(cheeseshop_services, NAME, "1.0", by="bob")
        status = await service.set_status(cheeseshop_services, NAME, "archived", reason="done")

        deadline = time.monotonic() + 10
        while len(listener.events) < 3:
            assert time.monotonic() < deadline, listener.events
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # a few outbox sweeps: nothing may come twice

        got = sorted(listener.events, key=lambda e: e.serial)
        assert len(got) == 3
        assert [(e.action, e.version, e.status, e.reason, e.changed_by, e.serial) for e in got] == [
            ("yank", "1.0", None, "bad build", "alice", yanked.serial),
            ("unyank", "1.0", None, None, "bob", unyanked.serial),
            ("status", None, "archived", "done", None, status.serial),
        ]
        assert {(e.project, e.normalized_name) for e in got} == {(NAME, NORMALIZED)}
        async with cheeseshop_services.db.read() as session:
            kinds = {
                event_id: kind
                for event_id, kind in await session.execute(select(OutboxEvent.id, OutboxEvent.kind))
            }
        # No purge event: the only purge receiver is the per-process cache (purged at once).
        assert [[kinds[i] for i in c.event_ids] for c in (yanked, unyanked, status)] == [["ProjectChanged"]] * 3

    async def test_project_changed_says_what_was_deleted(self, released, upload, cheeseshop_services, listener):
        sdist = (await uploaded(upload, build_sdist(NAME, "1.0"))).filename
        one_file = await service.delete_file(cheeseshop_services, NAME, sdist, by="alice")
        release = await service.delete_release(cheeseshop_services, NAME, "1.0", by="bob")

        deadline = time.monotonic() + 10
        while len(listener.events) < 2:
            assert time.monotonic() < deadline, listener.events
            await asyncio.sleep(0.02)
        got = sorted(listener.events, key=lambda event: event.serial)
        assert [(e.action, e.version, e.filename, e.changed_by, e.serial) for e in got] == [
            ("delete", "1.0", sdist, "alice", one_file.serial),
            ("delete", "1.0", None, "bob", release.serial),
        ]
        assert {(e.project, e.normalized_name) for e in got} == {(NAME, NORMALIZED)}
