"""Model surgery before training: load a base checkpoint with a new head, change its input size or add a centre crop.

Each change lands in what ``save_pretrained`` writes (config.json, preprocessor_config.json), so the app,
``transformers.pipeline`` and the ONNX export all follow without being told.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..classifier import hub_message
from ..errors import UsageError
from ..processing import Preprocessor, image_size, resize_size
from .config import ModelArguments

logger = logging.getLogger("parkclf.train")


def preprocessor(processor) -> Preprocessor:
    """The one preprocessing definition for a transformers image processor (as it will be saved)."""
    return Preprocessor.from_dict(processor.to_dict())


def from_hub(load, name_or_path: str, **kw):
    """``load(name_or_path, **kw)`` (a transformers from_pretrained); an unreachable Hub or a missing folder becomes
    one UsageError naming the model and the fix. huggingface_hub's warning for each retry is held back: the
    error says it all."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        return load(name_or_path, trust_remote_code=False, **kw)
    except OSError as e:
        raise UsageError(hub_message(name_or_path, e, "Pass a local folder with --model-name-or-path")) from None
    finally:
        hub_logger.setLevel(level)


def load_model(model_args: ModelArguments, labels: list[str]):
    """(model with a new head for ``labels``, transformers image processor) from ``--model-name-or-path``."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    name = model_args.model_name_or_path
    id2label = dict(enumerate(labels))
    config = from_hub(AutoConfig.from_pretrained, name, num_labels=len(labels), id2label=id2label,
                      label2id={v: k for k, v in id2label.items()})
    # The new head is expected to be new: transformers lists every key of it (and of the old head) as a warning.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = from_hub(AutoModelForImageClassification.from_pretrained, name, config=config,
                         ignore_mismatched_sizes=True, use_safetensors=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    processor = from_hub(AutoImageProcessor.from_pretrained, name)
    if not isinstance(getattr(model, "classifier", None), nn.Linear):
        raise UsageError(f"{name}: expected a linear `classifier` head (ViT, DeiT, DINOv2, BEiT, Swin, ConvNeXt...), "
                         f"found {type(getattr(model, 'classifier', None)).__name__}.")
    logger.info("loaded %s with a new %d-class head (%s)", name, len(labels), ", ".join(labels))
    if model_args.image_size:
        set_image_size(model, processor, model_args.image_size)
    if model_args.center_crop is not None:
        processor = set_center_crop(processor, model_args.center_crop)
    return model, processor


def set_image_size(model, processor, size: int) -> None:
    """Resize a ViT-style model's input: interpolate its learned position embeddings to the new patch grid and
    make the processor (saved with the checkpoint) resize photos to ``size``, so pipelines and the app follow."""
    emb = getattr(getattr(model, model.base_model_prefix, model), "embeddings", None)
    pos, patch = getattr(emb, "position_embeddings", None), getattr(model.config, "patch_size", None)
    if not isinstance(pos, nn.Parameter) or not hasattr(emb, "interpolate_pos_encoding") or not patch:
        raise UsageError(f"--image-size needs a ViT-style model with learned position embeddings; "
                         f"{type(model).__name__} has none. Leave --image-size out.")
    if size % patch:
        raise UsageError(f"--image-size {size} is not a multiple of the patch size {patch}; "
                         f"use {max(1, round(size / patch)) * patch}.")
    pre = preprocessor(processor)
    if not pre.fixed_size:
        raise UsageError(f"--image-size supports processors that resize to height x width; this one has "
                         f"size={processor.size}. Leave --image-size out.")
    (h, _), (rh, _) = image_size(pre), resize_size(pre)
    tokens = (size // patch) ** 2 + 1
    if pos.shape[1] != tokens:
        with torch.no_grad():
            new = emb.interpolate_pos_encoding(torch.zeros(1, tokens, pos.shape[-1]), size, size)
        emb.position_embeddings = nn.Parameter(new.detach().clone())
    for part in (emb, getattr(emb, "patch_embeddings", None)):
        if hasattr(part, "image_size"):
            part.image_size = (size, size)
    if hasattr(getattr(emb, "patch_embeddings", None), "num_patches"):
        emb.patch_embeddings.num_patches = tokens - 1
    model.config.image_size = size
    if rh != h:  # a centre-cropping processor: keep the share of the photo it crops
        processor.crop_size = {"height": size, "width": size}
        size = round(size * rh / h)
    processor.size = {"height": size, "width": size}


def set_center_crop(processor, fraction: float):
    """A processor that shows the model the middle ``fraction`` of each side of a photo: it resizes to
    input/fraction and centre-crops the model's input size (transformers' DeiTImageProcessor, so plain pipelines
    load it). Training crops are unaffected; at evaluation the scene appears at about the scale the random
    training crops showed it (Touvron et al. 2019, "Fixing the train-test resolution discrepancy")."""
    from transformers import DeiTImageProcessor

    if not 0.5 <= fraction <= 1:
        raise UsageError(f"--center-crop {fraction}: give the share of each side to keep, between 0.5 and 1 "
                         "(e.g. 0.8).")
    pre = preprocessor(processor)
    if not pre.fixed_size:
        raise UsageError(f"--center-crop supports processors that resize to height x width (ViT, DeiT); this one "
                         f"has size={processor.size} and its own crop. Leave --center-crop out.")
    h, w = image_size(pre)
    return DeiTImageProcessor(
        do_resize=True, size={"height": round(h / fraction), "width": round(w / fraction)},
        resample=processor.resample, do_center_crop=fraction < 1, crop_size={"height": h, "width": w},
        do_rescale=processor.do_rescale, rescale_factor=processor.rescale_factor,
        do_normalize=processor.do_normalize, image_mean=processor.image_mean, image_std=processor.image_std)


def check_trained_labels(name_or_path: str, labels: list[str]) -> None:
    """--calibrate-only reuses a trained head as it is: its classes must be this data's, in the same order."""
    from transformers import AutoConfig

    config = from_hub(AutoConfig.from_pretrained, name_or_path)
    trained = [config.id2label[i] for i in range(config.num_labels)]
    if getattr(config, "calibration_temperature", None) is None or trained != labels:
        raise UsageError(f"--calibrate-only needs a model that train.py trained on this data's labels {labels}; "
                         f"{name_or_path} has {trained}. Pass the same --data-dir/--classes/--negatives-dir as its "
                         "training run, or train it first.")
