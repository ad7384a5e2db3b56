"""The headers the plugin adds to cacheable responses, through the core's hook facade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cheeseshop.config import load_settings
from cheeseshop.plugins import Hooks, load_plugins

from cheeseshop_cdn_fastly import DEFAULT_SURROGATE_CONTROL, cheeseshop_response_headers


def loaded(tmp_path: Path, **section: Any) -> tuple[Hooks, Any]:
    """The plugin found through its entry point, and settings carrying its section."""
    raw = load_settings(
        environ={},
        overrides={
            "data_dir": tmp_path,
            "plugins": ["cdn_fastly"],
            "cdn_fastly": {"api_key": "k", "service_id": "SVC1", **section},
        },
    )
    hooks = load_plugins(raw)
    return hooks, hooks.apply_settings(raw)


def test_response_headers_name_the_keys_and_the_edge_lifetime(tmp_path):
    hooks, settings = loaded(tmp_path)
    assert dict(hooks.response_headers(("project/numpy",), settings)) == {
        "Surrogate-Key": "project/numpy",
        "Surrogate-Control": DEFAULT_SURROGATE_CONTROL,
    }
    keys = ("project/numpy", "all-projects", "project/numpy")
    several = dict(hooks.response_headers(keys, settings))
    assert several["Surrogate-Key"] == "project/numpy all-projects"


def test_response_headers_follow_the_surrogate_control_setting(tmp_path):
    _, settings = loaded(tmp_path, surrogate_control="max-age=3600")
    headers = cheeseshop_response_headers(keys=("all-projects",), settings=settings)
    assert headers == {"Surrogate-Key": "all-projects", "Surrogate-Control": "max-age=3600"}

    _, settings = loaded(tmp_path, surrogate_control="")
    assert cheeseshop_response_headers(keys=("all-projects",), settings=settings) == {
        "Surrogate-Key": "all-projects"
    }


def test_response_headers_none_without_keys(tmp_path):
    # A response no purge can reach must not be kept at the edge for a day.
    _, settings = loaded(tmp_path)
    assert cheeseshop_response_headers(keys=(), settings=settings) is None


def test_a_download_is_tagged_but_keeps_its_own_lifetime(tmp_path):
    # Files are immutable: the edge keeps them as Cache-Control says; the key is for a deletion.
    hooks, settings = loaded(tmp_path)
    assert dict(hooks.response_headers(("file/ab/cd/ef/x-1.0.tar.gz",), settings)) == {
        "Surrogate-Key": "file/ab/cd/ef/x-1.0.tar.gz"
    }
