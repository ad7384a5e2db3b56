"""Racing uploads (R3): one filename, one stored file; same bytes all 200; never a 500.

Each test fires its uploads at once through the test client (``asyncio.gather``), on SQLite
and on PostgreSQL, so the requests really do interleave at every ``await`` of the pipeline:
several pass the "does it exist?" check before any commits, and the database constraints
settle who wins.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from sqlalchemy import func, select

from cheeseshop.db.models import File, FilenameRegistry, Project, Release
from cheeseshop.services import Services
from cheeseshop.storage.gc import collect_orphans
from cheeseshop.testing.dists import Dist, build_wheel

RACERS = 8
JSON = "application/vnd.pypi.simple.v1+json"
ALREADY_EXISTS = "File already exists"


async def _race(upload: Any, dists: list[Dist], tokens: list[str]) -> list[tuple[int, str]]:
    responses = await asyncio.gather(
        *(upload(dist, token=token) for dist, token in zip(dists, tokens, strict=True))
    )
    return [(r.status_code, await r.get_data(as_text=True)) for r in responses]


async def _rows(services: Services, model: Any) -> list[Any]:
    async with services.db.read() as session:
        return list(await session.scalars(select(model)))


async def _count(services: Services, model: Any) -> int:
    async with services.db.read() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


def _stored(services: Services) -> dict[str, bytes]:
    contents = {}
    for path, _ in services.storage.iter_paths():
        with services.storage.open(path) as handle:
            contents[path] = handle.read()
    return contents


async def _simple_files(client: Any, project: str) -> list[tuple[str, str]]:
    response = await client.get(f"/simple/{project}/", headers={"Accept": JSON})
    assert response.status_code == 200, await response.get_data(as_text=True)
    data = await response.get_json()
    return [(f["filename"], f["hashes"]["sha256"]) for f in data["files"]]


def _wheel(variant: int) -> Dist:
    """Race-Me 1.0, one filename; each variant has other bytes inside."""
    return build_wheel(
        "Race-Me",
        "1.0",
        files={"race_me/__init__.py": f"VARIANT = {variant}\n".encode()},
    )


async def test_same_bytes_racing_all_succeed_with_one_file(
    upload: Any, make_token: Any, cheeseshop_services: Services, cheeseshop_client: Any
) -> None:
    wheel = _wheel(0)
    token = await make_token("alice")

    results = await _race(upload, [wheel] * RACERS, [token] * RACERS)

    assert [status for status, _ in results] == [200] * RACERS, results
    files = await _rows(cheeseshop_services, File)
    assert [(f.filename, f.sha256_digest) for f in files] == [(wheel.filename, wheel.sha256)]
    assert await _count(cheeseshop_services, Project) == 1
    assert await _count(cheeseshop_services, Release) == 1
    assert await _count(cheeseshop_services, FilenameRegistry) == 1
    # Every racer stored the same bytes at the same (content-addressed) path: one file,
    # and its PEP 658 metadata beside it.
    stored = _stored(cheeseshop_services)
    assert set(stored) == {files[0].path, files[0].path + ".metadata"}
    assert stored[files[0].path] == wheel.content
    assert await _simple_files(cheeseshop_client, "race-me") == [(wheel.filename, wheel.sha256)]


async def test_different_bytes_racing_one_wins_the_rest_are_refused(
    upload: Any, make_token: Any, cheeseshop_services: Services, cheeseshop_client: Any
) -> None:
    wheels = [_wheel(variant) for variant in range(RACERS)]
    assert len({w.filename for w in wheels}) == 1
    assert len({w.sha256 for w in wheels}) == RACERS
    token = await make_token("alice")

    results = await _race(upload, wheels, [token] * RACERS)

    statuses = [status for status, _ in results]
    assert 500 not in statuses, results
    assert statuses.count(200) == 1, results
    assert statuses.count(400) == RACERS - 1, results
    for status, body in results:
        if status == 400:
            assert body.startswith(ALREADY_EXISTS), results
    winner = wheels[statuses.index(200)]
    files = await _rows(cheeseshop_services, File)
    assert [(f.filename, f.sha256_digest) for f in files] == [(winner.filename, winner.sha256)]
    row = files[0]
    # The recorded file holds the winner's bytes: no loser overwrote them.
    stored = _stored(cheeseshop_services)
    assert hashlib.sha256(stored[row.path]).hexdigest() == row.sha256_digest
    assert await _simple_files(cheeseshop_client, "race-me") == [(winner.filename, winner.sha256)]
    download = await cheeseshop_client.get(f"/packages/{row.path}")
    assert download.status_code == 200
    assert await download.get_data() == winner.content
    # R3: exactly one stored file. A loser that stored its bytes before the winner
    # committed removes them when it is refused; nothing is left for the collector.
    assert set(stored) == {row.path, row.path + ".metadata"}
    assert await collect_orphans(cheeseshop_services, now=_far_future(cheeseshop_services)) == []


async def test_same_bytes_racing_a_different_upload_of_the_filename(
    upload: Any, make_token: Any, cheeseshop_services: Services
) -> None:
    # Half send one wheel, half another of the same name: one side wins entirely.
    first, second = _wheel(1), _wheel(2)
    token = await make_token("alice")
    dists = [first, second] * (RACERS // 2)

    results = await _race(upload, dists, [token] * RACERS)

    statuses = [status for status, _ in results]
    assert 500 not in statuses, results
    files = await _rows(cheeseshop_services, File)
    assert len(files) == 1
    winner = first if files[0].sha256_digest == first.sha256 else second
    for dist, (status, body) in zip(dists, results, strict=True):
        if dist is winner:
            assert status == 200, results
        else:
            assert status == 400 and body.startswith(ALREADY_EXISTS), results
    stored = _stored(cheeseshop_services)
    assert stored[files[0].path] == winner.content
    assert set(stored) == {files[0].path, files[0].path + ".metadata"}


async def test_confusable_project_names_racing_one_is_created(
    upload: Any, make_token: Any, cheeseshop_services: Services
) -> None:
    flask = build_wheel("Flask", "1.0")
    f1ask = build_wheel("F1ask", "1.0")
    alice = await make_token("alice")
    bob = await make_token("bob")
    dists = [flask, f1ask] * (RACERS // 2)
    tokens = [alice, bob] * (RACERS // 2)

    results = await _race(upload, dists, tokens)

    statuses = [status for status, _ in results]
    assert 500 not in statuses, results
    projects = await _rows(cheeseshop_services, Project)
    assert len(projects) == 1, [p.name for p in projects]
    created = projects[0].name
    assert created in {"Flask", "F1ask"}
    for dist, (status, body) in zip(dists, results, strict=True):
        if dist.filename.lower().startswith(created.lower()):
            assert status == 200, results  # the same file again: identical, so 200
        else:
            assert status == 400, results
            assert "too similar" in body, results
    # Exactly one first upload of one name: one File row.
    assert await _count(cheeseshop_services, File) == 1


async def test_confusable_names_once_each_exactly_one_succeeds(
    upload: Any, make_token: Any, cheeseshop_services: Services
) -> None:
    # The brief's case exactly: "Flask" by alice and "F1ask" by bob, at the same moment.
    alice = await make_token("alice")
    bob = await make_token("bob")

    results = await _race(
        upload, [build_wheel("Flask", "1.0"), build_wheel("F1ask", "1.0")], [alice, bob]
    )

    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 400], results
    assert await _count(cheeseshop_services, Project) == 1


def _far_future(services: Services) -> float:
    return time.time() + services.settings.orphan_grace_seconds + 60


# -- different files of one new release: all must land --------------------------------------


async def test_files_of_one_new_release_racing_all_succeed(upload, make_token, cheeseshop_services, monkeypatch):
    """A wheel and an sdist of a release not yet on the index, uploaded at once, both land.

    The second commit to get the project's lock must see the release (or, for a new
    project, the project) that the first one created, not collide with it: a short pause
    after taking the lock makes both reach that point together.
    """
    import cheeseshop.upload.service as upload_service

    from cheeseshop.testing.dists import build_sdist

    original = upload_service.lock_project

    def slow_lock(session: Any, *args: Any) -> Any:
        locked = original(session, *args)
        time.sleep(0.05)  # in the upload's worker thread, on either database
        return locked

    monkeypatch.setattr(upload_service, "lock_project", slow_lock)
    token = await make_token()
    pairs = [
        [build_wheel("new-together", "1.0"), build_sdist("new-together", "1.0")],  # a new project
        [build_wheel("new-together", "2.0"), build_sdist("new-together", "2.0")],  # a new release
        [build_wheel("new-together", "3.0", tag="py2.py3-none-any"), build_wheel("new-together", "3.0")],
    ]
    for pair in pairs:
        results = await _race(upload, pair, [token, token])
        assert [status for status, _ in results] == [200, 200], results
    async with cheeseshop_services.db.read() as session:
        filenames = set(await session.scalars(select(File.filename)))
        releases = list(await session.scalars(select(Release.version).order_by(Release.id)))
        projects = list(await session.scalars(select(Project.name)))
    assert filenames == {dist.filename for pair in pairs for dist in pair}
    assert releases == ["1.0", "2.0", "3.0"]
    assert projects == ["new-together"]


async def test_new_project_created_by_a_racer_is_found_on_the_retry(upload, make_token, cheeseshop_services, monkeypatch):
    """An upload whose index read found no project creates it without looking first; when
    a racer created it meanwhile, the unique violation sends it round again, and the retry
    finds the racer's project (and its owner's role) instead of failing."""
    import cheeseshop.upload.service as upload_service
    from sqlalchemy.exc import IntegrityError

    from cheeseshop.db.models import Role
    from cheeseshop.testing.dists import build_sdist

    original = upload_service.insert_project
    collisions: list[str] = []

    def slow_insert(session: Any, **values: Any) -> int:
        try:
            project_id = original(session, **values)
        except IntegrityError:
            collisions.append(values["normalized_name"])
            raise
        # Hold the new project uncommitted while the other upload reaches its own insert
        # (in the upload's worker thread, on either database).
        time.sleep(0.1)
        return project_id

    monkeypatch.setattr(upload_service, "insert_project", slow_insert)
    token = await make_token()
    pair = [build_wheel("made-twice", "1.0"), build_sdist("made-twice", "1.0")]
    results = await _race(upload, pair, [token, token])
    assert [status for status, _ in results] == [200, 200], results
    assert collisions == ["made-twice"]
    assert [project.name for project in await _rows(cheeseshop_services, Project)] == ["made-twice"]
    assert len(await _rows(cheeseshop_services, Role)) == 1
    assert {f.filename for f in await _rows(cheeseshop_services, File)} == {dist.filename for dist in pair}
