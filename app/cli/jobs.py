"""Command-line entry points of the jobs package: `worker` and `analyze DIR --jsonl FILE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.core.config import Settings
from app.core.errors import InvalidInput


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
    from app.cli.task_args import checked_task
    from app.services.analysis import AnalysisService

    if len(args.images) != 1:
        raise InvalidInput("Give one folder (or only image files) to analyze.", code="invalid_arguments")
    if not Path(args.images[0]).is_dir():
        raise InvalidInput(f"{args.images[0]} is not a folder; --jsonl is for folders.", code="not_a_folder")
    if not args.jsonl:
        raise InvalidInput("A folder needs --jsonl FILE for its results (one line per image).", code="missing_jsonl")
    if getattr(args, "json_out", None):
        raise InvalidInput("For a folder, results go to --jsonl (not --json).", code="invalid_arguments")
    service = AnalysisService.from_settings(settings)  # models load on first use, not here
    try:
        spec, task_input = checked_task(args, service)
        job = FolderJob(
            root=Path(args.images[0]),
            spec=spec,
            task_input=task_input,
            jsonl=Path(args.jsonl),
            annotate_dir=Path(args.annotate_dir) if args.annotate_dir else None,
        )
        report = run_folder(job, settings, service)
    finally:
        service.manager.shutdown()
    line = f"{report.done} analysed, {report.failed} failed, {report.skipped} already in {job.jsonl}"
    if job.coco_path is not None:
        line += f"; COCO: {job.coco_path}"
    print(line)
    if report.failed and not report.done:
        print(f"error: none of the {report.failed} new images could be analysed.", file=sys.stderr)
    return report.exit_code()
