"""Pure tests of cheeseshop.simple.negotiate.choose."""

from __future__ import annotations

import pytest

from cheeseshop.simple.negotiate import HTML, JSON, V1_HTML, NotAcceptable, choose

PIP = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01"
UV = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


def test_constants() -> None:
    assert JSON == "application/vnd.pypi.simple.v1+json"
    assert V1_HTML == "application/vnd.pypi.simple.v1+html"
    assert HTML == "text/html"


@pytest.mark.parametrize("accept", [PIP, UV], ids=["pip", "uv"])
def test_installers_get_json(accept: str) -> None:
    assert choose(accept) == JSON


@pytest.mark.parametrize("accept", [None, "", "   ", "*/*", "*/*;q=0.8", "text/*"])
def test_default_is_text_html(accept: str | None) -> None:
    assert choose(accept) == HTML


def test_browser_accept_gets_html() -> None:
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
    assert choose(accept) == HTML


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/vnd.pypi.simple.v1+json", JSON),
        ("application/vnd.pypi.simple.v1+html", V1_HTML),
        ("text/html", HTML),
        ("application/vnd.pypi.simple.latest+json", JSON),
        ("application/vnd.pypi.simple.latest+html", V1_HTML),
        ("Application/VND.PyPI.Simple.V1+JSON", JSON),
        ("application/vnd.pypi.simple.v1+json; charset=utf-8", JSON),
    ],
)
def test_exact_types(accept: str, expected: str) -> None:
    assert choose(accept) == expected


def test_latest_answers_with_concrete_type() -> None:
    assert choose("application/vnd.pypi.simple.latest+json, text/html;q=0.1") == JSON
    assert choose("application/vnd.pypi.simple.latest+html") == V1_HTML


def test_quality_wins_over_order() -> None:
    assert choose("application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.9") == HTML
    assert choose("text/html;q=0.2, application/vnd.pypi.simple.v1+html;q=0.3") == V1_HTML
    assert choose("text/html;Q=0.2, application/vnd.pypi.simple.v1+json;Q=0.3") == JSON


def test_equal_quality_prefers_json_among_explicit() -> None:
    every = "text/html, application/vnd.pypi.simple.v1+html, application/vnd.pypi.simple.v1+json"
    assert choose(every) == JSON
    assert choose("text/html, application/vnd.pypi.simple.v1+html") == V1_HTML


def test_explicit_beats_wildcard_at_equal_quality() -> None:
    assert choose("*/*, application/vnd.pypi.simple.v1+json") == JSON
    assert choose("application/vnd.pypi.simple.v1+html, */*") == V1_HTML


def test_wildcard_with_higher_quality_wins() -> None:
    assert choose("application/vnd.pypi.simple.v1+json;q=0.1, */*") == HTML


def test_q_zero_excludes_even_with_wildcard() -> None:
    assert choose("application/vnd.pypi.simple.v1+json;q=0, */*") == HTML
    assert choose("text/html;q=0, */*") in {JSON, V1_HTML}
    assert choose("text/html;q=0, application/vnd.pypi.simple.v1+html;q=0, */*") == JSON


def test_type_wildcard_matches_only_its_type() -> None:
    assert choose("application/*") in {JSON, V1_HTML}
    assert choose("text/*;q=0.5, application/vnd.pypi.simple.v1+json;q=0.4") == HTML


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "application/xml, image/png",
        "text/plain",
        "application/vnd.pypi.simple.v2+json",
        "application/vnd.pypi.simple.v1+json;q=0",
        "*/*;q=0",
        "text/html;q=abc",
        ",,,",
    ],
)
def test_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        choose(accept)
    assert isinstance(info.value, ValueError)


def test_quality_clamped() -> None:
    assert choose("text/html;q=5, application/vnd.pypi.simple.v1+json;q=0.9") == HTML
    assert choose("application/vnd.pypi.simple.v1+json;q=-1, text/html;q=0.1") == HTML


def test_format_override_beats_accept() -> None:
    assert choose("text/html", "application/vnd.pypi.simple.v1+json") == JSON
    assert choose(PIP, "text/html") == HTML
    assert choose(PIP, "application/vnd.pypi.simple.v1+html") == V1_HTML
    assert choose("application/xml", "application/vnd.pypi.simple.latest+json") == JSON
    assert choose(None, "Application/Vnd.PyPI.Simple.V1+Json") == JSON


def test_empty_format_override_ignored() -> None:
    assert choose(PIP, "") == JSON
    assert choose(None, None) == HTML


@pytest.mark.parametrize("override", ["json", "application/json", "text/plain", "*/*"])
def test_unknown_format_override_not_acceptable(override: str) -> None:
    with pytest.raises(NotAcceptable):
        choose(PIP, override)
