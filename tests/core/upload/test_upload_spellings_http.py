"""Upload spellings clients really send, through ``POST /legacy/``, and hostile request paths.

Each accepted upload is checked where it lands (the Simple API, the JSON API, the Release
row); each refusal is checked to store nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from cheeseshop.db.models import Project, Release
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
from cheeseshop.testing.records import stored_counts
from cheeseshop.testing.upload import upload_fields

JSON = "application/vnd.pypi.simple.v1+json"
ACCEPTED_VERSIONS = "1.0, 1.1, 1.2, 2.1, 2.2, 2.3, 2.4, 2.5"


# -- helpers ------------------------------------------------------------------------------


async def accepted(response: Any) -> None:
    body = await response.get_data(as_text=True)
    assert response.status_code == 200, body
    assert body.strip() == "OK"


async def refused(response: Any, status: int, *fragments: str) -> str:
    body = await response.get_data(as_text=True)
    assert response.status_code == status, body
    message = body.strip()
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


async def simple_filenames(client: Any, normalized: str) -> list[str]:
    page = await client.get(f"/simple/{normalized}/", headers={"Accept": JSON})
    assert page.status_code == 200, await page.get_data(as_text=True)
    return [entry["filename"] for entry in (await page.get_json())["files"]]


async def only_release(services: Any) -> Release:
    async with services.db.read() as session:
        releases = (await session.scalars(select(Release))).all()
    assert len(releases) == 1
    return releases[0]


def wheel_2_5(*extra_metadata: tuple[str, str]) -> Dist:
    return build_wheel("hello-world", "1.0", metadata_version="2.5", extra_metadata=extra_metadata)


# -- project name spelling ------------------------------------------------------------------


async def test_twine_dash_spelling_of_underscore_name_served_under_normalized_name(
    upload, cheeseshop_client, cheeseshop_services
):
    # twine sends the form name with "_" turned to "-"; METADATA still says Hello_World.
    dist = build_wheel("Hello_World", "1.0")
    assert dist.filename == "hello_world-1.0-py3-none-any.whl"
    assert b"Name: Hello_World\n" in dist.metadata
    await accepted(await upload(dist, fields=upload_fields(dist, name="Hello-World")))

    page = await cheeseshop_client.get("/simple/hello-world/", headers={"Accept": JSON})
    assert page.status_code == 200
    data = await page.get_json()
    assert data["name"] == "hello-world"
    assert [f["filename"] for f in data["files"]] == [dist.filename]
    assert data["files"][0]["hashes"]["sha256"] == dist.sha256
    async with cheeseshop_services.db.read() as session:
        project = await session.scalar(select(Project))
    assert (project.name, project.normalized_name) == ("Hello-World", "hello-world")


# -- field spellings --------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["import_name", "import_names"])
async def test_import_name_field_spellings_stored(spelling, upload, cheeseshop_services):
    dist = wheel_2_5(("Import-Name", "hello_world"), ("Import-Name", "hello_world._impl; private"))
    names = ["hello_world", "hello_world._impl; private"]
    fields = upload_fields(dist, overrides={spelling: names})
    await accepted(await upload(dist, fields=fields))
    release = await only_release(cheeseshop_services)
    assert release.metadata_version == "2.5"
    assert release.import_names == names
    assert release.import_namespaces == []


@pytest.mark.parametrize("spelling", ["import_namespace", "import_namespaces"])
async def test_import_namespace_field_spellings_stored(spelling, upload, cheeseshop_services):
    dist = wheel_2_5(("Import-Namespace", "hello_ns"), ("Import-Namespace", "hello_ns.sub"))
    fields = upload_fields(dist, overrides={spelling: ["hello_ns", "hello_ns.sub"]})
    await accepted(await upload(dist, fields=fields))
    release = await only_release(cheeseshop_services)
    assert release.import_namespaces == ["hello_ns", "hello_ns.sub"]
    assert release.import_names == []


@pytest.mark.parametrize("keywords", ["a,b", "a, b"], ids=["uv-comma", "twine-comma-space"])
async def test_keywords_as_one_string_stored_and_served(
    keywords, upload, cheeseshop_client, cheeseshop_services
):
    dist = build_wheel("hello-world", "1.0")
    await accepted(await upload(dist, fields=upload_fields(dist, overrides={"keywords": keywords})))
    assert (await only_release(cheeseshop_services)).keywords == keywords
    response = await cheeseshop_client.get("/pypi/hello-world/json")
    assert response.status_code == 200
    assert (await response.get_json())["info"]["keywords"] == keywords


# -- metadata versions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata_version", ["1.0", "1.1", "1.2", "2.1", "2.2", "2.3", "2.4", "2.5"]
)
async def test_metadata_version_accepted_over_http(
    metadata_version, upload, cheeseshop_client, cheeseshop_services
):
    # Metadata-Version, Name, Version and Summary: fields every version has.
    dist = build_wheel("hello-world", "1.0", metadata_version=metadata_version)
    assert f"Metadata-Version: {metadata_version}\n".encode() in dist.metadata
    fields = upload_fields(dist)
    assert ("metadata_version", metadata_version) in fields
    await accepted(await upload(dist, fields=fields))
    assert await simple_filenames(cheeseshop_client, "hello-world") == [dist.filename]
    assert (await only_release(cheeseshop_services)).metadata_version == metadata_version


async def test_metadata_version_2_0_refused_naming_valid_versions(upload, cheeseshop_services):
    dist = build_wheel("hello-world", "1.0", metadata_version="2.0")
    fields = upload_fields(dist)
    assert ("metadata_version", "2.0") in fields
    before = await stored_counts(cheeseshop_services)
    response = await upload(dist, fields=fields)
    await refused(response, 400, "metadata_version", "'2.0'", ACCEPTED_VERSIONS)
    assert await stored_counts(cheeseshop_services) == before
    assert before["files"] == before["projects"] == 0


# -- filetype -----------------------------------------------------------------------------------


async def test_bdist_wheel_filetype_for_sdist_refused_nothing_stored(upload, cheeseshop_services):
    dist = build_sdist("hello-world", "1.0")
    fields = upload_fields(dist, overrides={"filetype": "bdist_wheel", "pyversion": "py3"})
    before = await stored_counts(cheeseshop_services)
    response = await upload(dist, fields=fields)
    await refused(response, 400, "'bdist_wheel'", "does not match the file", dist.filename)
    assert await stored_counts(cheeseshop_services) == before
    assert before["files"] == before["projects"] == 0


# -- hostile paths (RELIABILITY.md "Paths") -----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/%2F%2F..%2F..%2Fetc%2Fpasswd",
        "/%0d%0aSet-Cookie:x=1",
        "/simple/%0d%0aSet-Cookie:x=1",
        "/packages/..%2f..%2fetc%2fpasswd",
    ],
    ids=["double-slash-traversal", "crlf-root", "crlf-simple", "packages-traversal"],
)
async def test_hostile_path_never_500_leaks_file_or_splits_headers(path, upload, cheeseshop_client):
    await accepted(await upload(build_wheel("hello-world", "1.0")))  # an index with content
    response = await cheeseshop_client.get(path)
    body = await response.get_data()
    assert response.status_code < 500, body  # never a 500 (nor any server error)
    assert b"root:" not in body
    if response.status_code == 200:
        assert b"passwd" not in body and b"Set-Cookie" not in body, body
    names = [name.lower() for name, _ in response.headers.items()]
    assert "set-cookie" not in names
    for name, value in response.headers.items():
        assert "\r" not in value and "\n" not in value, (name, value)
    location = response.headers.get("Location")
    if location is not None:
        assert "\r" not in location and "\n" not in location
        followed = await cheeseshop_client.get(location)
        assert followed.status_code < 500
        assert b"root:" not in await followed.get_data()
        assert "set-cookie" not in [name.lower() for name, _ in followed.headers.items()]
