"""`python -m app analyze DIR --task OD --jsonl out.jsonl --annotate out/` on a folder with a broken file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from app.cli.folder import merge_coco, read_done
from app.core.config import Settings, get_settings
from app.core.images import ImageLimits, load_image_path
from app.services.analysis import AnalysisService


def run_cli(argv: list[str], settings: Settings, monkeypatch: pytest.MonkeyPatch) -> int:
    from app.cli.main import main

    for name in ("model_id", "num_beams", "max_new_tokens", "warmup"):
        monkeypatch.setenv(name.upper(), str(getattr(settings, name)))
    get_settings.cache_clear()
    try:
        return main(argv)
    finally:
        get_settings.cache_clear()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_batch_with_a_broken_file_then_resume(
    tiny_settings: Settings, tiny_manager: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / ".cache").mkdir()
    Image.new("RGB", (64, 48), "red").save(folder / "a.png")
    Image.new("RGB", (40, 60), "blue").save(folder / "sub" / "b.JPG", format="JPEG")
    whole = (folder / "a.png").read_bytes()
    (folder / "broken.png").write_bytes(whole[: len(whole) // 2])  # a truncated download
    (folder / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(folder / ".cache" / "thumb.png")  # hidden folders are skipped
    out, annotated = tmp_path / "out.jsonl", tmp_path / "annotated"

    argv = ["analyze", str(folder), "--task", "OD", "--jsonl", str(out), "--annotate", str(annotated)]
    assert run_cli(argv, tiny_settings, monkeypatch) == 1  # some images failed, the others are written
    captured = capsys.readouterr()
    assert "3/3" in captured.err  # the progress bar
    assert "skipped broken.png" in captured.err  # the logged reason
    assert captured.out.startswith("2 analysed, 1 failed, 0 already in")

    entries = lines(out)
    assert [e["image"] for e in entries] == ["a.png", "broken.png", "sub/b.JPG"]
    assert entries[1]["error"]["code"] == "corrupt_image"
    limits = ImageLimits(10**8, 10**8)
    expected = AnalysisService(tiny_manager).analyze([load_image_path(folder / "a.png", limits)], "OD")  # type: ignore[arg-type]
    assert expected[0].result is not None
    assert {k: v for k, v in entries[0].items() if k not in ("image", "coco")} == expected[0].result.to_dict()
    assert entries[2]["image_wh"] == [40, 60]
    assert (annotated / "a.od.png").is_file() and (annotated / "sub" / "b.od.png").is_file()

    coco = json.loads((tmp_path / "out.coco.json").read_text())
    assert [(i["id"], i["file_name"], i["width"]) for i in coco["images"]] == [(1, "a.png", 64), (2, "sub/b.JPG", 40)]
    assert len(coco["annotations"]) == len(entries[0]["detections"]) + len(entries[2]["detections"])
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))

    # Resume: a new image is analysed, the others are skipped; a torn last line is cut off first.
    Image.new("RGB", (30, 30), "green").save(folder / "c.png")
    with out.open("a") as handle:
        handle.write('{"image": "zz')
    assert run_cli(argv, tiny_settings, monkeypatch) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("1 analysed, 0 failed, 3 already in")
    assert "incomplete last line" in captured.err
    assert [e["image"] for e in lines(out)] == ["a.png", "broken.png", "sub/b.JPG", "c.png"]
    assert len(json.loads((tmp_path / "out.coco.json").read_text())["images"]) == 3


def test_folder_arguments_are_checked(
    tiny_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["analyze", str(tmp_path), "--task", "OD"], tiny_settings, monkeypatch) == 2
    assert "--jsonl" in capsys.readouterr().err
    out = str(tmp_path / "o.jsonl")
    assert run_cli(["analyze", str(tmp_path), "--task", "NOPE", "--jsonl", out], tiny_settings, monkeypatch) == 2
    assert "error:" in capsys.readouterr().err


def test_read_done_and_merge_coco(tmp_path: Path) -> None:
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"image": "a.png"}\nnot json\n{"image": "b.png", "error": {}}\n')
    assert read_done(jsonl) == {"a.png", "b.png"}
    fragment = {
        "images": [{"id": 1, "file_name": "f", "width": 2, "height": 2}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2}, {"id": 2, "image_id": 1, "category_id": 1}],
    }
    merged = merge_coco([fragment, fragment])
    assert merged["categories"] == [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in merged["annotations"]] == [
        (1, 1, 1), (2, 1, 2), (3, 2, 1), (4, 2, 2),
    ]  # fmt: skip
