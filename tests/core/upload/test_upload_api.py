"""The legacy upload API (``POST /legacy/``) through the Quart test client."""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import cheeseshop
from cheeseshop.accounts import tokens
from cheeseshop.accounts.service import revoke_token, user_by_name
from cheeseshop.db.models import ApiToken, File, FilenameRegistry, JournalEntry, Project, Release, utcnow
from cheeseshop.testing.dists import Dist, build_sdist, build_wheel
from cheeseshop.testing.records import stored_counts
from cheeseshop.testing.upload import encode_multipart, upload_fields
from cheeseshop.web.reason import REASON_HEADER

pytestmark = pytest.mark.usefixtures("spool")  # every upload in memory and on disk

JSON = "application/vnd.pypi.simple.v1+json"


# -- helpers ------------------------------------------------------------------------------


async def accepted(response: Any) -> str:
    body = await response.get_data(as_text=True)
    assert response.status_code == 200, body
    assert response.headers["Content-Type"].startswith("text/plain")
    return body


async def refused(response: Any, status: int, *fragments: str, explains: bool = True) -> str:
    """Assert a refusal: status, a message in the body and in the reason-phrase header."""
    body = await response.get_data(as_text=True)
    assert response.status_code != 500, body
    assert response.status_code == status, body
    message = body.strip()
    assert message, "the body must carry the message"
    if explains:  # the core's own messages say what to fix, not just "Bad Request"
        assert len(message) > 30, f"the body must say what to fix: {body!r}"
    reason = response.headers.get(REASON_HEADER)
    assert reason, f"no {REASON_HEADER} header"
    reason.encode("latin-1")  # travels as an HTTP reason phrase
    assert reason == " ".join(message.split())[:300]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def project_serial(services: Any, normalized: str) -> int:
    async with services.db.read() as session:
        serial = await session.scalar(
            select(Project.last_serial).where(Project.normalized_name == normalized)
        )
    assert serial is not None
    return serial


def stored_files(services: Any) -> list[Path]:
    root = services.settings.data_dir / "files"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def temporary_files(services: Any) -> list[Path]:
    root = services.settings.data_dir / "tmp"
    return sorted(root.iterdir()) if root.exists() else []


def token_row_id(raw: str, services: Any) -> str:
    token_id, _ = tokens.parse_identifier(raw, prefix=services.settings.token_prefix)
    return token_id


def wheel(name: str = "hello-world", version: str = "1.0", **kwargs: Any) -> Dist:
    return build_wheel(name, version, **kwargs)


# -- success ------------------------------------------------------------------------------


async def test_upload_wheel_then_visible_in_simple_api(upload, cheeseshop_client, cheeseshop_services):
    dist = wheel(requires_python=">=3.8")
    response = await upload(dist, fields=upload_fields(dist, requires_python=">=3.8"))
    assert (await accepted(response)).strip() == "OK"

    page = await cheeseshop_client.get("/simple/hello-world/", headers={"Accept": JSON})
    assert page.status_code == 200
    data = await page.get_json()
    assert [f["filename"] for f in data["files"]] == [dist.filename]
    assert data["files"][0]["hashes"]["sha256"] == dist.sha256
    assert data["files"][0]["size"] == len(dist.content)
    assert data["files"][0]["requires-python"] == ">=3.8"
    assert data["versions"] == ["1.0"]

    state = await stored_counts(cheeseshop_services)
    assert state["files"] == 1 and state["releases"] == 1 and state["projects"] == 1
    assert state["registry"] == 1
    assert len(stored_files(cheeseshop_services)) == 2  # the wheel and its .metadata
    assert temporary_files(cheeseshop_services) == []


