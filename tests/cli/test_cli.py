"""`python -m app analyze`: results, written files, exit codes and the one-line error on stderr."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.cli.main import main
from app.core.config import get_settings
from app.core.images import ImageLimits, load_image_path
from app.core.results import AnyResult
from app.core.task_inputs import TaskInput, ZeroShotRequest
from app.core.tasks import all_tasks
from app.rendering.drawing import Annotator
from app.services.analysis import AnalysisService

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "florence-community/Florence-2-large"


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory: pytest.TempPathFactory, photo: Image.Image) -> Path:
    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    photo.save(path)
    return path


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main` configures the root logger; give the other tests theirs back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tiny_florence_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """Settings from the environment, as a user's shell gives them, pointing at the tiny checkpoint."""
    monkeypatch.chdir(tmp_path)  # no developer .env is read
    for name, value in {
        "MODEL_ID": str(tiny_florence_dir),
        "NUM_BEAMS": "1",
        "MAX_NEW_TOKENS": "24",
        "WARMUP": "false",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["analyze", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected_results(tiny_manager: object, paths: list[Path], task: str, **kw: object) -> list[AnyResult]:
    """What the model gives for these images through the service, without the CLI."""
    limits = ImageLimits(10**8, 10**8)
    outcomes = AnalysisService(tiny_manager).analyze([load_image_path(p, limits) for p in paths], task, **kw)  # type: ignore[arg-type]
    assert all(o.result is not None for o in outcomes)
    return [o.result for o in outcomes]  # type: ignore[misc]


def assert_one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def final_error_line(err: str) -> str:
    """After a model run stderr may hold log records first; the error is still one line, the last."""
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], err
    return lines[-1]


# -- results -------------------------------------------------------------------------------------------------
def test_json_to_stdout_is_clean_and_matches_the_model(
    cli_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path, tiny_manager: object
) -> None:
    code, out, err = run_cli(capsys, str(photo_png), "--task", "<OD>", "--json", "-")
    assert code == 0, err
    assert "error" not in err
    document = json.loads(out)  # stdout holds the JSON document and nothing else
    (expected,) = expected_results(tiny_manager, [photo_png], "OD")
    assert document == {"task": "<OD>", "results": [{"image": str(photo_png), **expected.to_dict()}]}


def test_region_task_writes_json_annotated_png_and_coco(
    cli_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path, tiny_manager: object
) -> None:
    out_dir, json_path = cli_env / "annotated", cli_env / "results.json"
    args = ["--task", "REGION_TO_SEGMENTATION", "--region", "100,50,300,250"]
    code, out, err = run_cli(capsys, str(photo_png), *args, "--json", str(json_path), "--annotate", str(out_dir))
    assert code == 0, err

    (expected,) = expected_results(tiny_manager, [photo_png], "REGION_TO_SEGMENTATION", region=(100, 50, 300, 250))
    assert expected.region == (100, 50, 300, 250)
    document = json.loads(json_path.read_text())
    assert document["results"] == [{"image": str(photo_png), **expected.to_dict()}]
    png = out_dir / "chelsea.region_to_segmentation.png"
    coco = out_dir / "chelsea.region_to_segmentation.coco.json"
    assert sorted(out_dir.iterdir()) == [coco, png]
    written = Image.open(png)
    photo = load_image_path(photo_png, ImageLimits(10**8, 10**8)).image
    assert written.tobytes() == Annotator(caption_strip=True).annotate(photo, expected).tobytes()
    assert json.loads(coco.read_text()) == expected.to_coco(file_name="chelsea.png")
    # The human summary on stdout: task, the image with its size and result, the files written.
    assert out.splitlines() == [
        "Region to segmentation (<REGION_TO_SEGMENTATION>) on 1 image(s)",
        f"{photo_png} 451x300: {expected.summary()}",
        f"  wrote {png}",
        f"  wrote {coco}",
        f"wrote {json_path}",
    ]


def test_one_unreadable_image_is_reported_in_place_and_the_rest_written(
    cli_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path, tiny_manager: object
) -> None:
    garbage = cli_env / "broken.png"
    garbage.write_bytes(b"GIF89a and then garbage")  # a GIF header, then nothing decodable
    out_dir = cli_env / "out"
    code, out, err = run_cli(
        capsys, str(garbage), str(photo_png), "--task", "caption", "--json", "-", "--annotate", str(out_dir)
    )
    assert code == 1
    assert final_error_line(err) == "error: 1 of 2 images failed; the others were analysed."
    document = json.loads(out)
    (expected,) = expected_results(tiny_manager, [photo_png], "CAPTION")
    assert document["task"] == "<CAPTION>"
    assert [r["image"] for r in document["results"]] == [str(garbage), str(photo_png)]
    error = document["results"][0]["error"]
    assert error["code"] == "corrupt_image"
    assert error["message"].startswith("broken.png: the image could not be decoded")
    assert document["results"][1] == {"image": str(photo_png), **expected.to_dict()}
    # Text results have no COCO file; the caption is drawn in a strip under the photo.
    assert [p.name for p in out_dir.iterdir()] == ["chelsea.caption.png"]
    assert Image.open(out_dir / "chelsea.caption.png").height > 300


def test_partial_failure_is_said_in_the_summary(
    cli_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path
) -> None:
    missing = cli_env / "missing.jpg"
    code, out, err = run_cli(capsys, str(photo_png), str(missing), "--task", "OCR")
    assert code == 1
    assert final_error_line(err) == "error: 1 of 2 images failed; the others were analysed."
    lines = out.splitlines()
    assert lines[0] == "OCR (<OCR>) on 2 image(s)"
    assert lines[1].startswith(f"{photo_png} 451x300: ")
    assert lines[2] == f"{missing}: FAILED: {missing}: cannot read the file (No such file or directory)."
    assert lines[-1] == "1 of 2 images failed."


# -- classification tasks: every registered task runs from the command line ---------------------------------
@pytest.fixture
def classify_env(cli_env: Path, monkeypatch: pytest.MonkeyPatch, tiny_resnet_dir: Path, tiny_clip_dir: Path) -> Path:
    monkeypatch.setenv("CLASSIFIER_MODEL_ID", str(tiny_resnet_dir))
    monkeypatch.setenv("ZERO_SHOT_MODEL_ID", str(tiny_clip_dir))
    get_settings.cache_clear()
    return cli_env


def service_results(paths: list[Path], task: str, options: TaskInput) -> list[Any]:
    """What the service gives for these images with the same settings, without the CLI."""
    service = AnalysisService.from_settings(get_settings())
    try:
        limits = ImageLimits(10**8, 10**8)
        spec, checked = service.check_input(task, options)
        outcomes = service.analyze([load_image_path(p, limits) for p in paths], spec, options=checked)
    finally:
        service.manager.shutdown()
    assert all(o.result is not None for o in outcomes)
    return [o.result for o in outcomes]


def without_timing(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "duration"}


def test_classify_from_the_cli_with_top_n_and_language(
    classify_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path
) -> None:
    code, out, err = run_cli(capsys, str(photo_png), "--task", "CLASSIFY", "--top-n", "2", "--language", "de",
                             "--json", "-")  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    (expected,) = service_results([photo_png], "CLASSIFY", TaskInput(top_n=2, language="de"))
    [entry] = document["results"]
    assert document["task"] == "<CLASSIFY>" and len(entry["predictions"]) == 2 and entry["language"] == "de"
    assert without_timing(entry) == without_timing({"image": str(photo_png), **expected.to_dict()})

    code, out, err = run_cli(capsys, str(photo_png), "--task", "classification", "--top-n", "2", "--language", "de")
    assert code == 0, err
    assert out.splitlines() == ["Classify (<CLASSIFY>) on 1 image(s)", f"{photo_png} 451x300: {expected.summary()}"]


def test_zero_shot_from_the_cli_with_labels(
    classify_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path
) -> None:
    code, out, err = run_cli(capsys, str(photo_png), "--task", "ZERO_SHOT", "--labels", "a cat, a dog,a car",
                             "--json", "-")  # fmt: skip
    assert code == 0, err
    [entry] = json.loads(out)["results"]
    request = ZeroShotRequest.create(["a cat", "a dog", "a car"])
    (expected,) = service_results([photo_png], "ZERO_SHOT", TaskInput(labels=request))
    assert list(entry["result"]) == ["a cat", "a dog", "a car"]
    assert without_timing(entry) == without_timing({"image": str(photo_png), **expected.to_dict()})
    code, out, _ = run_cli(capsys, str(photo_png), "--task", "zero-shot", "--labels", "a cat,a dog,a car")
    assert code == 0 and out.splitlines()[1] == f"{photo_png} 451x300: {expected.summary()}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "ZERO_SHOT"], "Zero-shot needs labels to score."),
        (["--task", "CLASSIFY", "--top-n", "0"], "The number of predictions must be 1 to 1000."),
        (["--task", "CLASSIFY", "--language", "xx"], "Unknown language"),
        (["--task", "OD", "--top-n", "3"], "Object detection takes no --top-n or --language."),
        (["--task", "CLASSIFY", "--labels", "a,b"], "Classify takes no labels."),
    ],
)
def test_classification_arguments_are_checked_before_any_image(
    classify_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, str(classify_env / "missing.png"), *argv)
    assert (code, out) == (2, "")
    assert assert_one_error_line(err).startswith(f"error: {message}")


