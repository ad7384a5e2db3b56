"""Guards on the plugin contract (after datasette): every hook documented, every hook tested."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from cheeseshop import hookspecs
from cheeseshop.hookdoc import hook_groups, hook_reference

ROOT = Path(__file__).resolve().parents[2]
HOOKS = hookspecs.hook_names()


def test_there_are_hooks_and_every_one_is_in_a_banner_group():
    assert len(HOOKS) >= 7
    grouped = [name for _, names in hook_groups() for name in names]
    assert grouped == HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_documented(name):
    function = getattr(hookspecs, name)
    doc = inspect.getdoc(function) or ""
    assert doc, f"{name} has no docstring"
    assert "Called" in doc, f"{name}: say when it is called"
    assert ":returns:" in doc or ":raises" in doc, f"{name}: say what it returns"
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in doc, f"{name}: document parameter {parameter!r}"
    if (function.cheeseshop_spec or {}).get("firstresult"):
        assert "Stops at the first non-None result." in doc, name
    assert not inspect.iscoroutinefunction(function), f"{name}: pluggy hooks must not be async"


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(node.name)
    return names


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_test_named_after_it(name):
    short = name.removeprefix("cheeseshop_")
    named = sorted(t for t in _test_names() if t.startswith(f"test_{short}"))
    assert named, f"no test named test_{short}_… for hook {name}"


def test_hook_reference_docs_are_current():
    committed = (ROOT / "docs" / "hooks.md").read_text()
    assert committed == hook_reference(), "regenerate: python -m cheeseshop.hookdoc > docs/hooks.md"