async def test_upload_sdist(upload, cheeseshop_client, cheeseshop_services):
    dist = build_sdist("hello-world", "1.0")
    await accepted(await upload(dist))
    async with cheeseshop_services.db.read() as session:
        row = await session.scalar(select(File))
    assert row.filename == "hello_world-1.0.tar.gz"
    assert row.packagetype == "sdist"
    assert row.python_version == "source"
    assert row.sha256_digest == dist.sha256
    assert row.md5_digest == hashlib.md5(dist.content).hexdigest()
    assert row.metadata_sha256 is None


async def test_upload_records_owner_and_journal(upload, cheeseshop_services):
    dist = wheel()
    before = await stored_counts(cheeseshop_services)
    await accepted(await upload(dist))
    async with cheeseshop_services.db.read() as session:
        project = await session.scalar(select(Project))
        actions = (await session.scalars(select(JournalEntry.action).order_by(JournalEntry.id))).all()
        last = await session.scalar(select(func.max(JournalEntry.id)))
    assert project.name == "hello-world"
    assert actions == ["create", "add Owner alice", "new release", f"add py3 file {dist.filename}"]
    assert project.last_serial == last > before["journal"]


async def test_legacy_without_slash_accepted(upload, cheeseshop_services):
    response = await upload(wheel(), path="/legacy")
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert "Location" not in response.headers
    assert (await stored_counts(cheeseshop_services))["files"] == 1


async def test_bearer_token_accepted(upload, make_token, cheeseshop_services):
    token = await make_token()
    await accepted(await upload(wheel(), authorization=f"Bearer {token}"))
    assert (await stored_counts(cheeseshop_services))["files"] == 1


async def test_uv_file_part_without_content_type(upload, cheeseshop_services):
    await accepted(await upload(wheel(), file_content_type=None))
    assert (await stored_counts(cheeseshop_services))["files"] == 1


async def test_unknown_and_empty_values_are_absent(upload, cheeseshop_client, cheeseshop_services):
    dist = wheel()
    fields = upload_fields(
        dist,
        overrides={
            "summary": "UNKNOWN",
            "home_page": "",
            "author": "UNKNOWN",
            "license": "",
            "requires_python": "UNKNOWN",
            "md5_digest": "",
            "keywords": "",
            "some_future_field": "ignored",
        },
    )
    await accepted(await upload(dist, fields=fields))
    async with cheeseshop_services.db.read() as session:
        release = await session.scalar(select(Release))
        row = await session.scalar(select(File))
    assert release.summary is None
    assert release.home_page is None
    assert release.author is None
    assert release.license is None
    assert release.keywords is None
    assert release.requires_python is None
    assert row.requires_python is None
    data = await (await cheeseshop_client.get("/simple/hello-world/", headers={"Accept": JSON})).get_json()
    assert data["files"][0]["requires-python"] is None


async def test_unknown_in_repeated_fields_is_absent(upload, cheeseshop_services):
    # distutils wrote UNKNOWN for what it did not know, in repeated fields too: none of
    # these is a platform, an extra, a classifier or a requirement.
    dist = wheel()
    fields = upload_fields(dist)
    for key in ("platform", "supported_platform", "provides_extra", "classifiers",
                "requires_dist", "license_file", "dynamic", "project_urls"):
        fields.append((key, "UNKNOWN"))
    fields.append(("attestations", ""))  # empty: absent, not an attestation
    await accepted(await upload(dist, fields=fields))
    async with cheeseshop_services.db.read() as session:
        release = await session.scalar(select(Release))
    assert release.platforms == []
    assert release.supported_platforms == []
    assert release.provides_extra == []
    assert release.classifiers == []
    assert release.requires_dist == []
    assert release.license_files == []
    assert release.dynamic == []
    assert release.project_urls == {}


