"""Shared fixtures: tiny offline checkpoints and sample images. No test touches the network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

# The hub is unreachable here; make any accidental hub call fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from app.core.config import Settings
from tests.tiny_models import build_tiny_florence

if TYPE_CHECKING:
    from app.chat.inputs import Upload


@pytest.fixture(scope="session")
def tiny_florence_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Florence-2 checkpoint saved with `save_pretrained`, loaded like a real one."""
    return build_tiny_florence(tmp_path_factory.mktemp("tiny-florence"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_florence_dir: Path) -> object:
    """The tiny checkpoint's tokenizer, for scripting answers (tests/scripted_support.py)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_florence_dir).tokenizer


@pytest.fixture(scope="session")
def tiny_settings(tiny_florence_dir: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        model_id=str(tiny_florence_dir),
        num_beams=1,
        max_new_tokens=24,
        warmup=False,
        rate_limit="1000/minute",
    )


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One PyTorch thread for a module: tiny models gain nothing from more, and on a busy machine the
    idle OpenMP threads spin-wait (the engine tests ran 3-4x slower with the default)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_manager(tiny_settings: Settings) -> Iterator[object]:
    from app.models.manager import ModelManager

    manager = ModelManager(tiny_settings)
    manager.get()
    yield manager
    manager.shutdown()


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A real photograph shipped inside scikit-image (Chelsea the cat, 451x300)."""
    from skimage import data

    return Image.fromarray(data.chelsea())


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture
def cat_upload(photo: Image.Image, tmp_path: Path) -> Upload:
    """`photo` saved as `cat.png`, as the chat receives an uploaded file."""
    from tests.chat_support import save_upload

    return save_upload(photo, tmp_path, "cat.png")


# -- classifiers (issue 5): tiny ResNet / CLIP / SigLIP checkpoints and settings that point at them -----
@pytest.fixture(scope="session")
def tiny_resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny ImageNet-1k ResNet whose logits are `tiny_models.RESNET_BIAS_LOGITS` for every image."""
    from tests.tiny_models import RESNET_BIAS_LOGITS, build_tiny_resnet

    return build_tiny_resnet(tmp_path_factory.mktemp("tiny-resnet"), bias_logits=RESNET_BIAS_LOGITS)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def classify_settings(tiny_settings: Settings, tiny_resnet_dir: Path, tiny_clip_dir: Path) -> Settings:
    """`tiny_settings` with the tiny classifier and CLIP checkpoints."""
    values = {
        **tiny_settings.model_dump(),
        "classifier_model_id": str(tiny_resnet_dir),
        "zero_shot_model_id": str(tiny_clip_dir),
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
