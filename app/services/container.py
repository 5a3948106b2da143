"""The services one process shares: built once at start-up and handed to the chat and the API."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.models.manager import ModelManager
from app.services.analysis import AnalysisService
from app.services.ratelimit import RateLimiter


@dataclass
class Services:
    settings: Settings
    manager: ModelManager
    analysis: AnalysisService
    limiter: RateLimiter

    @classmethod
    def build(cls, settings: Settings) -> Services:
        manager = ModelManager(settings)
        return cls(
            settings=settings,
            manager=manager,
            analysis=AnalysisService(manager),
            limiter=RateLimiter(settings.rate_limit, settings.rate_limit_storage),
        )

    def close(self) -> None:
        self.manager.shutdown()


_current: Services | None = None


def set_services(services: Services | None) -> None:
    """Installed by the server's lifespan; the Chainlit module (loaded by Chainlit) reads it back."""
    global _current
    _current = services


def get_services() -> Services:
    if _current is None:
        raise RuntimeError("services are not initialised; start the app with `python -m app serve`")
    return _current
