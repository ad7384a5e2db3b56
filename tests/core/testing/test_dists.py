"""The distribution builders write archives that real tools accept, byte for byte the same."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.metadata import Metadata
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.utils import parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

from cheeseshop.testing.dists import Dist, build_sdist, build_wheel, core_metadata

BIN = Path(sys.executable).parent

FULL = dict(
    summary="Says hello.",
    requires_python=">=3.11",
    requires_dist=["requests>=2", 'tomli; python_version < "3.11"'],
    extra_metadata=[("Project-URL", "Homepage, https://example.org"), ("Keywords", "a,b")],
    description="# Hello\n\nWorld, in **Markdown**.\n",
)


def _zip(dist: Dist) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(dist.content))


def _tar(dist: Dist) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(dist.content), mode="r:gz")


# --- core metadata ------------------------------------------------------------------------


def test_core_metadata_is_exact() -> None:
    assert core_metadata("Hello.World", "1.0", **FULL) == (
        b"Metadata-Version: 2.4\n"
        b"Name: Hello.World\n"
        b"Version: 1.0\n"
        b"Summary: Says hello.\n"
        b"Requires-Python: >=3.11\n"
        b"Requires-Dist: requests>=2\n"
        b'Requires-Dist: tomli; python_version < "3.11"\n'
        b"Project-URL: Homepage, https://example.org\n"
        b"Keywords: a,b\n"
        b"Description-Content-Type: text/markdown\n"
        b"\n"
        b"# Hello\n\nWorld, in **Markdown**.\n"
    )


def test_core_metadata_validates_and_round_trips() -> None:
    metadata = Metadata.from_email(core_metadata("Hello.World", "1.0", **FULL), validate=True)
    assert metadata.metadata_version == "2.4"
    assert metadata.name == "Hello.World"
    assert metadata.version == Version("1.0")
    assert metadata.summary == "Says hello."
    assert metadata.requires_python == SpecifierSet(">=3.11")
    assert metadata.requires_dist == [Requirement(r) for r in FULL["requires_dist"]]
    assert metadata.project_urls == {"Homepage": "https://example.org"}
    assert metadata.keywords == ["a", "b"]
    assert metadata.description_content_type == "text/markdown"
    assert metadata.description == FULL["description"]


def test_core_metadata_without_description_has_no_body_nor_content_type() -> None:
    text = core_metadata("x", "2")
    assert text == b"Metadata-Version: 2.4\nName: x\nVersion: 2\nSummary: A test package.\n"
    assert Metadata.from_email(text, validate=True).description is None


def test_core_metadata_before_2_1_folds_the_description_into_a_field() -> None:
    text = core_metadata(
        "x", "2", metadata_version="1.2", description="one\ntwo\n", description_content_type=None
    )
    assert text.endswith(b"Description: one\n        two\n")
    assert Metadata.from_email(text, validate=True).metadata_version == "1.2"


# --- wheels -------------------------------------------------------------------------------


def test_wheel_filename_parses() -> None:
    wheel = build_wheel("Hello.World", "1.0.0-RC1", tag="py2.py3-none-any")
    assert wheel.filename == "hello_world-1.0.0rc1-py2.py3-none-any.whl"
    name, version, build, tags = parse_wheel_filename(wheel.filename)
    assert (name, version, build) == ("hello-world", Version("1.0.0rc1"), ())
    assert tags == {Tag("py2", "none", "any"), Tag("py3", "none", "any")}


def test_wheel_layout_metadata_and_wheel_file() -> None:
    wheel = build_wheel("Hello.World", "1.0", tag="py2.py3-none-any", **FULL)
    archive = _zip(wheel)
    assert archive.namelist() == [
        "hello_world/__init__.py",
        "hello_world-1.0.dist-info/METADATA",
        "hello_world-1.0.dist-info/WHEEL",
        "hello_world-1.0.dist-info/RECORD",
    ]
    assert archive.read("hello_world-1.0.dist-info/METADATA") == wheel.metadata
    assert wheel.metadata == core_metadata("Hello.World", "1.0", **FULL)
    Metadata.from_email(wheel.metadata, validate=True)
    assert archive.read("hello_world-1.0.dist-info/WHEEL") == (
        b"Wheel-Version: 1.0\n"
        b"Generator: cheeseshop.testing\n"
        b"Root-Is-Purelib: true\n"
        b"Tag: py2-none-any\n"
        b"Tag: py3-none-any\n"
    )
    module = archive.read("hello_world/__init__.py").decode()
    assert 'NAME = "Hello.World"\n' in module
    assert 'VERSION = "1.0"\n' in module
    for info in archive.infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.external_attr >> 16 == 0o100644


def test_wheel_record_hashes_every_member() -> None:
    wheel = build_wheel("hello", "1.0", files={"a.py": b"A = 1\n", "b/c.txt": b"x" * 5000})
    archive = _zip(wheel)
    names = archive.namelist()
    record_path = "hello-1.0.dist-info/RECORD"
    assert names[-1] == record_path
    rows = list(csv.reader(io.StringIO(archive.read(record_path).decode())))
    assert [row[0] for row in rows] == names
    for path, hash_, size in rows:
        if path == record_path:
            assert (hash_, size) == ("", "")
            continue
        data = archive.read(path)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert hash_ == f"sha256={digest}"
        assert size == str(len(data))


def test_wheel_files_replace_the_module_and_may_add_to_dist_info() -> None:
    wheel = build_wheel(
        "hello",
        "1.0",
        files={
            "hello-1.0.dist-info/entry_points.txt": b"[console_scripts]\nhi = hello:main\n",
            "hello.py": b"def main(): pass\n",
        },
    )
    assert _zip(wheel).namelist() == [
        "hello.py",
        "hello-1.0.dist-info/entry_points.txt",
        "hello-1.0.dist-info/METADATA",
        "hello-1.0.dist-info/WHEEL",
        "hello-1.0.dist-info/RECORD",
    ]


def test_wheel_files_may_not_replace_generated_files() -> None:
    with pytest.raises(ValueError, match="hello-1.0.dist-info/METADATA"):
        build_wheel("hello", "1.0", files={"hello-1.0.dist-info/METADATA": b""})


def test_wheel_dotted_import_name_makes_a_namespace_package() -> None:
    wheel = build_wheel("hello", "1.0", import_name="acme.hello")
    assert _zip(wheel).namelist()[0] == "acme/hello/__init__.py"


# --- sdists -------------------------------------------------------------------------------


def test_sdist_filename_parses() -> None:
    sdist = build_sdist("Hello.World", "1.0.0-RC1")
    assert sdist.filename == "hello_world-1.0.0rc1.tar.gz"
    assert parse_sdist_filename(sdist.filename) == ("hello-world", Version("1.0.0rc1"))


def test_sdist_layout_and_metadata() -> None:
    sdist = build_sdist("Hello.World", "1.0", import_name="hello_pkg", **FULL)
    assert sdist.content[4:8] == b"\0\0\0\0"  # gzip mtime
    with _tar(sdist) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == [
            "hello_world-1.0",
            "hello_world-1.0/PKG-INFO",
            "hello_world-1.0/hello_pkg",
            "hello_world-1.0/hello_pkg/__init__.py",
            "hello_world-1.0/pyproject.toml",
        ]
        for member in members:
            assert (member.mtime, member.uid, member.gid) == (0, 0, 0)
            assert member.mode == (0o755 if member.isdir() else 0o644)
        assert archive.extractfile("hello_world-1.0/PKG-INFO").read() == sdist.metadata
        pyproject = archive.extractfile("hello_world-1.0/pyproject.toml").read().decode()
    assert sdist.metadata == core_metadata("Hello.World", "1.0", **FULL)
    Metadata.from_email(sdist.metadata, validate=True)
    assert 'build-backend = "setuptools.build_meta"' in pyproject
    assert 'name = "Hello.World"\nversion = "1.0"\n' in pyproject


# --- determinism and files on disk --------------------------------------------------------


@pytest.mark.parametrize("build", [build_wheel, build_sdist])
def test_builds_are_byte_identical(build: Callable[..., Dist]) -> None:
    first, second = build("hello", "1.0", **FULL), build("hello", "1.0", **FULL)
    assert first == second
    assert first.sha256 == hashlib.sha256(first.content).hexdigest()
    assert build("hello", "1.1", **FULL).content != first.content


def test_write(tmp_path: Path) -> None:
    wheel = build_wheel("hello", "1.0")
    path = wheel.write(tmp_path)
    assert path == tmp_path / wheel.filename
    assert path.read_bytes() == wheel.content


# --- real tools ---------------------------------------------------------------------------


def _run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _import_version(target: Path, import_name: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = f"import {import_name}; print({import_name}.VERSION)"
    return _run(sys.executable, "-c", code, env=env).strip()


def test_twine_check_passes(tmp_path: Path) -> None:
    paths = [build("hello", "1.0", **FULL).write(tmp_path) for build in (build_wheel, build_sdist)]
    output = _run(BIN / "twine", "check", "--strict", *paths)
    assert output.count("PASSED") == 2, output


def test_pip_installs_the_wheel(tmp_path: Path) -> None:
    wheel = build_wheel("Hello.World", "2.5", import_name="hello_pip", **FULL).write(tmp_path)
    target = tmp_path / "target"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    _run(
        sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--no-deps",
        "--disable-pip-version-check", "--target", target, wheel,
        env=env,
    )  # fmt: skip
    assert _import_version(target, "hello_pip") == "2.5"
    assert (target / "hello_world-2.5.dist-info" / "METADATA").read_bytes() == core_metadata(
        "Hello.World", "2.5", **FULL
    )


def test_uv_installs_the_wheel(tmp_path: Path) -> None:
    wheel = build_wheel("hello-uv", "3.0").write(tmp_path)
    target = tmp_path / "target"
    _run(
        BIN / "uv", "pip", "install", "--no-config", "--no-index", "--python", sys.executable,
        "--cache-dir", tmp_path / "uv-cache", "--target", target, wheel,
    )  # fmt: skip
    assert _import_version(target, "hello_uv") == "3.0"
