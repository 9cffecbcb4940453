"""Classifier: load a checkpoint once; predict, predict_batch and explain. Knows nothing of Gradio.

Everything it needs is read from the checkpoint folder (or Hub repo): labels, processor, calibration temperature,
abstain threshold, the out-of-scope class and the ONNX graphs. The engine (:mod:`parkclf.engine`) runs the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .calibration import in_scope_scores, real_indices
from .engine import Engine, TorchEngine, load_engine
from .errors import UsageError
from .images import ImageSource
from .processing import Preprocessor, image_size, open_images, visible_box

# The model that ships with the project: what the app, `parkclf predict` and `parkclf teach` use when given none.
EMBEDDED_MODEL = Path(__file__).resolve().parents[2] / "models" / "parks-vit-small"


@dataclass
class Prediction:
    label: str  # the closest real class, even when abstaining
    confidences: dict[str, float]  # calibrated, per real class; an out-of-scope class keeps the rest of 1
    abstained: bool  # True: the photo looks like none of the classes
    score: float  # in-scope score compared with the abstain threshold

    def to_dict(self) -> dict:
        return {"label": self.label, "confidences": self.confidences, "abstained": self.abstained}


def warm_up_photo(preprocessor: Preprocessor) -> Image.Image:
    """A plain grey photo of the model's input size: what warms the engine up and times it (engine "auto")."""
    h, w = image_size(preprocessor)
    return Image.new("RGB", (w, h), (128, 128, 128))


