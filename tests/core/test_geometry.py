"""Regions: pixel boxes ↔ `<loc_N>` tokens, checked against the processor's own (de)quantisation."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from app.core.errors import InvalidInput
from app.core.geometry import (
    box_to_loc_bins,
    box_to_loc_tokens,
    clip_box,
    dequantize,
    normalize_xyxy,
    parse_region,
    polygon_area,
    polygon_bbox,
    quantize,
)
from app.models.manager import ModelManager

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LOC_TOKENS = re.compile(r"^<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>$")
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def post_processor(tiny_manager: ModelManager) -> Any:
    """The checkpoint's own `Florence2PostProcessor` (what parses every real answer)."""
    return tiny_manager.get("florence2")._processor.post_processor


@st.composite
def image_and_box(draw: st.DrawFn) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """An image size and a box of at least one pixel inside it, corners in any order."""
    width = draw(st.integers(1, 12_000))
    height = draw(st.integers(1, 12_000))
    x1 = draw(st.floats(0, width - 1, allow_nan=False))
    y1 = draw(st.floats(0, height - 1, allow_nan=False))
    x2 = draw(st.floats(x1 + 1, width, allow_nan=False))
    y2 = draw(st.floats(y1 + 1, height, allow_nan=False))
    assume(x2 - x1 >= 1 and y2 - y1 >= 1)  # float rounding can make `x1 + 1 - x1` fall short of 1
    if draw(st.booleans()):
        x1, x2 = x2, x1
    if draw(st.booleans()):
        y1, y2 = y2, y1
    return (width, height), (x1, y1, x2, y2)


def token_bins(tokens: str) -> list[int]:
    match = LOC_TOKENS.match(tokens)
    assert match, tokens
    return [int(v) for v in match.groups()]


@PROPERTY_SETTINGS
@given(image_and_box())
@example(((333, 517), (0.0, 0.0, 333.0, 517.0)))
@example(((1, 1), (0.0, 0.0, 1.0, 1.0)))
@example(((1, 1000), (0.0, 999.0, 1.0, 1000.0)))
@example(((12_000, 7), (11_999.0, 0.0, 12_000.0, 7.0)))
def test_box_to_tokens_round_trips_through_the_processor_within_one_bin(
    post_processor: Any, case: tuple[tuple[int, int], tuple[float, float, float, float]]
) -> None:
    image_wh, box = case
    width, height = image_wh
    bins = token_bins(box_to_loc_tokens(box, image_wh))
    assert all(0 <= b <= 999 for b in bins)
    assert bins[0] <= bins[2] and bins[1] <= bins[3]

    clipped = clip_box(box, image_wh)
    # The processor's own quantiser (in float64 so float32 rounding cannot move a bin edge) agrees exactly.
    theirs = post_processor.quantize(torch.tensor([clipped], dtype=torch.float64), size=image_wh)
    assert theirs[0].tolist() == bins

    parsed = post_processor.dequantize(torch.tensor([bins]), size=image_wh)[0].tolist()
    # Half a bin from the bin centre, plus under one pixel from the processor's int() truncation
    # (and a hair for its float32 arithmetic).
    for value, original, size in zip(parsed, clipped, (width, height, width, height), strict=True):
        assert abs(value - original) <= size / 1000 / 2 + 1.01


@PROPERTY_SETTINGS
@given(st.integers(1, 20_000), st.integers(0, 999))
@example(144, 187)  # centre exactly 27.0: float32 gives 26.99999, truncated to 26
@example(8001, 999)  # centre 7996.9995: float32 rounds it to 7997.0
def test_our_dequantize_is_the_processors_bin_centre(post_processor: Any, size: int, bin_index: int) -> None:
    theirs_x, theirs_y = post_processor.dequantize(torch.tensor([[bin_index, bin_index]]), size=(size, size))[0]
    ours = dequantize(bin_index, size)
    assert ours == (bin_index + 0.5) * size / 1000
    # The processor truncates a float32 product, which can land one pixel either side of int(ours).
    assert theirs_x == theirs_y
    assert abs(int(theirs_x) - ours) < 1.01
    assert quantize(ours, size) == bin_index  # a bin centre falls in its own bin


def test_known_boxes_give_known_tokens() -> None:
    assert box_to_loc_tokens((0, 0, 333, 517), (333, 517)) == "<loc_0><loc_0><loc_999><loc_999>"
    # 17.8 / 0.333 = 53.45, 172.9 / 0.517 = 334.4, 310.9 / 0.333 = 933.6, 400.9 / 0.517 = 775.4
    assert box_to_loc_tokens((17.8, 172.9, 310.9, 400.9), (333, 517)) == "<loc_53><loc_334><loc_933><loc_775>"
    # corners given in any order; the far edge (x = width) is clamped into the last bin
    assert box_to_loc_bins((640, 480, 320, 240), (640, 480)) == (500, 500, 999, 999)
    assert quantize(-5, 100) == 0 and quantize(1e9, 100) == 999
    assert dequantize(0, 1000) == 0.5 and dequantize(999, 333) == pytest.approx(332.8335)