def test_a_folder_of_images_is_classified_line_by_line(
    classify_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path
) -> None:
    folder = classify_env / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(photo_png.read_bytes())
    jsonl = classify_env / "out.jsonl"
    code, out, err = run_cli(capsys, str(folder), "--task", "CLASSIFY", "--top-n", "1", "--jsonl", str(jsonl))
    assert code == 0 and out.startswith("1 analysed, 0 failed"), err
    [line] = [json.loads(text) for text in jsonl.read_text().splitlines()]
    assert line["image"] == "cat.png" and line["kind"] == "classification" and len(line["predictions"]) == 1


# -- errors: exit code 2, nothing on stdout, exactly one line on stderr ---------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "FOO"], "Unknown task 'FOO'. Valid tasks: CAPTION, DETAILED_CAPTION,"),
        (["--task", "grounding"], "Phrase grounding needs text input"),
        (["--task", "OD", "--text", "cat"], "Object detection takes no text input."),
        (["--task", "REGION_TO_OCR"], "Region to OCR needs a region x1,y1,x2,y2 in pixels."),
        (["--task", "OD", "--region", "1,2,3,4"], "Object detection takes no region."),
        (["--task", "REGION_TO_OCR", "--region", "1,2,3"], "A region is four pixel numbers: x1,y1,x2,y2."),
        (
            ["--task", "REGION_TO_CATEGORY", "--region", "500,310,600,400"],
            "Region (500,310,600,400) does not overlap the 451x300 image by at least one pixel.",
        ),
    ],
)
def test_bad_arguments_fail_with_one_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path, argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, str(photo_png), *argv)
    assert (code, out) == (2, "")
    assert assert_one_error_line(err).startswith(f"error: {message}")


