"""`POST /api/v1/classify` (ImageNet with synset ids and names in English or German) on tiny checkpoints."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.api_support import api_settings, auth_header, png_bytes, running_app
from tests.tiny_models import RESNET_BIAS_LOGITS

PNG = png_bytes((64, 48), "red")
B64 = base64.b64encode(PNG).decode()
TOTAL = sum(math.exp(v) for v in RESNET_BIAS_LOGITS.values()) + 1000 - len(RESNET_BIAS_LOGITS)
P_TABBY = math.exp(RESNET_BIAS_LOGITS[281]) / TOTAL


@pytest.fixture(scope="module")
def client(classify_settings: Settings) -> Iterator[TestClient]:
    settings = api_settings(classify_settings, max_images_per_request=4, max_queue_size=8, preload=False)
    with running_app(settings) as (_, test_client):
        yield test_client


def post(client: TestClient, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    response = client.post(path, headers=auth_header(), **kwargs)
    return response.status_code, response.json()


# -- POST /api/v1/classify -----------------------------------------------------------------------------
def test_v1_json_with_language_and_number_of_predictions(client: TestClient, classify_settings: Settings) -> None:
    import app

    status, body = post(
        client, "/api/v1/classify", json={"images": [{"base64": B64}], "numberofpredictions": 2, "language": "de"}
    )
    assert status == 200
    [result] = body["results"]
    assert [(p["class"], p["name"]) for p in result["predictions"]] == [
        ("n02123045", "Getigerte Katze"),
        ("n02123159", "Tigerkatze"),
    ]
    assert result["predictions"][0]["probability"] == pytest.approx(P_TABBY, abs=1e-6)
    assert result["model"] == classify_settings.classifier_model_id
    assert result["library"].startswith("transformers-")
    assert (result["version"], result["repository"]) == (app.__version__, app.REPOSITORY)
    assert result["duration"] > 0


def test_v1_multipart_defaults_to_three_english_predictions(client: TestClient) -> None:
    status, body = post(client, "/api/v1/classify", files={"files": ("cat.png", PNG, "image/png")})
    assert status == 200
    [result] = body["results"]
    assert result["name"] == "cat.png"
    assert [p["name"] for p in result["predictions"]] == ["tabby cat", "tiger cat", "tench"]


def test_v1_unknown_language_is_a_400_listing_the_available_ones(client: TestClient) -> None:
    status, body = post(client, "/api/v1/classify", json={"images": [{"base64": B64}], "language": "fr"})
    assert status == 400
    assert body["error"]["code"] == "unknown_language"
    assert "en, de" in body["error"]["message"]


def test_v1_needs_a_token(client: TestClient) -> None:
    response = client.post("/api/v1/classify", json={"images": [{"base64": B64}]})
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"unauthorized", "missing_token"}
