"""Full-size Florence-2 checkpoints with random weights, built offline from the published configs.

Speed does not depend on the weights' values, so these measure what the real Florence-2-large and
-base cost without a download. Values below are the published ones (microsoft/Florence-2-{base,large}
config.json, as converted by transformers' convert_florence2_original_pytorch_to_hf.py):

- vision (DaViT): depths (1, 1, 9, 1), patch sizes (7, 3, 3, 3), strides (4, 2, 2, 2), paddings
  (3, 1, 1, 1), pre-norm (F, T, T, T), window 12; large: embed_dim (256, 512, 1024, 2048), heads and
  groups (8, 16, 32, 64), projection 1024; base: (128, 256, 512, 1024), (4, 8, 16, 32), projection 768.
- text (BART): large d_model 1024, 12 + 12 layers, 16 heads, FFN 4096; base d_model 768, 6 + 6
  layers, 12 heads, FFN 3072; vocab 51289 (BART's 50265 + 24 task tokens + 1000 location tokens),
  plus `<image>`, padded to a multiple of 64 (51328) as the community conversion does.
- processor: 768x768 bicubic resize, ImageNet mean/std, 577 image tokens ((768 / 32)^2 + 1).

The tokenizer is a small byte-level BPE padded with filler entries to BART's 50265 ids, so every id
the random model emits decodes to text of a realistic length.

    python -m bench.checkpoints large /tmp/florence-2-large-random
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tests.tiny_models import (
    florence_generation_config,
    florence_processor,
    florence_tokenizer,
    train_byte_level_bpe,
)

BART_VOCAB = 50264  # BART's base vocabulary; `<mask>` (50264) is added as a special token
IMAGE_SIDE = 768
IMAGE_TOKENS = (IMAGE_SIDE // 32) ** 2 + 1  # 577

_VISION_COMMON: dict[str, Any] = {
    "depths": [1, 1, 9, 1],
    "patch_size": [7, 3, 3, 3],
    "patch_stride": [4, 2, 2, 2],
    "patch_padding": [3, 1, 1, 1],
    "patch_prenorm": [False, True, True, True],
    "window_size": 12,
    "drop_path_rate": 0.1,
    "max_temporal_embeddings": 100,
    "max_position_embeddings": 50,
}
_TEXT_COMMON: dict[str, Any] = {
    "model_type": "bart",
    "max_position_embeddings": 1024,
    "activation_function": "gelu",
    "scale_embedding": False,
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "forced_eos_token_id": 2,
}
CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "large": {
        "vision": {
            **_VISION_COMMON,
            "embed_dim": [256, 512, 1024, 2048],
            "num_heads": [8, 16, 32, 64],
            "num_groups": [8, 16, 32, 64],
            "projection_dim": 1024,
        },
        "text": {
            **_TEXT_COMMON,
            "d_model": 1024,
            "encoder_layers": 12,
            "decoder_layers": 12,
            "encoder_attention_heads": 16,
            "decoder_attention_heads": 16,
            "encoder_ffn_dim": 4096,
            "decoder_ffn_dim": 4096,
        },
    },
    "base": {
        "vision": {
            **_VISION_COMMON,
            "embed_dim": [128, 256, 512, 1024],
            "num_heads": [4, 8, 16, 32],
            "num_groups": [4, 8, 16, 32],
            "projection_dim": 768,
        },
        "text": {
            **_TEXT_COMMON,
            "d_model": 768,
            "encoder_layers": 6,
            "decoder_layers": 6,
            "encoder_attention_heads": 12,
            "decoder_attention_heads": 12,
            "encoder_ffn_dim": 3072,
            "decoder_ffn_dim": 3072,
        },
    },
}


def build_processor(path: Path) -> Any:
    """BART-sized byte-level tokenizer + 768x768 PIL image processor, saved to `path`."""
    from tokenizers import Tokenizer

    trained = train_byte_level_bpe(600)
    spec = json.loads(trained.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    filler = 0
    while len(vocab) < BART_VOCAB:  # unreachable by merges, but decodable: " w123"
        vocab.setdefault(f"Ġw{filler}", len(vocab))
        filler += 1
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    # Task and location tokens take ids 50265..51288 and `<image>` 51289, as in the published tokenizer.
    fast = florence_tokenizer(tokenizer)
    processor = florence_processor(fast, IMAGE_SIDE, IMAGE_TOKENS)
    processor.save_pretrained(path)
    return processor


def build_model(size: str, processor: Any, device: str = "cpu", seed: int = 0) -> Any:
    import torch
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    spec = CONFIGS[size]
    tokenizer = processor.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vocab_size = -(-len(tokenizer) // 64) * 64
    config = Florence2Config(
        text_config={**spec["text"], "vocab_size": vocab_size},
        vision_config=spec["vision"],
        image_token_id=image_token_id,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Florence2ForConditionalGeneration(config).eval()
    model.generation_config = florence_generation_config()
    return model


def build_checkpoint(size: str, path: Path, device: str = "cpu") -> Path:
    """Write a random full-size checkpoint (bf16 weights, like the published fp16 ones) to `path`."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    if (path / "model.safetensors").exists() or (path / "model.safetensors.index.json").exists():
        return path
    processor = build_processor(path)
    model = build_model(size, processor, device=device)
    model.to(torch.bfloat16).save_pretrained(path)
    return path


def count_parameters(model: Any) -> dict[str, int]:
    inner = model.model
    return {
        "vision": sum(p.numel() for p in inner.vision_tower.parameters()),
        "text_encoder": sum(p.numel() for p in inner.language_model.encoder.parameters()),
        "decoder": sum(p.numel() for p in inner.language_model.decoder.parameters()),
        "total": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a full-size Florence-2 checkpoint with random weights.")
    parser.add_argument("size", nargs="?", default="large", choices=sorted(CONFIGS))
    parser.add_argument("target", nargs="?", type=Path, help="folder to write (default: /tmp/florence-2-SIZE-random)")
    args = parser.parse_args()
    print(build_checkpoint(args.size, args.target or Path(f"/tmp/florence-2-{args.size}-random")))


if __name__ == "__main__":
    main()
