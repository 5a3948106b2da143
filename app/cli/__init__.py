"""`python -m app ...`: serve, worker, analyze, folder jobs."""

from app.cli.main import main

__all__ = ["main"]