async def test_metadata_fields_recorded(upload, cheeseshop_services):
    # A License-File named by the form must be in the wheel (metadata 2.4+).
    dist = wheel(
        files={
            "hello_world/__init__.py": b"",
            "hello_world-1.0.dist-info/licenses/LICENSE": b"MIT",
        }
    )
    fields = upload_fields(
        dist,
        overrides={
            "classifiers": ["Programming Language :: Python :: 3", "Typing :: Typed"],
            "project_urls": ["Homepage, https://example.com", "Source, https://example.com/src"],
            "license_file": "LICENSE",
            "keywords": "a, b",
        },
    )
    await accepted(await upload(dist, fields=fields))
    async with cheeseshop_services.db.read() as session:
        release = await session.scalar(select(Release))
    assert release.classifiers == ["Programming Language :: Python :: 3", "Typing :: Typed"]
    assert release.project_urls == {"Homepage": "https://example.com", "Source": "https://example.com/src"}
    assert release.license_files == ["LICENSE"]
    assert release.keywords == "a, b"
    assert release.summary == "A test package."


async def test_name_with_underscore_as_uv_sends_it(upload, cheeseshop_services):
    dist = wheel("Hello_World")
    await accepted(await upload(dist, fields=upload_fields(dist, name="Hello_World")))
    async with cheeseshop_services.db.read() as session:
        project = await session.scalar(select(Project))
    assert (project.name, project.normalized_name) == ("Hello_World", "hello-world")


async def test_second_file_for_existing_release(upload, cheeseshop_services):
    await accepted(await upload(wheel()))
    serial = await project_serial(cheeseshop_services, "hello-world")
    await accepted(await upload(build_sdist("hello-world", "1.0")))
    state = await stored_counts(cheeseshop_services)
    assert state["files"] == 2 and state["releases"] == 1
    assert await project_serial(cheeseshop_services, "hello-world") == serial + 1


# -- authentication -----------------------------------------------------------------------


async def test_missing_credentials_401(upload, cheeseshop_services):
    response = await upload(wheel(), authorization="")
    await refused(response, 401, "__token__")
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert (await stored_counts(cheeseshop_services))["files"] == 0


async def test_unsupported_scheme_401(upload):
    response = await upload(wheel(), authorization="Digest username=x")
    await refused(response, 401, "__token__")
    assert response.headers["WWW-Authenticate"].startswith("Basic")


async def test_garbage_token_403(upload, make_token, cheeseshop_services, subtests):
    await make_token()  # a user and a token exist; none of these is it
    for password in ["garbage", "cheeseshop-garbage", "cheeseshop-", "", "pypi-AgEIcHlwaS5vcmc"]:
        with subtests.test(password=password):
            response = await upload(wheel(), authorization=basic("__token__", password))
            await refused(response, 403, "Invalid API Token")
    assert (await stored_counts(cheeseshop_services))["files"] == 0


async def test_wrong_key_token_403(upload, make_token, cheeseshop_services):
    real = await make_token()
    token_id = token_row_id(real, cheeseshop_services)
    async with cheeseshop_services.db.read() as session:
        user = await user_by_name(session, "alice")
    forged = tokens.mint(
        prefix=cheeseshop_services.settings.token_prefix,
        token_id=token_id,
        key=tokens.new_key(),
        user_id=user.id,
    )
    await refused(await upload(wheel(), token=forged), 403, "Invalid API Token")


async def test_token_for_unknown_id_403(upload, make_token, cheeseshop_services):
    await make_token()
    forged = tokens.mint(
        prefix=cheeseshop_services.settings.token_prefix,
        token_id="00000000-0000-0000-0000-000000000000",
        key=tokens.new_key(),
        user_id=1,
    )
    await refused(await upload(wheel(), token=forged), 403, "Invalid API Token")


async def test_revoked_token_403(upload, make_token, cheeseshop_services):
    token = await make_token()
    token_id = token_row_id(token, cheeseshop_services)
    async with cheeseshop_services.db.write() as session:
        user = await user_by_name(session, "alice")
        await revoke_token(session, token_id, user=user)
    await refused(await upload(wheel(), token=token), 403, "revoked")
    assert (await stored_counts(cheeseshop_services))["files"] == 0


