"""The JSON API documents, rendered from plain view data (no database, no request)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cheeseshop.jsonapi.render import (
    FileView,
    ProjectView,
    ReleaseView,
    RoleView,
    latest,
    project_json,
    release_json,
)

UPLOADED = datetime(2024, 11, 6, 22, 37, 9, 220617, tzinfo=UTC)
PROJECT = ProjectView(
    name="Sample.Project",
    page_url="https://index.example/project/Sample.Project/",
    last_serial=42,
    roles=(RoleView("Owner", "alice"),),
)


def file(filename: str, **changes: Any) -> FileView:
    values: dict[str, Any] = dict(
        filename=filename,
        url=f"https://index.example/packages/ab/cd/ef/{filename}",
        packagetype="bdist_wheel" if filename.endswith(".whl") else "sdist",
        python_version="py3" if filename.endswith(".whl") else "source",
        requires_python=">=3.9",
        size=4661,
        md5_digest="d3857a217dacbca9e40a85f06f2b34f1",
        sha256_digest="c23e447ea90d796d1e645c35c4b2de125040add12a845825546f91c93f391b6b",
        blake2b_256_digest="d773c16e5f3f0d37c60947e70865c255a58dc408780a6474de0523afd0ec553a",
        upload_time=UPLOADED,
        yanked=False,
        yanked_reason=None,
        metadata_sha256="a1d0c6e83f027327d8461063f4ac58a6e4a7a5d0a0e0d5b6c3b2e1f0a9b8c7d6",
    )
    values.update(changes)
    return FileView(**values)


def release(version: str, *files: FileView, **changes: Any) -> ReleaseView:
    return ReleaseView(
        version=version, page_url=f"{PROJECT.page_url}{version}/", files=files, **changes
    )


def versions(*specs: str) -> list[ReleaseView]:
    """Releases from "1.0", "2.0b1", "3.0!" (a trailing ! marks a yanked one)."""
    return [release(spec.rstrip("!"), yanked=spec.endswith("!")) for spec in specs]


def decoded(body: bytes) -> dict[str, Any]:
    assert isinstance(body, bytes)
    return json.loads(body)


FULL = release(
    "4.0.0",
    file("sample_project-4.0.0.tar.gz", metadata_sha256=None),
    file("sample_project-4.0.0-py3-none-any.whl"),
    summary="A sample Python project",
    description="# Sample\n",
    description_content_type="text/markdown",
    author="A. Random Developer",
    author_email="author@example.com",
    maintainer="A. Great Maintainer",
    maintainer_email="maintainer@example.com",
    license_expression="MIT",
    license_files=("LICENSE.txt",),
    keywords="sample, setuptools, development",
    classifiers=("Development Status :: 3 - Alpha", "Programming Language :: Python :: 3"),
    platforms=("Linux", "Windows"),
    home_page="https://github.com/pypa/sampleproject",
    download_url="https://example.com/download",
    project_urls=(("Bug Reports", "https://github.com/pypa/sampleproject/issues"),),
    requires_dist=("peppercorn", "coverage; extra == 'test'"),
    requires_python=">=3.9",
    provides_extra=("test",),
    dynamic=("license-file",),
)

INFO_KEYS = [
    "author",
    "author_email",
    "bugtrack_url",
    "classifiers",
    "description",
    "description_content_type",
    "docs_url",
    "download_url",
    "downloads",
    "dynamic",
    "home_page",
    "keywords",
    "license",
    "license_expression",
    "license_files",
    "maintainer",
    "maintainer_email",
    "name",
    "package_url",
    "platform",
    "project_url",
    "project_urls",
    "provides_extra",
    "release_url",
    "requires_dist",
    "requires_python",
    "summary",
    "version",
    "yanked",
    "yanked_reason",
]
FILE_KEYS = [
    "comment_text",
    "core-metadata",
    "digests",
    "downloads",
    "filename",
    "has_sig",
    "md5_digest",
    "packagetype",
    "python_version",
    "requires_python",
    "size",
    "upload_time",
    "upload_time_iso_8601",
    "url",
    "yanked",
    "yanked_reason",
]


# -- latest ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["1.0", "2.0", "1.5"], "2.0"),
        # Final beats a higher pre-release; a dev release counts as a pre-release.
        (["1.0", "2.0b1", "3.0.dev0", "2.0rc1"], "1.0"),
        # Post-releases are final.
        (["1.0", "1.0.post1", "1.1a1"], "1.0.post1"),
        # Only pre-releases: the newest of them.
        (["1.0a1", "1.0b2", "1.0b10"], "1.0b10"),
        # A yanked final loses to an older final, and to a non-yanked pre-release.
        (["1.0", "2.0!"], "1.0"),
        (["1.0!", "2.0b1"], "2.0b1"),
        # Versions compare as versions, not as text.
        (["1.9", "1.10"], "1.10"),
        # Everything yanked: the newest, pre-release or not (PyPI would show 2.0).
        (["1.0!", "2.0!", "3.0b1!"], "3.0b1"),
        (["1.0!", "2.0!", "1.5b1!"], "2.0"),
        (["1.0a1!", "1.0a2!"], "1.0a2"),
    ],
)
def test_latest(specs, expected):
    chosen = latest(versions(*specs))
    assert chosen is not None
    assert chosen.version == expected


def test_latest_of_nothing_is_none():
    assert latest([]) is None


def test_project_json_without_releases_is_refused():
    with pytest.raises(ValueError, match="no release"):
        project_json(PROJECT, [])


# -- document shape -----------------------------------------------------------------------


def test_top_level_keys():
    project = decoded(project_json(PROJECT, [FULL]))
    assert list(project) == [
        "info",
        "last_serial",
        "ownership",
        "releases",
        "urls",
        "vulnerabilities",
    ]
    assert project["last_serial"] == 42
    assert project["vulnerabilities"] == []
    one = decoded(release_json(PROJECT, FULL))
    assert list(one) == ["info", "last_serial", "ownership", "urls", "vulnerabilities"]


def test_keys_in_pypis_order():
    # pypi.org sorts keys; emitting them in that order makes our bytes read like PyPI's.
    document = decoded(project_json(PROJECT, [FULL]))
    assert list(document["info"]) == INFO_KEYS
    assert list(document["info"]["downloads"]) == ["last_day", "last_month", "last_week"]
    for entry in document["urls"]:
        assert list(entry) == FILE_KEYS
        assert list(entry["digests"]) == ["blake2b_256", "md5", "sha256"]
    assert list(document["ownership"]) == ["organization", "roles"]


def test_info_of_full_release():
    info = decoded(release_json(PROJECT, FULL))["info"]
    assert info == {
        "author": "A. Random Developer",
        "author_email": "author@example.com",
        "bugtrack_url": None,
        "classifiers": ["Development Status :: 3 - Alpha", "Programming Language :: Python :: 3"],
        "description": "# Sample\n",
        "description_content_type": "text/markdown",
        "docs_url": None,
        "download_url": "https://example.com/download",
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "dynamic": ["license-file"],
        "home_page": "https://github.com/pypa/sampleproject",
        "keywords": "sample, setuptools, development",
        "license": None,
        "license_expression": "MIT",
        "license_files": ["LICENSE.txt"],
        "maintainer": "A. Great Maintainer",
        "maintainer_email": "maintainer@example.com",
        "name": "Sample.Project",
        "package_url": "https://index.example/project/Sample.Project/",
        "platform": "Linux",
        "project_url": "https://index.example/project/Sample.Project/",
        "project_urls": {
            "Homepage": "https://github.com/pypa/sampleproject",
            "Download": "https://example.com/download",
            "Bug Reports": "https://github.com/pypa/sampleproject/issues",
        },
        "provides_extra": ["test"],
        "release_url": "https://index.example/project/Sample.Project/4.0.0/",
        "requires_dist": ["peppercorn", "coverage; extra == 'test'"],
        "requires_python": ">=3.9",
        "summary": "A sample Python project",
        "version": "4.0.0",
        "yanked": False,
        "yanked_reason": None,
    }


def test_empty_fields_null_or_empty_list_as_on_pypi():
    info = decoded(release_json(PROJECT, release("1.0")))["info"]
    # PyPI: classifiers is always a list; these others are null when there are none.
    assert info["classifiers"] == []
    for key in ("requires_dist", "provides_extra", "dynamic", "license_files", "project_urls"):
        assert info[key] is None, key
    for key in ("summary", "description", "author", "home_page", "platform", "keywords"):
        assert info[key] is None, key
    assert info["docs_url"] is None and info["bugtrack_url"] is None


def test_file_entry():
    wheel, sdist = FULL.files[1], FULL.files[0]
    urls = decoded(release_json(PROJECT, FULL))["urls"]
    assert [entry["filename"] for entry in urls] == sorted([wheel.filename, sdist.filename])
    entry = next(e for e in urls if e["filename"] == wheel.filename)
    assert entry == {
        "comment_text": "",
        "core-metadata": {"sha256": wheel.metadata_sha256},
        "digests": {
            "blake2b_256": wheel.blake2b_256_digest,
            "md5": wheel.md5_digest,
            "sha256": wheel.sha256_digest,
        },
        "downloads": -1,
        "filename": wheel.filename,
        "has_sig": False,
        "md5_digest": wheel.md5_digest,
        "packagetype": "bdist_wheel",
        "python_version": "py3",
        "requires_python": ">=3.9",
        "size": 4661,
        "upload_time": "2024-11-06T22:37:09",
        "upload_time_iso_8601": "2024-11-06T22:37:09.220617Z",
        "url": wheel.url,
        "yanked": False,
        "yanked_reason": None,
    }
    assert next(e for e in urls if e["filename"] == sdist.filename)["core-metadata"] is False


def test_upload_time_keeps_zero_microseconds():
    on_the_second = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    shown = release("1.0", file("x-1.0.tar.gz", upload_time=on_the_second))
    entry = decoded(release_json(PROJECT, shown))
    assert entry["urls"][0]["upload_time"] == "2025-01-02T03:04:05"
    assert entry["urls"][0]["upload_time_iso_8601"] == "2025-01-02T03:04:05.000000Z"


def test_yanked_file_and_release():
    yanked = release(
        "1.0",
        file("x-1.0.tar.gz", yanked=True, yanked_reason="broken build"),
        yanked=True,
        yanked_reason="broken build",
    )
    document = decoded(release_json(PROJECT, yanked))
    assert document["info"]["yanked"] is True
    assert document["info"]["yanked_reason"] == "broken build"
    assert document["urls"][0]["yanked"] is True
    assert document["urls"][0]["yanked_reason"] == "broken build"


def test_empty_yanked_reason_is_null():
    yanked = release(
        "1.0", file("x-1.0.tar.gz", yanked=True, yanked_reason=""), yanked=True, yanked_reason=""
    )
    document = decoded(release_json(PROJECT, yanked))
    assert document["info"]["yanked_reason"] is None
    assert document["urls"][0]["yanked_reason"] is None


def test_empty_requires_python_is_null():
    entry = decoded(release_json(PROJECT, release("1.0", file("x-1.0.tar.gz", requires_python=""))))
    assert entry["urls"][0]["requires_python"] is None


# -- project_urls -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("home_page", "download_url", "project_urls", "expected"),
    [
        (None, None, (), None),
        ("https://h.example", None, (), {"Homepage": "https://h.example"}),
        (None, "https://d.example", (), {"Download": "https://d.example"}),
        # A Project-URL repeating the Home-page or Download-URL is not listed twice...
        (
            "https://h.example",
            "https://d.example",
            (("Home-Page", "https://h.example"), ("download_url", "https://d.example")),
            {"Homepage": "https://h.example", "Download": "https://d.example"},
        ),
        # ... but a different URL under such a label is kept.
        (
            "https://h.example",
            None,
            (("homepage", "https://other.example"), ("Source", "https://s.example")),
            {
                "Homepage": "https://h.example",
                "homepage": "https://other.example",
                "Source": "https://s.example",
            },
        ),
    ],
)
def test_project_urls(home_page, download_url, project_urls, expected):
    shown = release(
        "1.0", home_page=home_page, download_url=download_url, project_urls=project_urls
    )
    info = decoded(release_json(PROJECT, shown))["info"]
    assert info["project_urls"] == expected
    if expected:
        assert list(info["project_urls"]) == list(expected)


# -- releases, urls, ownership ------------------------------------------------------------


def test_releases_every_version_in_version_order():
    one = release("1.0", file("x-1.0.tar.gz"), file("x-1.0-py3-none-any.whl"))
    empty = release("1.5")
    ten = release("10.0", file("x-10.0.tar.gz"))
    nine = release("9.0", file("x-9.0.tar.gz"))
    document = decoded(project_json(PROJECT, [ten, one, empty, nine]))
    assert list(document["releases"]) == ["1.0", "1.5", "9.0", "10.0"]
    assert document["releases"]["1.5"] == []
    assert [f["filename"] for f in document["releases"]["1.0"]] == [
        "x-1.0-py3-none-any.whl",
        "x-1.0.tar.gz",
    ]
    assert document["info"]["version"] == "10.0"
    assert document["urls"] == document["releases"]["10.0"]


def test_latest_without_files_shows_empty_urls():
    # PyPI does not skip a release without files when choosing the latest.
    releases = [release("1.0", file("x-1.0.tar.gz")), release("2.0")]
    document = decoded(project_json(PROJECT, releases))
    assert document["info"]["version"] == "2.0"
    assert document["urls"] == []


def test_release_json_describes_the_given_release():
    older = release("1.0", file("x-1.0.tar.gz"), summary="old")
    document = decoded(release_json(PROJECT, older))
    assert document["info"]["version"] == "1.0"
    assert document["info"]["summary"] == "old"
    assert document["info"]["release_url"] == f"{PROJECT.page_url}1.0/"
    assert [f["filename"] for f in document["urls"]] == ["x-1.0.tar.gz"]


def test_ownership_owners_first_then_by_username():
    project = dataclasses.replace(
        PROJECT,
        roles=(
            RoleView("Maintainer", "zed"),
            RoleView("Owner", "mallory"),
            RoleView("Maintainer", "bob"),
            RoleView("Owner", "alice"),
        ),
    )
    ownership = decoded(release_json(project, release("1.0")))["ownership"]
    assert ownership == {
        "organization": None,
        "roles": [
            {"role": "Owner", "user": "alice"},
            {"role": "Owner", "user": "mallory"},
            {"role": "Maintainer", "user": "bob"},
            {"role": "Maintainer", "user": "zed"},
        ],
    }


def test_ownership_without_roles():
    project = dataclasses.replace(PROJECT, roles=())
    assert decoded(release_json(project, release("1.0")))["ownership"] == {
        "organization": None,
        "roles": [],
    }


def test_compact_serialization():
    body = project_json(PROJECT, [FULL])
    # Re-serializing compactly (key order kept by json.loads) gives the very same bytes.
    assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert b'"info":{"author":"A. Random Developer",' in body
