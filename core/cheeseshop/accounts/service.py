"""Account operations on the database: users, tokens, roles, authentication."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pymacaroons import Macaroon
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cheeseshop.accounts import tokens
from cheeseshop.accounts.passwords import hash_password
from cheeseshop.db import Executor
from cheeseshop.db.prepared import Prepared
from cheeseshop.db.models import ApiToken, Email, Project, Role, RoleName, User, utcnow
from cheeseshop.packaging.names import normalize

__all__ = [
    "Account",
    "AccountError",
    "AuthenticationFailed",
    "Principal",
    "TOKEN_COLUMNS",
    "authenticate",
    "authenticate_token",
    "check_token",
    "create_token",
    "create_user",
    "presented_token",
    "revoke_token",
    "role_for",
]

USERNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Token ids are str(uuid4()); anything else is refused before it reaches the database
# (PostgreSQL rejects a NUL byte in text with an error, not a miss).
TOKEN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class AccountError(ValueError):
    """A request about an account cannot be carried out; the message says why."""


class AuthenticationFailed(Exception):
    """Credentials were given but are not valid."""


@dataclasses.dataclass(frozen=True)
class Account:
    """The user a request acts for, as far as a request needs to know."""

    id: int
    username: str


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is making a request, and what their token allows."""

    user: Account
    claims: tokens.TokenClaims

    def allows_project(self, normalized_name: str) -> bool:
        """Whether the token may act on this project at all (roles are checked apart)."""
        return self.claims.allows_project(normalized_name)


