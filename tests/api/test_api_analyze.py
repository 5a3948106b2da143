"""POST /api/v1/analyze and the operations endpoints against the real app on the tiny checkpoint."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from app.core.config import Settings
from app.services.fetch import FetchPolicy, UrlFetcher, parse_networks
from tests.api_support import ImageServer, api_settings, auth_header, png_bytes, png_header_only, running_app

ANALYZE = "/api/v1/analyze"
PNG = png_bytes((64, 48), "red")
B64 = base64.b64encode(PNG).decode()
B64_URL = f"data:image/png;base64,{B64}"
TRUNCATED = PNG[: len(PNG) // 2]


@pytest.fixture(scope="module")
def served(tiny_settings: Settings) -> Iterator[tuple[FastAPI, TestClient]]:
    settings = api_settings(
        tiny_settings,
        max_request_bytes=1_000_000,
        max_image_bytes=300_000,
        max_images_per_request=4,
        max_image_pixels=1_000_000,
        max_queue_size=2,
    )
    with running_app(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(served: tuple[FastAPI, TestClient]) -> TestClient:
    return served[1]


def post_json(client: TestClient, body: object) -> tuple[int, dict]:
    response = client.post(ANALYZE, headers=auth_header(), json=body)
    return response.status_code, response.json()


def test_readyz_turns_ready_from_the_start_up_preload(client: TestClient) -> None:
    # No analysis has run yet in this module: the model was loaded by PRELOAD at start-up.
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert {m["name"]: m["state"] for m in response.json()["models"]}["florence2"] == "ready"


def test_multipart_upload(client: TestClient) -> None:
    response = client.post(
        ANALYZE, headers=auth_header(), data={"task": "OD"}, files={"files": ("cat.png", PNG, "image/png")}
    )
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert (result["name"], result["kind"], result["task"], result["image_wh"]) == (
        "cat.png",
        "detections",
        "<OD>",
        [64, 48],
    )
    assert isinstance(result["detections"], list)


def test_json_base64_data_url_and_url_keep_input_order(client: TestClient) -> None:
    status, body = post_json(
        client,
        {
            "task": "caption",
            "images": [{"base64": B64}, f"data:image/png;base64,{B64}", {"url": "http://127.0.0.1:9/x.png"}],
        },
    )
    assert status == 200
    first, second, third = body["results"]
    assert (first["name"], first["kind"], first["image_wh"]) == ("images[0]", "text", [64, 48])
    assert second == {**first, "name": "images[1]"}  # same bytes, same greedy answer
    assert third["name"] == "images[2]"
    assert third["error"]["code"] == "url_forbidden"
    assert third["error"]["status"] == 403


def test_a_batch_with_one_bad_image_still_answers_the_others(client: TestClient) -> None:
    files = [
        ("files", ("a.png", PNG, "image/png")),
        ("files", ("broken.png", TRUNCATED, "image/png")),
        ("files", ("c.png", png_bytes((30, 20), "green"), "image/png")),
    ]
    response = client.post(ANALYZE, headers=auth_header(), data={"task": "<CAPTION>"}, files=files)
    assert response.status_code == 200
    ok_a, bad, ok_c = response.json()["results"]
    assert (ok_a["name"], ok_a["image_wh"]) == ("a.png", [64, 48])
    assert bad == {
        "name": "broken.png",
        "error": {
            "code": "corrupt_image",
            "message": bad["error"]["message"],
            "status": 400,
        },
    }
    assert bad["error"]["message"].startswith("broken.png: the image could not be decoded")
    assert (ok_c["name"], ok_c["image_wh"]) == ("c.png", [30, 20])


@pytest.mark.parametrize(
    ("image", "status", "code"),
    [
        ({"base64": base64.b64encode(TRUNCATED).decode()}, 400, "corrupt_image"),
        ({"base64": base64.b64encode(png_header_only(100_000, 100_000)).decode()}, 413, "too_many_pixels"),
        ({"base64": "@@@ not base64 @@@"}, 400, "invalid_base64"),
        ("data:image/png,rawbytes", 400, "invalid_data_url"),
        ({"base64": "A" * 500_000}, 413, "image_too_large"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, 403, "url_forbidden"),
        ({"url": "file:///etc/passwd"}, 400, "url_scheme_not_allowed"),
    ],
    ids=["truncated", "pixel-bomb", "bad-base64", "raw-data-url", "too-many-bytes", "metadata-url", "file-url"],
)
def test_when_every_image_fails_the_status_is_the_first_error(
    client: TestClient, image: object, status: int, code: str
) -> None:
    got_status, body = post_json(client, {"task": "OD", "images": [image]})
    assert got_status == status
    assert body["error"]["code"] == code
    assert body["results"][0]["error"]["code"] == code


def test_a_garbage_file_is_rejected_with_a_code(client: TestClient) -> None:
    # app.core.images maps "no decoder recognises it" to 415 unsupported_image_format; Pillow currently raises
    # KeyError('MPO') first (the MPO plugin is registered lazily), which maps to 400 corrupt_image.
    response = client.post(
        ANALYZE,
        headers=auth_header(),
        data={"task": "OD"},
        files={"files": ("x.png", b"\x00garbage" * 50, "image/png")},
    )
    assert response.status_code in (400, 415)
    assert response.json()["error"]["code"] in ("unsupported_image_format", "corrupt_image")


def test_annotate_returns_a_decodable_png_of_the_image(client: TestClient) -> None:
    status, body = post_json(client, {"task": "OD", "annotate": True, "images": [{"base64": B64}]})
    assert status == 200
    drawn = Image.open(io.BytesIO(base64.b64decode(body["results"][0]["annotated_png"])))
    assert (drawn.format, drawn.size) == ("PNG", (64, 48))
    status, plain = post_json(client, {"task": "OD", "images": [{"base64": B64}]})
    assert "annotated_png" not in plain["results"][0]


def test_region_task_in_json_and_multipart(client: TestClient) -> None:
    status, body = post_json(client, {"task": "REGION_TO_CATEGORY", "region": [0, 0, 32, 24], "images": [B64_URL]})
    assert status == 200
    assert body["results"][0]["region"] == [0, 0, 32, 24]
    response = client.post(
        ANALYZE,
        headers=auth_header(),
        data={"task": "<REGION_TO_CATEGORY>", "region": "100,100,200,200"},
        files={"files": ("a.png", PNG, "image/png")},
    )
    assert response.status_code == 400  # outside the 64x48 image: that image's error is the answer
    assert response.json()["error"]["code"] == "region_outside_image"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"task": "NOPE", "images": [B64_URL]}, 400, "unknown_task"),
        ({"task": "OPEN_VOCABULARY_DETECTION", "images": [B64_URL]}, 400, "missing_text"),
        ({"task": "OD", "text": "cat", "images": [B64_URL]}, 400, "unexpected_text"),
        ({"task": "REGION_TO_OCR", "images": [B64_URL]}, 400, "missing_region"),
        ({"task": "OD", "images": []}, 422, "validation_error"),
        ({"images": [B64_URL]}, 422, "validation_error"),
        ({"task": "OD", "images": ["not a data url"]}, 422, "validation_error"),
        ({"task": "OD", "images": [{"url": "http://a", "base64": "AA=="}]}, 422, "validation_error"),
        ({"task": "OD", "images": [B64_URL] * 5}, 413, "too_many_images"),
    ],
)
def test_request_level_errors(client: TestClient, body: dict, status: int, code: str) -> None:
    got_status, answer = post_json(client, body)
    assert (got_status, answer["error"]["code"]) == (status, code)
    assert set(answer) == {"error"}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_a_422_not_a_500(client: TestClient, number: str) -> None:
    raw = f'{{"task": "REGION_TO_CATEGORY", "region": [{number}, 0, 10, 10], "images": ["{B64_URL}"]}}'
    response = client.post(ANALYZE, headers={**auth_header(), "Content-Type": "application/json"}, content=raw)
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "region.0: Input should be a finite number"


def test_multipart_nan_region_is_a_400(client: TestClient) -> None:
    response = client.post(
        ANALYZE,
        headers=auth_header(),
        data={"task": "REGION_TO_CATEGORY", "region": "nan,0,10,10"},
        files={"files": ("a.png", PNG, "image/png")},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_region")


def test_validation_errors_never_echo_the_input(client: TestClient) -> None:
    huge = "Z" * 200_000
    status, answer = post_json(client, {"task": huge, "images": [B64_URL], huge: 1})
    assert status == 422
    text = str(answer)
    assert "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ" not in text
    assert len(text) < 700
    assert answer["error"]["message"].startswith("task: String should have at most 100 characters")


def test_bad_json_and_media_types(client: TestClient) -> None:
    bad_json = client.post(ANALYZE, headers={**auth_header(), "Content-Type": "application/json"}, content=b"{oops")
    assert (bad_json.status_code, bad_json.json()["error"]["code"]) == (400, "invalid_json")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**auth_header(), **({"Content-Type": content_type} if content_type else {})}
        response = client.post(ANALYZE, headers=headers, content=b"task=OD")
        assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_content_type")


def test_multipart_needs_files(client: TestClient) -> None:
    response = client.post(ANALYZE, headers=auth_header(), data={"task": "OD"}, files={"other": ("a.png", PNG)})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "files: Field required"


def test_oversized_bodies_get_413_before_parsing(client: TestClient) -> None:
    declared = client.post(
        ANALYZE, headers={**auth_header(), "Content-Type": "application/json"}, content=b"{" + b" " * 1_000_001
    )
    assert (declared.status_code, declared.json()["error"]["code"]) == (413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"task": "OD", "images": ["'
        for _ in range(20):
            yield b"A" * 60_000
        yield b'"]}'

    streamed = client.post(ANALYZE, headers={**auth_header(), "Content-Type": "application/json"}, content=chunks())
    assert (streamed.status_code, streamed.json()["error"]["code"]) == (413, "request_too_large")
    assert "1,000,000-byte limit" in streamed.json()["error"]["message"]


def test_unknown_api_paths_are_json_404_and_405(client: TestClient) -> None:
    missing = client.get("/api/v1/nope", headers=auth_header())
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    wrong_method = client.post("/api/v1/tasks", headers=auth_header())
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "GET")
    assert client.get(ANALYZE, headers=auth_header()).headers["allow"] == "POST"


def test_a_full_queue_answers_503_with_retry_after(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    manager = app.state.services.manager
    capacity = manager.settings.max_queue_size
    batcher = manager._batcher(manager.get())  # the bounded Florence-2 queue the API feeds
    batcher.admit(capacity)  # as if `capacity` requests were waiting for the model
    try:
        busy = client.post(ANALYZE, headers=auth_header(), json={"task": "OD", "images": [B64_URL]})
        models = client.get("/api/v1/models", headers=auth_header()).json()
    finally:
        batcher.release(capacity)
    assert busy.status_code == 503
    assert busy.json()["error"]["code"] == "busy"
    assert busy.headers["retry-after"] == "5"
    assert models["queue"] == {"depth": capacity, "capacity": capacity}
    assert client.post(ANALYZE, headers=auth_header(), json={"task": "OD", "images": [B64_URL]}).status_code == 200


def test_models_endpoint(client: TestClient, tiny_settings: Settings) -> None:
    body = client.get("/api/v1/models", headers=auth_header()).json()
    [model] = [m for m in body["models"] if m["name"] == "florence2"]
    assert {k: model[k] for k in ("name", "state", "model_id", "device", "dtype")} == {
        "name": "florence2",
        "state": "ready",
        "model_id": tiny_settings.model_id,
        "device": "cpu",
        "dtype": "float32",
    }
    assert body["queue"] == {"depth": 0, "capacity": 2}


def test_url_images_from_an_allowlisted_network(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    original = app.state.api.fetcher
    image = png_bytes((40, 30), "blue")
    policy = FetchPolicy(max_bytes=300_000, timeout_s=5, allow_networks=parse_networks("127.0.0.1/32"))
    app.state.api.fetcher = UrlFetcher(policy)
    try:
        with ImageServer(image) as server:
            status, body = post_json(
                client,
                {
                    "task": "caption",
                    "images": [
                        {"url": server.url("/image.png")},  # served as text/html: the type is not trusted
                        {"url": server.url("/redirect?to=http://169.254.169.254/latest/meta-data/")},
                    ],
                },
            )
    finally:
        app.state.api.fetcher = original
    assert status == 200
    fetched, redirected = body["results"]
    assert (fetched["kind"], fetched["image_wh"]) == ("text", [40, 30])
    assert redirected["error"]["code"] == "url_forbidden"


def test_metrics_count_requests_per_task_and_status(client: TestClient) -> None:
    post_json(client, {"task": "OD", "images": [B64_URL]})
    post_json(client, {"task": "NOPE", "images": [B64_URL]})
    client.get("/readyz")
    text = client.get("/metrics").text
    assert 'florence_analyze_requests_total{status="200",task="<OD>"}' in text
    assert 'florence_analyze_requests_total{status="400",task="none"}' in text
    assert 'florence_analyze_duration_seconds_count{status="200",task="<OD>"}' in text
    assert 'florence_model_state{model="florence2",state="ready"} 1.0' in text
    assert 'florence_model_state{model="florence2",state="loading"} 0.0' in text
    assert "florence_queue_depth 0.0" in text
    assert 'florence_http_requests_total{method="GET",route="/readyz",status="200"}' in text
    assert 'florence_analyze_images_total{outcome="ok",task="<OD>"}' in text


@given(data=st.one_of(st.binary(max_size=400), st.lists(st.tuples(st.integers(0, len(PNG) - 1), st.integers(0, 255)))))
@hypothesis_settings(max_examples=25, deadline=None, derandomize=True, database=None)
def test_mangled_image_bytes_never_crash_the_api(client: TestClient, data: bytes | list[tuple[int, int]]) -> None:
    """Random bytes, and the valid PNG with random bytes overwritten: an answer with a code, never a 5xx."""
    if isinstance(data, list):
        mangled = bytearray(PNG)
        for offset, value in data:
            mangled[offset] = value
        data = bytes(mangled)
    response = client.post(
        ANALYZE, headers=auth_header(), data={"task": "OD"}, files={"files": ("fuzz.png", data, "image/png")}
    )
    assert response.status_code in (200, 400, 413, 415)
    [result] = response.json()["results"]
    if response.status_code == 200:
        assert result["kind"] == "detections"
    else:
        assert response.json()["error"]["code"] == result["error"]["code"]
