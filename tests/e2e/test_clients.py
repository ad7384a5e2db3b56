"""Uploads through more real clients: twine 6.1, uv publish both ways, hatch, and twine 7.

Each database gets one server (see ``conftest.py``) and one user, carol, with a token made
with the CLI. Each client publishes a project of its own, so no test depends on another
having run: where a test needs a release to exist, a module fixture uploads it with that
client first (and checks that it worked).

twine 6.1 and hatch are not in the venv: ``tools`` fetches them from PyPI once a session
with ``uv tool run``, then runs them offline, so that all they talk to is 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from cheeseshop.testing.dists import Dist, build_sdist, build_wheel

pytestmark = pytest.mark.e2e

#: The last twine before 6.2: it sends md5 besides the sha256 and blake2 digests, and its
#: --skip-existing relies on the index answering 400 "File already exists".
OLD_TWINE = "twine==6.1.0"
HATCH = "hatch==1.18.2"
UV = Path(sys.executable).parent / "uv"
ALREADY_EXISTS = "File already exists"


@pytest.fixture(scope="module")
def token(server: Any) -> str:
    """carol's API token, both made with the CLI."""
    return server.user_token("carol")


@dataclasses.dataclass(frozen=True)
class Release:
    """A project's 1.0 wheel and sdist as built and as written to disk, and who uploaded it."""

    project: str
    dists: list[Dist]
    files: list[Path]
    #: The client run that uploaded it first.
    first_upload: Any = None

    @property
    def normalized(self) -> str:
        return self.project.lower()

    @property
    def sdist(self) -> Dist:
        return self.dists[1]

    @property
    def expected(self) -> dict[str, str]:
        """{filename: sha256}, as the Simple API must list this release."""
        return {dist.filename: dist.sha256 for dist in self.dists}

    def conflicting_sdist(self, directory: Path) -> Dist:
        """An sdist with this release's file name but other bytes, written to ``directory``."""
        changed = build_sdist(self.project, "1.0", summary="Other bytes, same name.")
        assert changed.filename == self.sdist.filename
        assert changed.sha256 != self.sdist.sha256
        changed.write(directory)
        return changed


def _release(project: str, directory: Path) -> Release:
    dists = [build_wheel(project, "1.0"), build_sdist(project, "1.0")]
    return Release(project, dists, [dist.write(directory) for dist in dists])


def _listed(server: Any, normalized: str) -> dict[str, str]:
    """{filename: sha256} of a project as the Simple API (JSON) lists it."""
    project = server.simple_json(f"/simple/{normalized}/")
    return {f["filename"]: f["hashes"]["sha256"] for f in project["files"]}


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- twine 6.1: md5 + sha256 + blake2 digests, and --skip-existing -----------------------------


def _old_twine_upload(tools, clients, token: str, files: list[Path], *options: str):
    """``twine upload --verbose`` (6.1) with an API token; verbose shows each answer's status."""
    return tools.run(
        OLD_TWINE, "twine", "--no-color", "upload",
        "--repository-url", clients.server.upload_url,
        "-u", "__token__", "-p", token,
        "--non-interactive", "--disable-progress-bar", "--verbose",
        *options, *files,
        env=clients.env,
    )  # fmt: skip


def _statuses(result, clients) -> list[str]:
    """The status of each upload, from twine's verbose "Response from <url>: <status> ..."."""
    marker = f"Response from {clients.server.upload_url}: "
    return [part.split(" ", 1)[0] for part in _one_line(result.output).split(marker)[1:]]


@pytest.fixture(scope="module")
def old_twine_release(server, clients, tools, token, tmp_path_factory) -> Release:
    """Old-Twine 1.0, uploaded with twine 6.1."""
    release = _release("Old-Twine", tmp_path_factory.mktemp("old-twine"))
    uploaded = _old_twine_upload(tools, clients, token, release.files)
    assert uploaded.returncode == 0, f"{uploaded}{server.output()}"
    return dataclasses.replace(release, first_upload=uploaded)


