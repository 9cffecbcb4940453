"""The app's API endpoints, as plain functions over a Classifier: /predict, /predict_batch and /explain.

Gradio names MCP tools after these functions and documents them from their docstrings, so each says what it takes
and returns. Every failure reaches the caller as one human sentence (gr.Error), never a traceback. Each request
is priced from the images' headers before anything is decoded (:func:`parkclf.images.check_budget`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from ..classifier import Classifier
from ..images import MAX_PIXELS, ImageError, check_budget
from ..processing import draft_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_batch: int = 16  # images per /predict_batch call
    max_pixels: int = MAX_PIXELS  # one image, from its header
    # pixels one request may decode (a JPEG's DCT scaling skips most of a big photo; a PNG decodes in full):
    # two 100 MP PNGs, or hundreds of phone photos
    request_pixels: int = 200_000_000


def refuse(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


def guarded(endpoint: str, call):
    """Run an endpoint; any failure reaches the user as one human sentence, never a traceback."""
    try:
        return call()
    except gr.Error:
        raise
    except ImageError as e:
        logger.info("%s refused an input: %s", endpoint, e)
        raise refuse(str(e)) from None
    except Exception as e:
        logger.warning("%s failed on an input: %s: %s", endpoint, type(e).__name__, e)
        raise refuse("The image could not be processed.") from None


def file_path(file) -> str:
    """The server path of an upload, whether Gradio hands over a path, a FileData or its dict."""
    if file is None:
        raise refuse("No image received; please upload a photo.")
    path = file if isinstance(file, str) else getattr(file, "path", None) or (file.get("path") if isinstance(file, dict)
                                                                               else None)
    if not path:
        raise refuse("No image received; please upload a photo.")
    return path


class Endpoints:
    """The three API functions, bound to one classifier and its limits."""

    def __init__(self, classifier: Classifier, limits: Limits | None = None):
        self.classifier, self.limits = classifier, limits or Limits()
        self.draft_size = draft_size(classifier.preprocessor)
        self.predict, self.predict_batch, self.explain = self._predict(), self._predict_batch(), self._explain()

    def check(self, paths: list[str]) -> None:
        check_budget(paths, draft_size=self.draft_size, budget=self.limits.request_pixels,
                     max_pixels=self.limits.max_pixels)

    def classify(self, path: str):
        """One photo through the budget and the classifier: a Prediction."""
        self.check([path])
        return self.classifier.predict(path)

    def _classes(self) -> str:
        return ", ".join(self.classifier.labels)

    def _predict(self):
        def predict(image: str) -> dict:
            return guarded("predict", lambda: self.classify(file_path(image)).to_dict())

        predict.__doc__ = f"""Classify one photo as one of the model's classes ({self._classes()}),
        or say it shows none.

        Args:
            image: the photo to classify (JPEG, PNG, WebP, HEIC, GIF...), as an uploaded file or a URL.
        Returns:
            prediction: {{"label": closest class, "confidences": calibrated per class, "abstained": true if none fits}}
        """
        return predict

    def _predict_batch(self):
        def predict_batch(images: list[str]) -> list[dict]:
            def run():
                paths = [file_path(f) for f in images or []]
                if len(paths) > self.limits.max_batch:
                    raise refuse(f"At most {self.limits.max_batch} images per call; got {len(paths)}.")
                self.check(paths)
                return [p.to_dict() for p in self.classifier.predict_batch(paths)]

            return guarded("predict_batch", run)

        predict_batch.__doc__ = f"""Classify up to {self.limits.max_batch} photos in one call
        (one batched forward pass).

        Args:
            images: the photos to classify, as uploaded files.
        Returns:
            predictions: one dict per photo, in order: "label", "confidences" and "abstained" as /predict returns them.
        """
        return predict_batch

    def _explain(self):
        def explain(image: str):
            def run():
                path = file_path(image)
                self.check([path])
                overlay, pred, _ = self.classifier.explain(path)
                return overlay, pred.to_dict()

            return guarded("explain", run)

        explain.__doc__ = """Classify one photo and show which pixels decided:
        the photo with a heat map of the evidence for the answer.

        Args:
            image: the photo to classify and explain, as an uploaded file or a URL.
        Returns:
            overlay: a PNG of the photo with the relevance map on top (the part the model never sees is darkened).
            prediction: the same dict as /predict returns.
        """
        return explain
