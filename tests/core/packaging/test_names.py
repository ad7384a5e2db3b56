"""Tests for cheeseshop.packaging.names."""

from __future__ import annotations

import pytest

from cheeseshop.packaging.names import confusable_fold, is_valid_project_name, normalize


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Flask", "flask"),
        ("foo.bar", "foo-bar"),
        ("Foo.Bar__baz", "foo-bar-baz"),
        ("a-_.b", "a-b"),
        ("A---B", "a-b"),
        ("zope.interface", "zope-interface"),
    ],
)
def test_normalize(name: str, expected: str) -> None:
    assert normalize(name) == expected


@pytest.mark.parametrize(
    "name", ["a", "Z", "7", "ab", "A1", "foo.bar_baz-qux", "Foo__Bar", "1.2", "x-y"]
)
def test_valid_project_names(name: str) -> None:
    assert is_valid_project_name(name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("-foo", id="leading-dash"),
        pytest.param("foo-", id="trailing-dash"),
        pytest.param(".foo", id="leading-dot"),
        pytest.param("foo_", id="trailing-underscore"),
        pytest.param("_", id="only-separator"),
        pytest.param("foo bar", id="space"),
        pytest.param("foo/bar", id="slash"),
        pytest.param("foo+bar", id="plus"),
        pytest.param("foo\n", id="trailing-newline"),
        pytest.param("f\u043eo", id="cyrillic-o"),
        pytest.param("\u0430", id="cyrillic-a-alone"),
        # Both match [a-z] under a Unicode IGNORECASE regex; only re.ASCII keeps them out.
        pytest.param("\u212aelvin", id="kelvin-sign"),
        pytest.param("\u017fetup", id="long-s"),
        pytest.param("caf\u00e9", id="latin-1"),
    ],
)
def test_invalid_project_names(name: str) -> None:
    assert not is_valid_project_name(name)


def test_confusable_fold_makes_lookalikes_equal() -> None:
    assert confusable_fold("F1ask") == confusable_fold("Flask") == "f1ask"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Django", "djang0"),
        ("I-O.l_L", "1011"),
        ("foo_bar", "f00bar"),
        ("foo.bar", "f00bar"),
        ("FOO-BAR", "f00bar"),
        ("requests", "requests"),
    ],
)
def test_confusable_fold(name: str, expected: str) -> None:
    assert confusable_fold(name) == expected


def test_confusable_fold_keeps_distinct_names_apart() -> None:
    assert confusable_fold("flask") != confusable_fold("flash")
