"""The ``[storage_b2s3]`` settings section (variables ``CHEESESHOP_STORAGE_B2S3__<KEY>``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from cheeseshop import PluginSettings

__all__ = ["B2S3Settings", "MiB"]

MiB = 1024 * 1024

_REGION = r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$"
#: S3's rules for new bucket names (no upper case, no underscores), as AWS documents them.
_S3_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
#: B2's: 6 to 50 letters, digits and hyphens.
_B2_BUCKET = r"^[A-Za-z0-9-]{6,50}$"
_PREFIX = re.compile(r"^([A-Za-z0-9._-]+/)*$")


def _prefix(value: str) -> str:
    # "files", "files/" and "/files/" all mean the folder files/; "" is the bucket's root.
    value = value.strip().strip("/")
    if not value:
        return ""
    value += "/"
    if not _PREFIX.match(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(
            "use folder names of letters, digits, '.', '_' and '-' separated by '/', "
            "e.g. cheeseshop/files"
        )
    return value


def _http_url(value: str | None, example: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL such as {example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; give them in their own settings")
    return value.rstrip("/")


class B2S3Settings(PluginSettings):
    """Where the archive (S3) and the cache (B2) are, and how hard to try each."""

    # -- S3, the archive: written before an upload commits, authoritative -----------------

    s3_bucket: str = Field(
        pattern=_S3_BUCKET, description="S3 bucket every file is archived in (required)."
    )
    s3_prefix: str = Field(
        default="",
        description="Folder inside the bucket the files go under, e.g. cheeseshop/files. "
        "Default: the bucket's root.",
    )
    s3_region: str | None = Field(
        default=None,
        pattern=_REGION,
        description="AWS region of the bucket, e.g. eu-west-1. Default: boto3's usual "
        "chain (AWS_REGION, the shared config file).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint, for an S3-compatible store or a local stand-in such as "
        "http://127.0.0.1:5000. Default: AWS's endpoint for the region.",
    )
    s3_access_key_id: str | None = Field(
        default=None,
        description="AWS access key id. Default: none, boto3's usual chain finds the "
        "credentials (environment, shared files, instance or task role).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="AWS secret access key, with s3_access_key_id. Never printed."
    )
    s3_session_token: SecretStr | None = Field(
        default=None, description="AWS session token, for temporary credentials. Never printed."
    )
    s3_server_side_encryption: Literal["AES256", "aws:kms", "aws:kms:dsse"] | None = Field(
        default=None,
        description="Server-side encryption asked for on every object: AES256 (SSE-S3), "
        "aws:kms or aws:kms:dsse (SSE-KMS). Default: the bucket's default encryption.",
    )
    s3_kms_key_id: str | None = Field(
        default=None,
        description="KMS key (id, alias or ARN) for aws:kms encryption. Default: the "
        "account's AWS-managed key for S3.",
    )
    s3_multipart_threshold_bytes: int = Field(
        default=64 * MiB,
        ge=5 * MiB,
        description="Files at least this large are uploaded in parts (multipart upload).",
    )
    s3_part_size_bytes: int = Field(
        default=16 * MiB,
        ge=5 * MiB,
        le=5 * 1024 * MiB,
        description="Size of each part of a multipart upload (S3 allows 5 MiB to 5 GiB).",
    )
    s3_max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per S3 call: boto3's standard retry mode retries throttling, "
        "5xx answers and dropped connections with backoff.",
    )

    # -- B2, the cache: filled after commit, read first -------------------------------------

    b2_bucket: str = Field(
        pattern=_B2_BUCKET, description="B2 bucket files are cached in (required)."
    )
    b2_key_id: str = Field(
        min_length=1, description="B2 application key id (required)."
    )
    b2_application_key: SecretStr = Field(
        description="B2 application key, the secret half (required). Never printed."
    )
    b2_prefix: str = Field(
        default="",
        description="Folder inside the B2 bucket the files go under. Default: the root.",
    )
    b2_realm: str = Field(
        default="production",
        description="Where b2sdk authorizes: 'production', or the URL of a B2-compatible "
        "API. Default: Backblaze's production service.",
    )
    b2_read_deadline_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait for B2 while serving a download before S3 serves it "
        "instead.",
    )
    b2_retry_seconds: float = Field(
        default=30.0,
        ge=0,
        description="After B2 failed or timed out, downloads go straight to S3 for this "
        "long before B2 is tried again (0: try B2 every time).",
    )

    # -- shared -------------------------------------------------------------------------------

    timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Connect and read timeout of each S3 and B2 request.",
    )
    files_url: str | None = Field(
        default=None,
        description="Public URL of the files in B2 (the CDN in front of the B2 bucket, "
        "prefix included), e.g. https://files.example.com/packages with b2_prefix "
        "'packages' (mirrors want file URL paths under /packages/). When set, /packages/ "
        "redirects there; otherwise the index streams each file itself, B2 first, S3 as "
        "fallback.",
    )
    spool_memory_bytes: int = Field(
        default=8 * MiB,
        ge=0,
        description="A file served by the index is read whole and checked against its "
        "sha256 before the first byte goes out; files up to this size are held in memory, "
        "larger ones in a temporary file.",
    )
    temp_dir: Path | None = Field(
        default=None,
        description="Where temporary files go (downloads being checked, copies to B2). "
        "Default: the system's temporary directory.",
    )
    reconcile_interval_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How often the reconcile runs (the periodic task "
        "storage_b2s3.reconcile; in the embedded mode, a loop in the web process).",
    )
    reconcile_batch_size: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Files examined per database query during a reconcile.",
    )
    reconcile_verify_per_run: int = Field(
        default=1000,
        ge=0,
        description="Cached copies checked against B2 (size, SHA-1, sha256) per reconcile "
        "run, those checked longest ago first.",
    )

    @field_validator("s3_prefix", "b2_prefix")
    @classmethod
    def _folder(cls, value: str) -> str:
        return _prefix(value)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _http_url(value, "http://127.0.0.1:5000")

    @field_validator("files_url")
    @classmethod
    def _files(cls, value: str | None) -> str | None:
        return _http_url(value, "https://files.example.com")

    @field_validator("b2_realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        if value in ("production", "staging", "dev"):
            return value
        return _http_url(value, "https://api.backblazeb2.com") or value

    @model_validator(mode="after")
    def _consistent(self) -> B2S3Settings:
        # Half a key pair would silently fall back to boto3's chain: say so instead.
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("give s3_access_key_id and s3_secret_access_key together, or neither")
        if self.s3_session_token is not None and self.s3_access_key_id is None:
            raise ValueError("s3_session_token needs s3_access_key_id and s3_secret_access_key")
        if self.s3_kms_key_id is not None and not (self.s3_server_side_encryption or "").startswith(
            "aws:kms"
        ):
            raise ValueError(
                "s3_kms_key_id needs s3_server_side_encryption aws:kms or aws:kms:dsse"
            )
        if self.s3_part_size_bytes > self.s3_multipart_threshold_bytes:
            raise ValueError("s3_part_size_bytes must not exceed s3_multipart_threshold_bytes")
        return self