async def test_expired_token_403(upload, make_token, cheeseshop_services):
    token = await make_token(expires_in=timedelta(seconds=-1))
    await refused(await upload(wheel(), token=token), 403, "expired")
    assert (await stored_counts(cheeseshop_services))["files"] == 0


async def test_expired_token_refused_by_caveat_alone(upload, make_token, cheeseshop_services):
    # Even if the row forgot its expiry, the macaroon's time caveat still refuses it.
    token = await make_token(expires_in=timedelta(seconds=-1))
    token_id = token_row_id(token, cheeseshop_services)
    async with cheeseshop_services.db.write() as session:
        row = await session.get(ApiToken, token_id)
        row.expires = None
    await refused(await upload(wheel(), token=token), 403, "Invalid API Token")


async def test_unexpired_token_accepted(upload, make_token, cheeseshop_services):
    token = await make_token(expires_in=timedelta(hours=1))
    await accepted(await upload(wheel(), token=token))


async def test_username_other_than_token_403(upload, make_token):
    token = await make_token()
    await refused(await upload(wheel(), authorization=basic("alice", token)), 403, "__token__")


async def test_malformed_basic_header_403(upload):
    # Wrong credentials, however they are wrong: 403 with the reason.
    await refused(await upload(wheel(), authorization="Basic !!!not-base64!!!"), 403, "Basic")
    no_colon = "Basic " + base64.b64encode(b"__token__").decode()
    await refused(await upload(wheel(), authorization=no_colon), 403, "__token__:")


async def test_deactivated_user_403(upload, make_token, cheeseshop_services):
    token = await make_token()
    async with cheeseshop_services.db.write() as session:
        user = await user_by_name(session, "alice")
        user.is_active = False
    await refused(await upload(wheel(), token=token), 403, "disabled")


# -- authorization ------------------------------------------------------------------------


async def test_project_scoped_token(upload, make_token, cheeseshop_services):
    await accepted(await upload(wheel("hello-world", "1.0")))
    await accepted(await upload(wheel("other-project", "1.0")))
    scoped = await make_token(projects=["Hello_World"])

    await accepted(await upload(wheel("hello-world", "2.0"), token=scoped))
    before = await stored_counts(cheeseshop_services)

    await refused(await upload(wheel("other-project", "2.0"), token=scoped), 403, "other-project")
    await refused(await upload(wheel("brand-new", "1.0"), token=scoped), 403, "brand-new")
    assert await stored_counts(cheeseshop_services) == before


async def test_second_user_without_role_403(upload, make_token, cheeseshop_services):
    await accepted(await upload(wheel("hello-world", "1.0")))
    before = await stored_counts(cheeseshop_services)
    bob = await make_token("bob")
    await refused(await upload(wheel("hello-world", "2.0"), token=bob), 403, "bob", "hello-world")
    # Nor may bob re-upload alice's identical file to learn anything.
    await refused(await upload(wheel("hello-world", "1.0"), token=bob), 403)
    assert await stored_counts(cheeseshop_services) == before


async def test_second_user_can_create_own_project(upload, make_token, cheeseshop_services):
    await accepted(await upload(wheel("hello-world", "1.0")))
    bob = await make_token("bob")
    await accepted(await upload(wheel("bobs-project", "1.0"), token=bob))
    assert (await stored_counts(cheeseshop_services))["projects"] == 2


# -- duplicates -----------------------------------------------------------------------------


async def test_identical_reupload_is_idempotent(upload, cheeseshop_services):
    dist = wheel()
    await accepted(await upload(dist))
    before = await stored_counts(cheeseshop_services)
    serial = await project_serial(cheeseshop_services, "hello-world")
    stored = stored_files(cheeseshop_services)

    await accepted(await upload(dist))
    assert await stored_counts(cheeseshop_services) == before
    assert await project_serial(cheeseshop_services, "hello-world") == serial
    assert stored_files(cheeseshop_services) == stored
    assert temporary_files(cheeseshop_services) == []


