"""``parkclf teach``: a new classifier from a few photos per class, in seconds, with no torch.

    parkclf teach photos/ --output-dir out/my-classes            # photos/<class>/*.jpg, the embedded model's backbone
    parkclf teach photos/ --output-dir out/birds --base out/my-model     # any checkpoint with onnx/

Teaching is serving plus one small fit. The base checkpoint's serving engine computes each photo's class token (the
classifier's input); a multinomial logistic regression on those features becomes the new classifier, with its
regularisation chosen by k-fold cross-validation, and the same folds' held-out answers give the metrics, the
temperature and the abstain threshold (:mod:`parkclf.calibration`). The new checkpoint is the base one with the
classifier swapped: ``model.safetensors``, ``config.json``, the ONNX graphs and a model card. It loads with
``transformers.pipeline``, transformers.js and ``MODEL_ID=folder python app.py``.

The library API, for the command and the app's "Teach it" tab::

    taught = teach({"beach": [path, ...], "forest": [bytes, ...]}, "out/model", progress=lambda done, total: ...)
    taught.metrics["accuracy"], taught.folder, taught.skipped

Bad input raises :class:`TeachError` (a :class:`~parkclf.errors.UsageError`) with one sentence a person can act on;
unreadable photos are skipped and listed in :attr:`Taught.skipped`, and a photo sent in two classes is kept in the
first and listed in :attr:`Taught.duplicates`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .images import ImageSource, image_files, is_hidden


class TeachError(UsageError):
    """Photos or class names that cannot be taught; the message says which and what to do."""


@dataclass(frozen=True)
class TeachLimits:
    """What one teaching run may hold. The app passes these; the command uses the defaults."""

    min_classes: int = 2
    max_classes: int = 10
    min_photos: int = 2  # readable photos per class
    max_per_class: int = 200  # photos sent per class, readable or not
    max_total: int = 1000  # photos sent in all
    max_pixels: int = 3_000_000_000  # pixels the run may decode, priced from the headers before decoding
    max_name_length: int = 64  # characters of a class name (it becomes a folder name and a label)


@dataclass
class Taught:
    """What :func:`teach` made: the checkpoint folder and what a person reads about it."""

    folder: Path  # the new checkpoint (save_pretrained layout, with onnx/ and README.md)
    labels: list[str]  # class names, in the order of the classifier's outputs (config.json id2label)
    # held-out figures: accuracy, macro_f1, per_class {label: {precision, recall, f1, support}}, confusion (list of
    # lists, rows = true class, columns = predicted, in ``labels`` order), method ("5-fold", ...), n_photos,
    # C (the regularisation picked), calibration_temperature, abstain_threshold, keep_rate (held-out photos answered)
    metrics: dict
    counts: dict[str, int]  # photos per class that went into the fit
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why it could not be read)
    duplicates: list[str] = field(default_factory=list)  # one sentence per copy left out
    seconds: float = 0.0  # wall time of the whole run


def photos_from_folder(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``root/<class>/*`` -> {class: image files (recursively, sorted)}; hidden folders and files are skipped."""
    base = Path(root)
    if not base.is_dir():
        raise TeachError(f"No folder {base}; give a folder of class folders: {base}/<class>/*.jpg.")
    classes = sorted(p for p in base.iterdir() if p.is_dir() and not is_hidden(p))
    if not classes:
        raise TeachError(f"No class folders in {base}; expected {base}/<class>/*.jpg, one folder per class.")
    return {p.name: [Path(f) for f in image_files(p)] for p in classes}


def teach(photos: Mapping[str, Sequence[ImageSource]], output_dir: str | os.PathLike, *,
          base: str | os.PathLike | None = None, limits: TeachLimits = TeachLimits(),
          progress: Callable[[int, int], None] | None = None) -> Taught:
    """Teach a new classifier on ``photos`` ({class name: photos}) and write it to ``output_dir``.

    ``base``: a checkpoint folder or Hub id with ``onnx/`` whose backbone is reused (default: the embedded model).
    ``progress(done, total)`` is called as photos are read and run through the backbone.
    """
    raise NotImplementedError("teach() is being written; the signature and Taught are final")
