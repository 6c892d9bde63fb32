"""The repository's photos and what the tests make of them: encodings, resizes, a group photo,
a unique photo per test (a new image for the cache, the same face), a phone-size JPEG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / "photos"


def photo_bytes(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


def photo_rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def encode(rgb: np.ndarray, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **params)
    return buf.getvalue()


def resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    img = Image.fromarray(rgb)
    return np.asarray(img.resize((round(img.width * factor), round(img.height * factor)), Image.LANCZOS))


def group_photo() -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """A 1280 x 640 canvas: astronaut (512) at (40, 64), camera (512) at (640, 64), and a 0.35x
    astronaut at (1090, 440) -> three faces at three scales. Returns the image and placements."""
    canvas = np.full((640, 1280, 3), 200, dtype=np.uint8)
    astro, cam = photo_rgb("astronaut.png"), photo_rgb("camera.png")
    small = resize(astro, 0.35)
    canvas[64:576, 40:552] = astro
    canvas[64:576, 640:1152] = cam
    canvas[440:440 + small.shape[0], 1090:1090 + small.shape[1]] = small
    return canvas, [(40, 64, 1.0), (640, 64, 1.0), (1090, 440, 0.35)]


def unique_photo(seed: int) -> bytes:
    """The astronaut with a few pixels changed: a new image for the cache, the same face."""
    rgb = photo_rgb("astronaut.png").copy()
    rgb[-1, :8] = np.random.default_rng(seed).integers(0, 255, (8, 3))
    return encode(rgb)


def phone_jpeg(width: int, orientation: int = 1) -> bytes:
    """A portrait at phone-camera size: the astronaut upscaled onto a 3:4 canvas."""
    canvas = Image.new("RGB", (width, width * 4 // 3), (90, 110, 130))
    canvas.paste(Image.fromarray(photo_rgb("astronaut.png")).resize((width, width), Image.BICUBIC), (0, width // 6))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()
