"""Typed job parameters: kinds from the registry, the stored JSON shape, and records of the previous version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.core.errors import InvalidInput
from app.core.tasks import InputKind, OutputKind, TaskSpec, register_task, unregister_task
from app.jobs.params import AnalyzeParams, ClassifyParams, ZeroShotParams, job_kinds, load_params, normalize_kind

# As the previous version wrote them (app/jobs/kinds.py built plain dicts; the seed routes added `seed`).
OLD_ANALYZE = {
    "task": "<OD>",
    "text": None,
    "region": None,
    "annotate": True,
    "min_score": 0.25,
    "input_errors": {"1": {"code": "corrupt_image", "message": "broken", "status": 400}},
}
OLD_CLASSIFY = {"top_n": 4, "language": "de"}
OLD_ZERO_SHOT = {
    "labels": ["a cat", "a dog"],
    "categories": None,
    "multi_label": False,
    "templates": ["{}"],
    "seed": {
        "task": "zero-shot-image-classification",
        "batched": True,
        "classes": ["a cat", "a dog"],
        "requested_model": "clip",
        "served_model": "openai/clip-vit-base-patch32",
    },
}


@pytest.fixture
def fake_job_kind() -> Iterator[TaskSpec]:
    spec = register_task(
        TaskSpec(
            "<FAKE_JOB>",
            "FAKE_JOB",
            "Fake",
            "A task with its own job kind.",
            InputKind.NONE,
            OutputKind.TEXT,
            ("fake_job_alias",),
            backend="fake",
            job_kind="fake-job",
        )
    )
    try:
        yield spec
    finally:
        unregister_task(spec.token)


def test_kinds_are_read_from_the_registry_when_asked(fake_job_kind: TaskSpec) -> None:
    assert list(job_kinds())[:3] == ["analyze", "classify", "zero-shot"]
    assert job_kinds()["fake-job"] is fake_job_kind
    assert normalize_kind("fake-job") == "fake-job"
    assert normalize_kind("FAKE_JOB_ALIAS") == "fake-job"  # an alias of the task names its kind
    # A kind of its own that is not a legacy kind takes the analyze parameters, its task implied.
    params = load_params("fake-job", {})
    assert isinstance(params, AnalyzeParams) and params.spec() is fake_job_kind


def test_legacy_kind_aliases_still_name_their_kind() -> None:
    for alias, kind in [
        ("zero_shot", "zero-shot"),
        ("zeroshot", "zero-shot"),
        ("Zero-Shot", "zero-shot"),
        ("classification", "classify"),
        ("classify-image", "classify"),
        ("analyze", "analyze"),
    ]:
        assert normalize_kind(alias) == kind
    for bad in ("paint", "", None, 3, "OD", "caption"):  # a task without a job kind is not a kind
        with pytest.raises(InvalidInput) as raised:
            normalize_kind(bad)
        assert raised.value.code == "unknown_job_kind" and "analyze, classify, zero-shot" in raised.value.message


def test_records_of_the_previous_version_load_into_their_kinds_model() -> None:
    analyze = load_params("analyze", OLD_ANALYZE)
    assert isinstance(analyze, AnalyzeParams)
    assert (analyze.task, analyze.annotate, analyze.min_score) == ("<OD>", True, 0.25)
    assert analyze.input_errors == OLD_ANALYZE["input_errors"]
    assert analyze.task_input().min_score == 0.25
    classify = load_params("classify", OLD_CLASSIFY)
    assert isinstance(classify, ClassifyParams) and (classify.task_input().top_n, classify.language) == (4, "de")
    zero_shot = load_params("zero-shot", OLD_ZERO_SHOT)
    assert isinstance(zero_shot, ZeroShotParams) and zero_shot.seed is not None
    assert zero_shot.seed.served_model == "openai/clip-vit-base-patch32" and zero_shot.seed.batched
    labels = zero_shot.task_input().labels
    assert labels is not None and labels.labels == ("a cat", "a dog") and labels.templates == ("{}",)


@pytest.mark.parametrize(
    ("kind", "old"), [("analyze", OLD_ANALYZE), ("classify", OLD_CLASSIFY), ("zero-shot", OLD_ZERO_SHOT)]
)
def test_stored_params_keep_the_previous_field_names(kind: str, old: dict[str, Any]) -> None:
    stored = load_params(kind, old).stored()
    assert "kind" not in stored
    expected = {k: v for k, v in old.items() if v is not None or kind == "zero-shot"}
    assert stored == expected


def test_unreadable_params_are_an_input_error_naming_the_fields() -> None:
    with pytest.raises(InvalidInput) as raised:
        load_params("classify", {"top_n": "many", "language": "en", "secret": "x"})
    assert raised.value.code == "invalid_job_params" and "top_n" in raised.value.message
    assert "many" not in raised.value.message


def test_zero_shot_fields_are_refused_on_a_task_that_takes_no_labels() -> None:
    with pytest.raises(InvalidInput):
        AnalyzeParams(task="<OD>", multi_label=True).task_input()
