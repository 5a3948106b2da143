"""Image intake: accepted formats, normalisation to RGB, and a specific error for every bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.core.errors import AppError, InvalidImage, PayloadTooLarge, UnsupportedMediaType
from app.core.images import ImageLimits, LoadedImage, load_image_bytes, load_image_path

LIMITS = ImageLimits(max_bytes=5 * 1024 * 1024, max_pixels=40_000_000)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def quadrants() -> Image.Image:
    """60x40: red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = Image.new("RGB", (60, 40), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 30, 20))
    image.paste((0, 255, 0), (30, 0, 60, 20))
    image.paste((0, 0, 255), (0, 20, 30, 40))
    return image


def close(actual: object, expected: tuple[int, ...], tolerance: int) -> bool:
    assert isinstance(actual, tuple), actual
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int, rows_of_data: int | None) -> bytes:
    """A 1-bit greyscale PNG claiming `width`x`height`; only `rows_of_data` rows are present (all if None)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed pixels
    rows = height if rows_of_data is None else rows_of_data
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


# -- accepted formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("PNG", {}, 0),
        ("JPEG", {"quality": 95}, 12),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 90}, 12),
        ("GIF", {}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
    ],
)
def test_accepted_formats_decode_to_rgb(fmt: str, params: dict[str, object], tolerance: int) -> None:
    loaded = load_image_bytes(encode(quadrants(), fmt, **params), LIMITS, name=f"q.{fmt.lower()}")
    assert isinstance(loaded, LoadedImage)
    assert loaded.source_format == fmt
    assert loaded.name == f"q.{fmt.lower()}"
    assert loaded.image.mode == "RGB" and loaded.image_wh == (60, 40)
    for xy, rgb in {(5, 5): (255, 0, 0), (55, 5): (0, 255, 0), (5, 35): (0, 0, 255), (55, 35): (255, 255, 255)}.items():
        assert close(loaded.image.getpixel(xy), rgb, tolerance), (xy, loaded.image.getpixel(xy))


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animations_give_their_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (24, 16), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    params: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    loaded = load_image_bytes(data, LIMITS)
    assert loaded.image_wh == (24, 16)
    assert loaded.image.getpixel((12, 8)) == (255, 0, 0)


def test_multi_picture_jpeg_gives_its_first_picture() -> None:
    first, second = Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))
    loaded = load_image_bytes(encode(first, "MPO", save_all=True, append_images=[second]), LIMITS)
    assert loaded.source_format == "MPO"
    assert close(loaded.image.getpixel((4, 3)), (255, 0, 0), 12)


def test_rgba_is_composited_on_white_exactly() -> None:
    image = Image.new("RGBA", (3, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 128))  # white * (1 - 128/255) = 127 in green and blue
    image.putpixel((2, 0), (0, 0, 255, 255))
    loaded = load_image_bytes(encode(image, "PNG"), LIMITS)
    assert [loaded.image.getpixel((x, 0)) for x in range(3)] == [(255, 255, 255), (255, 127, 127), (0, 0, 255)]


def test_palette_transparency_and_greyscale_alpha_become_white() -> None:
    palette = Image.new("P", (4, 1), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((0, 0), 0)
    loaded = load_image_bytes(encode(palette, "PNG", transparency=0), LIMITS)
    assert [loaded.image.getpixel((x, 0)) for x in (0, 1)] == [(255, 255, 255), (200, 10, 10)]

    grey_alpha = Image.new("LA", (2, 1), (0, 0))
    grey_alpha.putpixel((1, 0), (40, 255))
    loaded = load_image_bytes(encode(grey_alpha, "PNG"), LIMITS)
    assert [loaded.image.getpixel((x, 0)) for x in (0, 1)] == [(255, 255, 255), (40, 40, 40)]


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16B", "TIFF"), ("I;16", "TIFF")])
def test_sixteen_bit_greyscale_is_scaled_not_clipped(mode: str, fmt: str) -> None:
    image = Image.new(mode, (2, 1), 25600)
    image.putpixel((1, 0), 65535)
    loaded = load_image_bytes(encode(image, fmt), LIMITS)
    assert [loaded.image.getpixel((x, 0)) for x in (0, 1)] == [(100, 100, 100), (255, 255, 255)]  # 25600 / 256


def test_exif_orientation_is_applied() -> None:
    stored = quadrants()  # 60x40, red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    loaded = load_image_bytes(encode(stored, "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    assert loaded.image_wh == (40, 60)
    # after a clockwise quarter turn the stored top-left is the displayed top-right
    assert close(loaded.image.getpixel((35, 5)), (255, 0, 0), 12)
    assert close(loaded.image.getpixel((5, 5)), (0, 0, 255), 12)


def test_cmyk_jpeg_is_converted() -> None:
    loaded = load_image_bytes(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95), LIMITS)
    assert loaded.image.mode == "RGB" and close(loaded.image.getpixel((4, 4)), (255, 0, 0), 12)


def test_load_image_path_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(encode(quadrants(), "PNG"))
    loaded = load_image_path(path, LIMITS)
    assert loaded.name == "photo.png" and loaded.image_wh == (60, 40)


# -- rejected inputs: each with its own code ---------------------------------------------------------------


def test_decompression_bomb_is_refused_from_the_header_before_decoding() -> None:
    # Only 10 of 20000 rows exist: decoding would fail as truncated, so `too_many_pixels` proves the
    # size check ran on the header alone.
    data = png_bomb(20_000, 20_000, rows_of_data=10)
    assert len(data) < 4096
    with pytest.raises(PayloadTooLarge) as caught:
        load_image_bytes(data, LIMITS, name="bomb.png")
    assert caught.value.code == "too_many_pixels" and caught.value.http_status == 413
    assert "20000x20000" in caught.value.message or "too many pixels" in caught.value.message


@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (8_000, 8_000), (40_001, 1_000)])
def test_complete_bombs_over_the_pixel_limit_are_refused(width: int, height: int) -> None:
    data = png_bomb(width, height, rows_of_data=None)  # a valid PNG of a few KB
    assert len(data) < 64 * 1024
    with pytest.raises(PayloadTooLarge) as caught:
        load_image_bytes(data, LIMITS)
    assert caught.value.code == "too_many_pixels"


def test_pixel_limit_boundary() -> None:
    limits = ImageLimits(max_bytes=1_000_000, max_pixels=100)
    assert load_image_bytes(encode(Image.new("RGB", (10, 10)), "PNG"), limits).image_wh == (10, 10)
    with pytest.raises(PayloadTooLarge) as caught:
        load_image_bytes(encode(Image.new("RGB", (11, 10)), "PNG"), limits)
    assert caught.value.code == "too_many_pixels" and "11x10" in caught.value.message


def test_byte_limit_is_checked_before_anything_else() -> None:
    limits = ImageLimits(max_bytes=1000, max_pixels=40_000_000)
    for data in (b"\x00" * 1001, encode(Image.effect_noise((64, 64), 50), "PNG")):
        with pytest.raises(PayloadTooLarge) as caught:
            load_image_bytes(data, limits, name="big.png")
        assert caught.value.code == "image_too_large" and "big.png" in caught.value.message
    assert load_image_bytes(encode(Image.new("RGB", (4, 4)), "PNG"), limits).image_wh == (4, 4)


def truncated(fmt: str) -> bytes:
    data = encode(Image.effect_noise((120, 90), 60).convert("RGB"), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (b"", InvalidImage, "empty_image"),
        (b"\x00\x01garbage bytes that are no image at all" * 10, UnsupportedMediaType, "unsupported_image_format"),
        (b"hello, I am a text file\n", UnsupportedMediaType, "unsupported_image_format"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', UnsupportedMediaType,
         "unsupported_image_format"),
        (truncated("PNG"), InvalidImage, "corrupt_image"),
        (truncated("JPEG"), InvalidImage, "corrupt_image"),
        (truncated("TIFF"), InvalidImage, "corrupt_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, InvalidImage, "corrupt_image"),
        (b"GIF89a and then garbage", InvalidImage, "corrupt_image"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 nonsense", InvalidImage, "corrupt_image"),
        (encode(Image.new("RGB", (8, 8)), "TGA"), UnsupportedMediaType, "unsupported_image_format"),
        (encode(Image.new("RGB", (16, 16)), "ICO"), UnsupportedMediaType, "unsupported_image_format"),
        (encode(Image.new("RGB", (8, 8)), "PDF"), UnsupportedMediaType, "unsupported_image_format"),
    ],
    ids=["empty", "garbage", "text", "svg", "truncated-png", "truncated-jpeg", "truncated-tiff",
         "png-signature-only", "gif-signature-only", "webp-signature-only", "tga", "ico", "pdf"],
)  # fmt: skip
def test_bad_inputs_get_specific_errors(data: bytes, error: type[AppError], code: str) -> None:
    with pytest.raises(AppError) as caught:
        load_image_bytes(data, LIMITS, name="upload.png")
    assert type(caught.value) is error
    assert caught.value.code == code
    assert caught.value.message.startswith("upload.png: ")
    assert "Traceback" not in caught.value.message


def test_a_text_file_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("shopping list: milk, eggs\n")
    with pytest.raises(UnsupportedMediaType) as caught:
        load_image_path(path, LIMITS)
    assert caught.value.code == "unsupported_image_format" and caught.value.http_status == 415


def test_an_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage) as caught:
        load_image_path(tmp_path / "missing.jpg", LIMITS)
    assert caught.value.code == "unreadable_file"
    with pytest.raises(InvalidImage) as caught:
        load_image_path(tmp_path, LIMITS)  # a directory
    assert caught.value.code == "unreadable_file"


# -- fuzzing ----------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = {
    fmt: encode(Image.effect_noise((24, 16), 40).convert("RGB"), fmt)
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
}


def check_outcome(data: bytes) -> None:
    try:
        loaded = load_image_bytes(data, ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000))
    except AppError as exc:
        assert exc.code in {
            "empty_image", "unsupported_image_format", "corrupt_image", "too_many_pixels", "invalid_image",
            "image_too_large",
        }  # fmt: skip
        return
    assert loaded.image.mode == "RGB"
    width, height = loaded.image_wh
    assert 0 < width * height <= 4_000_000


@FUZZ
@given(st.binary(max_size=2048))
@example(b"GIF89a")
@example(b"II*\x00")
@example(b"BM" + b"\xff" * 60)
def test_random_bytes_only_ever_raise_app_errors(data: bytes) -> None:
    check_outcome(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt TIFF/EXIF tags it skips
@FUZZ
@given(
    st.sampled_from(sorted(SEEDS)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.booleans(),
)
def test_corrupted_real_images_only_ever_raise_app_errors(fmt: str, edits: list[tuple[int, int]], cut: bool) -> None:
    data = bytearray(SEEDS[fmt])
    for position, value in edits:
        data[position % len(data)] = value
    if cut:
        data = data[: len(data) * 2 // 3]
    check_outcome(bytes(data))
