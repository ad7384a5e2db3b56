"""Fixtures shared by the upload tests."""

from __future__ import annotations

import pytest

from cheeseshop.upload import multipart


@pytest.fixture(params=["memory", "disk"])
def spool(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test twice: the file part kept in memory (as a small upload's is), and spooled
    to a temporary file from its first byte (as a large upload's is)."""
    if request.param == "disk":
        monkeypatch.setattr(multipart, "SPOOL_BYTES", 0)
    return str(request.param)
