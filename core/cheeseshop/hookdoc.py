"""Generate the hook reference (docs/hooks.md) from hookspecs.py's docstrings.

``python -m cheeseshop.hookdoc > docs/hooks.md``; a test keeps the file current.
"""

from __future__ import annotations

import inspect
import re

from cheeseshop import hookspecs
from cheeseshop.events import Event

__all__ = ["hook_groups", "hook_reference"]

_BANNER = re.compile(r"^# (?!-)(.+)$")


def hook_groups() -> list[tuple[str, list[str]]]:
    """(banner text, hook names) for each banner group of hookspecs.py, in source order."""
    groups: list[tuple[str, list[str]]] = []
    for line in inspect.getsource(hookspecs).splitlines():
        banner = _BANNER.match(line)
        if banner:
            groups.append((banner.group(1).strip(), []))
        elif line.startswith("def cheeseshop_") and groups:
            groups[-1][1].append(line[4:].split("(", 1)[0])
    return [(title, names) for title, names in groups if names]


def _kind(name: str, function: object) -> str:
    options = getattr(function, "cheeseshop_spec", {}) or {}
    if options.get("firstresult"):
        return "provider — the first non-None result wins"
    if name in hookspecs.CHAIN_HOOKS:
        return "chain — each implementation transforms the previous one's result"
    if name in {event.hook for event in Event.__subclasses__()}:
        return "event — after commit, in the worker, through the outbox"
    return "collect — every implementation is called"


def _signature(function: object) -> str:
    # hookspecs.py uses postponed annotations: show them as written, without quotes.
    signature = inspect.signature(function)  # type: ignore[arg-type]
    parameters = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    return f"({parameters}) -> {signature.return_annotation}"


def hook_reference() -> str:
    """The whole reference as Markdown."""
    lines = [
        "# Hook reference",
        "",
        "Generated from `core/cheeseshop/hookspecs.py` by `python -m cheeseshop.hookdoc`;",
        "do not edit by hand. Implement a hook with `@cheeseshop.hookimpl` on a function of",
        "the same name in a module exposed through the `cheeseshop.plugins` entry-point group.",
        "",
    ]
    for title, names in hook_groups():
        lines += [f"## {title}", ""]
        for name in names:
            function = getattr(hookspecs, name)
            lines += [
                f"### `{name}{_signature(function)}`",
                "",
                f"*Kind: {_kind(name, function)}.*",
                "",
                inspect.cleandoc(function.__doc__ or ""),
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(hook_reference(), end="")
