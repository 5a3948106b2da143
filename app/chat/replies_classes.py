"""Chat replies for ranked classes and label scores (ImageNet, zero-shot): a table, a bar chart, the JSON.

`app.chat.answers` picks these for classification results. CPU work (matplotlib): call in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from app.chat.pictures import Picture
from app.chat.replies import Download, download_name, escape_md, json_bytes
from app.chat.ui import ImageReply
from app.core.classification_results import AnyClassification, ClassificationResult, ZeroShotResult
from app.rendering.charts import probability_chart_png

_SYNSET_RE = re.compile(r"n\d{8}")


def fmt_probability(probability: float) -> str:
    return "<0.1%" if 0 < probability < 0.0005 else f"{probability:.1%}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def classification_markdown(result: ClassificationResult) -> str:
    """`| # | Name | Synset | Probability |`, best first (`Class` instead of `Synset` for other models)."""
    if not result.predictions:
        return "No prediction."
    is_imagenet = all(_SYNSET_RE.fullmatch(p.class_id) for p in result.predictions)
    rows = [
        (str(rank), escape_md(p.name), f"`{p.class_id}`", fmt_probability(p.probability))
        for rank, p in enumerate(result.predictions, start=1)
    ]
    return _table(("#", "Name", "Synset" if is_imagenet else "Class", "Probability"), rows)


def zero_shot_markdown(result: ZeroShotResult, label_categories: Mapping[str, str] | None = None) -> str:
    """The scores, best first: per category when categories were given, then each label with its category."""
    if result.multi_label:
        parts = ["Independent score per label."]
    else:
        parts = ["Probabilities over your labels (they add up to 100%)."]
    scores = [(escape_md(name), fmt_probability(p)) for name, p in result.scores()]
    if result.categories is None:
        parts.append(_table(("Label", "Probability"), scores))
        return "\n\n".join(parts)
    parts.append(_table(("Category", "Probability"), scores))
    categories = label_categories or {}
    ranked = sorted(result.by_label.items(), key=lambda item: -item[1])
    rows = [(escape_md(label), escape_md(categories.get(label, label)), fmt_probability(p)) for label, p in ranked]
    parts.append(_table(("Label", "Category", "Probability"), rows))
    return "\n\n".join(parts)


def classes_reply(
    name: str,
    task_name: str,
    task_key: str,
    title: str,
    result: AnyClassification,
    label_categories: Mapping[str, str] | None = None,
) -> ImageReply:
    """One image's answer: heading, table, the chart as its picture, the full result (with its model) as JSON."""
    if isinstance(result, ClassificationResult):
        table = classification_markdown(result)
    else:
        table = zero_shot_markdown(result, label_categories)
    chart = probability_chart_png(result.scores(), title=f"{task_name}: {name}")
    download = Download(download_name(name, task_key), json_bytes({"image": name, **result.to_dict()}))
    return ImageReply(name, f"{title}\n\n{table}", Picture(chart, "image/png"), [download], picture_kind="chart")
