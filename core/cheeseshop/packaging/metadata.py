"""Validate an upload's core metadata the way PyPI (Warehouse) does. Pure: no I/O.

:func:`validate_metadata` checks the metadata fields of an upload form: first with
``packaging.metadata`` (the same validation PyPI and twine run), then with PyPI's own rules on
top (classifiers, URLs, email addresses, summary length, direct references, ...).
:func:`check_core_metadata` checks that a wheel's own ``METADATA`` agrees with the form.
Every problem found is collected and reported at once in :class:`InvalidMetadata`.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping, Sequence
from typing import cast
from urllib.parse import urlsplit

import trove_classifiers
from packaging.metadata import InvalidMetadata as _PackagingInvalidMetadata
from packaging.metadata import Metadata, RawMetadata, parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from cheeseshop.packaging.names import normalize

__all__ = [
    "MAX_PROJECT_URL_LABEL_LENGTH",
    "MAX_SUMMARY_LENGTH",
    "METADATA_VERSIONS",
    "InvalidMetadata",
    "check_core_metadata",
    "validate_metadata",
]

METADATA_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2", "2.1", "2.2", "2.3", "2.4", "2.5")
"""Metadata versions accepted for upload. 2.0 never existed (PEP 426 was withdrawn); 2.6 and
later are refused even where the installed ``packaging`` knows them, until PyPI takes them."""

MAX_SUMMARY_LENGTH = 512
"""Longest Summary PyPI accepts, in characters."""

MAX_PROJECT_URL_LABEL_LENGTH = 32
"""Longest Project-URL label PyPI accepts, in characters."""

_SPEC = "https://packaging.python.org/specifications/core-metadata/"

# Core metadata fields this module knows, in the specification's order (problems are reported
# in this order): RawMetadata key -> field name as written in METADATA / PKG-INFO.
_HEADERS: dict[str, str] = {
    "metadata_version": "Metadata-Version",
    "name": "Name",
    "version": "Version",
    "summary": "Summary",
    "description": "Description",
    "description_content_type": "Description-Content-Type",
    "keywords": "Keywords",
    "home_page": "Home-page",
    "download_url": "Download-URL",
    "author": "Author",
    "author_email": "Author-email",
    "maintainer": "Maintainer",
    "maintainer_email": "Maintainer-email",
    "license": "License",
    "license_expression": "License-Expression",
    "license_files": "License-File",
    "classifiers": "Classifier",
    "platforms": "Platform",
    "supported_platforms": "Supported-Platform",
    "requires_python": "Requires-Python",
    "requires_dist": "Requires-Dist",
    "provides_extra": "Provides-Extra",
    "provides_dist": "Provides-Dist",
    "obsoletes_dist": "Obsoletes-Dist",
    "requires_external": "Requires-External",
    "project_urls": "Project-URL",
    "dynamic": "Dynamic",
    "import_names": "Import-Name",
    "import_namespaces": "Import-Namespace",
}
_ORDER = {key: index for index, key in enumerate(_HEADERS)}
# packaging names a field in its errors by its lower-case METADATA spelling.
_KEY_BY_HEADER = {header.lower(): key for key, header in _HEADERS.items()}

_STRING_KEYS = frozenset(
    {
        "summary",
        "description",
        "description_content_type",
        "home_page",
        "download_url",
        "author",
        "author_email",
        "maintainer",
        "maintainer_email",
        "license",
        "license_expression",
        "requires_python",
    }
)
_LIST_KEYS = frozenset(
    {
        "license_files",
        "classifiers",
        "platforms",
        "supported_platforms",
        "requires_dist",
        "provides_extra",
        "provides_dist",
        "obsoletes_dist",
        "requires_external",
        "dynamic",
        "import_names",
        "import_namespaces",
    }
)
# Form field spellings that differ from the RawMetadata key (twine and uv send these).
_FORM_ALIASES = {
    "platform": "platforms",
    "supported_platform": "supported_platforms",
    "license_file": "license_files",
    "import_name": "import_names",
    "import_namespace": "import_namespaces",
}
# Fields the installed packaging does not know (Import-Name before 26.0) are not validated:
# packaging would only call them "unrecognized".
_SUPPORTED_KEYS = frozenset(key for key in _HEADERS if key in vars(Metadata))

# packaging stops at the first bad value of these multi-valued fields; each value is then
# checked on its own so that every bad one is reported.
_ITEMWISE_KEYS = frozenset(
    {
        "requires_dist",
        "provides_extra",
        "license_files",
        "dynamic",
        "import_names",
        "import_namespaces",
    }
)

_INTRODUCED = re.compile(r"(\S+) introduced in metadata version (\S+), not (\S+)")

_HINTS: dict[str, str] = {
    "name": "Use ASCII letters, digits, and '.', '_' or '-' inside the name only.",
    "version": "Use a PEP 440 version such as '1.0.2'.",
    "summary": "Write the summary on a single line.",
    "description_content_type": (
        "Use text/plain, text/x-rst or text/markdown, optionally with charset=UTF-8 and, "
        "for Markdown, variant=GFM or variant=CommonMark."
    ),
    "requires_python": "Use a version specifier such as '>=3.9'.",
    "requires_dist": (
        "Write each requirement in PEP 508 form, such as 'requests>=2.31; "
        "python_version >= \"3.9\"'."
    ),
    "provides_extra": (
        "Name extras with ASCII letters, digits, '.', '_' and '-', starting and ending "
        "with a letter or digit."
    ),
    "license_expression": (
        "Use a valid SPDX license expression such as 'MIT' or 'Apache-2.0 OR BSD-3-Clause' "
        "(see https://spdx.org/licenses/)."
    ),
    "license_files": (
        "List each license file by its path relative to the project root, with '/' "
        "separators, no '..' and no wildcards."
    ),
    "dynamic": (
        "List only core metadata field names, and never Name, Version or Metadata-Version, "
        "which are always static."
    ),
    "import_names": "Give a dotted Python import name, optionally followed by '; private'.",
    "import_namespaces": "Give a dotted Python import name, optionally followed by '; private'.",
}

_ALLOWED_URL_SCHEMES = ("http", "https")
# Schemes that run code or smuggle content when a page links to them.
_DANGEROUS_URL_SCHEMES = ("javascript", "data", "vbscript")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_EMAIL_ADDRESS = re.compile(
    r"[^\s@<>()\[\],;:\"]+@(?:[^\s@<>()\[\],;:\".]+\.)+[^\s@<>()\[\],;:\".]+"
)
_EMAIL_HINT = (
    "Write addresses as 'name@example.org' or 'Name <name@example.org>', separated by commas."
)


class InvalidMetadata(ValueError):
    """Metadata that cannot be accepted; :attr:`problems` lists every reason.

    Each problem is a complete sentence for the uploader: it names the field, says what is
    wrong and what to do. ``str(exc)`` is all of them joined.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(" ".join(problems))
        self.problems: list[str] = list(problems)


