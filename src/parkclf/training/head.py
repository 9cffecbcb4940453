"""The linear probe of LP-FT: the model's own ``classifier`` set to a linear head fitted on its backbone's features.

Kumar et al. 2022 ("Fine-Tuning can Distort Pretrained Features"): fitting the head first means the first full
fine-tuning steps do not tear up pretrained features with a random head. It is also all of ``--freeze-backbone``.
The fit is :func:`parkclf.head.fit_head`, the one ``parkclf teach`` uses (multinomial logistic regression, its L2
strength by 5-fold cross-validation): on scene photos it beat the Trainer's 60-epoch AdamW head this replaced at
every size tried (docs/results.md).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import UsageError
from ..head import fit_head as fit_linear
from ..processing import Preprocessor
from .features import compute_device, head_features

logger = logging.getLogger("parkclf.train")


def fit_head(model, splits, pre: Preprocessor) -> float:
    """Set ``model.classifier`` to the head fitted on the train split's features; returns its validation accuracy."""
    model.to(compute_device())  # the backbone's features are computed on the GPU, if any, not on its host CPU
    feats = {s: head_features(model, splits[s], pre).numpy() for s in ("train", "validation")}
    y = np.asarray(splits["train"]["label"])
    names = splits["train"].features["label"].names
    counts = np.bincount(y, minlength=len(names))
    if counts.min() < 2:
        raise UsageError(f"The class {names[int(counts.argmin())]!r} has {counts.min()} training photo(s) after the "
                         "validation and test splits; each class needs at least 2. Add photos to it.")
    fit = fit_linear(feats["train"], y, len(names))
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(fit.weight))
        model.classifier.bias.copy_(torch.from_numpy(fit.bias))
    predicted = (feats["validation"] @ fit.weight.T + fit.bias).argmax(-1)
    acc = float((predicted == np.asarray(splits["validation"]["label"])).mean())
    logger.info("head fitted on the backbone's features (C = %s by %d-fold cross-validation): validation accuracy "
                "%.3f", fit.C, fit.folds, acc)
    return acc
