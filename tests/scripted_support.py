"""Scripted answers out of the real tiny Florence-2 `generate`, chosen by each row's prompt.

`scripted_model` patches `Florence2ForConditionalGeneration.generate` so every row whose decoded
prompt contains a key of `answers` emits that answer through a logits processor: the tokens of
`sure` with probability 1, then the tokens of `unsure` with probability `UNSURE_P` (close
alternatives are left next to them). Everything after the scores is the app's real path:
generation, decoding, parsing, scoring, filtering, the API, jobs, CLI and chat. The prompts seen
are recorded in order, so a test can check what the model was asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

BOX_A = "<loc_53><loc_334><loc_933><loc_775>"  # two boxes to script answers with
BOX_B = "<loc_425><loc_504><loc_474><loc_536>"
ALTERNATIVES = 20
GAP = 0.5  # how far below the scripted id the alternatives sit on an unsure step
UNSURE_P = 1 / (1 + ALTERNATIVES * math.exp(-GAP))


class Scripted(LogitsProcessor):
    """Row r emits `scripts[r]` (then `<pad>`); steps listed in `unsure[r]` leave close alternatives."""

    def __init__(self, scripts: Sequence[Sequence[int]], unsure: Sequence[set[int]], num_beams: int, pad: int) -> None:
        self.scripts, self.unsure, self.num_beams, self.pad = scripts, unsure, num_beams, pad

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - 1
        forced = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            script = self.scripts[row // self.num_beams]
            target = script[step] if step < len(script) else self.pad
            if step in self.unsure[row // self.num_beams]:
                others = [i for i in range(4, 4 + ALTERNATIVES + 1) if i != target][:ALTERNATIVES]
                forced[row, others] = -GAP
            forced[row, target] = 0.0
        return forced  # type: ignore[return-value]


def script_for(tokenizer: Any, sure: str, unsure: str = "") -> tuple[list[int], set[int]]:
    """`<s> sure unsure </s>` as ids, and the steps of `unsure`'s tokens."""
    head = tokenizer.encode(sure, add_special_tokens=False)
    tail = tokenizer.encode(unsure, add_special_tokens=False) if unsure else []
    assert tokenizer.unk_token_id not in head + tail, f"the tiny tokenizer cannot spell {sure + unsure!r}"
    script = [tokenizer.bos_token_id, *head, *tail, tokenizer.eos_token_id]
    return script, set(range(1 + len(head), 1 + len(head) + len(tail)))


def prompt_text(tokenizer: Any, ids: torch.Tensor) -> str:
    text: str = tokenizer.decode(ids.tolist(), skip_special_tokens=False)
    for noise in ("<image>", "<pad>", "<s>", "</s>"):
        text = text.replace(noise, "")
    return text


def scripted_generate(
    original: Callable[..., Any], tokenizer: Any, answers: Mapping[str, tuple[str, str]], prompts: list[str]
) -> Callable[..., Any]:
    """`generate` that makes each row answer the first of `answers` whose key its prompt contains."""

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        scripts, unsure = [], []
        for row in kwargs["input_ids"]:
            prompt = prompt_text(tokenizer, row)
            prompts.append(prompt)
            key = next((k for k in answers if k in prompt), None)
            assert key is not None, f"no scripted answer for {prompt!r}"
            script, steps = script_for(tokenizer, *answers[key])
            scripts.append(script)
            unsure.append(steps)
        beams = int(kwargs.get("num_beams", 1))
        processor = Scripted(scripts, unsure, beams, tokenizer.pad_token_id)
        kwargs["logits_processor"] = LogitsProcessorList([processor])
        kwargs["max_new_tokens"] = max(map(len, scripts)) + 2
        return original(self, *args, **kwargs)

    return generate


@contextmanager
def scripted_model(
    monkeypatch: pytest.MonkeyPatch, tokenizer: Any, answers: Mapping[str, tuple[str, str]]
) -> Iterator[list[str]]:
    """Rows whose prompt contains a key answer `(sure, unsure)`; yields the prompts seen, in order."""
    from transformers import Florence2ForConditionalGeneration

    prompts: list[str] = []
    generate = scripted_generate(Florence2ForConditionalGeneration.generate, tokenizer, answers, prompts)
    with monkeypatch.context() as patch:
        patch.setattr(Florence2ForConditionalGeneration, "generate", generate)
        yield prompts
