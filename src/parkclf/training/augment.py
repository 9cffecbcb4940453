"""Training-time views of the data: augmentation (train only) in front of the one preprocessing definition."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ..images import ImageSource
from ..processing import Preprocessor, image_size, open_images


def train_augment(pre: Preprocessor) -> v2.Compose:
    """Train-only augmentation, applied to the sanitised PIL image before the shared preprocessing.

    Gentle on purpose: with a few hundred photos, strong augmentation wrecks pretrained features
    (docs/results.md: a lr 1e-4 / strong-augmentation recipe did worse).
    """
    return v2.Compose([
        v2.RandomResizedCrop(image_size(pre), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    ])


def _source(image: dict) -> ImageSource:
    return image["bytes"] if image.get("bytes") is not None else image["path"]


def dataset_transform(pre: Preprocessor, *, augment: bool = False):
    """A ``datasets.set_transform`` function: undecoded image column -> pixel_values (a torch tensor)."""
    aug = train_augment(pre) if augment else None

    def transform(batch):
        images = open_images([_source(im) for im in batch["image"]], pre)
        if aug is not None:
            images = [aug(im) for im in images]
        return {"pixel_values": torch.from_numpy(pre(images, augmented=aug is not None)), "labels": batch["label"]}

    return transform
