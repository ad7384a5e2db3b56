"""Install, download and resolve through the index with real pip and uv.

Each database gets one server (see ``conftest.py``) and one user, erin, with a token made
with the CLI. ``catalogue`` uploads, with one ``twine upload``, every project the tests
read; each test reads projects of its own (all named ``Read-*``), and a test that changes
one (yanks a release, sets a status) changes only its own, so no test depends on another
having run first, or sees what another one did.

Yanking and project status are set with the server's CLI (``cheeseshop yank``,
``cheeseshop unyank``, ``cheeseshop project status``), as an operator would.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from cheeseshop.testing.dists import Dist, build_sdist, build_wheel

pytestmark = pytest.mark.e2e

#: How long the server may take to write an access-log line after answering.
LOG_TIMEOUT = 5.0
#: Between noting the cutoff and uploading the next release.
DATED_GAP = 1.0
UPLOAD_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
META_SUMMARY = "Resolved from its metadata file alone."
YANK_REASON = "Broken build: use 1.0 until 2.0.1 is out"
QUARANTINE_REASON = "Suspected malware, under review"
PRINT_VERSIONS = "import {names}; print(' '.join(m.VERSION for m in ({names},)))"
#: One request in hypercorn's access log: ``... "GET /path 1.1" 200 ...``.
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) (?:HTTP/)?[\d.]+" (?P<status>\d{3}) ')

#: An in-tree PEP 517 backend that needs nothing installed. pip asks an sdist's backend for
#: its metadata even just to download it, and the setuptools that :func:`build_sdist`'s
#: archives name is on no index a test may reach.
_BACKEND = b'''"""Metadata from PKG-INFO; this sdist is only ever downloaded, never built."""

import os
import shutil


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    os.mkdir(os.path.join(metadata_directory, DIST_INFO))
    shutil.copyfile("PKG-INFO", os.path.join(metadata_directory, DIST_INFO, "METADATA"))
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("not built in these tests")
'''
_PYPROJECT = b"""[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
"""


def _sdist_with_backend(name: str, version: str) -> Dist:
    """:func:`build_sdist`'s archive, its ``pyproject.toml`` naming :data:`_BACKEND` instead."""
    built = build_sdist(name, version)
    stem = built.filename.removesuffix(".tar.gz")
    backend = _BACKEND.replace(b"DIST_INFO", repr(f"{stem}.dist-info").encode())
    replaced = {f"{stem}/pyproject.toml": _PYPROJECT, f"{stem}/backend.py": backend}
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(built.content), mode="r:gz") as source,
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for member in source.getmembers():
            if member.name not in replaced:
                archive.addfile(member, source.extractfile(member) if member.isfile() else None)
        for path, data in replaced.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return dataclasses.replace(built, content=buffer.getvalue())


def _wheels(name: str, *versions: str) -> dict[str, Dist]:
    return {version: build_wheel(name, version) for version in versions}


#: Every project the tests read, by name: {version: [dists]}. Built once, uploaded per server.
CATALOGUE: dict[str, dict[str, list[Dist]]] = {
    # The dependency's newest release is excluded by the requirement, given unnormalized.
    "Read-Base": {v: [d] for v, d in _wheels("Read-Base", "1.0", "2.0").items()},
    "Read-App": {"1.0": [build_wheel("Read-App", "1.0", requires_dist=["Read_Base<2"])]},
    "Read-Source": {
        "1.0": [build_wheel("Read-Source", "1.0"), _sdist_with_backend("Read-Source", "1.0")]
    },
    "Read-Meta": {
        "1.0": [build_wheel("Read-Meta", "1.0", summary=META_SUMMARY, requires_python=">=3.8")]
    },
    # Only 1.0 here: ``dated`` uploads 2.0 a moment later.
    "Read-Dated": {"1.0": [build_wheel("Read-Dated", "1.0")]},
    "Read-Yanked": {v: [d] for v, d in _wheels("Read-Yanked", "1.0", "2.0").items()},
    "Read-Unyanked": {v: [d] for v, d in _wheels("Read-Unyanked", "1.0", "2.0").items()},
    "Read-Quarantined": {"1.0": [build_wheel("Read-Quarantined", "1.0")]},
    "Read-Archived": {"1.0": [build_wheel("Read-Archived", "1.0")]},
    "Read-Deleted": {v: [d] for v, d in _wheels("Read-Deleted", "1.0", "2.0").items()},
}
DATED_LATER = build_wheel("Read-Dated", "2.0")


