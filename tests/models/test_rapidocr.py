"""rapidocr reads real text: lines rendered with a real TTF font at several sizes and over a real photo.

The PP-OCR models ship inside the `rapidocr` wheel, so these run offline. Character error rate
(jiwer) must stay at or under 2% on every image.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import jiwer
import pytest
from PIL import Image, ImageDraw, ImageFont

from app.core.config import Settings
from app.core.images import LoadedImage
from app.core.results import OCRResult, TextResult
from app.models.manager import ModelManager, ModelState
from app.models.rapidocr_backend import RapidOCRBackend, TextLine, join_lines, upscale_factor
from app.models.registry import BackendRegistry, build_manager
from app.services.analysis import AnalysisService

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
MAX_CER = 0.02
SENTENCE = "Invoice 2024-117: total due 1,250.00 EUR"

pytestmark = pytest.mark.skipif(not FONT.is_file(), reason="needs fonts-dejavu-core (installed by .ci/run)")


def render(text: str, size: int, canvas: tuple[int, int] | None = None, font: Path = FONT) -> tuple[Image.Image, tuple]:
    """Black text on white; a tight canvas when `canvas` is None, else centred on a canvas that size."""
    face = ImageFont.truetype(str(font), size)
    left, top, right, bottom = face.getbbox(text)
    width, height = canvas or (right - left + 24, bottom - top + 24)
    image = Image.new("RGB", (width, height), "white")
    origin = ((width - (right - left)) // 2 - left, (height - (bottom - top)) // 2 - top)
    draw = ImageDraw.Draw(image)
    draw.text(origin, text, fill="black", font=face)
    return image, draw.textbbox(origin, text, font=face)


@pytest.fixture(scope="module")
def backend() -> RapidOCRBackend:
    ocr = RapidOCRBackend(Settings(_env_file=None))  # type: ignore[call-arg]
    ocr.load()
    return ocr


def cer(expected: str, got: str) -> float:
    return float(jiwer.cer(expected, got))


@pytest.mark.parametrize(
    ("size", "canvas"),
    [
        (11, None),  # a tight crop with small text: upscaled 2x before detection
        (16, (640, 160)),
        (24, (900, 300)),
        (40, None),
        (20, (1400, 900)),  # a large page: not upscaled, not shrunk
    ],
    ids=["11px-crop", "16px", "24px", "40px-crop", "20px-large-page"],
)
def test_reads_rendered_text(backend: RapidOCRBackend, size: int, canvas: tuple[int, int] | None) -> None:
    image, _ = render(SENTENCE, size, canvas)
    got = join_lines(backend.read(image))
    assert cer(SENTENCE, got) <= MAX_CER, f"{size}px on {image.size}: read {got!r}"


def test_reads_a_caption_over_a_real_photo(backend: RapidOCRBackend, astronaut: Image.Image) -> None:
    text = "Launch window opens at 06:45 UTC"
    photo = astronaut.convert("RGB").copy()
    face = ImageFont.truetype(str(BOLD), 20)
    draw = ImageDraw.Draw(photo)
    _, _, right, bottom = draw.textbbox((16, 460), text, font=face)
    assert right < photo.width and bottom < photo.height  # the whole caption is on the photo
    draw.text((16, 460), text, font=face, fill="white", stroke_width=2, stroke_fill="black")
    got = join_lines(backend.read(photo))
    assert cer(text, got) <= MAX_CER, f"read {got!r}"


def test_quads_are_in_original_pixels_even_after_upscaling(backend: RapidOCRBackend) -> None:
    image, (left, top, right, bottom) = render("HELLO 42", 14)
    assert upscale_factor(image.size) == 2.0
    [line] = backend.read(image)
    xs, ys = line.quad[0::2], line.quad[1::2]
    # The detected box surrounds the drawn text (DB boxes are dilated a little) and stays on the image.
    assert min(xs) <= left + 2 and max(xs) >= right - 2 and min(ys) <= top + 2 and max(ys) >= bottom - 2
    assert min(xs) >= -1 and min(ys) >= -1 and max(xs) <= image.width + 1 and max(ys) <= image.height + 1
    assert line.text == "HELLO 42" and 0.5 < line.score <= 1.0


def test_lines_are_joined_in_reading_order() -> None:
    def line(text: str, x: float, y: float) -> TextLine:
        return TextLine((x, y, x + 50, y, x + 50, y + 20, x, y + 20), text, 0.9)

    lines = [line("world", 70, 11), line("second", 10, 50), line("Hello", 10, 10)]
    assert join_lines(lines) == "Hello world\nsecond"
    assert join_lines([]) == ""


def test_upscale_rule() -> None:
    assert upscale_factor((100, 30)) == 2.0
    assert upscale_factor((640, 480)) == 1.5
    assert upscale_factor((960, 100)) == 1.0
    assert upscale_factor((3000, 2000)) == 1.0


# -- served through the registry: OCR_BACKEND=rapidocr needs no Florence-2 model at all ---------------------
@pytest.fixture(scope="module")
def rapid_registry(tmp_path_factory: pytest.TempPathFactory) -> BackendRegistry:
    missing = tmp_path_factory.mktemp("no-florence") / "absent"
    settings = Settings(_env_file=None, ocr_backend="rapidocr", model_id=str(missing))  # type: ignore[call-arg]
    return BackendRegistry.from_settings(settings)


@pytest.fixture(scope="module")
def rapid_manager(rapid_registry: BackendRegistry) -> Iterator[ModelManager]:
    manager = build_manager(rapid_registry.backends[0].settings, rapid_registry)
    yield manager
    manager.shutdown()


def test_ocr_tasks_run_on_rapidocr_without_florence(
    rapid_manager: ModelManager, rapid_registry: BackendRegistry
) -> None:
    two_lines = Image.new("RGB", (520, 160), "white")
    face = ImageFont.truetype(str(FONT), 24)
    draw = ImageDraw.Draw(two_lines)
    draw.text((20, 30), "First line of text", fill="black", font=face)
    draw.text((20, 95), "Second line 2025", fill="black", font=face)
    service = AnalysisService(rapid_manager, rapid_registry)
    [plain] = service.analyze([LoadedImage(two_lines, "PNG", "page")], "OCR")
    assert isinstance(plain.result, TextResult) and plain.result.task == "<OCR>"
    assert cer("First line of text\nSecond line 2025", plain.result.text) <= MAX_CER
    [regions] = asyncio.run(service.analyze_async([LoadedImage(two_lines, "PNG", "page")], "OCR_WITH_REGION"))
    assert isinstance(regions.result, OCRResult)
    assert list(regions.result.texts) == ["First line of text", "Second line 2025"]
    assert all(len(quad) == 8 for quad in regions.result.quads) and regions.result.scores is not None
    assert rapid_manager.state("rapidocr") is ModelState.READY
    assert rapid_manager.state("florence2") is ModelState.NOT_LOADED


def test_default_registry_of_the_service_follows_the_setting(rapid_manager: ModelManager) -> None:
    service = AnalysisService(rapid_manager)  # no registry given: built from the manager's settings
    [outcome] = service.analyze([LoadedImage(render("OK 7", 30)[0], "PNG", "x")], "<OCR>")
    assert isinstance(outcome.result, TextResult) and outcome.result.text == "OK 7"
