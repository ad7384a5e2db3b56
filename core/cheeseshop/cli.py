"""The ``cheeseshop`` command: serve, deliver, worker, beat, db, user, token, gc, plugins, config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from cheeseshop import logs
from cheeseshop.config import ConfigError, Settings, load_settings, redacted

__all__ = ["main"]

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    config_file: Path | None = ctx.find_root().params.get("config")
    try:
        return load_settings(config_file)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _services(ctx: click.Context) -> Any:
    from cheeseshop.app import build_services

    try:
        return build_services(_settings(ctx))
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _run(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


@click.group()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CHEESESHOP_CONFIG",
    help="TOML settings file (also CHEESESHOP_CONFIG).",
)
def main(config: Path | None) -> None:
    """Cheeseshop, a self-hostable Python package index."""
    logs.configure()


# -- serve -------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), help="Web processes.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Serve the index with hypercorn (migrating the database first when auto_migrate)."""
    from hypercorn.config import Config

    from cheeseshop.app import create_app, prepare_web_process
    from cheeseshop.db import upgrade
    from cheeseshop.outbox.embedded import DeliveredElsewhere
    from cheeseshop.outbox.process import DeliveryProcess
    from cheeseshop.services import EXTENSION_KEY

    settings = _settings(ctx)
    try:
        # Built before binding, so a bad plugin or setting stops start-up at once.
        app = create_app(settings)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if settings.auto_migrate:
        upgrade(settings.resolved_database_url)
    prepare_web_process()
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.workers = workers
    # A logger object, not "-": hypercorn then adds no handler of its own, so each line is
    # written once, by the root handler. No hypercorn access log: the app writes its own
    # (cheeseshop.web.access), at a fraction of the cost.
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # With the outbox's own 5 s grace, a SIGTERM ends the process within about 10 s.
    config.graceful_timeout = 5
    click.echo(f"Cheeseshop serving on http://{config.bind[0]}/ (database: "
               f"{redacted(settings)['core']['database_url']})", err=True)
    config_file = ctx.find_root().params.get("config")
    with contextlib.ExitStack() as stack:
        if isinstance(app.extensions[EXTENSION_KEY].outbox.dispatcher, DeliveredElsewhere):
            # outbox_delivery = "process": one deliverer beside however many web workers.
            stack.enter_context(DeliveryProcess.for_cli(str(config_file) if config_file else None))
        if workers == 1:
            _run_event_loop(_serve_until_signalled(app, config))
            return
        from hypercorn.run import run

        config.worker_class = "uvloop" if _has_uvloop() else "asyncio"
        config.application_path = "cheeseshop.app:create_app_from_env()"
        # Each worker process imports the factory itself; hand it the same config file.
        if config_file:
            import os

            os.environ["CHEESESHOP_CONFIG"] = str(config_file)
        code = run(config)
    sys.exit(code)


def _has_uvloop() -> bool:
    """Whether uvloop is installed (it is a dependency, except on Windows)."""
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed, else on asyncio's own loop.

    uvloop's loop and transports are written in C: on a cached page, hypercorn's own
    per-request work, which no app can avoid, costs less.
    """
    if _has_uvloop():
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


async def _serve_until_signalled(app: Any, config: Any) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully (after_serving runs)."""
    import signal

    from hypercorn.asyncio import serve as hypercorn_serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)


# -- db ----------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply migrations."""
    from cheeseshop.db import upgrade

    upgrade(_settings(ctx).resolved_database_url, revision)
    click.echo(f"database at {revision}")


# -- user --------------------------------------------------------------------------------


@main.group()
def user() -> None:
    """Accounts."""


@user.command("create")
@click.argument("username")
@click.option("--email", required=True, help="Primary e-mail address.")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="CHEESESHOP_NEW_PASSWORD",
    help="Prompted for when not given (also CHEESESHOP_NEW_PASSWORD).",
)
@click.pass_context
def user_create(ctx: click.Context, username: str, email: str, password: str) -> None:
    """Create a user."""
    from cheeseshop.accounts.service import AccountError, create_user

    services = _services(ctx)

    async def go() -> None:
        try:
            async with services.db.write() as session:
                await create_user(session, username, email=email, password=password)
        finally:
            await services.db.dispose()

    try:
        _run(go)
    except AccountError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"created user {username}")


