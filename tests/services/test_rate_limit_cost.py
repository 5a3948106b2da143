"""The one rate-limit cost rule (a unit per model run on one image) at the API's edges: the analyze route
and jobs. The chat's side is in test_chat_flow.py (Analyze everything on two images costs six)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.tasks import FLORENCE_TASKS as TASKS
from app.core.tasks import get_task
from app.services.ratelimit import model_runs, work_cost
from tests.api_support import api_settings, auth_header, png_bytes, running_app

ANALYZE, JOBS = "/api/v1/analyze", "/api/v1/jobs"
IMAGE = {"base64": base64.b64encode(png_bytes((64, 48), "red")).decode()}


def test_the_rule_counts_model_runs_on_images() -> None:
    caption, od, ocr = get_task("CAPTION"), get_task("OD"), get_task("OCR")
    grounding = get_task("caption+grounding")
    assert work_cost(3, [od]) == 3
    assert work_cost(1, [grounding]) == 2  # a caption, then the grounding of that caption
    assert work_cost(4, [caption, od, ocr]) == 12  # "Analyze everything" on four images
    assert work_cost(5, [get_task("CLASSIFY")]) == work_cost(5, [get_task("ZERO_SHOT")]) == 5  # one run per image
    assert {spec.short_name for spec in TASKS if model_runs(spec) != 1} == {"CAPTION_GROUNDING"}


@pytest.fixture
def limited(tiny_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The real app with the test's `RATE_LIMIT` (its parameter); jobs are stored, not worked."""
    settings = api_settings(
        tiny_settings, rate_limit=request.param, preload=False,
        embedded_worker=False, data_dir=tmp_path, max_images_per_request=4,
    )  # fmt: skip
    with running_app(settings) as (_, client):
        yield client


def analyze(client: TestClient, task: str, images: int) -> Any:
    return client.post(ANALYZE, headers=auth_header(), json={"task": task, "images": [IMAGE] * images})


def submit(client: TestClient, task: str, images: int) -> Any:
    body = {"kind": "analyze", "task": task, "images": [IMAGE] * images}
    return client.post(JOBS, headers=auth_header(), json=body)


@pytest.mark.parametrize("limited", ["3/minute"], indirect=True)
def test_a_batch_of_three_images_costs_three(limited: TestClient) -> None:
    first = analyze(limited, "OD", 3)
    assert first.status_code == 200 and len(first.json()["results"]) == 3
    refused = analyze(limited, "OD", 1)  # the three units are spent
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limited")


@pytest.mark.parametrize("limited", ["2/minute"], indirect=True)
def test_caption_and_grounding_on_one_image_costs_two(limited: TestClient) -> None:
    first = analyze(limited, "caption+grounding", 1)
    assert first.status_code == 200 and first.json()["results"][0]["task"] == "<CAPTION_GROUNDING>"
    refused = analyze(limited, "CAPTION", 1)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limited")


@pytest.mark.parametrize("limited", ["3/minute"], indirect=True)
def test_a_request_over_the_whole_limit_in_model_runs_is_413(limited: TestClient) -> None:
    # Two images fit three units as images, but caption + grounding makes them four model runs.
    response = analyze(limited, "caption+grounding", 2)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "over_rate_limit")
    assert (
        "needs 4 units of the rate limit (3/minute), one per model run on one image"
        in (response.json()["error"]["message"])
    )
    assert "Retry-After" not in response.headers
    assert analyze(limited, "OD", 3).status_code == 200  # the refusal spent nothing


@pytest.mark.parametrize("limited", ["3/minute"], indirect=True)
def test_jobs_are_charged_by_the_same_rule(limited: TestClient) -> None:
    assert submit(limited, "caption+grounding", 2).json()["error"]["code"] == "over_rate_limit"
    assert submit(limited, "caption+grounding", 1).status_code == 202  # 2 units
    assert submit(limited, "OD", 1).status_code == 202  # 1 unit: all three spent
    refused = submit(limited, "OD", 1)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limited")
