"""Florence-2 model inputs, built in two halves so that batching stays cheap.

`prepare` (per request, on the caller's thread) resizes the image to the model's input size as
8-bit pixels; `collate` (per batch, on the inference thread) tokenises the prompts and rescales and
normalises all pixels at once on the model's device. The result equals what `Florence2Processor`
builds (tests/models/test_engine_inputs.py checks it for every task), but the processor's float work
per image (~50 ms of one core for a 768x768 input) no longer runs serially in front of the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from app.core.errors import InvalidInput
from app.core.tasks import OutputKind
from app.models.image_features import pixels_digest

if TYPE_CHECKING:
    import torch

    from app.models.base import TaskRequest


@dataclass(frozen=True)
class PreparedInput:
    """One request, ready to join a batch: resized pixels plus its task prompt."""

    pixels: np.ndarray  # uint8 (height, width, 3) on the fast path, else float32 (3, height, width)
    prompt: str
    digest: str | None = None  # identifies the pixels when image features are cached
    wants_scores: bool = False  # a box/polygon task: keep each generated token's probability


class InputBuilder:
    """Builds batched `input_ids`, `attention_mask` and `pixel_values` for a loaded processor."""

    def __init__(self, processor: Any, compute_digests: bool = False, max_positions: int | None = None) -> None:
        self.processor = processor
        self.compute_digests = compute_digests
        # The text encoder's learned positions cover image tokens + <s> prompt </s>; one more is an IndexError.
        self.max_positions = max_positions
        image_processor = processor.image_processor
        size = image_processor.size
        self._size_hw: tuple[int, int] | None = None
        if getattr(size, "height", None) and getattr(size, "width", None):
            self._size_hw = (int(size.height), int(size.width))
        self.fast = (
            self._size_hw is not None
            and bool(image_processor.do_resize)
            and not bool(getattr(image_processor, "do_center_crop", False))
            and not bool(getattr(image_processor, "do_pad", False))
            and bool(image_processor.do_rescale)
            and bool(image_processor.do_normalize)
            and len(image_processor.image_mean) == 3
            and len(image_processor.image_std) == 3
        )
        self._resample = Image.Resampling(int(image_processor.resample)) if self.fast else None
        self._scale = float(image_processor.rescale_factor)
        self._mean = [float(v) for v in image_processor.image_mean]
        self._std = [float(v) for v in image_processor.image_std]

    def prepare(self, request: TaskRequest) -> PreparedInput:
        if self.fast and self._size_hw is not None:
            height, width = self._size_hw
            # The same PIL call the processor makes (transformers.image_transforms.resize) on 8-bit RGB.
            resized = request.image.resize((width, height), resample=self._resample, reducing_gap=None)
            pixels = np.asarray(resized, dtype=np.uint8)
        else:
            pixel_values = self.processor.image_processor(images=[request.image], return_tensors="np")["pixel_values"]
            pixels = np.asarray(pixel_values[0], dtype=np.float32)
        prompt = request.prompt()
        if request.text is not None:
            self.check_prompt_length(prompt)
        digest = pixels_digest(pixels) if self.compute_digests else None
        wants_scores = request.spec.output_kind is not OutputKind.TEXT
        return PreparedInput(pixels=pixels, prompt=prompt, digest=digest, wants_scores=wants_scores)

    def check_prompt_length(self, prompt: str) -> None:
        """Refuse a prompt whose tokens, with the image tokens, would not fit the encoder's positions."""
        if self.max_positions is None:
            return
        laid_out = self._layout_prompts([prompt])[0]
        count = len(self.processor.tokenizer(laid_out, add_special_tokens=False)["input_ids"])
        if count > self.max_positions:
            image_tokens = int(self.processor.num_image_tokens)
            text_budget = self.max_positions - image_tokens - 2  # <s> and </s>
            raise InvalidInput(
                f"The text input is too long for the model: its prompt takes {count - image_tokens - 2} tokens and "
                f"at most {text_budget} fit beside the image in the model's {self.max_positions} positions.",
                code="text_too_long",
            )

    def collate(self, prepared: Sequence[PreparedInput], device: str, dtype: torch.dtype) -> dict[str, Any]:
        """`input_ids`, `attention_mask` and `pixel_values`, as `Florence2Processor` would build them."""
        return {**self.collate_text(prepared, device), "pixel_values": self.collate_pixels(prepared, device, dtype)}

    def collate_text(self, prepared: Sequence[PreparedInput], device: str) -> dict[str, Any]:
        text = self._layout_prompts([p.prompt for p in prepared])
        # The layout already holds `<s>`/`</s>`; the real tokenizer's RobertaProcessing would add a second
        # pair (shifting every image feature by one position), so, like the processor, add none.
        encoded = self.processor.tokenizer(text, return_tensors="pt", padding=True, add_special_tokens=False)
        return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}

    def collate_pixels(self, prepared: Sequence[PreparedInput], device: str, dtype: torch.dtype) -> torch.Tensor:
        import torch

        stacked = torch.from_numpy(np.stack([p.pixels for p in prepared]))
        if stacked.dtype == torch.uint8:
            pixels = stacked.to(device).permute(0, 3, 1, 2)
            # Same arithmetic as the processor: rescale in float64, then normalise in float32.
            pixels = (pixels.to(torch.float64) * self._scale).to(torch.float32)
            mean = torch.tensor(self._mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self._std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            pixels = (pixels - mean) / std
        else:
            pixels = stacked.to(device)
        return pixels.to(dtype).contiguous()

    def _layout_prompts(self, prompts: list[str]) -> list[str]:
        # Mirrors Florence2Processor.prepare_inputs_layout + replace_image_token (transformers 5.x).
        processor = self.processor
        tokenizer = processor.tokenizer
        expanded = processor._construct_prompts(prompts)
        image_tokens = processor.image_token * processor.num_image_tokens
        return [image_tokens + tokenizer.bos_token + text + tokenizer.eos_token for text in expanded]
