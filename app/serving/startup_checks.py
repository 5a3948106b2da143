"""Checks `serve` and `worker` run before anything else: settings, folders they must write, the device.

In a container the usual mistakes are a host folder owned by another uid mounted on /data, and a
CUDA image started without `--gpus all` (or on a driver too old for its CUDA). Both are said here
in one line with the fix, instead of a traceback or a silent fall-back to the CPU.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.errors import AppError

log = logging.getLogger(__name__)


def check_settings(settings: Settings, serving: bool = True) -> None:
    """Build once what the settings describe, so a mistake in any of them is a `ConfigError` now, said in
    one line by the CLI, instead of a traceback from the server's start-up or a surprise on first request.

    The worker (`serving=False`) needs only the rate limit (its services), the fetch policy (callbacks) and
    the queue.
    A missing JWT key is not a mistake: the API answers 503 `auth_not_configured` until one is set.
    """
    from app.jobs.queue import check_queue_url
    from app.services.fetch import FetchPolicy
    from app.services.ratelimit import RateLimiter

    RateLimiter(settings.rate_limit, settings.rate_limit_storage)
    FetchPolicy.from_settings(settings)
    check_queue_url(settings.queue_url)
    if not serving:
        return
    from app.api.auth import build_verifier
    from app.api.cors import cors_origins
    from app.chat.auth import chat_login

    if not settings.auth_disabled:
        build_verifier(settings)
    cors_origins(settings)
    chat_login(settings)


class FolderNotWritable(AppError):
    code = "folder_not_writable"
    http_status = 500


def owner_hint(path: Path) -> str:
    """`(owned by uid 0, mode 0700)`, for the message that says what to chown."""
    try:
        info = path.stat()
    except OSError:
        return ""
    return f" (owned by uid {info.st_uid}, mode {info.st_mode & 0o777:04o})"


def chown_fix(path: Path) -> str:
    uid = os.getuid()
    return (
        f"this process runs as uid {uid}. Fix it on the host: `chown -R {uid} <the folder mounted there>` "
        f"(or run the container with `--user $(id -u)`)."
    )


def ensure_writable(path: Path, what: str) -> None:
    """Create `path` if needed and check this process may write in it; else `FolderNotWritable`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        parent = next((p for p in path.parents if p.exists()), path)
        raise FolderNotWritable(
            f"{what} {str(path)!r} cannot be created: permission denied in {str(parent)!r}{owner_hint(parent)}; "
            + chown_fix(parent)
        ) from None
    except OSError as exc:
        raise FolderNotWritable(f"{what} {str(path)!r} cannot be created: {exc.strerror or exc}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FolderNotWritable(
            f"{what} {str(path)!r} is not writable: permission denied{owner_hint(path)}; " + chown_fix(path)
        )


def check_folders(settings: Settings) -> None:
    """DATA_DIR (job store, uploads) and the Hugging Face cache (downloads) must be writable."""
    ensure_writable(Path(settings.data_dir), "DATA_DIR")
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        ensure_writable(Path(hf_home), "HF_HOME (the model download cache)")


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda", "cpu", or "none" (DEVICE=cuda without a GPU)
    reason: str
    loud: bool  # a CUDA build that cannot use a GPU: say so as a warning


def choose_device(settings: Settings) -> DeviceChoice:
    """Which device the models will use, and why, from the torch build and what it can see."""
    import torch

    cuda_build = torch.version.cuda
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    why_not = "; ".join(str(w.message).splitlines()[0] for w in caught)[:300]
    if available:
        name = torch.cuda.get_device_name(0)
        if settings.device == "cpu":
            return DeviceChoice("cpu", f"DEVICE=cpu (a GPU, {name}, is visible but not used)", False)
        return DeviceChoice("cuda", f"DEVICE={settings.device} and PyTorch (CUDA {cuda_build}) sees {name}", False)
    if settings.device == "cuda":
        return DeviceChoice("none", "DEVICE=cuda but PyTorch cannot use a GPU: the models will not load", True)
    if cuda_build is None:
        return DeviceChoice("cpu", f"this is the CPU build of PyTorch {torch.__version__}", False)
    detail = why_not or "no GPU is visible to it"
    return DeviceChoice(
        "cpu",
        f"PyTorch {torch.__version__} is the CUDA {cuda_build} build but cannot use a GPU ({detail}). "
        "Start the container with `--gpus all` on a host with an NVIDIA driver for CUDA "
        f"{cuda_build} or newer, or build the smaller CPU image (`--build-arg TORCH_VARIANT=cpu`)",
        True,
    )


def log_device(settings: Settings) -> DeviceChoice:
    choice = choose_device(settings)
    if choice.loud:
        log.warning("device: %s: %s", "RUNNING ON CPU" if choice.device == "cpu" else "NO DEVICE", choice.reason)
    else:
        log.info("device: %s, because %s", choice.device, choice.reason)
    return choice
