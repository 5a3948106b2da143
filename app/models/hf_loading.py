"""Shared loading helpers for the transformers checkpoints beside Florence-2 (classifier, zero-shot)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from app.config import Settings
from app.errors import ModelUnavailable
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
