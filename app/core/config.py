"""One Settings object, read from the environment and `.env`; documented in `.env.example`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr, ValidationInfo, field_validator
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

    # Speed (measured in docs/BENCHMARKS.md)
    max_batch_size: int = Field(0, ge=0, le=512, description="Requests per generate call; 0 = auto (GPU 32, CPU 1)")
    batch_wait_ms: float = Field(5.0, ge=0, le=10_000, description="How long a batch waits for more requests")
    cpu_optimization: Literal["none", "int8"] = Field("none", description="int8: dynamic int8 Linear layers on CPU")
    cpu_threads: int = Field(0, ge=0, description="PyTorch CPU threads; 0 = one per core")
    image_feature_cache: int = Field(
        32, ge=0, le=4096, description="Images whose encoded features are kept for further tasks; 0 = off"
    )

    # Classification, zero-shot and the OCR engine
    classifier_model_id: str = Field("microsoft/resnet-50", description="ImageNet-1k classifier: hub id or directory")
    zero_shot_model_id: str = Field(
        "openai/clip-vit-base-patch32", description="CLIP or SigLIP checkpoint: hub id or directory"
    )
    imagenet_names: Literal["default", "keras"] = Field(
        "default", description="ImageNet class names: ours, or `keras` (Keras index / TaskBridge reference worker)"
    )
    taskbridge_exact_floats: bool = Field(
        False, description="TaskBridge worker: unrounded probabilities and duration, as the reference worker sends"
    )
    ocr_backend: Literal["florence", "rapidocr"] = Field(
        "florence", description="Engine for <OCR> and <OCR_WITH_REGION>: Florence-2 or rapidocr (CPU, no download)"
    )

    # LLM analysis of classifications (optional; any OpenAI-compatible /chat/completions endpoint)
    analysis_api_url: str = Field("", description="Base URL, e.g. http://localhost:11434/v1; empty disables it")
    analysis_api_key: SecretStr | None = Field(None, description="Bearer key for the analysis endpoint, if needed")
    analysis_model_llama: str = Field("llama3.1", description="Model name sent for the `llama` alias")
    analysis_model_gemma: str = Field("gemma2", description="Model name sent for the `gemma` alias")
    analysis_timeout_s: float = Field(30.0, gt=0, le=600, description="Seconds to wait for the analysis")

    # Serving
    host: str = "127.0.0.1"
    port: int = Field(8010, ge=1, le=65535)
    forwarded_allow_ips: str = Field(
        "", description="Proxy addresses/CIDRs whose X-Forwarded-For/-Proto are trusted (comma-separated); empty: none"
    )
    http_header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Seconds a connection may take to send a request head"
    )
    http_keepalive_timeout_s: float = Field(
        5.0, gt=0, le=300, description="Seconds an idle keep-alive connection stays open"
    )
    http_body_timeout_s: float = Field(30.0, gt=0, le=3600, description="Seconds a request body may take to arrive")
    http_max_header_bytes: int = Field(16 * 1024, ge=1024, description="Largest request head (431 above)")
    http_max_headers: int = Field(100, ge=10, description="Most header lines in a request (431 above)")
    max_connections: int = Field(1000, ge=1, description="Concurrent connections and requests before 503")
    rate_limit: str = Field("30/minute", description="limits notation, e.g. '5/minute' or '100/hour;10/minute'")
    rate_limit_storage: str = Field("memory://", description="limits storage URL, e.g. redis://host:6379")
    max_queue_size: int = Field(32, ge=1, description="Requests waiting for the model before 'busy'")
    busy_hold_s: float = Field(
        2.0, ge=0, le=10, description="Seconds a model request waits for a free place before 503 busy; 0 = none"
    )
    busy_hold_max: int = Field(128, ge=0, description="Model requests waiting for a place at once; more get 503 busy")

    # Chat login (optional): on when CHAT_USERS is set; Chainlit signs its session tokens with the secret.
    chat_users: str = Field("", description="Comma-separated name:hash pairs (`python -m app hash-password`)")
    chainlit_auth_secret: SecretStr | None = Field(None, description="Secret that signs chat login tokens")

    # HTTP API (docs/API.md): JWT bearer auth, CORS, request size, URL fetching, model preload
    jwt_secret: SecretStr | None = Field(None, description="HS256 secret (32+ characters) that signs API tokens")
    jwt_public_key: str | None = Field(None, description="PEM public key, or a path to one, for RS256/ES256 tokens")
    jwt_algorithms: str = Field("", description="Accepted JWT algorithms, comma-separated; empty: from the key")
    jwt_audience: str | None = Field(None, description="Required `aud` claim, if set")
    jwt_issuer: str | None = Field(None, description="Required `iss` claim, if set")
    jwt_leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp/iat/nbf")
    auth_disabled: bool = Field(False, description="Serve /api/* without tokens (local use only)")
    cors_origins: str = Field("", description="Comma-separated browser origins allowed to call /api/*")
    cors_allow_credentials: bool = False
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Largest API request body")
    fetch_allow_networks: str = Field("", description="Comma-separated CIDRs URL fetching may reach though not public")
    fetch_timeout_s: float = Field(10.0, gt=0, le=120, description="Connect/read timeout per URL fetch")
    preload: bool = Field(True, description="Load the model in the background at start-up")

    # Images
    max_image_pixels: int = Field(40_000_000, ge=1, description="Decompression-bomb guard (width x height)")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_images_per_request: int = Field(16, ge=1)
    max_request_pixels: int = Field(
        200_000_000, ge=1, description="Decoded pixels per request (API, chat message or job), all images together"
    )
    max_inflight_pixels: int = Field(
        0, ge=0, description="Decoded pixels held by all requests at once; 0 = 1/4 of memory at 8 bytes a pixel"
    )

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    data_dir: Path = Path("data")

    # Jobs (docs/JOBS.md): SQLite queue under DATA_DIR with an in-process worker, or Redis + workers
    queue_url: str = Field("", description="Empty: SQLite under DATA_DIR; redis://host:6379/0 for workers elsewhere")
    embedded_worker: bool = Field(True, description="SQLite mode: work jobs inside the server process")
    job_ttl: int = Field(24 * 3600, ge=1, description="Seconds a finished job (and its result) stays readable")
    job_max_attempts: int = Field(3, ge=1, le=20, description="Runs of a job whose worker died, before it fails")
    job_lease_s: float = Field(60.0, ge=1, description="Seconds without a worker heartbeat before a job is retried")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object, info: ValidationInfo) -> object:
        """`NAME=` (as `.env.example` writes unset values) means None for optional settings, not ""."""
        if value == "" and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if type(None) in get_args(annotation):
                return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; entry points call this once and pass the object down."""
    return Settings()
