"""The ``cheeseshop`` command, run in-process against a SQLite database in a temporary directory."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cheeseshop.accounts.passwords import verify_password
from cheeseshop.accounts.service import Principal, authenticate_token, user_by_name
from cheeseshop.cli import main
from cheeseshop.db import Database
from cheeseshop.db.models import Project, Role, RoleName
from cheeseshop.testing.services import migrated_sqlite

Invoke = Callable[..., Result]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The CLI reads the process environment: nothing inherited may change what it does.
    for name in list(os.environ):
        if name.startswith("CHEESESHOP_"):
            monkeypatch.delenv(name)
    return tmp_path / "data"


@pytest.fixture
def cli(data_dir: Path) -> Invoke:
    """``cli("user", "create", ..., env={...}, input=...)``: run the command in-process."""

    def invoke(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> Result:
        runner = CliRunner()
        return runner.invoke(
            main,
            list(args),
            env={"CHEESESHOP_DATA_DIR": str(data_dir), **(env or {})},
            **kwargs,  # type: ignore[arg-type]
        )

    return invoke


@pytest.fixture
def database(data_dir: Path, _cheeseshop_sqlite_template: Path) -> str:
    """The default database of ``data_dir``, already migrated (copied from a template)."""
    return migrated_sqlite(_cheeseshop_sqlite_template, data_dir / "cheeseshop.db")


def _in_db(url: str, work: Callable[..., object]) -> object:
    async def go() -> object:
        db = Database(url)
        try:
            async with db.write() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(go())


def _create_alice(cli: Invoke) -> None:
    result = cli(
        "user",
        "create",
        "alice",
        "--email",
        "a@example.com",
        env={"CHEESESHOP_NEW_PASSWORD": "password123"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output


# -- db ---------------------------------------------------------------------------------


def test_db_upgrade_creates_the_schema(cli: Invoke, data_dir: Path) -> None:
    result = cli("db", "upgrade", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "database at head" in result.stdout
    with sqlite3.connect(data_dir / "cheeseshop.db") as connection:
        tables = {
            row[0]
            for row in connection.execute("select name from sqlite_master where type='table'")
        }
    assert {"users", "api_tokens", "projects", "alembic_version"} <= tables
    again = cli("db", "upgrade", catch_exceptions=False)
    assert again.exit_code == 0, again.output


# -- user -------------------------------------------------------------------------------


def test_user_create_prompts_for_the_password_twice(cli: Invoke, database: str) -> None:
    result = cli(
        "user",
        "create",
        "alice",
        "--email",
        "a@example.com",
        input="password123\npassword123\n",
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "created user alice" in result.stdout
    assert "password123" not in result.output  # hidden input is not echoed

    async def check(session: object) -> None:
        user = await user_by_name(session, "alice")  # type: ignore[arg-type]
        assert user is not None
        assert verify_password(user.password_hash, "password123")

    _in_db(database, check)


def test_user_create_refuses_mismatched_confirmation(cli: Invoke, database: str) -> None:
    result = cli(
        "user",
        "create",
        "alice",
        "--email",
        "a@example.com",
        input="password123\npassword124\npassword123\npassword123\n",
    )
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output


def test_user_create_with_password_from_environment(cli: Invoke, database: str) -> None:
    result = cli(
        "user",
        "create",
        "alice",
        "--email",
        "a@example.com",
        env={"CHEESESHOP_NEW_PASSWORD": "password123"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "Password" not in result.output  # not prompted

    async def check(session: object) -> None:
        user = await user_by_name(session, "alice")  # type: ignore[arg-type]
        assert user is not None and verify_password(user.password_hash, "password123")

    _in_db(database, check)


def test_duplicate_user_fails_with_the_reason(cli: Invoke, database: str) -> None:
    _create_alice(cli)
    result = cli(
        "user",
        "create",
        "ALICE",
        "--email",
        "b@example.com",
        env={"CHEESESHOP_NEW_PASSWORD": "password123"},
    )
    assert result.exit_code != 0
    assert "username 'ALICE' is already taken" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_invalid_user_fails_with_the_reason(cli: Invoke, database: str) -> None:
    result = cli(
        "user",
        "create",
        "alice",
        "--email",
        "not-an-address",
        env={"CHEESESHOP_NEW_PASSWORD": "password123"},
    )
    assert result.exit_code != 0
    assert "'not-an-address' is not a valid e-mail address" in result.output


# -- token ------------------------------------------------------------------------------


def test_token_create_prints_a_working_token(cli: Invoke, database: str) -> None:
    _create_alice(cli)
    result = cli("token", "create", "alice", "--description", "CI", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cheeseshop-")

    async def check(session: object) -> Principal:
        return await authenticate_token(session, lines[0], prefix="cheeseshop-")  # type: ignore[arg-type]

    principal = _in_db(database, check)
    assert isinstance(principal, Principal)
    assert principal.user.username == "alice"
    assert principal.claims.projects is None and principal.claims.expires is None


def test_token_create_uses_the_configured_prefix(cli: Invoke, database: str) -> None:
    _create_alice(cli)
    result = cli(
        "token", "create", "alice", env={"CHEESESHOP_TOKEN_PREFIX": "pypi-"}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("pypi-")


def test_token_create_for_a_project(cli: Invoke, database: str) -> None:
    _create_alice(cli)

    async def own(session: object) -> None:
        user = await user_by_name(session, "alice")  # type: ignore[arg-type]
        assert user is not None
        project = Project(name="Hello", normalized_name="hello")
        session.add(project)  # type: ignore[attr-defined]
        await session.flush()  # type: ignore[attr-defined]
        session.add(Role(user_id=user.id, project_id=project.id, role_name=RoleName.OWNER.value))  # type: ignore[attr-defined]

    _in_db(database, own)
    result = cli(
        "token",
        "create",
        "alice",
        "--project",
        "Hello",
        "--expires-in-days",
        "7",
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output

    async def check(session: object) -> Principal:
        return await authenticate_token(session, result.stdout.strip(), prefix="cheeseshop-")  # type: ignore[arg-type]

    principal = _in_db(database, check)
    assert isinstance(principal, Principal)
    assert principal.claims.projects == ("hello",)
    assert principal.claims.expires is not None


def test_token_create_for_a_missing_project_fails(cli: Invoke, database: str) -> None:
    _create_alice(cli)
    result = cli("token", "create", "alice", "--project", "nothing-here")
    assert result.exit_code != 0
    assert "no project named 'nothing-here'" in result.output
    assert "cheeseshop-" not in result.stdout


def test_token_create_refuses_a_description_longer_than_its_column(cli: Invoke, database: str) -> None:
    _create_alice(cli)
    result = cli("token", "create", "alice", "--description", "d" * 201)
    assert result.exit_code != 0
    assert "the description is 201 characters long; shorten it to 200" in result.output
    assert "cheeseshop-" not in result.stdout
    assert cli("token", "create", "alice", "--description", "d" * 200).exit_code == 0


def test_token_create_for_a_missing_user_fails(cli: Invoke, database: str) -> None:
    result = cli("token", "create", "nobody")
    assert result.exit_code != 0
    assert "no user 'nobody'" in result.output


# -- gc ---------------------------------------------------------------------------------


def test_gc_deletes_old_orphans_and_dry_run_only_lists_them(
    cli: Invoke, data_dir: Path, database: str
) -> None:
    orphan = data_dir / "files" / "ab" / "cd" / ("ef" * 30) / "orphan-1.0.tar.gz"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"stored, never committed")
    young = orphan.with_name("young-1.0.tar.gz")
    young.write_bytes(b"an upload in flight")
    os.utime(orphan, (1000.0, 1000.0))
    relative = orphan.relative_to(data_dir / "files").as_posix()

    dry = cli("gc", "--dry-run", catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.splitlines() == [relative]
    assert "would delete 1 file(s)" in dry.stderr
    assert orphan.exists()

    real = cli("gc", catch_exceptions=False)
    assert real.exit_code == 0, real.output
    assert real.stdout.splitlines() == [relative]
    assert "deleted 1 file(s)" in real.stderr
    assert not orphan.exists()
    assert young.exists()

    again = cli("gc", catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert again.stdout == ""


# -- plugins ----------------------------------------------------------------------------


def test_plugins_lists_the_defaults_with_their_hooks(cli: Invoke) -> None:
    result = cli("plugins", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    storage = lines.index("  local_storage (cheeseshop.storage.local, core default)")
    assert lines[storage + 1] == "    - cheeseshop_file_storage"
    outbox = lines.index("  embedded_outbox (cheeseshop.outbox.embedded, core default)")
    assert lines[outbox + 1] == "    - cheeseshop_event_dispatcher"
    assert "  recorder = cheeseshop_recorder" in lines  # installed, not enabled
    assert lines.index("  recorder = cheeseshop_recorder") > lines.index(
        "Installed plugins (enable with CHEESESHOP_PLUGINS=name,...):"
    )
    # An installed plugin's hooks are listed without enabling it (it needs no settings).
    recorder = lines.index("  recorder = cheeseshop_recorder")
    assert "    - cheeseshop_file_uploaded" in lines[recorder + 1 : recorder + 10]
    for plugin, hook in (("cdn_fastly", "cheeseshop_purge"), ("email_ses", "cheeseshop_email_sender")):
        start = lines.index(f"  {plugin} = cheeseshop_{plugin}")
        assert f"    - {hook}" in lines[start + 1 : start + 6]


def test_plugins_json(cli: Invoke) -> None:
    result = cli("plugins", "--json", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    enabled = {plugin["name"]: plugin for plugin in data["enabled"]}
    assert set(enabled) == {"local_storage", "embedded_outbox", "page_cache", "email", "celery"}
    assert enabled["local_storage"]["hooks"] == ["cheeseshop_file_storage"]
    assert enabled["local_storage"]["default"] is True
    assert enabled["embedded_outbox"]["hooks"] == ["cheeseshop_event_dispatcher"]
    assert data["installed"]["recorder"] == "cheeseshop_recorder"


def test_plugins_with_an_enabled_plugin(cli: Invoke) -> None:
    result = cli(
        "plugins", "--json", env={"CHEESESHOP_PLUGINS": "recorder"}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    enabled = {plugin["name"]: plugin for plugin in json.loads(result.stdout)["enabled"]}
    assert enabled["recorder"]["module"] == "cheeseshop_recorder"
    assert enabled["recorder"]["default"] is False
    assert enabled["recorder"]["version"] == "0.1.0"
    assert "cheeseshop_file_uploaded" in enabled["recorder"]["hooks"]
    assert "cheeseshop_settings" in enabled["recorder"]["hooks"]

    text = cli("plugins", env={"CHEESESHOP_PLUGINS": "recorder"}, catch_exceptions=False).stdout
    lines = text.splitlines()
    start = lines.index("  recorder (cheeseshop_recorder, version 0.1.0)")
    assert "    - cheeseshop_file_uploaded" in lines[start + 1 : start + 8]


def test_unknown_plugin_stops_with_a_message(cli: Invoke) -> None:
    result = cli("plugins", env={"CHEESESHOP_PLUGINS": "nope,recorder"})
    assert result.exit_code != 0
    assert "unknown plugin(s): nope" in result.output
    assert "recorder" in result.output.partition("installed: ")[2]
    assert result.stdout == ""


def test_blocked_default_plugin_is_not_listed(cli: Invoke) -> None:
    # Blocking the default storage with no replacement is refused at start-up.
    result = cli("plugins", env={"CHEESESHOP_BLOCKED_PLUGINS": "local_storage"})
    assert result.exit_code != 0
    assert "no plugin provides file storage" in result.output


# -- config -----------------------------------------------------------------------------


def test_config_prints_json_with_secrets_masked(cli: Invoke, data_dir: Path) -> None:
    result = cli(
        "config",
        env={
            "CHEESESHOP_SECRET_KEY": "supersecret",
            "CHEESESHOP_DATABASE_URL": "postgresql+asyncpg://cheese:hunter2@127.0.0.1:5432/cheese",
            "CHEESESHOP_MAX_FILE_SIZE": "2048",
        },
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "supersecret" not in result.output
    assert "hunter2" not in result.output
    data = json.loads(result.stdout)
    assert data["core"]["secret_key"] == "********"
    assert data["core"]["max_file_size"] == 2048
    assert data["core"]["data_dir"] == str(data_dir)
    assert data["core"]["token_prefix"] == "cheeseshop-"


def test_config_shows_plugin_sections(cli: Invoke, tmp_path: Path) -> None:
    config = tmp_path / "cheeseshop.toml"
    config.write_text(
        f'plugins = ["recorder"]\n\n[recorder]\npath = "{tmp_path / "events.jsonl"}"\n'
    )
    result = cli("--config", str(config), "config", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    section = json.loads(result.stdout)["recorder"]
    assert section["path"] == str(tmp_path / "events.jsonl")
    assert section["reject"] == []
    via_env = cli("config", env={"CHEESESHOP_CONFIG": str(config)}, catch_exceptions=False)
    assert json.loads(via_env.stdout)["recorder"]["path"] == str(tmp_path / "events.jsonl")


def test_config_with_a_bad_value_names_it(cli: Invoke) -> None:
    result = cli("config", env={"CHEESESHOP_MAX_FILE_SIZE": "lots"})
    assert result.exit_code != 0
    assert "max_file_size" in result.output and "CHEESESHOP_MAX_FILE_SIZE" in result.output


def test_config_with_a_bad_plugin_value_names_it(cli: Invoke) -> None:
    result = cli(
        "config", env={"CHEESESHOP_PLUGINS": "recorder", "CHEESESHOP_RECORDER__NOSUCH": "1"}
    )
    assert result.exit_code != 0
    assert "recorder.nosuch" in result.output
