"""Pure tests of cheeseshop.upload.form.read_form."""

from __future__ import annotations

import pytest
from packaging.version import Version

from cheeseshop.upload.form import MULTI_FIELDS, FormError, UploadRequest, read_form

SHA256 = "ab" * 32
BLAKE2 = "cd" * 32
MD5 = "ef" * 16


def form(**overrides: str | list[str] | None) -> dict[str, list[str]]:
    """A valid wheel upload form, as lists of values; ``None`` removes a field."""
    fields: dict[str, str | list[str] | None] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.4",
        "name": "hello-world",
        "version": "1.0",
        "summary": "A test package.",
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "sha256_digest": SHA256,
        "blake2_256_digest": BLAKE2,
    }
    fields.update(overrides)
    return {k: [v] if isinstance(v, str) else list(v) for k, v in fields.items() if v is not None}


def problems_of(fields: dict[str, list[str]]) -> list[str]:
    with pytest.raises(FormError) as info:
        read_form(fields)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.problems, "a FormError always says what is wrong"
    assert str(error) == " ".join(error.problems)
    return error.problems


def one_problem(fields: dict[str, list[str]], *fragments: str) -> str:
    problems = problems_of(fields)
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], problems[0]
    return problems[0]


# -- accepted -------------------------------------------------------------------------------


def test_valid_wheel_form() -> None:
    request = read_form(form(name="Hello_World"))
    assert isinstance(request, UploadRequest)
    assert request.name == "Hello_World"
    assert request.normalized_name == "hello-world"
    assert request.version == Version("1.0")
    assert request.version_string == "1.0"
    assert request.filetype == "bdist_wheel"
    assert request.pyversion == "py3"
    assert request.metadata_version == "2.4"
    assert request.digests == {"sha256": SHA256, "blake2_256": BLAKE2}
    assert request.metadata["summary"] == "A test package."


def test_sdist_pyversion_is_source() -> None:
    request = read_form(form(filetype="sdist", pyversion=None))
    assert request.filetype == "sdist"
    assert request.pyversion == "source"
    assert read_form(form(filetype="sdist", pyversion="")).pyversion == "source"
    assert read_form(form(filetype="sdist", pyversion="source")).pyversion == "source"


def test_sdist_with_another_pyversion_refused() -> None:
    # As PyPI: "Use 'source' as Python version for an sdist."
    with pytest.raises(FormError) as caught:
        read_form(form(filetype="sdist", pyversion="py3"))
    assert any("use 'source'" in problem and "'py3'" in problem for problem in caught.value.problems)


def test_protocol_version_absent_means_1() -> None:
    assert read_form(form(protocol_version=None)).name == "hello-world"


def test_digests_lower_cased_and_any_one_suffices() -> None:
    request = read_form(form(sha256_digest=None, blake2_256_digest=None, md5_digest=MD5.upper()))
    assert request.digests == {"md5": MD5}


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "2.1", "2.2", "2.3", "2.4", "2.5"])
def test_metadata_versions_accepted(version: str) -> None:
    assert read_form(form(metadata_version=version)).metadata_version == version


def test_unknown_fields_ignored() -> None:
    request = read_form(form(gpg_signature="xyz", some_future_field=["a", "b"]))
    assert "gpg_signature" not in request.metadata
    assert "some_future_field" not in request.metadata


def test_unknown_and_empty_mean_absent() -> None:
    request = read_form(
        form(summary="UNKNOWN", home_page="", author="  ", license="UNKNOWN", requires_python="UNKNOWN")
    )
    for key in ("summary", "home_page", "author", "license", "requires_python"):
        assert request.metadata[key] is None, key


def test_empty_values_in_multi_fields_dropped() -> None:
    request = read_form(form(classifiers=["", "Typing :: Typed", "  "], requires_dist=[]))
    assert request.metadata["classifiers"] == ["Typing :: Typed"]
    assert request.metadata["requires_dist"] == []


