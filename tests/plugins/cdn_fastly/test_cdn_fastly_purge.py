"""Purging through the Fastly API, against a checking fake of it on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from cheeseshop import CachePurge, Settings
from cheeseshop.config import load_settings
from cheeseshop.plugins import load_plugins

import cheeseshop_cdn_fastly
from cheeseshop_cdn_fastly import BATCH_LIMIT, FastlyPurgeError, batches


def settings_for(tmp_path: Path, section: dict[str, Any], **changes: Any) -> Settings:
    """Settings with the plugin's section validated, as start-up makes them."""
    raw = load_settings(
        environ={},
        overrides={
            "data_dir": tmp_path,
            "plugins": ["cdn_fastly"],
            "cdn_fastly": {**section, **changes},
        },
    )
    return load_plugins(raw).apply_settings(raw)


def purge(settings: Settings, *keys: str) -> None:
    """Call the hook as the outbox worker does."""
    cheeseshop_cdn_fastly.cheeseshop_purge(event=CachePurge(keys=keys, serial=7), settings=settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- what is sent ---------------------------------------------------------------------------


def test_purge_sends_one_soft_batch_naming_the_service_with_the_key(
    tmp_path, fastly, fastly_section
):
    purge(settings_for(tmp_path, fastly_section), "project/numpy", "all-projects")

    [request] = fastly.received
    assert request.status == 200
    assert request.method == "POST"
    # The batch form: no key in the path, so "/" in "project/numpy" needs no encoding.
    assert request.path == f"/service/{fastly.service_id}/purge"
    assert request.headers["fastly-key"] == fastly.api_key
    assert request.headers["fastly-soft-purge"] == "1"
    assert request.headers["surrogate-key"] == "project/numpy all-projects"
    assert request.keys == ("project/numpy", "all-projects")


def test_purge_is_hard_when_soft_purge_is_off(tmp_path, fastly, fastly_section):
    purge(settings_for(tmp_path, fastly_section, soft_purge=False), "project/numpy")
    [request] = fastly.purges
    assert not request.soft
    assert request.keys == ("project/numpy",)


def test_purge_splits_more_keys_than_the_limit_into_batches(tmp_path, fastly, fastly_section):
    keys = [f"project/p{i}" for i in range(2 * BATCH_LIMIT + 88)]
    purge(settings_for(tmp_path, fastly_section), *keys, *keys[:10])

    sent = [request.keys for request in fastly.received]
    assert [len(batch) for batch in sent] == [BATCH_LIMIT, BATCH_LIMIT, 88]
    assert [key for batch in sent for key in batch] == keys, "every key once, in order"
    assert all(request.status == 200 for request in fastly.received), "the fake refuses > 256"


def test_purge_with_no_keys_sends_nothing(tmp_path, fastly, fastly_section):
    purge(settings_for(tmp_path, fastly_section))
    assert fastly.received == []


def test_purge_batches_drop_duplicates_and_blanks_and_keep_order():
    assert batches(["b", "a", "b", "", "c"], size=2) == [("b", "a"), ("c",)]
    assert batches([]) == []
    with pytest.raises(ValueError):
        batches(["a"], size=0)


# -- failures raise, without the key --------------------------------------------------------


def test_purge_refused_for_a_wrong_key_raises_without_either_key(
    tmp_path, fastly, fastly_section, caplog
):
    wrong = "wrong-" + fastly.api_key[::-1]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FastlyPurgeError) as caught:
        purge(settings_for(tmp_path, fastly_section, api_key=wrong), "project/numpy")

    assert caught.value.status == 401
    assert caught.value.keys == ("project/numpy",)
    assert [r.status for r in fastly.received] == [401]
    shown = f"{caught.value} {caught.value!r}"
    assert "HTTP 401" in shown and "credentials" in shown
    assert wrong not in shown and fastly.api_key not in shown
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert wrong not in caplog.text
    assert all(wrong not in str(arg) for record in caplog.records for arg in (record.args or ()))


def test_purge_answered_500_raises(tmp_path, fastly, fastly_section):
    fastly.fail_next = 1
    settings = settings_for(tmp_path, fastly_section)
    with pytest.raises(FastlyPurgeError, match=r"HTTP 500") as caught:
        purge(settings, "project/numpy", "all-projects")
    assert caught.value.status == 500
    assert "project/numpy all-projects" in str(caught.value)
    assert fastly.api_key not in str(caught.value)

    purge(settings, "project/numpy", "all-projects")  # the retry goes through
    assert [r.status for r in fastly.received] == [500, 200]


def test_purge_error_body_echoing_the_key_is_redacted(tmp_path, fastly, fastly_section):
    fastly.fail_next = 1
    fastly.echo_on_error = True
    with pytest.raises(FastlyPurgeError) as caught:
        purge(settings_for(tmp_path, fastly_section), "project/numpy")
    assert "request_headers" in str(caught.value), "the body is quoted"
    assert fastly.api_key not in str(caught.value)
    assert "********" in str(caught.value)


def test_purge_error_body_cut_through_the_key_leaves_none_of_it(tmp_path, fastly, fastly_section):
    fastly.fail_next = 1
    # The quoted excerpt ends in the middle of the key unless redaction comes first.
    fastly.error_body = "x" * 290 + fastly.api_key
    with pytest.raises(FastlyPurgeError) as caught:
        purge(settings_for(tmp_path, fastly_section), "project/numpy")
    assert fastly.api_key[:8] not in str(caught.value)


def test_purge_of_an_unknown_service_raises(tmp_path, fastly, fastly_section):
    with pytest.raises(FastlyPurgeError) as caught:
        purge(settings_for(tmp_path, fastly_section, service_id="SomeoneElse"), "project/numpy")
    assert caught.value.status == 404
    assert "SomeoneElse" in str(caught.value)


def test_purge_connection_refused_raises_without_the_key(tmp_path, fastly_section):
    api_url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(FastlyPurgeError) as caught:
        purge(settings_for(tmp_path, fastly_section, api_url=api_url), "project/numpy")
    assert caught.value.status is None
    assert "ConnectError" in str(caught.value)
    assert fastly_section["api_key"] not in f"{caught.value} {caught.value!r}"
    # httpx's own exception holds the request, headers and all: it must not be chained.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_purge_timing_out_raises(tmp_path, fastly, fastly_section):
    fastly.delay = 1.0
    with pytest.raises(FastlyPurgeError, match="Timeout") as caught:
        purge(settings_for(tmp_path, fastly_section, timeout_seconds=0.2), "project/numpy")
    assert caught.value.status is None


def test_purge_does_not_follow_a_redirect_with_the_key(
    tmp_path, fastly, fastly_section, make_fastly
):
    elsewhere = make_fastly()
    fastly.redirect_to = elsewhere.url
    with pytest.raises(FastlyPurgeError) as caught:
        purge(settings_for(tmp_path, fastly_section), "project/numpy")
    assert caught.value.status == 307
    assert elsewhere.received == [], "the key must not travel to another host"
