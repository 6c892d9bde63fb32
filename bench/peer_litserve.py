"""LitServe over the same pipeline, a peer for bench/peers.py (``pip install litserve``; it is
not one of Aurum's dependencies): two inference workers on the CPU, each loading the models once
in ``setup`` and calling ``Pipeline.score`` per request; the photo arrives as multipart, as it
does for Aurum and the direct peer.

    python3 bench/peer_litserve.py PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import litserve as ls  # noqa: E402


class ScoreAPI(ls.LitAPI):
    def setup(self, device):
        from aurum.config import Settings
        from aurum.pipeline import Pipeline

        self.pipeline = Pipeline(Settings.from_env(ort_threads=1))
        self.pipeline.load(embedding=False)

    def decode_request(self, request):
        upload = request["image"]
        return upload.file.read() if hasattr(upload, "file") else upload

    def predict(self, data):
        from aurum import errors
        from aurum.schemas import ScoreOptions

        try:
            return {"status": "succeeded", "result": self.pipeline.score(data, ScoreOptions())}
        except errors.AurumError as exc:
            return exc.to_dict()

    def encode_response(self, output):
        return output


if __name__ == "__main__":
    server = ls.LitServer(ScoreAPI(api_path="/api/ml/score"), accelerator="cpu", workers_per_device=2,
                          timeout=60)
    server.run(port=int(sys.argv[1]), host="127.0.0.1", generate_client_file=False)
