"""The simplest server a user could write over the same pipeline, as a peer for bench/peers.py:
Flask under gunicorn's sync workers, each loading the models once and calling ``Pipeline.score``
in the request. No queue, no job record, no cache, no limits, no encryption: what Aurum's job
service costs is measured against this.

    gunicorn --chdir bench 'peer_direct:create_app()' --workers 2 --worker-class sync
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask, jsonify, request  # noqa: E402

from aurum import errors  # noqa: E402
from aurum.config import Settings  # noqa: E402
from aurum.pipeline import Pipeline  # noqa: E402
from aurum.schemas import ScoreOptions  # noqa: E402


def create_app() -> Flask:
    app = Flask(__name__)
    pipeline = Pipeline(Settings.from_env(ort_threads=1))  # one thread per process, as Aurum's workers
    pipeline.load(embedding=False)

    @app.post("/api/ml/score")
    def score():
        upload = request.files.get("image")
        if upload is None:
            return jsonify(error={"code": "NO_IMAGE", "message": "Send the photo as 'image'."}), 400
        try:
            return jsonify(status="succeeded", result=pipeline.score(upload.read(), ScoreOptions()))
        except errors.AurumError as exc:
            return jsonify(exc.to_dict()), 422

    return app
