"""Exact parsing checks through the real `generate` → decode → post-process path.

A logits processor forces a scripted answer, token by token, out of the tiny random checkpoint, so
everything after the network's scores is real: generation (forced BOS/EOS, padding of finished rows,
beam search), `batch_decode(skip_special_tokens=False)`, the processor's own parsers and our result
types. Expected pixels are literals worked out by hand with the processor's formula: bin `b` on an
axis of `size` pixels becomes `int((b + 0.5) * size / 1000)` (the bin centre, truncated). Odd image
sizes make every expected value differ from the bin number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image
from transformers import LogitsProcessorList

from app.core.results import AnyResult, DetectionResult, OCRResult, SegmentationResult, TextResult
from app.core.tasks import get_task
from app.models.florence import FlorenceBackend, GenerationOptions, TaskRequest
from app.models.manager import ModelManager
from tests.scripted_support import Scripted

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backend(tiny_manager: ModelManager) -> FlorenceBackend:
    loaded: FlorenceBackend = tiny_manager.get("florence2")
    return loaded


def script_ids(backend: FlorenceBackend, answer: str) -> list[int]:
    """`<s> answer </s>`, the shape of a real Florence-2 answer, as tokenizer ids."""
    tokenizer = backend._processor.tokenizer
    ids = tokenizer.encode(answer, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids, f"the tiny tokenizer cannot spell {answer!r}"
    return [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]


def run_scripted(
    backend: FlorenceBackend, requests: Sequence[TaskRequest], answers: Sequence[str], num_beams: int = 1
) -> list[AnyResult]:
    scripts = [script_ids(backend, answer) for answer in answers]
    # Only the next scripted id gets a finite score (after generate's own forced BOS/EOS processors);
    # repeated trigrams, which polygons often have, need no help: the engine pins no_repeat_ngram_size=0.
    no_unsure_steps: list[set[int]] = [set() for _ in scripts]
    processor = Scripted(scripts, no_unsure_steps, num_beams, backend._processor.tokenizer.pad_token_id)
    options = GenerationOptions(num_beams=num_beams, max_new_tokens=max(len(s) for s in scripts) + 2)
    return backend.run(requests, generation=options, logits_processor=LogitsProcessorList([processor]))


def request(size: tuple[int, int], task: str, text: str | None = None, region: Any = None) -> TaskRequest:
    image = Image.new("RGB", size, (90, 120, 150))
    return TaskRequest.create(image, get_task(task), text=text, region=region)


OD_ANSWER = "car<loc_53><loc_334><loc_933><loc_775>door handle<loc_425><loc_504><loc_474><loc_536>"
# On 333x517: car x1 = int(53.5*0.333) = 17, y1 = int(334.5*0.517) = 172, x2 = int(933.5*0.333) = 310,
# y2 = int(775.5*0.517) = 400; door handle: 141, 260, 158, 277.
OD_XYXY = ((17.0, 172.0, 310.0, 400.0), (141.0, 260.0, 158.0, 277.0))


def test_object_detection_exact_boxes_labels_and_coco(backend: FlorenceBackend) -> None:
    (result,) = run_scripted(backend, [request((333, 517), "OD")], [OD_ANSWER])
    assert isinstance(result, DetectionResult)
    assert result.image_wh == (333, 517)
    assert result.xyxy == OD_XYXY
    assert result.labels == ("car", "door handle")
    assert result.scores == (1.0, 1.0)  # every token forced: the model had no other choice
    body = json.loads(json.dumps(result.to_dict()))
    assert body["detections"] == [
        {"id": 1, "label": "car", "xyxy": [17, 172, 310, 400], "score": 1.0},
        {"id": 2, "label": "door handle", "xyxy": [141, 260, 158, 277], "score": 1.0},
    ]
    coco = result.to_coco(image_id=7, file_name="car.png")
    assert coco["images"] == [{"id": 7, "file_name": "car.png", "width": 333, "height": 517}]
    assert coco["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "door handle"}]
    assert [a["bbox"] for a in coco["annotations"]] == [[17, 172, 293, 228], [141, 260, 17, 17]]
    assert [a["area"] for a in coco["annotations"]] == [293 * 228, 17 * 17]


def test_beam_search_parses_the_same_answer(backend: FlorenceBackend) -> None:
    """The default NUM_BEAMS=3 path: beams reorder rows, the parsed answer must not change."""
    (result,) = run_scripted(backend, [request((333, 517), "OD")], [OD_ANSWER], num_beams=3)
    assert isinstance(result, DetectionResult)
    assert result.xyxy == OD_XYXY
    assert result.labels == ("car", "door handle")


def test_dense_region_caption_full_image_box_and_multiword_labels(backend: FlorenceBackend) -> None:
    answer = "a red car<loc_0><loc_0><loc_999><loc_999>the sky<loc_250><loc_100><loc_260><loc_120>"
    (result,) = run_scripted(backend, [request((333, 517), "DENSE_REGION_CAPTION")], [answer])
    assert isinstance(result, DetectionResult)
    # bin 0 → int(0.5*0.333) = 0; bin 999 → int(999.5*0.333) = 332 and int(999.5*0.517) = 516
    assert result.xyxy == ((0.0, 0.0, 332.0, 516.0), (83.0, 51.0, 86.0, 62.0))
    assert result.labels == ("a red car", "the sky")


def test_region_proposal_boxes_have_empty_labels_on_a_one_pixel_wide_image(backend: FlorenceBackend) -> None:
    answer = "<loc_0><loc_0><loc_999><loc_999><loc_100><loc_200><loc_300><loc_400>"
    (result,) = run_scripted(backend, [request((1, 1000), "REGION_PROPOSAL")], [answer])
    assert isinstance(result, DetectionResult)
    # x: int((b+0.5)*1/1000) = 0 for every bin; y: int((b+0.5)*1000/1000) = b
    assert result.xyxy == ((0.0, 0.0, 0.0, 999.0), (0.0, 200.0, 0.0, 400.0))
    assert result.labels == ("", "")
    assert result.summary() == "2 found: region ×2"


def test_phrase_grounding_several_boxes_per_phrase(backend: FlorenceBackend) -> None:
    answer = (
        "a cat<loc_10><loc_20><loc_30><loc_40><loc_50><loc_60><loc_70><loc_80>"
        "the image<loc_0><loc_0><loc_999><loc_999>"  # banned by the checkpoint's post-processor config
        "a red car<loc_100><loc_110><loc_900><loc_950>"
    )
    grounding = request((517, 333), "CAPTION_TO_PHRASE_GROUNDING", text="a cat sitting on a red car")
    (result,) = run_scripted(backend, [grounding], [answer])
    assert isinstance(result, DetectionResult)
    # On 517x333: int(10.5*0.517) = 5, int(20.5*0.333) = 6, ... int(900.5*0.517) = 465, int(950.5*0.333) = 316
    assert result.xyxy == (
        (5.0, 6.0, 15.0, 13.0),
        (26.0, 20.0, 36.0, 26.0),
        (51.0, 36.0, 465.0, 316.0),
    )
    assert result.labels == ("a cat", "a cat", "a red car")
    assert result.label_counts() == {"a cat": 2, "a red car": 1}


POLYGON_ANSWER = (
    "<loc_100><loc_100><loc_200><loc_100><loc_200><loc_200><loc_100><loc_200>"
    "<sep><loc_500><loc_500><loc_600><loc_550><loc_550><loc_650><loc_7>"  # odd count: the last bin is dropped
)
# On 333x517: x = int((b+0.5)*0.333), y = int((b+0.5)*0.517)
POLYGONS = (
    (33.0, 51.0, 66.0, 51.0, 66.0, 103.0, 33.0, 103.0),
    (166.0, 258.0, 199.0, 284.0, 183.0, 336.0),
)


def test_referring_segmentation_polygons_with_parts(backend: FlorenceBackend) -> None:
    segment = request((333, 517), "REFERRING_EXPRESSION_SEGMENTATION", text="a cat")
    (result,) = run_scripted(backend, [segment], [POLYGON_ANSWER])
    assert isinstance(result, SegmentationResult)
    assert result.polygons == (POLYGONS,)
    assert result.labels == ("",)
    assert result.instance_xyxy(0) == (33.0, 51.0, 199.0, 336.0)
    coco = result.to_coco()
    # shoelace: the square is 33x52 = 1716; the triangle |166*(284-336) + 199*(336-258) + 183*(258-284)| / 2
    # = |-8632 + 15522 - 4758| / 2 = 1066
    assert coco["annotations"][0]["area"] == 1716 + 1066
    assert coco["annotations"][0]["segmentation"] == [list(POLYGONS[0]), list(POLYGONS[1])]


def test_region_to_segmentation_keeps_the_clipped_region(backend: FlorenceBackend) -> None:
    segment = request((333, 517), "REGION_TO_SEGMENTATION", region=(-20, 30, 400, 60.5))
    assert segment.region == (0.0, 30.0, 333.0, 60.5)
    # quantised like the processor: floor(x / (size/1000)), clamped to 999
    assert segment.prompt() == "<REGION_TO_SEGMENTATION><loc_0><loc_58><loc_999><loc_117>"
    (result,) = run_scripted(backend, [segment], [POLYGON_ANSWER])
    assert isinstance(result, SegmentationResult)
    assert result.polygons == (POLYGONS,)
    assert result.region == (0.0, 30.0, 333.0, 60.5)
    assert json.loads(json.dumps(result.to_dict()))["region"] == [0, 30, 333, 60.5]


def test_open_vocabulary_detection_boxes_are_normalised(backend: FlorenceBackend) -> None:
    answer = "a red car<loc_53><loc_334><loc_933><loc_775>a red car<loc_425><loc_504><loc_474><loc_536>"
    (result,) = run_scripted(backend, [request((333, 517), "OVD", text="a red car")], [answer])
    assert isinstance(result, DetectionResult)
    assert result.xyxy == OD_XYXY
    assert result.labels == ("a red car", "a red car")


def test_open_vocabulary_detection_polygons_are_normalised(backend: FlorenceBackend) -> None:
    answer = "a cat<poly><loc_100><loc_100><loc_200><loc_100><loc_200><loc_200><loc_100><loc_200></poly>"
    (result,) = run_scripted(backend, [request((333, 517), "OVD", text="a cat")], [answer])
    assert isinstance(result, SegmentationResult)
    assert result.polygons == ((POLYGONS[0],),)
    assert result.labels == ("a cat",)


def test_ocr_with_region_quads_and_texts(backend: FlorenceBackend) -> None:
    answer = (
        "HELLO<loc_100><loc_200><loc_400><loc_200><loc_400><loc_260><loc_100><loc_260>"
        "stop sign 2024<loc_120><loc_700><loc_880><loc_690><loc_885><loc_780><loc_118><loc_790>"
    )
    (result,) = run_scripted(backend, [request((517, 333), "OCR_WITH_REGION")], [answer])
    assert isinstance(result, OCRResult)
    # On 517x333: x = int((b+0.5)*0.517), y = int((b+0.5)*0.333)
    assert result.quads == (
        (51.0, 66.0, 207.0, 66.0, 207.0, 86.0, 51.0, 86.0),
        (62.0, 233.0, 455.0, 229.0, 457.0, 259.0, 61.0, 263.0),
    )
    assert result.texts == ("HELLO", "stop sign 2024")
    assert result.full_text == "HELLO\nstop sign 2024"
    assert json.loads(json.dumps(result.to_dict()))["regions"][1] == {
        "id": 2,
        "text": "stop sign 2024",
        "quad": [62, 233, 455, 229, 457, 259, 61, 263],
        "score": 1.0,
    }


def test_mixed_text_tasks_in_one_batch_strip_padding_and_echoed_regions(backend: FlorenceBackend) -> None:
    """Different lengths in one batch: the shorter rows come back right-padded with `<pad>`."""
    requests = [
        request((333, 517), "CAPTION"),
        request((451, 300), "OCR"),
        request((1000, 1), "REGION_TO_CATEGORY", region=(100, 0, 300, 1)),
    ]
    answers = [
        "a cat sitting on a red car in the street",
        "HELLO WORLD",
        "car<loc_100><loc_0><loc_300><loc_999>",  # region tasks echo the region back
    ]
    results = run_scripted(backend, requests, answers)
    assert [type(r) for r in results] == [TextResult, TextResult, TextResult]
    assert [r.text for r in results] == ["a cat sitting on a red car in the street", "HELLO WORLD", "car"]  # type: ignore[union-attr]
    assert [r.task for r in results] == ["<CAPTION>", "<OCR>", "<REGION_TO_CATEGORY>"]
    assert [r.image_wh for r in results] == [(333, 517), (451, 300), (1000, 1)]
    assert results[2].region == (100.0, 0.0, 300.0, 1.0)


def test_mixed_output_kinds_in_one_batch_keep_their_order(backend: FlorenceBackend) -> None:
    requests = [
        request((333, 517), "OD"),
        request((517, 333), "OCR_WITH_REGION"),
        request((333, 517), "REFERRING_EXPRESSION_SEGMENTATION", text="a cat"),
        request((333, 517), "DETAILED_CAPTION"),
    ]
    answers = [
        OD_ANSWER,
        "HELLO<loc_100><loc_200><loc_400><loc_200><loc_400><loc_260><loc_100><loc_260>",
        POLYGON_ANSWER,
        "a cat",
    ]
    od, ocr, seg, caption = run_scripted(backend, requests, answers)
    assert isinstance(od, DetectionResult) and od.xyxy == OD_XYXY
    assert isinstance(ocr, OCRResult) and ocr.texts == ("HELLO",)
    assert isinstance(seg, SegmentationResult) and seg.polygons == (POLYGONS,)
    assert isinstance(caption, TextResult) and caption.text == "a cat"


def test_truncated_answer_keeps_only_complete_instances(backend: FlorenceBackend) -> None:
    """MAX_NEW_TOKENS cut an answer mid-box: complete boxes survive, the fragment is dropped."""
    answer = "car<loc_53><loc_334><loc_933><loc_775>door handle<loc_425><loc_504>"
    (result,) = run_scripted(backend, [request((333, 517), "OD")], [answer])
    assert isinstance(result, DetectionResult)
    assert result.xyxy == (OD_XYXY[0],)
    assert result.labels == ("car",)


def test_answer_without_locations_gives_empty_results(backend: FlorenceBackend) -> None:
    requests = [
        request((333, 517), "OD"),
        request((333, 517), "OCR_WITH_REGION"),
        request((333, 517), "REGION_PROPOSAL"),
    ]
    results = run_scripted(backend, requests, ["a cat", "HELLO", ""])
    assert [len(r.to_dict().get("detections", r.to_dict().get("regions", []))) for r in results] == [0, 0, 0]
    assert results[0].summary() == "Nothing found."
    assert results[1].summary() == "No text found."
