"""The one preprocessing definition: sanitised image -> ``pixel_values``, read from the checkpoint's processor config.

Training, evaluation, the app, the batch command and the API all call :meth:`Preprocessor.__call__`; training only
adds augmentation in front of it. It reproduces transformers' PIL-backend image processors step for step (PIL
resize on uint8, centre crop, rescale in float64 then float32, normalise), and a test holds it to their output. It
is written out here, in NumPy and PIL, because importing transformers imports torch whenever torch is installed
(``modeling_rope_utils``), and a Space serving an ONNX export must load neither.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from math import ceil
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UsageError
from .images import ImageError, ImageSource, load_image

CONFIG_NAME = "preprocessor_config.json"


@dataclass(frozen=True)
class Preprocessor:
    """What a checkpoint's ``preprocessor_config.json`` asks for, for the processors of ViT-family classifiers."""

    size: dict  # {"height", "width"} (resize to exactly that) or {"shortest_edge"} (keep the aspect ratio)
    resample: int = Image.BICUBIC
    do_resize: bool = True
    do_center_crop: bool = False
    crop_size: dict | None = None
    crop_pct: float | None = None  # ConvNeXt: resize the short side to size/crop_pct, then crop size x size
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @classmethod
    def from_dict(cls, cfg: dict) -> Preprocessor:
        size = cfg.get("size")
        if isinstance(size, int):  # old configs: one int means a square
            size = {"height": size, "width": size}
        if not size or not ({"height", "width"} <= set(size) or "shortest_edge" in size):
            raise UsageError(f"The image processor config has size={size!r}; parkclf serves processors that resize "
                             "to {'height', 'width'} or by {'shortest_edge'} (ViT, DeiT, BEiT, Swin, DINOv2, "
                             "ConvNeXt).")
        if cfg.get("do_pad"):
            raise UsageError("The image processor config pads images (do_pad); parkclf does not serve such processors.")
        crop = cfg.get("crop_size")
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        convnext = "shortest_edge" in size and "ConvNext" in cfg.get("image_processor_type", "")
        pct = cfg.get("crop_pct") if convnext else None
        return cls(size={k: int(v) for k, v in size.items() if v is not None}, resample=int(cfg.get("resample", 3)),
                   do_resize=bool(cfg.get("do_resize", True)), do_center_crop=bool(cfg.get("do_center_crop", False)),
                   crop_size=crop, crop_pct=pct, do_rescale=bool(cfg.get("do_rescale", True)),
                   rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
                   do_normalize=bool(cfg.get("do_normalize", True)),
                   image_mean=tuple(cfg.get("image_mean", (0.5, 0.5, 0.5))),
                   image_std=tuple(cfg.get("image_std", (0.5, 0.5, 0.5))))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Preprocessor:
        path = Path(folder) / CONFIG_NAME
        if not path.exists():
            raise UsageError(f"{folder} has no {CONFIG_NAME}; a checkpoint saved with save_pretrained has one.")
        return cls.from_dict(json.loads(path.read_text()))

    @property
    def crops(self) -> bool:
        return bool(self.do_center_crop and self.crop_size and self.crop_size.get("height"))

    @property
    def fixed_size(self) -> bool:
        """True when every photo is resized to height x width (ViT, DeiT), not by its shortest edge."""
        return "height" in self.size and "width" in self.size

    def _resized(self, image: Image.Image) -> Image.Image:
        if self.fixed_size:
            return image.resize((self.size["width"], self.size["height"]), resample=self.resample)
        edge = self.size["shortest_edge"]
        if self.crop_pct is not None and edge < 384:
            image = _resize_short_side(image, int(edge / self.crop_pct), self.resample)
            return image.crop(_crop_box(image.width, image.height, edge, edge))
        if self.crop_pct is not None:
            return image.resize((edge, edge), resample=self.resample)
        return _resize_short_side(image, edge, self.resample)

    def one(self, image: Image.Image, *, augmented: bool = False) -> np.ndarray:
        """(3, H, W) float32 for one RGB image. ``augmented``: a training crop already at the model's input size,
        so only rescaling and normalisation apply."""
        if self.do_resize and not augmented:
            image = self._resized(image)
        arr = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        if self.crops and not augmented:
            arr = _center_crop(arr, self.crop_size["height"], self.crop_size["width"])
        x = np.empty(arr.shape, np.float32)
        for c, table in enumerate(self._values):
            np.take(table, arr[c], out=x[c])
        return x

    @cached_property
    def _values(self) -> np.ndarray:
        """(3, 256) float32: what rescaling and normalising make of each 8-bit value of each channel, computed as
        transformers computes it (rescale in float64, then float32, then normalise), so one lookup per pixel gives
        the same bits as the arithmetic in a third of the time."""
        v = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 256))
        x = (v.astype(np.float64) * self.rescale_factor).astype(np.float32) if self.do_rescale \
            else v.astype(np.float32)
        if self.do_normalize:
            x = (x - np.asarray(self.image_mean, np.float32)[:, None]) / np.asarray(self.image_std, np.float32)[:, None]
        return np.ascontiguousarray(x)

    def __call__(self, images: Sequence[Image.Image], *, augmented: bool = False) -> np.ndarray:
        """(N, 3, H, W) float32 ``pixel_values``."""
        return np.stack([self.one(im, augmented=augmented) for im in images])


