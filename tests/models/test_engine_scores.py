"""Generation settings and per-instance confidence scores, through the real tiny Florence-2 `generate`.

Scripted logits processors decide which token each step emits and how sure the step is: a
"certain" step leaves only the scripted id finite (probability exactly 1); an "unsure" step keeps
`ALTERNATIVES` other ids just below it, so the scripted id still wins but with the probability
`UNSURE_P`. An instance's score is the mean over its label and `<loc_N>` tokens, so an instance
made only of unsure tokens must score `UNSURE_P` and one of certain tokens 1.0, whichever task.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from app.core.config import Settings
from app.core.results import DetectionResult, OCRResult, SegmentationResult
from app.core.tasks import get_task
from app.models.florence import FlorenceBackend, GenerationOptions, TaskRequest
from app.models.manager import ModelManager
from tests.scripted_support import UNSURE_P, Scripted

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ModelPaced(LogitsProcessor):
    """Emits the script, but the scripted id's probability comes from the model: it sits just above the
    model's best other id, so its share depends on the whole distribution the network produced."""

    def __init__(self, scripts: Sequence[Sequence[int]], num_beams: int, pad: int) -> None:
        self.scripts, self.num_beams, self.pad = scripts, num_beams, pad

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - 1
        paced = scores.clone()
        for row in range(input_ids.shape[0]):
            script = self.scripts[row // self.num_beams]
            target = script[step] if step < len(script) else self.pad
            paced[row, target] = scores[row].max() + 0.5
        return paced  # type: ignore[return-value]


@pytest.fixture(scope="module")
def backend(tiny_manager: ModelManager) -> FlorenceBackend:
    loaded: FlorenceBackend = tiny_manager.get("florence2")
    return loaded


def ids(backend: FlorenceBackend, text: str) -> list[int]:
    tokenizer = backend._processor.tokenizer
    found: list[int] = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in found, text
    return found


def run_unsure_tail(backend: FlorenceBackend, request: TaskRequest, sure: str, unsure: str, num_beams: int = 1) -> Any:
    """Generate `<s> sure unsure </s>` where every token of `unsure` is an unsure step."""
    tokenizer = backend._processor.tokenizer
    head, tail = ids(backend, sure), ids(backend, unsure)
    assert ids(backend, sure + unsure) == head + tail  # `sure` ends on a location token: a clean split
    script = [tokenizer.bos_token_id, *head, *tail, tokenizer.eos_token_id]
    unsure_steps = set(range(1 + len(head), 1 + len(head) + len(tail)))
    processor = Scripted([script], [unsure_steps], num_beams, tokenizer.pad_token_id)
    options = GenerationOptions(num_beams=num_beams, max_new_tokens=len(script) + 2)
    (result,) = backend.run([request], generation=options, logits_processor=LogitsProcessorList([processor]))
    return result


def image(size: tuple[int, int] = (333, 517)) -> Image.Image:
    return Image.new("RGB", size, (90, 120, 150))


BOX_A = "<loc_53><loc_334><loc_933><loc_775>"
BOX_B = "<loc_425><loc_504><loc_474><loc_536>"
POLY_A = "<loc_100><loc_100><loc_300><loc_100><loc_300><loc_300>"
POLY_B = "<loc_500><loc_500><loc_700><loc_500><loc_600><loc_700>"
IN_POLY_A, IN_POLY_B = f"<poly>{POLY_A}</poly>", f"<poly>{POLY_B}</poly>"
QUAD = "<loc_100><loc_200><loc_400><loc_200><loc_400><loc_260><loc_100><loc_260>"
QUAD_B = "<loc_120><loc_700><loc_880><loc_690><loc_885><loc_780><loc_118><loc_790>"

# task, extra input, the certain instances, the unsure last instance, instances expected
CASES: list[tuple[str, str | None, str, str, int]] = [
    ("OD", None, "car" + BOX_A, "door handle" + BOX_B, 2),
    ("DENSE_REGION_CAPTION", None, "a red car" + BOX_A + BOX_B, "the sky" + BOX_B, 3),
    ("REGION_PROPOSAL", None, BOX_A + BOX_A, BOX_B, 3),
    ("CAPTION_TO_PHRASE_GROUNDING", "a cat on a red car", "a cat" + BOX_A + BOX_B, "a red car" + BOX_B, 3),
    ("OPEN_VOCABULARY_DETECTION", "a cat<and>a dog", "a cat" + BOX_A, "a dog" + BOX_B, 2),
    ("OPEN_VOCABULARY_DETECTION", "a cat<and>a dog", "a cat" + IN_POLY_A, "a dog" + IN_POLY_B, 2),
    ("REFERRING_EXPRESSION_SEGMENTATION", "a cat", IN_POLY_A, IN_POLY_B, 2),
    ("REGION_TO_SEGMENTATION", None, f"<poly>{POLY_A}<sep>{POLY_B}</poly>", IN_POLY_B, 2),
    ("OCR_WITH_REGION", None, "HELLO" + QUAD, "stop sign 2024" + QUAD_B, 2),
]  # fmt: skip


def scores_of(result: Any) -> tuple[float, ...] | None:
    assert isinstance(result, DetectionResult | SegmentationResult | OCRResult)
    return result.scores


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize(
    ("task", "text", "sure", "unsure", "count"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_an_unsure_instance_scores_its_tokens_probability_and_the_others_one(
    backend: FlorenceBackend, task: str, text: str | None, sure: str, unsure: str, count: int, num_beams: int
) -> None:
    region = [20, 30, 300, 400] if get_task(task).needs_region else None
    request = TaskRequest.create(image(), get_task(task), text=text, region=region)
    result = run_unsure_tail(backend, request, sure, unsure, num_beams)
    scores = scores_of(result)
    assert scores is not None and len(scores) == count
    assert scores[:-1] == pytest.approx([1.0] * (count - 1), abs=1e-6)
    assert scores[-1] == pytest.approx(UNSURE_P, rel=1e-4)
    assert scores[-1] < 0.2 < 0.99 < min(scores[:-1])
    listed = result.to_dict().get("detections") or result.to_dict().get("instances") or result.to_dict()["regions"]
    assert [item["score"] for item in listed] == [round(s, 4) for s in scores]


def test_coco_carries_each_instances_score(backend: FlorenceBackend) -> None:
    request = TaskRequest.create(image(), get_task("OD"))
    result = run_unsure_tail(backend, request, "car" + BOX_A, "door handle" + BOX_B)
    assert isinstance(result, DetectionResult)
    assert [a["score"] for a in result.to_coco()["annotations"]] == [1.0, round(UNSURE_P, 4)]


def test_text_tasks_ask_generate_for_no_scores(backend: FlorenceBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_generate(backend, monkeypatch)
    backend.run([TaskRequest.create(image(), get_task("CAPTION"))], max_new_tokens=2)
    backend.run([TaskRequest.create(image(), get_task("OD"))], max_new_tokens=2)
    assert [call.get("output_scores", False) for call in seen] == [False, True]


# -- same scores whatever the batch or the feature cache --------------------------------------------------
@pytest.fixture(scope="module")
def cached_backend(tiny_settings: Settings) -> Iterator[FlorenceBackend]:
    manager = ModelManager(tiny_settings.model_copy(update={"image_feature_cache": 8}))
    yield manager.get()
    manager.shutdown()


def paced_run(backend: FlorenceBackend, requests: list[TaskRequest], answers: list[str], num_beams: int) -> list[Any]:
    tokenizer = backend._processor.tokenizer
    scripts = [[tokenizer.bos_token_id, *ids(backend, a), tokenizer.eos_token_id] for a in answers]
    processor = ModelPaced(scripts, num_beams, tokenizer.pad_token_id)
    options = GenerationOptions(num_beams=num_beams, max_new_tokens=max(map(len, scripts)) + 2)
    return backend.run(requests, generation=options, logits_processor=LogitsProcessorList([processor]))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batching_and_the_feature_cache_give_the_same_scores_as_single_requests(
    backend: FlorenceBackend, cached_backend: FlorenceBackend, num_beams: int
) -> None:
    from skimage import data

    pictures = [Image.fromarray(x) for x in (data.astronaut(), data.chelsea(), data.coffee())]
    requests = [
        TaskRequest.create(pictures[0], get_task("OD")),
        TaskRequest.create(pictures[1], get_task("OCR_WITH_REGION")),
        TaskRequest.create(pictures[2], get_task("REFERRING_EXPRESSION_SEGMENTATION"), text="a cup"),
    ]
    answers = ["car" + BOX_A + "door handle" + BOX_B, "HELLO" + QUAD, "<poly>" + POLY_A + "</poly>"]
    single = [paced_run(backend, [r], [a], num_beams)[0] for r, a in zip(requests, answers, strict=True)]
    single_scores = [scores_of(r) for r in single]
    assert all(s is not None and min(s) > 0.0 and max(s) < 1.0 for s in single_scores)  # the model's own numbers
    for engine in (backend, cached_backend):
        batched = paced_run(engine, requests, answers, num_beams)
        for got, want in zip(batched, single_scores, strict=True):
            assert scores_of(got) == pytest.approx(want, abs=1e-5)


# -- generation settings -------------------------------------------------------------------------------------
def spy_generate(backend: FlorenceBackend, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    original = backend._model.generate

    def generate(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(backend._model, "generate", generate)
    return seen


def test_generate_gets_the_pinned_settings_and_num_beams(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = ModelManager(tiny_settings.model_copy(update={"num_beams": 3}))
    try:
        loaded: FlorenceBackend = manager.get()
        seen = spy_generate(loaded, monkeypatch)
        manager.run([TaskRequest.create(image(), get_task("OD"))])
    finally:
        manager.shutdown()
    (kwargs,) = seen
    assert kwargs["num_beams"] == 3
    assert kwargs["do_sample"] is False
    assert kwargs["early_stopping"] is False
    assert kwargs["no_repeat_ngram_size"] == 0
    # The checkpoint's forced `<s>` first and `</s>` at the limit stay in force (not overridden).
    assert "forced_bos_token_id" not in kwargs and "forced_eos_token_id" not in kwargs


def test_repeated_labels_and_coordinates_survive(backend: FlorenceBackend) -> None:
    """The checkpoint's `no_repeat_ngram_size=3` would ban the second `car<loc…>` trigram outright."""
    tokenizer = backend._processor.tokenizer
    answer = "car" + BOX_A + "car" + BOX_A
    script = [tokenizer.bos_token_id, *ids(backend, answer), tokenizer.eos_token_id]

    class Prefer(LogitsProcessor):
        # Raises the scripted id far above the rest but leaves -inf (a ban) in place.
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            step = input_ids.shape[1] - 1
            boosted = scores.clone()
            boosted[:, script[step] if step < len(script) else tokenizer.pad_token_id] += 1e4
            return boosted  # type: ignore[return-value]

    options = GenerationOptions(num_beams=1, max_new_tokens=len(script) + 2)
    (result,) = backend.run(
        [TaskRequest.create(image(), get_task("OD"))],
        generation=options,
        logits_processor=LogitsProcessorList([Prefer()]),
    )
    assert isinstance(result, DetectionResult)
    assert result.labels == ("car", "car") and result.xyxy[0] == result.xyxy[1]


def test_an_unscripted_answer_starts_with_the_forced_bos(backend: FlorenceBackend) -> None:
    prepared = [backend.prepare(TaskRequest.create(image(), get_task("OD")))]
    (answer,) = backend.generate_texts(prepared, GenerationOptions(num_beams=3, max_new_tokens=6))
    assert answer.token_ids[0] == backend._processor.tokenizer.bos_token_id
    assert answer.token_probs is not None and len(answer.token_probs) == len(answer.token_ids)
    assert all(0.0 < p <= 1.0 for p in answer.token_probs)
