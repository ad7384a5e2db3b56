"""The ``[cdn_fastly]`` section: defaults, validation naming the key, the environment, masking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cheeseshop.config import ConfigError, load_settings, redacted
from cheeseshop.plugins import load_plugins

from cheeseshop_cdn_fastly import DEFAULT_SURROGATE_CONTROL, FastlySettings


def section_of(
    tmp_path: Path, section: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> Any:
    """Load the plugin through its entry point and validate its section, as start-up does."""
    overrides: dict[str, Any] = {"data_dir": tmp_path, "plugins": ["cdn_fastly"]}
    if section is not None:
        overrides["cdn_fastly"] = section
    settings = load_settings(environ=environ or {}, overrides=overrides)
    return load_plugins(settings).apply_settings(settings)


def test_settings_defaults_apply_to_what_is_not_given(tmp_path):
    settings = section_of(tmp_path, {"api_key": "k", "service_id": "SVC1"})
    section = settings.section("cdn_fastly")
    assert isinstance(section, FastlySettings)
    assert section.api_url == "https://api.fastly.com"
    assert section.surrogate_control == DEFAULT_SURROGATE_CONTROL
    assert section.surrogate_control.startswith("max-age=86400")
    assert section.soft_purge is True
    assert section.timeout_seconds == 10.0


def test_settings_missing_api_key_and_service_id_stop_start_up_naming_both(tmp_path):
    with pytest.raises(ConfigError) as caught:
        section_of(tmp_path)
    message = str(caught.value)
    assert "cdn_fastly.api_key (CHEESESHOP_CDN_FASTLY__API_KEY)" in message
    assert "cdn_fastly.service_id (CHEESESHOP_CDN_FASTLY__SERVICE_ID)" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("api_url", "ftp://api.fastly.com"),
        ("api_url", "api.fastly.com"),
        ("api_url", "https://api.fastly.com/?x=1"),
        ("service_id", "SVC/../../other"),
        ("timeout_seconds", 0),
        ("api_key", "fastly-secret-never-shown\r\nX-Injected: 1"),
        ("api_key", "fastly-secret-never-shown-clé"),
        ("api_key", ""),
        ("colour", "red"),
    ],
)
def test_settings_wrong_value_names_its_key_and_never_the_api_key(tmp_path, key, value):
    secret = "fastly-secret-never-shown"
    with pytest.raises(ConfigError) as caught:
        section_of(tmp_path, {"api_key": secret, "service_id": "SVC1", key: value})
    assert f"cdn_fastly.{key}" in str(caught.value)
    assert secret not in str(caught.value)
    assert "clé" not in str(caught.value)


def test_settings_from_the_environment(tmp_path):
    settings = section_of(
        tmp_path,
        environ={
            "CHEESESHOP_CDN_FASTLY__API_KEY": "from-env",
            "CHEESESHOP_CDN_FASTLY__SERVICE_ID": "SVC2",
            "CHEESESHOP_CDN_FASTLY__API_URL": "http://127.0.0.1:9/",
            "CHEESESHOP_CDN_FASTLY__SOFT_PURGE": "false",
            "CHEESESHOP_CDN_FASTLY__TIMEOUT_SECONDS": "2.5",
            "CHEESESHOP_CDN_FASTLY__SURROGATE_CONTROL": "max-age=60",
        },
    )
    section = settings.section("cdn_fastly")
    assert section.api_key.get_secret_value() == "from-env"
    assert section.service_id == "SVC2"
    assert section.api_url == "http://127.0.0.1:9", "the trailing slash is dropped"
    assert section.soft_purge is False
    assert section.timeout_seconds == 2.5
    assert section.surrogate_control == "max-age=60"


def test_settings_api_key_is_masked_when_shown(tmp_path):
    secret = "fastly-secret-never-shown"
    settings = section_of(tmp_path, {"api_key": secret, "service_id": "SVC1"})
    shown = redacted(settings)
    assert shown["cdn_fastly"]["service_id"] == "SVC1"
    assert secret not in json.dumps(shown, default=str)
    assert secret not in repr(settings.section("cdn_fastly"))
