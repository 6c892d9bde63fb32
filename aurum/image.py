"""Decode and validate an uploaded photo, entirely in memory.

Order matters for safety: size in bytes, then the format from the magic bytes, then the
structure that sets a decode's cost (a JPEG's scan count, a PNG's chunk count: a few MB can hold
60,000 progressive scans or 670,000 text chunks, minutes of decoding), then the dimensions from
the header (before any pixel is allocated; PNG and WebP, which cannot decode at reduced size, to
``AURUM_MAX_DECODE_PIXELS``), then the decode. JPEGs larger
than the working size are decoded at a reduced DCT scale (much cheaper than decoding the full
photo and resizing). EXIF orientation is applied; all other metadata is dropped.

Two decoders, the same libjpeg-turbo underneath: a complete colour JPEG (the common upload)
goes through OpenCV straight into an RGB array, pixel-identical to Pillow at every DCT scale and
~0.35 ms cheaper per selfie (Pillow decodes into 4-byte pixels, then packs and copies them).
Everything else goes through Pillow, whose errors are stricter: a JPEG without its end marker
(a cut-off upload) is always Pillow's, so it is refused as truncated.

The pipeline asks for a decode at detection size (``detect_side``): a phone photo is decoded at
1/2 or 1/4 scale, and at the working size only when a face is too small for its crop there.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import errors
from .config import Settings
from .geometry import shrink

# Our own pixel check runs first and is stricter; Pillow's guard would only warn or raise later.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
)
_OTHER_MAGIC = (  # recognised only to say clearly what was sent
    (b"GIF8", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
    (b"%PDF", "pdf"), (b"<svg", "svg"), (b"<?xml", "xml/svg"), (b"<!DOCTYPE", "html"),
    (b"<html", "html"), (b"\x00\x00\x00\x0cjP", "jpeg2000"),
)


@dataclass(frozen=True)
class DecodedImage:
    """An RGB photo ready for the models."""

    rgb: np.ndarray        # H x W x 3 uint8, EXIF orientation applied, possibly reduced
    width: int             # original (oriented) width, pixels
    height: int            # original (oriented) height, pixels
    scale: float           # rgb pixels per original pixel (1.0 unless reduced)
    format: str            # jpeg | png | webp
    sha256: str            # of the uploaded bytes
    # Decodes the photo again at the working size, when ``rgb`` is a smaller decode for detection.
    _working: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def to_original(self, values: np.ndarray) -> np.ndarray:
        """Map coordinates in ``rgb`` back to original-image pixels."""
        return values / self.scale

    @cached_property
    def working(self) -> np.ndarray:
        """The photo at the working size (``AURUM_WORK_MAX_SIDE``): ``rgb`` unless that is reduced."""
        return self.rgb if self._working is None else self._working()

    def mirrored(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` (``rgb`` or the working-size decode) flipped left to right, made once."""
        cache = self.__dict__.setdefault("_mirrored", {})
        if id(pixels) not in cache:
            cache[id(pixels)] = (pixels, cv2.flip(pixels, 1))  # the array kept alive with its id
        return cache[id(pixels)][1]

    def pixels_for(self, face_side: float, native_side: float) -> tuple[np.ndarray, float]:
        """The pixels to crop a face from, and how many of them there are per ``rgb`` pixel:
        ``rgb`` itself, or the working-size decode when ``rgb`` is a reduced one and the face is
        smaller than ``native_side`` in it (a crop from it would be upsampled)."""
        if self._working is None or face_side >= native_side:
            return self.rgb, 1.0
        full = self.working
        return full, full.shape[1] / self.rgb.shape[1]


def sniff_format(data: bytes) -> str:
    head = data[:16]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    stripped = data[:256].lstrip().lower()
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic) or stripped.startswith(magic.lower()):
            return name
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "heic/avif"
    return "unknown"


def probe(data: bytes, settings: Settings) -> Image.Image:
    """Every check that needs no pixels: byte size, format, header dimensions, animation.

    Cheap (no decode), so the API runs it before accepting a job. Returns the lazily opened
    image; raises a typed :class:`errors.AurumError` on rejection."""
    if not data:
        raise errors.EmptyImage()
    if len(data) > settings.max_image_bytes:
        raise errors.ImageTooLarge(
            f"The image is {len(data)} bytes; the limit is {settings.max_image_bytes} bytes.",
            limit_bytes=settings.max_image_bytes, bytes=len(data))
    fmt = sniff_format(data)
    if fmt not in SUPPORTED.values():
        raise errors.UnsupportedFormat(
            f"Unsupported image format ({fmt}); send JPEG, PNG or WebP.", detected=fmt)

    _check_structure(data, fmt, settings)  # before Pillow's open, which walks a PNG's chunks itself

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=list(SUPPORTED))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise errors.CorruptImage(f"The {fmt.upper()} header could not be read.") from exc

    width, height = img.size  # from the header: nothing decoded yet
    if width * height > settings.max_image_pixels:
        raise errors.ImageTooLarge(
            f"The image is {width}x{height} pixels; the limit is {settings.max_image_pixels} pixels.",
            limit_pixels=settings.max_image_pixels, width=width, height=height)
    if img.format != "JPEG" and width * height > settings.max_decode_pixels:
        raise errors.ImageTooComplex(
            f"The {fmt.upper()} image is {width}x{height} pixels; a {fmt.upper()} is decoded at full size, and the "
            f"limit for that is {settings.max_decode_pixels} pixels (send a JPEG, or a smaller image).",
            limit_pixels=settings.max_decode_pixels, width=width, height=height)
    if min(width, height) < settings.min_image_side:
        raise errors.ImageTooSmall(
            f"The image is {width}x{height} pixels; each side must be at least "
            f"{settings.min_image_side} pixels.", width=width, height=height)
    if getattr(img, "n_frames", 1) > 1:
        raise errors.UnsupportedFormat("Animated images are not supported; send a single photo.")
    return img