def _resize_short_side(image: Image.Image, edge: int, resample: int) -> Image.Image:
    w, h = image.size  # as transformers' get_resize_output_image_size: the long side is truncated, not rounded
    new = (edge, int(edge * h / w)) if w <= h else (int(edge * w / h), edge)
    return image.resize(new, resample=resample)


def _crop_box(w: int, h: int, cw: int, ch: int) -> tuple[int, int, int, int]:
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def _center_crop(arr: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """transformers' center_crop on (C, H, W): zero-pads a side that is shorter than the crop."""
    _, h, w = arr.shape
    if h < ch or w < cw:
        nh, nw = max(h, ch), max(w, cw)
        padded = np.zeros((arr.shape[0], nh, nw), arr.dtype)
        top, left = ceil((nh - h) / 2), ceil((nw - w) / 2)
        padded[:, top:top + h, left:left + w] = arr
        arr, h, w = padded, nh, nw
    top, left = (h - ch) // 2, (w - cw) // 2
    return arr[:, top:top + ch, left:left + cw]


def image_size(pre: Preprocessor) -> tuple[int, int]:
    """(height, width) the model sees: the centre crop if the processor crops, else the size it resizes to."""
    if pre.crops:
        return int(pre.crop_size["height"]), int(pre.crop_size["width"])
    if pre.crop_pct is not None:
        return pre.size["shortest_edge"], pre.size["shortest_edge"]
    return resize_size(pre)


def resize_size(pre: Preprocessor) -> tuple[int, int]:
    """(height, width) a photo is resized to before any centre crop (a square for shortest-edge processors)."""
    if pre.fixed_size:
        return pre.size["height"], pre.size["width"]
    edge = pre.size["shortest_edge"]
    if pre.crop_pct is not None and edge < 384:
        edge = int(edge / pre.crop_pct)
    return edge, edge


def visible_box(pre: Preprocessor, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the part of a width x height photo the model sees, in the photo's pixels:
    all of it, or the middle that the processor's centre crop keeps."""
    ch, cw = image_size(pre)
    rh, rw = resize_size(pre)
    if (ch, cw) == (rh, rw):
        return 0.0, 0.0, float(width), float(height)
    if pre.fixed_size:  # resized to height x width (aspect not kept), then cropped
        bw, bh = width * cw / rw, height * ch / rh
    else:  # shortest edge resized to N, then cropped
        scale = rh / min(width, height)
        bw, bh = min(width, cw / scale), min(height, ch / scale)
    return (width - bw) / 2, (height - bh) / 2, (width + bw) / 2, (height + bh) / 2


def draft_size(pre: Preprocessor) -> int:
    """Smallest side JPEG draft decoding may go down to: 1.5x the side the processor resizes to.

    A 12 MP photo (4032x3024) decodes at 1/4 scale (1008x756) for the embedded model (resized to 385), and a
    1000-1600 px photo keeps enough pixels that the final antialiased resize matches a full decode (docs/results.md
    has the agreement this bought).
    """
    return 3 * max(*resize_size(pre), *image_size(pre)) // 2


def open_images(sources: Sequence[ImageSource], pre: Preprocessor) -> list[Image.Image]:
    ds = draft_size(pre)
    return [load_image(s, draft_size=ds) for s in sources]


def decode(source: ImageSource, pre: Preprocessor, draft: int) -> tuple[np.ndarray | None, str]:
    """(the photo's pixel_values, "") or (None, why it cannot be read, in a sentence)."""
    try:
        return pre.one(load_image(source, draft_size=draft)), ""
    except ImageError as e:
        return None, str(e)
    except FileNotFoundError:  # load_image reads the size before it opens the file
        return None, "The file is gone (moved or deleted after the run listed it)."
    except OSError as e:  # a decoder's own exceptions are ImageError already (load_image maps them)
        return None, f"The file could not be read ({type(e).__name__}: {e.strerror or e}); check its permissions."


LOOKAHEAD = 2  # batches decoding while the engine runs the current one


def decoded_batches(batches: Iterable[Sequence[ImageSource]], pre: Preprocessor,
                    workers: int) -> Iterator[list[tuple[np.ndarray | None, str]]]:
    """:func:`decode` of each batch of sources, in order, with threads decoding :data:`LOOKAHEAD` batches ahead of
    the caller (PIL, NumPy and the engines release the GIL, so both cores stay busy). Only those batches' pixels are
    held at a time."""
    draft = draft_size(pre)
    todo, pending = iter(batches), collections.deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:

        def submit() -> None:
            batch = next(todo, None)
            if batch is not None:
                pending.append([pool.submit(decode, source, pre, draft) for source in batch])

        for _ in range(LOOKAHEAD):
            submit()
        while pending:
            futures = pending.popleft()
            submit()
            yield [f.result() for f in futures]
