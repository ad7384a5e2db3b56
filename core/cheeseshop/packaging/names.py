"""Project names: validity, the PEP 503 normalized form, and the "too similar" fold."""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name

__all__ = ["STDLIB_NAMES", "confusable_fold", "is_valid_project_name", "normalize", "prohibited_reason"]

# re.ASCII matters: with IGNORECASE alone, [A-Z] also matches the Kelvin sign (U+212A)
# and the long s (U+017F), which fold to "k" and "s".
_VALID_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE | re.ASCII)

_CONFUSABLES = str.maketrans({"l": "1", "i": "1", "o": "0", ".": None, "_": None, "-": None})


def normalize(name: str) -> str:
    """Return the PEP 503 normalized form of *name*.

    Runs of ``-``, ``_`` and ``.`` become a single ``-`` and the result is lower-cased, so
    ``Foo.Bar__baz`` becomes ``foo-bar-baz``. Every lookup by project name goes through this.
    The name is not validated; see :func:`is_valid_project_name`.
    """
    return str(canonicalize_name(name))


def is_valid_project_name(name: str) -> bool:
    """Return whether *name* is an acceptable project name.

    A valid name is ASCII letters and digits, with ``.``, ``_`` and ``-`` allowed only between
    them (never first or last). Non-ASCII look-alikes, such as CYRILLIC SMALL LETTER A (U+0430)
    standing in for ``a``, are invalid.
    """
    return _VALID_NAME.fullmatch(name) is not None


def confusable_fold(name: str) -> str:
    """Return the fold of *name* used to refuse projects whose names are "too similar".

    Separators (``.``, ``_``, ``-``) are removed, the name is lower-cased, ``l`` and ``i`` become
    ``1`` and ``o`` becomes ``0``. Two names that fold equal are too similar: ``F1ask`` and
    ``Flask`` both fold to ``f1ask``.
    """
    return name.lower().translate(_CONFUSABLES)


def _stdlib_names() -> frozenset[str]:
    import sys

    return frozenset(normalize(module) for module in sys.stdlib_module_names if not module.startswith("_"))


STDLIB_NAMES: frozenset[str] = _stdlib_names()


def prohibited_reason(name: str, *, stdlib: bool, extra: frozenset[str] = frozenset()) -> str | None:
    """Why a NEW project may not take *name*, or None when it may.

    ``stdlib`` refuses standard-library module names (``os``, ``asyncio``): a project of
    that name would shadow, or be mistaken for, the module. ``extra`` holds further
    normalized names an operator prohibits.
    """
    normalized = normalize(name)
    if stdlib and normalized in STDLIB_NAMES:
        return (
            f"The name {name!r} is not allowed: it is the name of a Python standard-library "
            "module. Choose another name."
        )
    if normalized in extra:
        return f"The name {name!r} is not allowed on this index. Choose another name."
    return None
