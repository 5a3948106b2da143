"""What each kind of job does: validated parameters in, the services' answer out as JSON.

Kinds: `analyze` (a Florence-2 task), `classify` (ImageNet top-N) and `zero-shot` (labels you give).
Parameters are validated when the job is submitted (a bad request never reaches the queue) and the
result has the same per-image shape as the matching synchronous API route.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from app.errors import AppError, InferenceError, InvalidInput
from app.geometry import XYXY
from app.images import LoadedImage
from app.services.container import Services
from app.tasks import get_task, validate_task_inputs

ANALYZE, CLASSIFY, ZERO_SHOT = "analyze", "classify", "zero-shot"
KINDS = (ANALYZE, CLASSIFY, ZERO_SHOT)
_ALIASES = {"zero_shot": ZERO_SHOT, "zeroshot": ZERO_SHOT, "classification": CLASSIFY, "classify-image": CLASSIFY}

MAX_TOP_N = 100
MAX_LABELS = 100

ImageOrError = LoadedImage | AppError


def normalize_kind(value: object) -> str:
    name = str(value).strip().lower() if isinstance(value, str) else ""
    name = _ALIASES.get(name, name)
    if name not in KINDS:
        raise InvalidInput(f"'kind' must be one of {', '.join(KINDS)}.", code="unknown_job_kind")
    return name


def analyze_params(task: str, text: str | None, region: XYXY | None, annotate: bool = False) -> dict[str, Any]:
    """Checked like the analyze route: the task exists and gets the text or region it needs."""
    spec = get_task(task)
    checked_text = validate_task_inputs(spec, text, region)
    return {"task": spec.token, "text": checked_text, "region": list(region) if region else None, "annotate": annotate}


def classify_params(top_n: object, language: object) -> dict[str, Any]:
    if not isinstance(top_n, int) or isinstance(top_n, bool) or not 1 <= top_n <= MAX_TOP_N:
        raise InvalidInput(f"top_n must be a whole number from 1 to {MAX_TOP_N}.", code="invalid_top_n")
    if not isinstance(language, str) or not language.strip():
        raise InvalidInput("language must be a language code such as 'en' or 'de'.", code="invalid_language")
    return {"top_n": top_n, "language": language.strip().lower()}


def zero_shot_params(labels: Sequence[str], multi_label: object = False, templates: object = None) -> dict[str, Any]:
    cleaned = [str(label).strip() for label in labels]
    if not cleaned or len(cleaned) > MAX_LABELS or not all(cleaned):
        raise InvalidInput(f"Give 1 to {MAX_LABELS} non-empty labels.", code="invalid_labels")
    if len(set(cleaned)) != len(cleaned):
        raise InvalidInput("The labels must be different from each other.", code="invalid_labels")
    if not isinstance(multi_label, bool):
        raise InvalidInput("multi_label must be true or false.", code="invalid_config")
    if templates is not None and (
        not isinstance(templates, list) or not templates or not all(isinstance(t, str) and t for t in templates)
    ):
        raise InvalidInput("templates must be a list of prompt templates such as 'a photo of a {}'.",
                           code="invalid_config")  # fmt: skip
    return {"labels": cleaned, "multi_label": multi_label, "templates": templates}


def scores_by_label(entry: dict[str, Any]) -> dict[str, float]:
    """label → probability from one image's classification answer (list of predictions, or label/score lists)."""
    if isinstance(entry.get("labels"), list) and isinstance(entry.get("scores"), list):
        return {str(label): float(score) for label, score in zip(entry["labels"], entry["scores"], strict=False)}
    scores: dict[str, float] = {}
    for item in entry.get("predictions", []) or []:
        if isinstance(item, dict):
            label = item.get("label", item.get("name"))
            score = item.get("score", item.get("probability"))
            scores[str(label)] = float(score or 0.0)
    return scores


def error_entry(name: str, error: AppError) -> dict[str, Any]:
    return {"name": name, "error": {**error.to_dict(), "status": error.http_status}}


