"""The vitrivr-compatible job routes, replaying vitrivr feature-extraction-server's own requests.

What the real server does (its openapi_spec.json and test/test_integration.py, read from
github.com/vitrivr/feature-extraction-server; nothing of it is copied here): a new job answers HTTP
200 `{"id", "status"}` with status one of `starting|running|complete|failed`; the body sends the image
as bare base64 or a data URL; a batched body sends `image` as a list and is read back at
`/api/tasks/{task}/batched/jobs/{id}` as a list of per-image outputs; `classes` and `config` are
optional and `config` keys a model does not use are passed over; `/api/tasks` and `/api/models`
list names. Our compat OpenAPI description of those routes is fuzzed with schemathesis.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import GenerationMode
from schemathesis.schemas import APIOperation, BaseSchema

from app.core.config import Settings
from app.serving.server import create_app
from tests.api.test_api_schema import fuzz
from tests.api_support import api_settings, auth_header, png_bytes, running_app
from tests.jobs_support import wait_for

PNG, BLUE = png_bytes((64, 48), "red"), png_bytes((40, 30), "blue")
RAW_B64 = base64.b64encode(PNG).decode()  # the integration test sends bare base64
DATA_URL = "data:image/png;base64," + RAW_B64
BLUE_URL = "data:image/png;base64," + base64.b64encode(BLUE).decode()
BROKEN_URL = "data:image/png;base64," + base64.b64encode(PNG[: len(PNG) // 2]).decode()
SEED_STATES = {"starting", "running", "complete", "failed"}
ZERO_SHOT = "/api/tasks/zero-shot-image-classification"


@pytest.fixture(scope="module")
def served(
    classify_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastAPI, TestClient]]:
    data_dir = tmp_path_factory.mktemp("compat-data")
    settings = api_settings(classify_settings, data_dir=data_dir, max_queue_size=32, rate_limit="")
    with running_app(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(served: tuple[FastAPI, TestClient]) -> TestClient:
    return served[1]


def create(client: TestClient, path: str, body: dict[str, Any]) -> str:
    response = client.post(path, headers=auth_header(), json=body)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id", "status"} and response.json()["status"] in SEED_STATES
    return str(response.json()["id"])


def poll(client: TestClient, path: str) -> dict[str, Any]:
    """As the integration test does: GET until `complete` (every answer 200, every status in the enum)."""

    def finished() -> dict[str, Any] | None:
        response = client.get(path, headers=auth_header())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["status"] in SEED_STATES
        return body if body["status"] in ("complete", "failed") else None

    return wait_for(finished, 30, path)


def test_zero_shot_single_job_as_the_integration_test_sends_it(client: TestClient) -> None:
    classes = ["photo", "document"]
    job = create(
        client, f"{ZERO_SHOT}/clip_vit_large_patch14/jobs", {"image": RAW_B64, "classes": classes, "config": {}}
    )
    done = poll(client, f"{ZERO_SHOT}/jobs/{job}")
    assert done["status"] == "complete"
    probabilities = done["result"]["probabilities"]
    assert isinstance(probabilities, list) and len(probabilities) == len(classes)
    assert isinstance(probabilities[0], float) and sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    # The same model on the same raw labels (no prompt template) as /api/zero-shot answers.
    sync = client.post("/api/zero-shot", headers=auth_header(), json={"image_data": DATA_URL, "labels": classes})
    assert probabilities == pytest.approx([sync.json()["result"][c] for c in classes], abs=2e-6)
    reversed_job = create(client, f"{ZERO_SHOT}/m/jobs", {"image": DATA_URL, "classes": classes[::-1]})
    assert poll(client, f"{ZERO_SHOT}/jobs/{reversed_job}")["result"]["probabilities"] == pytest.approx(
        probabilities[::-1], abs=2e-6
    )


def test_batched_body_and_batched_read_back(client: TestClient) -> None:
    classes = ["a cat", "a dog", "a car"]
    job = create(
        client,
        f"{ZERO_SHOT}/batched/clip_vit_large_patch14/jobs",
        {"image": [DATA_URL, BLUE_URL], "classes": classes, "config": {}},
    )
    done = poll(client, f"{ZERO_SHOT}/batched/jobs/{job}")
    assert done["status"] == "complete"
    result = done["result"]
    assert [set(item) for item in result] == [{"probabilities"}] * 2
    assert all(len(item["probabilities"]) == 3 for item in result)
    assert result[0]["probabilities"] != result[1]["probabilities"]  # a red and a blue image
    # The earlier `images` spelling still reads, and a failed image keeps its place with an error.
    old = create(client, f"{ZERO_SHOT}/batched/m/jobs", {"images": [DATA_URL, BROKEN_URL], "classes": classes})
    items = poll(client, f"{ZERO_SHOT}/batched/jobs/{old}")["result"]
    assert items[0]["probabilities"] == pytest.approx(result[0]["probabilities"], abs=2e-6)
    assert items[1]["probabilities"] == [] and items[1]["error"]["code"] == "corrupt_image"


def test_florence_tasks_answer_in_the_seed_output_shapes(client: TestClient) -> None:
    caption_job = create(client, "/api/tasks/image-captioning/blip/jobs", {"image": RAW_B64, "config": {}})
    caption = poll(client, f"/api/tasks/image-captioning/jobs/{caption_job}")
    sync = client.post("/api/v1/analyze", headers=auth_header(), json={"task": "CAPTION", "images": [DATA_URL]})
    assert caption["result"] == {"caption": sync.json()["results"][0]["text"]}

    detect_job = create(client, "/api/tasks/object-detection/batched/detr_resnet101/jobs", {"image": [DATA_URL]})
    (detections,) = poll(client, f"/api/tasks/object-detection/batched/jobs/{detect_job}")["result"]
    sync = client.post("/api/v1/analyze", headers=auth_header(), json={"task": "OD", "images": [DATA_URL]})
    expected = sync.json()["results"][0]["detections"]
    assert detections["labels"] == [d["label"] for d in expected]
    assert detections["boxes"] == [[round(v) for v in d["xyxy"]] for d in expected]
    assert len(detections["scores"]) == len(expected)

    ocr_job = create(client, "/api/tasks/optical-character-recognition/tesseract/jobs", {"image": RAW_B64})
    assert set(poll(client, f"/api/tasks/optical-character-recognition/jobs/{ocr_job}")["result"]) == {"text"}


def test_config_keys_a_model_does_not_use_are_passed_over(client: TestClient) -> None:
    job = create(client, "/api/tasks/image-captioning/m/jobs", {"image": DATA_URL, "config": {"top_k": 3, "x": 1}})
    assert poll(client, f"/api/tasks/image-captioning/jobs/{job}")["status"] == "complete"
    # A known key with a wrong value is still refused, in our error shape.
    bad = client.post(
        "/api/tasks/image-captioning/m/jobs", headers=auth_header(), json={"image": DATA_URL, "config": {"detail": 7}}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_config"


def test_classes_are_optional_as_in_the_seed_schema(client: TestClient) -> None:
    """Accepted (200); the job then fails as the seed's does, saying what was missing."""
    job = create(client, f"{ZERO_SHOT}/m/jobs", {"image": DATA_URL})
    done = poll(client, f"{ZERO_SHOT}/jobs/{job}")
    assert done["status"] == "failed" and done["error"]["code"] == "missing_labels"
    assert "result" not in done


