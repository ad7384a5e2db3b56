"""Tests for cheeseshop.packaging.description."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import packaging.metadata
import pytest
import readme_renderer.markdown
import readme_renderer.rst

from cheeseshop.packaging import description
from cheeseshop.packaging.description import (
    MAX_DESCRIPTION_BYTES,
    InvalidDescription,
    parse_content_type,
    render_description,
)

# ---------------------------------------------------------------------------------------------
# Files opened while rendering (an audit hook; hooks cannot be removed, so one per process)
# ---------------------------------------------------------------------------------------------

_WATCHED: set[str] = set()
_OPENED: list[str] = []
_HOOK_INSTALLED = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _WATCHED and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if any(watched in path for watched in _WATCHED):
            _OPENED.append(path)


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A file holding a unique string; any attempt to open it is recorded in ``_OPENED``."""
    global _HOOK_INSTALLED
    if not _HOOK_INSTALLED:
        sys.addaudithook(_audit)
        _HOOK_INSTALLED = True
    secret = f"CANARY-{os.urandom(8).hex()}"
    path = tmp_path / "canary.txt"
    path.write_text(f"{secret}\n\n<script>alert('{secret}')</script>\n")
    _WATCHED.add(str(tmp_path))
    _OPENED.clear()
    yield path, secret
    _WATCHED.discard(str(tmp_path))


def test_the_audit_hook_sees_opens(canary: tuple[Path, str]) -> None:
    # Without this, "nothing was opened" below could pass with a dead hook.
    path, secret = canary
    assert secret in path.read_text()
    assert _OPENED == [str(path)]


# ---------------------------------------------------------------------------------------------
# reStructuredText
# ---------------------------------------------------------------------------------------------

RST = """\
Cheese
======

Some ``code`` and *emphasis*.

.. code-block:: python

    print("wensleydale")
"""


@pytest.mark.parametrize("content_type", [None, "", "text/x-rst", "text/x-rst; charset=UTF-8"])
def test_rst_renders_title_and_code_block(content_type: str | None) -> None:
    html = render_description(RST, content_type)
    assert html is not None
    assert '<h1>Cheese<a title="link to this section" href="#user-content-cheese"' in html
    assert '<span class="docutils literal">code</span>' in html
    assert "<em>emphasis</em>" in html
    # Highlighted by Pygments: the keyword and the string are spans of their own.
    assert '<pre class="code python literal-block"><code><span class="nb">print</span>' in html
    assert '<span class="s2">"wensleydale"</span>' in html


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("Hello\n\n.. frobnicate:: x\n", 'line 3: Unknown directive type "frobnicate".'),
        ("Hello ``code\n", "line 1: Inline literal start-string without end-string."),
        ("Title\n====\n\nText.\n", "line 2: Title underline too short."),
        ("* item\ntext\n", "line 2: Bullet list ends without a blank line; unexpected unindent."),
    ],
)
def test_broken_rst_is_refused(source: str, reason: str) -> None:
    with pytest.raises(InvalidDescription) as excinfo:
        render_description(source, "text/x-rst")
    assert excinfo.value.content_type == "text/x-rst"
    assert excinfo.value.problems == (reason,)
    message = str(excinfo.value)
    assert "failed to render as 'text/x-rst'" in message
    assert reason in message
    assert "\n" not in message


def test_broken_rst_without_content_type_names_the_default() -> None:
    with pytest.raises(InvalidDescription) as excinfo:
        render_description("Hello ``code\n", None)
    assert excinfo.value.content_type is None
    assert "as reStructuredText, the format assumed when no Description-Content-Type" in str(
        excinfo.value
    )


def test_broken_rst_is_not_refused_as_markdown() -> None:
    # The same text is fine once declared as what it is.
    html = render_description("Hello ``code\n", "text/markdown")
    assert html == "<p>Hello ``code</p>\n"


def test_rst_raw_directive_is_refused_and_never_emitted() -> None:
    source = "Hi\n\n.. raw:: html\n\n    <script>alert('raw')</script>\n    <b>raw-marker</b>\n"
    with pytest.raises(InvalidDescription) as excinfo:
        render_description(source, "text/x-rst")
    assert excinfo.value.problems == ('line 3: "raw" directive disabled.',)
    assert "<script" not in str(excinfo.value)
    assert "raw-marker" not in str(excinfo.value)


