"""A valid upload is stored, staged, before the index is read (local storage stages).

The staged copies go into place inside the commit's transaction. Whatever else happens
(a refusal, the same bytes found committed already, a lost race), the upload removes only
its own staged copies: never a file in place, which a concurrent upload of the same bytes
may have just put there and be about to commit (R1).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import cheeseshop.upload.service as service
from cheeseshop.db.models import File
from cheeseshop.errors import APIError
from cheeseshop.storage import metadata_path, storage_path, takes_staging
from cheeseshop.testing.dists import build_wheel


def _path(dist: Any) -> str:
    return storage_path(hashlib.blake2b(dist.content, digest_size=32).hexdigest(), dist.filename)


def _files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


async def test_the_local_storage_stages_and_a_small_file_is_stored_before_its_archive_is_read(
    upload: Any, make_token: Any, cheeseshop_services: Any, monkeypatch: Any, spool: str
) -> None:
    assert takes_staging(cheeseshop_services.storage)
    order: list[str] = []

    def noting(step: str, real: Any) -> Any:
        def run(*args: Any) -> Any:
            order.append(step)
            return real(*args)

        return run

    monkeypatch.setattr(service, "_start_file_put", noting("file put", service._start_file_put))
    monkeypatch.setattr(service, "_check_archive", noting("archive checked", service._check_archive))
    monkeypatch.setattr(service, "_start_metadata_put", noting("metadata put", service._start_metadata_put))
    monkeypatch.setattr(service._Steps, "existing", noting("index read", service._Steps.existing))
    dist = build_wheel("early-puts", "1.0")
    response = await upload(dist, token=await make_token("alice"))
    assert response.status_code == 200, await response.get_data(as_text=True)
    # A file held in memory is stored at once, beside the archive's checks, and its core
    # metadata once they passed; one too large for memory, after every check.
    if spool == "memory":
        assert order == ["file put", "archive checked", "metadata put", "index read"]
    else:
        assert order == ["archive checked", "index read", "file put", "metadata put"]
    root = cheeseshop_services.settings.data_dir / "files"
    assert _files_under(root) == sorted([_path(dist), metadata_path(_path(dist))]), "no staged copy is left"


async def test_a_refused_upload_never_removes_the_same_bytes_put_by_another(
    upload: Any, make_token: Any, cheeseshop_services: Any, spool: str
) -> None:
    # Alice owns the project. While her upload of 2.0 has stored its file and not yet
    # committed, Bob, who may not upload to the project, sends the very same file.
    alice, bob = await make_token("alice"), await make_token("bob")
    assert (await upload(build_wheel("shared-bytes", "1.0"), token=alice)).status_code == 200
    dist = build_wheel("shared-bytes", "2.0")
    storage = cheeseshop_services.storage
    storage.put_bytes(_path(dist), dist.content)  # Alice's put, in place, not yet committed

    refused = await upload(dist, token=bob)

    assert refused.status_code == 403, await refused.get_data(as_text=True)
    assert storage.size(_path(dist)) == len(dist.content), "the refusal removed another upload's file"
    root = cheeseshop_services.settings.data_dir / "files"
    assert not [name for name in _files_under(root) if ".incoming-" in name], "a staged copy was left"
    # Alice's commit then finds her file there whole.
    assert (await upload(dist, token=alice)).status_code == 200
    assert storage.size(_path(dist)) == len(dist.content)


async def test_an_identical_re_upload_leaves_the_committed_file_untouched(
    upload: Any, make_token: Any, cheeseshop_services: Any, spool: str
) -> None:
    token = await make_token("alice")
    dist = build_wheel("same-again", "1.0")
    assert (await upload(dist, token=token)).status_code == 200
    root = cheeseshop_services.settings.data_dir / "files"
    committed = root / _path(dist)
    inode = committed.stat().st_ino

    again = await upload(dist, token=token)

    assert again.status_code == 200, await again.get_data(as_text=True)
    assert committed.stat().st_ino == inode, "the committed file was replaced"
    assert _files_under(root) == sorted([_path(dist), metadata_path(_path(dist))])
    async with cheeseshop_services.db.read() as session:
        assert list(await session.scalars(select(File.filename))) == [dist.filename]


@pytest.mark.parametrize("when", ["before the files go into place", "after they went into place"])
async def test_a_refusal_inside_the_transaction_leaves_nothing(
    upload: Any, make_token: Any, cheeseshop_services: Any, spool: str, monkeypatch: Any, when: str
) -> None:
    # Refused inside the transaction (as a project over its total is, or a lost race):
    # staged copies are removed; files already in place go too, there being no row.
    token = await make_token("alice")
    real_record = service._record_upload

    def refusing_record(*args: Any, **kwargs: Any) -> Any:
        if when.startswith("after"):
            real_record(*args, **kwargs)  # its statements, then the files into place
        raise APIError(400, "Refused inside the transaction.")

    monkeypatch.setattr(service, "_record_upload", refusing_record)
    refused = await upload(build_wheel("inside-refusal", "1.0"), token=token)
    assert refused.status_code == 400, await refused.get_data(as_text=True)
    assert "inside the transaction" in await refused.get_data(as_text=True)
    root = cheeseshop_services.settings.data_dir / "files"
    assert _files_under(root) == []
    async with cheeseshop_services.db.read() as session:
        assert list(await session.scalars(select(File.filename))) == []


async def test_an_archive_refused_while_its_file_was_being_stored_leaves_nothing(
    upload: Any, make_token: Any, cheeseshop_services: Any, spool: str, monkeypatch: Any
) -> None:
    # The form and digests are right, so the file's put starts; the archive is not a zip.
    started: list[str] = []
    real_start = service._start_file_put

    def start(*args: Any) -> Any:
        started.append("file put")
        return real_start(*args)

    monkeypatch.setattr(service, "_start_file_put", start)
    good = build_wheel("broken-archive", "1.0")
    broken = dataclasses.replace(good, content=b"PK but not a zip archive at all")

    refused = await upload(broken, token=await make_token("alice"))

    assert refused.status_code == 400, await refused.get_data(as_text=True)
    assert "zip" in (await refused.get_data(as_text=True)).lower()
    assert started == (["file put"] if spool == "memory" else [])
    root = cheeseshop_services.settings.data_dir / "files"
    assert _files_under(root) == [], "a staged copy of the refused file was left"