async def test_same_filename_other_bytes_400(upload, cheeseshop_services):
    first = wheel()
    second = wheel(summary="Different bytes, same name.")
    assert first.filename == second.filename and first.content != second.content
    await accepted(await upload(first))
    before = await stored_counts(cheeseshop_services)
    message = await refused(await upload(second), 400)
    assert message.startswith("File already exists")
    assert await stored_counts(cheeseshop_services) == before


async def test_second_sdist_same_release_other_spelling_400(upload, cheeseshop_services):
    await accepted(await upload(build_sdist("hello-world", "1.0")))
    # 1.0.0 is the same release as 1.0 (canonical form), and a different filename.
    second = build_sdist("hello-world", "1.0.0")
    message = await refused(await upload(second), 400)
    assert message.startswith("File already exists")
    assert (await stored_counts(cheeseshop_services))["files"] == 1


async def test_registered_filename_never_reusable(upload, cheeseshop_services):
    dist = wheel()
    async with cheeseshop_services.db.write() as session:
        session.add(FilenameRegistry(filename=dist.filename, created=utcnow()))
    await refused(await upload(dist), 400, dist.filename, "already been used")
    state = await stored_counts(cheeseshop_services)
    assert state["files"] == 0 and state["projects"] == 0
    assert stored_files(cheeseshop_services) == []


# -- form and file problems ---------------------------------------------------------------


async def test_digest_mismatch_400(upload, cheeseshop_services):
    dist = wheel()
    fields = upload_fields(dist, overrides={"sha256_digest": "0" * 64})
    await refused(await upload(dist, fields=fields), 400, "sha256_digest", dist.sha256)
    assert (await stored_counts(cheeseshop_services))["files"] == 0


async def test_md5_digest_mismatch_400(upload):
    dist = wheel()
    fields = upload_fields(
        dist, overrides={"sha256_digest": None, "blake2_256_digest": None, "md5_digest": "f" * 32}
    )
    await refused(await upload(dist, fields=fields), 400, "md5_digest")


async def test_md5_only_accepted(upload):
    dist = wheel()
    fields = upload_fields(
        dist,
        overrides={
            "sha256_digest": None,
            "blake2_256_digest": None,
            "md5_digest": hashlib.md5(dist.content).hexdigest().upper(),
        },
    )
    await accepted(await upload(dist, fields=fields))


async def test_no_digest_400(upload, cheeseshop_services):
    dist = wheel()
    fields = upload_fields(dist, overrides={"sha256_digest": None, "blake2_256_digest": None})
    await refused(await upload(dist, fields=fields), 400, "digest")
    assert (await stored_counts(cheeseshop_services))["files"] == 0


@pytest.mark.parametrize("action", ["submit", "doc_upload"])
async def test_retired_actions_410(upload, action):
    dist = wheel()
    fields = upload_fields(dist, overrides={":action": action})
    await refused(await upload(dist, fields=fields), 410, action)


async def test_unknown_action_400(upload):
    dist = wheel()
    fields = upload_fields(dist, overrides={":action": "remove_pkg"})
    await refused(await upload(dist, fields=fields), 400, "remove_pkg")


async def test_protocol_version_2_400(upload):
    dist = wheel()
    fields = upload_fields(dist, overrides={"protocol_version": "2"})
    await refused(await upload(dist, fields=fields), 400, "protocol_version")


async def test_protocol_version_absent_means_1(upload):
    dist = wheel()
    await accepted(await upload(dist, fields=upload_fields(dist, overrides={"protocol_version": None})))


async def test_bad_filetype_400(upload, subtests):
    dist = wheel()
    # "sdist" is a valid filetype, but not for a .whl.
    for filetype in ["bdist_egg", "bdist_wininst", "", "sdist"]:
        with subtests.test(filetype=filetype):
            # An sdist's pyversion is "source" (anything else is refused first).
            pyversion = {"pyversion": "source"} if filetype == "sdist" else {}
            fields = upload_fields(dist, overrides={"filetype": filetype, **pyversion})
            await refused(await upload(dist, fields=fields), 400, "iletype")


