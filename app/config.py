"""One Settings object, read from the environment and `.env`; documented in `.env.example`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Model
    model_id: str = Field("florence-community/Florence-2-large", description="Hub id or local directory")
    model_revision: str | None = Field(None, description="Hub revision (branch, tag or commit)")
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    num_beams: int = Field(3, ge=1, le=10)
    max_new_tokens: int = Field(1024, ge=1, le=4096)
    warmup: bool = True
    hub_timeout_s: float = Field(5.0, gt=0, description="Seconds to wait for the model hub before giving up")

    # Serving
    host: str = "127.0.0.1"
    port: int = Field(8010, ge=1, le=65535)
    rate_limit: str = Field("30/minute", description="limits notation, e.g. '5/minute' or '100/hour;10/minute'")
    rate_limit_storage: str = Field("memory://", description="limits storage URL, e.g. redis://host:6379")
    max_queue_size: int = Field(32, ge=1, description="Requests waiting for the model before 'busy'")

    # Images
    max_image_pixels: int = Field(40_000_000, ge=1, description="Decompression-bomb guard (width x height)")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_images_per_request: int = Field(16, ge=1)

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    data_dir: Path = Path("data")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; entry points call this once and pass the object down."""
    return Settings()
