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

import types
from collections.abc import Sequence
from typing import Any

import h11

from cheeseshop.web.reason import REASON_HEADER

__all__ = ["CHECKED_PAIRS_MAX", "install", "response"]

_REASON = REASON_HEADER.lower().encode()
#: Remembered header pairs, at most: forgotten all at once beyond it. Dates and ETags
#: vary; the dozen constant headers come back at once.
CHECKED_PAIRS_MAX = 4096
_checked: set[tuple[bytes, bytes]] = set()


def response(*, headers: Sequence[tuple[bytes, bytes]], status_code: int, **kwargs: Any) -> h11.Response:
    """An ``h11.Response`` as h11 builds it, with our reason phrase and remembered checks.

    Takes what hypercorn gives ``h11.Response``: ``headers`` as (bytes, bytes) pairs.
    Raises ``h11.LocalProtocolError`` for a header h11 refuses.
    """
    reason = b""
    pairs = list(headers)
    for index, (name, value) in enumerate(pairs):
        if name.lower() == _REASON:
            reason = bytes(value)
            del pairs[index]
            break
    try:
        unchecked = [pair for pair in pairs if pair not in _checked]
    except TypeError:  # unhashable, a bytearray say: not hypercorn's plain bytes
        unchecked = None
    if unchecked is None or not all(type(name) is bytes and type(value) is bytes for name, value in unchecked):
        # h11 converts and checks these itself, every time.
        return h11.Response(headers=pairs, status_code=status_code, reason=reason, **kwargs)
    if unchecked:
        # h11's own check (grammar, Content-Length), on the new pairs alone.
        h11.Response(headers=unchecked, status_code=200)
        if len(_checked) + len(unchecked) > CHECKED_PAIRS_MAX:
            _checked.clear()
        _checked.update(unchecked)
    # _parsed skips only the per-pair grammar check done above; Content-Length and
    # Transfer-Encoding rules across the pairs still apply. int(): h11 gh-72 (IntEnum).
    return h11.Response(headers=pairs, status_code=int(status_code), reason=reason, _parsed=True, **kwargs)


def install() -> None:
    """Make hypercorn's HTTP/1.1 protocol build its responses with :func:`response`. Idempotent."""
    from hypercorn.protocol import h11 as hypercorn_h11

    if hypercorn_h11.h11.Response is response:
        return
    module = types.ModuleType(h11.__name__, h11.__doc__)
    module.__dict__.update(vars(h11))
    module.Response = response  # type: ignore[attr-defined]
    hypercorn_h11.h11 = module  # type: ignore[assignment]
