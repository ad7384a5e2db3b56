"""The index read made with the token's, before the file arrives (``KnownState``).

When the form names the project, version and blake2_256 digest before its file (every
client's does), what the index holds for the upload is read in the token's round trip.
It stands in for the read after the file arrived only when the file, name and version
that arrived ask the very same question; else, and after a lost race, the index is read
again. Both statements must answer alike: checked here on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest
from sqlalchemy import Connection

import cheeseshop.upload.service as service
from cheeseshop.accounts.service import presented_token
from cheeseshop.packaging.names import confusable_fold
from cheeseshop.testing.dists import build_sdist, build_wheel
from cheeseshop.testing.upload import upload_fields
from cheeseshop.upload.lookup import IndexQuestion, index_state, token_and_project_limits


def _blake2(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=32).hexdigest()


@pytest.fixture
def index_reads(monkeypatch: pytest.MonkeyPatch) -> list[IndexQuestion]:
    """The questions the upload asked by the read after its file arrived."""
    asked: list[IndexQuestion] = []

    def counting(session: Any, question: IndexQuestion, user_id: int) -> Any:
        asked.append(question)
        return index_state(session, question, user_id)

    monkeypatch.setattr(service, "index_state", counting)
    return asked


# -- the form's question --------------------------------------------------------------------


def test_the_forms_question_is_the_one_the_checked_upload_asks() -> None:
    fields = {"name": [" Hello.World "], "version": ["1.0.0"], "blake2_256_digest": ["AB" * 32]}
    assert service.question_from_form(fields, "hello_world-1.0.0.tar.gz") == IndexQuestion(
        filename="hello_world-1.0.0.tar.gz",
        blake2_256="ab" * 32,
        normalized_name="hello-world",
        ultranormalized_name=confusable_fold("Hello.World"),
        canonical_version="1",
    )


@pytest.mark.parametrize(
    "change",
    [
        {"name": []},
        {"name": ["not a name!"]},
        {"version": []},
        {"version": ["one"]},
        {"blake2_256_digest": []},
        {"blake2_256_digest": ["ab\0"]},
    ],
    ids=["no-name", "bad-name", "no-version", "bad-version", "no-digest", "nul-digest"],
)
def test_no_question_from_a_form_that_lacks_or_garbles_a_part(change: dict[str, list[str]]) -> None:
    fields = {"name": ["hello"], "version": ["1.0"], "blake2_256_digest": ["ab" * 32]} | change
    assert service.question_from_form(fields, "hello-1.0.tar.gz") is None


def test_no_question_for_a_filename_with_nul() -> None:
    fields = {"name": ["hello"], "version": ["1.0"], "blake2_256_digest": ["ab" * 32]}
    assert service.question_from_form(fields, "hello-1.0.tar.gz\0.exe") is None


# -- the two statements answer alike ---------------------------------------------------------


async def test_the_token_statement_answers_as_the_index_read_does(
    upload: Any, make_token: Any, cheeseshop_services: Any
) -> None:
    token = await make_token("alice")
    wheel, sdist = build_wheel("alike", "1.0"), build_sdist("alike", "1.0")
    for dist in (wheel, sdist):
        assert (await upload(dist, token=token)).status_code == 200
    prefix = cheeseshop_services.settings.token_prefix
    token_id, _ = presented_token(token, prefix=prefix)
    other = build_wheel("alike", "2.0")
    questions = [
        # the same file again; the same bytes under another name; a used filename with
        # other bytes; a new file of an existing release with an sdist; a new project
        # whose name folds like an existing one's; a project that does not exist at all
        IndexQuestion(wheel.filename, _blake2(wheel.content), "alike", confusable_fold("alike"), "1"),
        IndexQuestion("alike-1.0-py2-none-any.whl", _blake2(wheel.content), "alike", confusable_fold("alike"), "1"),
        IndexQuestion(sdist.filename, _blake2(other.content), "alike", confusable_fold("alike"), "1"),
        IndexQuestion(other.filename, _blake2(other.content), "alike", confusable_fold("alike"), "1"),
        IndexQuestion("a1ike-1.0.tar.gz", _blake2(b"new"), "a1ike", confusable_fold("a1ike"), "1"),
        IndexQuestion("fresh-1.0.tar.gz", _blake2(b"fresh"), "fresh", confusable_fold("fresh"), "1"),
    ]

    def both(connection: Connection) -> list[tuple[Any, Any]]:
        answers = []
        for question in questions:
            row, _, early = token_and_project_limits(connection, token_id, question.normalized_name, question)
            assert row is not None
            answers.append((early, index_state(connection, question, user_id=row[1])))
        return answers

    answers = await cheeseshop_services.db.run_core(both)
    for early, later in answers:
        assert early == later
    states = [later for _, later in answers]
    assert states[0].same_name_digest == _blake2(wheel.content) and states[0].role == "Owner"
    assert states[1].same_bytes_filename == wheel.filename
    assert states[2].filename_used and states[3].release_has_sdist and not states[3].filename_used
    assert states[4].project_name is None and states[4].similar_name == "alike"
    assert states[5].project_name is None and states[5].similar_name is None


# -- the upload uses it only when it is its own ----------------------------------------------


async def test_an_upload_that_names_its_digest_reads_the_index_with_its_token(
    upload: Any, make_token: Any, index_reads: list[IndexQuestion]
) -> None:
    token = await make_token("alice")
    dist = build_wheel("early-read", "1.0")
    assert (await upload(dist, token=token)).status_code == 200
    assert index_reads == []
    again = await upload(dist, token=token)  # the same bytes: known committed, nothing done
    assert again.status_code == 200 and index_reads == []
    other = build_wheel("early-read", "1.0", summary="other bytes")
    refused = await upload(other, token=token)
    assert refused.status_code == 400 and "different contents" in await refused.get_data(as_text=True)
    assert index_reads == []


async def test_without_the_digest_the_index_is_read_after_the_file(
    upload: Any, make_token: Any, index_reads: list[IndexQuestion]
) -> None:
    dist = build_wheel("late-read", "1.0")
    response = await upload(dist, token=await make_token("alice"), fields=upload_fields(dist, overrides={"blake2_256_digest": None}))
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert [question.filename for question in index_reads] == [dist.filename]


async def test_a_digest_in_upper_case_asks_the_same_question(
    upload: Any, make_token: Any, index_reads: list[IndexQuestion]
) -> None:
    dist = build_wheel("upper-digest", "1.0")
    fields = upload_fields(dist, overrides={"blake2_256_digest": _blake2(dist.content).upper()})
    response = await upload(dist, token=await make_token("alice"), fields=fields)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert index_reads == []


async def test_after_a_lost_race_the_index_is_read_again(
    upload: Any, make_token: Any, index_reads: list[IndexQuestion], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both uploads read, with their tokens, that the project does not exist; the one
    # whose insert of it collides must read the index again to find the racer's project.
    original = service.insert_project

    def slow_insert(session: Any, **values: Any) -> int:
        project_id = original(session, **values)
        time.sleep(0.1)  # hold it uncommitted while the other upload reaches its insert
        return project_id

    monkeypatch.setattr(service, "insert_project", slow_insert)
    token = await make_token("alice")
    pair = [build_wheel("raced", "1.0"), build_sdist("raced", "1.0")]
    responses = await asyncio.gather(*(upload(dist, token=token) for dist in pair))
    assert [response.status_code for response in responses] == [200, 200]
    assert len(index_reads) == 1 and index_reads[0].normalized_name == "raced"


async def test_read_with_the_token_also_when_it_is_read_as_the_file_starts(
    cheeseshop_client: Any, make_token: Any, index_reads: list[IndexQuestion]
) -> None:
    # No declared length (a chunked body): the token is read when the file part starts,
    # and the index with it, as for a body received whole.
    import base64

    from cheeseshop.testing.upload import encode_multipart

    dist = build_wheel("streamed", "1.0")
    body, content_type = encode_multipart(
        upload_fields(dist), [("content", dist.filename, dist.content, "application/octet-stream")]
    )
    credentials = base64.b64encode(f"__token__:{await make_token('alice')}".encode()).decode()
    headers = {"Content-Type": content_type, "Authorization": f"Basic {credentials}"}
    response = await cheeseshop_client.post("/legacy/", data=body, headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert index_reads == []
