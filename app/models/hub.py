"""Resolve a model id to something `from_pretrained` can load without hanging on the network."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

from app.core.errors import ModelUnavailable

log = logging.getLogger(__name__)


def how_to_fix(model_id: str, setting: str = "MODEL_ID") -> str:
    local = f"./models/{model_id.rsplit('/', 1)[-1]}"
    return (
        "To fix it, either: (1) on a machine with internet run "
        f"`hf download {model_id} --local-dir {local}` and set {setting}={local} in .env; "
        f"(2) pre-download it into the Hugging Face cache (`hf download {model_id}`) and set HF_HUB_OFFLINE=1; "
        "or (3) give this machine access to https://huggingface.co."
    )


def check_readable(directory: Path, setting: str = "MODEL_ID") -> None:
    """A checkpoint this process cannot read is a permission problem, not a missing file: say so, with
    the uid to give it to (`save_pretrained` leaves files mode 0600, readable by their owner only)."""
    entries = [directory]
    for root, dirs, files in os.walk(directory):  # a folder it cannot list is caught below as unreadable
        entries += [Path(root, name) for name in dirs + files]
    for entry in entries:
        if not entry.exists():  # a dangling link: the loader reports what is missing
            continue
        needed = os.R_OK | os.X_OK if entry.is_dir() else os.R_OK
        if not os.access(entry, needed):
            info = entry.stat()
            uid = os.getuid()
            raise ModelUnavailable(
                f"{setting} directory {str(directory)!r}: {str(entry)!r} is not readable by this process "
                f"(uid {uid}; it is owned by uid {info.st_uid}, mode {info.st_mode & 0o777:04o}): permission denied. "
                f"Fix it on the host: `chown -R {uid} <that folder>` or `chmod -R a+rX <that folder>`.",
                code="model_unreadable",
            )


def resolve_model_source(
    model_id: str, revision: str | None, timeout_s: float, setting: str = "MODEL_ID", example_id: str | None = None
) -> tuple[str, bool]:
    """Return `(source, local_files_only)` for `from_pretrained`, or raise `ModelUnavailable` fast.

    Order: an existing directory; a complete copy in the hub cache; a download when the hub answers
    within `timeout_s`. The hub client alone would spend ~30 s in retries before failing.
    `setting` names the environment variable the hint tells the user to set; `example_id` is the
    hub id used in the hint when `model_id` is a directory.
    """
    example = example_id or "florence-community/Florence-2-large"
    expanded = Path(model_id).expanduser()
    if expanded.is_dir():
        check_readable(expanded, setting)
        if not (expanded / "config.json").is_file():
            raise ModelUnavailable(
                f"Model directory {model_id!r} has no config.json: it is not a saved checkpoint. "
                + how_to_fix(example, setting),
                code="model_missing",
            )
        return str(expanded), True
    if model_id.startswith(("/", "./", "../", "~")):
        raise ModelUnavailable(
            f"Model directory {model_id!r} does not exist. Set {setting} to a saved checkpoint directory or a hub id. "
            + how_to_fix(example, setting),
            code="model_missing",
        )

    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(model_id, revision=revision, local_files_only=True)
        return model_id, True
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass

    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(
            f"Model {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, "
            "so it cannot be downloaded. " + how_to_fix(model_id, setting),
            code="model_missing",
        )
    reason = _probe_hub(constants.ENDPOINT, model_id, revision, timeout_s)
    if reason is not None:
        raise ModelUnavailable(
            f"Model {model_id!r} is not downloaded yet and the model hub {constants.ENDPOINT} cannot be reached "
            f"or does not serve it ({reason}). " + how_to_fix(model_id, setting),
            code="model_missing",
        )
    log.info("downloading %s from %s (first start only)", model_id, constants.ENDPOINT)
    return model_id, False


def _probe_hub(endpoint: str, model_id: str, revision: str | None, timeout_s: float) -> str | None:
    """None when the hub serves this model's config.json; otherwise why not.

    Any answer from the bare endpoint is not enough: a proxy or captive portal answers too, and the
    download behind it would then spend minutes in the hub client's retries.
    """
    import httpx
    from huggingface_hub.utils import build_hf_headers

    url = f"{endpoint.rstrip('/')}/{model_id}/resolve/{quote(revision or 'main', safe='')}/config.json"
    try:
        response = httpx.head(url, timeout=timeout_s, follow_redirects=False, headers=build_hf_headers())
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    if response.status_code >= 400:
        hint = "; check the id, and set HF_TOKEN for a private model" if response.status_code in (401, 404) else ""
        return f"HTTP {response.status_code} for {url}{hint}"
    return None
