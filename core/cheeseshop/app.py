"""``create_app(settings)``: the one place where Cheeseshop is wired together."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

from quart import Quart, Response, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from werkzeug.exceptions import HTTPException

from cheeseshop.cache import make_page_cache
from cheeseshop.cache import redis as redis_cache
from cheeseshop.config import Settings, load_settings
from cheeseshop.db import Database
from cheeseshop.errors import APIError
from cheeseshop.outbox import Outbox
from cheeseshop.plugins import load_plugins
from cheeseshop.ratelimit import RateLimiter
from cheeseshop.services import EXTENSION_KEY, Services
from cheeseshop.storage.gc import OrphanCollector
from cheeseshop.web import COMMON_HEADERS, access
from cheeseshop.web.fastpath import CachedPageFastPath
from cheeseshop.web.reason import REASON_HEADER, latin1_reason

__all__ = ["build_services", "create_app", "create_app_from_env"]

log = logging.getLogger(__name__)


def build_services(settings: Settings, *, extra_plugins: Sequence[tuple[str, object]] = ()) -> Services:
    """Load plugins, validate their settings and build the service objects.

    Raises ``ConfigError`` (or its subclass ``PluginError``) naming what is wrong.
    """
    hooks = load_plugins(settings, extra=extra_plugins)
    settings = hooks.apply_settings(settings)
    db = Database(settings.resolved_database_url)
    storage = hooks.file_storage(settings)
    dispatcher = hooks.event_dispatcher(settings)
    outbox = Outbox(db, hooks, settings, dispatcher)
    cache = make_page_cache(settings, db, enabled=hooks.is_enabled("page_cache"))
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    return Services(
        settings=settings,
        hooks=hooks,
        db=db,
        storage=storage,
        outbox=outbox,
        cache=cache,
        # Under the page cache's Redis prefix: one namespace for the index's keys.
        ratelimiter=RateLimiter(redis_url, key_prefix=f"{redis_cache.PREFIX}ratelimit"),
    )


def create_app(
    settings: Settings | None = None, *, extra_plugins: Sequence[tuple[str, object]] = ()
) -> Quart:
    """Build the web application for ``settings`` (default: read from the environment).

    ``extra_plugins`` registers (name, plugin) pairs directly, besides those named in
    settings: the test kit and embedding applications use it.
    """
    services = build_services(settings or load_settings(), extra_plugins=extra_plugins)
    app = Quart("cheeseshop")
    # The upload view enforces its own, per-file limit while streaming.
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["BODY_TIMEOUT"] = services.settings.upload_timeout_seconds
    app.extensions[EXTENSION_KEY] = services

    from cheeseshop.jsonapi.views import blueprint as jsonapi
    from cheeseshop.simple.files import blueprint as files
    from cheeseshop.simple.views import blueprint as simple
    from cheeseshop.upload.views import blueprint as upload

    for blueprint in (upload, simple, files, jsonapi):
        app.register_blueprint(blueprint)
    _register_edges(app)
    access.install(app)
    # Current cached pages are answered before Quart sees the request (web/fastpath.py).
    app.asgi_app = CachedPageFastPath(app.asgi_app, services)  # type: ignore[method-assign]

    orphans = OrphanCollector(services)

    @app.before_serving
    async def start_delivery() -> None:
        services.settings.upload_directory.mkdir(parents=True, exist_ok=True)
        await services.cache.start()
        await services.outbox.dispatcher.start(services.outbox)
        await orphans.start()
        settle_garbage_collector()

    @app.after_serving
    async def stop_delivery() -> None:
        await orphans.stop()
        await services.outbox.dispatcher.stop()
        await services.cache.close()
        await services.db.dispose()

    services.hooks.configure(app, services.settings)
    return app


def settle_garbage_collector() -> None:
    """Exempt everything built at start-up from the garbage collector's full passes.

    A web process holds some 120,000 objects once its modules, engine and plugins are
    loaded, nearly all of them for life; a full collection walked them all, stopping every
    request for 150 ms on the machine measured (the slowest responses of a load test were
    exactly that). ``gc.freeze`` moves them to a generation the collector never scans, so
    its passes only look at what requests create.
    """
    gc.collect()
    gc.freeze()


def prepare_web_process() -> None:
    """What a process that serves the app on hypercorn sets up first, as ``cheeseshop
    serve`` and each of its workers do: hypercorn sending our reason phrases and reusing
    its header work (:mod:`cheeseshop.web.http11`), timing idle connections without a
    task per request (:mod:`cheeseshop.web.idle`), lean log records and batched access
    lines (:mod:`cheeseshop.web.access`)."""
    from cheeseshop.web import http11, idle

    http11.install()
    idle.install()
    access.lean_log_records()
    access.buffer_lines()


def create_app_from_env() -> Quart:
    """Application factory for ``hypercorn 'cheeseshop.app:create_app_from_env()'``.

    Used by each worker process of ``cheeseshop serve --workers N``, so it also does in
    that process what ``cheeseshop serve`` does (:func:`prepare_web_process`), and writes
    out its buffered access lines before the worker dies of a SIGTERM from its parent.
    The rest of the logging is left to whoever runs the factory (hypercorn's own
    ``--log-config``, say).
    """
    prepare_web_process()
    access.write_before_terminating()
    return create_app(load_settings())


def _text_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = Response(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.headers[REASON_HEADER] = latin1_reason(message)
    return response


def _register_edges(app: Quart) -> None:
    @app.get("/")
    async def index() -> Response:
        return Response(
            "Cheeseshop: a Python package index. Simple API at /simple/; upload at /legacy/.\n",
            content_type="text/plain; charset=utf-8",
        )

    @app.errorhandler(APIError)
    async def api_error(error: APIError) -> Response:
        return _text_error(error.status, error.message, error.headers)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status < 400:  # routing redirects travel as exceptions; let them through
            return error.get_response()
        message = error.description or error.name
        if status == 405:
            message = f"Method {request.method} is not allowed here."
        headers = {}
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            headers["Allow"] = ", ".join(error.valid_methods)
        return _text_error(status, message, headers)

    @app.errorhandler(DBAPIError)
    async def database_error(error: DBAPIError) -> Response:
        # A lost or refused connection is the database's trouble, not a bug: say so and
        # let the client retry (an identical re-upload is answered 200, so retrying is safe).
        if error.connection_invalidated or isinstance(error, (OperationalError, InterfaceError)):
            log.warning("database unavailable on %s %s: %s", request.method, request.path, error)
            return _text_error(503, "The database is unavailable; try again.", {"Retry-After": "5"})
        return await unexpected(error)

    @app.errorhandler(SQLAlchemyTimeoutError)
    async def database_busy(error: SQLAlchemyTimeoutError) -> Response:
        log.warning("database pool exhausted on %s %s", request.method, request.path)
        return _text_error(503, "The database is busy; try again.", {"Retry-After": "5"})

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _text_error(500, "Internal server error; the problem has been logged.")

    @app.after_request
    async def common_headers(response: Response) -> Response:
        for name, value in COMMON_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
