"""Property-based testing of the OpenAPI schema with schemathesis (bounded: a few examples per operation).

Every generated request must get a documented status with a body that matches the schema, and no
5xx other than a deliberate 503 (the offline test machine has no classifier weights, for example).
`positive_data_acceptance` is left out: a schema can say "a string of base64" but not "bytes that
decode to an image", so schema-valid requests are legitimately refused with 400/413/415.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi import checks as openapi_checks

from app.core.config import Settings
from app.serving.server import create_app
from tests.api_support import api_settings, auth_header, png_bytes, running_app

EXAMPLES_PER_OPERATION = 10


def no_crash(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No 5xx except a deliberate 503 (busy, or a model that is not installed here) in the error shape."""
    if response.status_code >= 500:
        body = response.json()
        assert response.status_code == 503, f"{response.status_code}: {response.text[:300]}"
        assert set(body["error"]) >= {"code", "message"}


CHECKS = [
    no_crash,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_schema(tiny_settings: Settings) -> Iterator[BaseSchema]:
    app = create_app(api_settings(tiny_settings, rate_limit="", max_image_bytes=200_000, fetch_timeout_s=2))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # also starts the app's lifespan
    thread = app.state.api.preload_thread
    if thread is not None:
        thread.join(timeout=120)
    yield schema


def fuzz(operations: list[APIOperation], mode: GenerationMode, examples: int) -> None:
    """`examples` generated requests per operation, each checked by CHECKS. In negative mode only operations
    with a request body are driven: only a body has anything to get wrong."""
    if mode is GenerationMode.NEGATIVE:
        operations = [op for op in operations if len(op.body) > 0]
    assert operations
    for operation in operations:

        @given(case=operation.as_strategy(mode, headers=auth_header()))
        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        check()


# The pytest plugin's lazy `from_fixture` loader breaks on pytest 9 (it rewrites `node._nodeid`), so the
# operations are driven through their Hypothesis strategies directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_api_conforms_to_its_schema(api_schema: BaseSchema, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /api/v1/analyze",
        "GET /api/v1/tasks",
        "GET /api/v1/models",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    }
    fuzz(operations, mode, EXAMPLES_PER_OPERATION)


@pytest.fixture(scope="module")
def answering(classify_settings: Settings) -> Iterator[tuple[BaseSchema, TestClient]]:
    """A server with every built-in model (tiny checkpoints), and its OpenAPI document."""
    settings = api_settings(classify_settings, rate_limit="", preload=False, max_images_per_request=4)
    with running_app(settings) as (app, client):
        yield schemathesis.openapi.from_dict(app.openapi()), client


@pytest.mark.parametrize(
    ("task", "fields", "kind"),
    [
        ("CAPTION", {"annotate": True}, "text"),
        ("OD", {"annotate": True, "min_score": 0.0}, "detections"),
        ("CAPTION_GROUNDING", {}, "detections"),
        ("REFERRING_EXPRESSION_SEGMENTATION", {"text": "the red square"}, "segmentation"),
        ("REGION_TO_SEGMENTATION", {"region": [1, 1, 40, 30]}, "segmentation"),
        ("OCR_WITH_REGION", {}, "ocr"),
        ("CLASSIFY", {"top_n": 2, "language": "de"}, "classification"),
        ("ZERO_SHOT", {"labels": ["a cat", "a dog"], "categories": {"a cat": "pet"}, "multi_label": True}, "zero_shot"),
    ],
)
def test_real_answers_are_the_documented_entries(
    answering: tuple[BaseSchema, TestClient], task: str, fields: dict[str, object], kind: str
) -> None:
    """Each kind of result, and a failed image beside it, as `/api/v1/analyze` documents its answer."""
    schema, client = answering
    images = [{"base64": base64.b64encode(png_bytes((64, 48))).decode()}, {"base64": "@@"}]
    response = client.post("/api/v1/analyze", headers=auth_header(), json={"task": task, "images": images, **fields})
    assert response.status_code == 200, response.text[:300]
    result, failed = response.json()["results"]
    assert (result["kind"], failed["error"]["code"]) == (kind, "invalid_base64")
    schema["/api/v1/analyze"]["POST"].validate_response(response)


def test_real_classify_answers_are_the_documented_entries(answering: tuple[BaseSchema, TestClient]) -> None:
    schema, client = answering
    files = [("files", ("a.png", png_bytes((20, 20)), "image/png")), ("files", ("b.png", b"not an image", "image/png"))]
    response = client.post("/api/v1/classify", headers=auth_header(), files=files)
    assert response.status_code == 200
    assert [entry.get("kind") for entry in response.json()["results"]] == ["classification", None]
    schema["/api/v1/classify"]["POST"].validate_response(response)
