"""The task and its input from the command line (`--task`, `--text`, `--region`, `--labels`, `--top-n`, ...).

Shared by `analyze FILE...` and `analyze DIR --jsonl`: the task is looked up in the registry when the
command runs, and its input is checked by the service exactly as the API checks it, before any image
is read or any model is loaded.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from app.core.errors import InvalidInput
from app.core.geometry import parse_region
from app.core.task_inputs import TaskFields, TaskInput
from app.core.tasks import OutputKind, TaskSpec, all_tasks, get_task

if TYPE_CHECKING:  # the parser is built without loading the services
    from app.services.analysis import AnalysisService


def task_help() -> str:
    """`--task` help: every registered task, read from the registry when the parser is built."""
    names = ", ".join(spec.short_name for spec in all_tasks())
    return f"the task: {names} (its token such as <OD>, or an alias such as caption, also works)"


def split_labels(value: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,;\n]", value) if part.strip()]


def task_input(args: argparse.Namespace, spec: TaskSpec) -> TaskInput:
    """What `args` give the task besides the image (not yet checked: see `checked_task`)."""
    top_n, language = getattr(args, "top_n", None), getattr(args, "language", None)
    if (top_n is not None or language is not None) and spec.output_kind is not OutputKind.CLASSES:
        raise InvalidInput(f"{spec.name} takes no --top-n or --language.", code="unexpected_options")
    fields = TaskFields(
        text=args.text,
        region=parse_region(args.region) if args.region is not None else None,
        labels=split_labels(args.labels) if getattr(args, "labels", None) is not None else None,
        top_n=top_n,
        language=language,
        min_score=getattr(args, "min_score", None),
    )
    return fields.task_input(spec)  # labels: to score, or open-vocabulary classes; refused by other tasks


def checked_task(args: argparse.Namespace, analysis: AnalysisService) -> tuple[TaskSpec, TaskInput]:
    """`--task` resolved in the registry and its input checked; `InvalidInput`/`UnknownTask` otherwise."""
    spec = get_task(args.task)
    return analysis.check_input(spec, task_input(args, spec))
