"""The services one process shares: built once at start-up and handed to the chat and the API."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import Settings
from app.core.imagenet import imagenet_labels
from app.models.manager import ModelManager
from app.models.registry import BackendRegistry, build_manager
from app.services.analysis import AnalysisService
from app.services.llm_analysis import LLMAnalyst
from app.services.pixel_budget import PixelBudget
from app.services.ratelimit import RateLimiter


@dataclass
class Services:
    settings: Settings
    manager: ModelManager
    analysis: AnalysisService
    limiter: RateLimiter
    analyst: LLMAnalyst | None  # comments on classifications (ANALYSIS_API_URL); None when not configured
    pixels: PixelBudget  # decoded images in flight: the API, the chat and this process's jobs share it

    @classmethod
    def build(cls, settings: Settings) -> Services:
        registry = BackendRegistry.from_settings(settings)  # built-ins (rapidocr first with OCR_BACKEND) + registered
        return cls.from_manager(settings, build_manager(settings, registry))

    @classmethod
    def from_manager(
        cls,
        settings: Settings,
        manager: ModelManager,
        limiter: RateLimiter | None = None,
        pixels: PixelBudget | None = None,
    ) -> Services:
        """The services over an existing `manager` (tests bring one with a tiny model already loaded)."""
        analysis = AnalysisService(manager, imagenet_labels(settings.imagenet_names))
        return cls(
            settings=settings,
            manager=manager,
            analysis=analysis,
            limiter=limiter or RateLimiter(settings.rate_limit, settings.rate_limit_storage),
            analyst=LLMAnalyst.from_settings(settings),
            pixels=pixels or PixelBudget.from_settings(settings),
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