class _Problems:
    """Problems keyed by field, reported in core metadata field order, each once."""

    def __init__(self) -> None:
        self._items: list[tuple[int, str]] = []

    def add(self, key: str, message: str) -> None:
        self._items.append((_ORDER.get(key, len(_ORDER)), message))

    def raise_if_any(self) -> None:
        messages = [message for _, message in sorted(self._items, key=lambda item: item[0])]
        if messages:
            raise InvalidMetadata(list(dict.fromkeys(messages)))


def validate_metadata(
    metadata_version: str, name: str, version: str, fields: Mapping[str, object]
) -> None:
    """Check an upload's metadata as PyPI does; raise :class:`InvalidMetadata` listing all
    problems.

    *fields* holds the upload form's metadata fields, keyed by form field name (``summary``,
    ``classifiers``, ``requires_dist``, ``platform``, ``project_urls``, ...), as
    :func:`cheeseshop.upload.form.read_form` returns them: strings for single fields, lists of
    strings for repeatable ones, ``project_urls`` as ``{label: url}`` (a list of
    ``"Label, URL"`` strings is taken too), ``keywords`` as one comma-separated string.
    ``None``, empty strings and empty lists mean absent; unknown keys are ignored. *name* and
    *version* are the form's own and win over any ``name`` / ``version`` in *fields*.

    The metadata is validated with :meth:`packaging.metadata.Metadata.from_raw`, including
    its refusal of fields newer than *metadata_version*, then with PyPI's rules: supported
    metadata version, Summary length, known and current classifiers, no ``Private ::``
    classifier, http(s) URLs, Project-URL labels, email address lists, no direct-URL
    requirements, License / License-Expression exclusive.
    """
    problems = _Problems()
    raw = _raw_metadata(metadata_version, name, version, fields, problems)

    supported_version = metadata_version in METADATA_VERSIONS
    if not supported_version:
        problems.add("metadata_version", _metadata_version_problem(metadata_version))

    for error in _packaging_errors(raw):
        key = _KEY_BY_HEADER.get(error.field.lower(), error.field)
        if key == "metadata_version" and not supported_version:
            continue  # reported above, with the versions that are accepted
        problems.add(key, _describe(error, metadata_version))

    _check_summary(raw, problems)
    _check_classifiers(raw, problems)
    _check_urls(raw, problems)
    _check_emails(raw, problems)
    _check_requirements(raw, problems)
    if (
        supported_version
        and Version(metadata_version) >= Version("2.4")
        and "license" in raw
        and "license_expression" in raw
    ):
        problems.add(
            "license",
            "License and License-Expression are both given, but from metadata version 2.4 "
            "they are exclusive: keep License-Expression and remove License.",
        )
    problems.raise_if_any()