async def test_name_mismatch_400(upload, cheeseshop_services):
    dist = wheel("hello-world")
    fields = upload_fields(dist, name="other-project")
    await refused(await upload(dist, fields=fields), 400, "other-project", dist.filename)
    assert (await stored_counts(cheeseshop_services))["projects"] == 0


async def test_version_mismatch_400(upload):
    dist = wheel(version="1.0")
    fields = upload_fields(dist, version="2.0")
    await refused(await upload(dist, fields=fields), 400, "1.0", "2.0")


async def test_local_version_400(upload, cheeseshop_services):
    dist = wheel(version="1.0+local")
    await refused(await upload(dist), 400, "local")
    assert (await stored_counts(cheeseshop_services))["files"] == 0


async def test_zip_sdist_400(upload):
    dist = Dist(filename="hello_world-1.0.zip", content=b"PK\x05\x06" + b"\0" * 18, metadata=b"")
    fields = upload_fields(build_sdist("hello-world", "1.0"))
    fields = [(k, v) for k, v in fields if not k.endswith("_digest")]
    fields.append(("sha256_digest", dist.sha256))
    await refused(await upload(dist, fields=fields), 400, ".zip")


async def test_invalid_archive_400(upload, cheeseshop_services):
    good = wheel()
    dist = Dist(filename=good.filename, content=b"this is not a zip file", metadata=b"")
    await refused(await upload(dist, fields=upload_fields(dist)), 400, dist.filename)
    assert (await stored_counts(cheeseshop_services))["files"] == 0
    assert stored_files(cheeseshop_services) == []


async def test_missing_file_400(cheeseshop_client, make_token):
    dist = wheel()
    body, content_type = encode_multipart(upload_fields(dist))
    response = await cheeseshop_client.post(
        "/legacy/",
        data=body,
        headers={"Content-Type": content_type, "Authorization": basic("__token__", await make_token())},
    )
    await refused(response, 400, "content")


async def test_non_multipart_body_400(cheeseshop_client, make_token):
    response = await cheeseshop_client.post(
        "/legacy/",
        data=b":action=file_upload&name=hello-world",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": basic("__token__", await make_token()),
        },
    )
    await refused(response, 400, "multipart/form-data")


async def test_no_content_type_400(cheeseshop_client, make_token):
    response = await cheeseshop_client.post(
        "/legacy/", data=b"whatever", headers={"Authorization": basic("__token__", await make_token())}
    )
    await refused(response, 400, "multipart/form-data")


async def test_malformed_multipart_400(cheeseshop_client, make_token, cheeseshop_services, subtests):
    authorization = basic("__token__", await make_token())
    bodies = {
        "garbage": b"this is not multipart at all",
        "unterminated": b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nno closing boundary',
        "broken-headers": b"--b\r\nheaders that never end",
        "empty": b"",
    }
    for case, body in bodies.items():
        with subtests.test(case=case):
            response = await cheeseshop_client.post(
                "/legacy/",
                data=body,
                headers={"Content-Type": "multipart/form-data; boundary=b", "Authorization": authorization},
            )
            await refused(response, 400, "multipart")
    assert temporary_files(cheeseshop_services) == []


async def test_truncated_upload_400_no_temp_file(cheeseshop_client, make_token, cheeseshop_services):
    dist = wheel()
    body, content_type = encode_multipart(
        upload_fields(dist), [("content", dist.filename, dist.content, "application/octet-stream")]
    )
    response = await cheeseshop_client.post(
        "/legacy/",
        data=body[: len(body) - 200],
        headers={"Content-Type": content_type, "Authorization": basic("__token__", await make_token())},
    )
    await refused(response, 400)
    assert temporary_files(cheeseshop_services) == []
    assert (await stored_counts(cheeseshop_services))["files"] == 0