def test_unknown_task_lists_every_valid_task(
    cli_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path
) -> None:
    _, _, err = run_cli(capsys, str(photo_png), "--task", "<NOPE>")
    line = assert_one_error_line(err)
    assert all(spec.short_name in line for spec in all_tasks())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GIF89a garbage that is not really an image", "broken.png: the image could not be decoded"),
        # Not a supported image; the exact wording depends on which Pillow plugins are initialised.
        (b"plain text", "broken.png: "),
        (b"", "broken.png: the file is empty."),
    ],
)
def test_unreadable_image_fails_with_one_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    broken = cli_env / "broken.png"
    broken.write_bytes(content)
    code, out, err = run_cli(capsys, str(broken), "--task", "OD")
    assert (code, out) == (2, "")
    assert assert_one_error_line(err).startswith(f"error: {message}")


def test_no_readable_image_among_several(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(cli_env / "a.png"), str(cli_env / "b.png"), "--task", "OD")
    assert (code, out) == (2, "")
    assert assert_one_error_line(err).startswith("error: None of the 2 images could be analysed; first: ")


def test_unwritable_output_folder(cli_env: Path, capsys: pytest.CaptureFixture[str], photo_png: Path) -> None:
    blocker = cli_env / "file"
    blocker.write_text("")
    code, out, err = run_cli(capsys, str(photo_png), "--task", "OD", "--annotate", str(blocker / "sub"))
    assert (code, out) == (2, "")
    assert assert_one_error_line(err).startswith(f"error: Cannot create the folder {blocker / 'sub'}")


