"""``parkclf predict``: a photo library (files, folders, globs or a dataset) in, one table of predictions out;
optionally sorted into folders, resumable after a kill, and split between processes or machines by accelerate.

    parkclf predict photos/ --output predictions.csv
    parkclf predict 'photos/**/*.jpg' --output predictions.parquet --sort-into sorted/ --copy
    parkclf predict --dataset user/photos --split test --image-column image --output predictions.jsonl
    accelerate launch --multi_gpu --num_processes 2 -m parkclf predict photos/ --output predictions.csv

Every photo takes the app's path (load_image, the checkpoint's processor, its engine, calibration and abstain rule)
while threads decode the next batches. Each finished batch is appended and fsynced, so rerunning the same command
skips the rows already in the output and a kill loses at most the batch in flight. Under N processes each one
appends to OUTPUT.parts/process-K.jsonl and the main process merges them into the output, in input order. Nothing
here imports torch: with an onnx/ export in the checkpoint this runs on the serving stack alone.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import filecmp
import glob
import io
import itertools
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .classifier import EMBEDDED_MODEL, Classifier
from .engine import ENGINES
from .errors import UsageError
from .hardware import cpu_threads
from .images import ImageSource, image_files, is_hidden
from .processing import decoded_batches
from .tables import JsonlTable, open_table, prediction_row, table_class

logger = logging.getLogger(__name__)

UNSURE, UNREADABLE = "unsure", "unreadable"  # --sort-into folders beside the class folders
# The variables accelerate itself reads for the number of processes (torchrun, accelerate launch, mpirun).
WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass
class Inputs:
    """What to predict, in order. ``keys`` is the path column: files first, then ``<dataset>:<split>:<row>``."""

    keys: list[str]
    files: int  # keys[:files] are files
    rows: Any = None  # a datasets.Dataset whose image column is cast to Image(decode=False)
    column: str = "image"

    def source(self, i: int) -> tuple[ImageSource, str]:
        """(a path or the bytes, a file name for --sort-into)."""
        if i < self.files:
            return self.keys[i], Path(self.keys[i]).name
        cell = self.rows[i - self.files][self.column] or {}
        path = cell.get("path") or ""
        data = cell.get("bytes")
        return (data if data is not None else path or b""), Path(path).name or f"row-{i - self.files}"


def file_inputs(args: list[str]) -> list[str]:
    """Files as named (whatever their extension), each folder's image files (recursively), and glob matches."""
    out = []
    for arg in args:
        if os.path.isdir(arg):
            out += image_files(arg)
        elif os.path.lexists(arg):
            out.append(arg)
        elif any(c in arg for c in "*?["):
            matches = [m for m in sorted(glob.glob(arg, recursive=True)) if not is_hidden(m)]
            if not matches:
                raise UsageError(f"No files match {arg!r}; check the pattern (quoted, so the shell leaves it alone).")
            out += [f for m in matches for f in (image_files(m) if os.path.isdir(m) else [m])]
        else:
            raise UsageError(f"No such file or folder: {arg}. Give image files, folders or globs ('photos/**/*.jpg').")
    return list(dict.fromkeys(out))  # a file reached twice (its folder and a glob) is predicted once