@pytest.mark.parametrize("cheeseshop_settings_overrides", [{"max_file_size": 1000}], ids=["limit-1000"])
async def test_file_over_max_file_size_413(upload, cheeseshop_services, cheeseshop_settings_overrides):
    assert cheeseshop_services.settings.max_file_size == 1000
    noise = random.Random(0).randbytes(4000)  # incompressible, so the wheel is > 1000 bytes
    dist = wheel(files={"hello_world/__init__.py": b"", "hello_world/data.bin": noise})
    assert len(dist.content) > 1000
    await refused(await upload(dist), 413, "too large")
    assert temporary_files(cheeseshop_services) == []
    assert stored_files(cheeseshop_services) == []
    assert (await stored_counts(cheeseshop_services))["files"] == 0


@pytest.mark.parametrize("cheeseshop_settings_overrides", [{"max_file_size": 100_000}], ids=["limit-100k"])
async def test_declared_length_far_over_limit_413(
    cheeseshop_client, make_token, cheeseshop_settings_overrides
):
    token = await make_token()
    response = await cheeseshop_client.post(
        "/legacy/",
        data=b"x",
        headers={
            "Content-Type": "multipart/form-data; boundary=b",
            "Content-Length": str(100_000 + 17 * 1024 * 1024),
            "Authorization": basic("__token__", token),
        },
    )
    await refused(response, 413, "too large")


async def test_attestations_field_400(upload, cheeseshop_services):
    dist = wheel()
    fields = upload_fields(dist, overrides={"attestations": '[{"version": 1}]'})
    await refused(await upload(dist, fields=fields), 400, "ttestation")
    assert (await stored_counts(cheeseshop_services))["files"] == 0


async def test_nul_in_metadata_400(upload, cheeseshop_services, subtests):
    # PostgreSQL cannot store a NUL in text: refused with a message, never a 500.
    dist = wheel()
    for field in ("summary", "author", "description", "classifiers", "keywords"):
        with subtests.test(field=field):
            fields = upload_fields(dist, overrides={field: "bad\x00value"})
            await refused(await upload(dist, fields=fields), 400, field, "NUL")
    assert (await stored_counts(cheeseshop_services))["files"] == 0


async def test_several_form_problems_reported_at_once(upload):
    dist = wheel()
    fields = upload_fields(
        dist, overrides={"metadata_version": "2.0", "sha256_digest": "xyz", "blake2_256_digest": None}
    )
    await refused(await upload(dist, fields=fields), 400, "metadata_version", "sha256_digest")


# -- plugins --------------------------------------------------------------------------------


class _Refuser:
    def __init__(self) -> None:
        self.seen: list[cheeseshop.UploadCandidate] = []
        self.contents: list[bytes] = []

    @cheeseshop.hookimpl
    def cheeseshop_validate_upload(self, candidate, settings):
        self.seen.append(candidate)
        self.contents.append(candidate.path.read_bytes())
        raise cheeseshop.UploadRejected("nope")


_REFUSER = _Refuser()


@pytest.mark.parametrize("cheeseshop_plugins", [[("refuser", _REFUSER)]], ids=["refuser"])
async def test_validate_upload_hook_refuses(upload, cheeseshop_services, cheeseshop_plugins):
    _REFUSER.seen.clear()
    _REFUSER.contents.clear()
    dist = wheel()
    message = await refused(await upload(dist), 400, explains=False)
    assert message == "nope"
    assert [c.filename for c in _REFUSER.seen] == [dist.filename]
    assert _REFUSER.contents == [dist.content]  # a file in memory is written out for the hook
    candidate = _REFUSER.seen[0]
    assert candidate.sha256 == dist.sha256
    assert candidate.new_project is True
    assert candidate.username == "alice"
    state = await stored_counts(cheeseshop_services)
    assert state["files"] == 0 and state["projects"] == 0 and state["registry"] == 0
    assert stored_files(cheeseshop_services) == []
    assert temporary_files(cheeseshop_services) == []
