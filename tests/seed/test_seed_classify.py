"""The seed classification routes (`/api/classify[/{model}]`, `/api/zero-shot`), sent as the replaced
systems' clients send them, on tiny checkpoints.

The LLM analysis goes to a real OpenAI-compatible stub server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.api_support import (
    ImageServer,
    LoopbackServer,
    QuietHandler,
    api_settings,
    auth_header,
    png_bytes,
    running_app,
)
from tests.tiny_models import RESNET_BIAS_LOGITS

PNG = png_bytes((64, 48), "red")
B64 = base64.b64encode(PNG).decode()
TOTAL = sum(math.exp(v) for v in RESNET_BIAS_LOGITS.values()) + 1000 - len(RESNET_BIAS_LOGITS)
P_TABBY = math.exp(RESNET_BIAS_LOGITS[281]) / TOTAL
LABELS = ["a cat", "a dog", "a red car"]


class ChatStub(LoopbackServer):
    """`POST /v1/chat/completions` like an OpenAI-compatible server; model `broken` answers 500."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.read_json()
                stub.requests.append((dict(self.headers), body))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if body["model"] == "broken":
                    return self._send(500, {"error": {"message": "model crashed"}})
                top = body["messages"][-1]["content"].splitlines()[1]
                answer = f"The classifier is fairly sure: {top.removeprefix('- ')}."
                return self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                self.send_body(status, json.dumps(payload).encode())

        super().__init__(Handler)
        self.base_url = self.url("/v1")


@pytest.fixture(scope="module")
def chat_stub() -> Iterator[ChatStub]:
    with ChatStub() as stub:
        yield stub


@pytest.fixture(scope="module")
def image_server() -> Iterator[ImageServer]:
    with ImageServer(png_bytes((80, 60), "blue")) as server:
        yield server


@pytest.fixture(scope="module")
def client(classify_settings: Settings, chat_stub: ChatStub) -> Iterator[TestClient]:
    settings = api_settings(
        classify_settings,
        fetch_allow_networks="127.0.0.0/8",
        max_images_per_request=4,
        max_queue_size=8,
        analysis_api_url=chat_stub.base_url,
        analysis_api_key="sk-test",
        analysis_model_llama="llama-3.1-8b",
        analysis_model_gemma="broken",
        preload=False,
    )
    with running_app(settings) as (_, test_client):
        yield test_client


