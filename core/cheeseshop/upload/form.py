"""Read the upload form's fields into typed values. Pure: no I/O.

Clients spell fields differently (twine, uv, hatch, flit, poetry); every spelling is
taken. An empty string or ``UNKNOWN`` means absent, in single and repeated fields alike;
unknown fields are ignored. Every problem found is reported at once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from packaging.version import InvalidVersion, Version

from cheeseshop.packaging.metadata import METADATA_VERSIONS, InvalidMetadata, validate_metadata
from cheeseshop.packaging.names import is_valid_project_name, normalize

__all__ = ["FormError", "UploadRequest", "read_form"]

SINGLE_FIELDS = {
    "metadata_version",
    "name",
    "version",
    "summary",
    "description",
    "description_content_type",
    "keywords",
    "home_page",
    "download_url",
    "author",
    "author_email",
    "maintainer",
    "maintainer_email",
    "license",
    "license_expression",
    "requires_python",
    "filetype",
    "pyversion",
    "md5_digest",
    "sha256_digest",
    "blake2_256_digest",
    "comment",
    "protocol_version",
    ":action",
}
MULTI_FIELDS = {
    "classifiers": ("classifiers",),
    "platform": ("platform",),
    "supported_platform": ("supported_platform",),
    "requires_dist": ("requires_dist",),
    "provides_dist": ("provides_dist",),
    "obsoletes_dist": ("obsoletes_dist",),
    "requires_external": ("requires_external",),
    "provides_extra": ("provides_extra",),
    "project_urls": ("project_urls",),
    "license_files": ("license_files", "license_file"),
    "dynamic": ("dynamic",),
    "import_names": ("import_names", "import_name"),
    "import_namespaces": ("import_namespaces", "import_namespace"),
}
#: Longest value, in characters, of the fields the index keeps in sized columns (the
#: Summary's 512 is PyPI's own rule, checked with the metadata).
FIELD_LENGTHS = {"name": 200, "version": 100, "pyversion": 100, "description_content_type": 200}
FILETYPES = ("sdist", "bdist_wheel")
HEX = re.compile(r"^[0-9a-fA-F]+$")


class FormError(ValueError):
    """The form is not a valid upload; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(" ".join(problems))
        self.problems = list(problems)


@dataclasses.dataclass(frozen=True)
class UploadRequest:
    """A well-formed upload form."""

    name: str
    normalized_name: str
    version: Version
    version_string: str
    filetype: str
    pyversion: str
    metadata_version: str
    digests: Mapping[str, str]  # algorithm ("md5", "sha256", "blake2_256") -> lower-case hex
    metadata: Mapping[str, str | list[str] | dict[str, str] | None]


def _present(value: str) -> bool:
    """Whether a field's value says anything: an empty string or ``UNKNOWN`` (what
    distutils wrote for a value it did not know) means absent, in every field."""
    stripped = value.strip()
    return bool(stripped) and stripped != "UNKNOWN"


def _value(raw: Sequence[str]) -> str | None:
    values = [v for v in raw if _present(v)]
    return values[0] if values else None


