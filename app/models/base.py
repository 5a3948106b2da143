"""The backend contract every model follows, the request type they all take, and device/dtype resolution.

A backend lists the task tokens it serves (`tasks`), loads its weights once (`load`), turns a batch of
`TaskRequest`s into one result per request (`run`) and describes itself (`info`). The model manager
(`app/models/manager.py`) routes a task to the backend its registry entry names and stamps every result
with its `RunInfo`. Backends that batch across callers (Florence-2) also offer `prepare`,
`generate_texts` and `parse` (`BatchedBackend`), which the manager drives through its batcher.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from PIL import Image

from app.core.config import Settings
from app.core.errors import InvalidInput, ModelUnavailable
from app.core.geometry import XYXY, box_to_loc_tokens, clip_box
from app.core.images import to_rgb
from app.core.task_inputs import TaskInput
from app.core.tasks import TaskSpec, validate_task_inputs

if TYPE_CHECKING:
    import torch

    from app.core.classification_results import AnyTaskResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskRequest:
    """One image and one task with its extra input, validated (and the region clipped) before model work."""

    image: Image.Image
    spec: TaskSpec
    text: str | None = None
    region: XYXY | None = None
    options: TaskInput = field(default_factory=TaskInput)  # labels, top_n, language for the tasks that take them

    @classmethod
    def create(
        cls,
        image: Image.Image,
        spec: TaskSpec,
        text: str | None = None,
        region: Sequence[float] | None = None,
        options: TaskInput | None = None,
    ) -> TaskRequest:
        if spec.cascade:  # two prompts, run by the analysis service; never one model request
            raise InvalidInput(f"{spec.name} is not a single model request.", code="not_a_prompt_task")
        cleaned = validate_task_inputs(spec, text, region)
        rgb = to_rgb(image)
        clipped = clip_box(region, rgb.size) if region is not None else None
        return cls(image=rgb, spec=spec, text=cleaned, region=clipped, options=options or TaskInput())

    @property
    def image_wh(self) -> tuple[int, int]:
        return self.image.size

    def prompt(self) -> str:
        """The Florence-2 prompt: the task token, then the text or the region's location tokens."""
        if self.region is not None:
            return self.spec.token + box_to_loc_tokens(self.region, self.image_wh)
        if self.text is not None:
            return self.spec.token + self.text
        return self.spec.token


@runtime_checkable
class Backend(Protocol):
    """What the model manager needs of a backend."""

    @property
    def name(self) -> str: ...  # its slot in the manager ("florence2", "classifier")

    @property
    def tasks(self) -> frozenset[str]: ...  # the task tokens it serves

    @property
    def model_id(self) -> str: ...  # what every result's run info names

    @property
    def library(self) -> str: ...  # and the library (version) that ran it

    def load(self) -> None: ...

    def run(self, requests: Sequence[TaskRequest]) -> Sequence[AnyTaskResult]: ...

    def info(self) -> dict[str, Any]: ...


def resolve_device_dtype(settings: Settings) -> tuple[str, torch.dtype]:
    """DEVICE and DTYPE (`auto`: CUDA with bf16/fp16 when a GPU is visible, else CPU with fp32)."""
    import torch

    cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not cuda:
        raise ModelUnavailable("DEVICE=cuda but no CUDA GPU is visible to PyTorch.", code="no_gpu")
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda) else "cpu"
    if settings.dtype != "auto":
        dtype = getattr(torch, settings.dtype)
        if device == "cpu" and dtype != torch.float32:
            log.warning("DTYPE=%s on CPU is typically 6-7x slower than float32", settings.dtype)
        return device, dtype
    if device == "cuda":
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # Half precision on CPUs without native bf16 units is several times slower than fp32.
    return device, torch.float32
