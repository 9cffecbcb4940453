"""The hostile-input suite, generated (not committed): (name, bytes, filename, expected) tuples.

expected is "ok" (a photo the pipeline must read) or "refuse" (a clean ImageError).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _photo(w=320, h=240, mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), np.full_like(x, 90)], -1).astype(np.uint8)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(w=40000, h=40000) -> bytes:
    """A valid PNG header that claims w x h pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + _png_chunk(b"IEND", b""))


def exif_oriented(orientation: int) -> bytes:
    img = _photo(64, 32)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(img, "JPEG", exif=exif.tobytes(), quality=90)


def corrupt_exif() -> bytes:
    """An APP1 segment that says Exif but points its first IFD far outside the data."""
    bad = b"Exif\x00\x00MM\x00*\xff\xff\xff\x00" + b"\x01\x12garbage" * 4
    return _save(_photo(64, 48), "JPEG", exif=bad, quality=90)


def animated(fmt: str) -> bytes:
    frames = [_photo(64, 48, seed=s) for s in range(3)]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def heic() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return _save(_photo(128, 96), "HEIF", quality=80)


def big_flat_png(w=10000, h=9999) -> bytes:
    """A PNG just under 100 MP that compresses to a few hundred KB: cheap to send, 300 MB to decode."""
    img = Image.new("RGB", (w, h), (90, 140, 60))
    img.paste((200, 200, 180), (0, 0, w // 2, h // 3))
    return _save(img, "PNG", compress_level=9)


def cases() -> list[tuple[str, bytes, str, str]]:
    jpeg = _save(_photo(), "JPEG", quality=90)
    big = Image.fromarray(np.tile(np.linspace(0, 255, 9000, dtype=np.uint8), (6700, 1)), "L").convert("RGB")
    pal = _photo(64, 48).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    out = [
        ("truncated_jpeg", jpeg[: len(jpeg) // 2], "truncated.jpg", "refuse"),
        ("zero_bytes", b"", "empty.jpg", "refuse"),
        ("random_bytes", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "random.jpg",
         "refuse"),
        ("text_as_jpg", b"hello, this is not a photo\n" * 20, "notes.jpg", "refuse"),
        ("html", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "page.html", "refuse"),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
         "pic.svg", "refuse"),
        ("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "doc.pdf", "refuse"),
        ("svg_script", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>',
         "script.svg", "refuse"),
        ("html_as_svg", b"<!doctype html><html><script>fetch('/x')</script></html>", "drawing.svg", "refuse"),
        ("truncated_tiff", animated("TIFF")[:2000], "torn.tiff", "refuse"),
        ("truncated_webp", _save(_photo(), "WEBP", quality=80)[:300], "torn.webp", "refuse"),
        ("decompression_bomb", bomb_png(), "bomb.png", "refuse"),
        ("jpeg_60mp", _save(big, "JPEG", quality=85), "huge.jpg", "ok"),
        ("one_pixel", _save(_photo(1, 1), "PNG"), "dot.png", "ok"),
        ("strip_10000x10", _save(_photo(10000, 10), "PNG"), "strip.png", "ok"),
        ("cmyk_jpeg", _save(_photo(mode="CMYK"), "JPEG", quality=90), "cmyk.jpg", "ok"),
        ("png_16bit", _save(Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)), "PNG"),
         "deep.png", "ok"),
        ("palette_transparent", _save(pal, "PNG"), "pal.png", "ok"),
        ("la_png", _save(_photo(mode="LA"), "PNG"), "la.png", "ok"),
        ("rgba_png", _save(_photo(mode="RGBA"), "PNG"), "rgba.png", "ok"),
        ("grayscale_jpeg", _save(_photo(mode="L"), "JPEG"), "gray.jpg", "ok"),
        ("animated_gif", animated("GIF"), "anim.gif", "ok"),
        ("animated_webp", animated("WEBP"), "anim.webp", "ok"),
        ("multipage_tiff", animated("TIFF"), "pages.tiff", "ok"),
        ("heic", heic(), "phone.heic", "ok"),
        ("corrupt_exif", corrupt_exif(), "badexif.jpg", "ok"),
        ("progressive_jpeg", _save(_photo(), "JPEG", progressive=True, quality=85), "prog.jpg", "ok"),
        ("bmp", _save(_photo(), "BMP"), "pic.bmp", "ok"),
        ("ico", _save(_photo(64, 64), "ICO"), "fav.ico", "ok"),
    ]
    out += [(f"exif_orientation_{o}", exif_oriented(o), f"orient{o}.jpg", "ok") for o in range(1, 9)]
    return out
