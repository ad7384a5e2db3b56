"""Tests for cheeseshop.packaging.filenames."""

from __future__ import annotations

import dataclasses

import pytest
from packaging.version import Version

from cheeseshop.packaging.filenames import InvalidFilename, ParsedFilename, parse_filename


def refused(filename: str) -> InvalidFilename:
    with pytest.raises(InvalidFilename) as info:
        parse_filename(filename)
    exc = info.value
    assert isinstance(exc, ValueError)
    assert exc.filename == filename
    message = str(exc)
    assert ascii(filename) in message, "every message names the file"
    message.encode("latin-1")  # shown as an HTTP reason phrase
    return exc


# --- accepted ---------------------------------------------------------------------------------


def test_wheel() -> None:
    parsed = parse_filename("foo_bar-1.0-py3-none-any.whl")
    assert parsed == ParsedFilename(
        filename="foo_bar-1.0-py3-none-any.whl",
        packagetype="bdist_wheel",
        name="foo-bar",
        version=Version("1.0"),
        python_version="py3",
    )


def test_wheel_python_tag_as_written_with_build_tag() -> None:
    parsed = parse_filename("foo-2.0.post1-1abc-cp311.cp312-abi3-manylinux_2_17_x86_64.whl")
    assert parsed.python_version == "cp311.cp312"
    assert parsed.version == Version("2.0.post1")


def test_wheel_name_need_not_be_normalized() -> None:
    parsed = parse_filename("Foo.Bar-1.0-py3-none-any.whl")
    assert parsed.name == "foo-bar"


def test_sdist() -> None:
    parsed = parse_filename("foo_bar-1.0rc1.tar.gz")
    assert parsed == ParsedFilename(
        filename="foo_bar-1.0rc1.tar.gz",
        packagetype="sdist",
        name="foo-bar",
        version=Version("1.0rc1"),
        python_version="source",
    )


def test_parsed_filename_is_frozen() -> None:
    parsed = parse_filename("foo-1.0.tar.gz")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.name = "bar"  # type: ignore[misc]


# --- characters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "words"),
    [
        pytest.param("foo-1.0\x00-py3-none-any.whl", "control", id="nul"),
        pytest.param("foo-1.0.tar.gz\r", "control", id="cr"),
        pytest.param("foo-1.0.tar.gz\nX-Header: 1", "control", id="lf"),
        pytest.param("foo\t-1.0.tar.gz", "control", id="tab"),
        pytest.param("foo\x7f-1.0.tar.gz", "control", id="del"),
        pytest.param("../foo-1.0.tar.gz", "path separator", id="slash"),
        pytest.param("dir\\foo-1.0.tar.gz", "path separator", id="backslash"),
        pytest.param("f\u043eo-1.0.tar.gz", "non-ASCII", id="cyrillic"),
        pytest.param("foo-1.0-py3-none-any\u2024whl", "non-ASCII", id="one-dot-leader"),
        pytest.param("foo- 1.0.tar.gz", "spaces", id="space"),
        pytest.param("", "empty", id="empty"),
        pytest.param("f" * 250 + "-1.0.tar.gz", "longer than 255", id="too-long"),
    ],
)
def test_refuses_bad_characters(filename: str, words: str) -> None:
    assert words in str(refused(filename))


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        "foo-1.0.zip",
        "foo-1.0-py3.8.egg",
        "foo-1.0.win32.exe",
        "foo-1.0.win-amd64.msi",
        "foo-1.0-1.noarch.rpm",
        "foo-1.0.tar.bz2",
        "foo-1.0.tgz",
        "foo-1.0.tar.xz",
        "foo-1.0.tar",
    ],
)
def test_refuses_retired_formats(filename: str) -> None:
    message = str(refused(filename))
    assert "no longer accepted" in message
    assert ".whl" in message and ".tar.gz" in message


def test_refuses_unknown_format() -> None:
    message = str(refused("foo-1.0.txt"))
    assert "not a recognized distribution format" in message
    assert ".whl" in message and ".tar.gz" in message


@pytest.mark.parametrize("filename", ["foo-1.0-py3-none-any.WHL", "foo-1.0.TAR.GZ"])
def test_refuses_upper_case_extension(filename: str) -> None:
    assert "lower-case" in str(refused(filename))


# --- wheels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "words"),
    [
        ("foo-1.0.whl", "wrong number of parts"),
        ("foo-1.0-py3-none-any-extra-x.whl", "wrong number of parts"),
        ("foo-notaversion-py3-none-any.whl", "invalid version"),
        ("foo-1.0-x1-py3-none-any.whl", "build number"),
        ("foo__bar-1.0-py3-none-any.whl", "project name"),
    ],
)
def test_refuses_malformed_wheel_filenames(filename: str, words: str) -> None:
    message = str(refused(filename))
    assert words in message
    assert "wheel" in message


@pytest.mark.parametrize("filename", ["_foo-1.0-py3-none-any.whl", "foo.-1.0-py3-none-any.whl"])
def test_wheel_name_must_normalize_to_a_valid_name(filename: str) -> None:
    assert "is not a valid project name" in str(refused(filename))


# --- sdists -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        pytest.param("Foo-1.0.tar.gz", "foo-1.0.tar.gz", id="upper-case"),
        pytest.param("foo.bar-1.0.tar.gz", "foo_bar-1.0.tar.gz", id="dot"),
        pytest.param("foo-bar-1.0.tar.gz", "foo_bar-1.0.tar.gz", id="dash"),
        pytest.param("foo__bar-1.0.tar.gz", "foo_bar-1.0.tar.gz", id="double-underscore"),
        pytest.param("foo-1.0.RC1.tar.gz", "foo-1.0rc1.tar.gz", id="version"),
        pytest.param("foo-v1.0.tar.gz", "foo-1.0.tar.gz", id="version-v"),
    ],
)
def test_sdist_filename_must_be_normalized(filename: str, expected: str) -> None:
    message = str(refused(filename))
    assert repr(expected) in message
    assert "PEP 625" in message


@pytest.mark.parametrize(
    ("filename", "words"),
    [
        ("foo.tar.gz", "does not have the form"),
        ("foo-bar.tar.gz", "invalid version"),
        ("_foo-1.0.tar.gz", "is not a valid project name"),
    ],
)
def test_refuses_malformed_sdist_filenames(filename: str, words: str) -> None:
    message = str(refused(filename))
    assert words in message
    assert "sdist" in message


# --- versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["foo-1.0+abc-py3-none-any.whl", "foo-1.0+ubuntu.1.tar.gz"])
def test_refuses_local_versions(filename: str) -> None:
    assert "local versions cannot be uploaded" in str(refused(filename))