def test_old_twine_upload_is_answered_200_and_listed(server, clients, old_twine_release):
    first = old_twine_release.first_upload

    assert _statuses(first, clients) == ["200", "200"], first
    assert _listed(server, old_twine_release.normalized) == old_twine_release.expected


def test_old_twine_skip_existing_reuploads_identical_files(
    server, clients, tools, token, old_twine_release
):
    files = old_twine_release.files

    again = _old_twine_upload(tools, clients, token, files, "--skip-existing")

    # The same bytes again are accepted (200, idempotent): there is nothing for twine to skip.
    assert again.returncode == 0, f"{again}{server.output()}"
    assert _statuses(again, clients) == ["200", "200"], again
    assert "Skipping" not in again.output, again
    assert _listed(server, old_twine_release.normalized) == old_twine_release.expected


def test_old_twine_skip_existing_skips_a_conflicting_file(
    server, clients, tools, token, old_twine_release, tmp_path
):
    changed = old_twine_release.conflicting_sdist(tmp_path)
    path = tmp_path / changed.filename

    skipped = _old_twine_upload(tools, clients, token, [path], "--skip-existing")

    # twine 6.1 recognises the index's 400 "File already exists" and skips the file.
    assert skipped.returncode == 0, f"{skipped}{server.output()}"
    line = _one_line(skipped.output)
    assert _statuses(skipped, clients) == ["400"], skipped
    assert f"400 {ALREADY_EXISTS}" in line, skipped
    assert f"Skipping {changed.filename} because it appears to already exist" in line, skipped
    assert _listed(server, old_twine_release.normalized) == old_twine_release.expected


def test_old_twine_shows_a_conflicting_file_refused(
    server, clients, tools, token, old_twine_release, tmp_path
):
    changed = old_twine_release.conflicting_sdist(tmp_path)

    refused = _old_twine_upload(tools, clients, token, [tmp_path / changed.filename])

    assert refused.returncode != 0, refused
    assert ALREADY_EXISTS in _one_line(refused.output), refused
    assert "Skipping" not in refused.output, refused
    assert _listed(server, old_twine_release.normalized) == old_twine_release.expected


# -- uv publish, with and without --check-url ------------------------------------------------