def read_form(fields: Mapping[str, Sequence[str]]) -> UploadRequest:
    """Validate the form's fields; raise :class:`FormError` listing every problem."""
    problems: list[str] = []
    known = SINGLE_FIELDS.union(*MULTI_FIELDS.values())
    for key in sorted(known.intersection(fields)):
        # PostgreSQL cannot store a NUL in text; refuse it here rather than fail there.
        if any("\x00" in value for value in fields[key]):
            problems.append(f"Field {key!r} contains a NUL character; remove it.")
    single: dict[str, str | None] = {}
    for key in SINGLE_FIELDS:
        raw = fields.get(key, ())
        distinct = {v for v in raw if _present(v)}
        if len(distinct) > 1:
            problems.append(f"Field {key!r} was given {len(distinct)} different values; give one.")
        value = _value(raw)
        # Surrounding whitespace is never meaningful, except in the description's markup.
        single[key] = value.strip() if value is not None and key != "description" else value

    for key, limit in FIELD_LENGTHS.items():
        value = single[key]
        if value is not None and len(value) > limit:
            problems.append(
                f"Field {key!r} is {len(value)} characters long; shorten it to {limit} "
                "characters or fewer."
            )

    action = single[":action"]
    if action is None:
        problems.append("Missing ':action' field; use ':action=file_upload'.")
    protocol = single["protocol_version"] or "1"
    if protocol != "1":
        problems.append(f"Unknown protocol_version {protocol!r}; only '1' is supported.")

    name = (single["name"] or "").strip()
    if not name:
        problems.append("Missing 'name' field: the project name.")
    elif not is_valid_project_name(name):
        problems.append(
            f"Invalid project name {name!r}: use ASCII letters, digits, and '.', '_' or '-' "
            "inside the name only."
        )

    version_string = (single["version"] or "").strip()
    version: Version | None = None
    if not version_string:
        problems.append("Missing 'version' field.")
    else:
        try:
            version = Version(version_string)
        except InvalidVersion:
            problems.append(
                f"Invalid version {version_string!r}: see "
                "https://packaging.python.org/specifications/version-specifiers/"
            )
        else:
            normalized = str(version)
            if len(normalized) > FIELD_LENGTHS["version"] >= len(version_string):
                problems.append(
                    f"Version {version_string!r} is {len(normalized)} characters long once "
                    f"normalized ({normalized!r}); shorten it to {FIELD_LENGTHS['version']} "
                    "characters or fewer."
                )
            if version.local is not None:
                problems.append(
                    f"Version {version_string!r} has a local part ('+{version.local}'); "
                    "local versions cannot be uploaded to an index."
                )

    filetype = single["filetype"] or ""
    if filetype not in FILETYPES:
        problems.append(
            f"Invalid filetype {filetype!r}: use 'bdist_wheel' for wheels or 'sdist' for "
            ".tar.gz source distributions."
        )
    pyversion = single["pyversion"] or ""
    if filetype == "bdist_wheel" and not pyversion:
        problems.append("Missing 'pyversion' field, required for wheels.")
    if filetype == "sdist":
        # As PyPI: absent means "source"; anything else is a client's mistake, said so.
        if pyversion and pyversion != "source":
            problems.append(
                f"Invalid pyversion {pyversion!r} for an sdist: use 'source' as the Python "
                "version of an sdist."
            )
        pyversion = "source"

    metadata_version = single["metadata_version"] or ""
    if metadata_version not in METADATA_VERSIONS:
        problems.append(
            f"Invalid metadata_version {metadata_version!r}: use one of "
            f"{', '.join(METADATA_VERSIONS)}."
        )

    digests: dict[str, str] = {}
    for algorithm, length in (("md5", 32), ("sha256", 64), ("blake2_256", 64)):
        value = single[f"{algorithm}_digest"]
        if value is None:
            continue
        value = value.strip()
        if len(value) != length or not HEX.match(value):
            problems.append(f"Invalid {algorithm}_digest: expected {length} hex digits.")
        else:
            digests[algorithm] = value.lower()
    if not digests and not any(single[f"{a}_digest"] for a in ("md5", "sha256", "blake2_256")):
        problems.append(
            "Missing digest: give at least one of md5_digest, sha256_digest or blake2_256_digest."
        )

    metadata: dict[str, str | list[str] | dict[str, str] | None] = {
        key: single[key]
        for key in SINGLE_FIELDS
        if key
        not in {":action", "protocol_version", "filetype", "pyversion", "comment", "name", "version"}
        and not key.endswith("_digest")
    }
    for key, spellings in MULTI_FIELDS.items():
        values: list[str] = []
        for spelling in spellings:
            values.extend(v.strip() for v in fields.get(spelling, ()) if _present(v))
        metadata[key] = values
    metadata["project_urls"] = _project_urls(metadata["project_urls"], problems)  # type: ignore[arg-type]

    # Metadata rules proper (packaging's validation plus PyPI's own) only make sense once
    # the form itself is well-formed; their problems are reported together with ours.
    if not problems and version is not None:
        try:
            validate_metadata(metadata_version, name, version_string, metadata)
        except InvalidMetadata as error:
            problems.extend(error.problems)
    if problems or version is None:
        raise FormError(problems or ["Invalid upload."])
    return UploadRequest(
        name=name,
        normalized_name=normalize(name),
        version=version,
        version_string=version_string,
        filetype=filetype,
        pyversion=pyversion,
        metadata_version=metadata_version,
        digests=digests,
        metadata=metadata,
    )


def _project_urls(values: list[str], problems: list[str]) -> dict[str, str]:
    urls: dict[str, str] = {}
    for value in values:
        label, sep, url = value.partition(",")
        if not sep or not label.strip() or not url.strip():
            problems.append(f"Invalid project_urls value {value!r}: use 'Label, https://…'.")
            continue
        label = label.strip()
        if label in urls:
            problems.append(f"Duplicate project_urls label {label!r}: give each URL its own label.")
            continue
        urls[label] = url.strip()
    return urls
