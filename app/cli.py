"""`python -m app ...`: analyze images, serve the app, and helper commands.

Every error ends with a non-zero exit and one line on stderr; no stack traces.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from app.config import Settings, get_settings
from app.errors import AppError

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_analyze(args: argparse.Namespace, settings: Settings) -> int:
    raise NotImplementedError("analyze is being built")


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.server import serve

    serve(settings, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Florence-2 vision analysis")
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help="run one task on images and print/write the results")
    analyze.add_argument("images", nargs="+", help="image files")
    analyze.add_argument("--task", required=True, help="task token (<OD>) or short name (OD, caption, ...)")
    analyze.add_argument("--text", help="text input for text tasks")
    analyze.add_argument("--region", help="region x1,y1,x2,y2 in pixels for region tasks")
    analyze.add_argument("--json", dest="json_out", help="write results as JSON to this file, or - for stdout")
    analyze.add_argument("--annotate", dest="annotate_dir", help="write annotated PNGs into this directory")
    analyze.set_defaults(handler=_cmd_analyze)

    serve = commands.add_parser("serve", help="serve the chat and HTTP API on one port")
    serve.add_argument("--host", default=None, help="bind address (default: HOST setting)")
    serve.add_argument("--port", type=int, default=None, help="port (default: PORT setting)")
    serve.set_defaults(handler=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        from logging_config import configure_logging

        configure_logging(settings.log_level, settings.log_json)
        handler: Handler = args.handler
        return handler(args, settings)
    except AppError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a stack trace
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