@pytest.mark.parametrize(
    "directive",
    [
        ".. include:: {path}\n",
        ".. include:: {path}\n   :literal:\n",
        ".. include:: {path}\n   :code: text\n",
        ".. csv-table:: t\n   :file: {path}\n",
        ".. raw:: html\n   :file: {path}\n",
    ],
)
def test_rst_file_directives_are_refused_without_reading_the_file(
    canary: tuple[Path, str], directive: str
) -> None:
    path, secret = canary
    source = "Hi\n\n" + directive.format(path=path)
    with pytest.raises(InvalidDescription) as excinfo:
        render_description(source, "text/x-rst")
    assert secret not in str(excinfo.value)
    assert "disabled" in excinfo.value.problems[0] or "deactivated" in excinfo.value.problems[0]
    assert _OPENED == []


def test_rst_include_is_refused_by_readme_renderer_itself(canary: tuple[Path, str]) -> None:
    # Our refusal rests on readme_renderer's: it renders nothing and opens nothing.
    path, secret = canary
    assert readme_renderer.rst.render(f"Hi\n\n.. include:: {path}\n") is None
    assert _OPENED == []


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

TABLE = "| cheese | origin |\n|---|---|\n| Brie | France |\n"
FENCE = '```python\nprint("stilton")\n```\n'


@pytest.mark.parametrize("content_type", ["text/markdown", "text/markdown; variant=GFM"])
def test_markdown_gfm_renders_tables_fenced_code_and_strikethrough(content_type: str) -> None:
    html = render_description(f"{TABLE}\n{FENCE}\n~~gone~~\n", content_type)
    assert html is not None
    assert "<table>\n<thead>\n<tr>\n<th>cheese</th>" in html
    assert "<td>Brie</td>" in html
    assert '<pre lang="python"><span class="nb">print</span>' in html
    assert "<del>gone</del>" in html


def test_markdown_commonmark_has_no_gfm_extensions() -> None:
    html = render_description(f"{TABLE}\n{FENCE}\n~~gone~~\n", "text/markdown; variant=CommonMark")
    assert html is not None
    assert "<table>" not in html
    assert "| Brie | France |" in html
    assert "~~gone~~" in html
    # Fenced code is CommonMark too.
    assert '<pre lang="python"><span class="nb">print</span>' in html


def test_markdown_headings_and_their_links_get_prefixed_ids() -> None:
    # The prefix keeps ids from a description from clashing with the page's own.
    assert render_description("# Gouda\n\n[up](#gouda)\n", "text/markdown") == (
        '<h1 id="user-content-gouda">Gouda<a href="#user-content-gouda" rel="nofollow"></a></h1>\n'
        '<p><a href="#user-content-gouda" rel="nofollow">up</a></p>\n'
    )


def test_markdown_of_only_link_definitions_is_refused_as_pypi_does() -> None:
    # comrak renders nothing, so readme_renderer returns None and PyPI refuses the upload.
    with pytest.raises(InvalidDescription) as excinfo:
        render_description("[cheese]: https://example.com/\n", "text/markdown")
    assert excinfo.value.problems == ("it renders to nothing",)
    assert "'text/markdown'" in str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# Plain text
# ---------------------------------------------------------------------------------------------


def test_plain_text_is_escaped_and_preformatted() -> None:
    html = render_description("<b>bold</b> & <i>x</i>\nsecond line", "text/plain")
    assert html == "<pre>&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;x&lt;/i&gt;<br>second line</pre>"


def test_plain_text_script_is_shown_as_text() -> None:
    html = render_description("<script>alert(1)</script>", "text/plain")
    assert html == "<pre>&lt;script&gt;alert(1)&lt;/script&gt;</pre>"


# ---------------------------------------------------------------------------------------------
# Script never gets through
# ---------------------------------------------------------------------------------------------

SCRIPT = "Before\n\n<script>alert('pwned')</script>\n\nAfter\n"


def test_markdown_gfm_script_tag_is_shown_as_text() -> None:
    # GFM's tagfilter escapes <script>, so it appears as text rather than disappearing.
    html = render_description(SCRIPT, "text/markdown")
    assert html is not None
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert('pwned')&lt;/script&gt;" in html


