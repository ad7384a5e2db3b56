"""API tokens as macaroons: pure creation and verification, no database.

A token is ``<prefix><serialized macaroon>``. The macaroon's identifier is the token's
id (its database row holds the root key, so a token is revoked by deleting or marking
the row); its first-party caveats are JSON objects:

- ``{"user_id": 7}`` — the token acts for this user only;
- ``{"projects": ["name", ...]}`` — only these projects (normalized names);
- ``{"nbf": 1700000000, "exp": 1700086400}`` — valid only within this time window.

An unknown caveat fails verification: a token minted by a newer version with a
restriction this version cannot check is refused rather than over-trusted.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from datetime import datetime
from typing import Any

from pymacaroons import Macaroon, Verifier
from pymacaroons.exceptions import MacaroonException

__all__ = ["InvalidToken", "TokenClaims", "mint", "new_key", "parse_identifier", "verify"]

LOCATION = "cheeseshop"


class InvalidToken(ValueError):
    """The token is malformed, forged, expired or for someone else."""


@dataclasses.dataclass(frozen=True)
class TokenClaims:
    """What a verified token allows."""

    token_id: str
    user_id: int
    projects: tuple[str, ...] | None
    expires: datetime | None

    def allows_project(self, normalized_name: str) -> bool:
        """Whether the token may act on this project (unscoped tokens may act on any)."""
        return self.projects is None or normalized_name in self.projects


def new_key() -> str:
    """A fresh random root key (hex) for one token."""
    return secrets.token_hex(32)


def mint(
    *,
    prefix: str,
    token_id: str,
    key: str,
    user_id: int,
    projects: list[str] | None = None,
    not_before: datetime | None = None,
    expires: datetime | None = None,
) -> str:
    """Serialize a new token with its caveats."""
    macaroon = Macaroon(location=LOCATION, identifier=token_id, key=key)
    macaroon.add_first_party_caveat(json.dumps({"user_id": user_id}))
    if projects is not None:
        macaroon.add_first_party_caveat(json.dumps({"projects": sorted(projects)}))
    if expires is not None:
        window = {"nbf": int((not_before or datetime.fromtimestamp(0)).timestamp()),
                  "exp": int(expires.timestamp())}
        macaroon.add_first_party_caveat(json.dumps(window))
    return prefix + macaroon.serialize()


def parse_identifier(token: str, *, prefix: str) -> tuple[str, Macaroon]:
    """The token id and the macaroon, before verification (to look the key up)."""
    if not token.startswith(prefix):
        raise InvalidToken(f"not an API token (API tokens start with {prefix!r})")
    try:
        macaroon = Macaroon.deserialize(token[len(prefix) :])
        identifier = macaroon.identifier
    except Exception as error:  # pymacaroons raises struct.error and bare Exception too
        raise InvalidToken("malformed API token") from error
    if isinstance(identifier, bytes):
        identifier = identifier.decode("utf-8", "replace")
    return identifier, macaroon


def verify(macaroon: Macaroon, *, token_id: str, key: str, user_id: int, now: datetime) -> TokenClaims:
    """Check the signature and every caveat; return what the token allows."""
    found: dict[str, Any] = {"projects": None, "expires": None}

    def check(caveat: str) -> bool:
        try:
            data = json.loads(caveat)
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        if set(data) == {"user_id"}:
            return data["user_id"] == user_id
        if set(data) == {"projects"}:
            projects = data["projects"]
            if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
                return False
            previous = found["projects"]
            # Several project caveats narrow each other.
            found["projects"] = set(projects) if previous is None else previous & set(projects)
            return True
        if set(data) == {"nbf", "exp"}:
            if not all(isinstance(data[k], int) for k in ("nbf", "exp")):
                return False
            found["expires"] = datetime.fromtimestamp(data["exp"], tz=now.tzinfo)
            return data["nbf"] <= now.timestamp() < data["exp"]
        return False

    verifier = Verifier()
    verifier.satisfy_general(check)
    try:
        verifier.verify(macaroon, key)
    except MacaroonException as error:
        raise InvalidToken("invalid or expired API token") from error
    except Exception as error:  # pymacaroons raises bare errors on some bad inputs
        raise InvalidToken("invalid API token") from error
    projects = found["projects"]
    return TokenClaims(
        token_id=token_id,
        user_id=user_id,
        projects=None if projects is None else tuple(sorted(projects)),
        expires=found["expires"],
    )
