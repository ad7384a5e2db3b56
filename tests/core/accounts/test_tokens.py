"""API tokens as macaroons: minted and verified without a database."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from pymacaroons import Macaroon

from cheeseshop.accounts.tokens import (
    InvalidToken,
    TokenClaims,
    mint,
    new_key,
    parse_identifier,
    verify,
)

PREFIX = "cheeseshop-"
TOKEN_ID = "5a1e7c0e-2b9d-4a57-9d0f-3c6f1e0b8a11"
USER_ID = 7
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def key() -> str:
    return new_key()


def _mint(key: str, **kwargs: object) -> str:
    return mint(prefix=PREFIX, token_id=TOKEN_ID, key=key, user_id=USER_ID, **kwargs)  # type: ignore[arg-type]


def _verify(token: str, key: str, *, user_id: int = USER_ID, now: datetime = NOW) -> TokenClaims:
    token_id, macaroon = parse_identifier(token, prefix=PREFIX)
    return verify(macaroon, token_id=token_id, key=key, user_id=user_id, now=now)


def _macaroon(token: str) -> Macaroon:
    return Macaroon.deserialize(token.removeprefix(PREFIX))


def _signed(key: str, *caveats: object) -> str:
    """A token correctly signed with ``key`` carrying exactly these caveats."""
    macaroon = Macaroon(location="cheeseshop", identifier=TOKEN_ID, key=key)
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat if isinstance(caveat, str) else json.dumps(caveat))
    return PREFIX + macaroon.serialize()


# -- round trip -------------------------------------------------------------------------


def test_new_keys_are_random_and_long(key: str) -> None:
    assert len(bytes.fromhex(key)) == 32
    assert new_key() != key


def test_round_trip_of_an_unscoped_token(key: str) -> None:
    token = _mint(key)
    assert token.startswith(PREFIX)
    assert parse_identifier(token, prefix=PREFIX)[0] == TOKEN_ID
    claims = _verify(token, key)
    assert claims == TokenClaims(token_id=TOKEN_ID, user_id=USER_ID, projects=None, expires=None)
    assert claims.allows_project("anything")


def test_round_trip_with_every_claim(key: str) -> None:
    expires = NOW + timedelta(days=30)
    token = _mint(
        key, projects=["zeta", "alpha"], not_before=NOW - timedelta(minutes=1), expires=expires
    )
    claims = _verify(token, key)
    assert claims.token_id == TOKEN_ID
    assert claims.user_id == USER_ID
    assert claims.projects == ("alpha", "zeta")
    assert claims.expires == expires


def test_project_caveat_narrows(key: str) -> None:
    claims = _verify(_mint(key, projects=["hello-world"]), key)
    assert claims.allows_project("hello-world")
    assert not claims.allows_project("other")
    assert not claims.allows_project("hello")


def test_empty_project_list_allows_nothing(key: str) -> None:
    claims = _verify(_mint(key, projects=[]), key)
    assert claims.projects == ()
    assert not claims.allows_project("hello-world")


# -- refused ----------------------------------------------------------------------------


def test_wrong_key(key: str) -> None:
    with pytest.raises(InvalidToken):
        _verify(_mint(key), new_key())


def test_another_user(key: str) -> None:
    with pytest.raises(InvalidToken):
        _verify(_mint(key), key, user_id=USER_ID + 1)


def test_edited_caveat_that_widens_breaks_the_signature(key: str) -> None:
    macaroon = _macaroon(_mint(key, projects=["mine"]))
    [scope] = [c for c in macaroon.caveats if "projects" in c.caveat_id]
    scope.caveat_id = json.dumps({"projects": ["mine", "theirs"]})
    with pytest.raises(InvalidToken):
        _verify(PREFIX + macaroon.serialize(), key)


def test_removed_caveat_breaks_the_signature(key: str) -> None:
    macaroon = _macaroon(_mint(key, projects=["mine"]))
    macaroon.caveats = [c for c in macaroon.caveats if "projects" not in c.caveat_id]
    with pytest.raises(InvalidToken):
        _verify(PREFIX + macaroon.serialize(), key)


def test_edited_identifier_breaks_the_signature(key: str) -> None:
    macaroon = _macaroon(_mint(key))
    macaroon.identifier = "00000000-0000-0000-0000-000000000000"
    token = PREFIX + macaroon.serialize()
    assert parse_identifier(token, prefix=PREFIX)[0] == "00000000-0000-0000-0000-000000000000"
    with pytest.raises(InvalidToken):
        _verify(token, key)


def test_added_caveat_can_only_narrow(key: str) -> None:
    # Appending a caveat keeps the signature valid (that is how macaroons attenuate), so
    # a holder's widening caveat must be intersected, never trusted.
    macaroon = _macaroon(_mint(key, projects=["mine"]))
    macaroon.add_first_party_caveat(json.dumps({"projects": ["mine", "theirs"]}))
    claims = _verify(PREFIX + macaroon.serialize(), key)
    assert claims.allows_project("mine")
    assert not claims.allows_project("theirs")


def test_added_user_caveat_cannot_switch_user(key: str) -> None:
    macaroon = _macaroon(_mint(key))
    macaroon.add_first_party_caveat(json.dumps({"user_id": USER_ID + 1}))
    with pytest.raises(InvalidToken):
        _verify(PREFIX + macaroon.serialize(), key, user_id=USER_ID + 1)
    with pytest.raises(InvalidToken):
        _verify(PREFIX + macaroon.serialize(), key)


def test_added_window_cannot_revive_an_expired_token(key: str) -> None:
    macaroon = _macaroon(
        _mint(key, not_before=NOW - timedelta(days=2), expires=NOW - timedelta(days=1))
    )
    later = {
        "nbf": int((NOW - timedelta(days=3)).timestamp()),
        "exp": int((NOW + timedelta(days=3)).timestamp()),
    }
    macaroon.add_first_party_caveat(json.dumps(later))
    with pytest.raises(InvalidToken):
        _verify(PREFIX + macaroon.serialize(), key)


def test_expired(key: str) -> None:
    token = _mint(key, not_before=NOW - timedelta(hours=2), expires=NOW - timedelta(hours=1))
    with pytest.raises(InvalidToken):
        _verify(token, key)


def test_window_is_half_open(key: str) -> None:
    token = _mint(key, not_before=NOW, expires=NOW + timedelta(hours=1))
    assert _verify(token, key, now=NOW).expires == NOW + timedelta(hours=1)
    assert _verify(token, key, now=NOW + timedelta(minutes=59, seconds=59))
    with pytest.raises(InvalidToken):
        _verify(token, key, now=NOW + timedelta(hours=1))


def test_not_yet_valid(key: str) -> None:
    token = _mint(key, not_before=NOW + timedelta(hours=1), expires=NOW + timedelta(hours=2))
    with pytest.raises(InvalidToken):
        _verify(token, key)
    assert _verify(token, key, now=NOW + timedelta(hours=1, minutes=30))


@pytest.mark.parametrize(
    "caveat",
    [
        {"admin": True},
        {"user_id": USER_ID, "admin": True},
        {"projects": "mine"},
        {"projects": [1, 2]},
        {"nbf": 0},
        {"nbf": "0", "exp": "9999999999"},
        [USER_ID],
        "user_id = 7",
        "",
    ],
    ids=repr,
)
def test_unknown_or_malformed_caveat(key: str, caveat: object) -> None:
    token = _signed(key, {"user_id": USER_ID}, caveat)
    with pytest.raises(InvalidToken):
        _verify(token, key)


def test_correctly_signed_token_of_the_right_shape_verifies(key: str) -> None:
    # The counterpart of the test above: the caveats themselves, not _signed, are refused.
    assert _verify(_signed(key, {"user_id": USER_ID}), key).user_id == USER_ID


def test_third_party_caveat_is_refused(key: str) -> None:
    macaroon = _macaroon(_signed(key, {"user_id": USER_ID}))
    macaroon.add_third_party_caveat("https://auth.example", new_key(), "discharge-me")
    with pytest.raises(InvalidToken):
        _verify(PREFIX + macaroon.serialize(), key)


def test_wrong_prefix_names_the_prefix(key: str) -> None:
    token = mint(prefix="pypi-", token_id=TOKEN_ID, key=key, user_id=USER_ID)
    with pytest.raises(InvalidToken, match="'cheeseshop-'"):
        parse_identifier(token, prefix=PREFIX)


def _garbage() -> list[str]:
    rng = random.Random(20250601)
    valid = _mint(new_key(), projects=["mine"], expires=NOW + timedelta(days=1)).removeprefix(
        PREFIX
    )
    cases = ["", "!", "é", "\x00", "AAAA", "====", "MD", "ArY", "0" * 4, "null", "{}", " " + valid]
    cases += [valid[:i] for i in range(0, len(valid), 3)]  # every truncation length
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for _ in range(300):  # one changed character
        i = rng.randrange(len(valid))
        cases.append(valid[:i] + rng.choice(alphabet) + valid[i + 1 :])
    for _ in range(300):  # random bytes that decode as base64
        cases.append(
            base64.urlsafe_b64encode(rng.randbytes(rng.randrange(1, 120))).decode().rstrip("=")
        )
    return cases


def test_garbage_after_the_prefix_is_only_ever_invalid_token(key: str) -> None:
    leaked = []
    for body in _garbage():
        try:
            _verify(PREFIX + body, key)
        except InvalidToken:
            continue
        except Exception as error:  # noqa: BLE001 - the point is that none may escape
            leaked.append(f"{body!r}: {type(error).__name__}: {error}")
        else:
            leaked.append(f"{body!r}: accepted")
    assert leaked == []
