"""HTTP edge of the legacy upload API: authentication, body streaming, the response."""

from __future__ import annotations

import base64
import binascii

from quart import Blueprint, Response, request

from cheeseshop.accounts.service import AuthenticationFailed, Principal, authenticate_token
from cheeseshop.errors import APIError
from cheeseshop.services import current_services
from cheeseshop.upload.multipart import receive_upload
from cheeseshop.upload.service import handle_upload

__all__ = ["blueprint", "credentials_from"]

blueprint = Blueprint("upload", __name__)

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="cheeseshop upload"'}


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
        raise APIError(400, "Malformed Basic authorization header.") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise APIError(400, "Malformed Basic authorization header.")
    if username != "__token__":
        raise APIError(
            403,
            "Username/password authentication is not supported for uploads; use the "
            "username '__token__' and an API token as the password.",
        )
    return password


async def _principal() -> Principal:
    services = current_services()
    token = credentials_from(request.headers.get("Authorization"))
    if token is None:
        raise APIError(
            401,
            "Authentication required: use the username '__token__' and an API token as the password.",
            headers=_CHALLENGE,
        )
    async with services.db.read() as session:
        try:
            return await authenticate_token(session, token, prefix=services.settings.token_prefix)
        except AuthenticationFailed as error:
            raise APIError(403, f"Invalid API Token: {error}") from None


@blueprint.post("/legacy/", strict_slashes=False)
async def upload() -> Response:
    """``POST /legacy/`` (and ``/legacy``, since twine aborts on any redirect)."""
    services = current_services()
    principal = await _principal()
    settings = services.settings
    declared = request.content_length
    limit = settings.max_file_size
    if declared is not None and declared > limit + 16 * 1024 * 1024:
        raise APIError(413, f"Upload too large: the limit is {limit // (1024 * 1024)} MiB per file.")
    temporary = settings.data_dir / "tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    form = await receive_upload(
        request.body, request.headers.get("Content-Type"), directory=temporary, max_file_size=limit
    )
    try:
        body = await handle_upload(services, principal, form)
    finally:
        form.cleanup()
    return Response(body or "OK", status=200, content_type="text/plain; charset=utf-8")
