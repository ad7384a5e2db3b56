"""Name policy for new projects: standard-library names, operator-prohibited names, confusables."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from cheeseshop.db.models import File, Project
from cheeseshop.packaging.names import STDLIB_NAMES, prohibited_reason
from cheeseshop.testing.dists import build_wheel


async def _counts(services) -> tuple[int, int]:
    async with services.db.read() as session:
        projects = await session.scalar(select(func.count()).select_from(Project))
        files = await session.scalar(select(func.count()).select_from(File))
    return projects, files


def test_stdlib_names_cover_common_modules():
    assert {"os", "asyncio", "json", "email", "xml-etree"} - STDLIB_NAMES == {"xml-etree"}
    assert prohibited_reason("AsyncIO", stdlib=True)
    assert prohibited_reason("asyncio", stdlib=False) is None
    assert prohibited_reason("Flask", stdlib=True) is None
    assert prohibited_reason("my_Corp", stdlib=False, extra=frozenset({"my-corp"}))


@pytest.mark.parametrize("name", ["asyncio", "JSON"])
async def test_stdlib_module_names_are_refused(upload, cheeseshop_services, name):
    response = await upload(build_wheel(name, "1.0"))
    assert response.status_code == 400
    body = await response.get_data(as_text=True)
    assert "standard-library" in body and name in body
    assert await _counts(cheeseshop_services) == (0, 0)


@pytest.mark.parametrize("cheeseshop_settings_overrides", [{"prohibited_names": "Acme-Internal"}])
async def test_operator_prohibited_names_are_refused(upload, cheeseshop_services):
    response = await upload(build_wheel("acme.internal", "1.0"))
    assert response.status_code == 400
    assert "not allowed on this index" in await response.get_data(as_text=True)
    assert await _counts(cheeseshop_services) == (0, 0)


@pytest.mark.parametrize("cheeseshop_settings_overrides", [{"prohibit_stdlib_names": False}])
async def test_stdlib_names_allowed_when_the_operator_says_so(upload):
    assert (await upload(build_wheel("asyncio", "1.0"))).status_code == 200


@pytest.mark.parametrize("similar", ["F1ask", "fl-ask", "f.l.a.s.k", "FIask"])
async def test_confusable_names_are_refused(upload, cheeseshop_services, similar):
    assert (await upload(build_wheel("Flask", "1.0"))).status_code == 200
    response = await upload(build_wheel(similar, "1.0"))
    assert response.status_code == 400
    body = await response.get_data(as_text=True)
    assert "too similar to an existing project ('Flask')" in body
    assert await _counts(cheeseshop_services) == (1, 1)


async def test_the_same_project_is_not_confused_with_itself(upload):
    assert (await upload(build_wheel("Flask", "1.0"))).status_code == 200
    assert (await upload(build_wheel("flask", "1.1"))).status_code == 200