@user.command("notifications")
@click.argument("username")
@click.option(
    "--release-published/--no-release-published",
    default=None,
    help="E-mail USERNAME (or not) when a project they own or maintain publishes a release.",
)
@click.pass_context
def user_notifications(ctx: click.Context, username: str, release_published: bool | None) -> None:
    """Show, or change, what USERNAME is e-mailed about, and their addresses' state."""
    from cheeseshop.accounts.service import AccountError
    from cheeseshop.notify import notification_choices

    services = _services(ctx)

    async def go() -> Any:
        try:
            async with services.db.write() as session:
                return await notification_choices(session, username, release_published=release_published)
        finally:
            await services.db.dispose()

    try:
        choices = _run(go)
    except AccountError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{choices.username}: release-published e-mail {'on' if choices.release_published else 'off'}")
    for address in choices.addresses:
        notes = ["primary" if address.primary else "secondary", "verified" if address.verified else "unverified"]
        if address.undeliverable_since is not None:
            notes.append(
                f"undeliverable since {address.undeliverable_since:%Y-%m-%d %H:%M} UTC: "
                f"{address.undeliverable_reason or 'no reason given'}"
            )
        click.echo(f"  {address.email} ({', '.join(notes)})")


# -- token -------------------------------------------------------------------------------


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.argument("username")
@click.option("--project", "projects", multiple=True, help="Limit the token to this project (repeatable).")
@click.option("--description", default="", help="What the token is for.")
@click.option("--expires-in-days", type=click.IntRange(1), default=None, help="Expire after N days.")
@click.pass_context
def token_create(
    ctx: click.Context, username: str, projects: tuple[str, ...], description: str, expires_in_days: int | None
) -> None:
    """Create an API token for USERNAME and print it (it is shown only once)."""
    from cheeseshop.accounts.service import AccountError, create_token, user_by_name

    services = _services(ctx)

    async def go() -> str:
        try:
            async with services.db.write() as session:
                account = await user_by_name(session, username)
                if account is None:
                    raise AccountError(f"no user {username!r}")
                _, raw = await create_token(
                    session,
                    account,
                    prefix=services.settings.token_prefix,
                    description=description,
                    projects=list(projects) or None,
                    expires_in=timedelta(days=expires_in_days) if expires_in_days else None,
                )
                return raw
        finally:
            await services.db.dispose()

    try:
        click.echo(_run(go))
    except AccountError as error:
        raise click.ClickException(str(error)) from None


# -- project changes: yank, unyank, delete, status -----------------------------------------


def _change(ctx: click.Context, make: Callable[[Any], Awaitable[Any]]) -> None:
    """Run one project change and deliver its events from this process at once.

    Delivering here spares plugins (a CDN purge, say) the wait for a server's sweep; what
    fails here stays in the outbox for the server to retry.
    """
    from cheeseshop.projects.service import ChangeRefused

    services = _services(ctx)

    async def go() -> int:
        try:
            changed = await make(services)
            await services.outbox.deliver_many(changed.event_ids)
            return changed.serial
        finally:
            await services.db.dispose()

    try:
        serial = _run(go)
    except ChangeRefused as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"done (serial {serial})", err=True)


@main.command()
@click.argument("project")
@click.argument("version")
@click.option("--reason", default="", help="Why; shown to installers (PEP 592).")
@click.pass_context
def yank(ctx: click.Context, project: str, version: str, reason: str) -> None:
    """Yank release VERSION of PROJECT: installers skip it unless pinned to it."""
    from cheeseshop.projects import service

    _change(ctx, lambda services: service.yank(services, project, version, reason=reason, by="cli"))


@main.command()
@click.argument("project")
@click.argument("version")
@click.pass_context
def unyank(ctx: click.Context, project: str, version: str) -> None:
    """Undo the yank of release VERSION of PROJECT."""
    from cheeseshop.projects import service

    _change(ctx, lambda services: service.unyank(services, project, version, by="cli"))