def run_kind(
    services: Services, kind: str, params: dict[str, Any], names: Sequence[str], images: Sequence[ImageOrError]
) -> tuple[dict[str, Any], AppError | None]:
    """The job's result, and the job's error when no image at all could be processed."""
    if kind == ANALYZE:
        entries = _run_analyze(services, params, names, images)
    elif kind in (CLASSIFY, ZERO_SHOT):
        entries = _run_classification(services, kind, params, names, images)
    else:
        raise InvalidInput(f"Unknown job kind {kind!r}.", code="unknown_job_kind")
    errors = [e["error"] for e in entries if "error" in e]
    body: dict[str, Any] = {"results": entries}
    if kind == ANALYZE:
        body = {"task": params["task"], **body}
    if entries and len(errors) == len(entries):
        first = errors[0]
        failure = AppError(first["message"], code=first["code"])
        failure.http_status = int(first.get("status", 500))
        return body, failure
    return body, None


def _split(images: Sequence[ImageOrError]) -> tuple[list[LoadedImage], list[int]]:
    loaded = [(i, im) for i, im in enumerate(images) if isinstance(im, LoadedImage)]
    return [im for _, im in loaded], [i for i, _ in loaded]


def _run_analyze(
    services: Services, params: dict[str, Any], names: Sequence[str], images: Sequence[ImageOrError]
) -> list[dict[str, Any]]:
    loaded, positions = _split(images)
    region = tuple(params["region"]) if params.get("region") else None
    outcomes = services.analysis.analyze(loaded, params["task"], params.get("text"), region) if loaded else []
    by_position = dict(zip(positions, outcomes, strict=True))
    annotator = None
    if params.get("annotate"):
        from app.drawing import Annotator, to_png_bytes

        annotator = Annotator()
    entries: list[dict[str, Any]] = []
    for index, (name, image) in enumerate(zip(names, images, strict=True)):
        if isinstance(image, AppError):
            entries.append(error_entry(name, image))
            continue
        outcome = by_position[index]
        if outcome.result is None:
            entries.append(error_entry(name, outcome.error or InferenceError("No result.")))
            continue
        entry: dict[str, Any] = {"name": name, **outcome.result.to_dict()}
        if annotator is not None:
            drawn = annotator.annotate(image.image, outcome.result)
            entry["annotated_png"] = base64.b64encode(to_png_bytes(drawn)).decode("ascii")
        entries.append(entry)
    return entries


def _run_classification(
    services: Services, kind: str, params: dict[str, Any], names: Sequence[str], images: Sequence[ImageOrError]
) -> list[dict[str, Any]]:
    classifier = getattr(services, "classification", None)
    if classifier is None:
        raise InferenceError("Image classification is not available on this worker.", code="classifier_unavailable")
    loaded, positions = _split(images)
    answers: list[Any] = []
    if loaded and kind == CLASSIFY:
        answers = list(classifier.classify(loaded, params.get("top_n", 5), params.get("language", "en")))
    elif loaded:
        answers = list(
            classifier.zero_shot(
                loaded,
                params["labels"],
                params.get("categories"),
                params.get("multi_label", False),
                params.get("templates"),
            )
        )
    by_position = dict(zip(positions, answers, strict=True))
    entries: list[dict[str, Any]] = []
    for index, (name, image) in enumerate(zip(names, images, strict=True)):
        if isinstance(image, AppError):
            entries.append(error_entry(name, image))
        else:
            entries.append({"name": name, **_to_json(by_position[index])})
    return entries


def _to_json(answer: Any) -> dict[str, Any]:
    """One image's classification answer as a dict (the service's own `to_dict` when it has one)."""
    error = getattr(answer, "error", None)
    if isinstance(error, AppError):
        return {"error": {**error.to_dict(), "status": error.http_status}}
    result = getattr(answer, "result", answer)
    if hasattr(result, "to_dict"):
        converted: dict[str, Any] = result.to_dict()
        return converted
    if isinstance(result, dict):
        return result
    return {"predictions": result}
