"""``cheeseshop plugins`` and ``cheeseshop config`` with the plugin installed and enabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cheeseshop.cli import main

SECRET = "fastly-cli-secret-never-shown"
HOOKS = ["cheeseshop_purge", "cheeseshop_response_headers", "cheeseshop_settings"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # The CLI reads the process environment: nothing inherited may change what it does.
    for name in list(os.environ):
        if name.startswith("CHEESESHOP_"):
            monkeypatch.delenv(name)
    return {
        "CHEESESHOP_DATA_DIR": str(tmp_path / "data"),
        "CHEESESHOP_PLUGINS": "cdn_fastly",
        "CHEESESHOP_CDN_FASTLY__API_KEY": SECRET,
        "CHEESESHOP_CDN_FASTLY__SERVICE_ID": "SVC1",
    }


def cli(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_cheeseshop_plugins_lists_cdn_fastly_with_its_hooks(env):
    result = cli("plugins", env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index("  cdn_fastly (cheeseshop_cdn_fastly, version 0.1.0)")
    assert lines[start + 1 : start + 4] == [f"    - {hook}" for hook in HOOKS]
    assert "  cdn_fastly = cheeseshop_cdn_fastly" in lines

    data = json.loads(cli("plugins", "--json", env=env).stdout)
    enabled = {plugin["name"]: plugin for plugin in data["enabled"]}
    assert enabled["cdn_fastly"]["hooks"] == HOOKS
    assert enabled["cdn_fastly"]["default"] is False
    assert data["installed"]["cdn_fastly"] == "cheeseshop_cdn_fastly"


def test_cheeseshop_config_masks_the_api_key(env):
    result = cli("config", env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    section = json.loads(result.stdout)["cdn_fastly"]
    assert section["api_key"] == "********"
    assert section["service_id"] == "SVC1"
    assert section["soft_purge"] is True


def test_missing_setting_stops_the_cli_naming_the_key(env):
    del env["CHEESESHOP_CDN_FASTLY__SERVICE_ID"]
    result = cli("plugins", env=env)
    assert result.exit_code != 0
    assert "cdn_fastly.service_id (CHEESESHOP_CDN_FASTLY__SERVICE_ID)" in result.output
    assert SECRET not in result.output


def test_installed_console_script_lists_cdn_fastly(env):
    # The real entry point in the virtualenv, as a deployer runs it.
    script = Path(sys.executable).parent / "cheeseshop"
    completed = subprocess.run(
        [str(script), "plugins"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CHEESESHOP_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "  cdn_fastly (cheeseshop_cdn_fastly, version 0.1.0)" in completed.stdout.splitlines()
    assert "    - cheeseshop_purge" in completed.stdout
    assert SECRET not in completed.stdout + completed.stderr
