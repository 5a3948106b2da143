"""Per-identity rate limit on model work, shared by chat and API (the `limits` library), and its cost rule."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.core.errors import ConfigError, PayloadTooLarge, RateLimited
from app.core.tasks import TaskSpec


def model_runs(spec: TaskSpec) -> int:
    """Model runs one image of `spec` takes: a cascade captions first, then grounds the caption (two)."""
    return 2 if spec.cascade else 1


def work_cost(image_count: int, tasks: Sequence[TaskSpec]) -> int:
    """The one cost rule of every edge (API routes, jobs, chat, CLI-less batch front-ends): one unit per
    model run on one image. Every task in `tasks` runs on every image: "Analyze everything" (caption, OD,
    OCR) on four images is 12 units, caption + grounding on one image 2, a classification of 3 images 3.
    """
    return image_count * sum(model_runs(spec) for spec in tasks)


class RateLimiter:
    """`RATE_LIMIT` like `5/minute` or `100/hour;10/minute`; storage `memory://` or `redis://...`."""

    def __init__(self, rate_limit: str, storage_url: str = "memory://") -> None:
        try:
            self.items: list[RateLimitItem] = list(parse_many(rate_limit)) if rate_limit.strip() else []
        except ValueError:
            raise ConfigError(
                f"RATE_LIMIT {rate_limit[:80]!r} is not valid: write an amount per period such as 30/minute, "
                "or several separated by ';' (100/hour;10/minute); empty turns the limit off."
            ) from None
        self.description = rate_limit
        try:
            storage = storage_from_string(storage_url)
        except ConfigurationError:
            # Only the scheme, never the URL or the library's message: they may carry a password.
            scheme = storage_url.partition("://")[0][:20]
            raise ConfigError(
                f"RATE_LIMIT_STORAGE (scheme {scheme!r}) cannot be used: set memory:// or redis://host:6379."
            ) from None
        self._limiter = MovingWindowRateLimiter(storage)

    @property
    def enabled(self) -> bool:
        return bool(self.items)

    def hit(self, identity: str, cost: int = 1, namespace: str = "work") -> None:
        """Count `cost` units of model work (`work_cost`) for `identity`, or raise `RateLimited` with a retry time.

        A cost above a limit's whole amount can never pass: 413 saying so, not "try again in 60 s".
        `namespace` keeps buckets apart that must not drain each other (model work, chat logins): the
        storage key is (namespace, identity), so no identity string can reach another namespace's bucket.
        """
        for item in self.items:
            if cost > item.amount:
                raise PayloadTooLarge(
                    f"This request needs {cost} units of the rate limit ({self.description}), one per model run "
                    f"on one image, and can never pass; ask for at most {item.amount} at once (fewer images).",
                    code="over_rate_limit",
                )
        for item in self.items:
            if not self._limiter.test(item, namespace, identity, cost=cost):
                raise self._limited(item, namespace, identity)
        for item in self.items:
            if not self._limiter.hit(item, namespace, identity, cost=cost):
                raise self._limited(item, namespace, identity)

    def _limited(self, item: RateLimitItem, namespace: str, identity: str) -> RateLimited:
        reset_at = self._limiter.get_window_stats(item, namespace, identity).reset_time
        retry_after = max(1, math.ceil(reset_at - time.time()))
        return RateLimited(
            f"Rate limit of {item.amount} per {item.multiples if item.multiples > 1 else ''}"
            f"{' ' if item.multiples > 1 else ''}{item.GRANULARITY.name}"
            f"{'s' if item.multiples > 1 else ''} reached. Try again in {retry_after} s.",
            retry_after=retry_after,
        )

    def reset(self) -> None:
        self._limiter.storage.reset()
