"""Project descriptions: check the Description-Content-Type and render the description to
safe HTML once, at upload time, the way PyPI (Warehouse) does.

The rendering itself is readme_renderer's, the library PyPI and ``twine check`` use, so a
description that passes ``twine check`` renders here exactly as on PyPI, and one that PyPI
refuses is refused here. readme_renderer already sanitizes its output with nh3; this module
adds a last check that refuses (never repairs) output that still carries script.
"""

from __future__ import annotations

import email.message
import io
from collections.abc import Mapping
from html.parser import HTMLParser

import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_CONTENT_TYPE",
    "MARKDOWN_VARIANTS",
    "MAX_DESCRIPTION_BYTES",
    "InvalidDescription",
    "parse_content_type",
    "render_description",
]

#: The content type assumed when an upload names none; PyPI's default too.
DEFAULT_CONTENT_TYPE = "text/x-rst"

#: The content types a description may declare (core metadata 2.1).
CONTENT_TYPES: tuple[str, ...] = ("text/plain", "text/x-rst", "text/markdown")

#: The ``variant`` values accepted for ``text/markdown``; the first is the default.
MARKDOWN_VARIANTS: tuple[str, ...] = ("GFM", "CommonMark")

# PyPI has no explicit limit on the description; only the memory its form parser allows bounds
# it. We name one so that the work of rendering is bounded too. Rendering is CPU-bound and slow
# for reStructuredText (docutils needs tens of seconds per MiB), so callers should render off
# the event loop.
MAX_DESCRIPTION_BYTES = 4 * 1024 * 1024

_FORMATS_HINT = (
    "declare the format it is written in with Description-Content-Type "
    "('text/plain', 'text/x-rst' or 'text/markdown')"
)

_UTF8 = "utf-8"

# Attributes whose value a browser follows as a URL.
_URL_ATTRIBUTES = frozenset(
    {"href", "src", "action", "formaction", "xlink:href", "background", "poster", "cite", "data"}
)

# Browsers drop ASCII tab and newlines anywhere in a URL and C0 controls and spaces around it,
# so "java\tscript:" is still a script URL.
_URL_IGNORED = {code: None for code in range(0x21)}


