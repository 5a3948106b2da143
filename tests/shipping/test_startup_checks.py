"""Start-up checks: unwritable folders and unreadable checkpoints are named as permission problems,
with the uid to chown to; the device line says which device and why.

The checks run as an unprivileged user (uid 65534 through `setpriv` when the tests run as root, as
in a container whose /data belongs to root), because root passes every permission check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.config import Settings
from app.serving.startup_checks import choose_device

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def run_unprivileged(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.getuid() == 0 else []
    full_env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([*prefix, sys.executable, *args], env=full_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder an unprivileged user can reach (pytest's own tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="startup-checks-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_data_dir_owned_by_someone_else_is_named_with_the_uid_to_chown_to(open_tmp: Path) -> None:
    data = open_tmp / "data"
    data.mkdir(mode=0o755)
    if os.getuid() != 0:
        data.chmod(0o555)
    result = run_unprivileged("-m", "app", "serve", env={"DATA_DIR": str(data / "app"), "PRELOAD": "false"})
    uid = NOBODY if os.getuid() == 0 else os.getuid()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "DATA_DIR" in result.stderr and "permission denied" in result.stderr
    assert f"runs as uid {uid}" in result.stderr and f"chown -R {uid}" in result.stderr


def test_an_unreadable_checkpoint_is_a_permission_problem(tiny_florence_dir: Path, open_tmp: Path) -> None:
    model = open_tmp / "model"
    shutil.copytree(tiny_florence_dir, model)
    for path in [model, *model.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (model / "config.json").chmod(0o600 if os.getuid() == 0 else 0o000)  # as `save_pretrained` leaves it
    code = (
        "from app.models.hub import resolve_model_source\n"
        f"try:\n    resolve_model_source({str(model)!r}, None, 1.0)\n"
        "except Exception as exc:\n    print(exc.code, exc)\n"
    )
    result = run_unprivileged("-c", code, env={})
    assert result.stdout.startswith("model_unreadable "), result.stdout + result.stderr
    assert "config.json" in result.stdout and "permission denied" in result.stdout
    assert ("No such file" not in result.stdout and "mode 0600" in result.stdout) or os.getuid() != 0


def test_the_device_line_says_why(tiny_settings: Settings) -> None:
    import torch

    choice = choose_device(tiny_settings.model_copy(update={"device": "auto"}))
    if torch.cuda.is_available():
        assert choice.device == "cuda" and torch.cuda.get_device_name(0) in choice.reason
    elif torch.version.cuda is None:
        assert (choice.device, choice.loud) == ("cpu", False) and "CPU build" in choice.reason
    else:  # a CUDA build without a usable GPU: loud, with the fix
        assert choice.loud and "--gpus all" in choice.reason and "TORCH_VARIANT=cpu" in choice.reason
    forced = choose_device(tiny_settings.model_copy(update={"device": "cuda"}))
    assert forced.loud == (not torch.cuda.is_available())
