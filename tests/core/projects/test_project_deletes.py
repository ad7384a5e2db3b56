"""Deleting a release or one file: one journal entry, gone from every API at once, its
filenames never uploadable again, its bytes left to the orphan collector."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from cheeseshop.db.models import Project
from cheeseshop.projects import service
from cheeseshop.projects.service import ChangeRefused
from cheeseshop.storage.gc import collect_orphans
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
from cheeseshop.testing.records import journal_of, stored_counts
from cheeseshop.testing.upload import uploaded

JSON = "application/vnd.pypi.simple.v1+json"
NAME = "Delete_Me"
NORMALIZED = "delete-me"


# -- helpers ------------------------------------------------------------------------------


async def journal(services: Any) -> list[tuple[int, str, str | None, str | None]]:
    return await journal_of(services, NAME)


async def size_and_serial(services: Any) -> tuple[int, int]:
    async with services.db.read() as session:
        row = await session.execute(
            select(Project.total_size, Project.last_serial).where(Project.normalized_name == NORMALIZED)
        )
        return tuple(row.one())


async def simple_page(client: Any) -> tuple[Any, dict[str, Any]]:
    response = await client.get(f"/simple/{NORMALIZED}/", headers={"Accept": JSON})
    assert response.status_code == 200
    return response, json.loads(await response.get_data())


async def page_at(client: Any, serial: int) -> tuple[Any, dict[str, Any]]:
    """The Simple page once it shows ``serial``: at once after a change made here; within
    a few journal polls after one made by the CLI, another process."""
    deadline = time.monotonic() + 10
    while True:
        response, page = await simple_page(client)
        if response.headers["X-PyPI-Last-Serial"] == str(serial):
            return response, page
        assert time.monotonic() < deadline, "the page from before the change is still served"
        await asyncio.sleep(0.05)


def path_of(page: dict[str, Any], filename: str) -> str:
    [url] = [entry["url"] for entry in page["files"] if entry["filename"] == filename]
    return urlsplit(url).path


@pytest.fixture
async def dists(upload: Any) -> dict[str, Dist]:
    """Delete_Me 1.0 (a wheel and an sdist) and 2.0 (a wheel), uploaded."""
    made = {
        "wheel": build_wheel(NAME, "1.0"),
        "sdist": build_sdist(NAME, "1.0"),
        "newer": build_wheel(NAME, "2.0"),
    }
    for dist in made.values():
        await uploaded(upload, dist)
    return made


@pytest.fixture(params=["service", "cli"])
def delete(request: pytest.FixtureRequest, cheeseshop_services: Any, run_cli: Any) -> Any:
    """``await delete(version, filename=None)`` → the new serial, through the service or the CLI."""

    async def apply(version: str, filename: str | None = None) -> int:
        if request.param == "cli":
            extra = ["--file", filename] if filename else []
            result = await run_cli("delete", NAME, version, *extra, "--yes")
            assert result.exit_code == 0, result.output
            [serial] = re.findall(r"done \(serial (\d+)\)", result.stderr)
            return int(serial)
        if filename:
            changed = await service.delete_file(cheeseshop_services, NAME, filename, version=version, by="alice")
        else:
            changed = await service.delete_release(cheeseshop_services, NAME, version, by="alice")
        return changed.serial

    return apply


# -- a release ----------------------------------------------------------------------------


async def test_delete_release_journals_once_and_every_api_forgets_it(
    dists, delete, cheeseshop_client, cheeseshop_services
):
    _, page = await simple_page(cheeseshop_client)
    gone = [path_of(page, dists[key].filename) for key in ("wheel", "sdist")]
    # Every page and download in the cache first: the deletion must purge them.
    for path in (*gone, f"{gone[0]}.metadata", f"/pypi/{NORMALIZED}/json", f"/pypi/{NORMALIZED}/1.0/json"):
        assert (await cheeseshop_client.get(path)).status_code == 200, path
    before = await journal(cheeseshop_services)

    serial = await delete("1.0.0")  # any spelling of the version

    [(entry_id, action, version, by)] = (await journal(cheeseshop_services))[len(before) :]
    assert (entry_id, action, version) == (serial, "remove release", "1.0")
    assert by in ("alice", "cli")
    assert serial > before[-1][0]
    assert await size_and_serial(cheeseshop_services) == (len(dists["newer"].content), serial)

    _, page = await page_at(cheeseshop_client, serial)
    assert page["versions"] == ["2.0"]
    assert [entry["filename"] for entry in page["files"]] == [dists["newer"].filename]
    html = await (await cheeseshop_client.get(f"/simple/{NORMALIZED}/")).get_data(as_text=True)
    assert dists["wheel"].filename not in html and dists["newer"].filename in html
    for path in (*gone, f"{gone[0]}.metadata", f"/pypi/{NORMALIZED}/1.0/json"):
        assert (await cheeseshop_client.get(path)).status_code == 404, path
    document = await (await cheeseshop_client.get(f"/pypi/{NORMALIZED}/json")).get_json()
    assert document["info"]["version"] == "2.0"
    assert list(document["releases"]) == ["2.0"]
    assert document["last_serial"] == serial


async def test_deleted_filenames_can_never_be_uploaded_again(dists, upload, cheeseshop_services):
    await service.delete_release(cheeseshop_services, NAME, "1.0")
    before = await stored_counts(cheeseshop_services)
    for key in ("wheel", "sdist"):
        response = await upload(dists[key])
        body = await response.get_data(as_text=True)
        assert response.status_code == 400, body
        assert "This filename has already been used" in body
    assert await stored_counts(cheeseshop_services) == before
    # The version itself is free again, under a filename never used.
    await uploaded(upload, build_wheel(NAME, "1.0", tag="py311-none-any"))


# -- one file -----------------------------------------------------------------------------


async def test_delete_one_file_keeps_its_release(dists, delete, cheeseshop_client, cheeseshop_services):
    size, _ = await size_and_serial(cheeseshop_services)
    sdist = dists["sdist"].filename

    serial = await delete("1.0", sdist)

    assert (await journal(cheeseshop_services))[-1][:3] == (serial, f"remove file {sdist}", "1.0")
    assert await size_and_serial(cheeseshop_services) == (size - len(dists["sdist"].content), serial)
    _, page = await page_at(cheeseshop_client, serial)
    assert page["versions"] == ["1.0", "2.0"]
    assert {entry["filename"] for entry in page["files"]} == {dists["wheel"].filename, dists["newer"].filename}

    # Its last file gone, the release no longer shows on the Simple API.
    last = await delete("1.0", dists["wheel"].filename)
    _, page = await page_at(cheeseshop_client, last)
    assert page["versions"] == ["2.0"]
    assert [entry["filename"] for entry in page["files"]] == [dists["newer"].filename]


# -- refusals -----------------------------------------------------------------------------


REFUSED = [
    pytest.param(("no-such-project", "1.0", None), "no project named 'no-such-project'", id="project"),
    pytest.param((NAME, "3.0", None), "project 'Delete_Me' has no release '3.0'", id="release"),
    pytest.param((NAME, "not a version", None), "'not a version' is not a valid version", id="version"),
    pytest.param((NAME, "1.0", "other-1.0.tar.gz"), "release '1.0' of project 'Delete_Me' has no file", id="file"),
    pytest.param(
        (NAME, "2.0", "delete_me-1.0.tar.gz"), "release '2.0' of project 'Delete_Me' has no file", id="other-release"
    ),
]


@pytest.mark.parametrize(("args", "message"), REFUSED)
async def test_refused_with_the_reason_and_nothing_changes(dists, cheeseshop_services, run_cli, args, message):
    project, version, filename = args
    before = (await journal(cheeseshop_services), await stored_counts(cheeseshop_services))
    with pytest.raises(ChangeRefused, match=re.escape(message)):
        if filename:
            await service.delete_file(cheeseshop_services, project, filename, version=version)
        else:
            await service.delete_release(cheeseshop_services, project, version)
    result = await run_cli("delete", project, version, *(["--file", filename] if filename else []), "--yes")
    assert result.exit_code == 1 and f"Error: {message}" in result.output, result.output
    assert (await journal(cheeseshop_services), await stored_counts(cheeseshop_services)) == before


async def test_cli_asks_first_and_a_no_deletes_nothing(dists, cheeseshop_services, run_cli):
    before = await stored_counts(cheeseshop_services)
    result = await run_cli("delete", NAME, "1.0", input="n\n")
    assert result.exit_code == 1, result.output
    assert "Delete release 1.0 of Delete_Me and all its files?" in result.output
    assert await stored_counts(cheeseshop_services) == before
    result = await run_cli("delete", NAME, "1.0", input="y\n")
    assert result.exit_code == 0, result.output
    assert (await stored_counts(cheeseshop_services))["files"] == before["files"] - 2


# -- the bytes ----------------------------------------------------------------------------


async def test_the_orphan_collector_removes_the_deleted_bytes_only(dists, cheeseshop_client, cheeseshop_services):
    _, page = await simple_page(cheeseshop_client)
    prefix = "/packages/"
    stored = {key: path_of(page, dist.filename)[len(prefix) :] for key, dist in dists.items()}
    await service.delete_release(cheeseshop_services, NAME, "1.0")

    later = time.time() + cheeseshop_services.settings.orphan_grace_seconds + 60
    removed = await collect_orphans(cheeseshop_services, now=later)

    assert set(removed) == {stored["wheel"], f"{stored['wheel']}.metadata", stored["sdist"]}
    storage = cheeseshop_services.storage
    assert not storage.exists(stored["wheel"]) and not storage.exists(stored["sdist"])
    assert storage.exists(stored["newer"]) and storage.exists(f"{stored['newer']}.metadata")
