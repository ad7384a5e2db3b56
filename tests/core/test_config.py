"""Settings: read once from defaults, TOML and the environment; a wrong value names its key."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from cheeseshop.config import (
    ConfigError,
    PluginSettings,
    Settings,
    load_settings,
    redacted,
    with_plugin_sections,
)

MiB = 1024 * 1024


class SearchSettings(PluginSettings):
    url: str = "http://127.0.0.1:9200"
    replicas: int = 1
    api_key: str | None = None
    password: SecretStr | None = None
    token: str | None = None
    application_key: str | None = None
    key_id: str | None = None


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- sources ----------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.data_dir == Path("data")
    assert settings.database_url is None
    assert settings.plugins == []
    assert settings.blocked_plugins == []
    assert settings.secret_key is None
    assert settings.base_url is None and settings.files_url is None
    assert settings.token_prefix == "cheeseshop-"
    assert settings.max_file_size == 100 * MiB
    assert settings.max_project_size == 10 * 1024 * MiB
    assert settings.auto_migrate is True
    assert settings.outbox_retry_seconds == 10.0


def test_process_environment_is_not_read_when_environ_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHEESESHOP_TOKEN_PREFIX", "from-process-")
    assert load_settings(environ={}).token_prefix == "cheeseshop-"
    assert load_settings().token_prefix == "from-process-"


def test_environment_values_are_typed() -> None:
    settings = load_settings(
        environ={
            "CHEESESHOP_PLUGINS": "a, b",
            "CHEESESHOP_BLOCKED_PLUGINS": " embedded_outbox ,,",
            "CHEESESHOP_MAX_FILE_SIZE": "1024",
            "CHEESESHOP_AUTO_MIGRATE": "false",
            "CHEESESHOP_DATA_DIR": "/srv/cheeseshop",
            "CHEESESHOP_OUTBOX_SWEEP_SECONDS": "2.5",
        }
    )
    assert settings.plugins == ["a", "b"]
    assert settings.blocked_plugins == ["embedded_outbox"]
    assert settings.max_file_size == 1024
    assert settings.auto_migrate is False
    assert settings.data_dir == Path("/srv/cheeseshop")
    assert settings.outbox_sweep_seconds == 2.5


def test_unrelated_environment_variables_are_ignored() -> None:
    settings = load_settings(
        environ={"CHEESESHOP_NEW_PASSWORD": "x", "PLUGINS": "a", "cheeseshop_plugins": "b"}
    )
    assert settings.plugins == []


TOML = """
data_dir = "/var/lib/cheeseshop"
plugins = ["search_es", "camo"]
max_file_size = 2048
token_prefix = "pypi-"