def check_core_metadata(
    core_metadata: bytes,
    *,
    name: str,
    version: str,
    requires_dist: Sequence[str] | None,
    source: str = "The wheel's METADATA",
) -> None:
    """Check that a wheel's ``METADATA`` (or an sdist's PKG-INFO, named by *source*)
    agrees with the upload form; raise :class:`InvalidMetadata` listing all disagreements.

    *requires_dist* ``None`` skips the requirements comparison (sdists may leave them
    dynamic).

    Its Name must normalize equal to *name*, its Version must equal *version* as versions
    (``1.0`` equals ``1.0.0``), and its Requires-Dist must hold the same requirements as
    *requires_dist*, compared as parsed requirements in any order.
    """
    problems: list[str] = []
    try:
        text = core_metadata.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMetadata(
            [
                f"{source} is not valid UTF-8 (byte {core_metadata[exc.start]:#04x} "
                f"at offset {exc.start}); rebuild the wheel with a current build backend."
            ]
        ) from None
    raw, unparsed = parse_email(text)

    if "name" in unparsed:
        problems.append(f"{source} has more than one Name field; rebuild the distribution.")
    elif not raw.get("name"):
        problems.append(f"{source} has no Name field; rebuild the distribution.")
    elif normalize(raw["name"]) != normalize(name):
        problems.append(
            f"{source} names the project {raw['name']!r}, but the upload is for "
            f"{name!r}; upload the wheel to its own project, or rebuild it with the right name."
        )

    if "version" in unparsed:
        problems.append(
            f"{source} has more than one Version field; rebuild the distribution."
        )
    elif not raw.get("version"):
        problems.append(f"{source} has no Version field; rebuild the distribution.")
    elif not _same_version(raw["version"], version):
        problems.append(
            f"{source} gives version {raw['version']!r}, but the upload is for "
            f"version {version!r}; upload it as the version it was built for."
        )

    if requires_dist is None:  # an sdist's PKG-INFO may leave requirements dynamic
        if problems:
            raise InvalidMetadata(problems)
        return
    in_metadata: set[str] = set()
    for value in raw.get("requires_dist", []):
        try:
            in_metadata.add(str(Requirement(value)))
        except InvalidRequirement as exc:
            problems.append(
                f"{source} has an invalid Requires-Dist {value!r} "
                f"({_first_line(exc)}); rebuild the distribution."
            )
            in_metadata.add(value.strip())
    in_form = {_requirement_key(value) for value in requires_dist if value.strip()}
    if in_metadata != in_form:
        only_metadata = ", ".join(repr(r) for r in sorted(in_metadata - in_form)) or "none"
        only_form = ", ".join(repr(r) for r in sorted(in_form - in_metadata)) or "none"
        problems.append(
            f"{source} Requires-Dist differs from the upload form's requires_dist "
            f"(only in METADATA: {only_metadata}; only in the form: {only_form}); upload with "
            "a client that sends the wheel's own metadata, such as twine or uv."
        )

    if problems:
        raise InvalidMetadata(problems)


