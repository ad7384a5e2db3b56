"""The Simple API renderer: pure functions, exact bytes."""

from __future__ import annotations


def test_root_json_is_exactly_what_json_dumps_gives():
    import json

    from cheeseshop.simple import render

    projects = [("Plain", "plain", 3), ("Wéird \"quoted\" \\ name", "weird", 7), ("emoji-🧀", "emoji", 0)]
    expected = json.dumps(
        {
            "meta": {"api-version": render.API_VERSION, "_last-serial": 9},
            "projects": [{"name": name, "_last-serial": serial} for name, _, serial in projects],
        },
        separators=(",", ":"),
    )
    assert render.root_json(last_serial=9, projects=projects) == expected
    assert json.loads(render.root_json(last_serial=0, projects=[])) == {
        "meta": {"api-version": render.API_VERSION, "_last-serial": 0},
        "projects": [],
    }
