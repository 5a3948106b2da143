"""Speed options for the Florence-2 backend, each behind a setting (figures in docs/BENCHMARKS.md).

- CPU: PyTorch thread count, and dynamic int8 quantisation of every Linear layer (weights stored as
  int8, activations quantised per call), which runs the matrix products on int8 kernels.
- GPU: attention kernels that need no per-shape planning.

Tried on an H100 and left out because they did not help (docs/BENCHMARKS.md): a static KV cache
(no faster than the dynamic one in eager mode) and `torch.compile` of the decoder step (its CUDA-graph
path failed with torch 2.11 / transformers 5.23: a device-side index assert in the static cache).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

from app.core.config import Settings

log = logging.getLogger(__name__)

QuantScope = Literal["all", "vision"]

# Which int8 kernels each part gets. A layer's kernel family is fixed when its weights are packed, so
# the parts can differ. The encoders multiply hundreds to thousands of tokens at once, where oneDNN was
# ~25% faster than FBGEMM on the 2-core AVX2 test machine; the decoder and its output layer see one
# token per step, where FBGEMM ("x86") was ~4x faster than oneDNN.
_ENCODER_PARTS = ("model.vision_tower", "model.multi_modal_projector", "model.language_model.encoder")
_DECODER_PARTS = ("model.language_model.decoder", "lm_head")
_ENGINE_FOR_MANY_TOKENS = "onednn"
_ENGINE_FOR_ONE_TOKEN = "x86"


def configure_cpu_threads(settings: Settings) -> None:
    import torch

    if settings.cpu_threads > 0 and torch.get_num_threads() != settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)
        log.info("PyTorch CPU threads: %d", settings.cpu_threads)


def quantize_int8(model: Any, scope: QuantScope = "all") -> Any:
    """Dynamic int8 quantisation of `nn.Linear` layers, in place (CPU only).

    `scope="vision"` limits it to the image encoder. Falls back to PyTorch's default int8 engine where
    the preferred one is not built in (e.g. qnnpack on ARM).
    """
    groups: list[tuple[tuple[str, ...], str]] = [(("model.vision_tower",), _ENGINE_FOR_MANY_TOKENS)]
    if scope == "all":
        groups = [(_ENCODER_PARTS, _ENGINE_FOR_MANY_TOKENS), (_DECODER_PARTS, _ENGINE_FOR_ONE_TOKEN)]
    for names, engine in groups:
        _quantize_parts(model, set(names), engine)
    return model


def _quantize_parts(model: Any, names: set[str], engine: str) -> None:
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    before = torch.backends.quantized.engine
    if engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine
    try:
        with warnings.catch_warnings():
            # torch.ao.quantization announces its move to torchao; the API still works in torch 2.x.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
            # Named parts pass their qconfig down to every module inside them; only Linear layers are swapped.
            quantize_dynamic(
                model,
                dict.fromkeys(names, default_dynamic_qconfig),
                dtype=torch.qint8,
                mapping={torch.nn.Linear: DynamicInt8Linear},
                inplace=True,
            )
    finally:
        torch.backends.quantized.engine = before


def apply_cpu_optimization(model: Any, settings: Settings) -> Any:
    configure_cpu_threads(settings)
    if settings.cpu_optimization == "int8":
        # Every Linear layer: on 2 AVX2 cores a 20-token caption of a new image went from ~20 s to
        # ~11 s, and the text side of a request from ~3.7 s to ~1.7 s; agreement in docs/BENCHMARKS.md.
        model = quantize_int8(model, "all")
        log.info("CPU_OPTIMIZATION=int8: every Linear layer runs as dynamic int8")
    return model


def configure_cuda() -> None:
    """Process-wide CUDA choices for this model (see docs/BENCHMARKS.md).

    PyTorch prefers cuDNN's fused attention for SDPA on Hopper, and cuDNN builds a plan for every new
    shape: 1.5-3.5 s the first time each batch size or decoder length is seen, which dynamic
    batching hits constantly. Flash / memory-efficient attention need no per-shape planning.
    """
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)