def _check_structure(data: bytes, fmt: str, settings: Settings) -> None:
    """Refuse, in a few milliseconds and before any parser runs, files built to cost a decoder far
    more than their size: every progressive scan is a full pass over the coefficients, and Pillow
    walks every PNG chunk in Python."""
    if fmt == "jpeg":
        # 0xFF 0xDA starts a scan; inside entropy-coded data every 0xFF is stuffed (0xFF00), so
        # the count is exact up to markers inside metadata (an embedded thumbnail's own scan).
        scans = data.count(b"\xff\xda")
        if scans > settings.max_jpeg_scans:
            raise errors.ImageTooComplex(
                f"The JPEG has {scans} scans; the limit is {settings.max_jpeg_scans} (photos have 1-12).",
                scans=scans, limit_scans=settings.max_jpeg_scans)
    elif fmt == "png":
        chunks, offset, end = 0, 8, len(data)
        while offset + 8 <= end:
            length, kind = struct.unpack_from(">I4s", data, offset)
            if kind == b"IEND":
                break
            if kind != b"IDAT":
                chunks += 1
                if chunks > settings.max_png_chunks:
                    raise errors.ImageTooComplex(
                        f"The PNG has more than {settings.max_png_chunks} chunks besides its image data "
                        "(text or metadata); photos have a few.", limit_chunks=settings.max_png_chunks)
            offset += 12 + length


def decode_image(data: bytes, settings: Settings, detect_side: int = 0) -> DecodedImage:
    """Validate and decode ``data``; raise a typed :class:`errors.AurumError` on rejection.

    With ``detect_side``, a JPEG at least twice that size is decoded at the largest DCT
    reduction that keeps its long side >= ``detect_side`` (what the detector needs): 3-5x
    cheaper for a phone photo. The working size is decoded only if a face turns out too small
    in it (:meth:`DecodedImage.pixels_for`)."""
    img = probe(data, settings)
    fmt = SUPPORTED[img.format]
    width, height = img.size
    orientation = _exif_orientation(img)
    if orientation in (5, 6, 7, 8):
        width, height = height, width

    work = _dct_factor(img, settings.work_max_side)
    quick = max(work, _dct_factor(img, detect_side))
    rgb = _decode(data, img, fmt, orientation, quick)
    working = None
    if quick == work:
        rgb = _limit(rgb, settings.work_max_side)
    else:
        def working() -> np.ndarray:
            full = _decode(data, probe(data, settings), fmt, orientation, work)
            return np.ascontiguousarray(_limit(full, settings.work_max_side))
    return DecodedImage(rgb=np.ascontiguousarray(rgb), width=width, height=height, scale=rgb.shape[1] / width,
                        format=fmt, sha256=hashlib.sha256(data).hexdigest(), _working=working)


def _dct_factor(img: Image.Image, side: int) -> int:
    """The largest JPEG DCT reduction (8, 4, 2 or 1) that keeps the long side >= ``side``."""
    if img.format != "JPEG" or side <= 0:
        return 1
    ratio = max(img.size) // side
    return next((k for k in (8, 4, 2) if k <= ratio), 1)


def _decode(data: bytes, img: Image.Image, fmt: str, orientation: int, factor: int) -> np.ndarray:
    """The oriented RGB pixels, at 1/``factor`` size (JPEG DCT scaling)."""
    rgb = _decode_direct(data, img, factor)
    if rgb is not None:
        return _ORIENT[orientation](rgb)
    return _decode_pillow(img, fmt, orientation, factor)


_DIRECT_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
_REDUCED = {1: 0, 2: 16, 4: 32, 8: 64}  # the IMREAD_REDUCED_* bits, combined with COLOR_RGB
# EXIF orientation -> the array operation Pillow's exif_transpose performs (tested equal).
_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: a.transpose(1, 0, 2)[::-1],
}


def _decode_direct(data: bytes, img: Image.Image, factor: int) -> np.ndarray | None:
    """OpenCV's decode for a complete colour JPEG, else None."""
    if img.format != "JPEG" or img.mode != "RGB" or not data.endswith(b"\xff\xd9"):
        return None
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), _DIRECT_FLAGS | _REDUCED[factor])
    w, h = img.size
    if rgb is None or rgb.shape != (-(-h // factor), -(-w // factor), 3):
        return None  # let Pillow decide, and word, what is wrong with it
    return rgb


def _decode_pillow(img: Image.Image, fmt: str, orientation: int, factor: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if factor > 1:  # DCT scaling: asks for exactly 1/factor (see _dct_factor)
                img.draft("RGB", (max(1, img.size[0] // factor), max(1, img.size[1] // factor)))
            img.load()
            if orientation and orientation != 1:
                img = ImageOps.exif_transpose(img)
            return np.asarray(_to_rgb(img))
    except errors.AurumError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as exc:
        raise errors.CorruptImage(f"The {fmt.upper()} data is damaged or truncated.") from exc


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1  # absurd values: ignore
    except Exception:  # malformed EXIF is not a reason to reject a photo
        return 1


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # composite alpha on white
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float32)
        peak = max(float(array.max()), 1.0)
        grey = (array * (255.0 / (65535.0 if peak > 255 else 255.0))).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, 1, F ...


def _limit(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` shrunk to ``max_side`` on its long side, if it is longer."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    ratio = max_side / max(h, w)
    return shrink(rgb, (max(1, round(w * ratio)), max(1, round(h * ratio))))
