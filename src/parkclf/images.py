"""The one sanitising path: bytes or a path in, a clean RGB ``PIL.Image`` out.

Training, evaluation, the app and the API all call :func:`load_image`, so a photo is
decoded, rotated and converted exactly the same way wherever it goes.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF from phones (gradio#7482). Optional so the package still imports without it.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    pillow_heif = None

ImageSource = Union[str, os.PathLike, bytes, IO[bytes], Image.Image]

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


def is_hidden(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return name.startswith(".") or name.lower() in HIDDEN_FILES


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
            raise ImageError(f"The image is too large to process (over {MAX_PIXELS // 1_000_000} megapixels).") from None
        raise ImageError("This file is not an image we can read (JPEG, PNG, WebP, HEIC, GIF, BMP, TIFF...).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"This file could not be read as an image ({type(e).__name__}).") from None


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


def load_image(source: ImageSource, *, draft_size: int | None = None) -> Image.Image:
    """Return a clean RGB image: EXIF rotation applied, alpha on white, first frame only.

    ``draft_size`` lets JPEG decoding skip detail the model never sees: the decoder scales by
    1/2, 1/4 or 1/8 in the DCT domain while both sides stay >= ``draft_size``. Training and
    serving pass the same value (from the checkpoint's image size), so they see the same pixels.
    Raises :class:`ImageError` with a human message for anything unusable.
    """
    img = _open(source)
    try:
        if img.width * img.height > MAX_PIXELS:
            raise ImageError(
                f"The image is {img.width}x{img.height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels."
            )
        if img.width < 1 or img.height < 1:
            raise ImageError("The image has no pixels.")
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
        if draft_size and img.format == "JPEG":
            # draft() only reduces by powers of two while the result stays >= the requested box.
            scale = min(img.width, img.height) / draft_size
            if scale >= 2:
                img.draft("RGB", (int(img.width / scale) + 1, int(img.height / scale) + 1))
        img.load()
        try:
            img = ImageOps.exif_transpose(img)  # phone photos (gradio#2287, datasets#6252)
        except Exception:  # corrupt EXIF must not cost the photo: keep it unrotated
            pass
        return _to_rgb(img)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, Image.DecompressionBombError) as e:
        msg = str(e)
        if "truncated" in msg:
            raise ImageError("The image file is truncated (incomplete download?); please upload it again.") from None
        raise ImageError(f"The image could not be decoded ({type(e).__name__}).") from None