def test_unknown_in_multi_fields_dropped() -> None:
    multi = (
        "classifiers", "platform", "supported_platform", "requires_dist", "provides_dist",
        "obsoletes_dist", "requires_external", "provides_extra", "project_urls",
        "license_file", "dynamic", "import_name", "import_namespace",
    )
    request = read_form(form(**{key: ["UNKNOWN", " UNKNOWN "] for key in multi}))
    for key in MULTI_FIELDS:
        assert not request.metadata[key], key
    kept = read_form(form(platform=["UNKNOWN", "linux"], classifiers=["Typing :: Typed", "UNKNOWN"]))
    assert kept.metadata["platform"] == ["linux"]
    assert kept.metadata["classifiers"] == ["Typing :: Typed"]


@pytest.mark.parametrize(
    ("key", "value", "limit"),
    [
        ("name", "a" * 201, 200),
        ("version", "1" + ".0" * 50, 100),
        ("pyversion", "py3" * 34, 100),
        ("description_content_type", "text/plain; x=" + "y" * 190, 200),
    ],
)
def test_overlong_fields_refused(key: str, value: str, limit: int) -> None:
    with pytest.raises(FormError) as raised:
        read_form(form(**{key: value}))
    assert f"Field {key!r} is {len(value)} characters long; shorten it to {limit}" in str(raised.value)


def test_fields_at_their_length_limit_accepted() -> None:
    request = read_form(form(name="a" * 200, pyversion="p" * 100))
    assert request.name == "a" * 200


def test_version_too_long_once_normalized_refused() -> None:
    # 99 characters as given; "-r" normalizes to ".post0", 103 characters.
    version = "1" + ".1" * 48 + "-r"
    assert len(version) <= 100
    with pytest.raises(FormError) as raised:
        read_form(form(version=version))
    assert "characters long once normalized" in str(raised.value)


def test_repeated_single_field_with_same_value_is_fine() -> None:
    assert read_form(form(summary=["Same.", "Same."])).metadata["summary"] == "Same."


def test_repeated_single_field_with_unknown_is_fine() -> None:
    # "UNKNOWN" is absent, so only one real value was given.
    assert read_form(form(summary=["UNKNOWN", "Real."])).metadata["summary"] == "Real."


def test_keywords_one_string() -> None:
    assert read_form(form(keywords="a, b")).metadata["keywords"] == "a, b"
    assert read_form(form(keywords="a,b")).metadata["keywords"] == "a,b"


# -- field spellings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "key"),
    [
        ("import_name", "import_names"),
        ("import_names", "import_names"),
        ("import_namespace", "import_namespaces"),
        ("import_namespaces", "import_namespaces"),
        ("license_file", "license_files"),
        ("license_files", "license_files"),
    ],
)
def test_field_spellings(spelling: str, key: str) -> None:
    # Import names arrived in metadata 2.5; the form must declare it for them to be valid.
    request = read_form(form(metadata_version="2.5", **{spelling: ["one", "two"]}))
    assert request.metadata[key] == ["one", "two"]
    assert spelling == key or spelling not in request.metadata


def test_both_spellings_are_combined() -> None:
    request = read_form(form(license_files=["LICENSE"], license_file=["NOTICE"]))
    assert sorted(request.metadata["license_files"]) == ["LICENSE", "NOTICE"]
    request = read_form(form(metadata_version="2.5", import_names=["a"], import_name=["b"]))
    assert sorted(request.metadata["import_names"]) == ["a", "b"]


def test_multi_fields_default_to_empty_lists() -> None:
    metadata = read_form(form()).metadata
    for key in ("classifiers", "platform", "requires_dist", "provides_extra", "license_files",
                "dynamic", "import_names", "import_namespaces"):
        assert metadata[key] == [], key
    assert metadata["project_urls"] == {}


# -- project_urls ---------------------------------------------------------------------------


def test_project_urls_label_comma_url() -> None:
    request = read_form(
        form(project_urls=["Homepage, https://example.com", "Issue Tracker,https://example.com/issues"])
    )
    assert request.metadata["project_urls"] == {
        "Homepage": "https://example.com",
        "Issue Tracker": "https://example.com/issues",
    }