def _dist(project: str, version: str, *, sdist: bool = False) -> Dist:
    [dist] = [d for d in CATALOGUE[project][version] if d.filename.endswith(".tar.gz") == sdist]
    return dist


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token(server: Any) -> str:
    """erin's API token, both made with the CLI."""
    return server.user_token("erin")


def _upload(server: Any, clients: Any, token: str, directory: Path, dists: list[Dist]) -> None:
    uploaded = clients.twine_upload(token, [dist.write(directory) for dist in dists])
    assert uploaded.returncode == 0, f"{uploaded}{server.output()}"


@pytest.fixture(scope="module")
def catalogue(
    server: Any, clients: Any, token: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Every file of :data:`CATALOGUE`, uploaded with one ``twine upload``; their directory."""
    directory = tmp_path_factory.mktemp("catalogue")
    dists = [d for releases in CATALOGUE.values() for ds in releases.values() for d in ds]
    _upload(server, clients, token, directory, dists)
    return directory


@pytest.fixture(scope="module")
def dated(server: Any, clients: Any, token: str, catalogue: Path) -> datetime:
    """A moment noted after Read-Dated 1.0 was uploaded; 2.0 is uploaded a second after it."""
    cutoff = datetime.now(UTC)
    time.sleep(DATED_GAP)
    _upload(server, clients, token, catalogue, [DATED_LATER])
    return cutoff


@pytest.fixture(scope="module")
def yanked(server: Any, catalogue: Path) -> None:
    """Read-Yanked 2.0 yanked for YANK_REASON (1.0 is not)."""
    _cli(server, "yank", "read-yanked", "2.0", "--reason", YANK_REASON)
    entry = _file_entry(server, "read-yanked", _dist("Read-Yanked", "2.0").filename)
    assert entry["yanked"] == YANK_REASON, entry


# -- helpers -----------------------------------------------------------------------------------


def _cli(server: Any, *args: str) -> None:
    """``cheeseshop ARGS`` against the server's database, asserting that it worked.

    A change made by the CLI (another process) reaches the server's page cache when the
    server next reads the journal (``page_cache_poll_seconds``, 0.5 s by default): wait,
    bounded, until the project's page and the root index both show the change's serial,
    as a client retrying would. (Either one alone may be a cache miss, rendered fresh while
    the other is still the page from before.)
    """
    done = server.cli(*args)
    assert done.returncode == 0, f"{done}{server.output()}"
    reported = re.search(r"done \(serial (\d+)\)", done.stderr)
    if reported is None:
        return
    serial = int(reported.group(1))
    project = args[2] if args[0] == "project" else args[1]
    deadline = time.monotonic() + 10
    for page in (f"/simple/{project}/", "/simple/"):
        while server.simple_json(page)["meta"]["_last-serial"] < serial:
            assert time.monotonic() < deadline, f"{page} never showed serial {serial}"
            time.sleep(0.05)


def _import_versions(clients: Any, target: Path, *modules: str) -> list[str]:
    """``VERSION`` of each module as installed in ``target``, read by a fresh interpreter."""
    names = ", ".join(modules)
    imported = clients.python(PRINT_VERSIONS.format(names=names), path=target)
    assert imported.returncode == 0, imported
    return imported.stdout.split()


def _dist_infos(target: Path) -> list[str]:
    if not target.exists():
        return []
    return sorted(path.name for path in target.iterdir() if path.name.endswith(".dist-info"))


def _files_in(directory: Path) -> dict[str, str]:
    """{file name: sha256} of what a client downloaded into ``directory``."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in directory.iterdir()
    }


