"""The interactive API docs (`/docs`) work offline: the page and its assets come from this server."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.api_support import EXTERNAL_RESOURCE, server_client

ASSET = re.compile(r"""(?:href|src)=["']([^"']+)["']""")


@pytest.fixture(scope="module")
def client(tiny_settings: Settings) -> Iterator[TestClient]:
    with server_client(tiny_settings.model_copy(update={"preload": False})) as client:
        yield client


def test_docs_page_names_no_other_host(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert EXTERNAL_RESOURCE.findall(page.text) == []
    assert re.findall(r"https?://", page.text) == []
    assert "url: '/openapi.json'" in page.text


def test_docs_assets_are_served_from_this_server(client: TestClient) -> None:
    assets = ASSET.findall(client.get("/docs").text)
    assert sorted(asset.rsplit("/", 1)[1] for asset in assets) == [
        "favicon.png",
        "swagger-ui-bundle.js",
        "swagger-ui.css",
    ]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000, asset
    script = next(asset for asset in assets if asset.endswith(".js"))
    assert "SwaggerUIBundle" in client.get(script).text
    assert client.get("/openapi.json").json()["info"]["title"] == "Florence-2 Vision"


def test_redoc_sends_readers_to_the_offline_docs(client: TestClient) -> None:
    # ReDoc's bundle fetches its logo from a CDN, so there is no ReDoc page (nor Chainlit's own).
    response = client.get("/redoc", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (307, "/docs")