async def create_user(
    session: AsyncSession,
    username: str,
    *,
    email: str,
    password: str,
    password_hash: str | None = None,
) -> User:
    """Create an active user with one primary e-mail address.

    ``password_hash`` takes an existing argon2 hash of ``password`` instead of hashing it
    again (importing accounts; the test kit, which makes many users with one password).
    It is trusted as given: checking it would cost as much as hashing.
    """
    # fullmatch: "$" alone would accept a trailing newline.
    if not USERNAME.fullmatch(username):
        raise AccountError(
            "username must be 1-50 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    if not EMAIL.fullmatch(email):
        raise AccountError(f"{email!r} is not a valid e-mail address")
    if len(password) < 8:
        raise AccountError("password must be at least 8 characters")
    taken = await session.scalar(select(User.id).where(func.lower(User.username) == username.lower()))
    if taken is not None:
        raise AccountError(f"username {username!r} is already taken")
    if await session.scalar(select(Email.id).where(func.lower(Email.email) == email.lower())):
        raise AccountError(f"e-mail address {email!r} is already in use")
    if password_hash is None:
        # argon2 takes a few hundred milliseconds of CPU: keep it off the event loop.
        password_hash = await asyncio.to_thread(hash_password, password)
    user = User(username=username, password_hash=password_hash, password_changed=utcnow())
    session.add(user)
    await session.flush()
    session.add(Email(user_id=user.id, email=email, primary=True, verified=False))
    await session.flush()
    return user


async def user_by_name(session: AsyncSession, username: str) -> User | None:
    """The user with this username (case-insensitive), or None."""
    return await session.scalar(select(User).where(func.lower(User.username) == username.lower()))


#: Longest token description kept (the column's size).
TOKEN_DESCRIPTION_LENGTH = 200


async def create_token(
    session: AsyncSession,
    user: User,
    *,
    prefix: str,
    description: str = "",
    projects: list[str] | None = None,
    expires_in: timedelta | None = None,
) -> tuple[ApiToken, str]:
    """Create an API token row and mint its macaroon; returns (row, token string).

    ``projects`` scopes the token to those projects (each must exist and the user must
    hold a role on it); ``None`` makes a user-wide token.
    """
    if len(description) > TOKEN_DESCRIPTION_LENGTH:
        raise AccountError(
            f"the description is {len(description)} characters long; shorten it to "
            f"{TOKEN_DESCRIPTION_LENGTH} or fewer"
        )
    scoped: list[str] | None = None
    if projects is not None:
        scoped = []
        for name in projects:
            normalized = normalize(name)
            project = await session.scalar(select(Project).where(Project.normalized_name == normalized))
            if project is None:
                raise AccountError(f"no project named {name!r}")
            if await role_for(session, user, project) is None:
                raise AccountError(f"{user.username} has no role on project {project.name!r}")
            scoped.append(normalized)
    now = utcnow()
    expires = now + expires_in if expires_in is not None else None
    row = ApiToken(
        id=str(uuid.uuid4()),
        user_id=user.id,
        description=description,
        key=tokens.new_key(),
        projects=scoped,
        created=now,
        expires=expires,
    )
    session.add(row)
    await session.flush()
    raw = tokens.mint(
        prefix=prefix,
        token_id=row.id,
        key=row.key,
        user_id=user.id,
        projects=scoped,
        not_before=now - timedelta(seconds=60) if expires else None,
        expires=expires,
    )
    return row, raw


async def revoke_token(session: AsyncSession, token_id: str, *, user: User) -> None:
    """Revoke one of ``user``'s tokens; another user's token id is reported as missing."""
    row = await session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise AccountError(f"no token {token_id!r}")
    row.revoked = row.revoked or utcnow()


#: What authenticating reads of a token and its user, in the order :func:`check_token`
#: takes them. Columns, not entities: loading two ORM objects cost more than the rest of
#: authenticating. A statement that reads more (the upload's) selects these first.
TOKEN_COLUMNS = (ApiToken.key, ApiToken.user_id, ApiToken.revoked, ApiToken.expires, User.username, User.is_active)
_TOKEN_AND_USER = Prepared(
    select(*TOKEN_COLUMNS).join(User, User.id == ApiToken.user_id).where(ApiToken.id == bindparam("token_id"))
)


async def authenticate_token(
    session: AsyncSession, raw: str, *, prefix: str, now: datetime | None = None
) -> Principal:
    """Verify an API token against its database row; raise AuthenticationFailed."""
    return await session.run_sync(authenticate, raw, prefix=prefix, now=now)


def authenticate(executor: Executor, raw: str, *, prefix: str, now: datetime | None = None) -> Principal:
    """:func:`authenticate_token` for synchronous work (``Database.run_core``)."""
    token_id, macaroon = presented_token(raw, prefix=prefix)
    # One round trip for the token and its user: this runs on every upload.
    row = _TOKEN_AND_USER.first(executor, {"token_id": token_id})
    return check_token(row, token_id=token_id, macaroon=macaroon, now=now or utcnow())


def presented_token(raw: str, *, prefix: str) -> tuple[str, Macaroon]:
    """The token id and macaroon of a presented token, before its row is read; raise
    AuthenticationFailed for one that cannot be ours."""
    try:
        token_id, macaroon = tokens.parse_identifier(raw, prefix=prefix)
    except tokens.InvalidToken as error:
        raise AuthenticationFailed(str(error)) from None
    if not TOKEN_ID.fullmatch(token_id):
        raise AuthenticationFailed("invalid or revoked API token")
    return token_id, macaroon


def check_token(
    row: Sequence[Any] | None, *, token_id: str, macaroon: Macaroon, now: datetime
) -> Principal:
    """The principal of a presented token, given its row (:data:`TOKEN_COLUMNS`, None when
    there is none); raise AuthenticationFailed. Pure."""
    if row is None:
        raise AuthenticationFailed("invalid or revoked API token")
    key, user_id, revoked, expires, username, is_active = row
    if revoked is not None:
        raise AuthenticationFailed("invalid or revoked API token")
    if expires is not None and expires <= now:
        raise AuthenticationFailed("API token expired")
    try:
        claims = tokens.verify(macaroon, token_id=token_id, key=key, user_id=user_id, now=now)
    except tokens.InvalidToken as error:
        raise AuthenticationFailed(str(error)) from None
    if not is_active:
        raise AuthenticationFailed("the account of this API token is disabled")
    return Principal(user=Account(user_id, username), claims=claims)


async def role_for(session: AsyncSession, user: User, project: Project) -> RoleName | None:
    """The user's role on the project, or None."""
    name = await session.scalar(
        select(Role.role_name).where(Role.user_id == user.id, Role.project_id == project.id)
    )
    return RoleName(name) if name else None