def _pins(compiled: str) -> dict[str, str]:
    """{name: version} of the ``name==version`` lines of a compiled requirements file."""
    pins = {}
    for line in compiled.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            pins[name.strip()] = version.strip()
    return pins


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _requests(server: Any) -> list[tuple[str, str, str]]:
    """(method, path, status) of every request in the server's access log so far."""
    text = server.log.read_text(errors="replace")
    return [match.group("method", "path", "status") for match in ACCESS_LINE.finditer(text)]


def _wait_for_request(server: Any, method: str, path: str) -> list[tuple[str, str, str]]:
    """The access log once it shows ``method path`` (bounded: it is written after the answer)."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        requests = _requests(server)
        if any(r[:2] == (method, path) for r in requests) or time.monotonic() > deadline:
            return requests
        time.sleep(0.1)


def _file_entry(server: Any, normalized: str, filename: str) -> dict[str, Any]:
    """A file's entry on its project's Simple API page (JSON)."""
    project = server.simple_json(f"/simple/{normalized}/")
    by_name = {f["filename"]: f for f in project["files"]}
    assert filename in by_name, project
    return by_name[filename]


def _upload_time(server: Any, normalized: str, filename: str) -> datetime:
    text = _file_entry(server, normalized, filename)["upload-time"]
    return datetime.strptime(text, UPLOAD_TIME).replace(tzinfo=UTC)


def _root_names(server: Any) -> set[str]:
    """The normalized names of the projects the Simple API's root (JSON) lists."""
    return {canonicalize_name(p["name"]) for p in server.simple_json("/simple/")["projects"]}


# -- dependencies ------------------------------------------------------------------------------


def test_pip_installs_a_project_with_its_dependency(server, clients, catalogue, tmp_path):
    target = tmp_path / "target"

    installed = clients.pip_install(target, "read-app")

    assert installed.returncode == 0, f"{installed}{server.output()}"
    # Read-Base 2.0 is newer, but Read-App requires Read_Base<2.
    assert _dist_infos(target) == ["read_app-1.0.dist-info", "read_base-1.0.dist-info"], installed
    assert _import_versions(clients, target, "read_app", "read_base") == ["1.0", "1.0"]


def test_uv_compiles_and_installs_a_project_with_its_dependency(
    server, clients, catalogue, tmp_path
):
    requirements_in = tmp_path / "requirements.in"
    requirements_in.write_text("read-app\n")
    requirements_txt = tmp_path / "requirements.txt"

    compiled = clients.uv_pip("compile", requirements_in, "--output-file", requirements_txt)

    assert compiled.returncode == 0, f"{compiled}{server.output()}"
    assert _pins(requirements_txt.read_text()) == {"read-app": "1.0", "read-base": "1.0"}, compiled
    target = tmp_path / "target"
    installed = clients.uv_install(target, "--requirement", str(requirements_txt))
    assert installed.returncode == 0, f"{installed}{server.output()}"
    assert _dist_infos(target) == ["read_app-1.0.dist-info", "read_base-1.0.dist-info"], installed
    assert _import_versions(clients, target, "read_app", "read_base") == ["1.0", "1.0"]


# -- what pip fetches --------------------------------------------------------------------------


def test_pip_download_no_binary_gets_the_uploaded_sdist(server, clients, catalogue, tmp_path):
    sdist = _dist("Read-Source", "1.0", sdist=True)
    dest = tmp_path / "dest"

    downloaded = clients.pip(
        "download", "--no-binary", ":all:", "--no-deps", "--dest", dest, "read-source"
    )

    assert downloaded.returncode == 0, f"{downloaded}{server.output()}"
    assert _files_in(dest) == {sdist.filename: sdist.sha256}, downloaded