def test_listings(client: TestClient, classify_settings: Settings) -> None:
    tasks = client.get("/api/tasks", headers=auth_header())
    assert tasks.status_code == 200 and "zero-shot-image-classification" in tasks.json()
    assert all(isinstance(name, str) for name in tasks.json())
    models = client.get("/api/models", headers=auth_header()).json()
    assert classify_settings.model_id in models
    for_task = client.get(f"{ZERO_SHOT}/models", headers=auth_header()).json()
    assert for_task == [classify_settings.zero_shot_model_id]
    assert client.get("/api/tasks/painting/models", headers=auth_header()).status_code == 404
    assert client.post("/api/tasks/painting/m/jobs", headers=auth_header(), json={"image": DATA_URL}).status_code == 404


def test_a_job_reads_back_under_its_own_task_only(client: TestClient) -> None:
    job = create(client, "/api/tasks/image-captioning/m/jobs", {"image": DATA_URL})
    poll(client, f"/api/tasks/image-captioning/jobs/{job}")
    elsewhere = client.get(f"/api/tasks/object-detection/jobs/{job}", headers=auth_header())
    assert elsewhere.status_code == 404


def test_model_names_the_model_that_answered_read_from_the_result(client: TestClient) -> None:
    job = create(client, "/api/tasks/image-classification/resnet/jobs", {"image": DATA_URL})
    done = poll(client, f"/api/tasks/image-classification/jobs/{job}")
    answered = client.get(f"/api/v1/jobs/{job}", headers=auth_header()).json()["result"]
    # The classification result carries its run info; the seed answer's `model` is that model.
    assert done["status"] == "complete" and done["model"] == answered["results"][0]["model"] == answered["model"]
    caption = create(client, "/api/tasks/image-captioning/blip/jobs", {"image": DATA_URL})
    assert poll(client, f"/api/tasks/image-captioning/jobs/{caption}")["model"] != done["model"]