def dataset_rows(name: str, split: str, column: str):
    try:
        import datasets
    except ImportError:
        raise UsageError("--dataset needs the datasets library: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # not found, offline, no such split...: datasets raises many types, its message says which
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UsageError(f"Could not load split {split!r} of dataset {name!r} ({reason}). Give a Hub dataset id or "
                         "a local folder of data files, and one of its splits with --split.") from None
    if column not in ds.column_names:
        raise UsageError(f"Dataset {name!r} has no column {column!r}; its columns are {', '.join(ds.column_names)}. "
                         "Name the image column with --image-column.")
    # bytes rather than PIL images: load_image stays the one decoder, as for files
    return ds.select_columns([column]).cast_column(column, datasets.Image(decode=False))


def collect_inputs(args) -> Inputs:
    files = file_inputs(args.inputs)
    rows = dataset_rows(args.dataset, args.split, args.image_column) if args.dataset else None
    keys = files + ([f"{args.dataset}:{args.split}:{i}" for i in range(len(rows))] if rows is not None else [])
    if not keys:
        raise UsageError(f"No photos in {' '.join(args.inputs) or args.dataset}: folders are searched for image "
                         "files (.jpg, .png, .webp, .heic...); name other files one by one or with a glob.")
    return Inputs(keys, len(files), rows, args.image_column)


def shard_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def merge_shards(table, folder: Path, order: dict[str, int]) -> None:
    """Move the rows of every process's shard into the table, in input order and once each, then delete the shards.
    Run by the main process at the end, and at the start for the shards a killed run left."""
    shards = sorted(folder.glob("process-*.jsonl"))
    if not shards:
        return
    done = {r["path"] for r in table.rows()}
    new = {}
    for path in shards:
        shard = JsonlTable(path, table.columns)
        shard.repair()
        for row in shard.rows():
            if row["path"] not in done:
                new.setdefault(row["path"], row)
    table.append(sorted(new.values(), key=lambda r: order.get(r["path"], len(order))))
    for path in shards:
        path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


class OneProcess:
    """accelerate's PartialState, as far as this module uses it, for a plain run: one process never imports
    accelerate (which imports torch, seconds of start-up, and is not in the serving stack)."""

    is_main_process, process_index, num_processes = True, 0, 1

    def wait_for_everyone(self) -> None:
        pass

    @contextlib.contextmanager
    def main_process_first(self):
        yield

    @contextlib.contextmanager
    def split_between_processes(self, items):
        yield items


def process_state():
    size = max(int(os.environ.get(v) or 1) for v in WORLD_SIZE_VARS)
    if size <= 1:
        return OneProcess()
    try:
        from accelerate import PartialState
    except ImportError:
        raise UsageError(f"Started as {size} processes, but accelerate is not installed to split the photos between "
                         "them: pip install accelerate, or run one process.") from None
    # cpu=True: the engines run on the CPU, and without it PartialState joins a process group only on accelerators
    return PartialState(cpu=True)


def batch_rows(clf: Classifier, keys: list[str], decoded: list[tuple[np.ndarray | None, str]]) -> list[dict]:
    ok = [k for k, (pixels, _) in enumerate(decoded) if pixels is not None]
    # the threads did the preprocessing; the engine runs here
    preds = clf.predict_pixels(np.stack([decoded[k][0] for k in ok])) if ok else []
    by_slot = dict(zip(ok, preds, strict=True))
    return [prediction_row(key, by_slot.get(k), error, clf.labels)
            for k, (key, (_, error)) in enumerate(zip(keys, decoded, strict=True))]


def predicted_batches(clf: Classifier, inputs: Inputs, batches: list[list[int]],
                      workers: int) -> Iterator[tuple[list[int], list[dict]]]:
    """(input indices, rows) per batch, in order; threads decode the next batches while the engine runs."""
    sources = ([inputs.source(i)[0] for i in batch] for batch in batches)
    for batch, decoded in zip(batches, decoded_batches(sources, clf.preprocessor, workers), strict=True):
        yield batch, batch_rows(clf, [inputs.keys[i] for i in batch], decoded)


def _extension(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "bin"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        fmt = "bin"
    return {"JPEG": ".jpg", "MPO": ".jpg"}.get(fmt, "." + fmt.lower())


def _same(dest: Path, source: ImageSource) -> bool:
    """dest already is this photo: placed by a run that was killed before it wrote the photo's row."""
    try:
        if dest.is_symlink():
            return isinstance(source, str) and os.readlink(dest) == os.path.abspath(source)
        if isinstance(source, bytes):
            return dest.stat().st_size == len(source) and dest.read_bytes() == source
        return filecmp.cmp(dest, source, shallow=False)
    except OSError:
        return False


def _place(dest: Path, source: ImageSource, copy: bool) -> None:
    """Create dest, or raise FileExistsError: never replace a photo that another process has just put there."""
    if isinstance(source, str) and not copy:
        dest.symlink_to(os.path.abspath(source))
        return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")  # whole before it gets its name: a kill leaves no half
    try:
        if isinstance(source, bytes):
            tmp.write_bytes(source)
        else:
            shutil.copy2(source, tmp)
        try:
            os.link(tmp, dest)  # unlike a rename, fails when dest exists
        except FileExistsError:
            raise
        except OSError:  # no hard links on this drive (FAT, exFAT, some shares): a rename will do
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def sort_into(root: Path, row: dict, source: ImageSource, name: str, *, copy: bool) -> None:
    """Link (or copy) the photo into root/<label>/, root/unsure/ or root/unreadable/; name-1.jpg on a clash."""
    folder = root / (UNREADABLE if row["error"] else UNSURE if row["abstained"] else row["label"])
    if isinstance(source, bytes) and not Path(name).suffix:
        name += _extension(source)
    stem, suffix = Path(name).stem, Path(name).suffix
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n in itertools.count():
            dest = folder / (f"{stem}-{n}{suffix}" if n else name)
            if _same(dest, source):
                return
            with contextlib.suppress(FileExistsError):  # taken: by another photo of that name, or just now
                _place(dest, source, copy)
                return
    except OSError as e:  # a photo that vanished or is a folder still has its row; only its copy is missing
        logger.warning("could not place %s in %s: %s", row["path"], folder, e)


def run(clf: Classifier, inputs: Inputs, batches: list[list[int]], sink, args, *, show: bool) -> None:
    with tqdm(total=sum(map(len, batches)), unit="img", desc="predict", disable=not show) as bar:
        for batch, rows in predicted_batches(clf, inputs, batches, workers=min(4, cpu_threads())):
            if args.sort_into:  # before the rows: a photo whose row is on disk is in its folder too
                for i, row in zip(batch, rows, strict=True):
                    sort_into(args.sort_into, row, *inputs.source(i), copy=args.copy)
            sink.append(rows)
            bar.update(len(rows))


def summarize(rows: list[dict], labels: list[str], new: int, seconds: float) -> dict:
    counts = collections.Counter(UNREADABLE if r["error"] else UNSURE if r["abstained"] else r["label"] for r in rows)
    return {"rows": len(rows), "new": new, "seconds": round(seconds, 2),
            "images_per_s": round(new / seconds, 2) if new and seconds > 0 else 0.0,
            "labels": {n: counts[n] for n in labels}, UNSURE: counts[UNSURE], UNREADABLE: counts[UNREADABLE]}


def print_summary(summary: dict, output: Path, engine: str) -> None:
    s = summary
    print(f"{output}: {s['rows']} photos ({s['new']} predicted now, {s['rows'] - s['new']} already there); "
          f"{s['images_per_s']:.1f} images/s on {engine}")
    counts = [*s["labels"].items(), (f"{UNSURE} (abstained)", s[UNSURE]), (UNREADABLE, s[UNREADABLE])]
    width = max(len(n) for n, _ in counts)
    for name, count in counts:
        print(f"  {name:<{width}}  {count:>7}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="parkclf predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files (any extension), folders (their image files, recursively) "
                   "or globs")
    p.add_argument("--dataset", help="the rows of a dataset (a Hub id or a local folder of data files), read with "
                   "datasets.load_dataset")
    p.add_argument("--split", default="train", help="the dataset's split")
    p.add_argument("--image-column", default="image", help="the dataset's image column")
    embedded = EMBEDDED_MODEL.is_dir()
    p.add_argument("--model", default=str(EMBEDDED_MODEL) if embedded else None, required=not embedded,
                   help="a checkpoint folder or Hub model id" + (" (default: the embedded model)" if embedded else ""))
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="auto: the app's choice (OpenVINO on the static int8 graph, else ONNX Runtime, else torch)")
    p.add_argument("--output", required=True, type=Path, help="the table, .csv, .jsonl or .parquet; rerunning the "
                   "same command adds only the photos it lacks")
    p.add_argument("--sort-into", type=Path, metavar="DIR", help="also place each photo in DIR/<label>/, "
                   f"DIR/{UNSURE}/ (abstained) or DIR/{UNREADABLE}/")
    p.add_argument("--copy", action="store_true", help="with --sort-into: copy the photos instead of symlinking them")
    p.add_argument("--batch-size", type=int, default=16, help="photos per forward pass")
    args = p.parse_args(argv)
    if not args.inputs and not args.dataset:
        raise UsageError("Nothing to predict: give image files, folders or globs, or --dataset.")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: give at least 1.")
    if args.copy and not args.sort_into:
        raise UsageError("--copy only applies with --sort-into DIR.")
    table_class(args.output)  # a bad extension is refused before the model loads, not after
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    state = process_state()
    with state.main_process_first():  # a Hub model or dataset downloads once; the other processes read the cache
        inputs = collect_inputs(args)
        clf = Classifier.from_pretrained(args.model, engine=args.engine)
    if args.sort_into and {UNSURE, UNREADABLE} & set(clf.labels):
        raise UsageError(f"The model has a class named {UNSURE!r} or {UNREADABLE!r}, which --sort-into keeps for "
                         "abstentions and unreadable files; rename the class (config.json id2label).")
    table = open_table(args.output, clf.labels)
    order, parts = {k: i for i, k in enumerate(inputs.keys)}, shard_dir(args.output)
    if state.is_main_process:  # before anyone reads the table: drop a torn row, take in a killed run's shards
        table.repair()
        merge_shards(table, parts, order)
    state.wait_for_everyone()
    done = {r["path"] for r in table.rows()}
    todo = [i for i, k in enumerate(inputs.keys) if k not in done]
    # Whole batches are split, so a photo meets the same batch-mates under any number of processes (same numbers).
    batches = [todo[j:j + args.batch_size] for j in range(0, len(todo), args.batch_size)]
    start = time.perf_counter()
    with state.split_between_processes(batches) as mine:
        if state.num_processes == 1:
            run(clf, inputs, mine, table, args, show=True)
        else:
            parts.mkdir(exist_ok=True)
            shard = JsonlTable(parts / f"process-{state.process_index}.jsonl", table.columns)
            run(clf, inputs, mine, shard, args, show=state.is_main_process)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    merge_shards(table, parts, order)
    table.finish()
    rows = table.rows()
    summary = summarize(rows, clf.labels, len(rows) - len(done), time.perf_counter() - start)
    print_summary(summary, args.output, clf.engine.name)
    return summary
