"""Classifier: load a checkpoint once; predict, predict_batch and explain. Knows nothing of Gradio.

Everything it needs is read from the checkpoint folder (or Hub repo): labels, processor,
calibration temperature, abstain threshold and the out-of-scope class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .calibration import in_scope_scores, real_indices
from .hardware import bf16_supported
from .images import ImageSource
from .transforms import image_size, open_images, pixel_values, visible_box

@dataclass
class Prediction:
    label: str  # the closest real class, even when abstaining
    confidences: dict[str, float]  # calibrated, per real class; an out-of-scope class keeps the rest of 1
    abstained: bool  # True: the photo looks like none of the classes
    score: float  # in-scope score compared with the abstain threshold

    def to_dict(self) -> dict:
        return {"label": self.label, "confidences": self.confidences, "abstained": self.abstained}


class Classifier:
    def __init__(self, model, image_processor, *, dtype: torch.dtype | None = None):
        self.image_processor = image_processor
        self.dtype = dtype or (torch.bfloat16 if bf16_supported() else torch.float32)
        # Weights cast once instead of autocast on every call (faster per forward on AMX in our profiling).
        self.model = model.eval().to(self.dtype)
        cfg = model.config
        self.all_labels = [cfg.id2label[i] for i in range(cfg.num_labels)]
        self.out_of_scope_label = getattr(cfg, "out_of_scope_label", None)
        self.labels = [n for n in self.all_labels if n != self.out_of_scope_label]
        self.temperature = float(getattr(cfg, "calibration_temperature", 1.0))
        self.threshold = float(getattr(cfg, "abstain_threshold", 0.0))

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kw) -> "Classifier":
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        # safetensors only, and never code from the checkpoint: a Space loads whatever MODEL_ID names.
        model = AutoModelForImageClassification.from_pretrained(name_or_path, use_safetensors=True,
                                                                trust_remote_code=False)
        processor = AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=False)
        return cls(model, processor, **kw)

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return pixel_values(images, self.image_processor).to(self.dtype)

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.model(pixel_values=self.pixel_values(images)).logits.float()

    def _predictions(self, logits: torch.Tensor) -> list[Prediction]:
        probs, scores = in_scope_scores(logits, self.all_labels, self.temperature, self.out_of_scope_label)
        out = []
        for p, s in zip(probs, scores):
            conf = {n: float(v) for n, v in zip(self.labels, p)}
            out.append(Prediction(label=max(conf, key=conf.get), confidences=conf,
                                  abstained=bool(s < self.threshold), score=float(s)))
        return out

    def predict_images(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return self._predictions(self.logits(images)) if images else []

    def predict(self, source: ImageSource) -> Prediction:
        return self.predict_batch([source])[0]

    def predict_batch(self, sources: Sequence[ImageSource]) -> list[Prediction]:
        return self.predict_images(open_images(sources, self.image_processor))

    def warm_up(self) -> None:
        """One forward at start-up, so the first user does not pay for kernel selection."""
        h, w = image_size(self.image_processor)
        self.predict_images([Image.new("RGB", (w, h), (128, 128, 128))])

    def explain(self, source: ImageSource) -> tuple[Image.Image, Prediction, np.ndarray]:
        """Overlay of the patches that pushed the predicted class up, the prediction, and the raw map."""
        from .explain import relevance_map, overlay

        image = open_images([source], self.image_processor)[0]
        heat, logits = relevance_map(self.model, self.pixel_values([image]),
                                     real_indices(self.all_labels, self.out_of_scope_label))
        pred = self._predictions(logits)[0]
        return overlay(image, heat, box=visible_box(self.image_processor, *image.size)), pred, heat
