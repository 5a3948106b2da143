"""`POST /api/v1/classify` (ImageNet with synset ids and names in English or German) on tiny checkpoints."""

from __future__ import annotations

import base64
import math

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.api_support import authed_post, png_bytes
from tests.tiny_models import RESNET_BIAS_LOGITS

PNG = png_bytes((64, 48), "red")
B64 = base64.b64encode(PNG).decode()
TOTAL = sum(math.exp(v) for v in RESNET_BIAS_LOGITS.values()) + 1000 - len(RESNET_BIAS_LOGITS)
P_TABBY = math.exp(RESNET_BIAS_LOGITS[281]) / TOTAL


# -- POST /api/v1/classify -----------------------------------------------------------------------------
def test_v1_json_with_language_and_number_of_predictions(
    classify_client: TestClient, classify_settings: Settings
) -> None:
    import app

    status, body = authed_post(
        classify_client,
        "/api/v1/classify",
        json={"images": [{"base64": B64}], "numberofpredictions": 2, "language": "de"},
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


def test_v1_multipart_defaults_to_three_english_predictions(classify_client: TestClient) -> None:
    status, body = authed_post(classify_client, "/api/v1/classify", files={"files": ("cat.png", PNG, "image/png")})
    assert status == 200
    [result] = body["results"]
    assert result["name"] == "cat.png"
    assert [p["name"] for p in result["predictions"]] == ["tabby cat", "tiger cat", "tench"]


def test_v1_unknown_language_is_a_400_listing_the_available_ones(classify_client: TestClient) -> None:
    status, body = authed_post(
        classify_client, "/api/v1/classify", json={"images": [{"base64": B64}], "language": "fr"}
    )
    assert status == 400
    assert body["error"]["code"] == "unknown_language"
    assert "en, de" in body["error"]["message"]


def test_v1_needs_a_token(classify_client: TestClient) -> None:
    response = classify_client.post("/api/v1/classify", json={"images": [{"base64": B64}]})
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"unauthorized", "missing_token"}