class Classifier:
    def __init__(self, engine: Engine, preprocessor: Preprocessor, config: dict, folder: Path | None = None):
        self.engine = engine
        self.folder = folder  # the checkpoint on disk (a Hub id's cached snapshot), when loaded from one
        self.preprocessor = preprocessor
        # transformers leaves id2label out of config.json when it is its default (LABEL_0, LABEL_1)
        default = {i: f"LABEL_{i}" for i in range(config.get("num_labels", 2))}
        id2label = {int(k): v for k, v in config["id2label"].items()} if config.get("id2label") else default
        self.all_labels = [id2label[i] for i in range(len(id2label))]
        self.out_of_scope_label = config.get("out_of_scope_label")
        self.labels = [n for n in self.all_labels if n != self.out_of_scope_label]
        self.real_ids = real_indices(self.all_labels, self.out_of_scope_label)
        self.temperature = float(config.get("calibration_temperature") or 1.0)
        self.threshold = float(config.get("abstain_threshold") or 0.0)
        self.title = config.get("title")

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, engine: str = "auto") -> Classifier:
        """A local checkpoint folder or a Hub model id; ``engine`` as :func:`parkclf.engine.load_engine` takes it
        ("auto" times the engines that can run the export on a grey photo and keeps the faster)."""
        folder = resolve(name_or_path)
        config = json.loads((folder / "config.json").read_text())
        preprocessor = Preprocessor.from_pretrained(folder)
        return cls(load_engine(folder, engine=engine, patch_size=config.get("patch_size", 16),
                               probe=preprocessor([warm_up_photo(preprocessor)])), preprocessor, config, folder)

    @classmethod
    def over(cls, base: Classifier, name_or_path: str) -> Classifier:
        """A checkpoint taught from ``base`` (``parkclf teach``: the same backbone, a new classifier), served on
        ``base``'s engine: its features through this checkpoint's classifier, in NumPy. Answers as
        ``from_pretrained`` would, up to float rounding, without compiling and holding a second backbone."""
        from .checkpoint import read_head
        from .engine import HeadEngine

        folder = resolve(name_or_path)
        config = json.loads((folder / "config.json").read_text())
        weight, bias = read_head(folder, len(config["id2label"]))
        engine = HeadEngine(base.engine, weight, bias, folder, patch_size=config.get("patch_size", 16))
        return cls(engine, Preprocessor.from_pretrained(folder), config, folder)

    @classmethod
    def from_model(cls, model, preprocessor: Preprocessor, **kw) -> Classifier:
        """Over a transformers model in memory (tests, training): its config carries labels and calibration."""
        return cls(TorchEngine(model, **kw), preprocessor, model.config.to_dict())

    def pixel_values(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.preprocessor(images)

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.engine.logits(self.pixel_values(images))

    def predictions(self, logits: np.ndarray) -> list[Prediction]:
        probs, scores = in_scope_scores(logits, self.all_labels, self.temperature, self.out_of_scope_label)
        out = []
        for p, s in zip(probs, scores, strict=True):
            conf = {n: float(v) for n, v in zip(self.labels, p, strict=True)}
            out.append(Prediction(label=max(conf, key=conf.get), confidences=conf,
                                  abstained=bool(s < self.threshold), score=float(s)))
        return out

    def predict_pixels(self, pixel_values: np.ndarray) -> list[Prediction]:
        """Predictions for pixel_values already made by :attr:`preprocessor` (e.g. in decoding threads)."""
        return self.predictions(self.engine.logits(pixel_values)) if len(pixel_values) else []

    def predict_images(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return self.predict_pixels(self.pixel_values(images)) if images else []

    def predict(self, source: ImageSource) -> Prediction:
        return self.predict_batch([source])[0]

    def predict_batch(self, sources: Sequence[ImageSource]) -> list[Prediction]:
        return self.predict_images(open_images(sources, self.preprocessor))

    def warm_up(self) -> None:
        """One forward at start-up, so the first user does not pay for kernel selection."""
        self.predict_images([warm_up_photo(self.preprocessor)])

    def explain(self, source: ImageSource) -> tuple[Image.Image, Prediction, np.ndarray]:
        """Overlay of the patches that pushed the predicted class up, the prediction, and the raw map."""
        from .explain import overlay

        image = open_images([source], self.preprocessor)[0]
        heat, logits = self.engine.relevance(self.pixel_values([image]), self.real_ids)
        pred = self.predictions(logits)[0]
        return overlay(image, heat, box=visible_box(self.preprocessor, *image.size)), pred, heat


# What serving reads from a Hub repo: never the training leftovers, and the weights only without an ONNX export. The
# background bank (75 KB) is what teaching from that model fits "none of these" against.
HUB_PATTERNS_ONNX = ["*.json", "README.md", "teach_background.npz", "onnx/model_quantized.onnx",
                     "onnx/explain_quantized.onnx"]
HUB_PATTERNS_FP32 = ["*.json", "README.md", "teach_background.npz", "onnx/model.onnx", "onnx/explain.onnx"]
HUB_PATTERNS_TORCH = ["*.json", "README.md", "model.safetensors"]


def resolve(name_or_path: str) -> Path:
    """A local folder as it is; a Hub model id downloaded (or read from the cache) through huggingface_hub."""
    if Path(name_or_path).is_dir():
        folder = Path(name_or_path)
        if not (folder / "config.json").exists():
            raise UsageError(f"{folder} has no config.json; give a folder written by save_pretrained (train.py's "
                             "--output-dir) or a Hub model id.")
        return folder
    from huggingface_hub import list_repo_files, snapshot_download

    from .hub_timeouts import bound

    bound()  # a Hub that never answers fails the start with a sentence, instead of hanging it
    try:
        try:
            files = set(list_repo_files(name_or_path))
        except Exception:  # offline or unreachable: whatever the cache holds
            files = set()
        if "onnx/model_quantized.onnx" in files and "onnx/explain_quantized.onnx" not in files:
            # the explanation graph kept in floating point, where its int8 twin did not pass the export's check
            patterns = [*HUB_PATTERNS_ONNX, "onnx/explain.onnx"]
        elif "onnx/model_quantized.onnx" in files:
            patterns = HUB_PATTERNS_ONNX
        else:
            patterns = (HUB_PATTERNS_FP32 if "onnx/model.onnx" in files else
                        HUB_PATTERNS_TORCH if files else HUB_PATTERNS_ONNX + HUB_PATTERNS_FP32 + HUB_PATTERNS_TORCH)
        return Path(snapshot_download(name_or_path, allow_patterns=patterns))
    except Exception as e:
        raise UsageError(hub_message(name_or_path, e)) from None


def hub_message(model_id: str, error: Exception, fix: str = "Pass a local folder instead") -> str:
    reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return (f"Could not load '{model_id}': it is not a local folder, and the Hugging Face Hub did not give it "
            f"({reason}). {fix}, or set HF_HUB_OFFLINE=1 with the model already in the cache.")


def load(model: str, engine: str = "auto") -> Classifier:
    """A checkpoint (folder or Hub id) as a server wants it: loaded, and warmed up on a first photo so that the first
    visitor does not wait for the graphs to compile."""
    import logging
    import time

    t = time.perf_counter()
    classifier = Classifier.from_pretrained(model, engine=engine)
    classifier.warm_up()
    logging.getLogger(__name__).info("model %s loaded on %s and warmed up in %.1fs", model, classifier.engine.name,
                                     time.perf_counter() - t)
    return classifier