def test_invalid_settings_are_one_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, photo_png: Path
) -> None:
    monkeypatch.setenv("NUM_BEAMS", "lots")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    get_settings.cache_clear()
    code, out, err = run_cli(capsys, str(photo_png), "--task", "OD")
    assert (code, out) == (2, "")
    line = assert_one_error_line(err)
    assert line.startswith("error: invalid setting NUM_BEAMS: Input should be a valid integer")
    assert "LOG_LEVEL: " in line
    assert "lots" not in line  # values are not echoed (a setting may be a secret)


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "image.png"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert assert_one_error_line(captured.err).startswith("error: the following arguments are required: --task")


# -- real processes ------------------------------------------------------------------------------------------
def subprocess_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_ID", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(overrides)
    return env


def run_module(tmp_path: Path, env: dict[str, str], *argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    # cwd is an empty folder so a developer's .env cannot change the settings under test.
    proc = subprocess.run(
        [sys.executable, "-m", "app", "analyze", *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    return proc, time.perf_counter() - started


def test_subprocess_writes_json_and_annotated_png(tmp_path: Path, tiny_florence_dir: Path, photo_png: Path) -> None:
    env = subprocess_env(MODEL_ID=str(tiny_florence_dir), NUM_BEAMS="1", MAX_NEW_TOKENS="24", HF_HUB_OFFLINE="1")
    proc, _ = run_module(tmp_path, env, str(photo_png), "--task", "OD", "--json", "out.json", "--annotate", "annotated")
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["task"] == "<OD>"
    (result,) = document["results"]
    assert (result["image"], result["kind"], result["image_wh"]) == (str(photo_png), "detections", [451, 300])
    png = Image.open(tmp_path / "annotated" / "chelsea.od.png")
    assert (png.format, png.size) == ("PNG", (451, 300))
    coco = json.loads((tmp_path / "annotated" / "chelsea.od.coco.json").read_text())
    assert len(coco["annotations"]) == len(result["detections"])
    assert f"{photo_png} 451x300: " in proc.stdout


def test_default_model_offline_fails_fast_with_the_fix(tmp_path: Path, photo_png: Path) -> None:
    env = subprocess_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    proc, seconds = run_module(tmp_path, env, str(photo_png), "--task", "caption")
    assert (proc.returncode, proc.stdout) == (2, "")
    line = assert_one_error_line(proc.stderr)
    assert DEFAULT_MODEL in line and "MODEL_ID" in line and "HF_HUB_OFFLINE" in line
    assert seconds < 15


def test_default_model_without_network_fails_within_15_seconds(tmp_path: Path, photo_png: Path) -> None:
    # A local port nobody listens on stands in for "no network" (and can never start a real download).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = subprocess_env(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    proc, seconds = run_module(tmp_path, env, str(photo_png), "--task", "OD")
    assert (proc.returncode, proc.stdout) == (2, "")
    line = assert_one_error_line(proc.stderr)
    assert DEFAULT_MODEL in line and "cannot be reached" in line and "MODEL_ID" in line
    assert seconds < 15


def test_task_help_lists_the_tasks_registered_when_the_command_runs() -> None:
    from app.cli.main import build_parser
    from app.core.tasks import InputKind, OutputKind, TaskSpec, register_task, unregister_task

    def analyze_help() -> str:
        commands = next(a for a in build_parser()._actions if a.dest == "command")
        return " ".join(commands.choices["analyze"].format_help().split())

    assert all(spec.short_name in analyze_help() for spec in all_tasks())
    spec = TaskSpec("<HELP_FAKE>", "HELP_FAKE", "Fake", "Fake.", InputKind.NONE, OutputKind.TEXT, backend="fake")
    register_task(spec)
    try:
        assert "HELP_FAKE" in analyze_help()
    finally:
        unregister_task(spec.token)
    assert "HELP_FAKE" not in analyze_help()
