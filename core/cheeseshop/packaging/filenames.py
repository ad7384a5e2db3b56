"""Distribution filenames: which are accepted for upload, and what they say."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from cheeseshop.packaging.names import is_valid_project_name

__all__ = ["MAX_FILENAME_LENGTH", "InvalidFilename", "ParsedFilename", "parse_filename"]

# Longer names cannot be stored on common filesystems (255 bytes per path component).
MAX_FILENAME_LENGTH = 255

_UPLOAD_HINT = "upload a wheel (.whl) or a source distribution (.tar.gz) instead"

# Formats PyPI once took (or never took) and this index refuses, with what to call them.
_RETIRED_FORMATS: tuple[tuple[str, str], ...] = (
    (".tar.bz2", "bzip2-compressed tar sdists"),
    (".tar.xz", "xz-compressed tar sdists"),
    (".tar.zst", "zstd-compressed tar sdists"),
    (".tar.Z", "compress'd tar sdists"),
    (".tar", "uncompressed tar sdists"),
    (".tgz", ".tgz sdists"),
    (".tbz", ".tbz sdists"),
    (".tbz2", ".tbz2 sdists"),
    (".zip", ".zip sdists"),
    (".egg", "Eggs (.egg)"),
    (".exe", "Windows installers (.exe)"),
    (".msi", "Windows installers (.msi)"),
    (".rpm", "RPM packages (.rpm)"),
    (".deb", "Debian packages (.deb)"),
    (".dmg", "macOS disk images (.dmg)"),
    (".pkg", "macOS installers (.pkg)"),
)


class InvalidFilename(ValueError):
    """A distribution filename that cannot be uploaded.

    ``str(exc)`` is a complete message for the uploader: it names the file, says what is wrong
    and what to do. :attr:`filename` is the filename as given.
    """

    def __init__(self, message: str, *, filename: str) -> None:
        super().__init__(message)
        self.filename = filename


@dataclass(frozen=True)
class ParsedFilename:
    """What an accepted distribution filename says about the file."""

    filename: str
    packagetype: Literal["bdist_wheel", "sdist"]
    name: str
    """The normalized project name (PEP 503), e.g. ``foo-bar``."""
    version: Version
    python_version: str
    """For wheels the python tag as written (``py3``, ``cp311.cp312``); ``source`` for sdists."""


def parse_filename(filename: str) -> ParsedFilename:
    """Check that *filename* may be uploaded and return what it says.

    Accepted are wheels (``.whl``, any spelling of the name that normalizes to a valid project
    name) and sdists named exactly ``<normalized_name>-<normalized version>.tar.gz`` (PEP 625).
    Refused are names with control characters, path separators or non-ASCII characters, every
    other format (``.zip`` sdists, eggs, installers, ...) and local versions (``1.0+abc``).

    :raises InvalidFilename: with a message naming the file, what is wrong and what to do.
    """
    _check_characters(filename)
    if filename.endswith(".whl"):
        return _parse_wheel(filename)
    if filename.endswith(".tar.gz"):
        return _parse_sdist(filename)
    shown = _show(filename)
    for suffix, description in _RETIRED_FORMATS:
        if filename.endswith(suffix):
            raise InvalidFilename(
                f"Invalid distribution file {shown}: {description} are no longer accepted; "
                f"{_UPLOAD_HINT}.",
                filename=filename,
            )
    lowered = filename.lower()
    if lowered.endswith((".whl", ".tar.gz")):
        raise InvalidFilename(
            f"Invalid distribution file {shown}: the extension must be lower-case "
            f"('.whl' or '.tar.gz'); rename the file to the name your build tool produced.",
            filename=filename,
        )
    raise InvalidFilename(
        f"Invalid distribution file {shown}: this is not a recognized distribution format; "
        f"{_UPLOAD_HINT}.",
        filename=filename,
    )


def _show(filename: str) -> str:
    # ascii() quotes the name and escapes anything unprintable, so the message is safe to put
    # in a Latin-1 HTTP reason phrase.
    return ascii(filename)


def _check_characters(filename: str) -> None:
    shown = _show(filename)
    problem: str | None = None
    if not filename:
        problem = "the filename is empty; send the file's own name"
    elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in filename):
        problem = (
            "it contains control characters; send the distribution's own filename, "
            "as your build tool wrote it"
        )
    elif "/" in filename or "\\" in filename:
        problem = "it contains a path separator ('/' or '\\'); send the bare filename, not a path"
    elif not filename.isascii():
        problem = (
            "it contains non-ASCII characters; distribution filenames are ASCII only, "
            "rename the file to the name your build tool produced"
        )
    elif " " in filename:
        problem = "it contains spaces; rename the file to the name your build tool produced"
    elif len(filename) > MAX_FILENAME_LENGTH:
        problem = f"it is longer than {MAX_FILENAME_LENGTH} characters; shorten it"
    if problem is not None:
        raise InvalidFilename(f"Invalid filename {shown}: {problem}.", filename=filename)


def _refuse_local(filename: str, version: Version) -> None:
    if version.local is not None:
        raise InvalidFilename(
            f"Invalid filename {_show(filename)}: version {version} has a local part "
            f"('+{version.local}'); local versions cannot be uploaded. Build it with a "
            f"public version such as {version.public}.",
            filename=filename,
        )


def _parse_wheel(filename: str) -> ParsedFilename:
    shown = _show(filename)
    try:
        name, version, _build, _tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise InvalidFilename(
            f"Invalid wheel filename {shown}: {_reason(exc, filename)}. A wheel is named "
            f"'<name>-<version>[-<build>]-<python tag>-<abi tag>-<platform tag>.whl'; "
            f"upload the file under the name your build tool produced.",
            filename=filename,
        ) from None
    if not is_valid_project_name(name):
        name_part = filename.split("-", 1)[0]
        raise InvalidFilename(
            f"Invalid wheel filename {shown}: {name_part!r} is not a valid project name (ASCII "
            f"letters and digits, with '.', '_' or '-' only between them).",
            filename=filename,
        )
    _refuse_local(filename, version)
    # parse_wheel_filename accepted the shape, so the python tag is the third part from the end
    # (an optional build tag may sit between the version and it).
    python_tag = filename.removesuffix(".whl").split("-")[-3]
    return ParsedFilename(
        filename=filename,
        packagetype="bdist_wheel",
        name=name,
        version=version,
        python_version=python_tag,
    )


def _parse_sdist(filename: str) -> ParsedFilename:
    shown = _show(filename)
    try:
        name, version = parse_sdist_filename(filename)
    except InvalidSdistFilename as exc:
        raise InvalidFilename(
            f"Invalid sdist filename {shown}: {_reason(exc, filename)}. An sdist is named "
            f"'<name>-<version>.tar.gz', e.g. 'my_project-1.0.tar.gz'; upload the file under "
            f"the name your build tool produced.",
            filename=filename,
        ) from None
    if not is_valid_project_name(name):
        name_part = filename.removesuffix(".tar.gz").rpartition("-")[0]
        raise InvalidFilename(
            f"Invalid sdist filename {shown}: {name_part!r} is not a valid project name (ASCII "
            f"letters and digits, with '.', '_' or '-' only between them).",
            filename=filename,
        )
    _refuse_local(filename, version)
    expected = f"{name.replace('-', '_')}-{version}.tar.gz"
    if filename != expected:
        raise InvalidFilename(
            f"Invalid sdist filename {shown}: sdist filenames must use the normalized project "
            f"name and version (PEP 625); expected {expected!r}. Rename the file, or rebuild "
            f"it with an up-to-date build backend.",
            filename=filename,
        )
    return ParsedFilename(
        filename=filename,
        packagetype="sdist",
        name=name,
        version=version,
        python_version="source",
    )


def _reason(exc: ValueError, filename: str) -> str:
    """Reduce packaging's "Invalid wheel filename (why): 'name'" to "why"."""
    text = str(exc)
    start, end = text.find("("), text.rfind(")")
    if 0 <= start < end:
        return text[start + 1 : end]
    for quoted in (repr(filename), repr(filename.removesuffix(".whl"))):
        text = text.replace(f": {quoted}", "").replace(f" in {quoted}", "")
    if not text or text.lower() in ("invalid sdist filename", "invalid wheel filename"):
        return "it does not have the form of a distribution filename"
    return text[0].lower() + text[1:]
