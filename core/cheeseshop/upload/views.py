"""HTTP edge of the legacy upload API: authentication, body streaming, the response.

Size limits are applied three times, each as early as what it needs is known: the
declared Content-Length against the largest limit the uploader could have, before a byte
of the body is read; the file part against its project's limits while it streams (see
:func:`file_limits`); and the project's total once more inside the commit's transaction,
where concurrent uploads are serialized.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping, Sequence

from quart import Blueprint, Response, request
from sqlalchemy import Connection, func, select

from cheeseshop.config import Settings

from cheeseshop.accounts.service import (
    AuthenticationFailed,
    Principal,
    authenticate,
    check_token,
    presented_token,
)
from cheeseshop.db.models import Project, Role, utcnow
from cheeseshop.errors import APIError
from cheeseshop.packaging.names import normalize
from cheeseshop.services import Services, current_services
from cheeseshop.upload.lookup import ProjectLimits, project_limits, token_and_project_limits
from cheeseshop.upload.multipart import (
    MAX_FORM_BYTES,
    SPOOL_BYTES,
    FileLimit,
    UploadForm,
    check_size,
    mib,
    receive_upload,
)
from cheeseshop.upload.service import (
    Authenticate,
    KnownState,
    handle_upload,
    question_from_form,
    read_in_upload_thread,
)

__all__ = ["blueprint", "credentials_from", "file_limits", "limits_for"]

blueprint = Blueprint("upload", __name__)

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="cheeseshop upload"'}
# Credentials that cannot be read are wrong credentials: 403 with the reason, as for a bad token.
_MALFORMED_BASIC = (
    "Malformed Basic authorization header: send base64 of '__token__:<API token>'."
)


def credentials_from(authorization: str | None) -> str | None:
    """The API token in an Authorization header (Basic ``__token__`` or Bearer), or None.

    Raises APIError 403 for credentials that are not an API token.
    """
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme != "basic":
        raise APIError(401, "Unsupported authorization scheme; use Basic auth with "
                       "username '__token__' and an API token as the password.", headers=_CHALLENGE)
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise APIError(403, _MALFORMED_BASIC) from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise APIError(403, _MALFORMED_BASIC)
    if username != "__token__":
        raise APIError(
            403,
            "Username/password authentication is not supported for uploads; use the "
            "username '__token__' and an API token as the password.",
        )
    return password


def _token() -> str:
    """The request's API token; 401 or 403 without touching the database."""
    token = credentials_from(request.headers.get("Authorization"))
    if token is None:
        raise APIError(
            401,
            "Authentication required: use the username '__token__' and an API token as the password.",
            headers=_CHALLENGE,
        )
    return token


class InvalidToken(APIError):
    """The token was refused: counted against the address (``rate_auth_failures_per_ip``)."""


def _authenticated(connection: Connection, token: str, prefix: str) -> Principal:
    try:
        return authenticate(connection, token, prefix=prefix)
    except AuthenticationFailed as error:
        raise _invalid(error) from None


def _invalid(error: AuthenticationFailed) -> InvalidToken:
    return InvalidToken(403, f"Invalid API Token: {error}")


def _project_name(fields: Mapping[str, Sequence[str]]) -> tuple[str, str]:
    """The form's project name (first value, stripped) and its normalized form ('' if none)."""
    name = next(iter(fields.get("name") or ()), "").strip()
    return name, normalize(name) if name else ""