def _uv_publish(run_command, clients, token: str, files: list[Path], *, check_url: bool):
    return run_command(
        [
            UV, "publish", "--no-config",
            "--publish-url", clients.server.upload_url,
            "--token", token,
            *(["--check-url", clients.server.simple_url] if check_url else []),
            *files,
        ],
        env={**clients.env, "UV_NO_CONFIG": "1"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def uv_release(server, clients, run_command, token, tmp_path_factory) -> Release:
    """Uv-Client 1.0, uploaded with ``uv publish`` without --check-url."""
    release = _release("Uv-Client", tmp_path_factory.mktemp("uv-client"))
    uploaded = _uv_publish(run_command, clients, token, release.files, check_url=False)
    assert uploaded.returncode == 0, f"{uploaded}{server.output()}"
    assert _listed(server, release.normalized) == release.expected
    return dataclasses.replace(release, first_upload=uploaded)


def test_uv_publish_without_check_url_reuploads_identical_files(
    server, clients, run_command, token, uv_release
):
    again = _uv_publish(run_command, clients, token, uv_release.files, check_url=False)

    # uv sent both files again (there was no index to ask), and the index answered 200.
    assert again.returncode == 0, f"{again}{server.output()}"
    line = _one_line(again.output)
    for path in uv_release.files:
        assert f"Uploading {path.name}" in line, again
        assert f"{path.name} already exists" not in line, again
    assert _listed(server, uv_release.normalized) == uv_release.expected


def test_uv_publish_without_check_url_shows_the_conflict(
    server, clients, run_command, token, uv_release, tmp_path
):
    changed = uv_release.conflicting_sdist(tmp_path)
    path = tmp_path / changed.filename

    refused = _uv_publish(run_command, clients, token, [path], check_url=False)

    assert refused.returncode != 0, refused
    assert ALREADY_EXISTS in _one_line(refused.output), refused
    assert _listed(server, uv_release.normalized) == uv_release.expected


def test_uv_publish_with_check_url_refuses_a_conflicting_file(
    server, clients, run_command, token, uv_release, tmp_path
):
    changed = uv_release.conflicting_sdist(tmp_path)
    path = tmp_path / changed.filename

    refused = _uv_publish(run_command, clients, token, [path], check_url=True)

    # uv reads the hash the Simple API advertises for the file name before sending anything,
    # and stops with its own message on a mismatch: the upload never reaches the index.
    assert refused.returncode != 0, refused
    line = _one_line(refused.output)
    assert f"Local file and index file do not match for `{changed.filename}`" in line, refused
    assert f"Local: sha256={changed.sha256}" in line, refused
    assert f"Remote: sha256={uv_release.sdist.sha256}" in line, refused
    assert _listed(server, uv_release.normalized) == uv_release.expected


# -- hatch publish -----------------------------------------------------------------------------


def _hatch_publish(tools, clients, token: str, files: list[Path]):
    """``hatch publish`` to the legacy URL with an API token, never prompting."""
    return tools.run(
        HATCH, "hatch", "publish",
        "--repo", clients.server.upload_url,
        "--user", "__token__", "--auth", token,
        "--no-prompt",
        *files,
        env=clients.env,
        cwd=files[0].parent,
    )  # fmt: skip


@pytest.fixture(scope="module")
def hatch_release(server, clients, tools, token, tmp_path_factory) -> Release:
    """Hatch-Client 1.0, uploaded with ``hatch publish``."""
    release = _release("Hatch-Client", tmp_path_factory.mktemp("hatch-client"))
    published = _hatch_publish(tools, clients, token, release.files)
    assert published.returncode == 0, f"{published}{server.output()}"
    return dataclasses.replace(release, first_upload=published)


def test_hatch_publishes_wheel_and_sdist(server, hatch_release):
    line = _one_line(hatch_release.first_upload.output)

    for path in hatch_release.files:
        assert f"{path.name} ... success" in line, hatch_release.first_upload
    assert _listed(server, hatch_release.normalized) == hatch_release.expected


def test_hatch_shows_why_a_local_version_is_refused(server, clients, tools, token, tmp_path):
    wheel = build_wheel("Hatch-Local", "1.0+local").write(tmp_path)

    refused = _hatch_publish(tools, clients, token, [wheel])

    # hatch shows the status line (httpx's error), so the message is in the reason phrase.
    assert refused.returncode != 0, refused
    line = _one_line(refused.output)
    assert f"{wheel.name} ... failed" in line, refused
    assert "'400 " in line and "local versions cannot be uploaded" in line, refused
    assert token not in refused.output, refused
    status, _, _ = server.get("/simple/hatch-local/")
    assert status == 404


def test_hatch_shows_a_conflict(server, clients, tools, token, hatch_release, tmp_path):
    changed = hatch_release.conflicting_sdist(tmp_path)

    refused = _hatch_publish(tools, clients, token, [tmp_path / changed.filename])

    assert refused.returncode != 0, refused
    assert f"'400 {ALREADY_EXISTS}" in _one_line(refused.output), refused
    assert _listed(server, hatch_release.normalized) == hatch_release.expected


# -- twine 7: a refusal reaches the user -------------------------------------------------------


def test_twine_shows_why_a_stdlib_name_is_refused(server, clients, token, tmp_path):
    wheel = build_wheel("asyncio", "1.0").write(tmp_path)

    refused = clients.twine_upload(token, [wheel])

    assert refused.returncode != 0, refused
    line = _one_line(refused.output)
    assert "400" in line and "standard-library" in line, refused
    status, _, _ = server.get("/simple/asyncio/")
    assert status == 404
