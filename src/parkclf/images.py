"""The one sanitising path: bytes or a path in, a clean RGB ``PIL.Image`` out.

Training, evaluation, the app and the API all call :func:`load_image`, so a photo is
decoded, rotated and converted exactly the same way wherever it goes.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF from phones (gradio#7482). Optional so the package still imports without it.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    pillow_heif = None

ImageSource = str | os.PathLike | bytes | IO[bytes] | Image.Image

# A 60 MP camera frame is fine; a 40000x40000 PNG header is a decompression bomb.
MAX_PIXELS = 100_000_000
# Refuse files bigger than this before decoding anything (a Space has 16 GB of RAM, not more).
MAX_BYTES = 50 * 1024 * 1024
# Files that are never photos, whatever their extension says (macOS / Windows litter).
HIDDEN_FILES = {".ds_store", "thumbs.db", "desktop.ini"}

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is refused, never half-read
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """An input that is not a usable image. The message is meant for the person who sent it."""


# What the commands pick up from a folder (datasets' imagefolder list, plus phone HEIC/AVIF).
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic",
                    ".heif", ".avif", ".ico", ".ppm", ".pgm", ".tga"}


def is_hidden(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return name.startswith(".") or name.lower() in HIDDEN_FILES


def image_files(root: str | os.PathLike, extensions=IMAGE_EXTENSIONS) -> list[str]:
    """Every image file under ``root`` (recursively, sorted), hidden files and folders skipped."""
    exts = {e.lower() for e in extensions}
    base = Path(root)
    return sorted(str(p) for p in base.rglob("*") if p.is_file() and p.suffix.lower() in exts
                  and not any(is_hidden(part) for part in p.relative_to(base).parts))


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageError("The file is empty (0 bytes); please upload a photo.")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        size = os.path.getsize(source)
        if size == 0:
            raise ImageError("The file is empty (0 bytes); please upload a photo.")
        if size > MAX_BYTES:
            raise ImageError(f"The file is {size / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if "exceeds limit" in str(e) or "decompression bomb" in str(e).lower():
            raise ImageError(f"The image is too large to process (over {MAX_PIXELS // 1_000_000} megapixels)."
                             ) from None
        raise ImageError("This file is not an image we can read (JPEG, PNG, WebP, HEIC, GIF, BMP, TIFF...).") from None
    except Exception as e:  # a decoder fed untrusted bytes can raise anything (a torn TIFF: TypeError)
        raise ImageError(f"This file could not be read as an image ({type(e).__name__}).") from None


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageError(f"The image is {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels.")


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """Box-filter shrink by an integer factor (Image.reduce), converting modes it does not take (palette, CMYK)."""
    try:
        return img.reduce(factor)
    except ValueError:
        return _to_rgb(img).reduce(factor)


def decoded_pixels(width: int, height: int, fmt: str | None, draft_size: int | None) -> int:
    """How many pixels :func:`load_image` decodes for an image of this header: a JPEG's DCT scaling skips most of
    a big photo, other formats decode in full. What a request costs in memory and time."""
    scale = 1
    if fmt == "JPEG" and draft_size:
        while scale < 8 and min(width, height) / (scale * 2) >= draft_size:
            scale *= 2
    return (width // scale) * (height // scale)


def header(source: ImageSource) -> tuple[int, int, str | None]:
    """(width, height, format) from the file's header alone; nothing is decoded."""
    if isinstance(source, Image.Image):
        return source.width, source.height, source.format
    start = source.tell() if hasattr(source, "tell") else None
    img = _open(source)
    try:
        return img.width, img.height, img.format
    finally:
        if start is None:
            img.close()
        else:  # a stream the caller reads again: leave it open, where it was
            source.seek(start)


def price(source: ImageSource, *, draft_size: int | None, max_pixels: int = MAX_PIXELS) -> int:
    """The pixels one image will decode, read from its header; ImageError if it is unreadable or over
    ``max_pixels``."""
    w, h, fmt = header(source)
    check_size(w, h, max_pixels)
    return decoded_pixels(w, h, fmt, draft_size)


def check_budget(sources, *, draft_size: int | None, budget: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a request, before decoding anything, when one image is over ``max_pixels`` or all of them together
    would decode more than ``budget`` pixels."""
    total = sum(price(s, draft_size=draft_size, max_pixels=max_pixels) for s in sources)
    if total > budget:
        raise ImageError(f"These {len(sources)} images would decode to {total / 1e6:.0f} megapixels; one request may "
                         f"hold at most {budget / 1e6:.0f}. Send fewer or smaller images (JPEG photos cost least).")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        a = np.asarray(img, dtype=np.float32)
        hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, as they look in a browser, not black (transformers#25694).
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


def load_image(source: ImageSource, *, draft_size: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return a clean RGB image: EXIF rotation applied, alpha on white, first frame only.

    ``draft_size`` lets decoding skip detail the model never sees: a JPEG decodes at 1/2, 1/4 or 1/8 scale in the
    DCT domain, and any other format is reduced by an integer factor right after decoding, both while the short
    side stays >= ``draft_size``. So at most one full-size frame exists at a time, and only for a moment. Training
    and serving pass the same value (from the checkpoint's image size), so they see the same pixels.
    ``max_pixels`` (read from the header, before decoding) may be lower for serving than for training.
    Raises :class:`ImageError` with a human message for anything unusable.
    """
    img = _open(source)
    try:
        check_size(img.width, img.height, max_pixels)
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
        if draft_size and img.format == "JPEG":
            # draft() only reduces by powers of two while the result stays >= the requested box.
            scale = min(img.width, img.height) / draft_size
            if scale >= 2:
                img.draft("RGB", (int(img.width / scale) + 1, int(img.height / scale) + 1))
        img.load()
        if draft_size and min(img.size) // draft_size >= 2:  # PNG, WebP, TIFF...: no draft mode, reduce at once
            img = _reduce(img, min(img.size) // draft_size)
        with contextlib.suppress(Exception):  # corrupt EXIF must not cost the photo: keep it unrotated
            # phone photos (gradio#2287, datasets#6252); in place: no copy of the pixels when there is nothing to turn
            ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb(img)
    except ImageError:
        raise
    except Exception as e:  # as above: whatever the decoder raises, the sender gets one sentence
        msg = str(e)
        if "truncated" in msg:
            raise ImageError("The image file is truncated (incomplete download?); please upload it again.") from None
        raise ImageError(f"The image could not be decoded ({type(e).__name__}).") from None