# --- building the RawMetadata ---------------------------------------------------------------


def _raw_metadata(
    metadata_version: str,
    name: str,
    version: str,
    fields: Mapping[str, object],
    problems: _Problems,
) -> RawMetadata:
    raw: dict[str, object] = {
        "metadata_version": metadata_version,
        "name": name,
        "version": version,
    }
    lists: dict[str, list[str]] = {}
    for form_key, value in fields.items():
        key = _FORM_ALIASES.get(form_key, form_key)
        if key in _STRING_KEYS:
            text = _single(key, value, problems)
            if text is not None:
                raw[key] = text
        elif key in _LIST_KEYS:
            lists.setdefault(key, []).extend(_many(key, value, problems))
        elif key == "keywords":
            keywords = _keywords(value, problems)
            if keywords:
                raw[key] = keywords
        elif key == "project_urls":
            urls = _project_urls(value, problems)
            if urls:
                raw[key] = urls
    # An empty list is left out, not passed on: packaging would take a present-but-empty
    # Classifier (twine and uv send those) for a field newer than metadata 1.0 and refuse it.
    raw.update({key: values for key, values in lists.items() if values})
    return cast(RawMetadata, {k: v for k, v in raw.items() if k in _SUPPORTED_KEYS})


def _single(key: str, value: object, problems: _Problems) -> str | None:
    header = _HEADERS[key]
    if isinstance(value, list | tuple):
        values = [v for v in value if not (isinstance(v, str) and not v.strip())]
        if len(values) > 1:
            problems.add(key, f"{header} was given {len(values)} values; give one.")
            return None
        value = values[0] if values else None
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(key, f"{header} must be text, not {type(value).__name__}.")
        return None
    # The description keeps its whitespace (it is markup); around any other value it means
    # nothing, and read_form passes single values on unstripped.
    text = value if key == "description" else value.strip()
    return text if text.strip() else None


def _many(key: str, value: object, problems: _Problems) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        problems.add(key, f"{_HEADERS[key]} must be a list of text values.")
        return []
    return [v.strip() for v in items if v.strip()]


def _keywords(value: object, problems: _Problems) -> list[str]:
    # One string, "a, b" (twine) or "a,b" (uv); a list of such strings is taken too.
    parts = _many("keywords", value, problems)
    return [word.strip() for part in parts for word in part.split(",") if word.strip()]


def _project_urls(value: object, problems: _Problems) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = [(str(label).strip(), str(url).strip()) for label, url in value.items()]
    else:
        pairs = []
        for item in _many("project_urls", value, problems):
            label, _, url = item.partition(",")
            pairs.append((label.strip(), url.strip()))
    urls: dict[str, str] = {}
    for label, url in pairs:
        if label in urls:
            problems.add(
                "project_urls", f"Project-URL label {label!r} is given twice; give each once."
            )
            continue
        urls[label] = url
    return urls


# --- packaging's validation -----------------------------------------------------------------


