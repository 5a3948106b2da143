"""What the transformers checkpoints beside Florence-2 (classifier, zero-shot) share: loading and state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from PIL import Image

from app.core.config import Settings
from app.core.errors import ModelUnavailable
from app.models.base import resolve_device_dtype
from app.models.hub import resolve_model_source

log = logging.getLogger(__name__)
T = TypeVar("T")


def transformers_library() -> str:
    """`transformers-5.23.0`: the library that ran a model, reported with every classification."""
    import transformers

    return f"transformers-{transformers.__version__}"


def load_checkpoint(
    settings: Settings, model_id: str, setting: str, example_id: str, load: Callable[[str, bool], T]
) -> T:
    """Resolve `model_id` without hanging on the network, then call `load(source, local_files_only)`.

    A missing checkpoint fails fast with a hint naming `setting`; any loader exception becomes
    `ModelUnavailable` (transformers raises many types for a bad or incompatible checkpoint).
    """
    source, local_only = resolve_model_source(
        model_id, None, settings.hub_timeout_s, setting=setting, example_id=example_id
    )
    try:
        return load(source, local_only)
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(
            f"{setting}={model_id!r} could not be loaded: {type(exc).__name__}: {str(exc)[:300]}",
            code="model_load_failed",
        ) from exc


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """`fn()` and the seconds it took (the duration a result's run info reports)."""
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def rgb_chunks(images: Sequence[Image.Image], size: int) -> Iterator[list[Image.Image]]:
    """`images` in lists of at most `size` (bounds peak memory), each image in RGB."""
    for start in range(0, len(images), size):
        yield [im if im.mode == "RGB" else im.convert("RGB") for im in images[start : start + size]]


class TransformersBackend:
    """A model backend around one `from_pretrained` processor + model pair, loaded on first use."""

    name: ClassVar[str]
    tasks: ClassVar[frozenset[str]]
    model_setting: ClassVar[str]  # the environment name of the model id, named in load errors
    example_model_id: ClassVar[str]

    def __init__(self, settings: Settings, model_id: str) -> None:
        self.settings = settings
        self.model_id = model_id
        self.device = "cpu"
        self.dtype_name = "float32"
        self.library = transformers_library()
        self._model: Any = None
        self._processor: Any = None
        self._dtype: Any = None

    def _load_pretrained(self, processor_class: Any, model_class: Any) -> tuple[Any, float]:
        """Load, check (`_check_model`) and place the checkpoint; returns the model and the seconds it took."""
        device, dtype = resolve_device_dtype(self.settings)
        started = time.perf_counter()

        def load(source: str, local_only: bool) -> tuple[Any, Any]:
            processor = processor_class.from_pretrained(source, local_files_only=local_only)
            model = model_class.from_pretrained(source, local_files_only=local_only, dtype=dtype)
            return processor, model

        processor, model = load_checkpoint(
            self.settings, self.model_id, self.model_setting, self.example_model_id, load
        )
        self._check_model(model)
        model.to(device).eval()
        self._model, self._processor, self._dtype = model, processor, dtype
        self.device, self.dtype_name = device, str(dtype).removeprefix("torch.")
        return model, time.perf_counter() - started

    def _check_model(self, model: Any) -> None:
        """Raise `ModelUnavailable` when the checkpoint loaded but cannot serve this backend."""

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def info(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "device": self.device, "dtype": self.dtype_name, "tasks": sorted(self.tasks)}
