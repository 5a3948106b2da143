"""The commands in README.md and docs/API.md, extracted from the documents and run as written.

Where a command cannot run here it is checked instead: the README's install command (it would
reinstall everything; CI runs `./scripts/test.sh` itself), `hf download` (no hub here) and Docker
(`.ci/container-smoke` builds and runs the image). Each run happens in a scratch folder that links
the repository's top level, so the files a session writes (`cat.jpg`, `out/`) stay out of the tree.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def bash_blocks(document: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (ROOT / document).read_text(), flags=re.S)


def scratch_checkout(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for entry in ROOT.iterdir():
        if entry.name not in (".git",):
            (path / entry.name).symlink_to(entry)
    return path


def json_documents(text: str) -> list[dict[str, object]]:
    decoder, found, index = json.JSONDecoder(), [], 0
    while (start := text.find("{", index)) != -1:
        document, index = decoder.raw_decode(text, start)
        found.append(document)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_readme_starts_with_exactly_two_set_up_commands() -> None:
    first = bash_blocks("README.md")[0].strip().splitlines()
    assert len(first) == 2
    install, tests = first
    assert install.startswith("python3 -m venv .venv && ") and install.endswith(".venv/bin/python -m app serve")
    assert "torch==" in install and "pip install -e ." in install
    assert tests == "./scripts/test.sh" and os.access(ROOT / "scripts/test.sh", os.X_OK)


def test_readme_cli_commands_run_as_written(tiny_settings: object, tmp_path: Path) -> None:
    (cli_block,) = [block for block in bash_blocks("README.md") if "-m app analyze photo.jpg" in block]
    work = scratch_checkout(tmp_path)
    Image.new("RGB", (96, 64), "red").save(work / "photo.jpg")
    env = {**os.environ, "MODEL_ID": tiny_settings.model_id, "NUM_BEAMS": "1", "MAX_NEW_TOKENS": "24"}  # type: ignore[attr-defined]
    for line in cli_block.strip().splitlines():
        command = line.replace(".venv/bin/python", sys.executable)
        result = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
    assert list((work / "out").iterdir())  # --annotate out/ wrote the drawing


def test_the_api_curl_session_runs_as_written(tmp_path: Path) -> None:
    (session,) = [block for block in bash_blocks("docs/API.md") if "tests/tiny_models.py" in block]
    work = scratch_checkout(tmp_path / "checkout")
    port = str(free_port())
    script = (
        session.replace(".venv/bin/python", sys.executable)
        .replace("/tmp/tiny-h4", str(tmp_path / "tiny"))
        .replace("8020", port)
    )
    # The session leaves the server running in the background; the test stops it.
    wrapped = f"trap 'kill $(jobs -p) 2>/dev/null' EXIT\n{script}\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "JWT_"))}
    result = subprocess.run(["bash", "-c", wrapped], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json_documents(result.stdout)  # curl prints each answer without a newline
    uploaded, caption, batch = answers[-3:]
    assert uploaded["results"][0]["name"] == "cat.jpg" and uploaded["results"][0]["image_wh"] == [451, 300]
    assert caption["results"][0]["task"] == "<CAPTION>"
    assert [r.get("name") for r in batch["results"]] == ["cat.jpg", "astronaut.png", "pyproject.toml"]
    assert "error" in batch["results"][2]
    with Image.open(work / "cat-od.png") as drawn:
        assert drawn.size == (451, 300)


@pytest.mark.parametrize("document", ["README.md", "docs/DEPLOY.md"])
def test_documented_files_and_settings_exist(document: str) -> None:
    text = (ROOT / document).read_text()
    for path in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", text):
        base = ROOT if document == "README.md" else ROOT / "docs"
        assert (base / path).is_file(), path
    settings_text = (ROOT / ".env.example").read_text()
    for name in re.findall(r"`([A-Z][A-Z0-9_]{3,})=", text):
        if name not in {"TORCH_VARIANT", "TORCH_CPU_INDEX", "HF_HUB_OFFLINE", "HF_HOME"}:  # not ours
            assert f"{name}=" in settings_text, name


def test_the_readme_first_api_call_runs_as_written(tiny_settings: object, tmp_path: Path) -> None:
    (block,) = [b for b in bash_blocks("README.md") if "JWT_SECRET=" in b and "api/v1/analyze" in b]
    set_secret, *calls = block.strip().splitlines()
    work = scratch_checkout(tmp_path)
    Image.new("RGB", (96, 64), "red").save(work / "photo.jpg")
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWT_")}
    env |= {"MODEL_ID": tiny_settings.model_id, "NUM_BEAMS": "1", "MAX_NEW_TOKENS": "24"}  # type: ignore[attr-defined]
    subprocess.run(set_secret.replace(".venv/bin/python", sys.executable), shell=True, cwd=work, check=True)
    # "the server from the first command, restarted": the same `serve`, reading the new .env.
    server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", port], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait = f"until curl -sf localhost:{port}/readyz >/dev/null; do sleep 0.5; done"
        script = "\n".join([wait, *calls]).replace(".venv/bin/python", sys.executable).replace("8010", port)
        result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert result.returncode == 0, result.stderr
    (answer,) = json_documents(result.stdout)
    assert answer["results"][0]["name"] == "photo.jpg" and answer["results"][0]["task"] == "<CAPTION>"  # type: ignore[index]
