"""Property tests (hypothesis): the decoder and the request parsing never fail in an untyped way."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aurum import errors
from aurum.config import Settings
from aurum.image import decode_image
from aurum.schemas import ScoreOptions, load_options

from tests.helpers.photos import photo_bytes

SETTINGS = Settings.from_env(max_image_pixels=4_000_000)
SEEDS = []
for fmt in ("JPEG", "PNG", "WEBP"):
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo_bytes("astronaut.png"))).convert("RGB").resize((64, 64)).save(buf, fmt)
    SEEDS.append(buf.getvalue())


def decodes_or_typed_error(data: bytes) -> None:
    try:
        image = decode_image(data, SETTINGS)
    except errors.AurumError as exc:
        assert exc.code and exc.message and exc.kind in {"input", "too_large", "unsupported"}
    else:
        assert image.rgb.ndim == 3 and image.rgb.shape[2] == 3 and image.rgb.dtype == np.uint8
        assert image.width * image.height <= SETTINGS.max_image_pixels


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_any_bytes(data: bytes) -> None:
    decodes_or_typed_error(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12),
       st.integers(0, 10_000))
def test_mutated_real_images(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    decodes_or_typed_error(bytes(data[: max(1, len(data) - cut)]))


MODES = {"JPEG": ["RGB", "L", "CMYK"], "PNG": ["RGB", "L", "RGBA", "P", "I;16"], "WEBP": ["RGB", "RGBA"]}


@settings(max_examples=40, deadline=None)
@given(st.integers(32, 200), st.integers(32, 200), st.sampled_from(sorted(MODES)), st.integers(0, 4))
def test_valid_images_decode_to_their_size(width: int, height: int, fmt: str, pick: int) -> None:
    mode = MODES[fmt][pick % len(MODES[fmt])]
    img = Image.new(mode, (width, height))
    buf = io.BytesIO()
    img.save(buf, fmt)
    decoded = decode_image(buf.getvalue(), SETTINGS)
    assert (decoded.width, decoded.height) == (width, height) and decoded.rgb.shape == (height, width, 3)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                       max_leaves=8)
OPTION_NAMES = st.sampled_from(["max_faces", "min_face_size", "detection_threshold", "return_landmarks",
                                "return_embedding", "quality_gate", "unknown"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(OPTION_NAMES, JSONISH, max_size=6))
def test_options_load_or_fail_with_invalid_option(raw: dict) -> None:
    try:
        options = load_options(raw)
    except errors.InvalidOption as exc:
        assert exc.code == "INVALID_OPTION" and exc.details["fields"]
    else:
        assert isinstance(options, ScoreOptions)
        assert options.max_faces is None or 1 <= options.max_faces <= 100


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), JSONISH))
def test_base64_field_decodes_or_fails_with_its_code(value) -> None:
    from api.uploads import InvalidBase64, decode_base64

    try:
        assert isinstance(decode_base64(value, "image_base64"), bytes)
    except InvalidBase64 as exc:
        assert exc.code == "INVALID_BASE64"
