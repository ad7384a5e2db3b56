"""What Cheeseshop changes in how hypercorn writes HTTP/1.1 responses.

hypercorn builds every HTTP/1.1 response as an ``h11.Response``. Its protocol module is
given a copy of the ``h11`` module whose ``Response`` does two things more:

- The reason phrase: a response carrying :data:`~cheeseshop.web.reason.REASON_HEADER`
  is sent without it, with its value as the reason phrase (see :mod:`cheeseshop.web.reason`).
- Header checks done once per header: h11 matches every header name and value against
  HTTP's grammar, two regular expressions a header, for every response; a cached page is
  answered thousands of times a second with the same dozen headers. A (name, value) pair
  that passed h11's own check is remembered, and a response whose every pair passed is
  built as h11 builds the responses it parsed itself, without checking again. A pair never
  seen before is checked by h11 exactly as before: a header that h11 refuses (a newline in
  a value, say) is still refused, every time.

A copy of the module rather than a proxy: hypercorn reads a dozen ``h11`` names per
request, and a proxy's ``__getattr__`` costs a Python call for each.
"""

from __future__ import annotations

import re
import types
from collections.abc import Sequence
from typing import Any

import h11

from cheeseshop.web.reason import REASON_HEADER

__all__ = ["CHECKED_PAIRS_MAX", "install", "response"]

_REASON = REASON_HEADER.lower().encode()
#: What RFC 9112 allows in a reason phrase; anything else (a CR or LF above all) is not sent.
_REASON_PHRASE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
#: Remembered header pairs, at most: forgotten all at once beyond it. Dates, ETags and
#: lengths vary; the constant headers come back at once.
CHECKED_PAIRS_MAX = 16384
#: Longer pairs (a redirect's Location built from the request, say) are checked every
#: time: remembering them would let clients fill the memory with their own strings.
REMEMBERED_PAIR_BYTES = 256
_checked: set[tuple[bytes, bytes]] = set()


def response(*, headers: Sequence[tuple[bytes, bytes]], status_code: int, **kwargs: Any) -> h11.Response:
    """An ``h11.Response`` as h11 builds it, with our reason phrase and remembered checks.

    Takes what hypercorn gives ``h11.Response``: ``headers`` as (bytes, bytes) pairs.
    Raises ``h11.LocalProtocolError`` for a header h11 refuses.
    """
    reason, pairs = _reason_and_rest(headers)
    if not all(type(name) is bytes and type(value) is bytes for name, value in pairs):
        # Not hypercorn's plain bytes: h11 converts and checks them itself, every time.
        return h11.Response(headers=pairs, status_code=status_code, reason=reason, **kwargs)
    unchecked = [pair for pair in pairs if pair not in _checked]
    if unchecked:
        # h11's own check (grammar, Content-Length), on the new pairs alone.
        h11.Response(headers=unchecked, status_code=200)
        _remember(unchecked)
    # _parsed skips only the per-pair grammar check done above; Content-Length and
    # Transfer-Encoding rules across the pairs still apply. int(): h11 gh-72 (IntEnum).
    return h11.Response(headers=pairs, status_code=int(status_code), reason=reason, _parsed=True, **kwargs)


def _reason_and_rest(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The reason phrase (the first reason header's; empty if none, or if not a valid
    phrase) and the headers other than the reason headers."""
    reason = None
    pairs = []
    for name, value in headers:
        if (name.encode("latin-1") if isinstance(name, str) else bytes(name)).lower() == _REASON:
            reason = bytes(value) if reason is None else reason
        else:
            pairs.append((name, value))
    if reason is None or not _REASON_PHRASE.fullmatch(reason):
        return b"", pairs
    return reason, pairs


def _remember(checked: list[tuple[bytes, bytes]]) -> None:
    """Remember pairs h11 accepted (the short ones), forgetting all once there are too many."""
    short = [pair for pair in checked if len(pair[0]) + len(pair[1]) <= REMEMBERED_PAIR_BYTES]
    if len(_checked) + len(short) > CHECKED_PAIRS_MAX:
        _checked.clear()
    _checked.update(short)


def install() -> None:
    """Make hypercorn's HTTP/1.1 protocol build its responses with :func:`response`. Idempotent."""
    from hypercorn.protocol import h11 as hypercorn_h11

    if hypercorn_h11.h11.Response is response:
        return
    module = types.ModuleType(h11.__name__, h11.__doc__)
    module.__dict__.update(vars(h11))
    module.Response = response  # type: ignore[attr-defined]
    hypercorn_h11.h11 = module  # type: ignore[assignment]
