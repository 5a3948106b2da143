"""The task registry: one entry per task, found by token, short name or alias, extended at run time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.core.errors import InvalidInput, UnknownTask
from app.core.task_inputs import MAX_TOP_N, TaskInput, ZeroShotRequest
from app.core.tasks import (
    CLASSIFY,
    FLORENCE_TASKS,
    PROMPT_TASKS,
    REGISTRY,
    ZERO_SHOT,
    InputKind,
    OutputKind,
    TaskSpec,
    all_tasks,
    get_task,
    register_task,
    unregister_task,
)

SHOUT = TaskSpec("<SHOUT>", "SHOUT", "Shout", "The caption, louder.", InputKind.NONE, OutputKind.TEXT,
                 ("yell",), backend="shouter")  # fmt: skip


@pytest.fixture
def shout() -> Iterator[TaskSpec]:
    register_task(SHOUT)
    yield SHOUT
    unregister_task(SHOUT.token)


def test_the_built_in_tasks_in_the_order_every_edge_lists_them() -> None:
    assert all_tasks() == (*FLORENCE_TASKS, CLASSIFY, ZERO_SHOT)
    assert len(PROMPT_TASKS) == 15 and len({spec.token for spec in all_tasks()}) == 18
    assert {spec.backend for spec in all_tasks()} == {"florence2", "classifier", "zero_shot"}
    assert [spec.short_name for spec in all_tasks() if spec.job_kind] == ["CLASSIFY", "ZERO_SHOT"]


@pytest.mark.parametrize(
    ("name", "token"),
    [("<OD>", "<OD>"), ("od", "<OD>"), ("object-detection", "<OD>"), ("caption", "<CAPTION>"),
     ("CLASSIFY", "<CLASSIFY>"), ("imagenet", "<CLASSIFY>"), ("<CLASSIFY>", "<CLASSIFY>"),
     ("zero-shot", "<ZERO_SHOT>"), ("clip", "<ZERO_SHOT>"), (" Zero Shot ", "<ZERO_SHOT>")],
)  # fmt: skip
def test_a_task_is_found_by_token_short_name_or_alias(name: str, token: str) -> None:
    assert get_task(name).token == token


def test_an_unknown_task_names_the_valid_ones() -> None:
    with pytest.raises(UnknownTask) as raised:
        get_task("teleport")
    assert "OD" in raised.value.message and "CLASSIFY" in raised.value.message and "ZERO_SHOT" in raised.value.message


def test_a_registered_task_is_listed_last_and_found_until_it_is_removed(shout: TaskSpec) -> None:
    assert all_tasks()[-1] is shout and get_task("yell") is shout and get_task("<SHOUT>") is shout
    unregister_task(shout.token)
    with pytest.raises(UnknownTask):
        get_task("yell")
    register_task(shout)  # for the fixture's clean-up


def test_a_task_cannot_take_a_name_another_task_answers_to() -> None:
    clash = TaskSpec("<LOUD_OCR>", "LOUD_OCR", "Loud OCR", "x", InputKind.NONE, OutputKind.TEXT, ("ocr",))
    with pytest.raises(ValueError, match="OCR"):
        register_task(clash)
    assert REGISTRY.find("LOUD_OCR") is None  # nothing half-registered


def test_each_task_gets_exactly_the_input_its_entry_says_it_takes() -> None:
    labels = ZeroShotRequest.create(["a cat", "a dog"])
    assert TaskInput(labels=labels).checked(ZERO_SHOT).labels == labels
    assert TaskInput(text="  a cat ").checked(get_task("OVD")).text == "a cat"
    refusals = [
        (ZERO_SHOT, TaskInput(), "missing_labels"),
        (get_task("OD"), TaskInput(labels=labels), "unexpected_labels"),
        (CLASSIFY, TaskInput(text="a cat"), "unexpected_text"),
        (CLASSIFY, TaskInput(top_n=0), "invalid_top_n"),
        (CLASSIFY, TaskInput(top_n=MAX_TOP_N + 1), "invalid_top_n"),
        (get_task("REGION_TO_OCR"), TaskInput(), "missing_region"),
    ]
    for spec, task_input, code in refusals:
        with pytest.raises(InvalidInput) as raised:
            task_input.checked(spec)
        assert raised.value.code == code, spec.short_name
