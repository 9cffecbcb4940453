"""The one preprocessing definition: sanitised image -> ``pixel_values``, from the checkpoint's processor.

Evaluation, the app and the API all go through :func:`pixel_values`; training adds augmentation
(torchvision.transforms.v2) in front of the very same call. No separate Resize+CenterCrop for eval.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

from .images import ImageSource, load_image


def size_getter(size):
    """``get(key)`` on a processor's size, whether a dict or transformers' SizeDict."""
    return size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)


def resizes_to_fixed_size(image_processor) -> bool:
    """True when the processor resizes every photo to height x width (ViT, DeiT), not by its shortest edge."""
    get = size_getter(image_processor.size)
    return bool(get("height") and get("width"))


def _crops(image_processor) -> bool:
    crop = getattr(image_processor, "crop_size", None)
    return bool(getattr(image_processor, "do_center_crop", False) and crop and size_getter(crop)("height"))


def image_size(image_processor) -> tuple[int, int]:
    """(height, width) the model sees, read from the processor saved with the checkpoint: its centre crop if it
    crops, else the size it resizes to."""
    if _crops(image_processor):
        get = size_getter(image_processor.crop_size)
        return int(get("height")), int(get("width"))
    return resize_size(image_processor)


def resize_size(image_processor) -> tuple[int, int]:
    """(height, width) the processor resizes a photo to before any centre crop (a square for shortest-edge ones)."""
    size = image_processor.size
    get = size_getter(size)
    if resizes_to_fixed_size(image_processor):
        return int(get("height")), int(get("width"))
    edge = get("shortest_edge") or get("longest_edge")
    if edge:
        return int(edge), int(edge)
    raise ValueError(f"Cannot tell the input size from the image processor's size {size!r}.")


def visible_box(image_processor, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the part of a width x height photo the model sees, in the photo's pixels:
    all of it, or the middle that the processor's centre crop keeps."""
    if not _crops(image_processor):
        return 0.0, 0.0, float(width), float(height)
    ch, cw = image_size(image_processor)
    rh, rw = resize_size(image_processor)
    if resizes_to_fixed_size(image_processor):  # resized to height x width (aspect not kept), then cropped
        bw, bh = width * cw / rw, height * ch / rh
    else:  # shortest edge resized to N, then cropped
        scale = rh / min(width, height)
        bw, bh = min(width, cw / scale), min(height, ch / scale)
    return (width - bw) / 2, (height - bh) / 2, (width + bw) / 2, (height + bh) / 2


def draft_size(image_processor) -> int:
    """Smallest side JPEG draft decoding may go down to: 1.5x the side the processor resizes to.

    A 12 MP photo still decodes at 1/8 scale (504x378), but a 1000-1600 px photo keeps enough
    pixels that the final antialiased resize matches a full decode: top-1 agreement with the plain
    fp32 pipeline went from 98.5% (draft to 1x) to 99.6% on the 259 shared park photos.
    """
    return 3 * max(*resize_size(image_processor), *image_size(image_processor)) // 2


def open_images(sources: Sequence[ImageSource], image_processor) -> list[Image.Image]:
    ds = draft_size(image_processor)
    return [load_image(s, draft_size=ds) for s in sources]


def pixel_values(images: Sequence[Image.Image], image_processor, *, augmented: bool = False) -> torch.Tensor:
    """The checkpoint's processor on sanitised images. ``augmented``: the images are training crops already at the
    model's input size, so only rescaling and normalisation apply (no second resize or centre crop)."""
    geometry = {"do_resize": False, "do_center_crop": False} if augmented else {}
    return image_processor(images=list(images), return_tensors="pt", **geometry)["pixel_values"]


def train_augment(image_processor) -> v2.Compose:
    """Train-only augmentation, applied to the sanitised PIL image before the shared processor.

    Gentle on purpose: with a few hundred photos, strong augmentation wrecks pretrained
    features (the parks issue reports a lr 1e-4 / strong-augmentation recipe doing worse).
    """
    return v2.Compose([
        v2.RandomResizedCrop(image_size(image_processor), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    ])


def _source(image: dict) -> ImageSource:
    return image["bytes"] if image.get("bytes") is not None else image["path"]


def dataset_transform(image_processor, *, augment: bool = False):
    """A ``datasets.set_transform`` function: undecoded image column -> pixel_values."""
    aug = train_augment(image_processor) if augment else None

    def transform(batch):
        images = open_images([_source(im) for im in batch["image"]], image_processor)
        if aug is not None:
            images = [aug(im) for im in images]
        return {"pixel_values": pixel_values(images, image_processor, augmented=aug is not None),
                "labels": batch["label"]}

    return transform
