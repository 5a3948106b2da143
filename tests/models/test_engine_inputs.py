"""What reaches `generate` equals what transformers' `Florence2Processor` builds, for every task.

The tiny checkpoint's tokenizer carries the published tokenizer's `RobertaProcessing`
post-processor (tests/tiny_models.py), so a prompt tokenised with `add_special_tokens` left on
gets a second `<s>`/`</s>` pair here exactly as it would with the real weights. Both input paths
are checked: pixels straight to `generate`, and the image-feature cache (the engine hands
`generate` encoder outputs; they must equal the encoder's output for the processor's inputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from app.core.config import Settings
from app.core.tasks import PROMPT_TASKS, InputKind, TaskSpec
from app.models.florence import FlorenceBackend, GenerationOptions, TaskRequest
from app.models.manager import ModelManager

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def request_for(spec: TaskSpec, image: Image.Image) -> TaskRequest:
    if spec.input_kind is InputKind.TEXT:
        return TaskRequest.create(image, spec, text="a cat")
    if spec.input_kind is InputKind.REGION:
        width, height = image.size
        return TaskRequest.create(image, spec, region=[width * 0.1, height * 0.2, width * 0.7, height * 0.9])
    return TaskRequest.create(image, spec)


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    """One distinct picture per task (sizes differ, so no two share pixels or a feature-cache entry)."""
    rng = np.random.default_rng(12)
    return [
        Image.fromarray(rng.integers(0, 256, size=(40 + 7 * i, 64 + 5 * i, 3), dtype=np.uint8))
        for i in range(len(PROMPT_TASKS))
    ]


@pytest.fixture(scope="module", params=["pixels", "feature-cache"])
def backend(request: pytest.FixtureRequest, tiny_settings: Settings) -> Iterator[FlorenceBackend]:
    cache = 0 if request.param == "pixels" else 64
    manager = ModelManager(tiny_settings.model_copy(update={"image_feature_cache": cache}))
    yield manager.get()
    manager.shutdown()


class GenerateSpy:
    """Records the keyword arguments of every `generate` call and the encoder output `generate` computes."""

    def __init__(self, backend: FlorenceBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        self.encoder_states: list[torch.Tensor] = []
        model = backend._model
        original = model.generate

        def generate(**kwargs: Any) -> Any:
            self.calls.append(kwargs)
            return original(**kwargs)

        monkeypatch.setattr(model, "generate", generate)
        self.hook = model.get_encoder().register_forward_hook(self.record)

    def record(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.encoder_states.append(output.last_hidden_state.detach().clone())


@pytest.fixture()
def spy(backend: FlorenceBackend, monkeypatch: pytest.MonkeyPatch) -> Iterator[GenerateSpy]:
    recorder = GenerateSpy(backend, monkeypatch)
    yield recorder
    recorder.hook.remove()


def assert_inputs_equal_the_processors(backend: FlorenceBackend, spy: GenerateSpy, requests: list[TaskRequest]) -> None:
    processor = backend._processor
    expected = processor(
        text=[r.prompt() for r in requests], images=[r.image for r in requests], return_tensors="pt", padding=True
    )
    (sent,) = spy.calls
    assert torch.equal(sent["input_ids"], expected["input_ids"])
    assert torch.equal(sent["attention_mask"], expected["attention_mask"])
    if backend._features is None:
        assert torch.equal(sent["pixel_values"], expected["pixel_values"])
        return
    assert "pixel_values" not in sent
    # What `generate` itself encodes from the processor's inputs is what the cache path handed it.
    spy.encoder_states.clear()
    reference = dict(expected)
    reference["pixel_values"] = reference["pixel_values"].to(backend._dtype)
    with torch.inference_mode():
        type(backend._model).generate(backend._model, **reference, max_new_tokens=1, num_beams=1, do_sample=False)
    assert torch.equal(sent["encoder_outputs"].last_hidden_state, spy.encoder_states[0])


def test_the_catalogue_has_all_fifteen_prompt_tasks() -> None:
    assert len(PROMPT_TASKS) == 15 and len({spec.token for spec in PROMPT_TASKS}) == 15


def test_the_tokenizer_adds_the_real_special_tokens_when_asked(backend: FlorenceBackend) -> None:
    tokenizer = backend._processor.tokenizer
    with_specials = tokenizer("a cat").input_ids
    assert with_specials[0] == tokenizer.bos_token_id and with_specials[-1] == tokenizer.eos_token_id
    assert with_specials[1:-1] == tokenizer("a cat", add_special_tokens=False).input_ids
    # The published vocabulary order: `<s> <pad> </s> <unk>`, then (after BART's words and `<mask>`)
    # `<od> </od> <ocr> </ocr>`, the 1000 locations, the other task tokens, `<and>`, `<image>`.
    od, loc0, loc999, cap, and_, image = tokenizer.convert_tokens_to_ids(
        ["<od>", "<loc_0>", "<loc_999>", "<cap>", "<and>", "<image>"]
    )
    assert (loc0, loc999, cap) == (od + 4, od + 1003, od + 1004)
    assert image == and_ + 1 == len(tokenizer) - 1


@pytest.mark.parametrize("spec", PROMPT_TASKS, ids=[spec.short_name for spec in PROMPT_TASKS])
def test_each_tasks_generate_inputs_equal_the_processors(
    backend: FlorenceBackend, spy: GenerateSpy, pictures: list[Image.Image], spec: TaskSpec
) -> None:
    request = request_for(spec, pictures[PROMPT_TASKS.index(spec)])
    backend.run([request], generation=GenerationOptions(num_beams=1, max_new_tokens=1))
    assert_inputs_equal_the_processors(backend, spy, [request])
    ids = spy.calls[0]["input_ids"][0].tolist()
    tokenizer = backend._processor.tokenizer
    image_tokens = backend._processor.num_image_tokens
    # One `<s>` right after the image tokens and one `</s>` at the end: nothing doubled.
    assert ids[image_tokens] == tokenizer.bos_token_id and ids[image_tokens + 1] != tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id and ids[-2] != tokenizer.eos_token_id


def test_one_batch_of_every_task_equals_the_processors(
    backend: FlorenceBackend, spy: GenerateSpy, pictures: list[Image.Image]
) -> None:
    requests = [request_for(spec, picture) for spec, picture in zip(PROMPT_TASKS, pictures, strict=True)]
    if backend._features is not None:
        # Encoded one by one by the tests above; the reference encodes all at once, and the vision
        # tower's float sums differ in the last bits between batch sizes.
        backend._features.clear()
    backend.run(requests, generation=GenerationOptions(num_beams=1, max_new_tokens=1))
    assert_inputs_equal_the_processors(backend, spy, requests)
    lengths = spy.calls[0]["attention_mask"].sum(dim=1)
    assert lengths.unique().numel() > 5  # prompts of many lengths, right-padded in one batch
