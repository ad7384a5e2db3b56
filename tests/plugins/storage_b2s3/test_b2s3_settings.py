"""The ``[storage_b2s3]`` section: defaults, normalization, and errors that name their key."""

from __future__ import annotations

from typing import Any

import pytest

from cheeseshop.config import ConfigError

from cheeseshop_storage_b2s3 import B2S3Settings

from b2s3_kit import plugin_settings

REQUIRED = {
    "s3_bucket": "cheeseshop-archive",
    "b2_bucket": "cheeseshop-cache",
    "b2_key_id": "0012345",
    "b2_application_key": "K001secret",
}


def _section(**changes: Any) -> B2S3Settings:
    settings = plugin_settings({**REQUIRED, **changes}, "sqlite://")
    section: B2S3Settings = settings.section("storage_b2s3")
    return section


def test_defaults() -> None:
    section = _section()
    assert section.s3_prefix == "" and section.b2_prefix == ""
    assert section.files_url is None
    assert section.b2_realm == "production"
    assert section.s3_multipart_threshold_bytes == 64 * 1024 * 1024
    assert section.reconcile_interval_seconds == 600.0


@pytest.mark.parametrize(
    ("given", "normalized"),
    [("files", "files/"), ("/files/", "files/"), ("a/b.c/d_e", "a/b.c/d_e/"), ("", ""), ("/", "")],
)
def test_prefixes_are_folders(given: str, normalized: str) -> None:
    assert _section(s3_prefix=given, b2_prefix=given).s3_prefix == normalized


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"s3_bucket": "Not_A_Bucket"}, "storage_b2s3.s3_bucket"),
        ({"b2_bucket": "b2"}, "storage_b2s3.b2_bucket"),
        ({"s3_prefix": "../up"}, "storage_b2s3.s3_prefix"),
        ({"b2_prefix": "a b"}, "storage_b2s3.b2_prefix"),
        ({"s3_endpoint_url": "ftp://x"}, "storage_b2s3.s3_endpoint_url"),
        ({"files_url": "https://user:pw@cdn.example.com"}, "storage_b2s3.files_url"),
        ({"b2_realm": "nowhere"}, "storage_b2s3.b2_realm"),
        ({"s3_region": "Europe"}, "storage_b2s3.s3_region"),
        ({"s3_part_size_bytes": 1024}, "storage_b2s3.s3_part_size_bytes"),
        ({"s3_server_side_encryption": "rot13"}, "storage_b2s3.s3_server_side_encryption"),
        ({"unknown_key": 1}, "storage_b2s3.unknown_key"),
    ],
)
def test_a_bad_value_names_its_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _section(**changes)


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_required_keys(missing: str) -> None:
    values = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        plugin_settings(values, "sqlite://")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"s3_access_key_id": "AKIA"}, "together"),
        ({"s3_session_token": "t"}, "s3_session_token"),
        ({"s3_kms_key_id": "alias/x"}, "s3_kms_key_id"),
        ({"s3_kms_key_id": "alias/x", "s3_server_side_encryption": "AES256"}, "s3_kms_key_id"),
        ({"s3_part_size_bytes": 128 * 1024 * 1024}, "s3_part_size_bytes"),
    ],
)
def test_inconsistent_values_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _section(**changes)


def test_kms_encryption_with_a_key() -> None:
    section = _section(s3_server_side_encryption="aws:kms", s3_kms_key_id="alias/cheeseshop")
    assert section.s3_kms_key_id == "alias/cheeseshop"


def test_secrets_are_never_in_the_repr() -> None:
    section = _section(s3_access_key_id="AKIA", s3_secret_access_key="very-secret")
    assert "very-secret" not in repr(section) and "K001secret" not in repr(section)