@main.command()
@click.argument("project")
@click.argument("version")
@click.option("--file", "filename", default=None, help="Delete only this file of the release.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, project: str, version: str, filename: str | None, yes: bool) -> None:
    """Delete release VERSION of PROJECT, or one file of it, for good.

    The deleted filenames can never be uploaded again (as on PyPI); yanking is the
    reversible way to keep installers off a release.
    """
    from cheeseshop.projects import service

    what = (
        f"{filename} of {project} {version}"
        if filename
        else f"release {version} of {project} and all its files"
    )
    if not yes:
        click.confirm(f"Delete {what}? Its filenames can never be uploaded again", abort=True)
    if filename:
        _change(
            ctx,
            lambda services: service.delete_file(services, project, filename, version=version, by="cli"),
        )
    else:
        _change(ctx, lambda services: service.delete_release(services, project, version, by="cli"))


@main.group()
def project() -> None:
    """Projects."""


@project.command("status")
@click.argument("name")
@click.argument("status", type=click.Choice(["active", "archived", "quarantined", "deprecated"]))
@click.option("--reason", default="", help="Why; shown on the project's pages (PEP 792).")
@click.pass_context
def project_status(ctx: click.Context, name: str, status: str, reason: str) -> None:
    """Set the PEP 792 status of project NAME.

    archived: files stay, uploads are refused. quarantined: no files are offered, uploads
    are refused, and it is hidden from the index. deprecated: a notice only.
    """
    from cheeseshop.projects import service

    _change(ctx, lambda services: service.set_status(services, name, status, reason=reason, by="cli"))


# -- deliver, worker and beat --------------------------------------------------------------


@main.command()
@click.option(
    "--exit-with-parent",
    is_flag=True,
    hidden=True,
    help="Stop when the process that started this one is gone (used by serve).",
)
@click.pass_context
def deliver(ctx: click.Context, exit_with_parent: bool) -> None:
    """Deliver outbox events without a broker (serve starts this; run it yourself beside
    an app served some other way)."""
    from cheeseshop.outbox.process import run_deliverer

    settings = _settings(ctx)
    if settings.broker_url is not None:
        raise click.ClickException(
            "broker_url is set, so Celery delivers the outbox: run `cheeseshop worker` instead."
        )
    try:
        asyncio.run(run_deliverer(settings, exit_with_parent=exit_with_parent))
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


_LOGLEVEL = click.option(
    "--loglevel", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR."
)


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="Worker processes or threads (default: one per CPU).",
)
@_LOGLEVEL
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default="prefork",
    show_default=True,
    help="Run tasks in processes, threads, or this process.",
)
@click.option("--hostname", default=None, help="Node name, unique per worker (default: celery@<host>).")
@click.pass_context
def worker(
    ctx: click.Context, concurrency: int | None, loglevel: str, pool: str, hostname: str | None
) -> None:
    """Run a Celery worker: delivers outbox events, runs periodic tasks."""
    from cheeseshop.worker.commands import run_worker

    try:
        run_worker(
            _settings(ctx), concurrency=concurrency, loglevel=loglevel, pool=pool, hostname=hostname
        )
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@main.command()
@_LOGLEVEL
@click.pass_context
def beat(ctx: click.Context, loglevel: str) -> None:
    """Run Celery beat (RedBeat): sends the periodic tasks; run one or two, never more needed."""
    from cheeseshop.worker.commands import run_beat

    try:
        run_beat(_settings(ctx), loglevel=loglevel)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


# -- gc ------------------------------------------------------------------------------------


@main.command()
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.pass_context
def gc(ctx: click.Context, dry_run: bool) -> None:
    """Delete stored files no database row references, older than orphan_grace_seconds.

    They are what an upload interrupted between storing and committing leaves; stale
    upload temporaries in data_dir/tmp go too. Prints one deleted path a line.
    """
    from cheeseshop.storage.gc import collect_orphans

    services = _services(ctx)

    async def go() -> list[str]:
        try:
            return await collect_orphans(services, dry_run=dry_run)
        finally:
            await services.db.dispose()

    deleted = _run(go)
    for path in deleted:
        click.echo(path)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(deleted)} file(s)", err=True)


# -- plugins and config ------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins, the enabled ones, and the hooks each implements."""
    from cheeseshop.plugins import declared_hooks, installed_plugins

    services = _services(ctx)
    enabled = services.hooks.describe()
    installed = installed_plugins()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "installed": installed,
                    "enabled": [
                        {
                            "name": info.name,
                            "module": info.module,
                            "version": info.version,
                            "default": info.default,
                            "hooks": list(info.hooks),
                        }
                        for info in enabled
                    ],
                },
                indent=2,
            )
        )
        return
    click.echo("Enabled plugins:")
    for info in enabled:
        kind = "core default" if info.default else f"version {info.version or '?'}"
        click.echo(f"  {info.name} ({info.module}, {kind})")
        for hook in info.hooks:
            click.echo(f"    - {hook}")
    click.echo("Installed plugins (enable with CHEESESHOP_PLUGINS=name,...):")
    for name, target in sorted(installed.items()):
        click.echo(f"  {name} = {target}")
        try:
            hooks = declared_hooks(target)
        except Exception as error:  # a broken plugin is reported, not fatal, in a listing
            click.echo(f"    (cannot be imported: {type(error).__name__}: {error})")
            continue
        for hook in hooks:
            click.echo(f"    - {hook}")
    if not installed:
        click.echo("  (none)")


@main.command()
@click.pass_context
def config(ctx: click.Context) -> None:
    """Print the effective settings as JSON, secrets masked."""
    services = _services(ctx)
    click.echo(json.dumps(redacted(services.settings), indent=2, default=str))


if __name__ == "__main__":  # pragma: no cover
    main()