class _Uploader:
    """The request's principal, authenticated once, as late as it can be.

    For a small body, that is once it has arrived, in memory, with the upload's checks
    (:meth:`authenticate_received`). For a larger one, when its file part starts: the
    token and the project's limits are then read in one database visit, and with them,
    when the form says enough, what the index holds for the upload (:attr:`known`, for
    :func:`handle_upload`). A body without a file part is authenticated after it ends;
    one whose declared size needs the uploader's largest limit, before it. Either way a
    bad token is refused before any file data is written to disk.
    """

    def __init__(self, services: Services, token: str) -> None:
        self.services = services
        self.token = token
        self._principal: Principal | None = None
        self.known: KnownState | None = None

    async def principal(self) -> Principal:
        """The authenticated principal (reading the token's row if not done yet)."""
        if self._principal is None:
            prefix = self.services.settings.token_prefix
            self._principal = await read_in_upload_thread(
                self.services, lambda connection: _authenticated(connection, self.token, prefix)
            )
        return self._principal

    async def file_limits(self, fields: Mapping[str, Sequence[str]], filename: str) -> list[FileLimit]:
        """:func:`file_limits`, authenticating in the same database visit when needed."""
        if self._principal is not None:
            return await file_limits(self.services, self._principal, fields)
        prefix = self.services.settings.token_prefix
        self._principal, project, self.known = await read_in_upload_thread(
            self.services,
            lambda connection: _principal_and_project(connection, self.token, prefix, fields, filename),
        )
        name, normalized = _project_name(fields)
        return limits_for(self.services.settings, self._principal, name, normalized, project)

    def authenticate_received(self, form: UploadForm) -> Authenticate:
        """The :data:`Authenticate` of a body received whole before its token was read:
        the same visit :meth:`file_limits` makes, and the same limits, held against the
        file once it has arrived."""
        settings = self.services.settings

        def authenticate(connection: Connection) -> tuple[Principal, KnownState | None]:
            filename = form.file.filename if form.file is not None else None
            principal, project, known = _principal_and_project(
                connection, self.token, settings.token_prefix, form.fields, filename
            )
            if form.file is not None:
                name, normalized = _project_name(form.fields)
                check_size(form.file.size, limits_for(settings, principal, name, normalized, project))
            return principal, known

        return authenticate


def _principal_and_project(
    connection: Connection,
    token: str,
    prefix: str,
    fields: Mapping[str, Sequence[str]],
    filename: str | None,
) -> tuple[Principal, ProjectLimits | None, KnownState | None]:
    """The token's principal, the limits of the project the form names (None: no such
    project, or not one the principal may upload to) and, when the form says enough,
    what the index holds for the upload: one statement, or a plain token read for a form
    without a name."""
    _, normalized = _project_name(fields)
    if not normalized:
        return _authenticated(connection, token, prefix), None, None
    question = question_from_form(fields, filename) if filename is not None else None
    try:
        token_id, macaroon = presented_token(token, prefix=prefix)
        row, project, state = token_and_project_limits(connection, token_id, normalized, question)
        principal = check_token(row, token_id=token_id, macaroon=macaroon, now=utcnow())
    except AuthenticationFailed as error:
        raise _invalid(error) from None
    known = None
    if question is not None and state is not None:
        known = KnownState(question, principal.user.id, state)
    return principal, project if principal.allows_project(normalized) else None, known


def _default_limit(settings: Settings) -> FileLimit:
    limit = settings.max_file_size
    return FileLimit(limit, 413, f"File too large. Limit for this upload is {mib(limit)}.")


async def file_limits(
    services: Services, principal: Principal, fields: Mapping[str, Sequence[str]]
) -> list[FileLimit]:
    """The limits on an upload's file, given the form fields that arrived before it.

    Called by :func:`receive_upload` when the file part starts; see :func:`limits_for`.
    """
    name, normalized = _project_name(fields)
    project = None
    if normalized and principal.allows_project(normalized):
        project = await services.db.run_core(
            functools.partial(project_limits, normalized_name=normalized, user_id=principal.user.id)
        )
    return limits_for(services.settings, principal, name, normalized, project)