def _packaging_errors(raw: RawMetadata) -> list[_PackagingInvalidMetadata]:
    errors = _from_raw_errors(raw)
    result: list[_PackagingInvalidMetadata] = []
    for error in errors:
        key = _KEY_BY_HEADER.get(error.field.lower(), error.field)
        values = raw.get(key)
        if (
            key in _ITEMWISE_KEYS
            and isinstance(values, list)
            and len(values) > 1
            and not _INTRODUCED.fullmatch(str(error))
        ):
            base = {k: v for k, v in raw.items() if k in ("metadata_version", "name", "version")}
            for item in values:
                probe = cast(RawMetadata, {**base, key: [item]})
                result.extend(e for e in _from_raw_errors(probe) if e.field == error.field)
        else:
            result.append(error)
    return result


def _from_raw_errors(raw: RawMetadata) -> list[_PackagingInvalidMetadata]:
    try:
        Metadata.from_raw(raw, validate=True)
    except ExceptionGroup as group:
        return list(_flatten(group))
    return []


def _flatten(group: BaseExceptionGroup[BaseException]) -> list[_PackagingInvalidMetadata]:
    found: list[_PackagingInvalidMetadata] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_flatten(exc))
        elif isinstance(exc, _PackagingInvalidMetadata):
            found.append(exc)
        else:  # packaging only collects InvalidMetadata; anything else is a bug to surface
            raise exc
    return found


def _describe(error: _PackagingInvalidMetadata, metadata_version: str) -> str:
    key = _KEY_BY_HEADER.get(error.field.lower(), error.field)
    header = _HEADERS.get(key, error.field)
    message = str(error)
    introduced = _INTRODUCED.fullmatch(message)
    if introduced:
        added = introduced.group(2)
        return (
            f"{header} was introduced in metadata version {added}, but this upload declares "
            f"metadata version {metadata_version}: declare {added} or later, or leave "
            f"{header} out."
        )
    detail = ""
    if error.__cause__ is not None:
        cause = _first_line(error.__cause__)
        if cause and cause not in message:
            detail = f" ({cause})"
    hint = _HINTS.get(key, f"See {_SPEC}.")
    return f"{header}: {message.rstrip('.')}{detail}. {hint}"


def _metadata_version_problem(metadata_version: str) -> str:
    accepted = ", ".join(METADATA_VERSIONS)
    if not metadata_version:
        return f"Metadata-Version is missing; give one of {accepted}."
    if metadata_version == "2.0":
        return (
            "Metadata-Version '2.0' never existed (PEP 426 was withdrawn); rebuild with a "
            f"current build backend, which writes one of {accepted}."
        )
    return f"Metadata-Version {metadata_version!r} is not supported; use one of {accepted}."


# --- PyPI's own rules -----------------------------------------------------------------------


def _check_summary(raw: RawMetadata, problems: _Problems) -> None:
    summary = raw.get("summary")
    if summary is not None and len(summary) > MAX_SUMMARY_LENGTH:
        problems.add(
            "summary",
            f"Summary is {len(summary)} characters long; shorten it to "
            f"{MAX_SUMMARY_LENGTH} characters or fewer.",
        )


def _check_classifiers(raw: RawMetadata, problems: _Problems) -> None:
    for classifier in dict.fromkeys(raw.get("classifiers", [])):
        # PyPI refuses "Private ::" classifiers outright so that a project marked private
        # can never be published by mistake; this index mirrors that rule.
        if classifier.startswith("Private ::"):
            problems.add(
                "classifiers",
                f"Classifier {classifier!r} is a private classifier; private classifiers "
                "prevent upload to PyPI, and this index keeps that rule: remove it to upload.",
            )
        elif classifier in trove_classifiers.deprecated_classifiers:
            replacements = trove_classifiers.deprecated_classifiers[classifier]
            if replacements:
                instead = " or ".join(repr(r) for r in replacements)
                problems.add(
                    "classifiers",
                    f"Classifier {classifier!r} is deprecated; use {instead} instead.",
                )
            else:
                problems.add(
                    "classifiers", f"Classifier {classifier!r} is deprecated; remove it."
                )
        elif classifier not in trove_classifiers.classifiers:
            problems.add(
                "classifiers",
                f"Classifier {classifier!r} is not a valid classifier; use only classifiers "
                "listed at https://pypi.org/classifiers/.",
            )


