"""`POST /api/v1/analyze` runs any registered task, and `GET /api/v1/tasks` lists them with their backends.

Classification and zero-shot run on the tiny offline checkpoints through the real model code, and
their answers are compared with the dedicated routes (`/api/v1/classify`, `/api/zero-shot`), which
serve the same tasks. A task registered at run time with its own backend goes through unchanged.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.v1.schemas import AnalyzeResponse, TaskList
from app.api.v1.schemas_results import ClassificationEntry, ZeroShotEntry
from app.core.config import Settings
from app.core.tasks import all_tasks
from tests.api_support import api_settings, auth_header, authed_post, png_bytes, running_app

ANALYZE = "/api/v1/analyze"
PNG = png_bytes((64, 48), "red")
B64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{B64}"
LABELS = ["a cat", "a dog", "a red car"]


def without_timing(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "duration"}


# -- classification through /api/v1/analyze ---------------------------------------------------------------
def test_classify_answers_like_the_classify_route(classify_client: TestClient) -> None:
    status, body = authed_post(
        classify_client, ANALYZE, json={"task": "CLASSIFY", "images": [{"base64": B64}], "top_n": 2, "language": "de"}
    )
    assert status == 200
    [entry] = body["results"]
    assert entry["kind"] == "classification" and entry["language"] == "de"
    assert [p["class"] for p in entry["predictions"]] == ["n02123045", "n02123159"]
    _, reference = authed_post(
        classify_client,
        "/api/v1/classify",
        json={"images": [{"base64": B64}], "numberofpredictions": 2, "language": "de"},
    )
    assert without_timing(entry) == without_timing(reference["results"][0])
    assert isinstance(AnalyzeResponse.model_validate(body).results[0], ClassificationEntry)


def test_classify_multipart_reads_top_n_and_language(classify_client: TestClient) -> None:
    form = {"task": "classification", "top_n": "1", "language": "en"}
    status, body = authed_post(classify_client, ANALYZE, data=form, files={"files": ("cat.png", PNG, "image/png")})
    assert status == 200
    [entry] = body["results"]
    assert entry["name"] == "cat.png"
    assert [p["name"] for p in entry["predictions"]] == ["tabby cat"]


def test_classify_defaults_to_three_english_predictions(classify_client: TestClient) -> None:
    status, body = authed_post(classify_client, ANALYZE, json={"task": "<CLASSIFY>", "images": [DATA_URL]})
    assert status == 200
    assert [p["name"] for p in body["results"][0]["predictions"]] == ["tabby cat", "tiger cat", "tench"]


# -- zero-shot through /api/v1/analyze --------------------------------------------------------------------
def test_zero_shot_labels_are_the_labels_to_score(classify_client: TestClient) -> None:
    status, body = authed_post(
        classify_client, ANALYZE, json={"task": "ZERO_SHOT", "labels": LABELS, "images": [{"base64": B64}]}
    )
    assert status == 200
    [entry] = body["results"]
    assert entry["kind"] == "zero_shot" and list(entry["result"]) == LABELS
    # The task's own default template ("a photo of {}"); the seed route scores the labels as given.
    assert entry["templates"] == ["a photo of {}"]
    _, reference = authed_post(
        classify_client, "/api/zero-shot", json={"images": [B64], "labels": LABELS, "templates": ["a photo of {}"]}
    )
    assert without_timing(entry) == without_timing(reference["results"][0])
    assert isinstance(AnalyzeResponse.model_validate(body).results[0], ZeroShotEntry)


def test_zero_shot_categories_multi_label_and_templates(classify_client: TestClient) -> None:
    options = {
        "labels": LABELS,
        "categories": {"a cat": "animal", "a dog": "animal"},
        "multi_label": True,
        "templates": ["a photo of {}", "an image of {}"],
    }
    status, body = authed_post(
        classify_client, ANALYZE, json={"task": "zeroshot", "images": [{"base64": B64}], **options}
    )
    assert status == 200
    [entry] = body["results"]
    assert entry["multi_label"] is True and entry["templates"] == options["templates"]
    assert set(entry["categories"]) == {"animal", "a red car"}
    _, reference = authed_post(classify_client, "/api/zero-shot", json={"images": [B64], **options})
    assert without_timing(entry) == without_timing(reference["results"][0])


def test_zero_shot_multipart_labels_are_comma_separated(classify_client: TestClient) -> None:
    form = {"task": "ZERO_SHOT", "labels": ", ".join(LABELS)}
    status, body = authed_post(classify_client, ANALYZE, data=form, files={"files": ("cat.png", PNG, "image/png")})
    assert status == 200
    assert list(body["results"][0]["result"]) == LABELS


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"task": "ZERO_SHOT"}, "missing_labels"),
        ({"task": "ZERO_SHOT", "labels": LABELS, "text": "a cat"}, "unexpected_text"),
        ({"task": "ZERO_SHOT", "labels": LABELS, "top_n": 2}, "unexpected_option"),
        ({"task": "ZERO_SHOT", "labels": LABELS, "templates": ["no slot"]}, "invalid_template"),
        ({"task": "CLASSIFY", "labels": LABELS}, "unexpected_labels"),
        ({"task": "CLASSIFY", "multi_label": False}, "unexpected_option"),
        ({"task": "CLASSIFY", "language": "fr"}, "unknown_language"),
        ({"task": "OD", "top_n": 3}, "unexpected_option"),
        ({"task": "CAPTION", "categories": {"a": "b"}}, "unexpected_option"),
        ({"task": "CAPTION", "labels": ["cat"]}, "unexpected_labels"),
    ],
)
def test_a_field_the_task_does_not_read_is_refused(
    classify_client: TestClient, fields: dict[str, Any], code: str
) -> None:
    status, body = authed_post(classify_client, ANALYZE, json={**fields, "images": [{"base64": B64}]})
    assert (status, body["error"]["code"]) == (400, code)


# -- GET /api/v1/tasks ------------------------------------------------------------------------------------
def test_every_registered_task_is_listed_with_the_backend_that_serves_it(classify_client: TestClient) -> None:
    response = classify_client.get("/api/v1/tasks", headers=auth_header())
    assert response.status_code == 200
    tasks = {entry["short_name"]: entry for entry in response.json()["tasks"]}
    assert list(tasks) == [spec.short_name for spec in all_tasks()]
    assert tasks["OD"] == {
        "token": "<OD>",
        "short_name": "OD",
        "name": "Object detection",
        "description": "Boxes and category names for the objects.",
        "input": "none",
        "output": "boxes",
        "aliases": ["detect", "detection", "object_detection"],
        "backend": "florence2",
    }
    assert (tasks["CLASSIFY"]["backend"], tasks["CLASSIFY"]["output"]) == ("classifier", "classes")
    assert (tasks["ZERO_SHOT"]["backend"], tasks["ZERO_SHOT"]["input"]) == ("zero_shot", "labels")
    assert tasks["OCR"]["backend"] == "florence2"
    TaskList.model_validate(response.json())


def test_with_rapidocr_the_ocr_tasks_name_rapidocr(tiny_settings: Settings) -> None:
    settings = api_settings(tiny_settings, ocr_backend="rapidocr", preload=False)
    with running_app(settings) as (_, test_client):
        tasks = {
            e["short_name"]: e["backend"]
            for e in test_client.get("/api/v1/tasks", headers=auth_header()).json()["tasks"]
        }
    assert tasks["OCR"] == tasks["OCR_WITH_REGION"] == "rapidocr"
    assert tasks["CAPTION"] == "florence2"
