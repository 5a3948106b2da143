"""A base for the stand-in backends of tests that add a task at run time (tests/test_new_task.py and others)."""

from __future__ import annotations

from typing import Any, ClassVar


class StubBackend:
    """Follows `app.models.base.Backend`; a subclass names itself, lists its tasks and implements `run`."""

    name: ClassVar[str]
    tasks: ClassVar[frozenset[str]]
    model_id: ClassVar[str]
    library: ClassVar[str] = "stub-1.0"

    def __init__(self, settings: object = None) -> None:
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def info(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "tasks": sorted(self.tasks)}
