"""The hostile-input corpus: malformed, disguised, oversized and tricky requests, each with the
answer Aurum must give (a stable error code and a 4xx, or a normal result for odd but valid
photos). ``python -m tests.helpers.hostile_corpus OUT_DIR`` writes the image payloads to files too.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / "photos"


@dataclass
class Case:
    name: str
    kind: str                      # multipart | json | raw
    payload: Any                   # bytes (multipart/raw) or a JSON-able object / raw JSON text
    status: int                    # the answer (with ?wait= so that decode-time errors come back at once)
    code: str | None               # the error code, or None for a result
    form: dict[str, str] = field(default_factory=dict)
    filename: str = "photo.jpg"
    content_type: str | None = None
    params: dict[str, str] = field(default_factory=lambda: {"wait": "20"})


def _photo(name: str = "astronaut.png") -> bytes:
    return (PHOTOS / name).read_bytes()


def _rgb() -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / "astronaut.png").convert("RGB"))


def _encode(img: Image.Image | np.ndarray, fmt: str, **params) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _png_header_dims(width: int, height: int) -> bytes:
    data = bytearray(_encode(np.zeros((8, 8, 3), np.uint8), "PNG"))
    i = data.index(b"IHDR")
    data[i + 4:i + 12] = struct.pack(">II", width, height)
    data[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(data[i:i + 17])))
    return bytes(data)


def _jpeg_header_dims(width: int, height: int) -> bytes:
    data = bytearray(_encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _progressive_scans(extra: int) -> bytes:
    """A real progressive JPEG of the portrait with its last scan repeated ``extra`` times: every
    scan is a pass over the coefficients, so a few MB of them cost a decoder minutes."""
    data = _encode(_rgb(), "JPEG", quality=90, progressive=True)
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA] + [len(data) - 2]
    a, b = min(zip(starts, starts[1:]), key=lambda ab: ab[1] - ab[0])  # the shortest scan
    return data[:-2] + data[a:b] * extra + b"\xff\xd9"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_chunk_flood(kind: bytes, count: int) -> bytes:
    """The portrait with ``count`` small ancillary chunks before its image data."""
    data = _photo()
    i = data.index(b"IDAT") - 4
    return data[:i] + _png_chunk(kind, b"k\x00v") * count + data[i:]


def _png_header_bits(width: int, height: int, depth: int, colour: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` at ``depth`` bits, ``colour`` type."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _webp_lossless_dims(width: int, height: int) -> bytes:
    """A lossless WebP of a few bytes whose header declares ``width`` x ``height`` (a 34-byte one
    declaring 6324 x 6324 decoded to 783 MB)."""
    data = bytearray(_encode(np.zeros((16, 16, 3), np.uint8), "WEBP", lossless=True))
    i = data.index(b"VP8L") + 8
    assert data[i] == 0x2F
    bits = int.from_bytes(data[i + 1:i + 5], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    data[i + 1:i + 5] = bits.to_bytes(4, "little")
    return bytes(data)


def _with_exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return _encode(_rgb(), "JPEG", quality=90, exif=exif.tobytes())


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(np.full((64, 64, 3), v, np.uint8)) for v in (0, 128, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _corrupt_body(data: bytes, start: int) -> bytes:
    body = bytearray(data)
    rng = np.random.default_rng(3)
    body[start:] = rng.integers(0, 256, len(body) - start, dtype=np.uint8).tobytes()
    return bytes(body)


def build_corpus(max_request_bytes: int) -> list[Case]:
    b64 = base64.b64encode(_photo()).decode()
    rgb = _rgb()
    webp = _encode(rgb, "WEBP", quality=80)
    png16 = Image.fromarray((np.asarray(Image.open(PHOTOS / "camera.png")).astype(np.uint16) * 257))
    cases = [
        Case("zero bytes", "multipart", b"", 400, "EMPTY_IMAGE"),
        Case("random bytes", "multipart", np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes(),
             415, "UNSUPPORTED_FORMAT"),
        Case("truncated JPEG", "multipart", _encode(rgb, "JPEG")[:3000], 400, "CORRUPT_IMAGE"),
        Case("truncated PNG", "multipart", _photo()[:30000], 400, "CORRUPT_IMAGE"),
        Case("truncated WebP", "multipart", webp[:len(webp) // 3], 400, "CORRUPT_IMAGE"),
        Case("valid JPEG header, random data", "multipart", _corrupt_body(_encode(rgb, "JPEG"), 700), 400,
             "CORRUPT_IMAGE"),
        Case("valid PNG header, random data", "multipart", _corrupt_body(_photo(), 100), 400, "CORRUPT_IMAGE"),
        Case("PNG decompression bomb (100000^2)", "multipart", _png_header_dims(100_000, 100_000), 413,
             "IMAGE_TOO_LARGE"),
        Case("JPEG decompression bomb (65000^2)", "multipart", _jpeg_header_dims(65_000, 65_000), 413,
             "IMAGE_TOO_LARGE"),
        Case("20000 x 20000 declared", "multipart", _png_header_dims(20_000, 20_000), 413, "IMAGE_TOO_LARGE"),
        Case("1 x 1 image", "multipart", _encode(rgb[:1, :1], "PNG"), 400, "IMAGE_TOO_SMALL"),
        Case("progressive JPEG, 1500 repeated scans", "multipart", _progressive_scans(1500), 413, "IMAGE_TOO_COMPLEX"),
        Case("progressive JPEG (valid)", "multipart", _encode(rgb, "JPEG", quality=90, progressive=True), 200, None),
        Case("PNG with 60000 tEXt chunks", "multipart", _png_chunk_flood(b"tEXt", 60_000), 413, "IMAGE_TOO_COMPLEX"),
        Case("PNG with 60000 private chunks", "multipart", _png_chunk_flood(b"prVt", 60_000), 413,
             "IMAGE_TOO_COMPLEX"),
        Case("16-bit grey PNG declaring 40 MP", "multipart", _png_header_bits(6400, 6250, 16, 0), 413,
             "IMAGE_TOO_COMPLEX"),
        Case("lossless WebP declaring 6324 x 6324", "multipart", _webp_lossless_dims(6324, 6324), 413,
             "IMAGE_TOO_COMPLEX"),
        Case("CMYK JPEG (valid)", "multipart", _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"), 200, None),
        Case("16-bit PNG, no face", "multipart", _encode(png16.crop((0, 0, 96, 96)), "PNG"), 422, "NO_FACE"),
        Case("16-bit PNG (valid)", "multipart", _encode(png16, "PNG"), 200, None),
        Case("animated GIF", "multipart", _animated("GIF"), 415, "UNSUPPORTED_FORMAT"),
        Case("animated WebP", "multipart", _animated("WEBP"), 415, "UNSUPPORTED_FORMAT"),
        Case("SVG disguised as JPEG", "multipart", b'<svg xmlns="http://www.w3.org/2000/svg" width="9000" '
             b'height="9000"><script>alert(1)</script></svg>', 415, "UNSUPPORTED_FORMAT"),
        Case("HTML disguised as JPEG", "multipart", b"<!DOCTYPE html><html><body>hi</body></html>", 415,
             "UNSUPPORTED_FORMAT"),
        Case("PDF disguised as JPEG", "multipart", b"%PDF-1.7\n1 0 obj <<>> endobj\n%%EOF", 415, "UNSUPPORTED_FORMAT"),
        Case("BMP", "multipart", _encode(rgb, "BMP"), 415, "UNSUPPORTED_FORMAT"),
        Case("TIFF", "multipart", _encode(rgb, "TIFF"), 415, "UNSUPPORTED_FORMAT"),
        Case("HEIC signature", "multipart", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 100, 415, "UNSUPPORTED_FORMAT"),
        Case("EXIF orientation 0 (absurd)", "multipart", _with_exif_orientation(0), 200, None),
        Case("EXIF orientation 65535 (absurd)", "multipart", _with_exif_orientation(65535), 200, None),
        Case("no face (cat)", "multipart", _photo("chelsea.png"), 422, "NO_FACE"),
        Case("base64 garbage", "json", {"image_base64": "@@@###!!!"}, 400, "INVALID_BASE64"),
        Case("base64 padding error", "json", {"image_base64": b64[:-3]}, 400, "INVALID_BASE64"),
        Case("base64 data URL (valid)", "json", {"image_base64": "data:image/png;base64," + b64}, 200, None),
        Case("data URL of garbage", "json", {"image_base64": "data:image/png;base64,%%%%"}, 400, "INVALID_BASE64"),
        Case("base64 of a text file", "json", {"image_base64": base64.b64encode(b"hello" * 50).decode()}, 415,
             "UNSUPPORTED_FORMAT"),
        Case("JSON: image_base64 a number", "json", {"image_base64": 12345}, 400, "INVALID_BASE64"),
        Case("JSON: image_base64 a list", "json", {"image_base64": ["a", "b"]}, 400, "INVALID_BASE64"),
        Case("JSON: option of wrong type", "json", {"image_base64": b64, "max_faces": "many"}, 400, "INVALID_OPTION"),
        Case("JSON: option null", "json", {"image_base64": b64, "max_faces": None}, 200, None),
        Case("JSON: a list body", "json", [1, 2, 3], 400, "INVALID_INPUT"),
        Case("JSON: malformed", "raw", b'{"image_base64": "abc', 400, "INVALID_INPUT",
             content_type="application/json"),
        Case("JSON: huge", "raw", b'{"image_base64": "' + b"A" * (max_request_bytes + 10) + b'"}', 413,
             "REQUEST_TOO_LARGE", content_type="application/json"),
        Case("multipart without the file", "multipart", None, 400, "MISSING_IMAGE"),
        Case("multipart with two files", "multipart", _photo(), 400, "TOO_MANY_IMAGES", form={"__second__": "1"}),
        Case("wrong content type", "raw", _photo(), 415, "UNSUPPORTED_MEDIA_TYPE", content_type="image/png"),
        Case("oversized body", "multipart", b"\xff\xd8\xff" + bytes(max_request_bytes + 1000), 413,
             "REQUEST_TOO_LARGE"),
        Case("unicode filename", "multipart", _photo(), 200, None, filename="фото-照片-📷.png"),
        Case("very long filename", "multipart", _photo(), 200, None, filename="a" * 10_000 + ".png"),
        Case("path traversal filename", "multipart", _photo(), 200, None, filename="../../../../etc/passwd"),
        Case("option out of range: detection_threshold", "multipart", _photo(), 400, "INVALID_OPTION",
             form={"detection_threshold": "5"}),
        Case("option out of range: max_faces", "multipart", _photo(), 400, "INVALID_OPTION", form={"max_faces": "-3"}),
        Case("option: boolean nonsense", "multipart", _photo(), 400, "INVALID_OPTION",
             form={"return_embedding": "maybe"}),
        Case("wait out of range", "multipart", _photo(), 400, "INVALID_OPTION", params={"wait": "999"}),
        Case("wait not a number", "multipart", _photo(), 400, "INVALID_OPTION", params={"wait": "soon"}),
    ]
    return cases


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "hostile-corpus")
    out.mkdir(parents=True, exist_ok=True)
    cases = build_corpus(64 * 1024 * 1024)
    for i, case in enumerate(cases):
        if isinstance(case.payload, (bytes, bytearray)) and len(case.payload) < 10_000_000:
            (out / f"{i:02d}.bin").write_bytes(case.payload)
        elif case.payload is not None and not isinstance(case.payload, (bytes, bytearray)):
            (out / f"{i:02d}.json").write_text(json.dumps(case.payload))
    (out / "index.json").write_text(json.dumps([{"file": i, "name": c.name, "status": c.status, "code": c.code}
                                                for i, c in enumerate(cases)], indent=1))
    print(f"{len(cases)} cases written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
