"""Plugin discovery, the single-slot rule, blocking, plugin settings, and the wiring hooks."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import cheeseshop
from cheeseshop.app import build_services
from cheeseshop.config import ConfigError, load_settings
from cheeseshop.plugins import PluginError, installed_plugins, load_plugins
from cheeseshop.storage.local import LocalFileStorage
from cheeseshop.testing.dists import build_wheel


def settings_for(tmp_path: Path, **values):
    return load_settings(environ={}, overrides={"data_dir": tmp_path, **values})


class MemoryStorage(LocalFileStorage):
    """A storage plugin's provider: any object implementing the FileStorage protocol."""


def storage_plugin(name: str) -> object:
    @cheeseshop.hookimpl
    def cheeseshop_file_storage(settings):
        return MemoryStorage(settings.data_dir / name)

    return types.SimpleNamespace(cheeseshop_file_storage=cheeseshop_file_storage, __name__=name)


def test_recorder_is_discovered_through_its_entry_point(tmp_path):
    assert installed_plugins()["recorder"] == "cheeseshop_recorder"
    hooks = load_plugins(settings_for(tmp_path, plugins=["recorder"]))
    info = {i.name: i for i in hooks.describe()}
    assert set(info) == {
        "local_storage", "embedded_outbox", "page_cache", "email", "celery", "recorder"
    }
    assert info["recorder"].version == "0.1.0"
    assert info["recorder"].default is False
    assert "cheeseshop_file_uploaded" in info["recorder"].hooks
    assert info["local_storage"].default and info["local_storage"].hooks == ("cheeseshop_file_storage",)


def test_unknown_plugin_stops_start_up_listing_installed(tmp_path):
    with pytest.raises(PluginError) as caught:
        load_plugins(settings_for(tmp_path, plugins=["recorder", "nonesuch"]))
    message = str(caught.value)
    assert "nonesuch" in message and "recorder" in message.partition("installed: ")[2]


def test_file_storage_from_a_plugin_overrides_the_default(tmp_path):
    services = build_services(settings_for(tmp_path), extra_plugins=[("memory", storage_plugin("memory"))])
    assert type(services.storage) is MemoryStorage


def test_file_storage_default_when_no_plugin_provides_it(tmp_path):
    services = build_services(settings_for(tmp_path))
    assert type(services.storage) is LocalFileStorage
    assert services.storage.root == (tmp_path / "files").resolve()


def test_file_storage_provided_twice_stops_start_up_naming_both(tmp_path):
    with pytest.raises(PluginError) as caught:
        load_plugins(
            settings_for(tmp_path),
            extra=[("alpha", storage_plugin("alpha")), ("beta", storage_plugin("beta"))],
        )
    assert "alpha and beta both provide file_storage" in str(caught.value)


def test_event_dispatcher_provided_twice_stops_start_up(tmp_path):
    def dispatcher_plugin():
        @cheeseshop.hookimpl
        def cheeseshop_event_dispatcher(settings):
            return None

        return types.SimpleNamespace(cheeseshop_event_dispatcher=cheeseshop_event_dispatcher)

    with pytest.raises(PluginError, match="one and two both provide event_dispatcher"):
        load_plugins(settings_for(tmp_path), extra=[("one", dispatcher_plugin()), ("two", dispatcher_plugin())])


def test_blocking_the_default_storage_leaves_the_slot_empty(tmp_path):
    with pytest.raises(PluginError, match="no plugin provides file storage"):
        build_services(settings_for(tmp_path, blocked_plugins=["local_storage"]))


def test_blocked_plugin_is_not_loaded_even_if_enabled(tmp_path):
    hooks = load_plugins(settings_for(tmp_path, plugins=["recorder"], blocked_plugins=["recorder"]))
    assert "recorder" not in {i.name for i in hooks.describe()}


def test_a_hookimpl_without_a_spec_is_refused(tmp_path):
    @cheeseshop.hookimpl
    def cheeseshop_no_such_hook():
        return None

    with pytest.raises(PluginError, match="unknown hook"):
        load_plugins(settings_for(tmp_path), extra=[("typo", types.SimpleNamespace(cheeseshop_no_such_hook=cheeseshop_no_such_hook))])


def test_settings_hook_section_is_validated_and_names_the_key(tmp_path):
    good = build_services(
        settings_for(tmp_path, plugins=["recorder"], recorder={"path": str(tmp_path / "e.jsonl")})
    )
    assert good.settings.section("recorder").path == tmp_path / "e.jsonl"
    with pytest.raises(ConfigError) as caught:
        build_services(settings_for(tmp_path, plugins=["recorder"], recorder={"reject": 5}))
    assert "recorder.reject" in str(caught.value)
    assert "CHEESESHOP_RECORDER__REJECT" in str(caught.value)
    with pytest.raises(ConfigError, match="recorder.colour"):
        build_services(settings_for(tmp_path, plugins=["recorder"], recorder={"colour": "red"}))


def test_settings_hook_section_from_environment(tmp_path):
    settings = load_settings(
        environ={
            "CHEESESHOP_DATA_DIR": str(tmp_path),
            "CHEESESHOP_PLUGINS": "recorder",
            "CHEESESHOP_RECORDER__REJECT": '["bad.whl"]',
        }
    )
    services = build_services(settings)
    assert services.settings.section("recorder").reject == ["bad.whl"]


@pytest.fixture
def cheeseshop_settings_overrides(tmp_path):
    return {"plugins": ["recorder"], "recorder": {"reject": ["refused-1.0-py3-none-any.whl"]}}


async def test_configure_hook_adds_the_plugins_route(cheeseshop_client):
    response = await cheeseshop_client.get("/-/recorder")
    assert response.status_code == 200
    assert (await response.get_json())["reject"] == ["refused-1.0-py3-none-any.whl"]


async def test_validate_upload_from_an_installed_plugin_refuses(upload, cheeseshop_client):
    refused = await upload(build_wheel("refused", "1.0"))
    assert refused.status_code == 400
    assert "recorder refuses refused-1.0-py3-none-any.whl" in await refused.get_data(as_text=True)
    page = await cheeseshop_client.get("/simple/refused/")
    assert page.status_code == 404
    accepted = await upload(build_wheel("accepted", "1.0"))
    assert accepted.status_code == 200
