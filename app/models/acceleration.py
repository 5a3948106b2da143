"""Speed options for the Florence-2 backend, each behind a setting (figures in docs/BENCHMARKS.md).

- CPU: PyTorch thread count, and dynamic int8 quantisation of the image encoder's Linear layers
  (weights stored as int8, activations quantised per call), which runs its matrix products on int8
  kernels.
- GPU: attention kernels that need no per-shape planning.

Tried on an H100 and left out because they did not help (docs/BENCHMARKS.md): a static KV cache
(no faster than the dynamic one in eager mode) and `torch.compile` of the decoder step (its CUDA-graph
path failed with torch 2.11 / transformers 5.23: a device-side index assert in the static cache).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

from app.config import Settings

log = logging.getLogger(__name__)

QuantScope = Literal["all", "vision"]


def configure_cpu_threads(settings: Settings) -> None:
    import torch

    if settings.cpu_threads > 0 and torch.get_num_threads() != settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)
        log.info("PyTorch CPU threads: %d", settings.cpu_threads)


def quantize_int8(model: Any, scope: QuantScope = "all") -> Any:
    """Dynamic int8 quantisation of `nn.Linear` layers, in place (CPU only).

    `scope="vision"` limits it to the image encoder, which is most of the CPU time for one image.
    """
    import torch
    from torch.ao.quantization import quantize_dynamic

    target = model.model.vision_tower if scope == "vision" else model
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the API still works in torch 2.x.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        quantized = quantize_dynamic(target, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    if scope == "vision":
        model.model.vision_tower = quantized
        return model
    return quantized


def apply_cpu_optimization(model: Any, settings: Settings) -> Any:
    configure_cpu_threads(settings)
    if settings.cpu_optimization == "int8":
        # The image encoder only: on 2 AVX2 cores it is ~85% of a caption's time, and int8 there cut a
        # 20-token caption from 16.0 s to 11.9 s; quantising the text model too was slower (13.8 s:
        # per-call activation quantisation outweighs the gain at one token per step) and less exact.
        model = quantize_int8(model, "vision")
        log.info("CPU_OPTIMIZATION=int8: the image encoder's Linear layers run as dynamic int8")
    return model


def configure_cuda() -> None:
    """Process-wide CUDA choices for this model (see docs/BENCHMARKS.md).

    PyTorch prefers cuDNN's fused attention for SDPA on Hopper, and cuDNN builds a plan for every new
    shape: 1.5-3.5 s the first time each batch size or decoder length is seen, which dynamic
    batching hits constantly. Flash / memory-efficient attention need no per-shape planning.
    """
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)
