"""PyPI's JSON API (``/pypi/<p>/json``, ``/pypi/<p>/<v>/json``) through the Quart test client."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from cheeseshop.cache.keys import project_key
from cheeseshop.projects import service as projects
from sqlalchemy import delete, insert, select, update

from cheeseshop.db.models import File, Project, Release, Role, User
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
from cheeseshop.testing.upload import uploaded

ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
CLASSIFIERS = [
    "Development Status :: 4 - Beta",
    "Programming Language :: Python :: 3",
    "Topic :: Software Development :: Build Tools",
]
REQUIRES_DIST = ["requests>=2.0", "pytest; extra == 'test'"]
PROJECT_URLS = {
    "Source": "https://example.com/hello-world",
    "Bug Tracker": "https://example.com/hello-world/issues",
}
# The metadata hello-world 1.0 is uploaded with (twine's form fields).
RICH_METADATA: dict[str, str | list[str]] = {
    "summary": "Says hello.",
    "description": "# Hello\n\nThe world.\n",
    "description_content_type": "text/markdown",
    "author": "Alice Author",
    "author_email": "alice@example.com",
    "maintainer": "Mo Maintainer",
    "maintainer_email": "mo@example.com",
    "license_expression": "MIT",
    "license_file": ["LICENSE", "NOTICE"],
    "keywords": "hello, world",
    "home_page": "https://example.com/home",
    "download_url": "https://example.com/download",
    "classifiers": CLASSIFIERS,
    "platform": ["Linux", "Windows"],
    "project_urls": [f"{label}, {url}" for label, url in PROJECT_URLS.items()],
    "provides_extra": ["test"],
    "dynamic": ["Requires-Dist"],
}


# -- helpers ------------------------------------------------------------------------------


async def get(client: Any, path: str, **headers: str) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status_code != 500, await response.get_data(as_text=True)
    return response


async def document(client: Any, path: str) -> dict[str, Any]:
    response = await get(client, path)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    return await response.get_json()


async def sql(services: Any, statement: Any) -> None:
    """Change the database behind the app's back, then purge every project's cached pages
    (a real change is journaled and purged through the outbox)."""
    async with services.db.write() as session:
        await session.execute(statement)
        names = (await session.scalars(select(Project.normalized_name))).all()
    services.cache.purge([project_key(name) for name in names])


async def last_serial(services: Any, normalized: str) -> int:
    async with services.db.read() as session:
        return await session.scalar(
            select(Project.last_serial).where(Project.normalized_name == normalized)
        )


async def yank(services: Any, version: str, reason: str | None = None) -> None:
    """Yank the release ``version`` of whichever project has it, as `cheeseshop yank` does."""
    async with services.db.read() as session:
        name = await session.scalar(
            select(Project.name).join(Release, Release.project_id == Project.id).where(Release.version == version)
        )
    await projects.yank(services, name, version, reason=reason or "")


@pytest.fixture
async def project(upload: Any) -> dict[str, Dist]:
    """hello-world 1.0 (a wheel with rich metadata and an sdist) and 2.0 (a wheel)."""
    wheel = await uploaded(
        upload,
        build_wheel(
            "hello-world",
            "1.0",
            requires_python=">=3.8",
            requires_dist=REQUIRES_DIST,
            files={
                "hello_world/__init__.py": b"",
                "hello_world-1.0.dist-info/licenses/LICENSE": b"MIT License\n",
                "hello_world-1.0.dist-info/licenses/NOTICE": b"Notice\n",
            },
        ),
        requires_python=">=3.8",
        summary="Says hello.",
        overrides=RICH_METADATA,
    )
    sdist = await uploaded(upload, build_sdist("hello-world", "1.0", requires_dist=REQUIRES_DIST))
    newer = await uploaded(upload, build_wheel("hello-world", "2.0"), summary="Says hello again.")
    return {"wheel": wheel, "sdist": sdist, "newer": newer}


# -- the project document -----------------------------------------------------------------


async def test_project_document_keys_and_types(cheeseshop_client, cheeseshop_services, project):
    data = await document(cheeseshop_client, "/pypi/hello-world/json")
    assert list(data) == ["info", "last_serial", "ownership", "releases", "urls", "vulnerabilities"]
    assert data["last_serial"] == await last_serial(cheeseshop_services, "hello-world")
    assert isinstance(data["last_serial"], int) and data["last_serial"] > 0
    assert data["vulnerabilities"] == []
    owner = {"role": "Owner", "user": "alice"}
    assert data["ownership"] == {"organization": None, "roles": [owner]}
    assert sorted(data["releases"]) == ["1.0", "2.0"]
    assert data["urls"] == data["releases"]["2.0"]


async def test_project_info_shows_latest_release(cheeseshop_client, project):
    info = (await document(cheeseshop_client, "/pypi/hello-world/json"))["info"]
    host = "http://localhost/"
    assert info == {
        "author": None,
        "author_email": None,
        "bugtrack_url": None,
        "classifiers": [],
        "description": None,
        "description_content_type": None,
        "docs_url": None,
        "download_url": None,
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "dynamic": None,
        "home_page": None,
        "keywords": None,
        "license": None,
        "license_expression": None,
        "license_files": None,
        "maintainer": None,
        "maintainer_email": None,
        "name": "hello-world",
        "package_url": f"{host}project/hello-world/",
        "platform": None,
        "project_url": f"{host}project/hello-world/",
        "project_urls": None,
        "provides_extra": None,
        "release_url": f"{host}project/hello-world/2.0/",
        "requires_dist": None,
        "requires_python": None,
        "summary": "Says hello again.",
        "version": "2.0",
        "yanked": False,
        "yanked_reason": None,
    }


async def test_metadata_round_trips_from_upload(cheeseshop_client, project):
    info = (await document(cheeseshop_client, "/pypi/hello-world/1.0/json"))["info"]
    assert info["summary"] == "Says hello."
    assert info["description"] == "# Hello\n\nThe world.\n"
    assert info["description_content_type"] == "text/markdown"
    assert (info["author"], info["author_email"]) == ("Alice Author", "alice@example.com")
    assert (info["maintainer"], info["maintainer_email"]) == ("Mo Maintainer", "mo@example.com")
    assert info["license"] is None
    assert info["license_expression"] == "MIT"
    assert info["license_files"] == ["LICENSE", "NOTICE"]
    assert info["keywords"] == "hello, world"
    assert info["home_page"] == "https://example.com/home"
    assert info["download_url"] == "https://example.com/download"
    assert info["requires_python"] == ">=3.8"
    assert info["platform"] == "Linux"
    assert info["dynamic"] == ["Requires-Dist"]
    # Multiple-use fields keep every value, in upload order.
    assert info["classifiers"] == CLASSIFIERS
    assert info["requires_dist"] == REQUIRES_DIST
    assert info["provides_extra"] == ["test"]
    assert info["project_urls"] == {
        "Homepage": "https://example.com/home",
        "Download": "https://example.com/download",
        **PROJECT_URLS,
    }
    assert list(info["project_urls"]) == ["Homepage", "Download", "Source", "Bug Tracker"]


async def test_files_match_uploaded_bytes(cheeseshop_client, project):
    data = await document(cheeseshop_client, "/pypi/hello-world/json")
    entries = {entry["filename"]: entry for files in data["releases"].values() for entry in files}
    assert set(entries) == {dist.filename for dist in project.values()}
    for dist in project.values():
        entry = entries[dist.filename]
        digests = {
            "blake2b_256": hashlib.blake2b(dist.content, digest_size=32).hexdigest(),
            "md5": hashlib.md5(dist.content).hexdigest(),
            "sha256": dist.sha256,
        }
        assert entry["digests"] == digests
        assert entry["md5_digest"] == digests["md5"]
        assert entry["size"] == len(dist.content)
        # bandersnatch refuses file URLs outside /packages/.
        assert urlsplit(entry["url"]).path.startswith("/packages/")
        download = await get(cheeseshop_client, urlsplit(entry["url"]).path)
        assert download.status_code == 200
        assert await download.get_data() == dist.content


async def test_file_entry_fields(cheeseshop_client, project):
    data = await document(cheeseshop_client, "/pypi/hello-world/1.0/json")
    entries = {entry["filename"]: entry for entry in data["urls"]}
    wheel, sdist = entries[project["wheel"].filename], entries[project["sdist"].filename]
    assert list(entries) == sorted(entries)
    assert (wheel["packagetype"], wheel["python_version"]) == ("bdist_wheel", "py3")
    assert (sdist["packagetype"], sdist["python_version"]) == ("sdist", "source")
    assert wheel["requires_python"] == ">=3.8"
    assert sdist["requires_python"] is None
    metadata_sha256 = hashlib.sha256(project["wheel"].metadata).hexdigest()
    assert wheel["core-metadata"] == {"sha256": metadata_sha256}
    for entry in (wheel, sdist):
        assert entry["comment_text"] == ""
        assert entry["has_sig"] is False
        assert entry["downloads"] == -1
        assert entry["yanked"] is False and entry["yanked_reason"] is None
        assert SECONDS.match(entry["upload_time"]), entry["upload_time"]
        assert ISO_8601.match(entry["upload_time_iso_8601"]), entry["upload_time_iso_8601"]
        assert entry["upload_time_iso_8601"].startswith(entry["upload_time"])
        assert entry["core-metadata"] is False or set(entry["core-metadata"]) == {"sha256"}


async def test_core_metadata_matches_served_file(cheeseshop_client, project):
    entry = next(
        e
        for e in (await document(cheeseshop_client, "/pypi/hello-world/2.0/json"))["urls"]
        if e["filename"] == project["newer"].filename
    )
    served = await get(cheeseshop_client, urlsplit(entry["url"]).path + ".metadata")
    assert served.status_code == 200
    assert hashlib.sha256(await served.get_data()).hexdigest() == entry["core-metadata"]["sha256"]


async def test_release_without_files_is_listed(cheeseshop_client, cheeseshop_services, project):
    await sql(cheeseshop_services, delete(File).where(File.filename == project["newer"].filename))
    data = await document(cheeseshop_client, "/pypi/hello-world/json")
    assert data["releases"]["2.0"] == []
    # As on PyPI: a release without files can still be the latest.
    assert data["info"]["version"] == "2.0"
    assert data["urls"] == []


# -- the release document -----------------------------------------------------------------


async def test_release_document(cheeseshop_client, cheeseshop_services, project):
    data = await document(cheeseshop_client, "/pypi/hello-world/1.0/json")
    assert list(data) == ["info", "last_serial", "ownership", "urls", "vulnerabilities"]
    assert data["info"]["version"] == "1.0"
    assert data["info"]["release_url"] == "http://localhost/project/hello-world/1.0/"
    assert sorted(e["filename"] for e in data["urls"]) == sorted(
        [project["wheel"].filename, project["sdist"].filename]
    )
    assert data["last_serial"] == await last_serial(cheeseshop_services, "hello-world")


@pytest.mark.parametrize(
    ("spelling", "stored"), [("1.0.0", "1.0"), ("1", "1.0"), ("2.0.0.0", "2.0")]
)
async def test_version_spelling_redirects(cheeseshop_client, project, spelling, stored):
    response = await get(cheeseshop_client, f"/pypi/hello-world/{spelling}/json")
    assert response.status_code == 301
    assert response.headers["Location"].endswith(f"/pypi/hello-world/{stored}/json")
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_stored_spelling_is_kept(cheeseshop_client, upload):
    await uploaded(upload, build_wheel("spelled", "1.0.0"))
    data = await document(cheeseshop_client, "/pypi/spelled/1.0.0/json")
    assert data["info"]["version"] == "1.0.0"
    response = await get(cheeseshop_client, "/pypi/spelled/1.0/json")
    assert response.status_code == 301
    assert response.headers["Location"].endswith("/pypi/spelled/1.0.0/json")


# -- "latest" ------------------------------------------------------------------------------


async def test_latest_prefers_final_to_prerelease(cheeseshop_client, project, upload):
    await uploaded(upload, build_wheel("hello-world", "3.0b1"))
    data = await document(cheeseshop_client, "/pypi/hello-world/json")
    assert data["info"]["version"] == "2.0"
    assert sorted(data["releases"]) == ["1.0", "2.0", "3.0b1"]


async def test_latest_skips_yanked(cheeseshop_client, cheeseshop_services, project):
    await yank(cheeseshop_services, "2.0", "broken")
    data = await document(cheeseshop_client, "/pypi/hello-world/json")
    assert data["info"]["version"] == "1.0"
    yanked = (await document(cheeseshop_client, "/pypi/hello-world/2.0/json"))
    assert (yanked["info"]["yanked"], yanked["info"]["yanked_reason"]) == (True, "broken")
    assert [(e["yanked"], e["yanked_reason"]) for e in yanked["urls"]] == [(True, "broken")]
    assert data["releases"]["2.0"][0]["yanked"] is True


async def test_latest_falls_back_to_prerelease_then_yanked(
    cheeseshop_client, cheeseshop_services, upload
):
    await uploaded(upload, build_wheel("pre", "1.0"))
    await uploaded(upload, build_wheel("pre", "2.0a1"))
    await uploaded(upload, build_wheel("pre", "2.0a2"))
    await yank(cheeseshop_services, "1.0")
    assert (await document(cheeseshop_client, "/pypi/pre/json"))["info"]["version"] == "2.0a2"
    await yank(cheeseshop_services, "2.0a2")
    assert (await document(cheeseshop_client, "/pypi/pre/json"))["info"]["version"] == "2.0a1"
    await yank(cheeseshop_services, "2.0a1")
    # Everything yanked: the newest release, pre-release or not.
    info = (await document(cheeseshop_client, "/pypi/pre/json"))["info"]
    assert (info["version"], info["yanked"]) == ("2.0a2", True)


async def test_file_yanked_on_its_own(cheeseshop_client, cheeseshop_services, project):
    await sql(
        cheeseshop_services,
        update(File).where(File.filename == project["sdist"].filename).values(yanked=True),
    )
    urls = (await document(cheeseshop_client, "/pypi/hello-world/1.0/json"))["urls"]
    assert {e["filename"]: e["yanked"] for e in urls} == {
        project["wheel"].filename: False,
        project["sdist"].filename: True,
    }


# -- ownership ------------------------------------------------------------------------------


async def test_ownership_lists_owners_then_maintainers(
    cheeseshop_client, cheeseshop_services, make_token, project
):
    for username in ("zoe", "bob"):
        await make_token(username)
    async with cheeseshop_services.db.write() as session:
        project_id = await session.scalar(
            select(Project.id).where(Project.normalized_name == "hello-world")
        )
        users = dict((await session.execute(select(User.username, User.id))).all())
        await session.execute(
            insert(Role),
            [
                {"user_id": users["zoe"], "project_id": project_id, "role_name": "Maintainer"},
                {"user_id": users["bob"], "project_id": project_id, "role_name": "Maintainer"},
            ],
        )
    for path in ("/pypi/hello-world/json", "/pypi/hello-world/1.0/json"):
        assert (await document(cheeseshop_client, path))["ownership"] == {
            "organization": None,
            "roles": [
                {"role": "Owner", "user": "alice"},
                {"role": "Maintainer", "user": "bob"},
                {"role": "Maintainer", "user": "zoe"},
            ],
        }


# -- redirects and 404s -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/pypi/Hello_World/json", "/pypi/hello-world/json"),
        ("/pypi/hello.world/json", "/pypi/hello-world/json"),
        ("/pypi/HELLO-WORLD/1.0/json", "/pypi/hello-world/1.0/json"),
        ("/pypi/Hello_World/json/", "/pypi/hello-world/json/"),
        ("/pypi/Hello_World/1.0/json/", "/pypi/hello-world/1.0/json/"),
    ],
)
async def test_non_normalized_name_redirects(cheeseshop_client, project, path, location):
    response = await get(cheeseshop_client, path)
    assert response.status_code == 301
    assert urlsplit(response.headers["Location"]).path == location
    assert (await get(cheeseshop_client, location)).status_code == 200


async def test_trailing_slash_forms_serve_the_same(cheeseshop_client, project):
    for path in ("/pypi/hello-world/json", "/pypi/hello-world/1.0/json"):
        plain = await get(cheeseshop_client, path)
        slashed = await get(cheeseshop_client, path + "/")
        assert slashed.status_code == 200
        assert await slashed.get_data() == await plain.get_data()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/pypi/no-such-project/json", "No project named 'no-such-project'"),
        ("/pypi/no-such-project/1.0/json", "No project named 'no-such-project'"),
        ("/pypi/hello-world/9.9/json", "No release '9.9' of project 'hello-world'"),
        ("/pypi/hello-world/not-a-version/json", "No release 'not-a-version'"),
        ("/pypi/hello-world/1.0%00/json", "No release"),
        ("/pypi/-hello-/json", "No project named '-hello-'"),
        ("/pypi/a%00b/json", "No project named"),
        ("/pypi/h%C3%A9llo/json", "No project named"),
    ],
)
async def test_not_found(cheeseshop_client, project, path, message):
    response = await get(cheeseshop_client, path)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/plain")
    assert message in await response.get_data(as_text=True)


async def test_project_without_releases_404(cheeseshop_client, cheeseshop_services, project):
    await sql(cheeseshop_services, delete(Release))
    response = await get(cheeseshop_client, "/pypi/hello-world/json")
    assert response.status_code == 404
    assert "has no releases" in await response.get_data(as_text=True)


async def test_quarantined_project_hidden(cheeseshop_client, cheeseshop_services, project):
    await projects.set_status(cheeseshop_services, "hello-world", "quarantined")
    for path in ("/pypi/hello-world/json", "/pypi/hello-world/1.0/json"):
        response = await get(cheeseshop_client, path)
        assert response.status_code == 404
        assert "hidden from the JSON API" in await response.get_data(as_text=True)


@pytest.mark.parametrize("status", ["archived", "deprecated"])
async def test_other_statuses_still_shown(cheeseshop_client, cheeseshop_services, project, status):
    await projects.set_status(cheeseshop_services, "hello-world", status)
    assert (await document(cheeseshop_client, "/pypi/hello-world/json"))["info"]["version"] == "2.0"


# -- headers ----------------------------------------------------------------------------------


async def test_headers(cheeseshop_client, cheeseshop_services, project):
    serial = await last_serial(cheeseshop_services, "hello-world")
    for path in ("/pypi/hello-world/json", "/pypi/hello-world/1.0/json"):
        response = await get(cheeseshop_client, path)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["X-PyPI-Last-Serial"] == str(serial)
        assert (await response.get_json())["last_serial"] == serial
        assert response.headers["Cache-Control"] == "max-age=900, public"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Expose-Headers"] == "X-PyPI-Last-Serial"
        assert response.headers["ETag"]


async def test_serial_follows_uploads(cheeseshop_client, cheeseshop_services, project, upload):
    before = await get(cheeseshop_client, "/pypi/hello-world/json")
    await uploaded(upload, build_sdist("hello-world", "2.0"))
    after = await get(cheeseshop_client, "/pypi/hello-world/json")
    serial = await last_serial(cheeseshop_services, "hello-world")
    previous = int(before.headers["X-PyPI-Last-Serial"])
    assert int(after.headers["X-PyPI-Last-Serial"]) == serial == previous + 1
    assert (await after.get_json())["last_serial"] == serial
    assert after.headers["ETag"] != before.headers["ETag"]


async def test_etag_and_304(cheeseshop_client, project):
    for path in ("/pypi/hello-world/json", "/pypi/hello-world/1.0/json"):
        etag = (await get(cheeseshop_client, path)).headers["ETag"]
        again = await get(cheeseshop_client, path, **{"If-None-Match": etag})
        assert again.status_code == 304
        assert await again.get_data() == b""
        other = await get(cheeseshop_client, path, **{"If-None-Match": '"something-else"'})
        assert other.status_code == 200


async def test_head(cheeseshop_client, project):
    get_response = await get(cheeseshop_client, "/pypi/hello-world/json")
    head = await cheeseshop_client.head("/pypi/hello-world/json")
    # The body itself is dropped by the ASGI server (hypercorn), not by the application.
    assert head.status_code == 200
    for name in ("Content-Type", "ETag", "X-PyPI-Last-Serial"):
        assert head.headers[name] == get_response.headers[name]


class TestBaseUrl:
    """With ``base_url`` set, every URL in the document starts with it."""

    @pytest.fixture
    def cheeseshop_settings_overrides(self) -> dict[str, Any]:
        return {"base_url": "https://index.example/mirror/"}

    async def test_urls_use_base_url(self, cheeseshop_client, project):
        data = await document(cheeseshop_client, "/pypi/hello-world/json")
        assert data["info"]["project_url"] == "https://index.example/mirror/project/hello-world/"
        assert data["info"]["package_url"] == data["info"]["project_url"]
        assert data["info"]["release_url"] == f"{data['info']['project_url']}2.0/"
        for entry in data["urls"]:
            assert entry["url"].startswith("https://index.example/mirror/packages/")
            assert entry["url"].endswith("/" + entry["filename"])


class TestFilesUrl:
    """With ``files_url`` (a CDN) set, both APIs link files there, under /packages/."""

    @pytest.fixture
    def cheeseshop_settings_overrides(self) -> dict[str, Any]:
        return {"files_url": "https://files.example.com/packages/"}

    async def test_file_urls_use_files_url(self, cheeseshop_client, project):
        data = await document(cheeseshop_client, "/pypi/hello-world/json")
        simple = await cheeseshop_client.get(
            "/simple/hello-world/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        urls = [entry["url"] for entry in data["urls"]]
        urls += [entry["url"] for entry in (await simple.get_json())["files"]]
        assert urls
        for url in urls:
            assert url.startswith("https://files.example.com/packages/")
            # bandersnatch takes the path as the file's place in its mirror
            assert urlsplit(url).path.startswith("/packages/")
            assert "/packages/packages/" not in url