def post(client: TestClient, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    response = client.post(path, headers=auth_header(), **kwargs)
    return response.status_code, response.json()


# -- POST /api/classify (seed shape) ---------------------------------------------------------------------
def test_seed_json_array_with_base64_file(client: TestClient) -> None:
    status, body = post(client, "/api/classify", json=[{"file": B64}])
    assert status == 200
    [entry] = body["responses"]
    assert set(entry) == {"name", "classification"}
    assert [item["label"] for item in entry["classification"]] == [
        "tabby cat",
        "tiger cat",
        "tench",
        "goldfish",
        "great white shark",  # the first of the 996 classes with logit 0
    ]
    assert entry["classification"][0]["score"] == pytest.approx(P_TABBY, abs=1e-6)


def test_seed_json_array_keeps_order_with_url_and_a_broken_entry(client: TestClient, image_server: ImageServer) -> None:
    items = [{"url": image_server.url("/image.png")}, {"file": "%%%not base64"}, {"file": B64}]
    status, body = post(client, "/api/classify?top_k=1", json=items)
    assert status == 200
    first, broken, third = body["responses"]
    assert first["classification"] == [{"label": "tabby cat", "score": pytest.approx(P_TABBY, abs=1e-6)}]
    # Seed 000's failed entry: its fixed words under `error`, the reason in `message` (and our `code`).
    assert broken["error"] == "Failed to process image" and broken["code"] == "invalid_base64"
    assert "base64" in broken["message"]
    assert third["classification"][0]["label"] == "tabby cat"


def test_seed_multipart_file_field_one_or_more(client: TestClient) -> None:
    files = [("file", ("cat.png", PNG, "image/png")), ("file", ("dog.png", png_bytes((30, 30)), "image/png"))]
    status, body = post(client, "/api/classify", files=files)
    assert status == 200
    assert [entry["name"] for entry in body["responses"]] == ["cat.png", "dog.png"]
    assert all(len(entry["classification"]) == 5 for entry in body["responses"])


def test_llama_analysis_from_the_openai_compatible_server(client: TestClient, chat_stub: ChatStub) -> None:
    chat_stub.requests.clear()
    status, body = post(client, "/api/classify/llama", json=[{"file": B64}])
    assert status == 200
    [entry] = body["responses"]
    assert entry["analysis"] == f"The classifier is fairly sure: tabby cat: {P_TABBY:.1%}."
    [(headers, request)] = chat_stub.requests
    assert request["model"] == "llama-3.1-8b"
    assert headers["Authorization"] == "Bearer sk-test"
    assert request["messages"][0]["role"] == "system"


def test_failing_analysis_still_returns_the_classification(client: TestClient) -> None:
    status, body = post(client, "/api/classify/gemma", json=[{"file": B64}])
    assert status == 200
    [entry] = body["responses"]
    assert entry["classification"][0]["label"] == "tabby cat"
    assert entry["analysis"] == ""  # always there, as the seed's clients read it
    assert entry["analysis_error"]["code"] == "analysis_failed"
    assert "500" in entry["analysis_error"]["message"]


def test_other_model_names_mean_classification_only(client: TestClient, chat_stub: ChatStub) -> None:
    chat_stub.requests.clear()
    status, body = post(client, "/api/classify/resnet", json=[{"file": B64}])
    assert status == 200 and set(body["responses"][0]) == {"name", "classification"}
    assert chat_stub.requests == []


def test_every_image_failing_still_answers_200_like_the_seed(client: TestClient) -> None:
    status, body = post(client, "/api/classify", json=[{"file": base64.b64encode(b"not an image").decode()}])
    assert status == 200
    [entry] = body["responses"]
    assert entry["error"] == "Failed to process image" and entry["code"] == "unsupported_image_format"


def test_an_empty_list_answers_an_empty_list(client: TestClient) -> None:
    assert post(client, "/api/classify", json=[]) == (200, {"responses": []})
    assert post(client, "/api/classify/llama", json=[]) == (200, {"responses": []})


@pytest.mark.parametrize(
    ("body", "status"),
    [([{"url": "http://x", "file": B64}], 422), ({"file": B64}, 422), ("[{", 400)],
    ids=["both-sources", "not-an-array", "bad-json"],
)
def test_seed_request_validation(client: TestClient, body: Any, status: int) -> None:
    if isinstance(body, str):
        response = client.post(
            "/api/classify", headers={**auth_header(), "Content-Type": "application/json"}, content=body
        )
    else:
        response = client.post("/api/classify", headers=auth_header(), json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error"}


# -- POST /api/zero-shot ---------------------------------------------------------------------------------
def test_zero_shot_seed_shape(client: TestClient) -> None:
    status, body = post(client, "/api/zero-shot", json={"image_data": B64, "labels": LABELS})
    assert status == 200
    assert list(body["result"]) == LABELS
    assert sum(body["result"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["multi_label"] is False and "categories" not in body


def test_zero_shot_categories_multi_label_and_templates(client: TestClient) -> None:
    labels = ["a thumbnail of a casual gaming stream", "a thumbnail showing violent content from a video game", "a cat"]
    request = {
        "image_data": f"data:image/png;base64,{B64}",
        "labels": labels,
        "categories": {labels[0]: "gaming", labels[1]: "gaming"},
    }
    status, body = post(client, "/api/zero-shot", json=request)
    assert status == 200
    result = body["result"]
    assert body["categories"] == pytest.approx(
        {"gaming": result[labels[0]] + result[labels[1]], "a cat": result["a cat"]}, abs=2e-6
    )

    status, multi = post(
        client,
        "/api/zero-shot",
        json={**request, "multi_label": True, "templates": ["a photo of {}", "an image of {}"]},
    )
    assert status == 200 and multi["multi_label"] is True
    assert multi["templates"] == ["a photo of {}", "an image of {}"]
    assert all(0 < p < 1 for p in multi["result"].values())
    assert multi["categories"]["gaming"] == pytest.approx(max(multi["result"][labels[0]], multi["result"][labels[1]]))


def test_zero_shot_batch_in_input_order(client: TestClient, image_server: ImageServer) -> None:
    images = [B64, {"url": image_server.url("/image.png")}, "@@@"]
    status, body = post(client, "/api/zero-shot", json={"images": images, "labels": LABELS})
    assert status == 200
    first, second, broken = body["results"]
    assert list(first["result"]) == LABELS and list(second["result"]) == LABELS
    assert first["result"] != second["result"]  # a red and a blue image
    assert broken["error"]["code"] == "invalid_base64"


@pytest.mark.parametrize(
    ("request_body", "status", "code"),
    [
        ({"labels": LABELS}, 422, "validation_error"),
        ({"image_data": B64, "images": [B64], "labels": LABELS}, 422, "validation_error"),
        ({"image_data": B64, "labels": []}, 422, "validation_error"),
        ({"image_data": B64, "labels": LABELS, "templates": ["no slot"]}, 400, "invalid_template"),
        ({"image_data": B64, "labels": LABELS, "categories": {"zebra": "animal"}}, 400, "unknown_category_label"),
    ],
)
def test_zero_shot_validation(client: TestClient, request_body: dict, status: int, code: str) -> None:
    got_status, body = post(client, "/api/zero-shot", json=request_body)
    assert (got_status, body["error"]["code"]) == (status, code)


def test_zero_shot_scores_the_labels_as_given_like_the_seed(client: TestClient) -> None:
    """Seed 002 (CLIP lambda) scored the raw labels and answered one label with {label: 1.0}."""
    request = {"image_data": B64, "labels": LABELS}
    _, default = post(client, "/api/zero-shot", json=request)
    _, raw = post(client, "/api/zero-shot", json={**request, "templates": ["{}"]})
    _, photo = post(client, "/api/zero-shot", json={**request, "templates": ["a photo of {}"]})
    assert default["result"] == raw["result"]
    assert default["result"] != photo["result"]
    status, single = post(client, "/api/zero-shot", json={"image_data": B64, "labels": ["a cat"]})
    assert status == 200 and single["result"] == {"a cat": 1.0}


# -- shared behaviour -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/classify", "/api/classify/llama", "/api/zero-shot"])
def test_routes_need_a_token(client: TestClient, path: str) -> None:
    response = client.post(path, json=[{"file": B64}])
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"unauthorized", "missing_token"}


def test_other_content_types_are_refused(client: TestClient) -> None:
    response = client.post("/api/zero-shot", headers={**auth_header(), "Content-Type": "text/plain"}, content="x")
    assert response.status_code == 415


def test_without_analysis_settings_the_analysis_field_is_empty(classify_settings: Settings) -> None:
    with running_app(api_settings(classify_settings, preload=False)) as (_, test_client):
        for alias in ("llama", "gemma"):
            response = test_client.post(f"/api/classify/{alias}", headers=auth_header(), json=[{"file": B64}])
            assert response.status_code == 200
            [entry] = response.json()["responses"]
            assert set(entry) == {"name", "classification", "analysis", "analysis_error"}
            assert entry["analysis"] == "" and entry["analysis_error"]["code"] == "analysis_not_configured"
