"""Tiny, randomly initialised checkpoints built offline for tests.

The hub is unreachable in tests and CI, so every model the app loads is built here from a
config plus a locally trained tokenizer, saved with ``save_pretrained`` and then loaded by the
app through the same ``from_pretrained`` path a real checkpoint takes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Florence-2's additions to BART's vocabulary, in the order the published tokenizer holds them
# (Microsoft's processor added them as additional special tokens: `<od> </od> <ocr> </ocr>`, the
# 1000 location tokens, then the rest); the native port appends `<image>` after them.
FLORENCE_PREFIX_TOKENS = ["<od>", "</od>", "<ocr>", "</ocr>"]
FLORENCE_SUFFIX_TOKENS = [
    "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>",
    "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>", "</region_to_desciption>", "<proposal>",
    "</proposal>", "<poly>", "</poly>", "<and>",
]  # fmt: skip
FLORENCE_EXTRA_TOKENS = FLORENCE_PREFIX_TOKENS + [f"<loc_{i}>" for i in range(1000)] + FLORENCE_SUFFIX_TOKENS

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


def train_byte_level_bpe(vocab_size: int) -> Any:
    """A BART-style byte-level BPE trained on the prompt corpus, with `<s> <pad> </s> <unk>` at ids 0..3.

    Pre-tokenizer, decoder and post-processor are those of the published BART/Florence-2
    `tokenizer.json`: byte-level without a prefix space, and a `RobertaProcessing` post-processor
    that wraps every text in `<s> ... </s>` when `add_special_tokens` is on (the tokenizer's
    default, which `Florence2Processor` turns off because it lays out `<s>`/`</s>` itself). A
    post-processor that adds nothing would hide a doubled `<s>`/`</s>` in the model's inputs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    return tokenizer


def florence_tokenizer(tokenizer: Any) -> Any:
    """Wrap a trained tokenizer the way Florence-2's is laid out.

    As in the published one: BART's `<mask>` closes the base vocabulary, then Florence-2's task and
    `<loc_N>` tokens follow as special tokens (so `skip_special_tokens=True` would drop every
    location), then `<image>`.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tokenizer.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True)])
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in FLORENCE_EXTRA_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=1024,
        extra_special_tokens={"image_token": "<image>"},
    )


def _build_tokenizer(path: Path) -> None:
    florence_tokenizer(train_byte_level_bpe(400)).save_pretrained(path)


def florence_processor(tokenizer: Any, image_side: int, image_seq_length: int) -> Any:
    """Florence-2's processor: the PIL CLIP image processor at `image_side`, the parser config."""
    from transformers import CLIPImageProcessorPil, Florence2Processor

    image_processor = CLIPImageProcessorPil(
        size={"height": image_side, "width": image_side},
        crop_size={"height": image_side, "width": image_side},
        do_center_crop=False,
        do_resize=True,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    image_processor.image_seq_length = image_seq_length
    return Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=POST_PROCESSOR_CONFIG
    )


