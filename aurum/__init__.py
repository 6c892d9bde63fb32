"""Aurum: face detection, landmarks, quality and scoring on ONNX Runtime.

The core package: no Flask, no Celery. ``aurum.pipeline.Pipeline`` is the entry point.
"""

__version__ = "0.1.0"
