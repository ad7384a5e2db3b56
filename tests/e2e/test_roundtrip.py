"""Publish with twine and uv, install with pip and uv, against a real server process.

Each database gets one server (see ``conftest.py``) on which ``published`` has made alice
and her token with the CLI, uploaded Round-Trip 1.0 (wheel and sdist) with twine and 1.1
with uv. Every test checks one promise against that state and does itself whatever else it
relies on (the events test re-uploads, for one), so none depends on another having run first.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from cheeseshop.testing.dists import Dist, build_sdist, build_wheel

pytestmark = pytest.mark.e2e

PROJECT = "Round-Trip"
NORMALIZED = "round-trip"
IMPORT_NAME = "round_trip"
VERSIONS = ("1.0", "1.1")
EVENTS_TIMEOUT = 10.0
#: After the expected events arrived, how long to keep watching for ones that must not.
EVENTS_SETTLE = 0.5
PRINT_VERSION = f"import {IMPORT_NAME}; print({IMPORT_NAME}.VERSION)"


def release(version: str, **changes: Any) -> list[Dist]:
    """Round-Trip's wheel and sdist at ``version``; the same arguments give the same bytes."""
    return [
        build_wheel(PROJECT, version, import_name=IMPORT_NAME, **changes),
        build_sdist(PROJECT, version, import_name=IMPORT_NAME, **changes),
    ]


@dataclasses.dataclass(frozen=True)
class Published:
    """alice's token, and each version's wheel and sdist as built and as written to disk."""

    token: str
    dists: dict[str, list[Dist]]
    files: dict[str, list[Path]]

    @property
    def all_dists(self) -> list[Dist]:
        return [dist for version in VERSIONS for dist in self.dists[version]]