class InvalidDescription(ValueError):
    """A description, or its Description-Content-Type, that cannot be accepted.

    ``str(exc)`` is a complete message for the uploader: it names the content type, says what
    is wrong and what to do. :attr:`content_type` is the Description-Content-Type as given
    (``None`` when the upload gave none); :attr:`problems` lists each problem found, most
    useful first.
    """

    def __init__(
        self, message: str, *, content_type: str | None, problems: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.content_type = content_type
        self.problems = problems


def _invalid_content_type(value: str, problems: list[str]) -> InvalidDescription:
    return InvalidDescription(
        f"The Description-Content-Type {value!r} is not accepted: {'; '.join(problems)}. Use "
        "'text/plain', 'text/x-rst' or 'text/markdown', optionally with '; charset=UTF-8', "
        "and for Markdown '; variant=GFM' (the default) or '; variant=CommonMark'.",
        content_type=value,
        problems=tuple(problems),
    )


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """Check a Description-Content-Type and return its media type and parameters.

    ``None`` or a blank value means :data:`DEFAULT_CONTENT_TYPE` (``text/x-rst``). The media
    type is one of :data:`CONTENT_TYPES`, compared case-insensitively and returned in lower
    case. The returned parameters are normalized: ``charset`` (always ``"UTF-8"``) when the
    value gave one, and for ``text/markdown`` always ``variant`` (``"GFM"`` when not given).
    Other parameters are ignored, as PyPI ignores them. The rules are those of
    ``packaging.metadata``, which PyPI applies; only a blank value differs (PyPI's form treats
    it as absent, ``packaging`` refuses it).

    Raises :class:`InvalidDescription` naming the value and what is accepted.
    """
    if value is None or not value.strip():
        return DEFAULT_CONTENT_TYPE, {}

    message = email.message.EmailMessage()
    try:
        message["content-type"] = value
    # Line breaks raise ValueError; malformed RFC 2231 parameters ("text/plain; x*") raise
    # IndexError from inside the email package.
    except (ValueError, IndexError):
        raise _invalid_content_type(value, ["it is not a valid content type"]) from None
    header = message["content-type"]
    if header.defects:
        problem = f"it is not a valid content type ({header.defects[0]})"
        raise _invalid_content_type(value, [problem])

    media_type = message.get_content_type()
    # The email package falls back to text/plain for what it cannot parse ("markdown"), so
    # also require the type to be spelled out in the value.
    if media_type not in CONTENT_TYPES or media_type not in value.lower():
        raise _invalid_content_type(value, ["the type is not one of those accepted"])

    given: Mapping[str, str] = header.params
    problems: list[str] = []
    parameters: dict[str, str] = {}
    charset = given.get("charset")
    if charset is not None:
        if charset.lower() == _UTF8:
            parameters["charset"] = "UTF-8"
        else:
            problems.append(f"the charset must be UTF-8, not {charset!r}")
    if media_type == "text/markdown":
        variant = given.get("variant", MARKDOWN_VARIANTS[0])
        if variant in MARKDOWN_VARIANTS:
            parameters["variant"] = variant
        else:
            problems.append(
                "the Markdown variant must be 'GFM' or 'CommonMark' (case matters), "
                f"not {variant!r}"
            )
    if problems:
        raise _invalid_content_type(value, problems)
    return media_type, parameters


def _render_failed(content_type: str | None, reason: str) -> InvalidDescription:
    if content_type is None or not content_type.strip():
        what = "as reStructuredText, the format assumed when no Description-Content-Type is given"
    else:
        what = f"as {content_type!r}"
    return InvalidDescription(
        f"The description failed to render {what}: {reason}. Fix the markup, or {_FORMATS_HINT}. "
        "'twine check' reports the same problem before uploading.",
        content_type=content_type,
        problems=(reason,),
    )


def _docutils_reason(stream: io.StringIO) -> str:
    # docutils writes "<string>:LINE: (LEVEL/N) Message." and then echoes the offending
    # source; keep only the first line, which is the message, and keep it short.
    first = stream.getvalue().strip().partition("\n")[0]
    if first.startswith("<string>:"):
        line, _, rest = first[len("<string>:") :].partition(":")
        _, _, message = rest.partition(") ")
        if line.isdigit() and message:
            first = f"line {line}: {message}"
    first = first.strip() or "the markup could not be parsed"
    return first if len(first) <= 300 else first[:299] + "…"


class _UnsafeMarkupFinder(HTMLParser):
    """Collects script elements, event-handler attributes and script URLs in HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.found.append("a <script> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"an event-handler attribute {name!r} on <{tag}>")
            # Attribute values arrive with character references already decoded, so
            # "&#106;avascript:" is seen as "javascript:".
            elif name in _URL_ATTRIBUTES and value is not None:
                url = value.translate(_URL_IGNORED).lower()
                if url.startswith(("javascript:", "vbscript:")):
                    self.found.append(f"a script URL in {name!r} on <{tag}>")


def _unsafe_markup(html: str) -> list[str]:
    """What in *html* could run script: empty when nothing could."""
    finder = _UnsafeMarkupFinder()
    finder.feed(html)
    finder.close()
    # In serialized HTML a literal "<script" is always markup (text has "&lt;"); checking the
    # string as well does not depend on how HTMLParser tokenizes oddities like "<script/x>".
    if "<script" in html.lower() and "a <script> element" not in finder.found:
        finder.found.append("a <script> element")
    return finder.found


def _utf8_size(raw: str, content_type: str | None) -> int:
    # Every code point is at least one byte, so a long string is refused without copying it.
    if len(raw) > MAX_DESCRIPTION_BYTES:
        return len(raw)
    try:
        return len(raw.encode(_UTF8))
    except UnicodeEncodeError:
        # A lone surrogate: comrak would raise on it and nh3 would drop the whole text.
        raise InvalidDescription(
            "The description is not valid Unicode text (it holds a lone surrogate code point). "
            "Upload it as UTF-8.",
            content_type=content_type,
            problems=("lone surrogate code point",),
        ) from None


def render_description(raw: str | None, content_type: str | None) -> str | None:
    """Render a project description to safe HTML, as PyPI renders it at upload time.

    *content_type* is the Description-Content-Type as uploaded, checked with
    :func:`parse_content_type` even when there is no description. reStructuredText is
    rendered by docutils with raw HTML and file inclusion disabled, Markdown by comrak in the
    requested variant, plain text escaped and wrapped in ``<pre>`` as PyPI does; all of it is
    sanitized by readme_renderer with nh3.

    Returns the HTML, or ``None`` when there is no description (``None`` or only
    whitespace). Raises :class:`InvalidDescription` for an invalid content type, a description
    over :data:`MAX_DESCRIPTION_BYTES` in UTF-8, one that is not valid Unicode, one that fails
    to render (PyPI refuses such uploads: for reStructuredText any docutils warning, such as an
    unknown directive or ``.. raw::`` and ``.. include::``, is a failure), or output that still
    holds a script element, event-handler attribute or ``javascript:`` URL.

    Rendering is synchronous and CPU-bound; run it off the event loop.
    """
    media_type, parameters = parse_content_type(content_type)
    if raw is None:
        return None
    size = _utf8_size(raw, content_type)
    if size > MAX_DESCRIPTION_BYTES:
        raise InvalidDescription(
            f"The description is {size} bytes, over this index's limit of "
            f"{MAX_DESCRIPTION_BYTES} bytes ({MAX_DESCRIPTION_BYTES // (1024 * 1024)} MiB) in "
            "UTF-8. Shorten it, for example by linking to the full documentation.",
            content_type=content_type,
            problems=("too large",),
        )
    if not raw.strip():
        return None

    rendered: str | None
    if media_type == "text/x-rst":
        warnings = io.StringIO()
        rendered = readme_renderer.rst.render(raw, stream=warnings)
        if rendered is None:
            raise _render_failed(content_type, _docutils_reason(warnings))
    elif media_type == "text/markdown":
        rendered = readme_renderer.markdown.render(raw, variant=parameters["variant"])
        if rendered is None:
            # comrak produced nothing: the text holds only link reference definitions.
            raise _render_failed(content_type, "it renders to nothing")
    else:
        rendered = readme_renderer.txt.render(raw)
        if rendered is None:
            raise _render_failed(content_type, "the text could not be sanitized")
        # Warehouse wraps plain text like this to keep its whitespace.
        rendered = f"<pre>{rendered}</pre>"

    unsafe = _unsafe_markup(rendered)
    if unsafe:
        raise InvalidDescription(
            "The description was refused: after sanitizing, its HTML still holds "
            f"{', '.join(unsafe)}. Remove the script from the description.",
            content_type=content_type,
            problems=tuple(unsafe),
        )
    return rendered


def _main() -> None:
    """Render one description from JSON on stdin to JSON on stdout (an isolated renderer).

    Input ``{"raw": ..., "content_type": ...}``; output ``{"html": ...}`` or
    ``{"error": message, "content_type": ..., "problems": [...]}``.
    """
    import json
    import sys

    request = json.load(sys.stdin)
    try:
        html = render_description(request["raw"], request["content_type"])
    except InvalidDescription as error:
        answer = {"error": str(error), "content_type": error.content_type, "problems": list(error.problems)}
    else:
        answer = {"html": html}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    _main()
