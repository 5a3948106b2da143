"""The chat mounted in the FastAPI server: offline page, static files, Chainlit hooks, login, limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image
from pydantic import SecretStr

from app.chat.auth import hash_password
from app.chat.integration import ACCEPTED_IMAGE_TYPES
from app.core.config import Settings
from app.core.errors import ConfigError
from app.core.images import ALLOWED_FORMATS
from app.models.manager import ModelManager
from app.serving.server import create_app
from tests.api_support import EXTERNAL_RESOURCE, server_client
from tests.chat_support import make_services

SECRET = "test-secret-" + "x" * 40


@pytest.fixture
def open_settings(tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)
    # No background model load: these tests never run the model.
    yield tiny_settings.model_copy(update={"warmup": False, "preload": False})


def test_page_loads_nothing_from_other_hosts(open_settings: Settings) -> None:
    with server_client(open_settings) as client:
        page = client.get("/")
        deep_link = client.get("/thread/abc")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>Florence-2 Vision</title>" in page.text
    assert EXTERNAL_RESOURCE.findall(page.text) == []
    assert "fonts.googleapis.com" not in page.text and "katex" not in page.text
    assert deep_link.status_code == 200 and EXTERNAL_RESOURCE.findall(deep_link.text) == []


def test_public_files_are_served(open_settings: Settings) -> None:
    with server_client(open_settings) as client:
        theme = client.get("/public/theme.json")
        picker = client.get("/public/elements/RegionPicker.jsx")
        favicon = client.get("/favicon")
        logo = client.get("/logo", params={"theme": "dark"})
    assert theme.json()["custom_fonts"] == []
    assert picker.status_code == 200 and "callAction" in picker.text and "region_picked" in picker.text
    assert favicon.headers["content-type"] == "image/svg+xml" and b"<svg" in favicon.content
    assert logo.status_code == 200 and b"Florence-2 Vision" in logo.content


def test_chainlit_startup_and_shutdown_hooks_run_under_the_server_lifespan(open_settings: Settings) -> None:
    from chainlit.config import config

    calls: list[str] = []

    async def started() -> None:
        calls.append("startup")

    async def stopped() -> None:
        calls.append("shutdown")

    saved = config.code.on_app_startup, config.code.on_app_shutdown
    config.code.on_app_startup, config.code.on_app_shutdown = started, stopped
    try:
        client = server_client(open_settings)
        with client:
            assert calls == ["startup"]
        assert calls == ["startup", "shutdown"]
    finally:
        config.code.on_app_startup, config.code.on_app_shutdown = saved


def test_api_routes_win_over_the_chat_and_a_second_app_mounts_it_again(open_settings: Settings) -> None:
    with server_client(open_settings) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.headers["content-type"] == "application/json"
        # Chainlit is one per process: another app (tests build many) mounts the same chat again.
        with server_client(open_settings) as second:
            assert second.get("/").status_code == 200
            assert "<title>Florence-2 Vision</title>" in second.get("/").text


def test_upload_limits_follow_the_settings(open_settings: Settings) -> None:
    from chainlit.config import config

    settings = open_settings.model_copy(update={"max_images_per_request": 3, "max_image_bytes": 5 * 2**20 + 1})
    create_app(settings, make_services(settings, ModelManager(settings)))
    upload = config.features.spontaneous_file_upload
    assert upload is not None
    assert (upload.enabled, upload.max_files, upload.max_size_mb) == (True, 3, 6)
    assert upload.accept == list(ACCEPTED_IMAGE_TYPES)
    # The picker offers every format the decoder accepts (and BMP's other common type).
    assert {Image.MIME[name] for name in ALLOWED_FORMATS} | {"image/x-ms-bmp"} == set(upload.accept)
    assert config.features.mcp.enabled is False
    create_app(open_settings, make_services(open_settings, ModelManager(open_settings)))  # back to defaults


def test_password_login_when_users_are_configured(open_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    users = f"alice:{hash_password('wonderland', iterations=100_000)}"
    settings = open_settings.model_copy(update={"chat_users": users, "chainlit_auth_secret": SecretStr(SECRET)})
    try:
        with server_client(settings) as client:
            assert client.get("/auth/config").json()["requireLogin"] is True
            wrong = client.post("/login", data={"username": "alice", "password": "nope"})
            right = client.post("/login", data={"username": "alice", "password": "wonderland"})
            assert wrong.status_code == 401
            assert right.status_code == 200 and right.json() == {"success": True}
            assert client.get("/user").json()["identifier"] == "alice"  # the session cookie works
    finally:
        with server_client(open_settings) as client:  # the chat is open again without users
            assert not client.get("/auth/config").json()["requireLogin"]


def test_users_without_a_secret_fail_at_start_with_a_fix(open_settings: Settings) -> None:
    users = f"alice:{hash_password('wonderland', iterations=100_000)}"
    settings = open_settings.model_copy(update={"chat_users": users})
    try:
        with pytest.raises(ConfigError) as raised:
            create_app(settings, make_services(settings, ModelManager(settings)))
        assert "CHAINLIT_AUTH_SECRET" in raised.value.message and "secrets.token_urlsafe" in raised.value.message
    finally:
        create_app(open_settings, make_services(open_settings, ModelManager(open_settings)))
