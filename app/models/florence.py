"""Florence-2 through the native transformers port: load → preprocess → forward → postprocess."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from app.core.config import Settings
from app.core.errors import AppError, InferenceError, ModelUnavailable
from app.core.results import AnyResult, count_instances, result_from_florence
from app.core.tasks import FLORENCE_BACKEND, PROMPT_TASKS
from app.models.acceleration import apply_cpu_optimization, configure_cuda
from app.models.base import TaskRequest, resolve_device_dtype
from app.models.batching import OutOfDeviceMemory
from app.models.florence_inputs import InputBuilder, PreparedInput
from app.models.florence_scores import GeneratedAnswer, instance_scores
from app.models.hf_loading import transformers_library
from app.models.hub import resolve_model_source
from app.models.image_features import ImageFeatureCache, pixels_digest

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationOptions:
    """What one `generate` call shares; requests with different options never share a batch."""

    num_beams: int
    max_new_tokens: int
    min_new_tokens: int = 0  # > 0 forces a length (the benchmark uses min = max)


def _max_text_positions(model: Any) -> int | None:
    """How many positions the text encoder has (BART: 1024), if the config says."""
    text_config = getattr(model.config, "text_config", None)
    positions = getattr(text_config, "max_position_embeddings", None)
    return int(positions) if isinstance(positions, int) and positions > 0 else None


def pinned_generation(options: GenerationOptions) -> dict[str, Any]:
    """Decoding settings set in code, never inherited from a checkpoint's generation_config.

    The reference demos decode deterministically (`do_sample=False`, `early_stopping=False`); the
    published configs carry `no_repeat_ngram_size=3`, which would forbid legitimate repeats: two
    objects with the same label, equal coordinates, a word that recurs in OCR. The forced `<s>` at the
    first step and `</s>` at the length limit still come from the checkpoint (`forced_bos_token_id`,
    `forced_eos_token_id`), as they do for the references.
    """
    return {
        "max_new_tokens": options.max_new_tokens,
        "num_beams": options.num_beams,
        "do_sample": False,
        "early_stopping": False,
        "no_repeat_ngram_size": 0,
    }


class FlorenceBackend:
    name = FLORENCE_BACKEND
    tasks = frozenset(spec.token for spec in PROMPT_TASKS)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_id = settings.model_id
        self.library = transformers_library()
        self.device = "cpu"
        self.dtype_name = "float32"
        self._model: Any = None
        self._processor: Any = None
        self._dtype: Any = None
        self._inputs: InputBuilder | None = None
        self._features = ImageFeatureCache(settings.image_feature_cache) if settings.image_feature_cache else None

    # -- lifecycle -------------------------------------------------------------------------------------
    def load(self) -> None:
        # Resolve first: a missing model must fail in seconds, before the slow torch/transformers imports.
        source, local_only = resolve_model_source(
            self.settings.model_id, self.settings.model_revision, self.settings.hub_timeout_s
        )
        import torch
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        device, dtype = resolve_device_dtype(self.settings)
        started = time.perf_counter()
        try:
            processor = AutoProcessor.from_pretrained(
                source, revision=self.settings.model_revision or "main", local_files_only=local_only
            )
            model: Any = Florence2ForConditionalGeneration.from_pretrained(
                source,
                revision=self.settings.model_revision or "main",
                local_files_only=local_only,
                dtype=dtype,
                attn_implementation="sdpa",
            )
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"Model {self.settings.model_id!r} could not be loaded: {type(exc).__name__}: {str(exc)[:300]}",
                code="model_load_failed",
            ) from exc
        model.to(device).eval()
        if device == "cpu":
            model = apply_cpu_optimization(model, self.settings)
        else:
            configure_cuda()
        self._model, self._processor, self._dtype = model, processor, dtype
        self._inputs = InputBuilder(
            processor, compute_digests=self._features is not None, max_positions=_max_text_positions(model)
        )
        self.device, self.dtype_name = device, str(dtype).removeprefix("torch.")
        log.info(
            "loaded %s on %s (%s) in %.1fs", self.settings.model_id, device, self.dtype_name,
            time.perf_counter() - started,
        )  # fmt: skip
        if self.settings.warmup:
            self.warmup()
        torch.set_grad_enabled(False)

    def warmup(self) -> None:
        """One short generation so the first user request does not pay for lazy initialisation."""
        from app.core.tasks import get_task

        started = time.perf_counter()
        request = TaskRequest.create(Image.new("RGB", (64, 64), "white"), get_task("<CAPTION>"))
        self.run([request], max_new_tokens=4)
        log.info("warm-up took %.2fs", time.perf_counter() - started)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    # -- inference -------------------------------------------------------------------------------------
    def default_generation(self, max_new_tokens: int | None = None) -> GenerationOptions:
        return GenerationOptions(
            num_beams=self.settings.num_beams, max_new_tokens=max_new_tokens or self.settings.max_new_tokens
        )

    def run(
        self,
        requests: Sequence[TaskRequest],
        max_new_tokens: int | None = None,
        *,
        generation: GenerationOptions | None = None,
        **generate_kwargs: Any,
    ) -> list[AnyResult]:
        """Run a batch (mixed tasks allowed: prompts are padded) and parse each output.

        `generate_kwargs` go to `model.generate` (e.g. a `logits_processor`).
        """
        if not requests:
            return []
        prepared = [self.prepare(request) for request in requests]
        options = generation or self.default_generation(max_new_tokens)
        answers = self.generate_texts(prepared, options, **generate_kwargs)
        return [self.parse(request, answer) for request, answer in zip(requests, answers, strict=True)]

    def prepare(self, request: TaskRequest) -> PreparedInput:
        """Per-request input work (the image resize), done on the caller's thread before batching."""
        builder = self._input_builder()
        try:
            return builder.prepare(request)
        except AppError:
            raise  # the request's own fault (text_too_long), told as such
        except Exception as exc:
            log.exception("preprocessing failed")
            raise InferenceError(f"The input could not be prepared for the model ({type(exc).__name__}).") from exc

    def generate_texts(
        self, prepared: Sequence[PreparedInput], generation: GenerationOptions, **generate_kwargs: Any
    ) -> list[GeneratedAnswer]:
        """One `generate` call for the whole batch; each request's decoded text (special tokens kept), its
        token ids and, when a box/polygon task is in the batch, each generated token's probability."""
        import torch

        with_scores = any(p.wants_scores for p in prepared)
        out_of_memory = False
        try:
            inputs = self._collate(prepared)
            generated = self.forward(inputs, generation=generation, with_scores=with_scores, **generate_kwargs)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True
        if out_of_memory:
            # Raised outside the handler, so the failed attempt's tensors are freed before the cache is emptied.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfDeviceMemory(
                f"Not enough GPU memory for {len(prepared)} request(s) with {generation.num_beams} beam(s) and up "
                f"to {generation.max_new_tokens} new tokens; try fewer beams or a lower max_new_tokens."
            )
        sequences = generated.sequences if with_scores else generated
        probs = self._token_probs(generated) if with_scores else None
        texts = self._processor.batch_decode(sequences, skip_special_tokens=False)
        answers = []
        for row, text in enumerate(texts):
            # Batched outputs are right-padded; padding would leak into plain-text answers.
            answers.append(
                GeneratedAnswer(
                    text=text.replace("<pad>", ""),
                    token_ids=tuple(sequences[row, 1:].tolist()),  # after the decoder start token
                    token_probs=tuple(probs[row]) if probs is not None and prepared[row].wants_scores else None,
                )
            )
        return answers

    def _token_probs(self, generated: Any) -> list[list[float]] | None:
        """Each generated token's probability under the scores generation chose it by (chosen beam's).

        Row i, position j belongs to `sequences[i, j + 1]`; positions after a beam ended read 1.0.
        """
        try:
            transition = self._model.compute_transition_scores(
                generated.sequences, generated.scores, getattr(generated, "beam_indices", None), normalize_logits=True
            )
        except Exception:  # scores are an extra: an answer without them beats no answer
            log.exception("token scores could not be computed")
            return None
        steps = generated.sequences.shape[1] - 1
        lead = steps - transition.shape[1]  # beam search may report fewer steps than the padded length
        probs = transition.float().exp().tolist()
        return [[1.0] * lead + row for row in probs]

    def parse(self, request: TaskRequest, answer: GeneratedAnswer | str) -> AnyResult:
        if isinstance(answer, str):
            answer = GeneratedAnswer(text=answer)
        task = request.spec.token
        processor = self._processor
        parsed = processor.post_process_generation(answer.text, task=task, image_size=request.image_wh)[task]
        scores = None
        if answer.token_probs is not None:
            parse_type = processor.tasks_answer_post_processing_type.get(task, "pure_text")
            config = (processor.post_processor_config or {}).get(parse_type)
            scores = instance_scores(processor.tokenizer, parse_type, answer, count_instances(parsed), config)
        return result_from_florence(request.spec, parsed, request.image_wh, region=request.region, scores=scores)

    def preprocess(self, requests: Sequence[TaskRequest]) -> dict[str, Any]:
        return self._collate([self.prepare(request) for request in requests])

    def forward(
        self,
        inputs: dict[str, Any],
        max_new_tokens: int | None = None,
        *,
        generation: GenerationOptions | None = None,
        with_scores: bool = False,
        **generate_kwargs: Any,
    ) -> Any:
        """`model.generate` with the pinned settings; with `with_scores`, its dict output with per-step scores."""
        import torch

        options = generation or self.default_generation(max_new_tokens)
        if options.min_new_tokens:
            generate_kwargs.setdefault("min_new_tokens", options.min_new_tokens)
        if with_scores:
            generate_kwargs.update(return_dict_in_generate=True, output_scores=True)
        try:
            with torch.inference_mode():
                return self._model.generate(**inputs, **{**generate_kwargs, **pinned_generation(options)})
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            log.exception("generate failed")
            raise InferenceError(f"The model failed on this input ({type(exc).__name__}).") from exc

    def _input_builder(self) -> InputBuilder:
        if self._model is None or self._inputs is None:
            raise ModelUnavailable("The Florence-2 model is not loaded.", code="model_not_loaded")
        return self._inputs

    def _collate(self, prepared: Sequence[PreparedInput]) -> dict[str, Any]:
        """`generate`'s inputs: with the feature cache on, the encoded inputs (`encoder_outputs`) instead of pixels."""
        import torch

        builder = self._input_builder()
        try:
            if self._features is None:
                return builder.collate(prepared, self.device, self._dtype)
            inputs = builder.collate_text(prepared, self.device)
        except (torch.cuda.OutOfMemoryError, ModelUnavailable):
            raise
        except Exception as exc:
            log.exception("preprocessing failed")
            raise InferenceError(f"The input could not be prepared for the model ({type(exc).__name__}).") from exc
        try:
            with torch.inference_mode():
                return {**inputs, "encoder_outputs": self._encode(builder, prepared, inputs, self._features)}
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            log.exception("encoding failed")
            raise InferenceError(f"The model failed on this input ({type(exc).__name__}).") from exc

    def _encode(
        self, builder: InputBuilder, prepared: Sequence[PreparedInput], inputs: dict[str, Any], cache: ImageFeatureCache
    ) -> Any:
        """Florence-2's encoder pass as `generate` runs it, with each image's features looked up first."""
        import torch

        model = self._model

        def encode_images(indices: list[int]) -> torch.Tensor:
            pixels = builder.collate_pixels([prepared[i] for i in indices], self.device, self._dtype)
            return model.get_image_features(pixel_values=pixels).pooler_output

        digests = [p.digest or pixels_digest(p.pixels) for p in prepared]
        features = torch.stack(cache.features(digests, encode_images))
        input_ids = inputs["input_ids"]
        embeds = model.get_input_embeddings()(input_ids)
        features = features.to(embeds.dtype)
        mask = model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=features)
        embeds = embeds.masked_scatter(mask, features)
        return model.get_encoder()(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])

    def info(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "device": self.device, "dtype": self.dtype_name}