def test_markdown_commonmark_script_tag_is_removed() -> None:
    html = render_description(SCRIPT, "text/markdown; variant=CommonMark")
    assert html == "<p>Before</p>\n\n<p>After</p>\n"


def test_rst_script_tag_is_text() -> None:
    html = render_description(SCRIPT, "text/x-rst")
    assert html == (
        "<p>Before</p>\n<p>&lt;script&gt;alert(‘pwned’)&lt;/script&gt;</p>\n<p>After</p>\n"
    )


@pytest.mark.parametrize("variant", ["GFM", "CommonMark"])
@pytest.mark.parametrize(
    "source",
    [
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "[click](&#106;avascript:alert(1))",
        "[click](java%0ascript:alert(1))",
        "[click][ref]\n\n[ref]: javascript:alert(1)",
        "<javascript:alert(1)>",
        '<a href="javascript:alert(1)">click</a>',
        '<a href=" &#x6A;avascript:alert(1)">click</a>',
        "![img](javascript:alert(1))",
        '<img src="javascript:alert(1)">',
    ],
)
def test_markdown_javascript_links_are_dropped(source: str, variant: str) -> None:
    html = render_description(source, f"text/markdown; variant={variant}")
    assert html is not None
    assert "javascript:" not in html.lower().replace(">javascript:alert(1)<", "")
    assert description._unsafe_markup(html) == []


@pytest.mark.parametrize(
    "source",
    [
        "`click <javascript:alert(1)>`_",
        ".. image:: javascript:alert(1)\n",
        "click_\n\n.. _click: javascript:alert(1)\n",
    ],
)
def test_rst_javascript_links_are_dropped(source: str) -> None:
    html = render_description(source, "text/x-rst")
    assert html is not None
    # docutils uses an image's URI as its alt text, so the words may remain, but not as a URL.
    assert re.search(r"(href|src)=\"[^\"]*javascript", html, re.IGNORECASE) is None
    assert description._unsafe_markup(html) == []


@pytest.mark.parametrize(
    "source",
    [
        '<img src="x.png" onerror="alert(1)">',
        '<p onclick="alert(1)">hi</p>',
        '<details ontoggle="alert(1)" open>hi</details>',
        '<a href="https://example.com/" onmouseover="alert(1)">x</a>',
    ],
)
def test_markdown_event_handler_attributes_are_dropped(source: str) -> None:
    html = render_description(source, "text/markdown")
    assert html is not None
    assert " on" not in html
    assert "alert" not in html


def test_markdown_harmless_html_survives() -> None:
    # The sanitizer is not simply deleting all HTML: allowed tags and URLs stay.
    html = render_description(
        '<details><summary>More</summary>\n\n[home](https://example.com/)\n\n</details>',
        "text/markdown",
    )
    assert html is not None
    assert "<details><summary>More</summary>" in html
    assert '<a href="https://example.com/" rel="nofollow">home</a>' in html


def test_text_that_mentions_handlers_is_not_refused() -> None:
    # The final check looks at markup, not at words in the text.
    source = "Set onload=init and use javascript:void(0) or <script> in your page.\n"
    for content_type in ("text/plain", "text/x-rst", "text/markdown"):
        html = render_description(source, content_type)
        assert html is not None
        assert "onload=init" in html


@pytest.mark.parametrize(
    ("html", "found"),
    [
        ("<p>x</p><script>alert(1)</script>", ["a <script> element"]),
        ("<SCRIPT SRC=//x></SCRIPT>", ["a <script> element"]),
        ("<script/x>1</script>", ["a <script> element"]),
        ('<img src="x" onerror="alert(1)">', ["an event-handler attribute 'onerror' on <img>"]),
        ("<p ONCLICK=1>", ["an event-handler attribute 'onclick' on <p>"]),
        ('<a href="javascript:alert(1)">', ["a script URL in 'href' on <a>"]),
        ('<a href=" JAVA\tSCRIPT:x">', ["a script URL in 'href' on <a>"]),
        ('<a href="&#106;avascript:x">', ["a script URL in 'href' on <a>"]),
        ('<img src="vbscript:x">', ["a script URL in 'src' on <img>"]),
        ('<a href="https://e.com/javascript:">ok</a>', []),
        ('<a title="javascript: the good parts" href="https://e.com/">', []),
        ("<p>onload=x and &lt;script&gt;</p>", []),
    ],
)
def test_unsafe_markup_check(html: str, found: list[str]) -> None:
    assert description._unsafe_markup(html) == found


