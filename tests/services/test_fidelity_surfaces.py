"""Scores, `min_score`, several open-vocabulary classes and caption + grounding, from every way in.

The tiny model answers scripted text chosen by its prompt (tests/scripted_support.py): the API,
jobs, CLI and chat run their real paths, and the prompts the model saw are checked too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.chat.session import ChatSession
from app.core.config import Settings
from app.core.results import DetectionResult, SegmentationResult
from app.models.manager import ModelManager
from tests.api_support import api_settings, auth_header, png_bytes, running_app
from tests.chat_support import decode_picture, download_json, make_services, save_upload, send
from tests.jobs_support import wait_for
from tests.scripted_support import BOX_A, BOX_B, UNSURE_P, scripted_model

OD_PROMPT = "Locate the objects with category name in the image."
ANSWERS: dict[str, tuple[str, str]] = {
    OD_PROMPT: ("car" + BOX_A, "door handle" + BOX_B),
    "cat<and>dog": ("cat" + BOX_A, "dog" + BOX_B),
    "Describe with a paragraph": ("a cat sitting on a red car", ""),
    "What does the image describe?": ("a cat", ""),
    "Locate the phrases in the caption: a cat sitting on a red car": ("a cat" + BOX_A, "a red car" + BOX_B),
    "Locate the phrases in the caption: a cat": ("a cat" + BOX_A, ""),
}
PNG = png_bytes((64, 48), "red")
TERMINAL = ("complete", "failed", "cancelled")


@pytest.fixture(scope="module")
def tokenizer(tiny_florence_dir: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_florence_dir).tokenizer


@pytest.fixture()
def prompts(monkeypatch: pytest.MonkeyPatch, tokenizer: Any) -> Iterator[list[str]]:
    with scripted_model(monkeypatch, tokenizer, ANSWERS) as seen:
        yield seen


@pytest.fixture(scope="module")
def client(tiny_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = api_settings(tiny_settings, data_dir=tmp_path_factory.mktemp("jobs"), max_queue_size=32)
    served: tuple[FastAPI, TestClient]
    with running_app(settings) as served:
        yield served[1]


def analyze(client: TestClient, **body: Any) -> Any:
    response = client.post("/api/v1/analyze", headers=auth_header(), json={"images": [{"base64": _b64()}], **body})
    return response


def _b64() -> str:
    import base64

    return base64.b64encode(PNG).decode()


# -- API ---------------------------------------------------------------------------------------------------
def test_api_results_carry_scores_and_min_score_drops_the_unsure_box(client: TestClient, prompts: list[str]) -> None:
    everything = analyze(client, task="OD").json()["results"][0]["detections"]
    assert [(d["label"], d["score"]) for d in everything] == [("car", 1.0), ("door handle", round(UNSURE_P, 4))]
    kept = analyze(client, task="OD", min_score=0.5).json()["results"][0]["detections"]
    assert [(d["id"], d["label"]) for d in kept] == [(1, "car")]
    form = client.post(
        "/api/v1/analyze",
        headers=auth_header(),
        data={"task": "OD", "min_score": "0.05"},
        files={"files": ("a.png", PNG, "image/png")},
    )
    assert len(form.json()["results"][0]["detections"]) == 2
    assert prompts == [OD_PROMPT] * 3


@pytest.mark.parametrize("bad", [-0.1, 1.5, "x"])
def test_min_score_out_of_range_is_refused(client: TestClient, bad: object) -> None:
    assert analyze(client, task="OD", min_score=bad).status_code == 422


@pytest.mark.parametrize(
    "classes", [{"labels": ["cat", " dog ", "cat"]}, {"text": "cat<and>dog"}, {"text": "cat <and> dog"}]
)
def test_api_open_vocabulary_detection_with_several_classes(
    client: TestClient, prompts: list[str], classes: dict[str, Any]
) -> None:
    response = analyze(client, task="OVD", **classes)
    assert response.status_code == 200, response.text
    detections = response.json()["results"][0]["detections"]
    assert [d["label"] for d in detections] == ["cat", "dog"]
    assert prompts == ["Locate cat<and>dog in the image."]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"task": "OD", "labels": ["cat"]}, "unexpected_labels"),
        ({"task": "OVD", "labels": ["cat"], "text": "dog"}, "labels_and_text"),
        ({"task": "OVD", "text": "cat<loc_5>"}, "invalid_text"),
        ({"task": "OVD", "labels": [" ", ""]}, "missing_text"),
        ({"task": "CAPTION_GROUNDING", "text": "OD"}, "invalid_text"),
    ],
)
def test_class_and_cascade_inputs_are_checked(client: TestClient, body: dict[str, Any], code: str) -> None:
    response = analyze(client, **body)
    assert response.status_code in (400, 422)
    if response.status_code == 400:
        assert response.json()["error"]["code"] == code


def test_api_caption_and_grounding_in_one_request(client: TestClient, prompts: list[str]) -> None:
    response = analyze(client, task="caption_grounding", annotate=True)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert (result["task"], result["caption"]) == ("<CAPTION_GROUNDING>", "a cat sitting on a red car")
    assert [(d["label"], d["score"]) for d in result["detections"]] == [
        ("a cat", 1.0),
        ("a red car", round(UNSURE_P, 4)),
    ]
    assert result["annotated_png"]
    assert prompts == [
        "Describe with a paragraph what is shown in the image.",
        "Locate the phrases in the caption: a cat sitting on a red car",
    ]
    prompts.clear()
    chosen = analyze(client, task="CAPTION_GROUNDING", text="caption").json()["results"][0]
    assert chosen["caption"] == "a cat" and [d["label"] for d in chosen["detections"]] == ["a cat"]
    assert prompts[0] == "What does the image describe?"


def test_the_task_list_offers_caption_and_grounding(client: TestClient) -> None:
    tasks = client.get("/api/v1/tasks", headers=auth_header()).json()["tasks"]
    assert "CAPTION_GROUNDING" in [t["short_name"] for t in tasks]


# -- jobs --------------------------------------------------------------------------------------------------
def run_job(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    created = client.post("/api/v1/jobs", headers=auth_header(), json={"kind": "analyze", **body})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}", headers=auth_header()).json()
        return job if job["status"] in TERMINAL else None

    return wait_for(finished, 60, f"job {job_id} to finish")


def test_jobs_take_labels_min_score_and_the_cascade(client: TestClient, prompts: list[str]) -> None:
    images = [{"base64": _b64()}]
    job = run_job(client, {"task": "OVD", "labels": ["cat", "dog"], "min_score": 0.5, "images": images})
    assert job["status"] == "complete", job
    (entry,) = job["result"]["results"]
    assert [(d["label"], d["score"]) for d in entry["detections"]] == [("cat", 1.0)]
    job = run_job(client, {"task": "CAPTION_GROUNDING", "images": images})
    (entry,) = job["result"]["results"]
    assert entry["caption"] == "a cat sitting on a red car" and len(entry["detections"]) == 2


# -- CLI ---------------------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tiny_florence_dir: Path, tmp_path: Path) -> Iterator[Path]:
    from app.core.config import get_settings

    monkeypatch.chdir(tmp_path)
    for name, value in {"MODEL_ID": str(tiny_florence_dir), "NUM_BEAMS": "1", "WARMUP": "false"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    Image.new("RGB", (64, 48), "red").save(tmp_path / "a.png")
    yield tmp_path
    get_settings.cache_clear()


def test_cli_min_score_several_classes_and_the_cascade(
    cli_env: Path, prompts: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli.main import main

    assert main(["analyze", "a.png", "--task", "OVD", "--text", "cat<and>dog", "--json", "ovd.json"]) == 0
    detections = json.loads((cli_env / "ovd.json").read_text())["results"][0]["detections"]
    assert [(d["label"], d["score"]) for d in detections] == [("cat", 1.0), ("dog", round(UNSURE_P, 4))]
    # The summary lists each instance with the number and score drawn on the annotated image.
    summary = capsys.readouterr().out.splitlines()
    assert summary[1:4] == ["a.png 64x48: 2 found: cat, dog", "  #1 cat 1.00 (3, 16, 59, 37)",
                            f"  #2 dog {UNSURE_P:.2f} (27, 24, 30, 25)"]  # fmt: skip
    args = ["analyze", "a.png", "--task", "OD", "--min-score", "0.5", "--json", "od.json", "--annotate", "out"]
    assert main(args) == 0
    assert [d["label"] for d in json.loads((cli_env / "od.json").read_text())["results"][0]["detections"]] == ["car"]
    coco = json.loads((cli_env / "out" / "a.od.coco.json").read_text())
    assert [a["score"] for a in coco["annotations"]] == [1.0]
    assert main(["analyze", "a.png", "--task", "CAPTION_GROUNDING", "--json", "cg.json"]) == 0
    grounded = json.loads((cli_env / "cg.json").read_text())["results"][0]
    assert grounded["caption"] == "a cat sitting on a red car"


def test_cli_refuses_a_score_outside_zero_to_one(cli_env: Path) -> None:
    from app.cli.main import main

    with pytest.raises(SystemExit):
        main(["analyze", "a.png", "--task", "OD", "--min-score", "2"])


# -- chat --------------------------------------------------------------------------------------------------
def test_chat_lists_scores_accepts_a_class_list_and_runs_the_cascade(
    tiny_settings: Settings, tiny_manager: ModelManager, prompts: list[str], tmp_path: Path
) -> None:
    services = make_services(tiny_settings, tiny_manager)
    upload = save_upload(Image.new("RGB", (64, 48), "red"), tmp_path, "red.png")
    (reply,) = send(services, "cat, dog", [upload], "OVD", ChatSession(identity="t")).replies
    assert prompts[-1] == "Locate cat<and>dog in the image."
    assert f"- \\#2 dog {UNSURE_P:.2f} (" in reply.markdown
    assert "- \\#1 cat 1.00 (" in reply.markdown
    (reply,) = send(services, "", [upload], "CAPTION_GROUNDING", ChatSession(identity="t")).replies
    assert "a cat sitting on a red car" in reply.markdown
    assert decode_picture(reply).size == (64, 48)
    body = download_json(reply, "red · grounded caption.json")
    assert body["caption"] == "a cat sitting on a red car"


# -- polygons ----------------------------------------------------------------------------------------------
def test_an_instance_whose_parts_are_all_too_short_is_kept_but_not_counted() -> None:
    result = SegmentationResult.from_polygons(
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        (100, 100),
        [[[1, 1, 50, 1, 50, 50], [5, 5, 9, 9]], [[3, 3, 4, 4]]],
        ["", ""],
        scores=[0.9, 0.2],
    )
    assert result.polygons == (((1.0, 1.0, 50.0, 1.0, 50.0, 50.0),), ())
    assert result.mask_count == 1 and result.summary() == "1 mask(s): region"
    assert [i["xyxy"] for i in result.to_dict()["instances"]] == [[1, 1, 50, 50], None]
    assert len(result.to_coco()["annotations"]) == 1
    assert isinstance(DetectionResult("<OD>", (1, 1)).summary(), str)
