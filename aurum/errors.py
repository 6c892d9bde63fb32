"""The error taxonomy: every failure Aurum reports has a stable ``code``.

Categories (``kind``) let the API map errors to HTTP statuses in one place and let the
workers decide what to retry, without either of them knowing every code.
"""

from __future__ import annotations

from typing import Any


class AurumError(Exception):
    """Base class. ``code`` is stable and machine-readable; ``message`` is for humans."""

    code = "INTERNAL_ERROR"
    kind = "internal"  # input | too_large | unsupported | unprocessable | unavailable | internal
    retryable = False
    default_message = "Internal error."

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


# --- the request or the image is wrong: the client must change something -------------------
class InvalidInput(AurumError):
    code = "INVALID_INPUT"
    kind = "input"
    default_message = "The request is not valid."


class InvalidOption(InvalidInput):
    code = "INVALID_OPTION"
    default_message = "An option is out of range or of the wrong type."


class EmptyImage(InvalidInput):
    code = "EMPTY_IMAGE"
    default_message = "The image is empty (0 bytes)."


class CorruptImage(InvalidInput):
    code = "CORRUPT_IMAGE"
    default_message = "The image could not be decoded; the file is damaged or truncated."


class ImageTooSmall(InvalidInput):
    code = "IMAGE_TOO_SMALL"
    default_message = "The image is too small to contain a usable face."


class ImageTooLarge(AurumError):
    code = "IMAGE_TOO_LARGE"
    kind = "too_large"
    default_message = "The image exceeds the size limit."


class ImageTooComplex(ImageTooLarge):
    """Small in bytes and pixels, but built to cost a decoder far more than a photo does: thousands
    of progressive scans, a flood of PNG chunks, or more pixels than a full decode may allocate."""

    code = "IMAGE_TOO_COMPLEX"
    default_message = "The image would cost too much to decode."


class UnsupportedFormat(AurumError):
    code = "UNSUPPORTED_FORMAT"
    kind = "unsupported"
    default_message = "Unsupported image format; send JPEG, PNG or WebP."


# --- the image is valid but there is nothing to score ---------------------------------------
class NoFace(AurumError):
    code = "NO_FACE"
    kind = "unprocessable"
    default_message = "No face was found in the image."


class QualityGateFailed(AurumError):
    code = "QUALITY_FAILED"
    kind = "unprocessable"
    default_message = "The face does not meet the quality requirements."


# --- our side: models or inference ----------------------------------------------------------
class ModelUnavailable(AurumError):
    code = "MODEL_UNAVAILABLE"
    kind = "unavailable"
    default_message = "A model could not be loaded."


class ModelIntegrityError(ModelUnavailable):
    code = "MODEL_CHECKSUM_MISMATCH"
    default_message = "A model file does not match the checksum in the manifest."


class InferenceFailed(AurumError):
    code = "INFERENCE_FAILED"
    kind = "internal"
    retryable = True
    default_message = "Inference failed."


ALL_ERRORS: tuple[type[AurumError], ...] = (
    AurumError, InvalidInput, InvalidOption, EmptyImage, CorruptImage, ImageTooSmall,
    ImageTooLarge, UnsupportedFormat, NoFace, QualityGateFailed, ModelUnavailable,
    ModelIntegrityError, InferenceFailed,
)
