"""The contract between Cheeseshop and its plugins: every hook, documented.

A plugin is a module (or any object) with functions decorated ``@cheeseshop.hookimpl``,
named like the specs below, exposed through the entry-point group ``cheeseshop.plugins``
and enabled by name (``CHEESESHOP_PLUGINS=name,other``). A hook implementation may take
any subset of the parameters a spec lists.

pluggy calls are synchronous. A hook must never be ``async``: return an object whose
methods are, or do the slow work in an after-commit hook, which runs in the worker.

The reference documentation is generated from the docstrings in this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from quart import Quart

    from cheeseshop.config import PluginSettings, Settings
    from cheeseshop.events import CachePurge, FileUploaded, Notification, ProjectChanged, ReleasePublished
    from cheeseshop.notify import EmailSender, Mailer
    from cheeseshop.outbox.dispatch import EventDispatcher
    from cheeseshop.storage import FileStorage
    from cheeseshop.upload.candidate import DescribedRelease, UploadCandidate
    from cheeseshop.worker.schedule import PeriodicTask

hookspec = pluggy.HookspecMarker("cheeseshop")

#: Hooks whose implementations form a chain: each gets what the previous one returned.
CHAIN_HOOKS = frozenset({"cheeseshop_render_description"})

# --------------------------------------------------------------------------------------
# Wiring: start-up, in every process (web, worker, CLI).
# --------------------------------------------------------------------------------------


@hookspec
def cheeseshop_settings() -> type[PluginSettings] | None:
    """Declare this plugin's settings section.

    Called at start-up, once, before any other hook and before settings are validated.

    :returns: a subclass of :class:`cheeseshop.PluginSettings`. Its section is named
        after the plugin: for plugin ``search_es`` the TOML table ``[search_es]`` and the
        variables ``CHEESESHOP_SEARCH_ES__<KEY>``. A wrong value stops start-up naming its
        key. ``None`` means the plugin has no settings.
    """


@hookspec
def cheeseshop_configure(app: Quart, settings: Settings) -> None:
    """Wire the plugin into the web application.

    Called at start-up in the web process, after settings are validated and the
    providers are chosen, before the first request. Add blueprints or routes, register
    ``before_serving``/``after_serving`` callbacks to open and close clients. Read your
    own section with ``settings.section("<plugin name>")``.

    :param app: the Quart application being built.
    :param settings: the validated settings.
    :returns: nothing.
    """


# --------------------------------------------------------------------------------------
# Providers: one implementation per slot. Called at start-up.
# --------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def cheeseshop_file_storage(settings: Settings) -> FileStorage | None:
    """Provide the storage that distribution files are written to and read from.

    Called once at start-up in every process. The core's default stores files on local
    disk under ``data_dir/files``. Enabling two plugins that both provide storage stops
    start-up with a message naming both.

    Stops at the first non-None result.

    :param settings: the validated settings.
    :returns: an object implementing :class:`cheeseshop.storage.FileStorage`, or ``None``
        to leave the slot to another plugin.
    """


@hookspec(firstresult=True)
def cheeseshop_email_sender(settings: Settings) -> EmailSender | None:
    """Provide what sends the index's e-mail.

    Called once at start-up in every process. The core's default (plugin ``email``) sends
    through SMTP when ``smtp_host`` is set and otherwise writes each message as an
    ``.eml`` file into ``data_dir/mail``. The sender is used from event hooks, in worker
    threads: it must be synchronous and thread-safe, and turn its service's errors into
    :class:`cheeseshop.EmailSendError`. Check it with
    :class:`cheeseshop.testing.contracts.EmailSenderContract`. Enabling two plugins that
    both provide a sender stops start-up with a message naming both.

    Stops at the first non-None result.

    :param settings: the validated settings.
    :returns: an object implementing :class:`cheeseshop.EmailSender`, or ``None`` to
        leave the slot to another plugin.
    """


@hookspec(firstresult=True)
def cheeseshop_event_dispatcher(settings: Settings) -> EventDispatcher | None:
    """Provide what hands committed outbox events to a worker.

    Called once at start-up in every process. Without a broker (the embedded mode) the
    core's default leaves the events in the outbox for the ``cheeseshop deliver``
    process that ``cheeseshop serve`` starts, or, with ``outbox_delivery = "inline"``,
    delivers them from a background loop in the web process; with ``broker_url`` the
    core's Celery dispatcher queues a ``deliver`` task instead.

    Stops at the first non-None result.

    :param settings: the validated settings.
    :returns: an object implementing :class:`cheeseshop.outbox.dispatch.EventDispatcher`,
        or ``None`` to leave the slot to another plugin.
    """


# --------------------------------------------------------------------------------------
# Upload and rendering: in the request, before anything is stored or committed.
# --------------------------------------------------------------------------------------


@hookspec
def cheeseshop_validate_upload(candidate: UploadCandidate, settings: Settings) -> None:
    """Check an upload before it is stored.

    Called in the upload request after the core's own checks pass and before the file
    is written to storage or any row is written; nothing is committed yet. Every
    implementation is called, in one of the upload's worker threads (so it may block
    briefly, and must be thread-safe). Must be quick and must not change state.

    :param candidate: the uploaded file (a temporary path, its digests and size), its
        parsed filename, the form's metadata and the uploading user.
    :param settings: the validated settings.
    :raises cheeseshop.UploadRejected: to refuse the upload; its message is returned to
        the client with status 400 (or the status it carries).
    :returns: nothing; returning normally accepts.
    """


@hookspec
def cheeseshop_render_description(html: str, release: DescribedRelease, settings: Settings) -> str | None:
    """Transform a release's rendered description.

    Called in the upload request (in one of its worker threads), after the core rendered
    and sanitized the description (readme_renderer) and before it is stored; also when
    descriptions are re-rendered.
    Implementations form a chain: each receives the HTML the previous one returned. Must
    be quick, deterministic and free of I/O (Camo, for instance, rewrites image URLs).
    The result is stored and shown as is: it must stay safe HTML.

    :param html: the sanitized HTML so far.
    :param release: the project, version and description content type.
    :param settings: the validated settings.
    :returns: the new HTML, or ``None`` to leave it unchanged.
    """


# --------------------------------------------------------------------------------------
# After commit, in the worker, through the outbox.
# --------------------------------------------------------------------------------------


@hookspec
def cheeseshop_file_uploaded(event: FileUploaded, settings: Settings) -> None:
    """React to a file that was accepted and committed.

    Called after commit, by the worker (never in the request), through the outbox:
    delivered at least once, possibly again after a failure or restart, so it must be
    idempotent. An exception is logged and the delivery to this plugin alone is retried
    with backoff; other plugins are neither blocked nor called again.

    :param event: what was uploaded, where it is stored, and the journal serial.
    :param settings: the validated settings (read your section with ``settings.section``).
    :returns: nothing.
    """


@hookspec
def cheeseshop_release_published(event: ReleasePublished, settings: Settings) -> None:
    """React to a new release becoming visible (its first file was committed).

    Called after commit, by the worker, through the outbox, after the
    ``cheeseshop_file_uploaded`` event of the same upload was recorded. Delivered at least
    once: must be idempotent. An exception is retried for this plugin alone.

    :param event: the project, the version and who published it.
    :param settings: the validated settings.
    :returns: nothing.
    """


@hookspec
def cheeseshop_project_changed(event: ProjectChanged, settings: Settings) -> None:
    """React to a change to a project other than a new file: a yank, an unyank, a
    deletion, a status.

    Called after commit, by the worker, through the outbox. Delivered at least once: must
    be idempotent. An exception is retried for this plugin alone.

    :param event: the project, the action (``yank``, ``unyank``, ``delete``, ``status``),
        the version, file or status concerned, the reason given, who did it, and the
        journal serial.
    :param settings: the validated settings.
    :returns: nothing.
    """


@hookspec
def cheeseshop_purge(event: CachePurge, settings: Settings) -> None:
    """Drop cached copies of responses tagged with any of ``event.keys``.

    Called after the change is committed, by the worker, through the outbox, so a purge
    is never lost and never runs before the change is visible. Every change to a project
    purges ``project/<normalized name>`` and ``all-projects``; a deletion also purges
    ``file/<storage path>`` of each deleted file (and of its ``.metadata``). The core's page cache is one
    implementation; a CDN plugin purges its edge by the same keys (the keys it was given
    by :func:`cheeseshop_response_headers`). Delivered at least once: purging twice must
    be harmless. Raise to have this plugin's delivery retried with backoff.

    :param event: ``keys`` to purge and the journal ``serial`` of the change.
    :param settings: the validated settings.
    :returns: nothing.
    """


@hookspec
def cheeseshop_notify(notification: Notification, mailer: Mailer, settings: Settings) -> None:
    """Tell people about something that happened: e-mail, a webhook, a chat message.

    Called after commit, by the worker, through the outbox; the notification was built
    in the transaction of the change it announces (a ``release-published`` one for each
    new release, addressed to the project's Owners and Maintainers who did not opt out,
    at their primary address unless it is undeliverable). Delivered at least once: a
    repeat carries the same ``notification.notification_id``, so an implementation must
    recognise it and not tell anyone twice. An exception is retried for this plugin
    alone. The core's ``email`` plugin renders one e-mail per recipient and sends it
    through ``mailer``, which skips what was already sent.

    :param notification: its id, its ``kind``, the recipients (username, address, role)
        and the plain values its templates show.
    :param mailer: the index's e-mail sender behind a record of what was sent
        (:class:`cheeseshop.Mailer`); its methods block, which is fine here.
    :param settings: the validated settings.
    :returns: nothing.
    """


# --------------------------------------------------------------------------------------
# In the request, on every cacheable response.
# --------------------------------------------------------------------------------------


@hookspec
def cheeseshop_response_headers(keys: tuple[str, ...], settings: Settings) -> Mapping[str, str] | None:
    """Headers to add to every cacheable response tagged with ``keys``.

    Called in the web process, on the event loop, the first time a cacheable response
    with these ``keys`` is sent. Cacheable responses are the Simple pages, the root and
    the JSON API, 304s included, tagged with their project's keys; and downloads from
    ``/packages/``, tagged ``file/<storage path>``: immutable, purged only when deleted,
    so a CDN plugin should let their ``Cache-Control`` (a year) govern the edge.
    ``keys`` are the cache keys the response depends on,
    the same ones a later :func:`cheeseshop_purge` names; a CDN plugin returns them as ``Surrogate-Key`` with its
    own ``Surrogate-Control``. The core sets ``Cache-Control``, ``ETag`` and ``Vary``
    itself; a plugin's header of the same name replaces the core's.

    The answer must depend on ``keys`` and ``settings`` alone: it is computed once per set
    of keys and remembered, so cache hits are served without calling any plugin (which is
    also why the request is not passed).

    :param keys: the cache keys of what the response shows.
    :param settings: the validated settings.
    :returns: header names and values to set, or ``None`` for none.
    """


# --------------------------------------------------------------------------------------
# Tasks: periodic work, scheduled by `cheeseshop beat`, run by `cheeseshop worker`.
# --------------------------------------------------------------------------------------


@hookspec
def cheeseshop_periodic_tasks(settings: Settings) -> Sequence[PeriodicTask] | None:
    """Declare jobs to run periodically (a reconcile, a clean-up, a report).

    Called at start-up of ``cheeseshop beat``, which schedules one Celery task per entry
    (the schedule and its lock live in Redis, so two beat processes never both send), and
    of ``cheeseshop worker``, which looks up the entry a scheduled task names and calls
    ``entry.run(settings)`` there, synchronously, holding a lock in Redis so that one job
    never runs twice at once. Only with a broker (``broker_url``): the embedded mode runs
    the core's own periodic work in the web process and no plugin's. Every
    implementation is called; a name given by two plugins stops start-up.

    :param settings: the validated settings.
    :returns: :class:`cheeseshop.PeriodicTask` entries (a unique ``name``,
        ``interval_seconds``, and ``run``, a callable taking the settings), or ``None``
        for none.
    """


def hook_names() -> list[str]:
    """Every hook name in this module, in definition order."""
    return [name for name, value in globals().items() if name.startswith("cheeseshop_") and callable(value)]

