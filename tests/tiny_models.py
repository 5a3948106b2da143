"""Tiny, randomly initialised checkpoints built offline for tests.

The hub is unreachable in tests and CI, so every model the app loads is built here from a
config plus a locally trained tokenizer, saved with ``save_pretrained`` and then loaded by the
app through the same ``from_pretrained`` path a real checkpoint takes.
"""

from __future__ import annotations

import sys
from pathlib import Path

FLORENCE_EXTRA_TOKENS = [
    "<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<dcap>", "</dcap>", "<ncap>", "</ncap>",
    "<grounding>", "</grounding>", "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>",
    "<region_to_desciption>", "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>",
    "</poly>", "<and>",
]  # fmt: skip

TINY_IMAGE_SIDE = 32  # two DaViT stages with strides 4 and 2: 32 / 8 = 4 → 16 patches + 1 pooled token
POST_PROCESSOR_CONFIG = {
    "ocr": {
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

_CORPUS = [
    "What is the text in the image? What is the text in the image, with regions?",
    "What does the image describe? Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "Locate the objects with category name in the image.",
    "Locate the objects in the image, with their descriptions. Locate the region proposals in the image.",
    "Locate the phrases in the caption: a cat sitting on a red car in the street",
    "with mask What is the polygon mask of region What is the region What does the region describe?",
    "What text is in the region a dog a person wheels hello world HELLO WORLD 2024 stop sign tree sky",
]


def _build_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=1024,
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.add_tokens(FLORENCE_EXTRA_TOKENS + [f"<loc_{i}>" for i in range(1000)])
    fast.save_pretrained(path)


def build_tiny_florence(path: Path, seed: int = 0) -> Path:
    """Write a tiny random Florence-2 checkpoint (model, tokenizer, processor) to ``path``."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        GenerationConfig,
    )

    path.mkdir(parents=True, exist_ok=True)
    _build_tokenizer(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vocab_size = len(tokenizer)

    image_processor = CLIPImageProcessorPil(
        size={"height": TINY_IMAGE_SIDE, "width": TINY_IMAGE_SIDE},
        crop_size={"height": TINY_IMAGE_SIDE, "width": TINY_IMAGE_SIDE},
        do_center_crop=False,
        do_resize=True,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    image_processor.image_seq_length = (TINY_IMAGE_SIDE // 8) ** 2 + 1
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=POST_PROCESSOR_CONFIG
    )
    processor.save_pretrained(path)

    text_config = {
        "model_type": "bart",
        "vocab_size": vocab_size,
        "max_position_embeddings": 1024,
        "encoder_layers": 1,
        "encoder_ffn_dim": 32,
        "encoder_attention_heads": 2,
        "decoder_layers": 1,
        "decoder_ffn_dim": 32,
        "decoder_attention_heads": 2,
        "d_model": 16,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
    }
    vision_config = {
        "depths": [1, 1],
        "patch_size": [7, 3],
        "patch_stride": [4, 2],
        "patch_padding": [3, 1],
        "patch_prenorm": [False, True],
        "embed_dim": [8, 16],
        "num_heads": [1, 2],
        "num_groups": [1, 2],
        "window_size": 2,
        "drop_path_rate": 0.0,
        "projection_dim": 16,
    }
    config = Florence2Config(text_config=text_config, vision_config=vision_config, image_token_id=image_token_id)
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        no_repeat_ngram_size=3,
        num_beams=3,
        max_new_tokens=1024,
    )
    model.save_pretrained(path)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-florence")
    print(build_tiny_florence(target))
