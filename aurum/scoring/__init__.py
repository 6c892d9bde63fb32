"""Scoring: transparent features of a face, and ONNX scorers that turn them into 0-100."""
