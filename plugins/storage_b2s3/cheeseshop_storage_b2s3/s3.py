"""The archive: Amazon S3 through boto3. Every file is here, checked, before its upload commits.

Writes go up in one ``PutObject`` (or a multipart upload for large files) carrying the
SHA-256 of the bytes (``x-amz-checksum-sha256``, per part for multipart), which S3 checks
on arrival; the stored object's checksum is then read back (``HeadObject`` with
``ChecksumMode=ENABLED``) and compared before ``put`` returns. A store that keeps no
checksums gets the object read back and hashed instead. Object metadata carries the
project, version, package type, sha256 and SHA-1 (the SHA-1 is what B2 checks copies by).

boto3's errors end here: a missing key is ``FileNotFoundError``, anything else
:class:`cheeseshop.StorageUnavailable`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from cheeseshop import StorageUnavailable, StoredFileInfo

from cheeseshop_storage_b2s3.paths import Digests, HashingWriter, digest_file, is_storage_path
from cheeseshop_storage_b2s3.settings import B2S3Settings

__all__ = ["S3Archive", "S3Object", "make_s3_client"]

log = logging.getLogger(__name__)

#: Error codes S3 answers for a key (or version) that is not there.
_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})
_READ_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class S3Object:
    """What HeadObject says about a stored object."""

    size: int
    metadata: Mapping[str, str]
    checksum_sha256: str | None


def make_s3_client(section: B2S3Settings) -> Any:
    """A boto3 S3 client for the section, from a session of its own (thread-safe to share).

    With explicit keys it uses them; otherwise boto3's usual chain. Checksums are sent
    only where the plugin asks for them (it always sends SHA-256 on writes).
    """
    secret, token = section.s3_secret_access_key, section.s3_session_token
    session = boto3.session.Session(
        aws_access_key_id=section.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        aws_session_token=token.get_secret_value() if token else None,
        region_name=section.s3_region,
    )
    config = Config(
        connect_timeout=section.timeout_seconds,
        read_timeout=section.timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": section.s3_max_attempts},
        # Uploads, downloads and event hooks run in many threads at once.
        max_pool_connections=32,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # A custom endpoint (an S3-compatible store, a local stand-in on 127.0.0.1) is
        # addressed by path: bucket names in its host name would not resolve.
        s3={"addressing_style": "path"} if section.s3_endpoint_url else None,
    )
    return session.client("s3", endpoint_url=section.s3_endpoint_url, config=config)


class S3Archive:
    """Objects under ``prefix`` in one bucket, keyed by storage path."""

    def __init__(self, client: Any, section: B2S3Settings) -> None:
        self.client = client
        self.bucket = section.s3_bucket
        self.prefix = section.s3_prefix
        self.threshold = section.s3_multipart_threshold_bytes
        self.part_size = section.s3_part_size_bytes
        self._encryption: dict[str, str] = {}
        if section.s3_server_side_encryption:
            self._encryption["ServerSideEncryption"] = section.s3_server_side_encryption
        if section.s3_kms_key_id:
            self._encryption["SSEKMSKeyId"] = section.s3_kms_key_id

    def key(self, path: str) -> str:
        """The object key of a storage path."""
        return self.prefix + path

    def _error(self, error: Exception, action: str, path: str) -> OSError:
        if isinstance(error, ClientError):
            details = error.response.get("Error", {})
            code = str(details.get("Code", "Unknown"))
            if code in _MISSING:
                return FileNotFoundError(f"{path} is not in the S3 archive")
            return StorageUnavailable(
                f"S3 {action} of {path} in bucket {self.bucket} failed: {code}: "
                f"{details.get('Message', '')}".rstrip(": ")
            )
        return StorageUnavailable(f"S3 {action} of {path} in bucket {self.bucket} failed: {error}")

    # -- writing -------------------------------------------------------------------------

    def put(self, path: str, source: Path, info: StoredFileInfo | None) -> Digests:
        """Upload ``source`` to ``path``, then check the stored checksum; returns its digests.

        Raises :class:`StorageUnavailable` when S3 fails or stored other bytes (the bad
        object is then removed), ``OSError`` when ``source`` does not match ``info.sha256``.
        """
        size = source.stat().st_size
        multipart = size >= self.threshold
        digests = digest_file(source, part_size=self.part_size if multipart else None)
        if info is not None and info.sha256 != digests.sha256:
            # The upload hashed other bytes than the file now holds: store nothing.
            raise OSError(f"{source} does not match the sha256 it was uploaded with")
        metadata = {"sha256": digests.sha256, "sha1": digests.sha1}
        if info is not None:
            metadata.update(
                project=info.project, version=info.version, packagetype=info.packagetype
            )
        content_type = (
            "text/plain; charset=utf-8"
            if path.endswith(".metadata")
            else "application/octet-stream"
        )
        try:
            if multipart:
                self._put_parts(path, source, digests, metadata, content_type)
            else:
                with source.open("rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=self.key(path),
                        Body=body,
                        ContentLength=size,
                        ContentType=content_type,
                        Metadata=metadata,
                        ChecksumSHA256=digests.sha256_base64,
                        **self._encryption,
                    )
        except (BotoCoreError, ClientError) as error:
            raise self._error(error, "upload", path) from None
        self._check_stored(path, digests)
        return digests

    def _put_parts(
        self, path: str, source: Path, digests: Digests, metadata: dict[str, str], content_type: str
    ) -> None:
        key = self.key(path)
        started = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            ContentType=content_type,
            Metadata=metadata,
            ChecksumAlgorithm="SHA256",
            **self._encryption,
        )
        upload_id = started["UploadId"]
        try:
            parts = []
            with source.open("rb") as handle:
                for number, digest in enumerate(digests.parts, start=1):
                    data = handle.read(self.part_size)
                    # The file was hashed a moment ago; a part that hashes differently
                    # now means it changed under us.
                    if hashlib.sha256(data).digest() != digest:
                        raise OSError(f"{source} changed while it was being stored")
                    checksum = base64.b64encode(digest).decode()
                    answer = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                        ContentLength=len(data),
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                    )
                    parts.append(
                        {"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": checksum}
                    )
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Parts of an unfinished upload cost storage and are invisible: abort it. (A
            # process killed here leaves them to the bucket's AbortIncompleteMultipartUpload
            # lifecycle rule; see the README.)
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except (BotoCoreError, ClientError):
                log.warning(
                    "could not abort the multipart upload of %s; the lifecycle rule will", path
                )
            raise

    def _check_stored(self, path: str, digests: Digests) -> None:
        """The stored object is these bytes: its size and S3's checksum of it, or a re-read."""
        stored = self.head(path, checksum=True)
        good = stored.size == digests.size
        if good and stored.checksum_sha256 is not None:
            good = stored.checksum_sha256 in digests.s3_checksums()
        elif good:
            # A store that keeps no checksums: read the object back.
            writer = HashingWriter()
            self.read_into(path, writer)
            good = writer.digests().sha256 == digests.sha256
        if not good:
            log.error("S3 stored other bytes for %s than were sent; removing them", path)
            try:
                self.delete(path)
            except OSError:
                log.warning("could not remove the bad copy of %s; the collector will", path)
            raise StorageUnavailable(f"S3 did not store {path} intact; nothing was kept")

    # -- reading -------------------------------------------------------------------------

    def head(self, path: str, *, checksum: bool = False) -> S3Object:
        """Size, user metadata and (with ``checksum``) the stored ChecksumSHA256 of ``path``."""
        extra = {"ChecksumMode": "ENABLED"} if checksum else {}
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self.key(path), **extra)
        except (BotoCoreError, ClientError) as error:
            raise self._error(error, "lookup", path) from None
        return S3Object(
            size=int(answer["ContentLength"]),
            metadata=dict(answer.get("Metadata") or {}),
            checksum_sha256=answer.get("ChecksumSHA256"),
        )

    def read_into(self, path: str, target: IO[bytes] | HashingWriter) -> Mapping[str, str]:
        """Write the object's bytes into ``target``; returns its user metadata."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(path))
            body = answer["Body"]
            try:
                for chunk in body.iter_chunks(_READ_CHUNK):
                    target.write(chunk)
            finally:
                body.close()
        except (BotoCoreError, ClientError, HTTPError) as error:
            # urllib3's errors can surface while the body streams.
            raise self._error(error, "download", path) from None
        return dict(answer.get("Metadata") or {})

    # -- the rest ------------------------------------------------------------------------

    def delete(self, path: str) -> None:
        """Delete the object (S3 answers a missing key like a deleted one)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(path))
        except (BotoCoreError, ClientError) as error:
            raised = self._error(error, "deletion", path)
            if isinstance(raised, FileNotFoundError):
                return
            raise raised from None

    def iter_paths(self) -> Iterator[tuple[str, float]]:
        """Every storage path under the prefix with its LastModified; other keys are skipped."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for entry in page.get("Contents", ()):
                    path = entry["Key"][len(self.prefix) :]
                    if is_storage_path(path):
                        yield path, entry["LastModified"].timestamp()
        except (BotoCoreError, ClientError) as error:
            raise self._error(error, "listing", self.prefix or "/") from None