def florence_generation_config() -> Any:
    """The generation defaults the published Florence-2 checkpoints carry (see NOTES: n-gram rule, forced ids)."""
    from transformers import GenerationConfig

    return GenerationConfig(
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


def build_tiny_florence(path: Path, seed: int = 0, max_position_embeddings: int = 1024) -> Path:
    """Write a tiny random Florence-2 checkpoint (model, tokenizer, processor) to ``path``.

    `max_position_embeddings`: the text encoder's positions (BART's 1024); fewer make long prompts overflow.
    """
    import torch
    from transformers import AutoTokenizer, Florence2Config, Florence2ForConditionalGeneration

    path.mkdir(parents=True, exist_ok=True)
    _build_tokenizer(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vocab_size = len(tokenizer)

    processor = florence_processor(tokenizer, TINY_IMAGE_SIDE, (TINY_IMAGE_SIDE // 8) ** 2 + 1)
    processor.save_pretrained(path)

    text_config = {
        "model_type": "bart",
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
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
    model.generation_config = florence_generation_config()
    model.save_pretrained(path)
    return path


# -- classifiers (issue 5) -------------------------------------------------------------------------------
CLASSIFIER_IMAGE_SIDE = 32
ZERO_SHOT_IMAGE_SIDE = 32
ZERO_SHOT_TEXT_LENGTH = 32  # SigLIP pads every prompt to this many tokens, as it was trained
# Logits the tiny ResNet gives every image (0 for the other 996 classes); 0 and 1 tie on purpose.
RESNET_BIAS_LOGITS = {281: 6.0, 282: 4.5, 0: 3.0, 1: 3.0}
_LABEL_CORPUS = [
    "a photo of a cat dog bird car truck person tree house street boat plane flower",
    "a drawing of something that is not a thumbnail of a casual gaming stream",
    "a thumbnail showing violent content from a video game news cooking music sports",
    "a photo of the astronaut rocket coffee cup red green blue yellow black white",
]


def build_tiny_resnet(
    path: Path, seed: int = 0, bias_logits: dict[int, float] | None = None, labels: list[str] | None = None
) -> Path:
    """A tiny random ResNet with a PIL ConvNeXt-style image processor.

    Without `labels` it has 1000 unnamed outputs (`LABEL_i`), like an ImageNet-1k checkpoint; with
    `labels` it is a custom classifier with those names. With `bias_logits`, the head's weights are
    zero and its bias holds those logits (0 elsewhere): every image gets exactly these logits.
    """
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification

    path.mkdir(parents=True, exist_ok=True)
    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=len(labels) if labels else 1000,
        id2label=dict(enumerate(labels)) if labels else None,
    )
    torch.manual_seed(seed)
    model = ResNetForImageClassification(config).eval()
    if bias_logits is not None:
        head = model.classifier[-1]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            for index, logit in bias_logits.items():
                head.bias[index] = logit
    model.save_pretrained(path)
    ConvNextImageProcessorPil(
        size={"shortest_edge": CLASSIFIER_IMAGE_SIDE},
        crop_pct=0.875,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(path)
    return path


def _clip_tokenizer(model_max_length: int) -> object:
    """A CLIP byte-level BPE tokenizer trained here with `tokenizers` (lower-cased, `</w>` word ends)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    trainer_model = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    trainer_model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    trainer_model.train_from_iterator(_LABEL_CORPUS, trainer=trainer)
    bpe = json.loads(trainer_model.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
    return CLIPTokenizer(vocab=bpe["vocab"], merges=merges, model_max_length=model_max_length)


# The text and vision towers of the tiny CLIP and SigLIP checkpoints: one layer, two heads.
_TINY_TOWER = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def build_tiny_clip(path: Path, seed: int = 0) -> Path:
    """A tiny random CLIP (text + vision towers) with a locally trained tokenizer and PIL processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    path.mkdir(parents=True, exist_ok=True)
    tokenizer: Any = _clip_tokenizer(model_max_length=77)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            **_TINY_TOWER,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "image_size": ZERO_SHOT_IMAGE_SIDE,
            "patch_size": 8,
            **_TINY_TOWER,
        },
        projection_dim=8,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(path)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": ZERO_SHOT_IMAGE_SIDE},
        crop_size={"height": ZERO_SHOT_IMAGE_SIDE, "width": ZERO_SHOT_IMAGE_SIDE},
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def build_tiny_siglip(path: Path, seed: int = 0) -> Path:
    """A tiny random SigLIP (sigmoid loss, learned logit bias) with a local tokenizer and PIL processor."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor

    path.mkdir(parents=True, exist_ok=True)
    tokenizer: Any = _clip_tokenizer(model_max_length=ZERO_SHOT_TEXT_LENGTH)
    config = SiglipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            **_TINY_TOWER,
            "max_position_embeddings": ZERO_SHOT_TEXT_LENGTH,
            "projection_size": 16,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "image_size": ZERO_SHOT_IMAGE_SIDE,
            "patch_size": 8,
            **_TINY_TOWER,
        },
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():  # SigLIP's learned values: scale log(10), bias -10 (init); keep them visible
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-1.5)
    model.save_pretrained(path)
    image_processor = SiglipImageProcessorPil(
        size={"height": ZERO_SHOT_IMAGE_SIDE, "width": ZERO_SHOT_IMAGE_SIDE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-florence")
    print(build_tiny_florence(target))