@pytest.fixture(scope="module")
def published(server: Any, clients: Any, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """alice and her token made with the CLI; 1.0 uploaded with twine, then 1.1 with uv."""
    token = server.user_token("alice")

    directory = tmp_path_factory.mktemp("dists")
    dists = {version: release(version) for version in VERSIONS}
    files = {version: [dist.write(directory) for dist in dists[version]] for version in VERSIONS}
    uploaded = clients.twine_upload(token, files["1.0"])
    assert uploaded.returncode == 0, f"{uploaded}{server.output()}"
    uploaded = clients.uv_publish(token, files["1.1"])
    assert uploaded.returncode == 0, f"{uploaded}{server.output()}"
    return Published(token=token, dists=dists, files=files)


def _index_state(server: Any) -> dict[str, Any]:
    """What a mirror or installer sees: files, hashes and serials of the Simple API (JSON)."""
    project = server.simple_json(f"/simple/{NORMALIZED}/")
    root = server.simple_json("/simple/")
    return {
        "files": sorted(
            (f["filename"], f["hashes"]["sha256"], f["size"]) for f in project["files"]
        ),
        "versions": project["versions"],
        "project_serial": project["meta"]["_last-serial"],
        "root_serial": root["meta"]["_last-serial"],
        "root_projects": root["projects"],
    }


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- upload and install ----------------------------------------------------------------


def test_uploads_are_listed_with_their_hashes(server, published):
    project = server.simple_json(f"/simple/{NORMALIZED}/")

    listed = {f["filename"]: f["hashes"]["sha256"] for f in project["files"]}
    assert listed == {dist.filename: dist.sha256 for dist in published.all_dists}
    assert project["versions"] == list(VERSIONS)
    # Links point back at this server (taken from the request: no base_url is configured).
    assert all(f["url"].startswith(f"{server.url}/packages/") for f in project["files"]), project
    wheels = [f for f in project["files"] if f["filename"].endswith(".whl")]
    assert all(f["core-metadata"] for f in wheels), wheels


def test_pip_installs_the_release_twine_uploaded(server, clients, published, tmp_path):
    target = tmp_path / "pip-target"

    installed = clients.pip_install(target, f"{NORMALIZED}==1.0")

    assert installed.returncode == 0, f"{installed}{server.output()}"
    installed_names = sorted(p.name for p in target.iterdir())
    assert f"{IMPORT_NAME}-1.0.dist-info" in installed_names, installed_names
    imported = clients.python(PRINT_VERSION, path=target)
    assert imported.returncode == 0, imported
    assert imported.stdout.strip() == "1.0", imported


def test_uv_installs_the_latest_release_uv_uploaded(server, clients, published, tmp_path):
    target = tmp_path / "uv-target"

    installed = clients.uv_install(target, NORMALIZED)

    assert installed.returncode == 0, f"{installed}{server.output()}"
    installed_names = sorted(p.name for p in target.iterdir())
    assert f"{IMPORT_NAME}-1.1.dist-info" in installed_names, installed_names
    imported = clients.python(PRINT_VERSION, path=target)
    assert imported.returncode == 0, imported
    assert imported.stdout.strip() == "1.1", imported


# -- uploading again ---------------------------------------------------------------------


def test_reuploading_the_same_files_succeeds_and_changes_nothing(server, clients, published):
    before = _index_state(server)

    again = clients.twine_upload(published.token, published.files["1.0"])
    assert again.returncode == 0, f"{again}{server.output()}"
    again = clients.uv_publish(published.token, published.files["1.1"])
    assert again.returncode == 0, f"{again}{server.output()}"
    # uv found both files through --check-url, so it did not send them again.
    for path in published.files["1.1"]:
        assert f"{path.name} already exists" in _one_line(again.output), again

    assert _index_state(server) == before


def test_conflicting_upload_is_refused_with_the_reason(server, clients, published, tmp_path):
    before = _index_state(server)
    changed = build_sdist(PROJECT, "1.0", import_name=IMPORT_NAME, summary="changed")
    assert changed.filename == published.dists["1.0"][1].filename
    assert changed.sha256 != published.dists["1.0"][1].sha256

    refused = clients.twine_upload(published.token, [changed.write(tmp_path)])

    assert refused.returncode != 0, refused
    # twine shows the HTTP reason phrase; it must carry the index's message.
    assert "File already exists" in _one_line(refused.output), refused
    assert _index_state(server) == before


# -- plugins -----------------------------------------------------------------------------


def _read_events(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    # Every record ends with a newline; a line still being appended is read on the next pass.
    return [json.loads(line) for line in text.split("\n")[:-1]]


def _wait_for_events(path: Path, filenames: set[str], versions: set[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + EVENTS_TIMEOUT
    while True:
        events = _read_events(path)
        seen_files = {e["filename"] for e in events if e["kind"] == "file_uploaded"}
        seen_versions = {e["version"] for e in events if e["kind"] == "release_published"}
        if seen_files >= filenames and seen_versions >= versions:
            # Anything a re-upload wrongly emitted would be delivered by now too.
            time.sleep(EVENTS_SETTLE)
            return _read_events(path)
        if time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_recorder_receives_each_event_once(server, clients, published):
    # Uploading the same files again must emit nothing, whichever test ran before this one.
    again = clients.twine_upload(published.token, published.files["1.0"])
    assert again.returncode == 0, again
    again = clients.uv_publish(published.token, published.files["1.1"])
    assert again.returncode == 0, again
    expected = {dist.filename: dist for dist in published.all_dists}

    events = _wait_for_events(server.events, set(expected), set(VERSIONS))

    files = [e for e in events if e["kind"] == "file_uploaded"]
    releases = [e for e in events if e["kind"] == "release_published"]
    counts = collections.Counter(e["filename"] for e in files)
    message = f"events: {json.dumps(events, indent=1)}{server.output()}"
    assert dict(counts) == dict.fromkeys(expected, 1), message
    assert sorted(e["version"] for e in releases) == list(VERSIONS), message
    for event in files:
        dist = expected[event["filename"]]
        assert (event["sha256"], event["size"]) == (dist.sha256, len(dist.content)), event
        assert (event["project"], event["normalized_name"]) == (PROJECT, NORMALIZED), event
        assert event["uploaded_by"] == "alice", event
    assert {e["published_by"] for e in releases} == {"alice"}, message


def _enabled_plugins(listing: str) -> dict[str, list[str]]:
    """``cheeseshop plugins`` text output -> {plugin name: [hooks]} of the enabled ones."""
    plugins: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        if line.startswith("Installed plugins"):
            break
        if line.startswith("    - "):
            assert current is not None, listing
            current.append(line.removeprefix("    - ").strip())
        elif line.startswith("  ") and line.strip():
            current = plugins.setdefault(line.split()[0], [])
    return plugins


def test_plugins_command_lists_defaults_and_recorder(server):
    listed = server.cli("plugins")

    assert listed.returncode == 0, listed
    enabled = _enabled_plugins(listed.stdout)
    assert {"local_storage", "embedded_outbox", "recorder"} <= set(enabled), listed
    assert "cheeseshop_file_uploaded" in enabled["recorder"], listed
    assert "cheeseshop_file_storage" in enabled["local_storage"], listed
    assert "cheeseshop_event_dispatcher" in enabled["embedded_outbox"], listed

