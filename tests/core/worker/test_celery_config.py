"""The Celery app, broker options and commands as built from settings (no broker needed)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from cheeseshop.app import build_services
from cheeseshop.cli import main
from cheeseshop.config import ConfigError, load_settings
from cheeseshop.outbox.embedded import DeliveredElsewhere, EmbeddedDispatcher
from cheeseshop.plugins import PluginError, hookimpl, load_plugins
from cheeseshop.worker.broker import broker_config, coordination_redis_url, visibility_timeout
from cheeseshop.worker.celery_app import DELIVER, PERIODIC, make_celery
from cheeseshop.worker.dispatcher import CeleryDispatcher
from cheeseshop.worker.plugin import OUTBOX_SWEEP
from cheeseshop.worker.schedule import PeriodicTask


def settings(**values: object):
    return load_settings(environ={}, overrides={"data_dir": "/nonexistent/cheeseshop", **values})


def test_redis_broker_options() -> None:
    config = broker_config(
        settings(broker_url="redis://:pw@127.0.0.1:6379/3", worker_key_prefix="idx1:")
    )
    assert config.url == "redis://:pw@127.0.0.1:6379/3" and not config.is_sqs
    options = config.transport_options
    # Redelivery after a vanished worker comes just after the outbox lease runs out.
    assert options["visibility_timeout"] == 300 + 60
    assert options["global_keyprefix"] == "idx1:broker:"
    assert options["socket_connect_timeout"] == 2.0
    assert (
        1 <= options["unacked_restore_interval"] <= 10 and options["unacked_restore_throttle"] == 1
    )
    assert "pw" not in repr(config)


def test_sqs_broker_options_with_a_local_endpoint() -> None:
    config = broker_config(
        settings(
            broker_url="sqs://AKID:se%2Fcret@",
            sqs_endpoint_url="http://127.0.0.1:4566",
            sqs_region="eu-central-1",
            sqs_queue_name_prefix="prod-",
            outbox_lease_seconds=600,
        )
    )
    assert config.is_sqs
    # kombu reads the endpoint from the URL's host; the credentials stay as given.
    assert config.url == "sqs://AKID:se%2Fcret@127.0.0.1:4566"
    options = config.transport_options
    assert options["is_secure"] is False
    assert options["region"] == "eu-central-1"
    assert options["queue_name_prefix"] == "prod-"
    assert options["visibility_timeout"] == 660
    assert options["client-config"]["connect_timeout"] == 2.0
    assert options["client-config"]["read_timeout"] > options["wait_time_seconds"]


def test_sqs_broker_on_aws_keeps_the_url_and_boto3_defaults() -> None:
    config = broker_config(settings(broker_url="sqs://", broker_visibility_timeout_seconds=900))
    assert config.url == "sqs://"
    assert "region" not in config.transport_options and "is_secure" not in config.transport_options
    assert visibility_timeout(settings(broker_visibility_timeout_seconds=900)) == 900


def test_coordination_redis_is_redis_url_else_a_redis_broker() -> None:
    assert (
        coordination_redis_url(settings(broker_url="sqs://", redis_url="redis://r:6379/2"))
        == "redis://r:6379/2"
    )
    assert coordination_redis_url(settings(broker_url="redis://b:6379/1")) == "redis://b:6379/1"
    assert coordination_redis_url(settings(broker_url="sqs://")) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("broker_url", "amqp://guest:hunter2@rabbit//"),
        ("sqs_endpoint_url", "ftp://x"),
        ("broker_queue", "a b"),
    ],
)
def test_bad_worker_settings_name_their_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{key: value})
    assert f"{key} (CHEESESHOP_{key.upper()})" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_celery_app_is_json_only_with_late_acks_and_bounded_retries() -> None:
    entry = PeriodicTask("demo.job", 30, lambda settings: None)
    app = make_celery(
        settings(broker_url="redis://127.0.0.1:6379/0", broker_queue="idx"),
        schedule={"demo.job": entry},
    )
    conf = app.conf
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_default_queue == "idx"
    assert conf.task_ignore_result
    assert conf.redbeat_key_prefix == "cheeseshop:redbeat"
    assert conf.redbeat_redis_url == "redis://127.0.0.1:6379/0"
    deliver = app.tasks[DELIVER]
    assert deliver.max_retries == 5 and deliver.retry_backoff and deliver.retry_backoff_max <= 60
    assert PERIODIC in app.tasks
    scheduled = conf.beat_schedule["demo.job"]
    assert scheduled["task"] == PERIODIC and scheduled["args"] == ("demo.job",)
    assert scheduled["schedule"] == timedelta(seconds=30)
    assert scheduled["options"]["expires"] == 30


def test_event_dispatcher_is_embedded_without_a_broker_and_celery_with_one(tmp_path: Path) -> None:
    # Without a broker: the deliver process by default, or the web process's own loop.
    elsewhere = build_services(settings(data_dir=str(tmp_path)))
    assert isinstance(elsewhere.outbox.dispatcher, DeliveredElsewhere)
    embedded = build_services(settings(data_dir=str(tmp_path), outbox_delivery="inline"))
    assert isinstance(embedded.outbox.dispatcher, EmbeddedDispatcher)
    celery = build_services(settings(data_dir=str(tmp_path), broker_url="redis://127.0.0.1:6379/0"))
    assert isinstance(celery.outbox.dispatcher, CeleryDispatcher)


class OtherDispatcher:
    """A third-party dispatcher plugin."""

    @hookimpl
    def cheeseshop_event_dispatcher(self, settings: object) -> object:
        return self


def test_event_dispatcher_of_an_outside_plugin_wins_over_celery() -> None:
    plugin = OtherDispatcher()
    hooks = load_plugins(settings(broker_url="redis://127.0.0.1:6379/0"), extra=[("other", plugin)])
    assert hooks.event_dispatcher(settings(broker_url="redis://127.0.0.1:6379/0")) is plugin


def test_periodic_tasks_core_contributes_the_sweep_and_orphan_collection() -> None:
    hooks = load_plugins(settings(outbox_sweep_seconds=7, orphan_grace_seconds=120))
    entries = hooks.periodic_tasks(settings(outbox_sweep_seconds=7, orphan_grace_seconds=120))
    assert entries[OUTBOX_SWEEP].interval_seconds == 7
    assert entries["cheeseshop.collect_orphans"].interval_seconds == 120
    hourly = load_plugins(settings()).periodic_tasks(settings())
    assert hourly["cheeseshop.collect_orphans"].interval_seconds == 3600


class Clashing:
    @hookimpl
    def cheeseshop_periodic_tasks(self) -> list[PeriodicTask]:
        return [PeriodicTask(OUTBOX_SWEEP, 1, lambda settings: None)]


def test_periodic_tasks_with_one_name_twice_stop_start_up() -> None:
    hooks = load_plugins(settings(), extra=[("clashing", Clashing())])
    with pytest.raises(
        PluginError, match="clashing.*cheeseshop.outbox_sweep|cheeseshop.outbox_sweep.*clashing"
    ):
        hooks.periodic_tasks(settings())


@pytest.mark.parametrize(("name", "interval"), [("has space", 1), ("ok", 0), ("ok", -5)])
def test_periodic_tasks_entries_are_checked(name: str, interval: float) -> None:
    with pytest.raises(ValueError):
        PeriodicTask(name, interval, lambda settings: None)


def test_worker_and_beat_refuse_to_start_without_what_they_need(tmp_path: Path) -> None:
    runner = CliRunner()
    # None removes a variable: a developer's own settings must not change the outcome.
    base = {
        "CHEESESHOP_DATA_DIR": str(tmp_path),
        "CHEESESHOP_CONFIG": None,
        "CHEESESHOP_REDIS_URL": None,
    }
    result = runner.invoke(main, ["worker"], env={**base, "CHEESESHOP_BROKER_URL": None})
    assert result.exit_code == 1 and "broker_url (CHEESESHOP_BROKER_URL)" in result.output
    result = runner.invoke(main, ["beat"], env={**base, "CHEESESHOP_BROKER_URL": "sqs://"})
    assert result.exit_code == 1 and "redis_url (CHEESESHOP_REDIS_URL)" in result.output
