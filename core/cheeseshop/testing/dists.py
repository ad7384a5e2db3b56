"""Build real wheels and sdists in memory, byte-exact and deterministic.

Tests upload what these builders make with real twine and uv, and install it with real pip
and uv, so every archive is a valid distribution: a wheel has its ``.dist-info`` with
METADATA, WHEEL and a RECORD whose hashes are right; an sdist is a PEP 625 ``.tar.gz`` with
one top-level directory holding PKG-INFO and a ``pyproject.toml``.

No build backend runs: the archives are written directly with :mod:`zipfile` and
:mod:`tarfile`, with fixed timestamps, owners, modes and member order, so the same arguments
give the same bytes (and so the same sha256) on every call.

The builders check nothing they are given beyond what they need to lay out the archive, so a
test can also build a deliberately bad upload (an unknown metadata version, an invalid
requirement) and see the index reject it. A version that is not PEP 440 is used unchanged in
the file name.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import stat
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import parse_tag
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = ["Dist", "build_sdist", "build_wheel", "core_metadata"]

# The earliest time a zip entry can carry; tar and gzip use the epoch itself.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_GENERATOR = "cheeseshop.testing"
# The body form of the description arrived with Metadata-Version 2.1 (PEP 566).
_BODY_DESCRIPTION_SINCE = Version("2.1")


@dataclass(frozen=True)
class Dist:
    """A built distribution: its file name, its bytes and the core metadata inside it."""

    filename: str
    content: bytes
    metadata: bytes

    @property
    def sha256(self) -> str:
        """The hex SHA-256 digest of :attr:`content`, as the index and its clients report it."""
        return hashlib.sha256(self.content).hexdigest()

    def write(self, directory: Path) -> Path:
        """Write the archive to ``directory/filename`` and return that path.

        ``directory`` must exist; an existing file of the same name is replaced.
        """
        path = Path(directory) / self.filename
        path.write_bytes(self.content)
        return path


def core_metadata(
    name: str,
    version: str,
    *,
    summary: str = "A test package.",
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    metadata_version: str = "2.4",
    extra_metadata: Sequence[tuple[str, str]] = (),
    description: str | None = None,
    description_content_type: str | None = "text/markdown",
) -> bytes:
    """Return the core metadata file (wheel METADATA, sdist PKG-INFO), encoded as UTF-8.

    Fields come in a fixed order: ``Metadata-Version``, ``Name`` (as given, not normalized),
    ``Version``, ``Summary``, ``Requires-Python`` when given, one ``Requires-Dist`` per entry,
    ``extra_metadata`` in the order given, then, only when ``description`` is given,
    ``Description-Content-Type`` (unless ``None``) and the description itself: as the message
    body from Metadata-Version 2.1 on, as a folded ``Description`` field before it.
    """
    fields: list[tuple[str, str]] = [
        ("Metadata-Version", metadata_version),
        ("Name", name),
        ("Version", version),
        ("Summary", summary),
    ]
    if requires_python is not None:
        fields.append(("Requires-Python", requires_python))
    fields.extend(("Requires-Dist", requirement) for requirement in requires_dist)
    fields.extend(extra_metadata)
    body = None
    if description is not None:
        if description_content_type is not None:
            fields.append(("Description-Content-Type", description_content_type))
        if _description_in_body(metadata_version):
            body = description
        else:
            # Folded as distutils did: each following line indented by eight spaces.
            fields.append(("Description", ("\n" + " " * 8).join(description.splitlines())))
    text = "".join(f"{key}: {value}\n" for key, value in fields)
    if body is not None:
        text += "\n" + body
    return text.encode("utf-8")


def build_wheel(
    name: str,
    version: str,
    *,
    import_name: str | None = None,
    summary: str = "A test package.",
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    tag: str = "py3-none-any",
    metadata_version: str = "2.4",
    extra_metadata: Sequence[tuple[str, str]] = (),
    description: str | None = None,
    description_content_type: str | None = "text/markdown",
    files: Mapping[str, bytes] | None = None,
) -> Dist:
    """Build a wheel ``{dist}-{version}-{tag}.whl``, where ``dist`` is the normalized name.

    Unless ``files`` is given, the wheel holds one package, ``import_name`` (by default
    ``dist``; a dotted name gives a namespace package), whose ``__init__.py`` sets ``NAME``
    and ``VERSION`` to ``name`` and ``version``, so a test can import it after installing.
    ``files`` maps archive paths to contents and replaces that package; it may add files to
    the ``.dist-info`` directory but not METADATA, WHEEL or RECORD, which are generated.
    ``tag`` may be a compressed tag set such as ``py2.py3-none-any``. The other options are
    those of :func:`core_metadata`.

    Raises ``ValueError`` when ``files`` names one of the generated ``.dist-info`` files.
    """
    dist = _dist_name(name)
    stem = f"{dist}-{_filename_version(version)}"
    dist_info = f"{stem}.dist-info"
    metadata = core_metadata(
        name,
        version,
        summary=summary,
        requires_python=requires_python,
        requires_dist=requires_dist,
        metadata_version=metadata_version,
        extra_metadata=extra_metadata,
        description=description,
        description_content_type=description_content_type,
    )
    if files is None:
        files = _module_files(import_name or dist, name, version)
    generated = {f"{dist_info}/{member}" for member in ("METADATA", "WHEEL", "RECORD")}
    clashes = sorted(generated.intersection(files))
    if clashes:
        raise ValueError(f"files may not replace generated wheel files: {', '.join(clashes)}")

    wheel = "".join(
        f"{key}: {value}\n"
        for key, value in [
            ("Wheel-Version", "1.0"),
            ("Generator", _GENERATOR),
            ("Root-Is-Purelib", "true"),
            *(("Tag", str(t)) for t in sorted(parse_tag(tag), key=str)),
        ]
    ).encode("utf-8")

    # The wheel spec asks for .dist-info last, with RECORD as the very last member.
    in_dist_info = {path for path in files if path.startswith(f"{dist_info}/")}
    members = [(path, files[path]) for path in sorted(set(files) - in_dist_info)]
    members += [(path, files[path]) for path in sorted(in_dist_info)]
    members += [(f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel)]
    record_path = f"{dist_info}/RECORD"
    members.append((record_path, _record(members, record_path)))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in members:
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr carries the file mode everywhere.
            info.external_attr = (stat.S_IFREG | _FILE_MODE) << 16
            archive.writestr(info, data, compresslevel=6)
    return Dist(filename=f"{stem}-{tag}.whl", content=buffer.getvalue(), metadata=metadata)


def build_sdist(
    name: str,
    version: str,
    *,
    import_name: str | None = None,
    summary: str = "A test package.",
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    metadata_version: str = "2.4",
    extra_metadata: Sequence[tuple[str, str]] = (),
    description: str | None = None,
    description_content_type: str | None = "text/markdown",
) -> Dist:
    """Build a source distribution ``{dist}-{version}.tar.gz`` (PEP 625).

    Its one top-level directory ``{dist}-{version}/`` holds PKG-INFO (the same core metadata
    as :func:`build_wheel` writes), a ``pyproject.toml`` for setuptools declaring the name,
    version, summary, Python requirement and dependencies, and the package ``import_name``
    laid out as in the wheel. The tar is pax, owned by uid/gid 0, dated the epoch, with
    modes 0o644 and 0o755; the gzip header carries no name and mtime 0.
    """
    dist = _dist_name(name)
    stem = f"{dist}-{_filename_version(version)}"
    metadata = core_metadata(
        name,
        version,
        summary=summary,
        requires_python=requires_python,
        requires_dist=requires_dist,
        metadata_version=metadata_version,
        extra_metadata=extra_metadata,
        description=description,
        description_content_type=description_content_type,
    )
    files = {
        "PKG-INFO": metadata,
        "pyproject.toml": _pyproject(name, version, summary, requires_python, requires_dist),
        **_module_files(import_name or dist, name, version),
    }
    paths = {f"{stem}/{path}": data for path, data in files.items()}
    directories = {stem}
    for path in paths:
        parent = path.rpartition("/")[0]
        while parent:
            directories.add(parent)
            parent = parent.rpartition("/")[0]

    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as compressed:
        with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in sorted(directories | set(paths)):
                info = tarfile.TarInfo(path)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if path in paths:
                    info.type = tarfile.REGTYPE
                    info.mode = _FILE_MODE
                    info.size = len(paths[path])
                    archive.addfile(info, io.BytesIO(paths[path]))
                else:
                    info.type = tarfile.DIRTYPE
                    info.mode = _DIR_MODE
                    archive.addfile(info)
    return Dist(filename=f"{stem}.tar.gz", content=buffer.getvalue(), metadata=metadata)


def _dist_name(name: str) -> str:
    """The name as file names spell it: PEP 503-normalized, with ``_`` for ``-``."""
    return canonicalize_name(name).replace("-", "_")


def _filename_version(version: str) -> str:
    """The PEP 440 normal form when there is one; otherwise the version unchanged."""
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def _description_in_body(metadata_version: str) -> bool:
    try:
        return Version(metadata_version) >= _BODY_DESCRIPTION_SINCE
    except InvalidVersion:
        return True


def _py_string(value: str) -> str:
    """A double-quoted literal valid in both Python and TOML (a JSON string is both)."""
    return json.dumps(value, ensure_ascii=False)


def _module_files(import_name: str, name: str, version: str) -> dict[str, bytes]:
    source = (
        f'"""The {name} test package, built by {_GENERATOR}."""\n'
        "\n"
        f"NAME = {_py_string(name)}\n"
        f"VERSION = {_py_string(version)}\n"
    )
    return {f"{import_name.replace('.', '/')}/__init__.py": source.encode("utf-8")}


def _pyproject(
    name: str,
    version: str,
    summary: str,
    requires_python: str | None,
    requires_dist: Sequence[str],
) -> bytes:
    lines = [
        "[build-system]",
        'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {_py_string(name)}",
        f"version = {_py_string(version)}",
        f"description = {_py_string(summary)}",
    ]
    if requires_python is not None:
        lines.append(f"requires-python = {_py_string(requires_python)}")
    lines.append(f"dependencies = [{', '.join(_py_string(r) for r in requires_dist)}]")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _record(members: Sequence[tuple[str, bytes]], record_path: str) -> bytes:
    """The RECORD file: one ``path,sha256=<urlsafe b64, unpadded>,size`` row per member."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for path, data in members:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        writer.writerow([path, f"sha256={digest.decode('ascii')}", str(len(data))])
    writer.writerow([record_path, "", ""])
    return text.getvalue().encode("utf-8")
