"""Accounts on the database: users, passwords, API tokens, authentication."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from argon2 import extract_parameters
from pymacaroons import Macaroon
from sqlalchemy import func, select

from cheeseshop.accounts import tokens
from cheeseshop.accounts.passwords import hash_password, needs_rehash, verify_password
from cheeseshop.accounts.service import (
    AccountError,
    AuthenticationFailed,
    Principal,
    authenticate_token,
    create_token,
    create_user,
    revoke_token,
    user_by_name,
)
from cheeseshop.db.models import ApiToken, Email, Project, Role, RoleName, User, utcnow
from cheeseshop.services import Services

PASSWORD = "password123"
PREFIX = "cheeseshop-"


async def _user(services: Services, username: str = "alice", **kwargs: str) -> User:
    async with services.db.write() as session:
        return await create_user(
            session,
            username,
            email=kwargs.get("email", f"{username}@example.com"),
            password=kwargs.get("password", PASSWORD),
        )


async def _token(services: Services, username: str = "alice", **kwargs: object) -> tuple[str, str]:
    """(token id, raw token) of a new token of ``username``."""
    async with services.db.write() as session:
        user = await user_by_name(session, username)
        assert user is not None
        row, raw = await create_token(session, user, prefix=PREFIX, **kwargs)  # type: ignore[arg-type]
        return row.id, raw


async def _authenticate(services: Services, raw: str, **kwargs: object) -> Principal:
    async with services.db.read() as session:
        return await authenticate_token(session, raw, prefix=PREFIX, **kwargs)  # type: ignore[arg-type]


async def _project(services: Services, name: str, *, owner: str | None = None) -> None:
    async with services.db.write() as session:
        project = Project(name=name, normalized_name=name.lower())
        session.add(project)
        await session.flush()
        if owner is not None:
            user = await user_by_name(session, owner)
            assert user is not None
            session.add(
                Role(user_id=user.id, project_id=project.id, role_name=RoleName.OWNER.value)
            )


async def _count_users(services: Services) -> int:
    async with services.db.read() as session:
        return await session.scalar(select(func.count()).select_from(User)) or 0


# -- users ------------------------------------------------------------------------------


async def test_create_user(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services, "Alice.Smith-2", email="Alice@Example.com")
    async with cheeseshop_services.db.read() as session:
        user = await user_by_name(session, "alice.smith-2")
        assert user is not None
        assert user.username == "Alice.Smith-2"
        assert user.is_active and not user.is_superuser
        emails = (await session.scalars(select(Email).where(Email.user_id == user.id))).all()
        assert [(e.email, e.primary, e.verified) for e in emails] == [
            ("Alice@Example.com", True, False)
        ]


@pytest.mark.parametrize(
    "username",
    ["", "-alice", "alice-", ".alice", "al ice", "alice!", "a" * 51, "ålice", "alice\n"],
    ids=repr,
)
async def test_bad_username(cheeseshop_services: Services, username: str) -> None:
    with pytest.raises(AccountError, match="username"):
        await _user(cheeseshop_services, username, email="a@example.com")
    assert await _count_users(cheeseshop_services) == 0


async def test_longest_and_shortest_usernames(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services, "a" * 50)
    await _user(cheeseshop_services, "b")
    assert await _count_users(cheeseshop_services) == 2


@pytest.mark.parametrize(
    "email",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "al ice@example.com",
        "a@b@c.com",
        "a@example.com\n",
    ],
    ids=repr,
)
async def test_bad_email(cheeseshop_services: Services, email: str) -> None:
    with pytest.raises(AccountError, match="e-mail"):
        await _user(cheeseshop_services, "alice", email=email)
    assert await _count_users(cheeseshop_services) == 0


async def test_short_password(cheeseshop_services: Services) -> None:
    with pytest.raises(AccountError, match="password"):
        await _user(cheeseshop_services, "alice", password="1234567")
    await _user(cheeseshop_services, "alice", password="12345678")


async def test_duplicate_username_differing_in_case(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services, "Alice", email="first@example.com")
    with pytest.raises(AccountError, match="already taken"):
        await _user(cheeseshop_services, "aLICE", email="second@example.com")
    assert await _count_users(cheeseshop_services) == 1


async def test_duplicate_email_differing_in_case(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services, "alice", email="shared@example.com")
    with pytest.raises(AccountError, match="already in use"):
        await _user(cheeseshop_services, "bob", email="Shared@Example.COM")
    assert await _count_users(cheeseshop_services) == 1


# -- passwords --------------------------------------------------------------------------


async def test_password_is_stored_as_strong_argon2id(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services)
    async with cheeseshop_services.db.read() as session:
        user = await user_by_name(session, "alice")
        assert user is not None
        stored = user.password_hash
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    fields = dict(part.split("=") for part in stored.split("$")[3].split(","))
    assert int(fields["m"]) >= 19456  # OWASP's minimum for argon2id, in KiB
    assert int(fields["t"]) >= 2
    assert extract_parameters(stored).type.name == "ID"
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "x")
    assert not verify_password(stored, "")
    assert not needs_rehash(stored)


def test_same_password_hashes_differently() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second
    assert verify_password(first, PASSWORD) and verify_password(second, PASSWORD)


@pytest.mark.parametrize("stored", ["", "plaintext", "$argon2id$v=19$m=65536,t=3,p=4$bad"])
def test_verify_against_a_malformed_hash_is_false(stored: str) -> None:
    assert verify_password(stored, PASSWORD) is False


def test_weak_hash_needs_rehash() -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    assert verify_password(weak, PASSWORD)
    assert needs_rehash(weak)


# -- tokens -----------------------------------------------------------------------------


async def test_valid_token_authenticates(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services)
    token_id, raw = await _token(cheeseshop_services, description="CI")
    assert raw.startswith(PREFIX)
    principal = await _authenticate(cheeseshop_services, raw)
    assert isinstance(principal, Principal)
    assert principal.user.username == "alice"
    assert principal.claims.token_id == token_id
    assert principal.claims.user_id == principal.user.id
    assert principal.claims.projects is None
    assert principal.allows_project("anything")


async def test_token_key_is_stored_but_not_the_token(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services)
    token_id, raw = await _token(cheeseshop_services)
    async with cheeseshop_services.db.read() as session:
        row = await session.get(ApiToken, token_id)
        assert row is not None
        assert row.revoked is None and row.expires is None
        assert row.key not in raw


async def test_project_token_for_a_project_without_a_role(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services, "alice")
    await _user(cheeseshop_services, "bob")
    await _project(cheeseshop_services, "Hello", owner="bob")
    with pytest.raises(AccountError, match="no role"):
        await _token(cheeseshop_services, "alice", projects=["hello"])
    async with cheeseshop_services.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ApiToken)) == 0


async def test_project_token_for_a_missing_project(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services)
    with pytest.raises(AccountError, match="no project named 'nothing-here'"):
        await _token(cheeseshop_services, projects=["nothing-here"])


async def test_project_token_is_scoped(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services)
    await _project(cheeseshop_services, "Hello", owner="alice")
    await _project(cheeseshop_services, "Other", owner="alice")
    _, raw = await _token(cheeseshop_services, projects=["HELLO"])
    principal = await _authenticate(cheeseshop_services, raw)
    assert principal.claims.projects == ("hello",)
    assert principal.allows_project("hello")
    assert not principal.allows_project("other")


async def test_revoked_token_fails_on_the_next_call(cheeseshop_services: Services) -> None:
    alice = await _user(cheeseshop_services)
    token_id, raw = await _token(cheeseshop_services)
    await _authenticate(cheeseshop_services, raw)
    async with cheeseshop_services.db.write() as session:
        await revoke_token(session, token_id, user=alice)
    with pytest.raises(AuthenticationFailed):
        await _authenticate(cheeseshop_services, raw)


async def test_other_tokens_survive_a_revocation(cheeseshop_services: Services) -> None:
    alice = await _user(cheeseshop_services)
    revoked_id, _ = await _token(cheeseshop_services)
    _, kept = await _token(cheeseshop_services)
    async with cheeseshop_services.db.write() as session:
        await revoke_token(session, revoked_id, user=alice)
    assert (await _authenticate(cheeseshop_services, kept)).user.username == "alice"


async def test_revoking_another_users_token(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services, "alice")
    mallory = await _user(cheeseshop_services, "mallory")
    token_id, raw = await _token(cheeseshop_services, "alice")
    async with cheeseshop_services.db.write() as session:
        with pytest.raises(AccountError, match="no token"):
            await revoke_token(session, token_id, user=mallory)
    assert (await _authenticate(cheeseshop_services, raw)).user.username == "alice"


async def test_revoking_a_missing_token(cheeseshop_services: Services) -> None:
    alice = await _user(cheeseshop_services)
    async with cheeseshop_services.db.write() as session:
        with pytest.raises(AccountError):
            await revoke_token(session, "00000000-0000-0000-0000-000000000000", user=alice)


async def test_expired_token(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services)
    _, raw = await _token(cheeseshop_services, expires_in=timedelta(seconds=-1))
    with pytest.raises(AuthenticationFailed, match="expired"):
        await _authenticate(cheeseshop_services, raw)


async def test_token_expires_at_its_time(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services)
    _, raw = await _token(cheeseshop_services, expires_in=timedelta(hours=1))
    principal = await _authenticate(cheeseshop_services, raw, now=utcnow() + timedelta(minutes=59))
    assert principal.claims.expires is not None
    with pytest.raises(AuthenticationFailed):
        await _authenticate(cheeseshop_services, raw, now=utcnow() + timedelta(hours=1, minutes=1))


async def test_macaroon_expiry_holds_without_the_row(cheeseshop_services: Services) -> None:
    # The row's expiry is for display and fast refusal; the signed window is what counts.
    await _user(cheeseshop_services)
    token_id, raw = await _token(cheeseshop_services, expires_in=timedelta(hours=1))
    async with cheeseshop_services.db.write() as session:
        row = await session.get(ApiToken, token_id)
        assert row is not None
        row.expires = None
    with pytest.raises(AuthenticationFailed):
        await _authenticate(cheeseshop_services, raw, now=utcnow() + timedelta(hours=2))


async def test_disabled_user(cheeseshop_services: Services) -> None:
    await _user(cheeseshop_services)
    _, raw = await _token(cheeseshop_services)
    async with cheeseshop_services.db.write() as session:
        user = await user_by_name(session, "alice")
        assert user is not None
        user.is_active = False
    with pytest.raises(AuthenticationFailed, match="disabled"):
        await _authenticate(cheeseshop_services, raw)


async def test_token_signed_with_another_key(cheeseshop_services: Services) -> None:
    alice = await _user(cheeseshop_services)
    token_id, _ = await _token(cheeseshop_services)
    forged = tokens.mint(prefix=PREFIX, token_id=token_id, key=tokens.new_key(), user_id=alice.id)
    with pytest.raises(AuthenticationFailed):
        await _authenticate(cheeseshop_services, forged)


async def test_token_moved_to_another_user(cheeseshop_services: Services) -> None:
    # A row's key signs for the row's user only, even if the macaroon names someone else.
    await _user(cheeseshop_services, "alice")
    bob = await _user(cheeseshop_services, "bob")
    token_id, _ = await _token(cheeseshop_services, "alice")
    async with cheeseshop_services.db.read() as session:
        row = await session.get(ApiToken, token_id)
        assert row is not None
        key = row.key
    forged = tokens.mint(prefix=PREFIX, token_id=token_id, key=key, user_id=bob.id)
    with pytest.raises(AuthenticationFailed):
        await _authenticate(cheeseshop_services, forged)


@pytest.mark.parametrize(
    "identifier",
    ["00000000-0000-0000-0000-000000000000", "x" * 37, "", "nul\x00byte", "ünïcode"],
    ids=repr,
)
async def test_unknown_token_id(cheeseshop_services: Services, identifier: str) -> None:
    await _user(cheeseshop_services)
    await _token(cheeseshop_services)
    macaroon = Macaroon(location="cheeseshop", identifier=identifier, key=tokens.new_key())
    macaroon.add_first_party_caveat(json.dumps({"user_id": 1}))
    with pytest.raises(AuthenticationFailed):
        await _authenticate(cheeseshop_services, PREFIX + macaroon.serialize())


@pytest.mark.parametrize(
    "raw", ["", "pypi-AgEIcHlwaS5vcmc", PREFIX, PREFIX + "MD", PREFIX + "not a token"]
)
async def test_malformed_token(cheeseshop_services: Services, raw: str) -> None:
    with pytest.raises(AuthenticationFailed):
        await _authenticate(cheeseshop_services, raw)
