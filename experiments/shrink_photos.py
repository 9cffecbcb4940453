"""Copies of a photo folder, each photo decoded by ``load_image`` (EXIF rotation applied), resized to a short side
of ``--short-side`` px and saved as WebP: the form the recipe sweep and the CPU retrains trained from, since
decoding 12 MP JPEGs every epoch costs more than the training step on 2 cores. Other files (SOURCES.tsv, lists)
are copied as they are.

    python experiments/shrink_photos.py ../shared/data/parks out/parks400 --short-side 400 --quality 82
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

from parkclf.images import IMAGE_EXTENSIONS, ImageError, load_image


def shrink(src: Path, dst: Path, short_side: int, quality: int) -> tuple[int, int]:
    written = skipped = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            shutil.copyfile(path, out)
            continue
        try:
            img = load_image(path)
        except ImageError as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
            skipped += 1
            continue
        scale = short_side / min(img.size)
        if scale < 1:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        # keep the original name (and so SOURCES.tsv's references) with the WebP bytes inside
        img.save(out, format="WEBP", quality=quality)
        written += 1
    return written, skipped


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--short-side", type=int, default=400)
    p.add_argument("--quality", type=int, default=82)
    a = p.parse_args(argv)
    written, skipped = shrink(a.src, a.dst, a.short_side, a.quality)
    print(f"{written} photos written to {a.dst}, {skipped} skipped")


if __name__ == "__main__":
    main()
