"""Drawing checked on pixels: where shapes land, translucency, colours, scaling, edge cases."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from app.core.results import DetectionResult, OCRResult, SegmentationResult, TextResult
from app.rendering import drawing
from app.rendering.drawing import (
    PALETTE,
    Annotator,
    class_colors,
    free_spot,
    label_color,
    label_text,
    load_font,
    to_png_bytes,
)

GREY = (120, 120, 120)
CAT = (191, 239, 69)  # PALETTE[8]: crc32("cat") % 16 == 8, fixed for every process and release
DOG = (0, 0, 117)  # PALETTE[13]
ROOT = Path(__file__).resolve().parents[2]


def grey(width: int = 200, height: int = 100, mode: str = "RGB") -> Image.Image:
    return Image.new("RGB", (width, height), GREY).convert(mode)


def px(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value[:3]


def mask(image: Image.Image, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.asarray(image.convert("RGB")) == np.array(color, dtype=np.uint8), axis=-1)


def bbox(selection: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(selection)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def detection(image_wh: tuple[int, int], boxes: list[list[float]], labels: list[str], **kw: object) -> DetectionResult:
    return DetectionResult.from_boxes("<OD>", image_wh, boxes, labels, **kw)  # type: ignore[arg-type]


def segmentation(image_wh: tuple[int, int], polygons: list[list[list[float]]], labels: list[str]) -> SegmentationResult:
    return SegmentationResult.from_polygons("<REFERRING_EXPRESSION_SEGMENTATION>", image_wh, polygons, labels)


def test_palette_colours_are_stable_literals() -> None:
    assert label_color("cat") == CAT == PALETTE[8]
    assert label_color("dog") == DOG
    assert label_color(" Cat ") == CAT  # case and spacing do not change a label's colour


def test_label_colour_is_the_same_in_another_process() -> None:
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    code = "from app.rendering.drawing import label_color; print(*label_color('cat'), *label_color('dog'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert tuple(int(v) for v in out.split()) == (*CAT, *DOG)


def test_box_outline_lands_exactly_on_the_box() -> None:
    image = grey(200, 100)
    annotator = Annotator()
    assert annotator.line_width(image.size) == 2
    out = annotator.annotate(image, detection(image.size, [[20, 40, 120, 90]], ["cat"]))
    # Left and right edges: the outline covers columns 20-21 and 118-119 (pixels [x1, x2) of the box).
    assert [px(out, x, 65) for x in (19, 20, 21, 22)] == [GREY, CAT, CAT, GREY]
    assert [px(out, x, 65) for x in (117, 118, 119, 120)] == [GREY, CAT, CAT, GREY]
    # Bottom edge rows 88-89; the box interior is untouched.
    assert [px(out, 100, y) for y in (87, 88, 89, 90)] == [GREY, CAT, CAT, GREY]
    assert px(out, 70, 65) == GREY


def test_label_tag_sits_above_the_box_with_readable_text() -> None:
    image = grey(200, 100)
    out = Annotator().annotate(image, detection(image.size, [[20, 40, 120, 90]], ["cat"]))
    tag = mask(out, CAT) & (np.arange(100)[:, None] < 40)
    x1, y1, x2, y2 = bbox(tag)
    assert (x1, y2) == (20, 39)  # starts at the box's left edge and ends on the row above it
    assert y2 - y1 + 1 >= 12  # at least the minimum font size tall
    region = np.asarray(out)[y1 : y2 + 1, x1 : x2 + 1]
    # Text on the light lime tag is black (white would be unreadable).
    assert (region < 80).all(axis=-1).sum() > 20


def test_scores_are_shown_in_the_tag() -> None:
    image = grey(200, 100)
    boxes, labels = [[20, 40, 120, 90]], ["cat"]
    plain = Annotator().annotate(image, detection(image.size, boxes, labels))
    scored = Annotator().annotate(image, detection(image.size, boxes, labels, scores=[0.87]))
    hidden = Annotator(show_scores=False).annotate(image, detection(image.size, boxes, labels, scores=[0.87]))
    width = [bbox(mask(im, CAT) & (np.arange(100)[:, None] < 40))[2] for im in (plain, scored, hidden)]
    assert width[1] > width[0] + 15
    assert width[2] == width[0]


def test_unlabelled_region_proposals_are_numbered_and_coloured_by_position() -> None:
    image = grey(200, 100)
    out = Annotator().annotate(image, detection(image.size, [[10, 30, 60, 90], [100, 30, 190, 90]], ["", ""]))
    assert px(out, 10, 60) == PALETTE[0]
    assert px(out, 100, 60) == PALETTE[1]
    # Each tag holds text (its number) in a contrasting colour.
    for color, left in ((PALETTE[0], 10), (PALETTE[1], 100)):
        tag = mask(out, color) & (np.arange(100)[:, None] < 30)
        assert bbox(tag)[0] == left
        x1, y1, x2, y2 = bbox(tag)
        assert not np.all(np.asarray(out)[y1 : y2 + 1, x1 : x2 + 1] == np.array(color), axis=-1).all()


def test_input_image_is_not_modified() -> None:
    image = grey(200, 100)
    before = image.tobytes()
    results = [
        detection(image.size, [[20, 40, 120, 90]], ["cat"]),
        segmentation(image.size, [[[10, 10, 90, 10, 50, 90]]], ["cat"]),
        OCRResult.from_quads("<OCR_WITH_REGION>", image.size, [[10, 10, 150, 10, 150, 40, 10, 40]], ["HELLO"]),
        TextResult("<REGION_TO_CATEGORY>", image.size, text="cat", region=(10, 10, 100, 90)),
    ]  # fmt: skip
    for result in results:
        out = Annotator(caption_strip=True).annotate(image, result)
        assert out is not image
        assert out.tobytes() != before
    assert image.tobytes() == before


@pytest.mark.parametrize(
    "result",
    [
        DetectionResult.from_boxes("<OD>", (200, 100), []),
        SegmentationResult.from_polygons("<REFERRING_EXPRESSION_SEGMENTATION>", (200, 100), []),
        OCRResult.from_quads("<OCR_WITH_REGION>", (200, 100), [], []),
        TextResult("<CAPTION>", (200, 100), text="a cat"),
    ],
    ids=["detections", "segmentation", "ocr", "text"],
)
def test_empty_results_return_an_identical_copy(result: object) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8))
    out = Annotator().annotate(image, result)  # type: ignore[arg-type]
    assert out is not image
    assert (out.mode, out.size) == (image.mode, image.size)
    assert out.tobytes() == image.tobytes()


def test_polygon_fill_is_translucent_with_an_opaque_outline() -> None:
    image = grey(200, 100)
    annotator = Annotator(fill_opacity=0.4)
    square = [[[20, 20, 180, 20, 180, 90, 20, 90]]]
    out = annotator.annotate(image, segmentation(image.size, square, ["dog"]))
    alpha = round(255 * 0.4) / 255
    expected = tuple(round(g * (1 - alpha) + c * alpha) for g, c in zip(GREY, DOG, strict=True))
    inside = px(out, 120, 60)
    assert all(abs(a - b) <= 1 for a, b in zip(inside, expected, strict=True)), (inside, expected)
    assert px(out, 120, 20) == DOG  # outline
    assert px(out, 120, 95) == GREY  # outside


def test_multi_part_instance_fills_every_part_in_one_colour() -> None:
    image = grey(200, 100)
    parts = [[[10, 30, 60, 30, 60, 80, 10, 80], [120, 30, 170, 30, 170, 80, 120, 80]]]
    out = Annotator().annotate(image, segmentation(image.size, parts, ["cat"]))
    assert px(out, 35, 60) == px(out, 145, 60) != GREY
    assert px(out, 90, 60) == GREY


def test_ocr_text_is_drawn_next_to_its_quad_not_over_the_text() -> None:
    image = grey(300, 100)
    quad = [20, 30, 280, 30, 280, 70, 20, 70]
    out = Annotator().annotate(image, OCRResult.from_quads("<OCR_WITH_REGION>", image.size, [quad], ["HELLO WORLD"]))
    interior = np.asarray(out)[33:68, 23:278]
    assert np.all(interior == np.array(GREY), axis=-1).all()  # the found text stays visible
    above = np.asarray(out)[:30]
    tag = np.all(above == np.array(PALETTE[0]), axis=-1)
    text = (above > 200).all(axis=-1)  # white text on the red tag
    assert tag.sum() > 300 and text.sum() > 50
    assert px(out, 150, 30) == PALETTE[0]  # quad outline
    assert px(out, 150, 80) == GREY


def test_ocr_tags_avoid_every_found_line_and_each_other() -> None:
    image = grey(300, 200)
    quads = [[20, 20 + 40 * i, 280, 20 + 40 * i, 280, 50 + 40 * i, 20, 50 + 40 * i] for i in range(4)]
    result = OCRResult.from_quads("<OCR_WITH_REGION>", image.size, quads, ["ONE", "TWO", "THREE", "FOUR"])
    out = np.asarray(Annotator().annotate(image, result))
    for i in range(4):  # the inside of each found line is untouched
        top = 20 + 40 * i
        assert np.all(out[top + 3 : top + 28, 23:278] == np.array(GREY), axis=-1).all()


def test_tags_of_overlapping_boxes_are_stacked_not_drawn_over_each_other() -> None:
    boxes = [(100, 150, 300, 280), (102, 152, 290, 270), (104, 154, 280, 260), (101, 151, 299, 279)] * 2
    placed: list[tuple[int, int, int, int]] = []
    moved = []
    for box in boxes:
        spot = free_spot(box, (80, 20), (400, 300), placed, inside=True, steps=6)
        assert spot is not None
        (x, y), away = spot
        placed.append((x, y, x + 79, y + 19))
        moved.append(away)
    for i, a in enumerate(placed):
        assert a[0] >= 0 and a[2] < 400 and a[1] >= 0 and a[3] < 300
        for b in placed[i + 1 :]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)
    assert moved[0] is False and any(moved)  # the first sits on its box; a later one moved off (leader line)
    # Nowhere free (blocked everywhere): None, and the caller decides.
    assert free_spot(boxes[0], (80, 20), (400, 300), [(0, 0, 399, 299)], inside=True, steps=6) is None


def test_two_classes_never_share_a_colour_and_tags_carry_numbers() -> None:
    labels = ["person", "helmet", "cat", "dog", "car", "bus", "tree", "sky"]
    colors = class_colors(labels)
    assert len(set(colors.values())) == len(labels)
    assert colors["cat"] == label_color("cat")  # the first class keeps its stable colour
    assert class_colors(["cat", "Cat ", "cat"]) == {"cat": label_color("cat")}
    assert label_text(2, "car") == "#2 car"
    assert label_text(2, "car", 0.912) == "#2 car 0.91"
    assert label_text(3, "") == "#3"


def test_region_is_drawn_as_a_black_and_white_dashed_frame() -> None:
    image = grey(200, 100)
    result = TextResult("<REGION_TO_DESCRIPTION>", image.size, text="", region=(20, 10, 180, 90))
    out = Annotator().annotate(image, result)
    # Width 2, dashes of 4 * width = 8 px alternating white and black, just inside the region's edges.
    for row in (10, 11, 88, 89):  # (the vertical sides own the corner pixels)
        assert [px(out, x, row) for x in range(22, 36)] == [(255, 255, 255)] * 6 + [(0, 0, 0)] * 8
    for column in (20, 21, 178, 179):
        assert [px(out, column, y) for y in range(10, 26)] == [(255, 255, 255)] * 8 + [(0, 0, 0)] * 8
    assert px(out, 100, 9) == px(out, 100, 12) == px(out, 19, 50) == px(out, 22, 50) == GREY


def test_region_task_answer_is_tagged_on_the_region_and_caption_strip_is_optional() -> None:
    image = grey(200, 100)
    result = TextResult("<REGION_TO_CATEGORY>", image.size, text="cat", region=(20, 40, 180, 90))
    out = Annotator().annotate(image, result)
    assert out.size == image.size
    assert bbox(mask(out, CAT))[:2] == (20, 40 - (bbox(mask(out, CAT))[3] - bbox(mask(out, CAT))[1] + 1))
    strip = Annotator(caption_strip=True).annotate(image, TextResult("<CAPTION>", image.size, text="a grey cat"))
    assert strip.width == 200 and strip.height > 100
    below = np.asarray(strip)[100:]
    assert (below < 100).all(axis=-1).sum() > 20  # dark caption text on white


def test_line_width_and_font_grow_with_the_image() -> None:
    annotator = Annotator()
    small, large = (64, 48), (8000, 1000)
    assert (annotator.line_width(small), annotator.font_size(small)) == (1, 12)
    assert (annotator.line_width(large), annotator.font_size(large)) == (21, 288)

    def measured(size: tuple[int, int], box: list[float]) -> tuple[int, int]:
        out = annotator.annotate(grey(*size), detection(size, [box], ["cat"]))
        hits = mask(out, CAT)
        x1 = int(box[0])
        row = (int(box[1]) + int(box[3])) // 2
        line = int(hits[row, x1:].argmin())  # outline columns until the first non-outline pixel
        tag_h = int(hits[: int(box[1]), x1 + line + 1].sum())
        return line, tag_h

    small_line, small_tag = measured(small, [10, 24, 60, 48])
    large_line, large_tag = measured(large, [2000, 490, 6000, 990])
    assert small_line == 1 and small_tag >= 12
    assert large_line == 21 and large_tag >= 10 * small_tag


def test_font_is_capped_on_a_flat_image() -> None:
    assert Annotator().font_size((8000, 60)) == 20


def test_labels_near_the_edges_stay_inside_the_image() -> None:
    image = grey(120, 60)
    # No room above: the tag goes inside the box, fully visible from row 0.
    top = Annotator().annotate(image, detection(image.size, [[0, 0, 80, 40]], ["cat"]))
    x1, y1, x2, y2 = bbox(mask(top, CAT) & (np.arange(120)[None, :] > 2))
    assert y1 == 0 and y2 - y1 + 1 >= 12
    # A box at the right edge: the tag shifts left so its end is the last column, not cut off.
    right = Annotator().annotate(image, detection(image.size, [[110, 30, 120, 60]], ["cat"]))
    x1, _, x2, _ = bbox(mask(right, CAT) & (np.arange(60)[:, None] < 30))
    assert x2 == 119 and x1 <= 100
    # A label longer than the image is shortened with an ellipsis to the image width.
    label = "cat " * 30
    long = Annotator().annotate(image, detection(image.size, [[10, 30, 50, 50]], [label]))
    x1, y1, x2, _ = bbox(mask(long, label_color(label)) & (np.arange(60)[:, None] < 30))
    assert x2 - x1 + 1 > 90 and y1 >= 0  # shortened to fit, not clipped by the image border


def test_boxes_beyond_the_image_and_degenerate_boxes_do_not_crash() -> None:
    image = grey(100, 50)
    out = Annotator().annotate(
        image,
        detection(image.size, [[-20, -20, 200, 200], [30, 30, 30, 30], [99.6, 49.6, 99.9, 49.9]], ["a", "b", "c"]),
    )
    assert out.size == (100, 50)
    assert px(out, 0, 25) == label_color("a")


def test_rgba_and_greyscale_inputs() -> None:
    rgba = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    out = Annotator().annotate(rgba, detection(rgba.size, [[20, 40, 120, 90]], ["cat"]))
    assert out.mode == "RGBA"
    assert out.getpixel((20, 65)) == (*CAT, 255)
    assert out.getpixel((70, 65)) == (0, 0, 0, 0)  # transparency kept where nothing is drawn
    seg = Annotator(fill_opacity=0.4).annotate(rgba, segmentation(rgba.size, [[[10, 10, 90, 10, 50, 90]]], ["cat"]))
    assert seg.mode == "RGBA"
    assert seg.getpixel((50, 40)) == (*CAT, 102)  # a translucent fill over transparency stays translucent

    grey_l = Image.new("L", (200, 100), 120)
    out_l = Annotator().annotate(grey_l, detection(grey_l.size, [[20, 40, 120, 90]], ["cat"]))
    assert out_l.mode == "RGB"
    assert px(out_l, 20, 65) == CAT and px(out_l, 70, 65) == GREY
    palette = grey_l.convert("P")
    assert Annotator().annotate(palette, detection(palette.size, [[20, 40, 120, 90]], ["cat"])).mode == "RGB"


def test_builtin_font_is_used_without_dejavu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drawing, "DEJAVU_SANS", Path("/nonexistent/DejaVuSans.ttf"))
    load_font.cache_clear()
    try:
        font = load_font(30)
        assert isinstance(font, ImageFont.FreeTypeFont) and font.size == 30
        assert "DejaVu" not in (font.getname()[0] or "")
        out = Annotator().annotate(grey(200, 100), detection((200, 100), [[20, 40, 120, 90]], ["cat"]))
        tag = mask(out, CAT) & (np.arange(100)[:, None] < 40)
        x1, y1, x2, y2 = bbox(tag)
        assert (np.asarray(out)[y1 : y2 + 1, x1 : x2 + 1] < 80).all(axis=-1).sum() > 20
    finally:
        load_font.cache_clear()


def test_dejavu_is_used_when_installed() -> None:
    if not drawing.DEJAVU_SANS.is_file():
        pytest.skip("fonts-dejavu-core not installed")
    assert load_font(20).getname()[0] == "DejaVu Sans"


def test_png_bytes_round_trip() -> None:
    image = grey(30, 20)
    data = to_png_bytes(image)
    assert data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(data)).tobytes() == image.tobytes()


def test_realistic_results_on_a_photo(photo: Image.Image) -> None:
    """The hand-made results the README screenshots use; written for a human look in test-artifacts/."""
    annotator = Annotator()
    det = detection(photo.size, [[140, 40, 380, 300], [250, 60, 330, 130]], ["cat", "eye"], scores=[0.93, 0.71])
    seg = SegmentationResult.from_polygons(
        "<REFERRING_EXPRESSION_SEGMENTATION>", photo.size,
        [[[150, 60, 250, 40, 360, 80, 380, 300, 140, 300, 130, 150]]], ["cat"], region=(120, 30, 400, 299),
    )  # fmt: skip
    outputs = {"detections": annotator.annotate(photo, det), "segmentation": annotator.annotate(photo, seg)}
    target = ROOT / "test-artifacts" / "drawing"
    target.mkdir(parents=True, exist_ok=True)
    for name, image in outputs.items():
        assert image.size == photo.size
        image.save(target / f"chelsea.{name}.png")
    assert px(outputs["detections"], 140, 150) == CAT
    assert px(outputs["segmentation"], 370, 290) != px(photo, 370, 290)
