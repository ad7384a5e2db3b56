"""The upload pipeline: validate -> check against the index -> store and record -> commit -> emit.

Each step is a small function. Order matters for R1/R2: the bytes are stored before the
transaction that makes them visible commits, so a 200 means both exist; a crash in
between leaves at most an unreferenced stored file, never a row without its bytes. The
files are stored while the index is read and that transaction runs its statements, and
it waits for them before it commits: the two fsyncs and the SQL take the time of the
longer, not the sum. On a storage that stages (the local disk) they are stored under
names of their own, the file as soon as the form is checked (beside the archive's checks)
and its core metadata once the archive is, and moved into place inside the transaction
(:func:`_start_early_file_put`); on any other storage, once the checks have passed.
Uniqueness races are settled by database constraints, then re-examined to give the
answer a lone request would have had.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeAlias, TypeVar

from packaging.utils import canonicalize_version
from packaging.version import InvalidVersion, Version
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError

from cheeseshop.accounts.service import Principal
from cheeseshop.db.models import File, ProjectStatus, RoleName, utcnow
from cheeseshop.errors import APIError
from cheeseshop.cache import purge_after_commit
from cheeseshop.cache.keys import change_keys
from cheeseshop.events import CachePurge, Event, FileUploaded, Notification, ReleasePublished
from cheeseshop.journal import Change, record_changes
from cheeseshop.notify import build as notifications
from cheeseshop.ratelimit import Verdict
from cheeseshop.outbox import record
from cheeseshop.packaging.archives import (
    InvalidArchive,
    read_sdist_pkg_info,
    read_wheel_metadata,
)
from cheeseshop.packaging.metadata import InvalidMetadata, check_core_metadata
from cheeseshop.packaging.filenames import InvalidFilename, ParsedFilename, parse_filename
from cheeseshop.config import Settings
from cheeseshop.packaging.names import confusable_fold, is_valid_project_name, normalize, prohibited_reason
from cheeseshop.services import Services
from cheeseshop.storage import (
    FileStorage,
    Staged,
    StoredFileInfo,
    metadata_path,
    promote_all,
    storage_path,
    stored_paths,
    takes_bytes,
    takes_staging,
)
from cheeseshop.packaging.description import InvalidDescription
from cheeseshop.upload.candidate import DescribedRelease, UploadCandidate, UploadRejected
from cheeseshop.upload.describe import is_large, render_large, render_small
from cheeseshop.upload.lookup import IndexQuestion, IndexState, LockedProject, index_state, lock_project
from cheeseshop.upload.rows import insert_file, insert_project
from cheeseshop.upload.form import FormError, UploadRequest, read_form
from cheeseshop.upload.multipart import ReceivedFile, UploadForm, write_temporary

__all__ = ["Authenticate", "KnownState", "handle_upload", "question_from_form", "question_for"]

log = logging.getLogger(__name__)

ALREADY_EXISTS = "File already exists"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class _Submitted:
    """An upload whose form, filename and digests have been checked; not its archive."""

    request: UploadRequest
    file: ReceivedFile
    parsed: ParsedFilename


@dataclasses.dataclass(frozen=True)
class _Checked(_Submitted):
    """An upload that passed every check of its own (the index's come next)."""

    core_metadata: bytes | None


#: Authenticates an upload whose body has arrived, from inside its upload thread: the
#: principal, and what the index holds for the upload if that was read with the token.
Authenticate = Callable[[Connection], "tuple[Principal, KnownState | None]"]


async def handle_upload(
    services: Services,
    principal: Principal | None,
    form: UploadForm,
    *,
    address: str,
    known: KnownState | None = None,
    authenticate: Authenticate | None = None,
) -> str:
    """Carry out one upload from ``address``; returns the 200 body (warnings), raises
    APIError otherwise. Owns ``form``: its temporary file is removed when the upload is
    done, which may be after this request has been cancelled.

    The blocking steps (checking the form, the archive and the index; then describing,
    the ``validate_upload`` hooks and the commit, with the files stored beside them: see
    the module's docstring) run in an upload thread
    (:data:`_UPLOAD_THREADS`), in one trip there and back: each trip costs a thread
    hand-over both ways, and an upload used to make eight of them. The database work
    runs right in that thread too, on SQLite's driver or psycopg
    (:meth:`Database.call_core_blocking`). The trip comes back half-way only when
    something must be awaited before publishing: a new project's rate limits kept in
    Redis, or a large description rendered in a child process (:func:`_describe_large`);
    a second trip then publishes. ``known``: what the index held, read with the token
    (see :class:`KnownState`). Without a ``principal``, the trip begins with
    ``authenticate``, a database read in that thread (a small body, received whole before
    its token was read: see :func:`cheeseshop.upload.views.upload`).

    A thread cannot be stopped: once publishing has begun, the commit happens even if
    the client goes away (Quart then cancels this task), and so must what follows it.
    So the work runs shielded, and a request cancelled before publishing has begun
    closes the :class:`_PublishGate`, which the work checks before it publishes.
    """
    steps = _Steps(services, principal, asyncio.get_running_loop(), known, authenticate)
    gate = _PublishGate()
    work = asyncio.ensure_future(_carry_out(services, steps, form, address, gate))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        if not work.done():
            work.add_done_callback(lambda _: form.cleanup())
            if gate.close():
                work.add_done_callback(_retrieve_quietly)  # it stops at the gate, unpublished
            else:
                filename = form.file.filename if form.file is not None else "(no file)"
                work.add_done_callback(functools.partial(_log_unanswered, filename))
        raise
    finally:
        if work.done():
            form.cleanup()
    return ""


async def _carry_out(
    services: Services, steps: _Steps, form: UploadForm, address: str, gate: _PublishGate
) -> None:
    """Check and publish (see :func:`handle_upload`), then purge this process's pages,
    hand the events to the dispatcher and count a new project against its creator's limits."""
    trip = await _in_upload_thread(steps.check_and_publish, form, address, gate)
    if trip.waits:
        # Something to await before publishing: then a second trip publishes.
        try:
            if trip.new_project:
                await _refuse_too_many_new_projects(services, steps.principal, address)
            rendered = await _describe_large(services, trip.checked)
        except BaseException:
            await _in_upload_thread(steps.abandon, trip.early)
            raise
        event_ids = await _in_upload_thread(
            steps.publish, trip.checked, trip.new_project, gate, trip.early, rendered
        )
    else:
        event_ids = trip.event_ids
    if event_ids is None:
        return  # nothing to publish (identical bytes, or a racer committed them), or stopped
    # This process's pages first: a CDN purging from the outbox must not refetch them.
    await purge_after_commit(services.cache, change_keys(trip.checked.request.normalized_name))
    await services.outbox.dispatch(event_ids)
    if trip.new_project:
        for rule, _, identifiers in _new_project_limits(services, steps.principal, address):
            await services.ratelimiter.hit(rule, *identifiers)


class _PublishGate:
    """Settles, between a cancelled request and its upload thread, whether it publishes.

    Whichever comes first wins: :meth:`begin` (the thread is about to store and commit)
    or :meth:`close` (the request was cancelled before that).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: str | None = None

    def begin(self) -> bool:
        """True, and publishing may begin, unless the gate was closed first."""
        with self._lock:
            if self._state is None:
                self._state = "begun"
            return self._state == "begun"

    def close(self) -> bool:
        """True, and nothing will be published, unless publishing has begun already."""
        with self._lock:
            if self._state is None:
                self._state = "closed"
            return self._state == "closed"


@dataclasses.dataclass(frozen=True)
class _Trip:
    """How the first trip to an upload thread ended."""

    checked: _Checked
    new_project: bool
    #: The outbox ids of the published events; None when nothing was published.
    event_ids: list[int] | None = None
    #: Whether something must be awaited on the loop before publishing (a second trip).
    waits: bool = False
    #: Puts begun in this trip, for the second one to commit or abandon.
    early: _EarlyPuts | None = None


def _retrieve_quietly(work: asyncio.Future[None]) -> None:
    """Consume the outcome of work whose request was cancelled before it published."""
    if not work.cancelled() and work.exception() is not None:
        log.info("an upload cancelled by its client ended with %r", work.exception())


def _log_unanswered(filename: str, publishing: asyncio.Future[None]) -> None:
    """Log how an upload whose client went away ended: no request is left to answer it."""
    if publishing.cancelled():
        log.warning("the upload of %s was cancelled after its client went away", filename)
    elif publishing.exception() is not None:
        log.warning("the upload of %s failed after its client went away: %r", filename, publishing.exception())
    else:
        log.info("the upload of %s was published after its client went away", filename)


#: The threads uploads run their blocking steps in: at most this many uploads of a
#: process are in those steps at once, and the others wait their turn. Not the loop's
#: default executor: without a blocking engine (:meth:`Database.call_core_blocking`), a
#: step waits in its thread for database work on the loop, and that work may itself need
#: the default executor (a host name to resolve for a new connection). With every default
#: thread held by a waiting upload, it would wait for ever (until the connect timeout).
_UPLOAD_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="cheeseshop-upload")


async def _in_upload_thread(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in one of :data:`_UPLOAD_THREADS`, with this task's context
    (as ``asyncio.to_thread`` would carry it)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        _UPLOAD_THREADS, functools.partial(context.run, function, *args)
    )


async def read_in_upload_thread(services: Services, work: Callable[[Connection], T]) -> T:
    """``work`` as a read from one of :data:`_UPLOAD_THREADS` (see
    :meth:`Database.call_core_blocking`): on PostgreSQL it runs on psycopg in that thread,
    where asyncpg on the event loop measured twice as slow for the upload's token read."""
    loop = asyncio.get_running_loop()
    read = functools.partial(services.db.call_core_blocking, work, write=False, loop=loop, timeout=None)
    return await _in_upload_thread(read)


@dataclasses.dataclass(frozen=True)
class KnownState:
    """What the index held for ``question``, read for the uploader ``user_id`` before the
    upload's file arrived (with its token, in the same round trip). It answers the
    upload's own index read only if the file, name and version that arrived ask just that
    (:func:`question_for`); the commit settles any change since, as it does for a read
    made after the file arrived."""

    question: IndexQuestion
    user_id: int
    state: IndexState


def question_from_form(fields: Mapping[str, Sequence[str]], filename: str) -> IndexQuestion | None:
    """The index question an upload's form asks before its file has arrived: with the
    digest the form claims for it (``blake2_256_digest``), and the name and version as
    :func:`~cheeseshop.upload.form.read_form` reads them; None when the form lacks one
    of them, or one is not valid (the form's checks refuse those before any read: a NUL,
    say, no PostgreSQL text can hold). Pure."""
    def first(field: str) -> str:
        return next(iter(fields.get(field) or ()), "").strip()

    name, version, blake2_256 = first("name"), first("version"), first("blake2_256_digest")
    if not (version and blake2_256 and is_valid_project_name(name)) or "\0" in filename + blake2_256:
        return None
    try:
        canonical_version = canonicalize_version(Version(version), strip_trailing_zero=True)
    except InvalidVersion:
        return None
    folded = confusable_fold(name)
    return IndexQuestion(filename, blake2_256.lower(), normalize(name), folded, canonical_version)


def question_for(checked: _Checked) -> IndexQuestion:
    """The index question of an upload whose file has arrived and passed its checks. Pure."""
    request, file = checked.request, checked.file
    folded = confusable_fold(request.name)
    normalized, version = request.normalized_name, _canonical(request)
    return IndexQuestion(file.filename, file.blake2_256, normalized, folded, version)


class _Steps:
    """The blocking steps of one upload, run in a worker thread (see :func:`handle_upload`)."""

    def __init__(
        self,
        services: Services,
        principal: Principal | None,
        loop: asyncio.AbstractEventLoop,
        known: KnownState | None = None,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.services = services
        self._principal = principal
        self.loop = loop
        self.known = known
        self._authenticate = authenticate

    @property
    def principal(self) -> Principal:
        """Who uploads (known once :meth:`check_and_publish` has begun)."""
        assert self._principal is not None, "not authenticated yet"
        return self._principal

    def read(self, work: Callable[[Connection], T]) -> T:
        """``work`` in a read transaction (see :meth:`Database.call_core_blocking`)."""
        return self.services.db.call_core_blocking(work, write=False, loop=self.loop, timeout=None)

    def write(self, work: Callable[[Connection], T]) -> T:
        """``work`` in a write transaction, committed if it returns; pipelined on psycopg
        (see :meth:`Database.call_core_blocking`): every statement of the commit is a
        :class:`~cheeseshop.db.prepared.Prepared` one."""
        db = self.services.db
        return db.call_core_blocking(work, write=True, loop=self.loop, timeout=None, pipelined=True)

    def check_and_publish(self, form: UploadForm, address: str, gate: _PublishGate) -> _Trip:
        """Authenticate, if that is left to this trip; check the upload, then publish it
        unless something must be awaited first: a new project's rate limits kept in
        Redis, or a large description to render."""
        if self._principal is None:
            assert self._authenticate is not None, "an upload needs a principal or a way to one"
            self._principal, self.known = self.read(self._authenticate)
        submitted = _check_form(form)
        # The file's put runs beside the archive checks, its core metadata's once they pass.
        file_put = _start_early_file_put(self.services, submitted)
        try:
            checked = _check_archive(submitted)
        except BaseException:
            if file_put is not None:
                _discard_staged((file_put,))
            raise
        early = _start_early_puts(self.services, checked, file_put)
        try:
            existing = self.existing(checked)
            new_project = existing == "new project"
            limiter = self.services.ratelimiter
            waits = (new_project and not limiter.counts_here) or _has_large_description(checked)
            if new_project and not waits:
                for rule, per, identifiers in _new_project_limits(self.services, self.principal, address):
                    _refuse_new_project(rule, per, limiter.refusal_here(rule, *identifiers))
        except BaseException:
            self.abandon(early)
            raise
        if existing == "identical":
            self.abandon(early)  # the committed file, the very same bytes, stays as it is
            return _Trip(checked, new_project=False)
        if waits:
            return _Trip(checked, new_project, waits=True, early=early)  # the next trip takes them
        return _Trip(checked, new_project, self.publish(checked, new_project, gate, early))

    def existing(self, checked: _Checked) -> str:
        """'identical' (nothing to do), 'new project', or 'new file'; else raises APIError.

        The first time, the state :class:`KnownState` holds answers, if it is this upload's;
        after a lost race, only a new read will do."""
        question, user_id = question_for(checked), self.principal.user.id
        known, self.known = self.known, None
        if known is not None and known.question == question and known.user_id == user_id:
            state = known.state
        else:
            state = self.read(functools.partial(index_state, question=question, user_id=user_id))
        return judge_existing(state, self.principal, checked, self.services.settings)

    def publish(
        self,
        checked: _Checked,
        new_project: bool,
        gate: _PublishGate,
        early: _EarlyPuts | None = None,
        rendered: tuple[str | None] | None = None,
    ) -> list[int] | None:
        """Describe (unless the description was ``rendered`` already), ask the plugins,
        store (unless ``early`` puts are storing already) and commit; the outbox ids of
        the events, or None when a racer committed these very bytes first, or the
        request was cancelled before this began."""
        if not gate.begin():
            self.abandon(early)
            return None
        services = self.services
        try:
            description_html = rendered[0] if rendered is not None else _describe(services, checked)
            if services.hooks.validates_uploads:
                try:
                    candidate = _candidate(self.principal, checked, new_project=new_project)
                except OSError:  # writing a file held in memory out for the plugins: a full disk
                    log.exception("writing %s out for the upload plugins failed", checked.file.filename)
                    raise _not_stored() from None
                try:
                    services.hooks.validate_upload(candidate, services.settings)
                except UploadRejected as rejection:
                    raise APIError(rejection.status, rejection.message) from None
        except BaseException:
            self.abandon(early)
            raise
        if early is not None:
            paths, puts = early.paths, early.puts
        else:
            paths = _paths_for(checked)
            puts = _start_puts(services, checked, paths)
        try:
            event_ids = self.commit_settling_races(checked, paths, description_html, puts, new_project)
        except _PutFailed as failure:
            # StorageUnavailable (an OSError) from a remote store, or a disk error: the
            # transaction waiting for the put was rolled back, so nothing was recorded.
            log.error("storing %s failed", failure.path, exc_info=failure.__cause__)
            self.discard_quietly(paths, puts)
            raise _not_stored() from None
        except APIError:
            # Refused inside the transaction, which was therefore rolled back; or lost a
            # race. Not after any other failure: a retry of this very upload may be
            # committing these very paths, and between discard()'s check for a row and its
            # delete that row could commit. What a failed commit left, the orphan
            # collector removes once its grace period has passed.
            self.discard_quietly(paths, puts)
            raise
        if event_ids is None:
            _discard_staged(puts)  # a racer committed these very bytes, in place: keep those
        return event_ids

    def abandon(self, early: _EarlyPuts | None) -> None:
        """Once they have ended, remove the staged copies that ``early`` puts made for an
        upload that will not be committed: never a file in place, which another upload
        of the same bytes may have put there (see :func:`_start_early_puts`)."""
        if early is not None:
            _discard_staged(early.puts)

    def commit_settling_races(
        self, checked: _Checked, paths: _Paths, description_html: str | None, puts: _Puts, new_project: bool
    ) -> list[int] | None:
        """Commit; when a uniqueness constraint says another upload committed first, look again.

        The racer may have uploaded these very bytes (then None: nothing to do), or this
        same filename with other bytes (APIError 400, as if this request had come second).
        Or it created the project or the release this file belongs to — two files of a new
        release uploaded at once — and then the commit is simply tried again, now seeing them.
        However it ends, ``puts`` have ended too. ``new_project``: the index read found no
        such project, so the first attempt does not look for one (a racer's would fail it).
        """
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                first = attempt == 0
                return self.commit(
                    checked, paths, description_html, puts, verify=not first, new_project=new_project and first
                )
            except IntegrityError:
                if self.existing(checked) == "identical":
                    return None
            except _Vanished:
                # A racer refused after storing these very bytes at this very path removed
                # them: when that racer lost to a committed upload, so does this request.
                if self.existing(checked) == "identical":
                    return None
                raise APIError(503, "The file could not be stored; try again later.") from None
        raise APIError(400, f"{ALREADY_EXISTS}. (A concurrent upload of {checked.file.filename}.)")

    def discard_quietly(self, paths: _Paths, puts: _Puts) -> None:
        """Once ``puts`` have ended, remove their staged copies, and, when some file went
        into place, :meth:`discard`; logging instead of raising: the collector removes
        what is left."""
        if not any(placement.in_place for placement in _discard_staged(puts)):
            return
        try:
            self.discard(paths)
        except Exception:
            log.warning("could not clean up after %s; the collector will", paths.file, exc_info=True)

    def discard(self, paths: _Paths) -> None:
        """Remove what a refused upload stored, unless a committed row uses that path (R3).

        A failure to delete is only logged: the orphan collector removes what is left.
        """
        if self.read(lambda session: session.scalar(_FILE_AT_PATH, {"path": paths.file})) is not None:
            return
        for path in stored_paths(paths.file, has_metadata=paths.metadata is not None):
            try:
                self.services.storage.delete(path)
            except OSError:
                log.warning("could not remove %s after a refused upload; the collector will", path)

    def commit(
        self,
        checked: _Checked,
        paths: _Paths,
        description_html: str | None,
        puts: _Puts,
        *,
        verify: bool,
        new_project: bool = False,
    ) -> list[int]:
        """Record the upload in one write transaction; returns the outbox ids of its events.

        The transaction's statements run while ``puts`` store the files; it commits only
        once they have, and the file's put found it there whole (R1). It waits for them
        at most :data:`PUTS_WAIT_IN_TRANSACTION`, holding its locks; slower puts are
        waited for after a rollback, and the transaction runs again. ``verify``: check
        the file again first (a retry, after a racer's commit). ``new_project``: create
        the project without looking for it first (see :func:`_record_upload`). When this
        returns or raises, ``puts`` have ended: no write goes on behind the answer.
        """
        record = functools.partial(
            _record_upload,
            services=self.services,
            principal=self.principal,
            checked=checked,
            paths=paths,
            description_html=description_html,
            stored=functools.partial(_wait_for_puts, self.services, puts),
            new_project=new_project,
        )
        try:
            if verify and _file_in_place(puts):
                _verify_stored(self.services.storage, paths.file, checked.file.size)
            try:
                return self.write(record)
            except _PutsStillRunning:
                # Slow puts (a large file, a slow remote store): wait for them without the
                # transaction's locks, then run it again; they are done now.
                concurrent.futures.wait(puts)
                return self.write(record)
        finally:
            concurrent.futures.wait(puts)


def _new_project_limits(
    services: Services, principal: Principal, address: str
) -> tuple[tuple[str, str, tuple[str, str]], ...]:
    """(rule, "user" or "address", identifiers) of each limit on creating projects."""
    settings = services.settings
    return (
        (settings.rate_new_projects_per_user, "user", ("new-project-user", str(principal.user.id))),
        (settings.rate_new_projects_per_ip, "address", ("new-project-ip", address)),
    )


async def _refuse_too_many_new_projects(services: Services, principal: Principal, address: str) -> None:
    """429 when this user, or this address, has created its share of projects lately.

    As PyPI does, against a flood of squatted names; an upload to an existing project is
    never limited. Counted only once a project is really created.
    """
    for rule, per, identifiers in _new_project_limits(services, principal, address):
        _refuse_new_project(rule, per, await services.ratelimiter.refusal(rule, *identifiers))


def _refuse_new_project(rule: str, per: str, refusal: Verdict | None) -> None:
    """Raise the 429 of a ``refusal`` of a new project by ``rule`` (nothing when None)."""
    if refusal is not None:
        raise APIError(
            429,
            f"Too many new projects created: at most {rule} per {per}; try again in "
            f"{refusal.reset_seconds} seconds, or upload to an existing project.",
            headers=refusal.headers(),
        )


#: Commits tried before a conflict that keeps recurring is reported (each retry follows a
#: racer's commit, so two suffice for any one race; the third is margin).
COMMIT_ATTEMPTS = 3


# -- validate (pure, plus reading the archive) -----------------------------------------


def _check_form(form: UploadForm) -> _Submitted:
    """The form's fields, the filename and the digests; APIError 400 (or 410) if wrong."""
    action = (form.fields.get(":action") or [""])[0]
    if action in {"submit", "doc_upload", "verify"}:
        raise APIError(410, f"':action={action}' is no longer supported; upload files only.")
    if action and action != "file_upload":
        raise APIError(400, f"Unknown ':action' {action!r}; use 'file_upload'.")
    try:
        request = read_form(form.fields)
    except FormError as error:
        raise APIError(400, " ".join(error.problems)) from None
    if any(value.strip() for value in form.fields.get("attestations", ())):
        raise APIError(
            400, "Attestations are not supported by this index yet; upload without them."
        )
    if form.file is None:
        raise APIError(400, "Missing file: upload it in the 'content' field.")
    file = form.file
    try:
        parsed = parse_filename(file.filename)
    except InvalidFilename as error:
        raise APIError(400, str(error)) from None
    if parsed.packagetype != request.filetype:
        raise APIError(
            400,
            f"Filetype {request.filetype!r} does not match the file {file.filename!r}, "
            f"which is a {parsed.packagetype}.",
        )
    if parsed.name != request.normalized_name:
        raise APIError(
            400,
            f"Start filename for {request.name!r} with "
            f"{request.normalized_name.replace('-', '_')!r}: {file.filename!r} names "
            f"another project.",
        )
    if parsed.version != request.version:
        raise APIError(
            400,
            f"Version in filename ({parsed.version}) does not match the form's version "
            f"({request.version_string}).",
        )
    computed = {"md5": file.md5, "sha256": file.sha256, "blake2_256": file.blake2_256}
    for algorithm, claimed in request.digests.items():
        if claimed != computed[algorithm]:
            raise APIError(
                400,
                f"The {algorithm}_digest given ({claimed}) does not match the uploaded file "
                f"({computed[algorithm]}); the upload may be corrupt, try again.",
            )
    return _Submitted(request=request, file=file, parsed=parsed)


def _check_archive(submitted: _Submitted) -> _Checked:
    """The archive, read without extracting it, and its core metadata against the form."""
    request, file, parsed = submitted.request, submitted.file, submitted.parsed
    # License-File entries of the form must exist in the archive (metadata 2.4+).
    license_files = (
        list(request.metadata.get("license_files") or [])  # type: ignore[call-overload]
        if Version(request.metadata_version) >= Version("2.4")
        else []
    )
    wheel = parsed.packagetype == "bdist_wheel"
    reader = read_wheel_metadata if wheel else read_sdist_pkg_info
    try:
        with file.open() as source:
            archived = reader(source, filename=file.filename, license_files=license_files)
    except InvalidArchive as error:
        raise APIError(400, str(error)) from None
    try:
        check_core_metadata(
            archived,
            name=request.name,
            version=request.version_string,
            # An sdist's PKG-INFO may leave requirements dynamic: compare names only.
            requires_dist=list(request.metadata.get("requires_dist") or []) if wheel else None,  # type: ignore[call-overload]
            source="The wheel's METADATA" if wheel else "The sdist's PKG-INFO",
        )
    except InvalidMetadata as error:
        raise APIError(400, f"{file.filename}: " + " ".join(error.problems)) from None
    # Only a wheel's metadata is served separately (PEP 658).
    core_metadata = archived if wheel else None
    return _Checked(request=request, file=file, parsed=parsed, core_metadata=core_metadata)


def _description(checked: _Checked) -> tuple[str | None, str | None, DescribedRelease]:
    """The raw description, its content type, and the release the plugins are told of."""
    request = checked.request
    content_type = _text(request.metadata.get("description_content_type"))
    release = DescribedRelease(
        project=request.name,
        normalized_name=request.normalized_name,
        version=request.version_string,
        content_type=content_type or "text/x-rst",
    )
    return _text(request.metadata.get("description")), content_type, release


def _describe(services: Services, checked: _Checked) -> str | None:
    """The description's HTML (blocking; not for a large one: see :func:`_describe_large`)."""
    raw, content_type, release = _description(checked)
    try:
        return render_small(raw, content_type, release=release, hooks=services.hooks, settings=services.settings)
    except InvalidDescription as error:
        raise APIError(400, str(error)) from None


def _has_large_description(checked: _Checked) -> bool:
    """Whether the description is rendered in a child process (:func:`_describe_large`)."""
    raw = _text(checked.request.metadata.get("description"))
    return raw is not None and is_large(raw)


async def _describe_large(services: Services, checked: _Checked) -> tuple[str | None] | None:
    """A large description's HTML (as a 1-tuple), from a child process awaited on the
    loop, so that no upload thread waits up to the render deadline for it; None when the
    description is not large (the publish trip renders it, :func:`_describe`)."""
    raw, content_type, release = _description(checked)
    if raw is None or not is_large(raw):
        return None
    try:
        html = await render_large(raw, content_type, release=release, hooks=services.hooks, settings=services.settings)
    except InvalidDescription as error:
        raise APIError(400, str(error)) from None
    return (html,)


def _not_stored() -> APIError:
    """The 503 of an upload whose file could not be stored (nothing was recorded)."""
    return APIError(
        503,
        "The file could not be stored: file storage is unavailable. Nothing was "
        "recorded; try again later.",
        headers={"Retry-After": "30"},
    )


def _candidate(principal: Principal, checked: _Checked, *, new_project: bool) -> UploadCandidate:
    return UploadCandidate(
        project=checked.request.name,
        normalized_name=checked.request.normalized_name,
        version=checked.request.version_string,
        filename=checked.file.filename,
        packagetype=checked.parsed.packagetype,
        path=checked.file.spill(),  # a path for the plugins, even for a file in memory
        size=checked.file.size,
        md5=checked.file.md5,
        sha256=checked.file.sha256,
        blake2_256=checked.file.blake2_256,
        core_metadata=checked.core_metadata,
        metadata=dict(checked.request.metadata),
        username=principal.user.username,
        new_project=new_project,
    )


# -- check against what the index holds ------------------------------------------------


def judge_existing(state: IndexState, principal: Principal, checked: _Checked, settings: Settings) -> str:
    """The decision :meth:`_Steps.existing` makes from what the index holds (pure).

    Permission first, as PyPI decides: whoever may not upload to the project gets 403 and
    learns nothing of its files, not even that a filename is taken.
    """
    file = checked.file
    _authorize(state, principal, checked, settings)
    if state.same_name_digest is not None:
        if state.same_name_digest == file.blake2_256:
            return "identical"
        raise APIError(400, f"{ALREADY_EXISTS} ({file.filename}) with different contents.")
    if state.same_bytes_filename is not None:
        raise APIError(400, f"{ALREADY_EXISTS}: these bytes were uploaded as {state.same_bytes_filename}.")
    if state.filename_used:
        raise APIError(
            400,
            f"This filename has already been used ({file.filename}); a filename can never "
            "be reused, even after deletion. Use a new version.",
        )
    if state.project_name is None:
        return "new project"
    if checked.parsed.packagetype == "sdist" and state.release_has_sdist:
        raise APIError(400, f"{ALREADY_EXISTS}: only one sdist may be uploaded per release.")
    return "new file"


def _authorize(state: IndexState, principal: Principal, checked: _Checked, settings: Settings) -> None:
    name = checked.request.normalized_name
    if not principal.allows_project(name):
        raise APIError(403, f"This API token is not valid for project {checked.request.name!r}.")
    if state.project_name is None:
        if principal.claims.projects is not None:
            raise APIError(403, "A project-scoped API token cannot create a new project.")
        _check_new_name(settings, checked.request.name, similar=state.similar_name)
        return
    if state.role is None:
        raise _not_allowed(principal, state.project_name)
    if state.project_status in (ProjectStatus.ARCHIVED, ProjectStatus.QUARANTINED):
        raise APIError(
            400,
            f"Project {state.project_name!r} is {state.project_status}; it does not accept uploads.",
        )


def _not_allowed(principal: Principal, project_name: str) -> APIError:
    return APIError(
        403,
        f"The user '{principal.user.username}' isn't allowed to upload to project '{project_name}'.",
    )


def _check_new_name(settings: Settings, name: str, *, similar: str | None) -> None:
    """Refuse a new project whose name is prohibited or too similar to an existing one."""
    extra = frozenset(normalize(n) for n in settings.prohibited_names)
    reason = prohibited_reason(name, stdlib=settings.prohibit_stdlib_names, extra=extra)
    if reason:
        raise APIError(400, reason)
    if similar is not None:
        raise APIError(
            400,
            f"The name {name!r} is too similar to an existing project ({similar!r}). "
            "Choose another name.",
        )


def _canonical(request: UploadRequest) -> str:
    return canonicalize_version(request.version, strip_trailing_zero=True)


# -- store -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Paths:
    file: str
    metadata: str | None
    metadata_sha256: str | None
    metadata_blake2_256: str | None


#: Store an upload's file and its core metadata, side by side, while the upload's thread
#: runs the statements of its commit: two fsyncs (or a remote store's round trips) and the
#: SQL overlap. Two per upload thread; threads are started as needed.
_PUT_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="cheeseshop-put")


class _Placement:
    """What one put leaves for the commit: the file in place already, or a staged copy
    (``StagedPuts``) that :meth:`finish` moves into place inside the transaction."""

    def __init__(self, storage: FileStorage, path: str, staged: Staged | None, size: int | None) -> None:
        self.storage = storage
        self.path = path
        self.staged = staged
        #: The file's size, checked by :meth:`finish` once it is in place; None when
        #: nothing is left to check (the core metadata, or a file its put checked itself).
        self.size = size
        self.in_place = staged is None

    def verify(self) -> None:
        """Once in place, check that the file is there whole (R1): :class:`_Vanished`
        rolls the transaction back."""
        if self.size is not None:
            _verify_stored(self.storage, self.path, self.size)

    def discard_staged(self) -> None:
        """Remove the staged copy, unless it went into place (a failure is only logged)."""
        if self.staged is None or self.in_place:
            return
        try:
            self.staged.discard()
        except OSError:
            log.warning("could not remove the staged copy of %s; the collector will", self.path)


#: One put: what it leaves for the commit, once it has ended.
_Put: TypeAlias = "concurrent.futures.Future[_Placement]"
#: The puts of one upload: the file's first, then its core metadata's, if it has one.
_Puts = tuple[_Put, ...]


def _placements(puts: _Puts) -> list[_Placement]:
    """What the puts that ended well left (call once they have all ended)."""
    return [put.result() for put in puts if put.exception() is None]


def _discard_staged(puts: _Puts) -> list[_Placement]:
    """Once ``puts`` have ended, remove the copies they staged and did not move into place;
    returns what they left."""
    concurrent.futures.wait(puts)
    placements = _placements(puts)
    for placement in placements:
        placement.discard_staged()
    return placements


def _file_in_place(puts: _Puts) -> bool:
    """Whether the file's put has put it in place (it ended, and it was not staged or has
    been moved into place by a commit attempt)."""
    file_put = puts[0]
    return file_put.done() and file_put.exception() is None and file_put.result().in_place


@dataclasses.dataclass(frozen=True)
class _EarlyPuts:
    """Puts begun as soon as the upload was valid (see :func:`_start_early_puts`)."""

    paths: _Paths
    puts: _Puts


def _start_early_file_put(services: Services, submitted: _Submitted) -> _Put | None:
    """Start storing the upload's file as soon as its form checks have passed, when the
    storage stages (``StagedPuts``, such as the local disk) and the file is held in
    memory; None otherwise.

    The puts, two fsyncs, then run beside the archive checks (the file's), the index read
    and the transaction's statements, and the commit seldom waits for them. They store
    under names of their own: were the upload refused, or the same bytes found committed
    already, removing what it stored must not remove a file that a concurrent upload of
    the same bytes has just put at the same path and is about to commit. A storage that
    cannot stage is given the upload's files after the checks (:meth:`_Steps.publish`),
    and so is a file too large for memory: a refusal should not wait for a large file to
    be written first.
    """
    if not takes_staging(services.storage) or submitted.file.data is None:
        return None
    return _start_file_put(services, _file_path(submitted.file), submitted)


def _start_early_puts(services: Services, checked: _Checked, file_put: _Put | None) -> _EarlyPuts | None:
    """The early puts of a valid upload: its file's ``file_put`` (see
    :func:`_start_early_file_put`; None: no early puts) and its core metadata's, started now."""
    if file_put is None:
        return None
    paths = _paths_for(checked)
    return _EarlyPuts(paths, (file_put, *_start_metadata_put(services, checked, paths)))


def _file_path(file: ReceivedFile) -> str:
    """Where the uploaded file is stored. Pure."""
    return storage_path(file.blake2_256, file.filename)


def _paths_for(checked: _Checked) -> _Paths:
    """Where the upload's file and core metadata are stored, and the metadata's digests. Pure."""
    path = _file_path(checked.file)
    if checked.core_metadata is None:
        return _Paths(path, None, None, None)
    return _Paths(
        path,
        metadata_path(path),
        hashlib.sha256(checked.core_metadata).hexdigest(),
        hashlib.blake2b(checked.core_metadata, digest_size=32).hexdigest(),
    )


def _start_puts(services: Services, checked: _Checked, paths: _Paths) -> _Puts:
    """Start storing the file and its core metadata (each in one of :data:`_PUT_THREADS`).

    Each put raises :class:`_PutFailed` when the storage fails; the file's put then checks
    that the file is there whole (:class:`_Vanished` if not), unless the storage staged it.
    Wait for them with :func:`_wait_for_puts`, inside the commit's transaction.
    """
    return (_start_file_put(services, paths.file, checked), *_start_metadata_put(services, checked, paths))


def _stored_info(submitted: _Submitted, sha256: str) -> StoredFileInfo:
    request = submitted.request
    return StoredFileInfo(
        project=request.normalized_name,
        version=request.version_string,
        packagetype=submitted.parsed.packagetype,
        sha256=sha256,
    )


def _start_file_put(services: Services, path: str, submitted: _Submitted) -> _Put:
    file = submitted.file
    return _PUT_THREADS.submit(_put_file, services.storage, path, file, _stored_info(submitted, file.sha256))


def _start_metadata_put(services: Services, checked: _Checked, paths: _Paths) -> _Puts:
    """The core metadata's put, if the upload has core metadata (an empty tuple if not)."""
    if checked.core_metadata is None or paths.metadata is None or paths.metadata_sha256 is None:
        return ()
    info = _stored_info(checked, paths.metadata_sha256)
    directory = checked.file.directory
    return (_PUT_THREADS.submit(_put_metadata, services.storage, paths.metadata, checked.core_metadata, directory, info),)


#: The longest the commit's transaction waits for the puts beside it. It holds its locks
#: meanwhile: SQLite's write lock, or on PostgreSQL the project's row and the journal's
#: lock, which every upload needs. Puts still running then (a large file, a slow remote
#: store) are waited for after a rollback, and the transaction is run again.
PUTS_WAIT_IN_TRANSACTION = 0.02


def _wait_for_puts(services: Services, puts: _Puts) -> None:
    """Wait, inside the commit's transaction, until ``puts`` have ended, raise the first
    one's failure, and move what they staged into place; either way out of time
    (:class:`_PutsStillRunning`) or a failure rolls the transaction back."""
    if not services.db.wait_inside_transaction(puts, timeout=PUTS_WAIT_IN_TRANSACTION):
        raise _PutsStillRunning
    for put in puts:
        failure = put.exception()
        if failure is not None:
            raise failure
    placements = [put.result() for put in puts]
    _promote(placements)
    for placement in placements:
        placement.verify()


def _promote(placements: Sequence[_Placement]) -> None:
    """Move the staged copies into place together (one directory sync for the file and its
    core metadata on the local disk); a failure rolls the transaction back."""
    waiting = [placement for placement in placements if not placement.in_place]
    if not waiting:
        return
    try:
        promote_all([placement.staged for placement in waiting if placement.staged is not None])
    except OSError as error:
        # Copies renamed before the failure are left for the collector: in_place stays
        # False, so no clean-up deletes at their paths, which a racer may use.
        raise _PutFailed(waiting[0].path) from error
    for placement in waiting:
        placement.in_place = True


class _PutsStillRunning(Exception):
    """The puts took longer than :data:`PUTS_WAIT_IN_TRANSACTION`: wait without the locks."""


class _PutFailed(Exception):
    """Storing ``path`` failed (the OSError is the cause): nothing may be recorded."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _put_file(storage: FileStorage, path: str, file: ReceivedFile, info: StoredFileInfo) -> _Placement:
    """Store the uploaded file (staged, when the storage stages), and check that a file
    put in place is there whole."""
    try:
        staged = _put_received(storage, path, file, info, stage=True)
    except OSError as error:
        raise _PutFailed(path) from error
    if staged is None:
        _verify_stored(storage, path, file.size)
        return _Placement(storage, path, None, None)
    return _Placement(storage, path, staged, file.size)


def _put_metadata(
    storage: FileStorage, path: str, data: bytes, scratch_directory: Path, info: StoredFileInfo
) -> _Placement:
    """Store the wheel's core metadata (staged, when the storage stages)."""
    try:
        staged = _put_bytes(storage, path, data, scratch_directory, info, stage=True)
    except OSError as error:
        raise _PutFailed(path) from error
    return _Placement(storage, path, staged, None)


def _put_received(
    storage: FileStorage, path: str, file: ReceivedFile, info: StoredFileInfo, stage: bool = False
) -> Staged | None:
    """Store the uploaded file: from memory when the storage takes bytes or the file has
    no temporary file yet (a small one, not written out for the plugins), else from it.
    With ``stage`` and a storage that stages, not in place: the staged copy is returned."""
    if file.data is not None and (file.path is None or takes_bytes(storage)):
        return _put_bytes(storage, path, file.data, file.directory, info, stage=stage)
    assert file.path is not None
    if stage and takes_staging(storage):
        return storage.stage(path, file.path, info=info)  # type: ignore[attr-defined]
    storage.put(path, file.path, info=info)
    return None


def _put_bytes(
    storage: FileStorage,
    path: str,
    data: bytes,
    scratch_directory: Path,
    info: StoredFileInfo,
    stage: bool = False,
) -> Staged | None:
    """Store ``data`` at ``path``: directly if the storage takes bytes (``BytesPuts``), else
    by way of a scratch file in ``scratch_directory``. With ``stage`` and a storage that
    stages, not in place: the staged copy is returned."""
    if stage and takes_staging(storage):
        return storage.stage_bytes(path, data, info=info)  # type: ignore[attr-defined]
    if takes_bytes(storage):
        storage.put_bytes(path, data, info=info)  # type: ignore[attr-defined]
        return None
    scratch = write_temporary(scratch_directory, data)
    try:
        storage.put(path, scratch, info=info)
    finally:
        scratch.unlink(missing_ok=True)
    return None


_FILE_AT_PATH = select(File.id).where(File.path == bindparam("path"))


def _verify_stored(storage: FileStorage, path: str, size: int) -> None:
    """Check, before commit, that the stored file is there whole (R1).

    A size check, not a re-hash: the bytes were hashed as they arrived and written by an
    atomic put; what can still go wrong is the file vanishing (a racing refusal's
    clean-up, the orphan collector, an operator) between storing and committing.
    """
    try:
        stored = storage.size(path)
    except FileNotFoundError:
        stored = -1
    except OSError:
        # StorageUnavailable: a remote store that took the file cannot confirm it now.
        log.warning("could not confirm %s is stored before commit", path, exc_info=True)
        stored = -1
    if stored != size:
        raise _Vanished(path)


class _Vanished(Exception):
    """The stored file was not there whole when its row was about to commit."""


# -- record and commit -------------------------------------------------------------------


def _record_upload(
    session: Connection,
    *,
    services: Services,
    principal: Principal,
    checked: _Checked,
    paths: _Paths,
    description_html: str | None,
    stored: Callable[[], None],
    new_project: bool = False,
) -> list[int]:
    """The commit's database work (synchronous, run by ``Database.call_core_blocking``).

    Core statements, not the ORM's unit of work: a new project's upload is about ten
    statements, and this transaction holds SQLite's one write lock while they run.
    ``stored`` is called last, before the commit: it returns once the files are stored
    and raises (rolling back) if they could not be.

    ``new_project``: the index read found no such project, so it is created without a
    look (and a lock) first, one round trip fewer on PostgreSQL. If a racer created it
    since, the insert's unique violation rolls this back, and the caller tries again,
    looking this time.
    """
    request, file = checked.request, checked.file
    user = principal.user
    changes: list[Change] = []
    now = utcnow()
    project = None
    if not new_project:
        project = lock_project(session, request.normalized_name, _canonical(request), user.id)
    if project is None:
        project_id = insert_project(
            session,
            name=request.name,
            normalized_name=request.normalized_name,
            created=now,
            owner_id=user.id,
            role_name=RoleName.OWNER.value,
        )
        project = LockedProject(project_id, request.name, RoleName.OWNER.value, 0, None, None, None)
        changes += [
            Change("create", submitted_by=user.username),
            Change(f"add {RoleName.OWNER.value} {user.username}", submitted_by=user.username),
        ]
    elif project.role is None:
        raise _not_allowed(principal, project.name)

    limit = project.total_size_limit or services.settings.max_project_size
    if project.total_size + file.size > limit:
        raise APIError(
            400,
            f"Project size too large: the limit for project {project.name!r} is "
            f"{limit / 2**30:g} GiB in total. Delete old files or ask for a higher limit.",
        )
    new_release = project.release_id is None
    release = None
    if new_release:
        release = _release_values(
            project.id, request, uploader_id=user.id, description_html=description_html, created=now
        )
        changes.append(Change("new release", request.version_string, user.username))
    insert_file(
        session,
        release_id=project.release_id,
        release=release,
        created=now,
        file=dict(
            filename=file.filename,
            path=paths.file,
            size=file.size,
            md5_digest=file.md5,
            sha256_digest=file.sha256,
            blake2_256_digest=file.blake2_256,
            packagetype=checked.parsed.packagetype,
            python_version=request.pyversion,
            requires_python=_text(request.metadata.get("requires_python")),
            upload_time=now,
            uploaded_by_id=user.id,
            metadata_sha256=paths.metadata_sha256,
            metadata_blake2_256=paths.metadata_blake2_256,
        ),
    )
    # The version as the release row spells it: the first upload's spelling wins.
    version = project.release_version or request.version_string
    changes.append(Change(f"add {request.pyversion} file {file.filename}", version, user.username))
    serials = record_changes(
        session,
        project.id,
        project.name,
        changes,
        added_size=file.size,
    )
    events: list[Event] = [
        FileUploaded(
            project=project.name,
            normalized_name=request.normalized_name,
            version=version,
            filename=file.filename,
            path=paths.file,
            metadata_path=paths.metadata,
            packagetype=checked.parsed.packagetype,
            size=file.size,
            sha256=file.sha256,
            blake2_256=file.blake2_256,
            uploaded_by=user.username,
            upload_time=now,
            serial=serials[-1],
        )
    ]
    if new_release:
        # The file event first: a release is announced after its file is recorded.
        events.append(
            ReleasePublished(
                project=project.name,
                normalized_name=request.normalized_name,
                version=version,
                published_by=user.username,
                created=now,
                serial=serials[-2],
            )
        )
        # Only for a new release, and only when some plugin takes notifications: this
        # SELECT is the one statement it adds to the upload's transaction.
        if services.hooks.receiver_names(Notification.hook):
            notification = notifications.release_published(
                session,
                project_id=project.id,
                project=project.name,
                normalized_name=request.normalized_name,
                version=version,
                published_by=user.username,
                created=now,
                base_url=services.settings.base_url,
            )
            if notification is not None:
                events.append(notification)
    events.append(CachePurge(keys=change_keys(request.normalized_name), serial=serials[-1]))
    event_ids = record(session, services.events_to_record(events))
    stored()
    return event_ids


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _list(value: object) -> list[str]:
    return list(value) if isinstance(value, list) else []


def _release_values(
    project_id: int,
    request: UploadRequest,
    *,
    uploader_id: int,
    description_html: str | None,
    created: datetime,
) -> dict[str, object]:
    meta = request.metadata
    return dict(
        project_id=project_id,
        version=request.version_string,
        canonical_version=_canonical(request),
        is_prerelease=request.version.is_prerelease,
        created=created,
        metadata_version=request.metadata_version,
        summary=_text(meta.get("summary")),
        description=_text(meta.get("description")),
        description_content_type=_text(meta.get("description_content_type")),
        description_html=description_html,
        author=_text(meta.get("author")),
        author_email=_text(meta.get("author_email")),
        maintainer=_text(meta.get("maintainer")),
        maintainer_email=_text(meta.get("maintainer_email")),
        license=_text(meta.get("license")),
        license_expression=_text(meta.get("license_expression")),
        keywords=_text(meta.get("keywords")),
        home_page=_text(meta.get("home_page")),
        download_url=_text(meta.get("download_url")),
        requires_python=_text(meta.get("requires_python")),
        classifiers=_list(meta.get("classifiers")),
        platforms=_list(meta.get("platform")),
        requires_dist=_list(meta.get("requires_dist")),
        provides_extra=_list(meta.get("provides_extra")),
        license_files=_list(meta.get("license_files")),
        dynamic=_list(meta.get("dynamic")),
        supported_platforms=_list(meta.get("supported_platform")),
        provides_dist=_list(meta.get("provides_dist")),
        obsoletes_dist=_list(meta.get("obsoletes_dist")),
        requires_external=_list(meta.get("requires_external")),
        import_names=_list(meta.get("import_names")),
        import_namespaces=_list(meta.get("import_namespaces")),
        project_urls=dict(meta.get("project_urls") or {}),  # type: ignore[arg-type]
        uploader_id=uploader_id,
    )