[search_es]
replicas = 3
"""


def test_toml_file_passed_explicitly(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path / "c.toml", TOML), environ={})
    assert settings.data_dir == Path("/var/lib/cheeseshop")
    assert settings.plugins == ["search_es", "camo"]
    assert settings.max_file_size == 2048
    assert settings.token_prefix == "pypi-"


def test_toml_file_named_by_environment(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", TOML)
    settings = load_settings(environ={"CHEESESHOP_CONFIG": str(path)})
    assert settings.plugins == ["search_es", "camo"]
    assert settings.token_prefix == "pypi-"


def test_toml_plugins_as_comma_string(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path / "c.toml", 'plugins = "a, b"\n'), environ={})
    assert settings.plugins == ["a", "b"]


def test_environment_beats_toml_and_overrides_beat_both(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", TOML)
    environ = {
        "CHEESESHOP_CONFIG": str(path),
        "CHEESESHOP_MAX_FILE_SIZE": "4096",
        "CHEESESHOP_PLUGINS": "x",
    }
    settings = load_settings(environ=environ)
    assert settings.max_file_size == 4096
    assert settings.plugins == ["x"]
    assert settings.token_prefix == "pypi-"  # not in the environment: TOML still counts
    settings = load_settings(environ=environ, overrides={"max_file_size": 8192})
    assert settings.max_file_size == 8192


def test_explicit_file_beats_environment_file(tmp_path: Path) -> None:
    named = _write(tmp_path / "named.toml", 'token_prefix = "named-"\n')
    explicit = _write(tmp_path / "explicit.toml", 'token_prefix = "explicit-"\n')
    settings = load_settings(explicit, environ={"CHEESESHOP_CONFIG": str(named)})
    assert settings.token_prefix == "explicit-"


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(ValidationError):
        settings.token_prefix = "other-"  # type: ignore[misc]


# -- errors name their key --------------------------------------------------------------


def test_wrong_value_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"CHEESESHOP_MAX_FILE_SIZE": "lots"})
    assert "max_file_size" in str(info.value)
    assert "CHEESESHOP_MAX_FILE_SIZE" in str(info.value)


def test_every_wrong_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={"CHEESESHOP_MAX_FILE_SIZE": "0", "CHEESESHOP_AUTO_MIGRATE": "perhaps"}
        )
    assert "max_file_size" in str(info.value)
    assert "auto_migrate" in str(info.value)


def test_files_url_must_serve_under_packages() -> None:
    # Mirrors (bandersnatch) refuse file URLs whose path does not start with /packages/.
    for good in ("https://files.example.com/packages/", "https://files.example.com/packages"):
        assert load_settings(environ={"CHEESESHOP_FILES_URL": good}).files_url == good
    for bad, says in (
        ("https://files.example.com", "/packages/"),
        ("https://files.example.com/pypi/packages/", "/packages/"),
        ("files.example.com/packages/", "http(s) URL"),
        ("https://files.example.com/packages/?x=1", "http(s) URL"),
    ):
        with pytest.raises(ConfigError) as info:
            load_settings(environ={"CHEESESHOP_FILES_URL": bad})
        assert "files_url" in str(info.value) and says in str(info.value), bad


def test_wrong_value_in_toml_names_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_project_size"):
        load_settings(_write(tmp_path / "c.toml", 'max_project_size = "huge"\n'), environ={})


def test_unknown_toml_key_is_refused_by_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", 'max_file_sise = 10\ntoken_prefix = "x-"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "max_file_sise" in str(info.value)
    assert "token_prefix" not in str(info.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="nowhere.toml"):
        load_settings(environ={"CHEESESHOP_CONFIG": str(missing)})


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path / "c.toml", "plugins = [\n"), environ={})


# -- plugin sections --------------------------------------------------------------------


def test_plugin_section_defaults_when_absent() -> None:
    settings = with_plugin_sections(load_settings(environ={}), {"search_es": SearchSettings})
    assert settings.section("search_es") == SearchSettings()


def test_plugin_section_from_toml_table(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path / "c.toml", TOML), environ={})
    settings = with_plugin_sections(settings, {"search_es": SearchSettings})
    section = settings.section("search_es")
    assert isinstance(section, SearchSettings)
    assert section.replicas == 3
    assert section.url == "http://127.0.0.1:9200"


def test_plugin_section_from_environment_beats_toml(tmp_path: Path) -> None:
    environ = {
        "CHEESESHOP_CONFIG": str(_write(tmp_path / "c.toml", TOML)),
        "CHEESESHOP_SEARCH_ES__REPLICAS": "5",
        "CHEESESHOP_SEARCH_ES__URL": "http://127.0.0.1:9201",
    }
    settings = with_plugin_sections(load_settings(environ=environ), {"search_es": SearchSettings})
    assert settings.section("search_es").replicas == 5
    assert settings.section("search_es").url == "http://127.0.0.1:9201"


def test_bad_plugin_value_names_section_key() -> None:
    settings = load_settings(environ={"CHEESESHOP_SEARCH_ES__REPLICAS": "many"})
    with pytest.raises(ConfigError) as info:
        with_plugin_sections(settings, {"search_es": SearchSettings})
    assert "search_es.replicas" in str(info.value)
    assert "CHEESESHOP_SEARCH_ES__REPLICAS" in str(info.value)


def test_unknown_plugin_key_is_refused_by_name(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path / "c.toml", "[search_es]\nreplcas = 2\n"), environ={})
    with pytest.raises(ConfigError, match=r"search_es\.replcas"):
        with_plugin_sections(settings, {"search_es": SearchSettings})


def test_section_of_a_plugin_not_enabled_is_an_error() -> None:
    with pytest.raises(ConfigError, match="search_es"):
        load_settings(environ={}).section("search_es")


# -- showing settings -------------------------------------------------------------------


def test_redacted_masks_secrets_and_keeps_the_rest() -> None:
    settings = load_settings(
        environ={
            "CHEESESHOP_SECRET_KEY": "supersecret",
            "CHEESESHOP_DATABASE_URL": "postgresql+asyncpg://cheese:hunter2@db.internal:5432/cheese",
            "CHEESESHOP_SEARCH_ES__API_KEY": "es-api-key-value",
            "CHEESESHOP_SEARCH_ES__PASSWORD": "es-password-value",
            "CHEESESHOP_SEARCH_ES__TOKEN": "es-token-value",
            "CHEESESHOP_SEARCH_ES__APPLICATION_KEY": "es-application-key-value",
            "CHEESESHOP_SEARCH_ES__KEY_ID": "key-id-is-public",
            "CHEESESHOP_TOKEN_PREFIX": "pypi-",
        }
    )
    settings = with_plugin_sections(settings, {"search_es": SearchSettings})
    shown = redacted(settings)
    text = json.dumps(shown)
    for secret in (
        "supersecret",
        "hunter2",
        "es-api-key-value",
        "es-password-value",
        "es-token-value",
        "es-application-key-value",
    ):
        assert secret not in text
    assert shown["core"]["secret_key"] == "********"
    assert shown["core"]["token_prefix"] == "pypi-"
    assert shown["core"]["database_url"].startswith("postgresql+asyncpg://cheese:")
    assert "db.internal:5432/cheese" in shown["core"]["database_url"]
    assert shown["search_es"]["api_key"] == "********"
    assert shown["search_es"]["url"] == "http://127.0.0.1:9200"
    assert shown["search_es"]["replicas"] == 1
    assert shown["search_es"]["key_id"] == "key-id-is-public"


def test_redacted_leaves_unset_secrets_as_none() -> None:
    settings = with_plugin_sections(load_settings(environ={}), {"search_es": SearchSettings})
    shown = redacted(settings)
    assert shown["search_es"]["api_key"] is None
    assert shown["core"]["token_prefix"] == "cheeseshop-"


# -- derived values ---------------------------------------------------------------------


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = load_settings(environ={"CHEESESHOP_DATA_DIR": str(tmp_path)})
    assert (
        settings.resolved_database_url
        == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'cheeseshop.db'}"
    )
    assert settings.is_embedded


def test_explicit_database_url_wins(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://cheese@127.0.0.1/cheese"
    settings = load_settings(
        environ={"CHEESESHOP_DATA_DIR": str(tmp_path), "CHEESESHOP_DATABASE_URL": url}
    )
    assert settings.resolved_database_url == url
    assert not settings.is_embedded


def test_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = load_settings(environ={"CHEESESHOP_DATA_DIR": str(tmp_path / "data")})
    first = settings.secret()
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_settings(environ={"CHEESESHOP_DATA_DIR": str(tmp_path / "data")}).secret() == first
    assert settings.secret() == first


def test_secret_differs_between_installations(tmp_path: Path) -> None:
    one = load_settings(environ={}, overrides={"data_dir": tmp_path / "one"}).secret()
    two = load_settings(environ={}, overrides={"data_dir": tmp_path / "two"}).secret()
    assert one != two


def test_configured_secret_is_used_and_nothing_written(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"CHEESESHOP_DATA_DIR": str(tmp_path), "CHEESESHOP_SECRET_KEY": "s3cr3t-value"}
    )
    assert settings.secret() == "s3cr3t-value"
    assert not os.path.exists(tmp_path / "secret_key")
    assert "s3cr3t-value" not in repr(settings)


def test_settings_type() -> None:
    assert isinstance(load_settings(environ={}), Settings)
