"""First light: upload a wheel through the test client and see it in the Simple API."""

from cheeseshop.testing.dists import build_wheel


async def test_upload_then_simple(upload, cheeseshop_client):
    dist = build_wheel("hello-world", "1.0")
    response = await upload(dist)
    assert response.status_code == 200, await response.get_data(as_text=True)
    page = await cheeseshop_client.get(
        "/simple/hello-world/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    data = await page.get_json()
    assert [f["filename"] for f in data["files"]] == [dist.filename]
    assert data["files"][0]["hashes"]["sha256"] == dist.sha256