def test_seed_view_prefers_the_result_over_what_was_configured_at_submission() -> None:
    from app.api.seed.vitrivr import seed_view
    from app.core.tasks import get_task
    from app.jobs.records import JobRecord, JobStatus

    seed = {
        "task": "optical-character-recognition",
        "batched": False,
        "classes": None,
        "requested_model": "tesseract",
        "served_model": "configured/florence",
    }
    record = JobRecord(
        "j1",
        "alice",
        "analyze",
        {"task": "<OCR>", "seed": seed},
        ["a.png"],
        0.0,
        1,
        status=JobStatus.COMPLETE,
        result={"task": "<OCR>", "results": [{"name": "a.png", "text": "hi"}], "model": "rapidocr"},
    )
    spec = get_task("OCR")
    assert seed_view(record, "optical-character-recognition", spec)["model"] == "rapidocr"
    assert seed_view(record, "optical-character-recognition", spec)["result"] == {"text": "hi"}
    # A job of the previous version (no model in its result), or one still queued: the configured model.
    record.result = {"task": "<OCR>", "results": [{"name": "a.png", "text": "hi"}]}
    assert seed_view(record, "optical-character-recognition", spec)["model"] == "configured/florence"


def test_seed_tasks_are_the_registry_entries_with_a_seed_name(client: TestClient) -> None:
    from app.core.tasks import InputKind, OutputKind, TaskSpec, register_task, unregister_task

    listed = client.get("/api/tasks", headers=auth_header()).json()
    assert set(listed) == {
        "image-captioning",
        "object-detection",
        "optical-character-recognition",
        "image-classification",
        "zero-shot-image-classification",
    }
    spec = register_task(
        TaskSpec(
            "<FAKE_SEED>",
            "FAKE_SEED",
            "Fake",
            "Fake.",
            InputKind.NONE,
            OutputKind.TEXT,
            backend="fake",
            seed_name="fake-seed",
        )
    )
    try:
        assert "fake-seed" in client.get("/api/tasks", headers=auth_header()).json()
        assert client.get("/api/tasks/fake-seed/models", headers=auth_header()).status_code == 200
    finally:
        unregister_task(spec.token)
    assert "fake-seed" not in client.get("/api/tasks", headers=auth_header()).json()


# -- the compat OpenAPI description, fuzzed ------------------------------------------------------------------
EXAMPLES = 15


@pytest.fixture(scope="module")
def api_schema(classify_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseSchema]:
    data_dir = tmp_path_factory.mktemp("compat-fuzz")
    app = create_app(api_settings(classify_settings, data_dir=data_dir, rate_limit="", max_image_bytes=200_000))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # also starts the app's lifespan
    thread = app.state.api.preload_thread
    if thread is not None:
        thread.join(timeout=120)
    yield schema


def vitrivr_operations(schema: BaseSchema) -> list[APIOperation]:
    operations = [result.ok() for result in schema.get_all_operations()]
    return [op for op in operations if op.path.startswith(("/api/tasks", "/api/models"))]


def test_the_compat_description_says_what_the_seed_spec_says(api_schema: BaseSchema) -> None:
    paths = {f"{op.method.upper()} {op.path}" for op in vitrivr_operations(api_schema)}
    for task in ("zero-shot-image-classification", "image-captioning", "object-detection"):
        assert {
            f"POST /api/tasks/{task}/{{model}}/jobs",
            f"POST /api/tasks/{task}/batched/{{model}}/jobs",
            f"GET /api/tasks/{task}/jobs/{{job}}",
            f"GET /api/tasks/{task}/batched/jobs/{{job}}",
        } <= paths
    assert {"GET /api/tasks", "GET /api/models", "GET /api/tasks/{task}/models"} <= paths
    raw = api_schema.raw_schema
    created = raw["paths"][f"{ZERO_SHOT}/{{model}}/jobs"]["post"]["responses"]
    assert "200" in created and "202" not in created
    states = raw["components"]["schemas"]["SeedJobStatus"]["properties"]["status"]["enum"]
    assert set(states) == SEED_STATES
    batch_body = raw["paths"][f"{ZERO_SHOT}/batched/{{model}}/jobs"]["post"]["requestBody"]["content"]
    assert batch_body["application/json"]["schema"]["required"] == ["image"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_vitrivr_routes_conform_to_their_description(api_schema: BaseSchema, mode: GenerationMode) -> None:
    fuzz(vitrivr_operations(api_schema), mode, EXAMPLES)