@pytest.mark.parametrize(
    ("module", "content_type"),
    [
        (readme_renderer.markdown, "text/markdown"),
        (readme_renderer.rst, "text/x-rst"),
    ],
)
def test_output_that_escaped_the_sanitizer_is_refused(
    monkeypatch: pytest.MonkeyPatch, module: Any, content_type: str
) -> None:
    # Stands in for a sanitizer regression: the final check refuses rather than repairs.
    monkeypatch.setattr(module, "render", lambda raw, **kw: '<a href="javascript:x" onclick="y">')
    with pytest.raises(InvalidDescription) as excinfo:
        render_description("anything", content_type)
    assert excinfo.value.problems == (
        "a script URL in 'href' on <a>",
        "an event-handler attribute 'onclick' on <a>",
    )


# ---------------------------------------------------------------------------------------------
# No description, odd text, size
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", " ", "\n\t \r\n"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "text/x-rst", "text/markdown"])
def test_no_description_renders_to_none(raw: str | None, content_type: str | None) -> None:
    assert render_description(raw, content_type) is None


@pytest.mark.parametrize("raw", [None, "", "Hello"])
def test_content_type_is_checked_even_without_description(raw: str | None) -> None:
    with pytest.raises(InvalidDescription):
        render_description(raw, "text/html")


@pytest.mark.parametrize("content_type", ["text/plain", "text/x-rst", "text/markdown"])
def test_lone_surrogate_is_refused(content_type: str) -> None:
    # Unchecked, comrak raises UnicodeEncodeError and rst/txt silently render nothing.
    with pytest.raises(InvalidDescription, match="not valid Unicode"):
        render_description("cheese \ud800 board", content_type)


@pytest.mark.parametrize("content_type", ["text/plain", "text/x-rst", "text/markdown"])
def test_control_characters_do_not_break_rendering(content_type: str) -> None:
    html = render_description("Cheese\x00 and\x0c whey\x1b.\n", content_type)
    assert html is not None
    assert "\x00" not in html
    assert "Cheese" in html


def test_size_limit_is_four_mib() -> None:
    assert MAX_DESCRIPTION_BYTES == 4 * 1024 * 1024


def test_description_at_the_limit_is_accepted() -> None:
    html = render_description("x" * MAX_DESCRIPTION_BYTES, "text/plain")
    assert html is not None
    assert html.startswith("<pre>xxx")


