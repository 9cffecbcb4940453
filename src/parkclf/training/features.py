"""Batched forward passes over a dataset split: the head's input features, or the logits."""

from __future__ import annotations

import numpy as np
import torch

from ..hardware import bf16_supported
from ..processing import Preprocessor
from .augment import dataset_transform


def compute_device() -> torch.device:
    """This process's device: its GPU under torchrun/accelerate or on a GPU machine, else the CPU."""
    from accelerate import PartialState

    return PartialState().device


def _batches(model, dataset, pre: Preprocessor, batch_size: int):
    model.eval()
    ds = dataset.with_transform(dataset_transform(pre))
    with torch.inference_mode(), torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16_supported()):
        for i in range(0, len(ds), batch_size):
            yield ds[i:i + batch_size]["pixel_values"].to(model.device)


def head_features(model, dataset, pre: Preprocessor, batch_size: int = 64) -> torch.Tensor:
    """Inputs of ``model.classifier`` for every example: the frozen backbone runs once per image."""
    captured: list[torch.Tensor] = []
    hook = model.classifier.register_forward_pre_hook(lambda _m, args: captured.append(args[0].float()))
    try:
        for x in _batches(model, dataset, pre, batch_size):
            model(pixel_values=x)
    finally:
        hook.remove()
    return torch.cat(captured).cpu()


def predict_logits(model, dataset, pre: Preprocessor, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of a split, as NumPy arrays."""
    out = [model(pixel_values=x).logits.float().cpu() for x in _batches(model, dataset, pre, batch_size)]
    return torch.cat(out).numpy(), np.asarray(dataset["label"])