def _check_urls(raw: RawMetadata, problems: _Problems) -> None:
    for key in ("home_page", "download_url"):
        url = raw.get(key)
        if url is not None:
            problem = _url_problem(_HEADERS[key], url)
            if problem:
                problems.add(key, problem)
    for label, url in raw.get("project_urls", {}).items():
        if not label:
            problems.add(
                "project_urls",
                f"Project-URL {url!r} has no label; write it as 'Label, https://...'.",
            )
        elif len(label) > MAX_PROJECT_URL_LABEL_LENGTH:
            problems.add(
                "project_urls",
                f"Project-URL label {label!r} is {len(label)} characters long; shorten it to "
                f"{MAX_PROJECT_URL_LABEL_LENGTH} characters or fewer.",
            )
        if not url:
            problems.add(
                "project_urls",
                f"Project-URL {label!r} has no URL; write it as 'Label, https://...'.",
            )
        else:
            problem = _url_problem(f"Project-URL {label!r}", url)
            if problem:
                problems.add("project_urls", problem)


def _url_problem(what: str, url: str) -> str | None:
    # Browsers drop whitespace and control characters inside a scheme ("java\tscript:"), so
    # look at the scheme as a browser would before naming it.
    probe = _CONTROL_OR_SPACE.sub("", url).lower()
    scheme, colon, _ = probe.partition(":")
    if colon and scheme in _DANGEROUS_URL_SCHEMES:
        return (
            f"{what} is a {scheme}: URL, which is never allowed; give an http:// or https:// URL."
        )
    invalid = f"{what} {url!r} is not a valid URL; give an absolute http:// or https:// URL."
    if _CONTROL_OR_SPACE.search(url):
        return invalid
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        return invalid
    if parts.scheme.lower() not in _ALLOWED_URL_SCHEMES or not parts.hostname:
        return invalid
    return None


def _check_emails(raw: RawMetadata, problems: _Problems) -> None:
    for key in ("author_email", "maintainer_email"):
        value = raw.get(key)
        if value is None:
            continue
        header = _HEADERS[key]
        addresses = [address for _, address in email.utils.getaddresses([value])]
        if not addresses:
            problems.add(key, f"{header} {value!r} holds no email address. {_EMAIL_HINT}")
        for address in addresses:
            if not _EMAIL_ADDRESS.fullmatch(address):
                problems.add(
                    key,
                    f"{header} {value!r} is not a valid list of email addresses: "
                    f"{address!r} is not an email address. {_EMAIL_HINT}",
                )


def _check_requirements(raw: RawMetadata, problems: _Problems) -> None:
    for key in ("requires_dist", "provides_dist", "obsoletes_dist"):
        header = _HEADERS[key]
        for value in raw.get(key, []):
            try:
                requirement = Requirement(value)
            except InvalidRequirement as exc:
                if key == "requires_dist":
                    continue  # packaging has reported it
                # packaging does not parse Provides-Dist / Obsoletes-Dist; PyPI does.
                problems.add(
                    key,
                    f"{header} {value!r} is not a valid requirement ({_first_line(exc)}). "
                    f"{_HINTS['requires_dist']}",
                )
                continue
            if requirement.url is not None:
                problems.add(
                    key,
                    f"{header} {value!r} is a direct URL reference, which an index cannot "
                    "accept; depend on a released project by name and version instead.",
                )


# --- helpers --------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else ""


def _same_version(left: str, right: str) -> bool:
    try:
        return Version(left) == Version(right)
    except InvalidVersion:
        return left.strip() == right.strip()


def _requirement_key(value: str) -> str:
    try:
        return str(Requirement(value))
    except InvalidRequirement:
        return value.strip()  # validate_metadata reports it; compare it as written
