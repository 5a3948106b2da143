"""`python -m app ...`: analyze images, serve the app, and helper commands.

Every error ends with a non-zero exit and one line on stderr; no stack traces.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pydantic import ValidationError

from app.core.config import Settings, get_settings
from app.core.errors import AppError, ConfigError

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_analyze(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    if args.jsonl is not None or any(Path(p).is_dir() for p in args.images):
        from app.cli.jobs import folder_command  # a folder: resumable, one JSON line per image

        return folder_command(args, settings)
    from app.cli.analyze import run_analyze

    return run_analyze(args, settings)


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.serving.startup_checks import check_folders, check_settings, log_device

    check_folders(settings)  # before the server's imports: a wrong mount is said first and alone
    check_settings(settings)  # a bad value stops here in one line, not in a traceback from the server's start
    log_device(settings)
    from app.serving.server import serve

    serve(settings, host=args.host, port=args.port)
    return 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from app.serving.startup_checks import check_folders, check_settings, log_device

    check_folders(settings)
    check_settings(settings, serving=False)
    log_device(settings)
    from app.cli.jobs import worker_command

    return worker_command(args, settings)


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from app.api.auth import token_for_cli

    print(token_for_cli(settings, args.sub, args.ttl, args.private_key))
    return 0


def _cmd_hash_password(args: argparse.Namespace, settings: Settings) -> int:
    from app.chat.auth import hash_password, read_new_password

    encoded = hash_password(read_new_password())
    print(f"{args.user}:{encoded}" if args.user else encoded)
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes end like every other error: one `error:` line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _settings_error(exc: ValidationError) -> str:
    # Field names and reasons only: the rejected values may be secrets.
    problems = [f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
    return "invalid setting " + "; ".join(problems)


def _score(value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= score <= 1.0:  # also rejects NaN
        raise argparse.ArgumentTypeError("a score is between 0 and 1")
    return score


def build_parser() -> argparse.ArgumentParser:
    """Built per call: the tasks `--task` lists are the registry's at that moment."""
    from app.cli.task_args import task_help

    parser = _OneLineParser(prog="python -m app", description="Florence-2 vision analysis")
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help="run one task on images and print/write the results")
    analyze.add_argument("images", nargs="+", help="image files, or one folder (with --jsonl)")
    analyze.add_argument("--task", required=True, help=task_help())
    analyze.add_argument("--text", help="text input for text tasks")
    analyze.add_argument("--region", help="region x1,y1,x2,y2 in pixels for region tasks")
    analyze.add_argument(
        "--labels", help="zero-shot: the labels to score, comma-separated (a,b,c); open-vocabulary detection: classes"
    )
    analyze.add_argument("--top-n", type=int, help="classification: predictions per image, best first (default 3)")
    analyze.add_argument("--language", help="classification: the language of the class names (en, de)")
    analyze.add_argument(
        "--min-score",
        type=_score,
        help="drop boxes, masks and text regions scored below this (0..1; the mean probability of their tokens)",
    )
    analyze.add_argument("--json", dest="json_out", help="write results as JSON to this file, or - for stdout")
    analyze.add_argument("--annotate", dest="annotate_dir", help="write annotated PNGs into this directory")
    analyze.add_argument("--jsonl", help="for a folder: append one JSON line per image here; rerun to resume")
    analyze.set_defaults(handler=_cmd_analyze)

    serve = commands.add_parser("serve", help="serve the chat and HTTP API on one port")
    serve.add_argument("--host", default=None, help="bind address (default: HOST setting)")
    serve.add_argument("--port", type=int, default=None, help="port (default: PORT setting)")
    serve.set_defaults(handler=_cmd_serve)

    worker = commands.add_parser("worker", help="work queued jobs (QUEUE_URL), or TaskBridge tasks with --taskbridge")
    worker.add_argument("--worker", dest="worker_name", help="this worker's name (default: host and pid)")
    worker.add_argument("--threads", type=int, default=1, help="jobs worked at once (default 1)")
    worker.add_argument("--taskbridge", metavar="URL", help="take classifyimage tasks from this TaskBridge server")
    worker.add_argument("--poll-interval", type=float, default=3.0, help="TaskBridge: seconds between polls when idle")
    worker.set_defaults(handler=_cmd_worker)

    token = commands.add_parser("token", help="mint an API token (JWT) for local use")
    token.add_argument("--sub", required=True, help="who the token is for (also the rate-limit identity)")
    token.add_argument("--ttl", default="1h", help="lifetime such as 30m, 1h or 7d (default 1h)")
    token.add_argument("--private-key", help="PEM private key for RS256/ES256 (default: HS256 with JWT_SECRET)")
    token.set_defaults(handler=_cmd_token)

    hash_pw = commands.add_parser("hash-password", help="hash a chat password for CHAT_USERS (asks, or reads stdin)")
    hash_pw.add_argument("--user", help="print `user:hash`, ready to append to CHAT_USERS")
    hash_pw.set_defaults(handler=_cmd_hash_password)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            settings = get_settings()
        except ValidationError as exc:
            raise ConfigError(_settings_error(exc)) from None
        from logging_config import configure_logging

        configure_logging(settings.log_level, settings.log_json)
        handler: Handler = args.handler
        return handler(args, settings)
    except AppError as exc:
        print(f"error: {_one_line(exc.message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a stack trace
        print(f"error: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return 1