def test_project_urls_url_with_commas_kept_whole() -> None:
    request = read_form(form(project_urls=["Search, https://example.com/?q=a,b"]))
    assert request.metadata["project_urls"] == {"Search": "https://example.com/?q=a,b"}


@pytest.mark.parametrize("value", ["https://example.com", "Homepage,", ", https://example.com"])
def test_project_urls_invalid(value: str) -> None:
    one_problem(form(project_urls=[value]), "project_urls", repr(value))


# -- refused --------------------------------------------------------------------------------


def test_every_problem_reported_at_once() -> None:
    problems = problems_of(
        form(
            name=None,
            version="not a version",
            filetype="bdist_egg",
            metadata_version="2.0",
            sha256_digest=None,
            blake2_256_digest=None,
            protocol_version="2",
            project_urls=["nourl"],
        )
    )
    joined = "\n".join(problems)
    assert len(problems) == 7, problems
    expected = ("'name'", "not a version", "bdist_egg", "'2.0'", "digest", "protocol_version", "nourl")
    for fragment in expected:
        assert fragment in joined, fragment


def test_missing_action() -> None:
    one_problem(form(**{":action": None}), ":action", "file_upload")


def test_protocol_version_2() -> None:
    one_problem(form(protocol_version="2"), "protocol_version", "'2'")


@pytest.mark.parametrize("name", [None, "", "UNKNOWN"])
def test_missing_name(name: str | None) -> None:
    one_problem(form(name=name), "'name'")


@pytest.mark.parametrize("name", ["-hello", "hello-", "héllo", "hello world", "a/b"])
def test_invalid_name(name: str) -> None:
    one_problem(form(name=name), "Invalid project name", repr(name))


def test_missing_version() -> None:
    one_problem(form(version=None), "'version'")


def test_invalid_version() -> None:
    one_problem(form(version="1.0-foo-bar"), "Invalid version", "1.0-foo-bar")


def test_local_version_refused() -> None:
    one_problem(form(version="1.0+local"), "local", "+local")


@pytest.mark.parametrize("filetype", [None, "bdist_egg", "bdist_wininst", "BDIST_WHEEL"])
def test_invalid_filetype(filetype: str | None) -> None:
    one_problem(form(filetype=filetype), "filetype")


def test_wheel_needs_pyversion() -> None:
    one_problem(form(pyversion=None), "pyversion")


@pytest.mark.parametrize("version", [None, "2.0", "3.0", "1.3", "2.10"])
def test_invalid_metadata_version(version: str | None) -> None:
    one_problem(form(metadata_version=version), "metadata_version")


def test_missing_digest() -> None:
    one_problem(form(sha256_digest=None, blake2_256_digest=None), "md5_digest", "sha256_digest")


@pytest.mark.parametrize(
    ("field", "value"),
    [("sha256_digest", "ab" * 31), ("sha256_digest", "zz" * 32), ("md5_digest", "ab" * 17),
     ("blake2_256_digest", "not hex")],
)
def test_invalid_digest(field: str, value: str) -> None:
    one_problem(form(**{field: value}), field)


@pytest.mark.parametrize("field", ["name", "version", "summary", "sha256_digest", "filetype"])
def test_single_field_with_different_values(field: str) -> None:
    values = {
        "name": ["hello-world", "other"],
        "version": ["1.0", "2.0"],
        "summary": ["One.", "Two."],
        "sha256_digest": [SHA256, "12" * 32],
        "filetype": ["bdist_wheel", "sdist"],
    }[field]
    problems = problems_of(form(**{field: values}))
    assert any(repr(field) in p and "2 different values" in p for p in problems), problems


@pytest.mark.parametrize("field", ["author", "summary", "classifiers", "license_file", "name"])
def test_nul_character_refused(field: str) -> None:
    problems = problems_of(form(**{field: "a\x00b"}))
    assert any(repr(field) in p and "NUL" in p for p in problems), problems


def test_nul_in_unknown_field_ignored() -> None:
    assert read_form(form(some_future_field="a\x00b")).name == "hello-world"
