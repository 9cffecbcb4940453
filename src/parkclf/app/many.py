"""The "Many photos" tab: up to N photos, or zips of them, classified into a table that fills as it goes.

The same limits as one photo, over the whole run: a count of files, and a pixel budget priced from the headers
before anything is decoded. A zip is read entry by entry into memory with caps on its entries and on the bytes
actually read (a zip's own header can lie), so a zip bomb gets a message, not a dead server. Nothing is extracted
to disk, but a zip with an entry that climbs out of its folder (``../x.jpg``) or starts at the root (``/x.jpg``) is
refused whole: it was made to attack an unzip tool, not to share photos. The "Teach it" tab reads its zips here too.
"""

from __future__ import annotations

import base64
import io
import lzma
import os
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..classifier import Classifier
from ..images import IMAGE_EXTENSIONS, MAX_BYTES, ImageError, is_hidden, load_image
from ..images import price as image_price
from ..processing import draft_size
from ..tables import CsvTable


@dataclass(frozen=True)
class ManyLimits:
    max_files: int = 200  # photos per run, zip entries included
    zip_entries: int = 1000  # entries a zip may list (directories and litter included)
    zip_bytes: int = 500 * 2**20  # bytes read out of all zips of a run, uncompressed
    run_pixels: int = 2_000_000_000  # pixels a run may decode
    batch: int = 8  # photos per forward pass


# what opening a zip, or reading one of its entries, can raise besides MemoryError: a bad header or CRC, a name
# flagged UTF-8 that is not (ValueError), a torn deflate, bz2 or lzma stream, a password, a compression method
# Python lacks (found by benchmarks/fuzz.py)
UNREADABLE = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError, RuntimeError,
              NotImplementedError)


class TooMuch(ValueError):
    """The run is over one of its limits, or a zip is unsafe; the message says which."""


@dataclass
class Item:
    name: str  # what the table and the CSV call it: the file name, or zip name/entry
    source: str | bytes
    error: str = ""
    entry: str = ""  # the path inside its zip ("" for a file uploaded as it is)


def unsafe_entry(filename: str) -> bool:
    """A zip entry that would land outside the folder it is unzipped in: absolute, a drive, or climbing with ..."""
    parts = filename.replace("\\", "/").split("/")
    return filename.startswith(("/", "\\")) or ".." in parts or (len(filename) > 1 and filename[1] == ":")


def _zip_items(path: str, name: str, limits: ManyLimits, budget: list[int]) -> list[Item]:
    try:
        zf = zipfile.ZipFile(path)
    except UNREADABLE:
        return [Item(name, b"", "This zip file could not be read.")]
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.zip_entries:
            raise TooMuch(f"{name} lists {len(infos)} entries; a zip may hold at most {limits.zip_entries}.")
        unsafe = [info.filename for info in infos if unsafe_entry(info.filename)]
        if unsafe:
            raise TooMuch(f"{name} holds an entry outside its folders ({unsafe[0]}); zip the photos again from "
                          "the folder that holds them, with no '..' or absolute paths.")
        items = []
        for info in infos:
            entry = Path(info.filename)
            if not info.filename or info.is_dir() or any(is_hidden(p) or p == "__MACOSX" for p in entry.parts):
                continue
            label = f"{name}/{info.filename}"
            if entry.suffix.lower() not in IMAGE_EXTENSIONS:
                items.append(Item(label, b"", "Not an image file (skipped).", info.filename))
                continue
            try:
                with zf.open(info) as f:  # read at most the cap + 1 byte, whatever the header claims
                    data = f.read(min(MAX_BYTES, budget[0]) + 1)
            except UNREADABLE:  # a torn or tampered entry, encrypted, or an unknown compression: that one only
                items.append(Item(label, b"", "This entry of the zip could not be read.", info.filename))
                continue
            if len(data) > budget[0]:
                raise TooMuch(f"The zips hold more than {limits.zip_bytes // 2**20} MB of photos; send fewer.")
            budget[0] -= len(data)
            items.append(Item(label, data, "" if len(data) <= MAX_BYTES else
                              f"The file is over {MAX_BYTES // 2**20} MB.", info.filename))
        return items


def looks_like_zip(path: str) -> bool:
    """zipfile.is_zipfile, where a zip it cannot handle (one spanning disks) counts as a zip, to be refused as one."""
    try:
        return zipfile.is_zipfile(path)
    except UNREADABLE:
        return True


def expand(paths: list[str], names: list[str], limits: ManyLimits) -> list[Item]:
    """Uploaded files -> the photos to classify (zips opened), within the run's file count."""
    items, budget = [], [limits.zip_bytes]
    for path, name in zip(paths, names, strict=True):
        if name.lower().endswith(".zip") and looks_like_zip(path):
            items += _zip_items(path, name, limits, budget)
        else:
            items.append(Item(name, path))
        if len([i for i in items if not i.error]) > limits.max_files:
            raise TooMuch(f"At most {limits.max_files} photos per run; send the rest in another run.")
    return items


def price(items: list[Item], classifier: Classifier, limits: ManyLimits) -> None:
    """Refuse the run before decoding anything if its photos would decode more than the budget; an unreadable
    header marks that one item, not the run."""
    ds, total = draft_size(classifier.preprocessor), 0
    for item in items:
        if item.error:
            continue
        try:
            total += image_price(item.source, draft_size=ds)
        except ImageError as e:
            item.error = str(e)
    if total > limits.run_pixels:
        raise TooMuch(f"These photos would decode to {total / 1e6:.0f} megapixels; a run may hold at most "
                      f"{limits.run_pixels / 1e6:.0f}. Send fewer or smaller photos.")


def thumbnail(image) -> str:
    small = image.copy()
    small.thumbnail((72, 72))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=70)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img src="data:image/jpeg;base64,{data}" alt="" width="{small.width}">'


def classify(items: list[Item], classifier: Classifier, limits: ManyLimits) -> Iterator[tuple[Item, str, object]]:
    """(item, thumbnail HTML, Prediction or None) per item, decoding one batch at a time."""
    ds = draft_size(classifier.preprocessor)
    for start in range(0, len(items), limits.batch):
        chunk, images = items[start:start + limits.batch], []
        for item in chunk:
            if not item.error:
                try:
                    images.append(load_image(item.source, draft_size=ds))
                except ImageError as e:
                    item.error = str(e)
        preds = iter(classifier.predict_images(images))
        shown = iter(images)
        for item in chunk:
            yield (item, "", None) if item.error else (item, thumbnail(next(shown)), next(preds))


class CsvFolder:
    """Where the download CSVs go: one temporary folder, emptied of files older than ``max_age_s`` on each run."""

    def __init__(self, max_age_s: float = 3600):
        self.root, self.max_age_s = Path(tempfile.mkdtemp(prefix="parkclf-many-")), max_age_s

    def write(self, rows: list[dict]) -> str:
        now = time.time()
        for old in self.root.glob("*.csv"):
            if now - old.stat().st_mtime > self.max_age_s:
                old.unlink(missing_ok=True)
        fd, path = tempfile.mkstemp(prefix="predictions-", suffix=".csv", dir=self.root)
        os.close(fd)
        CsvTable(Path(path), list(rows[0]) if rows else ["path"]).append(rows)  # the batch command's CSV writer
        return path