def limits_for(
    settings: Settings, principal: Principal, name: str, normalized: str, project: ProjectLimits | None
) -> list[FileLimit]:
    """The file limits for an upload to ``name`` (``project``: its row, None if it is new).

    Without a name yet (a client that sends the file first), or for a project the
    principal may not upload to, the index-wide ``max_file_size`` applies: a project's
    own, possibly larger, limit is for its uploaders only, and an outsider learns nothing
    about the project. Otherwise the project's ``upload_limit`` (else ``max_file_size``)
    applies, then what is left of its total (``total_size_limit``, else
    ``max_project_size``), with the message the commit gives when it checks the total again.
    """
    if not normalized or not principal.allows_project(normalized):
        return [_default_limit(settings)]
    if project is None:  # a new project: nothing used yet, the index-wide limits
        label, file_limit, total_limit, used = name, None, None, 0
    elif project.role is None:
        return [_default_limit(settings)]
    else:
        label, used = project.name, project.total_size
        file_limit, total_limit = project.upload_limit, project.total_size_limit
    file_limit = file_limit or settings.max_file_size
    total_limit = total_limit or settings.max_project_size
    return [
        FileLimit(
            file_limit,
            413,
            f"File too large. Limit for project {label!r} is {mib(file_limit)}; ask an "
            "administrator of this index for a higher limit.",
        ),
        FileLimit(
            total_limit - used,
            400,
            f"Project size too large: the limit for project {label!r} is "
            f"{total_limit / 2**30:g} GiB in total. Delete old files or ask for a higher limit.",
        ),
    ]


async def _largest_file_limit(services: Services, principal: Principal) -> int:
    """The largest file limit any upload by ``principal`` could get (see :func:`file_limits`)."""
    query = (
        select(func.max(Project.upload_limit))
        .join(Role, Role.project_id == Project.id)
        .where(Role.user_id == principal.user.id)
    )
    if principal.claims.projects is not None:
        query = query.where(Project.normalized_name.in_(principal.claims.projects))
    async with services.db.read() as session:
        largest = await session.scalar(query)
    return max(services.settings.max_file_size, largest or 0)


@blueprint.post("/legacy/", strict_slashes=False)
async def upload() -> Response:
    """``POST /legacy/`` (and ``/legacy``, since twine aborts on any redirect)."""
    services = current_services()
    address = request.remote_addr or "-"
    rule = services.settings.rate_auth_failures_per_ip
    refusal = await services.ratelimiter.refusal(rule, "auth-failure", address)
    if refusal is not None:
        raise APIError(
            429,
            f"Too many uploads with an invalid token from your address (at most {rule}); "
            f"try again in {refusal.reset_seconds} seconds with a valid API token.",
            headers=refusal.headers(),
        )
    try:
        return await _upload(services, address)
    except InvalidToken:
        await services.ratelimiter.hit(rule, "auth-failure", address)
        raise


async def _upload(services: Services, address: str) -> Response:
    uploader = _Uploader(services, _token())
    settings = services.settings
    declared = request.content_length  # None for a chunked body: then the streaming limits
    if declared is not None and declared > settings.max_file_size + MAX_FORM_BYTES:
        limit = await _largest_file_limit(services, await uploader.principal())
        if declared > limit + MAX_FORM_BYTES:
            raise APIError(
                413,
                f"Upload too large: the body would be {mib(declared)}, and the limit is "
                f"{mib(limit)} per file (plus {mib(MAX_FORM_BYTES)} for the form's other fields).",
            )
    # A body this small is held in memory whole, whatever its token: it is received
    # first, and the token read with the checks, in one trip to an upload thread where
    # there were two (one when the file part started). Its file cannot cross the
    # index-wide limit; a project's own are held against it once it has arrived.
    whole = declared is not None and declared <= min(SPOOL_BYTES, settings.max_file_size)
    form = await receive_upload(
        request.body,
        request.headers.get("Content-Type"),
        directory=settings.upload_directory,
        max_file_size=settings.max_file_size,
        limit_for=None if whole else uploader.file_limits,
        # app.config["BODY_TIMEOUT"], i.e. settings.upload_timeout_seconds.
        timeout=request.body_timeout,
        whole=whole,
    )
    principal, authenticate = None, None
    if whole:
        authenticate = uploader.authenticate_received(form)
    else:
        try:
            principal = await uploader.principal()
        except BaseException:
            form.cleanup()
            raise
    # handle_upload removes the temporary file when it is done with it.
    body = await handle_upload(
        services, principal, form, address=address, known=uploader.known, authenticate=authenticate
    )
    return Response(body or "OK", status=200, content_type="text/plain; charset=utf-8")
