"""Per-instance confidence for Florence-2 answers: which generated tokens belong to which box or polygon.

The native `post_process_generation` parses decoded text with regular expressions and keeps no link
to the tokens. Here the same expressions run with `finditer` over text decoded token by token, so
each parsed instance gets the character spans of its label and of its own `<loc_N>` tokens, hence
its tokens. An instance's score is the mean probability generation gave those tokens (the chosen
beam's, after the same logits processors). If the instances found here do not line up one to one
with the parser's, no scores are given rather than shifted ones.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Span = tuple[int, int]
_LOC = r"<loc_\d+>"
_LABEL_END = r"(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_)"
_BOX = r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>"
_DEFAULT_OCR = r"(.+?)" + _BOX + r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>"
# Tokens the native parsers delete from the text before matching.
_DROPPED = ("<s>", "</s>", "<pad>")


@dataclass(frozen=True)
class GeneratedAnswer:
    """One request's generated tokens (decoder start excluded), their probabilities and decoded text."""

    text: str
    token_ids: tuple[int, ...] = ()
    token_probs: tuple[float, ...] | None = None


def instance_spans(parse_type: str, text: str, config: dict[str, Any] | None = None) -> list[list[Span]]:
    """Character spans (label, then own locations) of each instance, in the order the native parser yields them.

    `parse_type` is the processor's post-processing type for the task (`description_with_bboxes`, ...)
    and `config` the processor's parser settings for that type (banned phrases, the OCR pattern).
    """
    if parse_type == "description_with_bboxes":
        return list(_box_instances(text, allow_empty=False))
    if parse_type == "bboxes":
        return list(_box_instances(text, allow_empty=True))
    if parse_type == "phrase_grounding":
        return list(_box_instances(text, allow_empty=False, banned=_banned(config)))
    if parse_type == "polygons":
        return list(_polygon_instances(text, allow_empty=True))
    if parse_type == "description_with_polygons":
        return list(_polygon_instances(text, allow_empty=False))
    if parse_type == "description_with_bboxes_or_polygons":
        if "<poly>" in text:
            return list(_polygon_instances(text, allow_empty=False))
        return list(_box_instances(text, allow_empty=False))
    if parse_type == "ocr":
        return list(_ocr_instances(text, config or {}))
    return []


def _banned(config: dict[str, Any] | None) -> frozenset[str]:
    return frozenset((config or {}).get("banned_grounding_tokens", ()))


def _box_instances(text: str, allow_empty: bool, banned: frozenset[str] = frozenset()) -> Iterator[list[Span]]:
    # Mirrors Florence2PostProcessor.parse_description_with_bboxes_from_text_and_spans (and the
    # phrase-grounding variant, which also skips banned phrases); one instance per box.
    pattern = rf"(?:{_LOC}){{4,}}" if allow_empty else rf"[^<]+(?:{_LOC}){{4,}}"
    for phrase in re.finditer(pattern, text):
        base = phrase.start()
        label = re.search(r"^\s*(.*?)" + _LABEL_END, phrase.group())
        if not label or label.group().strip() in banned:
            continue
        label_span = (base, base + label.end())
        for box in re.finditer(_BOX, phrase.group()):
            yield [label_span, (base + box.start(), base + box.end())]


def _polygon_instances(text: str, allow_empty: bool) -> Iterator[list[Span]]:
    # Mirrors Florence2PostProcessor.parse_description_with_polygons_from_text_and_spans.
    parts = rf"(?:{_LOC}|<sep>|<poly>|</poly>){{4,}}"
    pattern = parts if allow_empty else rf"[^<]+{parts}"
    label_pattern = r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_|<poly>)"
    for phrase in re.finditer(pattern, text):
        phrase_text, base = phrase.group(), phrase.start()
        first_loc = re.match(_LOC, phrase_text)
        offset = first_loc.end() if first_loc else 0
        stripped = phrase_text[offset:]
        if not stripped and not allow_empty:
            continue
        label = re.search(label_pattern, stripped)
        if not label:
            continue
        label_span = (base + offset, base + offset + label.end())
        if "<poly>" in phrase_text and "</poly>" in phrase_text:
            polys = [(m.start(1), m.group(1)) for m in re.finditer(r"<poly>(.*?)</poly>", phrase_text)]
        else:
            polys = [(0, phrase_text)]
        for start, poly in polys:
            found = [
                (base + start + m.start(1), base + start + m.end(1))
                for m in re.finditer(r"((?:<loc_\d+>)+)(?:<sep>|$)", poly)
            ]
            if found:
                yield [label_span, *found]


def _ocr_instances(text: str, config: dict[str, Any]) -> Iterator[list[Span]]:
    # Mirrors Florence2PostProcessor.parse_ocr_from_text_and_spans; its area filter stays the parser's
    # (the count check below notices if it removed a region).
    for match in re.finditer(config.get("PATTERN") or _DEFAULT_OCR, text):
        yield [match.span()]


def decode_with_spans(tokenizer: Any, token_ids: Sequence[int]) -> tuple[str, list[Span], list[int]]:
    """The text the native parsers match on, each kept token's character span, and the kept positions."""
    tokens = tokenizer.convert_ids_to_tokens(list(token_ids), skip_special_tokens=False)
    special = set(tokenizer.all_special_tokens)
    text, spans, kept = "", [], []
    for position, token in enumerate(tokens):
        if token in _DROPPED:
            continue
        piece = token if token in special else tokenizer.convert_tokens_to_string([token])
        spans.append((len(text), len(text) + len(piece)))
        text += piece
        kept.append(position)
    return text, spans, kept


def instance_scores(
    tokenizer: Any, parse_type: str, answer: GeneratedAnswer, expected: int, config: dict[str, Any] | None = None
) -> list[float] | None:
    """Mean token probability of each instance, or None if the instances cannot be matched to the parser's."""
    probs = answer.token_probs
    if probs is None or expected == 0:
        return None if probs is None else []
    text, token_spans, kept = decode_with_spans(tokenizer, answer.token_ids)
    instances = instance_spans(parse_type, text, config)
    if len(instances) != expected:
        log.warning("scores skipped: %d instances in the tokens, %d parsed (%s)", len(instances), expected, parse_type)
        return None
    scores = []
    for spans in instances:
        own = [
            probs[kept[i]]
            for i, (start, end) in enumerate(token_spans)
            if any(start < span_end and end > span_start for span_start, span_end in spans)
        ]
        if not own:
            return None
        scores.append(sum(own) / len(own))
    return scores
