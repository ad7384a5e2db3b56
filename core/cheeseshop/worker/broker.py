"""Broker URL and transport options from settings: Redis or SQS. Pure, no I/O.

Redelivery after a worker vanished is the broker's visibility timeout: a task taken and not
acknowledged (``task_acks_late``) is handed out again once it has been hidden that long.
The outbox's own lease does the same job one level down (an event leased by a dead
deliverer is due again when the lease runs out, and the sweep re-queues it), so the
default visibility timeout is the lease plus a minute: a redelivered ``deliver`` finds the
lease expired and completes the delivery, rather than finding it still leased and leaving
it to the sweep. Shorter is harmless (the redelivery does nothing, the sweep catches up);
much longer only delays a redelivery the sweep will long have made.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

from cheeseshop.config import Settings

__all__ = ["BrokerConfig", "broker_config", "coordination_redis_url", "visibility_timeout"]

#: Seconds a blocking broker call may wait for a reply on an open connection. Above
#: kombu's BRPOP timeout (1 s), below anything a person would call a hang.
SOCKET_TIMEOUT = 10.0
#: SQS long polling: how long one receive waits on the server for a message (AWS's
#: maximum is 20 s). Shorter means quicker shutdowns, longer fewer requests.
SQS_WAIT_SECONDS = 10


@dataclasses.dataclass(frozen=True)
class BrokerConfig:
    """What Celery is given: a URL (with credentials) and kombu transport options."""

    url: str
    transport_options: dict[str, Any]
    is_sqs: bool

    def __repr__(self) -> str:
        # The URL may carry a password or an AWS secret key.
        options = self.transport_options
        return f"BrokerConfig(url=<secret>, transport_options={options!r}, is_sqs={self.is_sqs})"


def visibility_timeout(settings: Settings) -> int:
    """Seconds an unacknowledged task stays hidden before the broker hands it out again."""
    if settings.broker_visibility_timeout_seconds is not None:
        return settings.broker_visibility_timeout_seconds
    return int(settings.outbox_lease_seconds) + 60


def broker_config(settings: Settings, *, publish_only: bool = False) -> BrokerConfig:
    """The broker for ``settings``; ``broker_url`` must be set.

    ``publish_only``: for a process that only sends tasks (the web process). A publish
    is one short round trip, so any reply slower than the connect timeout counts as a
    hung broker; a worker's long polls need the longer socket timeout.
    """
    if settings.broker_url is None:
        raise ValueError("broker_url is not set")
    url = settings.broker_url.get_secret_value()
    socket_timeout = settings.broker_connect_timeout_seconds if publish_only else SOCKET_TIMEOUT
    if url.startswith("sqs://"):
        return _sqs(settings, url, socket_timeout)
    return _redis(settings, url, socket_timeout)


def _redis(settings: Settings, url: str, socket_timeout: float) -> BrokerConfig:
    timeout = visibility_timeout(settings)
    options: dict[str, Any] = {
        "visibility_timeout": timeout,
        # Every key the broker writes, apart from those of another index sharing the
        # Redis (and of another test).
        "global_keyprefix": f"{settings.worker_key_prefix}broker:",
        "socket_connect_timeout": settings.broker_connect_timeout_seconds,
        "socket_timeout": socket_timeout,
        # kombu looks for tasks whose worker vanished every interval x throttle seconds
        # (100 s by default); a tenth of the visibility timeout keeps the redelivery
        # within about 10% of it, at one cheap sorted-set query per look.
        "unacked_restore_interval": max(1, min(10, timeout // 10)),
        "unacked_restore_throttle": 1,
    }
    return BrokerConfig(url=url, transport_options=options, is_sqs=False)


def _sqs(settings: Settings, url: str, socket_timeout: float) -> BrokerConfig:
    options: dict[str, Any] = {
        # Set on the queue when kombu creates it; an existing queue keeps its own.
        "visibility_timeout": visibility_timeout(settings),
        "queue_name_prefix": settings.sqs_queue_name_prefix,
        "wait_time_seconds": SQS_WAIT_SECONDS,
        # botocore's default connect timeout is 60 s; a request queuing a delivery must
        # not wait that long. The read timeout stays above the long poll.
        "client-config": {
            "connect_timeout": settings.broker_connect_timeout_seconds,
            "read_timeout": SQS_WAIT_SECONDS + socket_timeout,
        },
    }
    if settings.sqs_region:
        options["region"] = settings.sqs_region
    if settings.sqs_endpoint_url:
        # kombu takes the endpoint from the URL's host and the scheme from is_secure.
        endpoint = urlsplit(settings.sqs_endpoint_url)
        credentials, _, _ = urlsplit(url).netloc.rpartition("@")
        url = f"sqs://{credentials + '@' if credentials else ''}{endpoint.netloc}"
        options["is_secure"] = endpoint.scheme == "https"
    return BrokerConfig(url=url, transport_options=options, is_sqs=True)


def coordination_redis_url(settings: Settings) -> str | None:
    """The Redis holding the beat schedule and the periodic tasks' locks.

    ``redis_url`` when set, else the broker when it is Redis; ``None`` for an SQS broker
    without ``redis_url`` (``cheeseshop beat`` then refuses to start).
    """
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    if settings.broker_url is not None:
        url = settings.broker_url.get_secret_value()
        if url.startswith(("redis://", "rediss://")):
            return url
    return None
