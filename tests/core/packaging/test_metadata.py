"""Tests for cheeseshop.packaging.metadata: PyPI's metadata rules and the wheel METADATA check."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trove_classifiers
from packaging.version import Version

from cheeseshop.packaging.metadata import (
    METADATA_VERSIONS,
    InvalidMetadata,
    check_core_metadata,
    validate_metadata,
)
from cheeseshop.upload.form import FormError, read_form

DEPRECATED_WITH_REPLACEMENT, REPLACEMENTS = next(
    (c, r) for c, r in sorted(trove_classifiers.deprecated_classifiers.items()) if r
)
DEPRECATED_WITHOUT_REPLACEMENT = next(
    c for c, r in sorted(trove_classifiers.deprecated_classifiers.items()) if not r
)


def problems_of(
    metadata_version: str,
    fields: dict[str, object],
    *,
    name: str = "hello-world",
    version: str = "1.0",
) -> list[str]:
    with pytest.raises(InvalidMetadata) as info:
        validate_metadata(metadata_version, name, version, fields)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.problems, "InvalidMetadata always says what is wrong"
    assert str(error) == " ".join(error.problems)
    return error.problems


# -- one row per rule -----------------------------------------------------------------------

# (metadata_version, fields, name, version, fragment of the one problem expected)
RULES = [
    pytest.param("2.0", {}, "hello-world", "1.0", "Metadata-Version '2.0' never existed",
                 id="metadata-version-2.0"),
    pytest.param("2.6", {}, "hello-world", "1.0", "Metadata-Version '2.6' is not supported",
                 id="metadata-version-2.6-newer-than-pypi"),
    pytest.param("3.0", {}, "hello-world", "1.0", "Metadata-Version '3.0' is not supported",
                 id="metadata-version-unknown"),
    pytest.param("", {}, "hello-world", "1.0", "Metadata-Version is missing",
                 id="metadata-version-missing"),
    pytest.param("2.4", {}, "-hello", "1.0", "Name: '-hello' is invalid for 'name'",
                 id="name-invalid"),
    pytest.param("2.4", {}, "hello-world", "one", "Version: 'one' is invalid for 'version'",
                 id="version-invalid"),
    pytest.param("2.4", {"summary": "x" * 513}, "hello-world", "1.0",
                 "Summary is 513 characters long; shorten it to 512", id="summary-too-long"),
    pytest.param("2.4", {"summary": "line one\nline two"}, "hello-world", "1.0",
                 "Summary: 'summary' must be a single line", id="summary-two-lines"),
    pytest.param("2.4", {"summary": ["one", "two"]}, "hello-world", "1.0",
                 "Summary was given 2 values; give one", id="summary-given-twice"),
    pytest.param("2.4", {"classifiers": ["Framework :: Nonesuch"]}, "hello-world", "1.0",
                 "Classifier 'Framework :: Nonesuch' is not a valid classifier",
                 id="classifier-unknown"),
    pytest.param("2.4", {"classifiers": [DEPRECATED_WITH_REPLACEMENT]}, "hello-world", "1.0",
                 f"Classifier {DEPRECATED_WITH_REPLACEMENT!r} is deprecated; use "
                 f"{REPLACEMENTS[0]!r}", id="classifier-deprecated-with-replacement"),
    pytest.param("2.4", {"classifiers": [DEPRECATED_WITHOUT_REPLACEMENT]}, "hello-world", "1.0",
                 f"Classifier {DEPRECATED_WITHOUT_REPLACEMENT!r} is deprecated; remove it",
                 id="classifier-deprecated-without-replacement"),
    pytest.param("2.4", {"classifiers": ["Private :: Do Not Upload"]}, "hello-world", "1.0",
                 "private classifiers prevent upload to PyPI", id="classifier-private"),
    pytest.param("2.4", {"project_urls": {"L" * 33: "https://example.org"}}, "hello-world",
                 "1.0", "is 33 characters long; shorten it to 32", id="project-url-label-33"),
    pytest.param("2.4", {"project_urls": {"": "https://example.org"}}, "hello-world", "1.0",
                 "Project-URL 'https://example.org' has no label", id="project-url-no-label"),
    pytest.param("2.4", {"project_urls": {"Source": ""}}, "hello-world", "1.0",
                 "Project-URL 'Source' has no URL", id="project-url-no-url"),
    pytest.param("2.4", {"project_urls": {"Source": "ftp://example.org/src"}}, "hello-world",
                 "1.0", "Project-URL 'Source' 'ftp://example.org/src' is not a valid URL",
                 id="project-url-not-http"),
    pytest.param("2.4", {"project_urls": {"Source": "https:///src"}}, "hello-world", "1.0",
                 "Project-URL 'Source' 'https:///src' is not a valid URL",
                 id="project-url-no-host"),
    pytest.param("2.4", {"project_urls": {"Source": "javascript:alert(1)"}}, "hello-world",
                 "1.0", "Project-URL 'Source' is a javascript: URL, which is never allowed",
                 id="project-url-javascript"),
    pytest.param("2.4", {"project_urls": {"Logo": "data:image/svg+xml,<svg/>"}},
                 "hello-world", "1.0", "Project-URL 'Logo' is a data: URL",
                 id="project-url-data"),
    pytest.param("2.4", {"project_urls": ["Docs, https://a.example", "Docs, https://b.example"]},
                 "hello-world", "1.0", "Project-URL label 'Docs' is given twice",
                 id="project-url-duplicate-label"),
    pytest.param("2.4", {"home_page": "example.org"}, "hello-world", "1.0",
                 "Home-page 'example.org' is not a valid URL", id="home-page-no-scheme"),
    pytest.param("2.4", {"home_page": " Java\tScript:alert(1)"}, "hello-world", "1.0",
                 "Home-page is a javascript: URL", id="home-page-javascript-obfuscated"),
    pytest.param("2.4", {"home_page": "https://exa mple.org"}, "hello-world", "1.0",
                 "Home-page 'https://exa mple.org' is not a valid URL", id="home-page-space"),
    pytest.param("2.4", {"download_url": "data:text/html,<b>hi</b>"}, "hello-world", "1.0",
                 "Download-URL is a data: URL", id="download-url-data"),
    pytest.param("2.4", {"download_url": "https://example.org:99999/"}, "hello-world", "1.0",
                 "Download-URL 'https://example.org:99999/' is not a valid URL",
                 id="download-url-bad-port"),
    pytest.param("2.4", {"requires_dist": ["pkg @ https://example.org/pkg-1.0.tar.gz"]},
                 "hello-world", "1.0", "Requires-Dist 'pkg @ https://example.org/pkg-1.0.tar.gz'"
                 " is a direct URL reference", id="requires-dist-direct-url"),
    pytest.param("2.4", {"requires_dist": ["pkg >="]}, "hello-world", "1.0",
                 "Requires-Dist: 'pkg >=' is invalid for 'requires-dist'",
                 id="requires-dist-invalid"),
    pytest.param("2.4", {"provides_dist": ["virtual @ file:///tmp/virtual"]}, "hello-world",
                 "1.0", "Provides-Dist 'virtual @ file:///tmp/virtual' is a direct URL",
                 id="provides-dist-direct-url"),
    pytest.param("2.4", {"obsoletes_dist": ["Old (1.0"]}, "hello-world", "1.0",
                 "Obsoletes-Dist 'Old (1.0' is not a valid requirement",
                 id="obsoletes-dist-invalid"),
    pytest.param("2.4", {"requires_python": "=>3.9"}, "hello-world", "1.0",
                 "Requires-Python: '=>3.9' is invalid", id="requires-python-invalid"),
    pytest.param("2.4", {"provides_extra": ["tests and docs"]}, "hello-world", "1.0",
                 "Provides-Extra: 'tests and docs' is invalid", id="provides-extra-invalid"),
    pytest.param("2.4", {"license": "MIT", "license_expression": "MIT"}, "hello-world", "1.0",
                 "License and License-Expression are both given", id="license-and-expression"),
    pytest.param("2.4", {"license_expression": "MIT OR Nonesuch"}, "hello-world", "1.0",
                 "License-Expression: 'MIT OR Nonesuch' is invalid for 'license-expression' "
                 "(Unknown license: 'nonesuch')", id="license-expression-not-spdx"),
    pytest.param("2.4", {"license_files": ["../LICENSE"]}, "hello-world", "1.0",
                 "License-File: '../LICENSE' is invalid", id="license-file-parent"),
    pytest.param("2.4", {"dynamic": ["Name"]}, "hello-world", "1.0",
                 "Dynamic: 'name' is not allowed as a dynamic field", id="dynamic-name"),
    pytest.param("2.4", {"dynamic": ["Version"]}, "hello-world", "1.0",
                 "Dynamic: 'version' is not allowed as a dynamic field", id="dynamic-version"),
    pytest.param("2.4", {"dynamic": ["Metadata-Version"]}, "hello-world", "1.0",
                 "Dynamic: 'metadata-version' is not allowed", id="dynamic-metadata-version"),
    pytest.param("2.4", {"dynamic": ["Colour"]}, "hello-world", "1.0",
                 "Dynamic: 'colour' is not a valid dynamic field", id="dynamic-unknown-field"),
    pytest.param("2.1", {"dynamic": ["Summary"]}, "hello-world", "1.0",
                 "Dynamic was introduced in metadata version 2.2, but this upload declares "
                 "metadata version 2.1", id="dynamic-before-2.2"),
    pytest.param("2.4", {"author_email": "Jane <jane@example.org>, nobody"}, "hello-world",
                 "1.0", "Author-email 'Jane <jane@example.org>, nobody' is not a valid list of "
                 "email addresses: 'nobody' is not an email address", id="author-email-invalid"),
    pytest.param("2.4", {"maintainer_email": "jane@localhost"}, "hello-world", "1.0",
                 "Maintainer-email 'jane@localhost' is not a valid list of email addresses",
                 id="maintainer-email-no-dot"),
    pytest.param("2.4", {"author_email": "Jane <>"}, "hello-world", "1.0",
                 "'' is not an email address", id="author-email-empty-address"),
    pytest.param("2.4", {"description_content_type": "text/html"}, "hello-world", "1.0",
                 "Description-Content-Type: 'description-content-type' must be one of",
                 id="description-content-type-html"),
    pytest.param("2.3", {"license_expression": "MIT"}, "hello-world", "1.0",
                 "License-Expression was introduced in metadata version 2.4",
                 id="license-expression-before-2.4"),
    pytest.param("2.1", {"license_files": ["LICENSE"]}, "hello-world", "1.0",
                 "License-File was introduced in metadata version 2.4",
                 id="license-file-before-2.4"),
    pytest.param("1.0", {"classifiers": ["Programming Language :: Python"]}, "hello-world",
                 "1.0", "Classifier was introduced in metadata version 1.1",
                 id="classifier-before-1.1"),
    pytest.param("1.1", {"project_urls": {"Source": "https://example.org"}}, "hello-world",
                 "1.0", "Project-URL was introduced in metadata version 1.2",
                 id="project-url-before-1.2"),
    pytest.param("2.4", {"import_names": ["hello"]}, "hello-world", "1.0",
                 "Import-Name was introduced in metadata version 2.5", id="import-name-before-2.5"),
    pytest.param("2.5", {"import_names": ["hello.1world"]}, "hello-world", "1.0",
                 "Import-Name: 'hello.1world' is invalid for 'import-name'",
                 id="import-name-invalid"),
]


@pytest.mark.parametrize(("metadata_version", "fields", "name", "version", "fragment"), RULES)
def test_each_rule_reports_one_problem(
    metadata_version: str, fields: dict[str, object], name: str, version: str, fragment: str
) -> None:
    problems = problems_of(metadata_version, fields, name=name, version=version)
    assert len(problems) == 1, problems
    assert fragment in problems[0], problems[0]


# -- accepted metadata ----------------------------------------------------------------------

# Fields as they first became allowed, metadata version by metadata version.
FIELDS_BY_VERSION: dict[str, dict[str, object]] = {
    "1.0": {
        "summary": "Says hello.",
        "description": "Hello\n=====\n\nSays hello.\n",
        "keywords": "hello, world",
        "home_page": "https://example.org/hello",
        "author": "Jane Doe",
        "author_email": "Jane Doe <jane@example.org>",
        "license": "MIT",
        "platform": ["any"],
    },
    "1.1": {
        "classifiers": ["Programming Language :: Python :: 3", "License :: OSI Approved"],
        "download_url": "https://example.org/hello/download",
        "supported_platform": ["linux-x86_64"],
    },
    "1.2": {
        "maintainer": "John Roe",
        "maintainer_email": "john@example.org",
        "requires_dist": ["requests>=2.31", "tomli; python_version < '3.11'"],
        "requires_python": ">=3.9",
        "requires_external": ["libpng (>=1.5)"],
        "provides_dist": ["hello-virtual"],
        "obsoletes_dist": ["old-hello (<1.0)"],
        "project_urls": {"Source": "https://example.org/src", "Issues": "http://bugs.example.org"},
    },
    "2.1": {
        "description_content_type": "text/markdown; charset=UTF-8; variant=GFM",
        "provides_extra": ["tests"],
    },
    "2.2": {"dynamic": ["Requires-Dist", "Classifier"]},
    "2.3": {},
    "2.4": {
        "license_expression": "MIT OR Apache-2.0",
        "license_files": ["LICENSE", "licenses/NOTICE"],
    },
    "2.5": {"import_names": ["hello", "hello._impl; private"], "import_namespaces": ["hello_ns"]},
}


def fields_for(metadata_version: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    for version, added in FIELDS_BY_VERSION.items():
        if Version(version) <= Version(metadata_version):
            fields.update(added)
    if Version(metadata_version) >= Version("2.4"):
        del fields["license"]  # exclusive with License-Expression from 2.4
    return fields


def test_every_accepted_metadata_version_is_listed() -> None:
    assert METADATA_VERSIONS == tuple(FIELDS_BY_VERSION)


@pytest.mark.parametrize("metadata_version", METADATA_VERSIONS)
def test_valid_metadata_for_every_version_passes(metadata_version: str) -> None:
    validate_metadata(metadata_version, "hello-world", "1.0", fields_for(metadata_version))


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"summary": "x" * 512}, id="summary-512"),
        pytest.param({"summary": "  Says hello.\n"}, id="summary-surrounding-whitespace"),
        pytest.param({"project_urls": {"L" * 32: "https://example.org"}}, id="label-32"),
        pytest.param({"project_urls": ["Docs, https://docs.example.org/a,b"]},
                     id="project-urls-as-label-comma-url"),
        pytest.param({"home_page": "HTTPS://Example.org:8443/a?b=c#d"}, id="url-upper-scheme"),
        pytest.param({"author_email": '"Doe, Jane" <jane@example.org>, john@example.org'},
                     id="email-list-quoted-comma"),
        pytest.param({"author_email": "Jürgen Müller <jürgen@müller.example>"},
                     id="email-unicode"),
        pytest.param({"maintainer_email": "jane+pkg@mail.example.co.uk (Jane)"},
                     id="email-comment"),
        pytest.param({"keywords": "a, b"}, id="keywords-comma-space"),
        pytest.param({"keywords": "a,b"}, id="keywords-comma"),
        pytest.param({"keywords": "a b c"}, id="keywords-spaces"),
        pytest.param({"classifiers": [], "platform": [], "supported_platform": [],
                      "requires_dist": [], "project_urls": {}, "dynamic": [],
                      "license_files": [], "import_names": []}, id="empty-lists"),
        pytest.param({"summary": None, "license": "", "home_page": "   "}, id="absent-values"),
        pytest.param({"requires_dist": ["a>=1", "b[x] (>=2,<3)", 'c; extra == "tests"']},
                     id="requirements-old-and-new-style"),
        pytest.param({"comment": "ignored", "pyversion": "py3", "unknown": ["x"]},
                     id="unknown-keys-ignored"),
        pytest.param({"name": "-ignored-", "version": "ignored", "metadata_version": "9"},
                     id="name-version-from-arguments"),
        pytest.param({"license": "Proprietary", "license_expression": None},
                     id="license-alone-in-2.4"),
    ],
)
def test_accepted_values(fields: dict[str, object]) -> None:
    validate_metadata("2.4", "hello-world", "1.0", fields)


def test_empty_lists_pass_even_for_metadata_1_0() -> None:
    # twine and uv send empty repeatable fields; they must not count as "newer fields".
    validate_metadata(
        "1.0",
        "hello-world",
        "1.0",
        {"classifiers": [], "requires_dist": [], "project_urls": {}, "dynamic": []},
    )


# -- client-shaped forms, through read_form --------------------------------------------------


def twine_form(**extra: list[str]) -> dict[str, list[str]]:
    """The fields twine 6 sends for a setuptools-built 2.2 wheel (multi-valued form)."""
    fields = {
        ":action": ["file_upload"],
        "protocol_version": ["1"],
        "metadata_version": ["2.2"],
        "name": ["hello-world"],
        "version": ["1.0.post1"],
        "summary": ["Says hello."],
        "description": ["Hello\n=====\n"],
        "description_content_type": ["text/x-rst"],
        "keywords": ["hello, world"],
        "home_page": ["https://example.org"],
        "author": ["Jane"],
        "author_email": ["jane@example.org"],
        "license": ["UNKNOWN"],
        "classifiers": [
            "Programming Language :: Python :: 3",
            "Operating System :: OS Independent",
        ],
        "requires_dist": ["requests>=2", 'pytest; extra == "tests"'],
        "provides_extra": ["tests"],
        "requires_python": [">=3.9"],
        "project_urls": ["Source, https://example.org/src", "Changelog, https://example.org/c"],
        "dynamic": ["license-file"],
        "pyversion": ["py3"],
        "filetype": ["bdist_wheel"],
        "comment": [""],
        "sha256_digest": ["ab" * 32],
        "blake2_256_digest": ["cd" * 32],
    }
    fields.update(extra)
    return fields


def uv_form(**extra: list[str]) -> dict[str, list[str]]:
    """The fields uv publish sends for a hatchling-built 2.5 sdist."""
    fields = {
        ":action": ["file_upload"],
        "protocol_version": ["1"],
        "metadata_version": ["2.5"],
        "name": ["Hello_World"],
        "version": ["1.0"],
        "summary": ["Says hello."],
        "keywords": ["hello,world"],
        "author_email": ['"Doe, Jane" <jane@example.org>'],
        "license_expression": ["MIT"],
        "license_file": ["LICENSE.txt"],
        "classifiers": [],
        "platform": [],
        "requires_dist": [],
        "import_name": ["hello_world"],
        "project_urls": ["Homepage, https://example.org"],
        "filetype": ["sdist"],
        "pyversion": ["source"],
        "sha256_digest": ["ab" * 32],
        "blake2_256_digest": ["cd" * 32],
    }
    fields.update(extra)
    return fields


@pytest.mark.parametrize("make_form", [twine_form, uv_form], ids=["twine", "uv"])
def test_client_forms_pass(make_form: Callable[..., dict[str, list[str]]]) -> None:
    request = read_form(make_form())
    validate_metadata(
        request.metadata_version, request.name, request.version_string, request.metadata
    )


@pytest.mark.parametrize("make_form", [twine_form, uv_form], ids=["twine", "uv"])
def test_client_forms_are_checked(make_form: Callable[..., dict[str, list[str]]]) -> None:
    # read_form runs validate_metadata itself and reports its problems as form problems.
    with pytest.raises(FormError) as caught:
        read_form(make_form(classifiers=["Not :: A :: Classifier"]))
    assert caught.value.problems == [
        "Classifier 'Not :: A :: Classifier' is not a valid classifier; use only classifiers "
        "listed at https://pypi.org/classifiers/."
    ]


# -- several problems at once ----------------------------------------------------------------


def test_every_problem_is_reported_in_field_order() -> None:
    problems = problems_of(
        "2.4",
        {
            # Given out of field order on purpose: problems come back in field order.
            "project_urls": {"Source": "javascript:void(0)"},
            "classifiers": ["Private :: Internal", "Nonesuch :: Classifier"],
            "summary": "s" * 600,
            "requires_dist": ["good>=1", "bad >=", "worse ==", "direct @ https://x.example/d"],
            "author_email": "not-an-address",
            "license": "MIT",
            "license_expression": "MIT",
            "dynamic": ["Name", "Version"],
            "home_page": "ftp://example.org",
        },
    )
    assert [p.split(" ")[0].rstrip(":") for p in problems] == [
        "Summary",
        "Home-page",
        "Author-email",
        "License",
        "Classifier",
        "Classifier",
        "Requires-Dist",
        "Requires-Dist",
        "Requires-Dist",
        "Project-URL",
        "Dynamic",
        "Dynamic",
    ]
    joined = "\n".join(problems)
    for fragment in (
        "'bad >='",
        "'worse =='",
        "'direct @ https://x.example/d' is a direct URL reference",
        "'name' is not allowed",
        "'version' is not allowed",
        "private classifiers prevent upload",
        "'Nonesuch :: Classifier' is not a valid classifier",
    ):
        assert fragment in joined


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"classifiers": ["Nope :: Nope", "Nope :: Nope"]}, id="classifier"),
        pytest.param({"requires_dist": ["bad >=", "bad >="]}, id="requires-dist"),
        pytest.param({"dynamic": ["name", "Name"]}, id="dynamic"),
    ],
)
def test_a_repeated_problem_is_reported_once(fields: dict[str, object]) -> None:
    assert len(problems_of("2.4", fields)) == 1


def test_unsupported_version_still_checks_the_other_fields() -> None:
    problems = problems_of("2.0", {"summary": "a\nb", "classifiers": ["Nope :: Nope"]})
    assert len(problems) == 3
    assert problems[0].startswith("Metadata-Version '2.0' never existed")


# -- check_core_metadata ---------------------------------------------------------------------

METADATA = (
    b"Metadata-Version: 2.4\n"
    b"Name: Hello_World\n"
    b"Version: 1.0.0\n"
    b"Summary: Says hello \xe2\x9c\x93\n"
    b"Requires-Dist: requests (>=2.31)\n"
    b"Requires-Dist: tomli ; python_version < '3.11'\n"
    b"\n"
    b"Hello\n"
)
FORM_REQUIRES = ['tomli; python_version < "3.11"', "requests>=2.31"]


def test_core_metadata_agreeing_with_the_form_passes() -> None:
    check_core_metadata(METADATA, name="hello.world", version="1.0", requires_dist=FORM_REQUIRES)


def test_core_metadata_without_requirements_passes() -> None:
    check_core_metadata(
        b"Metadata-Version: 2.1\nName: hello-world\nVersion: 1.0\n",
        name="hello-world",
        version="1.0",
        requires_dist=[],
    )


@pytest.mark.parametrize(
    ("core_metadata", "name", "version", "requires_dist", "fragment"),
    [
        pytest.param(METADATA, "hello-there", "1.0", FORM_REQUIRES,
                     "The wheel's METADATA names the project 'Hello_World', but the upload is "
                     "for 'hello-there'", id="name-differs"),
        pytest.param(METADATA, "hello-world", "1.0.1", FORM_REQUIRES,
                     "The wheel's METADATA gives version '1.0.0', but the upload is for version "
                     "'1.0.1'", id="version-differs"),
        pytest.param(METADATA, "hello-world", "1.0", ["requests>=2.31"],
                     "only in METADATA: 'tomli; python_version < \"3.11\"'; only in the form: "
                     "none", id="requirement-missing-from-form"),
        pytest.param(METADATA, "hello-world", "1.0", [*FORM_REQUIRES, "rich"],
                     "only in METADATA: none; only in the form: 'rich'",
                     id="requirement-extra-in-form"),
        pytest.param(METADATA, "hello-world", "1.0", ["requests>=2.30", FORM_REQUIRES[0]],
                     "only in METADATA: 'requests>=2.31'; only in the form: 'requests>=2.30'",
                     id="requirement-differs"),
        pytest.param(METADATA.replace(b"\xe2\x9c\x93", b"\xff"), "hello-world", "1.0",
                     FORM_REQUIRES, "The wheel's METADATA is not valid UTF-8 (byte 0xff",
                     id="not-utf8"),
        pytest.param(b"Metadata-Version: 2.1\nVersion: 1.0\n", "hello-world", "1.0", [],
                     "The wheel's METADATA has no Name field", id="no-name"),
        pytest.param(b"Metadata-Version: 2.1\nName: a\nName: b\nVersion: 1.0\n", "a", "1.0", [],
                     "The wheel's METADATA has more than one Name field", id="two-names"),
        pytest.param(b"Metadata-Version: 2.1\nName: hello-world\n", "hello-world", "1.0", [],
                     "The wheel's METADATA has no Version field", id="no-version"),
        pytest.param(b"Metadata-Version: 2.1\nName: hello-world\nVersion: 1.0\n"
                     b"Requires-Dist: bad >=\n", "hello-world", "1.0", ["bad >="],
                     "The wheel's METADATA has an invalid Requires-Dist 'bad >='",
                     id="invalid-requirement"),
    ],
)
def test_core_metadata_disagreements(
    core_metadata: bytes, name: str, version: str, requires_dist: list[str], fragment: str
) -> None:
    with pytest.raises(InvalidMetadata) as info:
        check_core_metadata(core_metadata, name=name, version=version, requires_dist=requires_dist)
    assert len(info.value.problems) == 1, info.value.problems
    assert fragment in info.value.problems[0], info.value.problems[0]


def test_core_metadata_reports_every_disagreement() -> None:
    with pytest.raises(InvalidMetadata) as info:
        check_core_metadata(METADATA, name="other", version="2.0", requires_dist=[])
    assert len(info.value.problems) == 3
