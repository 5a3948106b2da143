"""Missing weights fail fast with a message that says how to fix it (no hub in tests)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from huggingface_hub import constants

from app.core.config import Settings
from app.core.errors import ModelUnavailable
from app.models.manager import ModelManager, ModelState

DEFAULT_MODEL_ID = "florence-community/Florence-2-large"


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real cache must not turn these into a 3 GB model load."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))


def settings_for(model_id: str, **overrides: object) -> Settings:
    return Settings(_env_file=None, model_id=model_id, warmup=False, **overrides)  # type: ignore[arg-type]


def failed_load(settings: Settings) -> tuple[ModelUnavailable, float, ModelManager]:
    manager = ModelManager(settings)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable) as caught:
        manager.get()
    elapsed = time.perf_counter() - started
    manager.shutdown()
    assert manager.state() is ModelState.FAILED
    assert manager.status()[0]["error"] == caught.value.message
    assert "Traceback" not in caught.value.message
    assert caught.value.http_status == 503
    return caught.value, elapsed, manager


def test_default_model_offline_fails_fast_with_an_actionable_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    error, elapsed, _ = failed_load(Settings(_env_file=None, warmup=False))
    assert elapsed < 15
    assert error.code == "model_missing"
    assert DEFAULT_MODEL_ID in error.message
    assert "MODEL_ID" in error.message and "HF_HUB_OFFLINE" in error.message
    assert f"hf download {DEFAULT_MODEL_ID}" in error.message


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9",  # nothing listens: refused at once
        "http://10.255.255.1",  # not routed: the probe times out after HUB_TIMEOUT_S
    ],
)
def test_unreachable_hub_fails_within_the_probe_timeout(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    error, elapsed, _ = failed_load(settings_for(DEFAULT_MODEL_ID, hub_timeout_s=2))
    assert elapsed < 15
    assert error.code == "model_missing"
    assert DEFAULT_MODEL_ID in error.message and endpoint in error.message
    assert "cannot be reached" in error.message and "MODEL_ID" in error.message


class _NotTheHub(BaseHTTPRequestHandler):
    """Answers every request with 404, like a proxy or captive portal in front of a dead network."""

    paths: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        self.paths.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_is_not_the_hub_does_not_count_as_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotTheHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        error, elapsed, _ = failed_load(settings_for(DEFAULT_MODEL_ID, model_revision="refs/pr/1"))
    finally:
        server.shutdown()
        server.server_close()
    assert elapsed < 15
    assert _NotTheHub.paths == [f"/{DEFAULT_MODEL_ID}/resolve/refs%2Fpr%2F1/config.json"]
    assert "HTTP 404" in error.message and "HF_TOKEN" in error.message and "MODEL_ID" in error.message


@pytest.mark.parametrize("relative", [False, True])
def test_a_local_directory_that_does_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool) -> None:
    monkeypatch.chdir(tmp_path)
    model_id = "./models/Florence-2-large" if relative else str(tmp_path / "no-such-checkpoint")
    error, elapsed, _ = failed_load(settings_for(model_id))
    assert elapsed < 15
    assert error.code == "model_missing"
    assert model_id in error.message and "does not exist" in error.message
    assert "MODEL_ID" in error.message


def test_a_directory_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 16)
    error, _, _ = failed_load(settings_for(str(tmp_path)))
    assert error.code == "model_missing"
    assert str(tmp_path) in error.message and "config.json" in error.message
    assert "MODEL_ID" in error.message


def test_a_failed_load_is_tried_again_on_the_next_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    manager = ModelManager(settings_for(DEFAULT_MODEL_ID))
    try:
        for _ in range(2):
            with pytest.raises(ModelUnavailable):
                manager.get()
            assert manager.state() is ModelState.FAILED
        # the second failure came from a second attempt, not from a cached error object
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
        with pytest.raises(ModelUnavailable, match="cannot be reached"):
            manager.get()
    finally:
        manager.shutdown()
