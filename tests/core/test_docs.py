"""The documentation names every setting and every hook that exists."""

from pathlib import Path

import pytest

from cheeseshop.config import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("key", sorted(set(Settings.model_fields) - {"sections"}))
def test_every_setting_is_documented(key):
    text = (DOCS / "configuring.md").read_text()
    assert f"`{key}`" in text and f"`CHEESESHOP_{key.upper()}`" in text
