"""No photo bytes or embeddings at rest: not in Redis's AOF/RDB files, not in logs, not on disk.

The same run with encryption off shows the check can fail: then the photo's bytes are in the AOF.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.stack import Stack
from tests.helpers.photos import unique_photo


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("encryption", ["on", "off"])
def test_photo_and_embedding_never_at_rest_in_clear(tmp_path, encryption: str) -> None:
    env = {} if encryption == "on" else {"AURUM_ENCRYPTION_KEYS": "off"}
    with Stack(tmp_path, appendonly=True, extra_env=env) as stack:
        photo = unique_photo(900 if encryption == "on" else 901)
        response = stack.http.post(stack.base + "/api/ml/score", files={"image": ("p", photo)},
                                   data={"return_embedding": "true"}, params={"wait": 20}, timeout=30)
        assert response.status_code == 200
        embedding = response.json()["result"]["faces"][0]["embedding"]
        batch = stack.http.post(stack.base + "/api/ml/score/batch", files=[("images", ("q", photo))],
                                params={"wait": 20}, timeout=30)
        assert batch.status_code == 200
        subprocess.run(["redis-cli", "-p", str(stack.redis.port), "SAVE"], capture_output=True, check=True)
        time.sleep(1.5)  # appendfsync everysec
    needles = {
        "photo bytes": photo[4000:4048],
        "photo base64": base64.b64encode(photo[3000:3060]).decode().encode()[8:72],
        "embedding": json.dumps(embedding[:2])[1:-1].encode(),
        "embedding value": repr(embedding[5]).encode()[:10],
    }
    found = {name: [str(p.relative_to(tmp_path)) for p in files_under(tmp_path) if needle in p.read_bytes()]
             for name, needle in needles.items()}
    persistence = [p for p in files_under(tmp_path) if p.suffix in (".aof", ".rdb")]
    assert persistence, "Redis wrote no AOF/RDB file: the check would prove nothing"
    if encryption == "on":
        assert found == {name: [] for name in needles}, found
    else:  # the control: without sealing, Redis persists the photo (and the embedding)
        assert found["photo bytes"] and found["embedding"]
        assert not any("log" in f for f in found["photo bytes"] + found["embedding"])  # logs stay clean anyway


def test_keygen_makes_a_usable_key() -> None:
    from service.sealing import parse_keys

    out = subprocess.run([sys.executable, "-m", "aurum", "keygen", "--id", "k7"], capture_output=True, text=True,
                         check=True)
    sealer = parse_keys(out.stdout.strip())
    blob = sealer.seal(b"pixels", b"ctx")
    assert b"pixels" not in blob and sealer.unseal(blob, b"ctx") == b"pixels"


def test_sealing_rotation_tampering_and_context() -> None:
    from service.sealing import SealingError, new_key, parse_keys

    old, new = new_key("old"), new_key("new")
    sealed_by_old = parse_keys(old).seal(b"photo", b"aurum:image:1")
    rotated = parse_keys(f"{new},{old}")  # the new key seals, the old one still opens
    assert rotated.unseal(sealed_by_old, b"aurum:image:1") == b"photo"
    assert rotated.seal(b"photo", b"k").split(b"\x03", 1)[0].endswith(b"AUR\x01")  # key id length 3: "new"
    with pytest.raises(SealingError):
        parse_keys(new).unseal(sealed_by_old, b"aurum:image:1")  # old key removed too early
    with pytest.raises(SealingError):
        rotated.unseal(sealed_by_old, b"aurum:image:2")  # moved to another Redis key
    tampered = bytearray(sealed_by_old)
    tampered[-1] ^= 1
    with pytest.raises(SealingError):
        rotated.unseal(bytes(tampered), b"aurum:image:1")
    with pytest.raises(SealingError):
        rotated.unseal(b"plain bytes", b"aurum:image:1")  # encryption on: plaintext is refused
    assert parse_keys("off").unseal(b"plain", b"") == b"plain"
