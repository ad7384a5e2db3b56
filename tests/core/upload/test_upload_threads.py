"""Where an upload's blocking steps run: in the upload threads, not the loop's default executor.

On PostgreSQL a step waits in its thread for database work on the event loop, and that
work can itself need the default executor (asyncpg opening a connection to a host name
has the name resolved there). Were the steps in the default executor, a few uploads
waiting at once would hold every one of its threads and wait for ever.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

import cheeseshop.upload.service as service
from cheeseshop.upload import describe
from cheeseshop.db.models import File
from cheeseshop.testing.dists import build_wheel
from cheeseshop.testing.upload import upload_fields

UPLOADS = 3


async def test_upload_steps_leave_the_default_executor_free(
    upload: Any, make_token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    token = await make_token("alice")
    real = service._check_form

    def check_needing_the_default_executor(form: Any) -> Any:
        # As a new connection's name lookup would: work on the default executor, started
        # from the loop while this thread waits for it.
        async def lookup() -> int:
            return await loop.run_in_executor(None, sum, (1, 2))

        assert asyncio.run_coroutine_threadsafe(lookup(), loop).result(timeout=5) == 3
        return real(form)

    monkeypatch.setattr(service, "_check_form", check_needing_the_default_executor)
    responses = await asyncio.wait_for(
        asyncio.gather(*(upload(build_wheel(f"threads-{n}", "1.0"), token=token) for n in range(UPLOADS))),
        timeout=30,
    )
    assert [response.status_code for response in responses] == [200] * UPLOADS


BOUNDARY = "threads-test-boundary"


def twine_body(dist: Any) -> bytes:
    """The form twine sends for ``dist``, then the file, as one multipart body."""
    out = bytearray()
    for key, value in upload_fields(dist):
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
    out += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="{dist.filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return bytes(out) + dist.content + f"\r\n--{BOUNDARY}--\r\n".encode()


async def upload_hung_up(app: Any, token: str, dist: Any, *, hang_up: threading.Event) -> None:
    """Send ``dist`` as twine would, straight to the ASGI app, and hang up once ``hang_up``
    is set: Quart then cancels the request, which must not have been answered."""
    body = twine_body(dist)
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.to_thread(hang_up.wait, 10)
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    authorization = base64.b64encode(f"__token__:{token}".encode())
    scope = {
        "type": "http", "method": "POST", "path": "/legacy/", "raw_path": b"/legacy/", "query_string": b"",
        "headers": [
            (b"host", b"localhost"),
            (b"authorization", b"Basic " + authorization),
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "scheme": "http", "http_version": "1.1", "root_path": "",
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app.app(scope, receive, send)
    assert not any(m["type"] == "http.response.start" for m in sent), "the request was answered, not cancelled"


async def test_a_client_gone_after_publishing_began_still_gets_its_events_dispatched(
    cheeseshop_app: Any,
    make_token: Any,
    cheeseshop_services: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    spool: str,
) -> None:
    # The client hangs up while the upload is being committed: Quart cancels the request's
    # task. A thread cannot be stopped, so the commit still happens; the purge and the
    # events that follow it must happen too. (With the file in memory and on disk.)
    token = await make_token("alice")
    committing, release = threading.Event(), threading.Event()
    real_commit = service._Steps.commit_settling_races

    def held_commit(*args: Any, **kwargs: Any) -> Any:
        committing.set()
        assert release.wait(10)
        return real_commit(*args, **kwargs)

    dispatched: list[list[int]] = []
    real_dispatch = cheeseshop_services.outbox.dispatch

    async def recording_dispatch(event_ids: Any) -> None:
        dispatched.append(list(event_ids))
        await real_dispatch(event_ids)

    monkeypatch.setattr(service._Steps, "commit_settling_races", held_commit)
    monkeypatch.setattr(cheeseshop_services.outbox, "dispatch", recording_dispatch)
    caplog.set_level(logging.INFO, logger=service.__name__)
    dist = build_wheel("client-gone", "1.0")
    await upload_hung_up(cheeseshop_app, token, dist, hang_up=committing)
    release.set()

    for _ in range(200):
        if dispatched and "after its client went away" in caplog.text:
            break
        await asyncio.sleep(0.025)
    async with cheeseshop_services.db.read() as session:
        committed = list(await session.scalars(select(File.filename)))
    assert committed == [dist.filename]
    assert len(dispatched) == 1 and dispatched[0], "the committed upload's events were not dispatched"
    # The temporary file outlived the request, as long as publishing needed it, and no longer.
    assert list(cheeseshop_services.settings.upload_directory.iterdir()) == []
    # No request is left to answer: the log says how it ended.
    assert f"the upload of {dist.filename} was published after its client went away" in caplog.text


async def test_a_client_gone_before_publishing_began_publishes_nothing(
    cheeseshop_app: Any,
    make_token: Any,
    cheeseshop_services: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The client hangs up while the upload is being checked, in the same trip to the
    # upload thread that would go on to publish it: once the check is done, the thread
    # finds the request gone and stops before storing anything.
    token = await make_token("alice")
    checking, release = threading.Event(), threading.Event()
    real_check_form = service._check_form

    def held_check_form(form: Any) -> Any:
        checking.set()
        assert release.wait(10)
        return real_check_form(form)

    published: list[Any] = []
    real_publish = service._Steps.publish

    def recording_publish(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_publish(self, *args, **kwargs)
        published.append(result)
        return result

    dispatched: list[Any] = []

    async def recording_dispatch(event_ids: Any) -> None:
        dispatched.append(list(event_ids))

    monkeypatch.setattr(service, "_check_form", held_check_form)
    monkeypatch.setattr(service._Steps, "publish", recording_publish)
    monkeypatch.setattr(cheeseshop_services.outbox, "dispatch", recording_dispatch)
    caplog.set_level(logging.INFO, logger=service.__name__)
    dist = build_wheel("client-gone-early", "1.0")
    await upload_hung_up(cheeseshop_app, token, dist, hang_up=checking)
    release.set()

    for _ in range(200):
        if published:
            break
        await asyncio.sleep(0.025)
    assert published == [None], "the thread reached publishing and must have stopped there"
    await asyncio.sleep(0.05)  # the clean-up runs when the work is done
    async with cheeseshop_services.db.read() as session:
        assert list(await session.scalars(select(File.filename))) == []
    assert dispatched == []
    assert list(cheeseshop_services.settings.upload_directory.iterdir()) == []
    stored = cheeseshop_services.settings.data_dir / "files"
    assert not stored.exists() or not any(path.is_file() for path in stored.rglob("*"))
    assert "published after its client went away" not in caplog.text


async def test_a_large_description_rendering_holds_no_upload_thread(
    upload: Any, make_token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A large description may take up to the render deadline; awaited on the loop, it
    # leaves the upload threads to other uploads (here, the only one there is).
    monkeypatch.setattr(service, "_UPLOAD_THREADS", ThreadPoolExecutor(max_workers=1))
    monkeypatch.setattr(describe, "ISOLATE_ABOVE", 1000)
    token = await make_token("alice")
    rendering, finish = asyncio.Event(), asyncio.Event()

    async def slow_render(raw: str, content_type: str | None, timeout: float) -> str:
        rendering.set()
        await finish.wait()
        return "<p>long</p>"

    monkeypatch.setattr(describe, "_render_isolated", slow_render)
    large = build_wheel("large-description", "1.0")
    fields = upload_fields(large, overrides={"description": "x" * 2000, "description_content_type": "text/plain"})
    slow = asyncio.create_task(upload(large, fields=fields, token=token))
    await asyncio.wait_for(rendering.wait(), 10)

    small = await asyncio.wait_for(upload(build_wheel("small-description", "1.0"), token=token), 10)
    assert small.status_code == 200, await small.get_data(as_text=True)
    assert not slow.done()
    finish.set()
    assert (await asyncio.wait_for(slow, 10)).status_code == 200