# -- clipping, ordering, rejection -----------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=4, max_size=4),
)
def test_clip_box_is_inside_ordered_and_idempotent_or_rejects(width: int, height: int, box: list[float]) -> None:
    try:
        x1, y1, x2, y2 = clip_box(box, (width, height))
    except InvalidInput as exc:
        assert exc.code == "region_outside_image"
        lo_x, hi_x = sorted((box[0], box[2]))
        lo_y, hi_y = sorted((box[1], box[3]))
        assert min(hi_x, width) - max(lo_x, 0) < 1 or min(hi_y, height) - max(lo_y, 0) < 1
        return
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert x2 - x1 >= 1 and y2 - y1 >= 1
    assert clip_box((x1, y1, x2, y2), (width, height)) == (x1, y1, x2, y2)
    assert clip_box((box[2], box[3], box[0], box[1]), (width, height)) == (x1, y1, x2, y2)


def test_clip_box_clips_and_orders() -> None:
    assert clip_box((-10, -5, 50.5, 40), (40, 30)) == (0.0, 0.0, 40.0, 30.0)
    assert clip_box((30, 20, 10, 5), (40, 30)) == (10.0, 5.0, 30.0, 20.0)
    assert clip_box((39, 29, 100, 100), (40, 30)) == (39.0, 29.0, 40.0, 30.0)


@pytest.mark.parametrize(
    ("box", "code"),
    [
        ((50, 50, 60, 60), "region_outside_image"),  # entirely right of / below a 40x30 image
        ((-20, -20, -1, -1), "region_outside_image"),
        ((10, 10, 10.5, 20), "region_outside_image"),  # under one pixel wide
        ((39.5, 0, 45, 30), "region_outside_image"),  # half a pixel overlaps
        ((float("nan"), 0, 10, 10), "invalid_region"),
        ((0, 0, float("inf"), 10), "invalid_region"),
        ((0, float("-inf"), 10, 10), "invalid_region"),
        ((0, 0, 10), "invalid_region"),
        ((0, 0, 10, 10, 10), "invalid_region"),
        (("0", 0, 10, 10), "invalid_region"),
    ],
)
def test_clip_box_rejects(box: Any, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        clip_box(box, (40, 30))
    assert caught.value.code == code
    assert caught.value.http_status == 400


# -- parse_region --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10,20,30,40", (10.0, 20.0, 30.0, 40.0)),
        ("10 20 30 40", (10.0, 20.0, 30.0, 40.0)),
        ("[10, 20, 30, 40]", (10.0, 20.0, 30.0, 40.0)),
        ("  10 ,20\t30\n40 ", (10.0, 20.0, 30.0, 40.0)),
        ("[1.5,.5,30.,-4]", (1.5, 0.5, 30.0, -4.0)),
        ("0,0,0,0", (0.0, 0.0, 0.0, 0.0)),
    ],
)
def test_parse_region_formats(text: str, expected: tuple[float, ...]) -> None:
    assert parse_region(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "1..2,3,4,5", ".,1,2,3", "1,,2,3,4", "1e3,2,3,4", "nan,1,2,3",
     "inf,1,2,3", "1;2;3;4", "(1,2,3,4)", "1 2 3 4x", "--1,2,3,4", "1" * 250 + ",2,3,4"],
)  # fmt: skip
def test_parse_region_rejects(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_region(text)
    assert caught.value.code == "invalid_region"


@PROPERTY_SETTINGS
@given(st.text(max_size=300))
@example("1" + " " * 5000 + "2" + " " * 5000 + "3" + " " * 5000 + "4x")  # was catastrophic regex backtracking
def test_parse_region_never_raises_anything_but_invalid_input(text: str) -> None:
    try:
        box = parse_region(text)
    except InvalidInput as exc:
        assert exc.code == "invalid_region"
        return
    assert len(box) == 4 and all(math.isfinite(v) for v in box)


@PROPERTY_SETTINGS
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3)), min_size=4, max_size=4))
def test_parse_region_reads_what_we_print(values: list[float]) -> None:
    assert parse_region(",".join(f"{v:.3f}" for v in values)) == tuple(values)
    assert parse_region("[" + " ".join(f"{v:.3f}" for v in values) + "]") == tuple(values)


# -- polygons -----------------------------------------------------------------------------------------------


def test_polygon_helpers() -> None:
    square = [10, 10, 30, 10, 30, 40, 10, 40]
    assert polygon_bbox(square) == (10.0, 10.0, 30.0, 40.0)
    assert polygon_area(square) == 600.0
    assert polygon_area([10, 40, 30, 40, 30, 10, 10, 10]) == 600.0  # clockwise or not
    assert polygon_area([0, 0, 4, 0, 0, 3]) == 6.0
    assert normalize_xyxy((30, 40, 10, 10)) == (10.0, 10.0, 30.0, 40.0)