def test_pip_resolves_from_pep658_metadata_without_the_wheel(server, clients, catalogue, tmp_path):
    wheel = _dist("Read-Meta", "1.0")
    entry = _file_entry(server, "read-meta", wheel.filename)
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(wheel.metadata).hexdigest()}, entry
    wheel_path = entry["url"].removeprefix(server.url)
    report_path = tmp_path / "report.json"

    resolved = clients.pip(
        "install", "--dry-run", "--ignore-installed", "--report", report_path, "read-meta"
    )

    assert resolved.returncode == 0, f"{resolved}{server.output()}"
    [item] = json.loads(report_path.read_text())["install"]
    metadata = item["metadata"]
    assert (metadata["name"], metadata["version"]) == ("Read-Meta", "1.0"), item
    assert (metadata["summary"], metadata["requires_python"]) == (META_SUMMARY, ">=3.8"), item
    assert item["download_info"]["url"] == entry["url"], item
    assert item["download_info"]["archive_info"]["hashes"] == {"sha256": wheel.sha256}, item
    # pip fetched the metadata file the page advertised, and never the wheel itself.
    requests = _wait_for_request(server, "GET", wheel_path + ".metadata")
    fetched = [r for r in requests if r[1] in (wheel_path, wheel_path + ".metadata")]
    assert fetched == [("GET", wheel_path + ".metadata", "200")], requests


# -- upload times ------------------------------------------------------------------------------


def test_pip_download_uploaded_prior_to_picks_the_release_before(server, clients, dated, tmp_path):
    earlier, later = _dist("Read-Dated", "1.0"), DATED_LATER
    # upload-time is in UTC: the moment noted between the two uploads lies between them.
    first = _upload_time(server, "read-dated", earlier.filename)
    second = _upload_time(server, "read-dated", later.filename)
    assert first < dated < second, (first, dated, second)
    before, latest = tmp_path / "before", tmp_path / "latest"

    cut = clients.pip(
        "download", "--no-deps", "--dest", before,
        "--uploaded-prior-to", dated.strftime(UPLOAD_TIME), "read-dated",
    )  # fmt: skip
    uncut = clients.pip("download", "--no-deps", "--dest", latest, "read-dated")

    assert cut.returncode == 0, f"{cut}{server.output()}"
    assert _files_in(before) == {earlier.filename: earlier.sha256}, cut
    assert uncut.returncode == 0, f"{uncut}{server.output()}"
    assert _files_in(latest) == {later.filename: later.sha256}, uncut


def test_uv_compile_exclude_newer_picks_the_release_before(server, clients, dated, tmp_path):
    requirements_in = tmp_path / "requirements.in"
    requirements_in.write_text("read-dated\n")

    cut = clients.uv_pip("compile", requirements_in, "--exclude-newer", dated.strftime(UPLOAD_TIME))
    uncut = clients.uv_pip("compile", requirements_in)

    assert cut.returncode == 0, f"{cut}{server.output()}"
    assert _pins(cut.stdout) == {"read-dated": "1.0"}, cut
    assert uncut.returncode == 0, f"{uncut}{server.output()}"
    assert _pins(uncut.stdout) == {"read-dated": "2.0"}, uncut


# -- yanked releases (PEP 592) -----------------------------------------------------------------


def test_pip_skips_a_yanked_release_unless_pinned(server, clients, yanked, tmp_path):
    unpinned, pinned = tmp_path / "unpinned", tmp_path / "pinned"

    latest = clients.pip_install(unpinned, "read-yanked")
    exact = clients.pip_install(pinned, "read-yanked==2.0")

    assert latest.returncode == 0, f"{latest}{server.output()}"
    assert _import_versions(clients, unpinned, "read_yanked") == ["1.0"], latest
    assert exact.returncode == 0, f"{exact}{server.output()}"
    assert _import_versions(clients, pinned, "read_yanked") == ["2.0"], exact
    warning = _one_line(exact.output)
    assert "is a yanked version" in warning, exact
    assert f"Reason for being yanked: {YANK_REASON}" in warning, exact


