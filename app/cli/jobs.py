"""Command-line entry points of the jobs package: `worker` and `analyze DIR --jsonl FILE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.core.geometry import parse_region


def worker_command(args: argparse.Namespace, settings: Settings) -> int:
    name = getattr(args, "worker_name", None)
    if args.threads < 1:
        raise InvalidInput("--threads must be at least 1.", code="invalid_threads")
    if args.taskbridge:
        from app.integrations.taskbridge import run_taskbridge

        return run_taskbridge(settings, args.taskbridge, name, poll_interval_s=args.poll_interval)
    from app.jobs.worker import run_worker

    return run_worker(settings, label=name, threads=args.threads)


def folder_command(args: argparse.Namespace, settings: Settings) -> int:
    """`analyze DIR --jsonl out.jsonl`: prints a one-line summary on stdout; exit 0, 1 (some failed) or 2."""
    from app.cli.folder import FolderJob, run_folder
    from app.core.tasks import get_task, validate_task_inputs

    if len(args.images) != 1:
        raise InvalidInput("Give one folder (or only image files) to analyze.", code="invalid_arguments")
    if not Path(args.images[0]).is_dir():
        raise InvalidInput(f"{args.images[0]} is not a folder; --jsonl is for folders.", code="not_a_folder")
    if not args.jsonl:
        raise InvalidInput("A folder needs --jsonl FILE for its results (one line per image).", code="missing_jsonl")
    if getattr(args, "json_out", None):
        raise InvalidInput("For a folder, results go to --jsonl (not --json).", code="invalid_arguments")
    spec = get_task(args.task)
    region = parse_region(args.region) if args.region is not None else None
    text = validate_task_inputs(spec, args.text, region)
    job = FolderJob(
        root=Path(args.images[0]),
        spec=spec,
        text=text,
        region=region,
        jsonl=Path(args.jsonl),
        annotate_dir=Path(args.annotate_dir) if args.annotate_dir else None,
        min_score=getattr(args, "min_score", None),
    )
    report = run_folder(job, settings)
    line = f"{report.done} analysed, {report.failed} failed, {report.skipped} already in {job.jsonl}"
    if job.coco_path is not None:
        line += f"; COCO: {job.coco_path}"
    print(line)
    if report.failed and not report.done:
        print(f"error: none of the {report.failed} new images could be analysed.", file=sys.stderr)
    return report.exit_code()