@pytest.mark.parametrize(
    "raw",
    [
        "x" * (MAX_DESCRIPTION_BYTES + 1),
        # Under the limit in code points, over it in UTF-8 bytes.
        "é" * (MAX_DESCRIPTION_BYTES // 2) + "x",
    ],
)
@pytest.mark.parametrize("content_type", [None, "text/plain", "text/markdown"])
def test_description_over_the_limit_is_refused_before_rendering(
    monkeypatch: pytest.MonkeyPatch, raw: str, content_type: str | None
) -> None:
    def must_not_render(*args: object, **kwargs: object) -> str:
        raise AssertionError("rendered an oversized description")

    for module in ("rst", "markdown", "txt"):
        monkeypatch.setattr(f"readme_renderer.{module}.render", must_not_render)
    with pytest.raises(InvalidDescription, match=r"over this index's limit of 4194304 bytes"):
        render_description(raw, content_type)


# ---------------------------------------------------------------------------------------------
# Description-Content-Type
# ---------------------------------------------------------------------------------------------

GOOD_CONTENT_TYPES: list[tuple[str | None, tuple[str, dict[str, str]]]] = [
    (None, ("text/x-rst", {})),
    ("", ("text/x-rst", {})),
    ("   ", ("text/x-rst", {})),
    ("text/x-rst", ("text/x-rst", {})),
    ("text/plain", ("text/plain", {})),
    ("text/markdown", ("text/markdown", {"variant": "GFM"})),
    ("Text/Markdown", ("text/markdown", {"variant": "GFM"})),
    (" text/markdown ", ("text/markdown", {"variant": "GFM"})),
    ("text/markdown; variant=GFM", ("text/markdown", {"variant": "GFM"})),
    ("text/markdown;variant=CommonMark", ("text/markdown", {"variant": "CommonMark"})),
    ('text/markdown; variant="CommonMark"', ("text/markdown", {"variant": "CommonMark"})),
    ("text/markdown; VARIANT=CommonMark", ("text/markdown", {"variant": "CommonMark"})),
    (
        "text/markdown; charset=UTF-8; variant=GFM",
        ("text/markdown", {"charset": "UTF-8", "variant": "GFM"}),
    ),
    ("text/x-rst; charset=utf-8", ("text/x-rst", {"charset": "UTF-8"})),
    ("text/plain; charset=Utf-8", ("text/plain", {"charset": "UTF-8"})),
    # Parameters PyPI ignores are ignored here too.
    ("text/plain; variant=Whatever", ("text/plain", {})),
    ("text/x-rst; format=flowed", ("text/x-rst", {})),
]

BAD_CONTENT_TYPES: list[tuple[str, str]] = [
    ("text/html", "the type is not one of those accepted"),
    ("text/rst", "the type is not one of those accepted"),
    ("application/json", "the type is not one of those accepted"),
    ("markdown", "not a valid content type (Invalid content type)"),
    ("text", "not a valid content type"),
    ("text/plain/extra", "not a valid content type"),
    ("text/", "not a valid content type"),
    (";", "not a valid content type"),
    ("text/markdown\r\nX-Evil: 1", "not a valid content type"),
    ("text/plain; x*", "not a valid content type"),
    ("text/plain; charset=latin-1", "the charset must be UTF-8, not 'latin-1'"),
    ("text/x-rst; charset=utf8", "the charset must be UTF-8, not 'utf8'"),
    ("text/markdown; variant=gfm", "the Markdown variant must be 'GFM' or 'CommonMark'"),
    ("text/markdown; variant=MultiMarkdown", "not 'MultiMarkdown'"),
    ("text/markdown; variant=", "not a valid content type (invalid parameter"),
    ('text/markdown; variant=""', "not ''"),
    ('text/markdown; variant="GFM "', "not 'GFM '"),
    ("text/markdown; variant=GFM; variant=CommonMark", "duplicate parameter name"),
]


@pytest.mark.parametrize(("value", "expected"), GOOD_CONTENT_TYPES)
def test_parse_good_content_types(
    value: str | None, expected: tuple[str, dict[str, str]]
) -> None:
    assert parse_content_type(value) == expected


@pytest.mark.parametrize(("value", "problem"), BAD_CONTENT_TYPES)
def test_parse_bad_content_types(value: str, problem: str) -> None:
    with pytest.raises(InvalidDescription) as excinfo:
        parse_content_type(value)
    message = str(excinfo.value)
    assert problem in message
    assert repr(value) in message
    assert "'text/plain', 'text/x-rst' or 'text/markdown'" in message
    assert excinfo.value.content_type == value


def test_parse_reports_every_problem_at_once() -> None:
    with pytest.raises(InvalidDescription) as excinfo:
        parse_content_type("text/markdown; charset=latin-1; variant=Pandoc")
    assert excinfo.value.problems == (
        "the charset must be UTF-8, not 'latin-1'",
        "the Markdown variant must be 'GFM' or 'CommonMark' (case matters), not 'Pandoc'",
    )


def _packaging_accepts(value: str) -> bool:
    raw: packaging.metadata.RawMetadata = {
        "metadata_version": "2.1",
        "name": "cheese",
        "version": "1.0",
        "description_content_type": value,
    }
    try:
        packaging.metadata.Metadata.from_raw(raw)
    except ExceptionGroup as group:
        assert group.subgroup(packaging.metadata.InvalidMetadata) is not None
        return False
    return True


@pytest.mark.parametrize(
    "value",
    [value for value, _ in GOOD_CONTENT_TYPES if value and value.strip()]
    + [value for value, _ in BAD_CONTENT_TYPES],
)
def test_parse_agrees_with_packaging_metadata(value: str) -> None:
    # PyPI validates Description-Content-Type with packaging.metadata; accept what it accepts.
    try:
        parse_content_type(value)
    except InvalidDescription:
        ours = False
    else:
        ours = True
    assert ours == _packaging_accepts(value)