def test_uv_skips_a_yanked_release_unless_pinned(server, clients, yanked, tmp_path):
    unpinned, pinned = tmp_path / "unpinned", tmp_path / "pinned"

    latest = clients.uv_install(unpinned, "read-yanked")
    exact = clients.uv_install(pinned, "read-yanked==2.0")

    assert latest.returncode == 0, f"{latest}{server.output()}"
    assert _import_versions(clients, unpinned, "read_yanked") == ["1.0"], latest
    assert exact.returncode == 0, f"{exact}{server.output()}"
    assert _import_versions(clients, pinned, "read_yanked") == ["2.0"], exact
    warning = _one_line(exact.output)
    assert f'`read-yanked==2.0` is yanked (reason: "{YANK_REASON}")' in warning, exact


def test_an_unyanked_release_is_chosen_again(server, clients, catalogue, tmp_path):
    _cli(server, "yank", "read-unyanked", "2.0")
    while_yanked = clients.uv_install(tmp_path / "yanked", "read-unyanked")
    assert while_yanked.returncode == 0, f"{while_yanked}{server.output()}"
    assert _import_versions(clients, tmp_path / "yanked", "read_unyanked") == ["1.0"]

    _cli(server, "unyank", "read-unyanked", "2.0")
    again = clients.uv_install(tmp_path / "unyanked", "read-unyanked")

    assert again.returncode == 0, f"{again}{server.output()}"
    assert _import_versions(clients, tmp_path / "unyanked", "read_unyanked") == ["2.0"], again
    assert "is yanked" not in again.output, again
    entry = _file_entry(server, "read-unyanked", _dist("Read-Unyanked", "2.0").filename)
    assert entry["yanked"] is False, entry


# -- project status (PEP 792) ------------------------------------------------------------------


def test_a_quarantined_project_cannot_be_installed(server, clients, catalogue, tmp_path):
    assert "read-quarantined" in _root_names(server)

    _cli(
        server, "project", "status", "read-quarantined", "quarantined",
        "--reason", QUARANTINE_REASON,
    )  # fmt: skip
    refused = clients.pip_install(tmp_path / "target", "read-quarantined")

    assert refused.returncode != 0, refused
    message = _one_line(refused.output)
    assert "(from versions: none)" in message, refused
    assert "No matching distribution found for read-quarantined" in message, refused
    assert _dist_infos(tmp_path / "target") == [], refused
    page = server.simple_json("/simple/read-quarantined/")
    assert page["files"] == [], page
    assert page["project-status"] == {"status": "quarantined", "reason": QUARANTINE_REASON}, page
    assert "read-quarantined" not in _root_names(server)


def test_a_deleted_release_is_gone_for_installers_and_never_uploaded_again(
    server, clients, token, catalogue, tmp_path
):
    _cli(server, "delete", "read-deleted", "2.0", "--yes")
    latest = clients.uv_install(tmp_path / "latest", "read-deleted")
    pinned = clients.pip_install(tmp_path / "pinned", "read-deleted==2.0")
    again = clients.twine_upload(token, [catalogue / _dist("Read-Deleted", "2.0").filename])

    assert latest.returncode == 0, f"{latest}{server.output()}"
    assert _import_versions(clients, tmp_path / "latest", "read_deleted") == ["1.0"], latest
    assert pinned.returncode != 0 and "read-deleted==2.0" in pinned.output, pinned
    # twine shows the server's reason: the filename stays taken for good.
    assert again.returncode != 0, again
    assert "This filename has already been used" in again.output, again


def test_an_archived_project_is_still_installable(server, clients, catalogue, tmp_path):
    _cli(server, "project", "status", "read-archived", "archived")
    installed = clients.pip_install(tmp_path / "target", "read-archived")

    assert installed.returncode == 0, f"{installed}{server.output()}"
    assert _import_versions(clients, tmp_path / "target", "read_archived") == ["1.0"], installed
    assert "read-archived" in _root_names(server)
    page = server.simple_json("/simple/read-archived/")
    assert page["project-status"] == {"status": "archived"}, page
