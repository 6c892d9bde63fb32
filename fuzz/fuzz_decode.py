"""atheris fuzzer for the image decoder: any byte string must decode or raise a typed
AurumError, never crash, hang or raise anything else.

    python3 fuzz/fuzz_decode.py -max_total_time=600 fuzz/corpus   # the long run (RELIABILITY.md)
    python3 fuzz/fuzz_decode.py -runs=3000 fuzz/corpus            # the short run CI does
"""

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from aurum import errors
    from aurum.config import Settings
    from aurum.image import decode_image

SETTINGS = Settings.from_env(max_image_pixels=4_000_000)  # keep each input cheap for the fuzzer


def test_one_input(data: bytes) -> None:
    try:
        decode_image(data, SETTINGS)
    except errors.AurumError:
        pass


def seed_corpus(folder: Path) -> None:
    """Real photos as seeds: the fuzzer mutates valid JPEG/PNG/WebP structures."""
    import io

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(Path(__file__).resolve().parent.parent / "tests/photos/astronaut.png").convert("RGB")
    small = photo.resize((48, 48))
    for fmt in ("JPEG", "PNG", "WEBP"):
        buf = io.BytesIO()
        small.save(buf, fmt)
        (folder / f"seed.{fmt.lower()}").write_bytes(buf.getvalue())


if __name__ == "__main__":
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus:
        seed_corpus(Path(corpus[0]))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
