"""Build upload requests the way real clients do (twine's field names and order)."""

from __future__ import annotations

import email.parser
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from packaging.utils import parse_sdist_filename, parse_wheel_filename

from cheeseshop.testing.dists import Dist

__all__ = ["encode_multipart", "upload_fields", "uploaded"]

FieldList = list[tuple[str, str]]


def upload_fields(
    dist: Dist,
    *,
    name: str | None = None,
    version: str | None = None,
    summary: str = "A test package.",
    requires_python: str | None = None,
    overrides: Mapping[str, str | Sequence[str] | None] | None = None,
) -> FieldList:
    """The form fields twine sends for ``dist``: metadata, filetype, pyversion, digests.

    ``overrides`` replaces fields by name; a value of ``None`` removes the field; a list
    sends the field repeatedly.
    """
    if dist.filename.endswith(".whl"):
        dist_name, dist_version, _, tags = parse_wheel_filename(dist.filename)
        filetype = "bdist_wheel"
        pyversion = ".".join(sorted({tag.interpreter for tag in tags}))
    else:
        dist_name, dist_version = parse_sdist_filename(dist.filename)
        filetype, pyversion = "sdist", "source"
    # twine sends the Name and Version of the core metadata, as written there.
    headers = email.parser.BytesHeaderParser().parsebytes(dist.metadata)
    fields: dict[str, str | Sequence[str] | None] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": headers.get("Metadata-Version", "2.4"),
        "name": name or headers.get("Name") or str(dist_name),
        "version": version or headers.get("Version") or str(dist_version),
        "summary": summary,
        "requires_python": requires_python or headers.get("Requires-Python"),
        "requires_dist": headers.get_all("Requires-Dist") or None,
        "filetype": filetype,
        "pyversion": pyversion,
        "sha256_digest": hashlib.sha256(dist.content).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(dist.content, digest_size=32).hexdigest(),
    }
    fields.update(overrides or {})
    result: FieldList = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, str):
            result.append((key, value))
        else:
            result.extend((key, item) for item in value)
    return result


def encode_multipart(
    fields: Iterable[tuple[str, str]],
    files: Iterable[tuple[str, str, bytes, str | None]] = (),
    *,
    boundary: str | None = None,
) -> tuple[bytes, str]:
    """Encode a multipart/form-data body; returns (body, Content-Type header value).

    Each file is (field name, filename, content, content type or None — uv sends none).
    """
    boundary = boundary or secrets.token_hex(16)
    parts: list[bytes] = []
    for key, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for key, filename, content, content_type in files:
        header = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{filename}"\r\n'
        if content_type:
            header += f"Content-Type: {content_type}\r\n"
        parts.append(header.encode() + b"\r\n" + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def uploaded(upload: Any, dist: Dist, **field_options: Any) -> Dist:
    """Upload ``dist`` with the ``upload`` fixture, asserting a 200; returns ``dist``.

    ``field_options`` go to :func:`upload_fields` (``name``, ``requires_python``…).
    """
    response = await upload(dist, fields=upload_fields(dist, **field_options))
    assert response.status_code == 200, await response.get_data(as_text=True)
    return dist
