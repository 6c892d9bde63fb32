"""Decode and validate: every rejection class has its stable code; accepted images decode right."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from aurum import errors
from aurum.config import Settings
from aurum.image import decode_image, sniff_format

from tests.helpers.photos import encode, phone_jpeg as _phone_jpeg, photo_bytes, photo_rgb, resize
from tests.helpers.hostile_corpus import _jpeg_header_dims, _png_header_dims


_png_with_size = _png_header_dims  # real PNG / JPEG files whose headers declare huge dimensions
_jpeg_with_size = _jpeg_header_dims


@pytest.fixture(scope="module")
def s() -> Settings:
    return Settings.from_env()


def code_of(data: bytes, settings: Settings) -> str:
    with pytest.raises(errors.AurumError) as info:
        decode_image(data, settings)
    return info.value.code


@pytest.mark.parametrize("name,data,code", [
    ("empty", b"", "EMPTY_IMAGE"),
    ("random bytes", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "UNSUPPORTED_FORMAT"),
    ("text", b"hello, this is not an image", "UNSUPPORTED_FORMAT"),
    ("svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "UNSUPPORTED_FORMAT"),
    ("html", b"<!DOCTYPE html><html></html>", "UNSUPPORTED_FORMAT"),
    ("pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", "UNSUPPORTED_FORMAT"),
    ("gif", encode(np.zeros((64, 64, 3), np.uint8), "GIF"), "UNSUPPORTED_FORMAT"),
    ("bmp", encode(np.zeros((64, 64, 3), np.uint8), "BMP"), "UNSUPPORTED_FORMAT"),
    ("tiff", encode(np.zeros((64, 64, 3), np.uint8), "TIFF"), "UNSUPPORTED_FORMAT"),
    ("truncated jpeg", photo_bytes("rocket.jpg")[:5000], "CORRUPT_IMAGE"),
    ("truncated png", photo_bytes("astronaut.png")[:20000], "CORRUPT_IMAGE"),
    ("jpeg header only", photo_bytes("rocket.jpg")[:200], "CORRUPT_IMAGE"),
    ("png magic only", b"\x89PNG\r\n\x1a\n", "CORRUPT_IMAGE"),
    ("webp garbage", b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20, "CORRUPT_IMAGE"),
    ("png bomb", _png_with_size(100_000, 100_000), "IMAGE_TOO_LARGE"),
    ("jpeg bomb", _jpeg_with_size(65_000, 65_000), "IMAGE_TOO_LARGE"),
    ("tiny", encode(np.zeros((16, 16, 3), np.uint8)), "IMAGE_TOO_SMALL"),
    ("1x1", encode(np.zeros((1, 1, 3), np.uint8)), "IMAGE_TOO_SMALL"),
])
def test_rejections_have_stable_codes(name: str, data: bytes, code: str, s: Settings) -> None:
    assert code_of(data, s) == code


def test_corrupt_body_behind_valid_header(s: Settings) -> None:
    data = bytearray(photo_bytes("rocket.jpg"))
    data[2000:] = bytes(len(data) - 2000)  # valid headers, the scan data zeroed then cut
    assert code_of(bytes(data[:len(data) // 2]), s) == "CORRUPT_IMAGE"


def test_byte_limit(s: Settings) -> None:
    small_limit = Settings.from_env(max_image_bytes=1000)
    with pytest.raises(errors.ImageTooLarge) as info:
        decode_image(photo_bytes("rocket.jpg"), small_limit)
    assert info.value.details["limit_bytes"] == 1000


def test_bomb_is_rejected_without_allocating(s: Settings) -> None:
    bomb = _png_with_size(60_000, 60_000)  # 3.6 GP: ~10 GB if decoded
    tracemalloc.start()
    with pytest.raises(errors.ImageTooLarge):
        decode_image(bomb, s)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_animated_image_is_refused(s: Settings) -> None:
    frames = [Image.fromarray(np.full((64, 64, 3), v, np.uint8)) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:])
    assert code_of(buf.getvalue(), s) == "UNSUPPORTED_FORMAT"


def test_formats_and_modes_decode_to_rgb(s: Settings) -> None:
    astro = photo_rgb("astronaut.png")
    cases = {
        "jpeg": encode(astro, "JPEG", quality=90),
        "png": photo_bytes("astronaut.png"),
        "webp": encode(astro, "WEBP", quality=90),
    }
    for fmt, data in cases.items():
        img = decode_image(data, s)
        assert img.format == fmt
        assert img.rgb.shape == (512, 512, 3) and img.rgb.dtype == np.uint8
        assert np.abs(img.rgb.astype(int) - astro).mean() < 4, fmt


def test_grey_alpha_16bit_and_cmyk(s: Settings) -> None:
    grey = decode_image(photo_bytes("camera.png"), s)
    assert grey.rgb.shape == (512, 512, 3)
    assert (grey.rgb[..., 0] == grey.rgb[..., 2]).all()

    rgba = np.dstack([photo_rgb("astronaut.png"), np.full((512, 512), 255, np.uint8)])
    rgba[:100, :100, 3] = 0  # transparent corner becomes white
    img = decode_image(encode(rgba), s)
    assert (img.rgb[:100, :100] == 255).all()

    sixteen = Image.fromarray((np.asarray(Image.open(io.BytesIO(photo_bytes("camera.png")))).astype(np.uint16) * 257))
    buf = io.BytesIO()
    sixteen.save(buf, "PNG")
    img16 = decode_image(buf.getvalue(), s)
    assert abs(int(img16.rgb.mean()) - int(grey.rgb.mean())) <= 1

    cmyk = Image.fromarray(photo_rgb("astronaut.png")).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=95)
    img_cmyk = decode_image(buf.getvalue(), s)
    assert img_cmyk.rgb.shape == (512, 512, 3)


@pytest.mark.parametrize("orientation,rotate", [(3, 180), (6, 90), (8, 270)])
def test_exif_orientation_is_applied(orientation: int, rotate: int, s: Settings) -> None:
    upright = photo_rgb("astronaut.png")[:, :400]  # 400 wide x 512 tall
    stored = Image.fromarray(upright).rotate(rotate, expand=True)  # as a camera would store it
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    img = decode_image(buf.getvalue(), s)
    assert (img.width, img.height) == (400, 512)
    assert np.abs(img.rgb.astype(int) - upright).mean() < 4


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("quality,subsampling", [(95, 0), (80, 2)])
def test_both_jpeg_decoders_give_the_same_pixels(orientation: int, quality: int, subsampling: int,
                                                 s: Settings, monkeypatch) -> None:
    """OpenCV decodes complete colour JPEGs, Pillow everything else: same pixels, same orientation."""
    import aurum.image as image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(photo_rgb("astronaut.png")[:, :400]).save(buf, "JPEG", quality=quality, subsampling=subsampling,
                                                              exif=exif.tobytes())
    used = []
    direct = image._decode_direct
    monkeypatch.setattr(image, "_decode_direct", lambda *a: used.append(1) or direct(*a))
    fast = decode_image(buf.getvalue(), s)
    assert used and direct(buf.getvalue(), image.probe(buf.getvalue(), s), 1) is not None
    monkeypatch.setattr(image, "_decode_direct", lambda *a: None)
    slow = decode_image(buf.getvalue(), s)
    assert np.array_equal(fast.rgb, slow.rgb) and fast.rgb.flags.c_contiguous
    assert (fast.width, fast.height, fast.scale) == (slow.width, slow.height, slow.scale)


def test_only_complete_colour_jpegs_take_the_direct_decoder(s: Settings) -> None:
    from aurum.image import _decode_direct, probe

    def direct(data: bytes, factor: int = 1) -> bool:
        return _decode_direct(data, probe(data, s), factor) is not None

    jpeg = encode(photo_rgb("astronaut.png"), "JPEG", quality=90)
    assert direct(jpeg) and direct(jpeg, 4)
    assert not direct(jpeg + b"trailing bytes")                      # Pillow reads past the end marker
    assert not direct(encode(photo_rgb("camera.png")[..., 0], "JPEG"))  # greyscale
    assert not direct(photo_bytes("astronaut.png"))                   # PNG
    cut = jpeg[:len(jpeg) // 2] + b"\xff\xd9"  # cut, end marker glued on: libjpeg pads it in both
    assert direct(cut)
    assert np.array_equal(decode_image(cut, s).rgb, np.asarray(Image.open(io.BytesIO(cut)).convert("RGB")))


def test_absurd_exif_orientation_is_ignored(s: Settings) -> None:
    exif = Image.Exif()
    exif[0x0112] = 77
    buf = io.BytesIO()
    Image.fromarray(photo_rgb("astronaut.png")).save(buf, "JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue(), s).rgb.shape == (512, 512, 3)


def test_large_jpeg_is_decoded_at_reduced_size(s: Settings) -> None:
    big = encode(resize(photo_rgb("astronaut.png"), 8.0), "JPEG", quality=85)  # 4096 x 4096
    img = decode_image(big, s)
    assert (img.width, img.height) == (4096, 4096)
    assert max(img.rgb.shape[:2]) == s.work_max_side
    assert img.scale == pytest.approx(0.5)
    assert np.allclose(img.to_original(np.array([100.0, 200.0])), [200.0, 400.0])


def test_sha256_is_of_the_uploaded_bytes(s: Settings) -> None:
    import hashlib

    data = photo_bytes("rocket.jpg")
    assert decode_image(data, s).sha256 == hashlib.sha256(data).hexdigest()


def test_sniff_format() -> None:
    assert sniff_format(photo_bytes("rocket.jpg")) == "jpeg"
    assert sniff_format(photo_bytes("astronaut.png")) == "png"
    assert sniff_format(b"GIF89a....") == "gif"


@pytest.mark.parametrize("width,factor", [(1512, 2), (3024, 4)])
def test_large_jpeg_is_decoded_at_detection_size_first(width: int, factor: int, s: Settings) -> None:
    data = _phone_jpeg(width)
    quick = decode_image(data, s, detect_side=640)
    full = decode_image(data, s)
    assert quick.rgb.shape[:2] == (-(-width * 4 // 3 // factor), width // factor)  # DCT scale, long side >= 640
    assert (quick.width, quick.height) == (full.width, full.height) == (width, width * 4 // 3)
    assert quick.scale == pytest.approx(1 / factor)
    assert np.array_equal(quick.working, full.rgb)  # the working size, decoded on demand
    pixels, k = quick.pixels_for(face_side=100, native_side=128)
    assert pixels is quick.working and k == pytest.approx(full.scale / quick.scale)
    assert quick.pixels_for(face_side=300, native_side=128) == (quick.rgb, 1.0)


def test_detection_size_decode_leaves_small_and_non_jpeg_photos_alone(s: Settings) -> None:
    selfie = encode(resize(photo_rgb("astronaut.png"), 1.4), "JPEG")  # 717 px: under twice 640
    png = encode(resize(photo_rgb("astronaut.png"), 3.0))             # 1536 px PNG: no DCT to scale
    for data in (selfie, png):
        img = decode_image(data, s, detect_side=640)
        assert img.working is img.rgb and img.pixels_for(10, 128) == (img.rgb, 1.0)


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("factor", [2, 4])
def test_reduced_decodes_are_the_same_pixels_in_both_decoders(orientation: int, factor: int, s: Settings,
                                                              monkeypatch) -> None:
    import aurum.image as image

    data = _phone_jpeg(1200, orientation)
    fast = image._decode(data, image.probe(data, s), "jpeg", orientation, factor)
    monkeypatch.setattr(image, "_decode_direct", lambda *a: None)
    slow = image._decode(data, image.probe(data, s), "jpeg", orientation, factor)
    assert fast.shape[:2] == ((1200 if orientation == 6 else 1600) // factor, (1600 if orientation == 6 else 1200) // factor)
    assert np.array_equal(fast, slow)


def test_costly_files_are_refused_before_any_parser_runs(settings, monkeypatch) -> None:
    """Scan floods and chunk floods are counted in the raw bytes: Pillow never sees them (its own
    PNG open walks every chunk in Python, ~2 s for 670,000); PNG and WebP, decoded at full size,
    are held to AURUM_MAX_DECODE_PIXELS from their headers."""
    import PIL.Image

    from aurum import errors
    from aurum.image import probe

    from tests.helpers.hostile_corpus import _png_chunk_flood, _png_header_bits, _progressive_scans, _webp_lossless_dims

    real_open = PIL.Image.open
    for data in (_progressive_scans(200), _png_chunk_flood(b"tEXt", 5000), _png_chunk_flood(b"zzZz", 5000)):
        monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("parsed before the cost check"))
        with pytest.raises(errors.ImageTooComplex):
            probe(data, settings)
    monkeypatch.setattr(PIL.Image, "open", real_open)
    for data in (_png_header_bits(6400, 6250, 16, 0), _webp_lossless_dims(6324, 6324)):
        with pytest.raises(errors.ImageTooComplex) as info:
            probe(data, settings)
        assert info.value.details["limit_pixels"] == settings.max_decode_pixels
    # photos pass: a progressive JPEG, a PNG with a few text chunks, a PNG at the pixel limit's edge
    probe(_progressive_scans(0), settings)
    probe(_png_chunk_flood(b"tEXt", 20), settings)
    probe(_png_header_bits(4000, 3000, 8, 2), settings)
