"""The linear probe of LP-FT: the model's own ``classifier`` fitted on cached backbone features.

Kumar et al. 2022 ("Fine-Tuning can Distort Pretrained Features"): fitting the head first means the first full
fine-tuning steps do not tear up pretrained features with a random head. It is also all of ``--freeze-backbone``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from ..processing import Preprocessor
from .config import TrainArguments
from .features import compute_device, head_features
from .finetune import trainer_args

logger = logging.getLogger("parkclf.train")


class HeadOnFeatures(nn.Module):
    """Wraps the model's own ``classifier`` so the Trainer fits it on cached features."""

    def __init__(self, classifier: nn.Linear):
        super().__init__()
        self.classifier = classifier

    def forward(self, features, labels=None):
        logits = self.classifier(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def fit_head(model, splits, pre: Preprocessor, args: TrainArguments, workdir: str) -> float:
    """Fit ``model.classifier`` on the train split's cached features; returns its validation accuracy."""
    from datasets import Dataset
    from transformers import Trainer

    model.to(compute_device())  # the backbone's features are computed on the GPU, if any, not on its host CPU
    feats = {s: head_features(model, splits[s], pre) for s in ("train", "validation")}
    train = Dataset.from_dict({"features": feats["train"].numpy(), "labels": splits["train"]["label"]})
    head = HeadOnFeatures(model.classifier)
    trainer = Trainer(model=head, train_dataset=train.with_format("torch"), args=trainer_args(
        args, workdir, num_train_epochs=args.head_epochs, learning_rate=args.head_learning_rate,
        per_device_train_batch_size=128, weight_decay=args.weight_decay, lr_scheduler_type="cosine",
        save_strategy="no", eval_strategy="no", logging_steps=50, bf16=False))
    trainer.train()
    with torch.no_grad():  # the head stays where the Trainer put it, beside the backbone; features are on the CPU
        predicted = head.classifier(feats["validation"].to(head.classifier.weight.device)).argmax(-1).cpu().numpy()
    acc = float((predicted == np.asarray(splits["validation"]["label"])).mean())
    logger.info("head fitted on cached features: validation accuracy %.3f", acc)
    return acc
