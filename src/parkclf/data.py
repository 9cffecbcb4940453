"""Imagefolder (or Hub dataset) -> clean, split, de-leaked DatasetDict plus a data report.

Every image is opened once through :func:`parkclf.images.load_image`: files it refuses are
listed in the report and dropped, never allowed to crash a run (pytorch/vision#864).
Near-duplicates across splits are found with perceptual hashes (imagehash) and dropped
from train, so validation and test measure photos the model has not seen.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, DatasetDict, concatenate_datasets
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

from .errors import UsageError
from .images import ImageError, image_files, is_hidden, load_image

logger = logging.getLogger(__name__)

# datasets' imagefolder list predates phone HEIC photos; pillow-heif reads them.
for _ext in (".heic", ".heif", ".avif"):
    if _ext not in ImageFolder.EXTENSIONS:
        ImageFolder.EXTENSIONS.append(_ext)

MIN_PER_CLASS_WARNING = 10
HASH_SIZE = 8
EXTRA = "extra"  # the --extra-dataset photos while they are scanned, before they join train
# Hamming distance on a 64-bit pHash at or below which two photos count as the same shot
# (re-encodes and resizes land at 0-4; different photos of one scene are usually > 10).
DUPLICATE_DISTANCE = 4


@dataclass
class DataReport:
    """What happened to the data; written to ``data_report.json``."""

    source: str = ""
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    hidden_skipped: list[str] = field(default_factory=list)
    duplicates_dropped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # photos from --hard-negatives-dir in the train split, and how many times each epoch sees each of them
    hard_negatives: dict[str, int] = field(default_factory=dict)
    # --extra-dataset: where its photos came from, and how many readable ones it offered the train split (less any
    # that duplicates_dropped lists)
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _example_name(image: dict) -> str:
    return image.get("path") or "<bytes>"


def load_source(data_dir: str | None = None, dataset: str | None = None, *,
                image_column: str = "image", label_column: str = "label") -> DatasetDict:
    """Load an imagefolder or Hub dataset with images left undecoded (we decode them ourselves)."""
    if bool(data_dir) == bool(dataset):
        raise UsageError("Give exactly one of --data-dir DIR (an imagefolder) or --dataset HUB_ID.")
    if data_dir:
        root = Path(data_dir)
        if not root.is_dir():
            raise UsageError(f"No data folder at {root}; expected {root}/<class>/*.jpg "
                                    f"(or {root}/train/<class>/*.jpg with optional validation/ and test/).")
        subdirs = [p for p in root.iterdir() if p.is_dir() and not is_hidden(p)]
        if not subdirs:
            raise UsageError(f"No class folders in {root}; expected {root}/<class>/*.jpg")
        ds = datasets.load_dataset("imagefolder", data_dir=str(root))
    else:
        try:
            ds = datasets.load_dataset(dataset)
        except Exception as e:  # unreachable Hub, unknown id, no cache offline: one line naming the fix
            raise UsageError(f"Could not load the dataset '{dataset}' ({str(e).strip().splitlines()[0][:160]}). "
                             "Pass a local imagefolder with --data-dir, or set HF_DATASETS_OFFLINE=1 with the "
                             "dataset already in the cache.") from None
    if not isinstance(ds, DatasetDict):
        ds = DatasetDict({"train": ds})
    if data_dir and "label" not in next(iter(ds.values())).column_names:
        # imagefolder drops the label column when there is a single class folder
        raise UsageError(f"Found 1 class folder in {data_dir}; a classifier needs at least 2 class folders "
                         f"({data_dir}/<class>/*.jpg).")
    ds = ds.rename_columns({c: n for c, n in ((image_column, "image"), (label_column, "label")) if c != n})
    for split in ds.values():
        if "image" not in split.column_names or "label" not in split.column_names:
            raise UsageError(f"The dataset has columns {split.column_names}; pass --image-column and "
                             "--label-column to name the image and the label columns.")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds.select_columns(["image", "label"])


def select_classes(ds: DatasetDict, classes: list[str]) -> DatasetDict:
    """Keep only the named class folders, relabelled 0..n-1 in the given order."""
    names = ds["train"].features["label"].names
    missing = [c for c in classes if c not in names]
    if missing:
        raise UsageError(f"--classes {missing} not found; the data has class folders {names}.")
    old_to_new = {names.index(c): i for i, c in enumerate(classes)}
    features = datasets.Features({"image": datasets.Image(decode=False), "label": ClassLabel(names=list(classes))})
    out = DatasetDict()
    for split, d in ds.items():
        d = d.filter(lambda y: y in old_to_new, input_columns="label", keep_in_memory=True)
        out[split] = d.map(lambda y: {"label": old_to_new[y]}, input_columns="label", features=features,
                           keep_in_memory=True)
    return out


def other_class_folders(data_dir: str, classes: list[str]) -> list[str]:
    """The class folders of ``data_dir`` that ``classes`` leaves out, in name order (so the split is stable)."""
    root = Path(data_dir)
    return [str(p) for p in sorted(root.iterdir()) if p.is_dir() and not is_hidden(p) and p.name not in classes]


def _image_files(root: Path) -> list[str]:
    return image_files(root, ImageFolder.EXTENSIONS)


def load_extra(source: str, features: datasets.Features) -> datasets.Dataset:
    """Photos for the training split alone, e.g. the app's corrections: a Hub dataset id (the app's FEEDBACK_DATASET)
    or a local folder (its FEEDBACK_DIR: ``<run>/<label>/*.jpg`` with ``metadata.jsonl``, or any imagefolder),
    labelled by name as ``features`` (the training data's) has them. Every split of ``source`` counts."""
    if Path(source).is_dir():
        # drop_labels=False: the labels come from metadata.jsonl where there is one, else from the folder names,
        # even when the folder has a single class
        loaded = datasets.load_dataset("imagefolder", data_dir=source, drop_labels=False)
    else:
        try:
            loaded = datasets.load_dataset(source)
        except Exception as e:  # unreachable Hub, unknown id, no cache offline: one line naming the fix
            raise UsageError(f"--extra-dataset {source} is not a folder here, and could not be loaded as a Hub "
                             f"dataset ({str(e).strip().splitlines()[0][:160]}). Give a local folder, or a Hub id "
                             "you can read (HF_TOKEN for a private one).") from None
    splits = list(loaded.values()) if isinstance(loaded, DatasetDict) else [loaded]
    if not splits or "label" not in splits[0].column_names:
        raise UsageError(f"--extra-dataset {source} has no labels; expected <label>/*.jpg folders, or a metadata.jsonl "
                         "with file_name and label as the app writes.")
    ds = concatenate_datasets([s.cast_column("image", datasets.Image(decode=False)) for s in splits])
    names, label = features["label"].names, ds.features["label"]
    given = [label.int2str(y) if isinstance(label, ClassLabel) else y for y in ds["label"]]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UsageError(f"--extra-dataset {source} has photos labelled {unknown}, which the model does not have as "
                         f"classes ({', '.join(names)}); remove those photos, or train on data with those classes.")
    return datasets.Dataset.from_dict({"image": ds["image"], "label": [names.index(n) for n in given]},
                                      features=features)


def add_negatives(ds: DatasetDict, dirs: list[str], label: str) -> DatasetDict:
    """Add every image under ``dirs`` (any layout) to train as one out-of-scope class ``label``."""
    names = ds["train"].features["label"].names
    if label in names:
        raise UsageError(f"The data already has a class called '{label}'; rename that folder.")
    paths = []
    for d in dirs:
        if not Path(d).is_dir():
            raise UsageError(f"--negatives-dir {d} is not a folder of photos.")
        paths += _image_files(Path(d))
    if not paths:
        raise UsageError(f"No images found under --negatives-dir {dirs}.")
    features = datasets.Features({"image": datasets.Image(decode=False), "label": ClassLabel(names=names + [label])})
    neg = datasets.Dataset.from_dict({"image": [{"path": p, "bytes": None} for p in paths],
                                      "label": [len(names)] * len(paths)}, features=features)
    ds["train"] = concatenate_datasets([ds["train"].cast(features), neg])
    for split in [s for s in ds if s != "train"]:
        ds[split] = ds[split].cast(features)
    return ds


def check_hard_negatives(negatives: list[str], hard: list[str]) -> None:
    """A folder given to both --negatives-dir and --hard-negatives-dir would count its photos twice."""
    def nested(a: str, b: str) -> bool:  # the same folder, or one inside the other
        a, b = os.path.abspath(a), os.path.abspath(b)
        return os.path.commonpath([a, b]) in (a, b)

    both = [d for d in hard if any(nested(d, n) for n in negatives)]
    if both:
        raise UsageError(f"{both} overlap --negatives-dir {negatives}; give each negatives folder once, under "
                         "--hard-negatives-dir if it should be repeated, else under --negatives-dir.")


def repeat_hard_negatives(split: datasets.Dataset, dirs: list[str], times: int) -> tuple[datasets.Dataset, int]:
    """``split`` plus ``times - 1`` more copies of its rows whose photo lies under ``dirs`` (oversampling; each
    copy gets its own random crop). Returns the new split and how many distinct rows were repeated."""
    # abspath, not resolve: a symlinked photo belongs to the folder it was listed from
    roots = tuple(os.path.join(os.path.abspath(d), "") for d in dirs)
    rows = [i for i, im in enumerate(split["image"])
            if im.get("path") and os.path.abspath(im["path"]).startswith(roots)]
    if not rows or times <= 1:
        return split, len(rows)
    return concatenate_datasets([split] + [split.select(rows)] * (times - 1)), len(rows)


def load_groups(tsv: str) -> dict[str, str]:
    """file name -> source (photographer / repository), from a TSV with 'file' and 'repo' columns."""
    import csv

    with open(tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"file", "repo"} <= set(rows[0]):
        raise UsageError(f"{tsv} needs tab-separated columns 'file' and 'repo'.")
    return {Path(r["file"]).name: r["repo"] for r in rows}


def _grouped_split(split: datasets.Dataset, frac: float, groups: dict[str, str], seed: int):
    """Hold out whole sources: no photographer is in both parts."""
    from sklearn.model_selection import StratifiedGroupKFold

    g = [groups.get(Path(_example_name(im)).name, _example_name(im)) for im in split["image"]]
    folds = StratifiedGroupKFold(n_splits=max(2, round(1 / frac)), shuffle=True, random_state=seed)
    keep, held = next(folds.split(np.zeros(len(g)), split["label"], g))
    return split.select(keep), split.select(held)


def _scan(split: datasets.Dataset, draft_size: int) -> datasets.Dataset:
    """Open every image once: keep a perceptual hash, or the reason it is unreadable."""
    import imagehash

    def scan(ex):
        try:
            img = load_image(ex["image"]["path"] if ex["image"].get("bytes") is None else ex["image"]["bytes"],
                             draft_size=draft_size)
            return {"phash": str(imagehash.phash(img, hash_size=HASH_SIZE)), "error": ""}
        except ImageError as e:
            return {"phash": "", "error": str(e)}
        except FileNotFoundError as e:
            return {"phash": "", "error": f"missing file ({e})"}

    # keep_in_memory: several DDP ranks scan the same files at once; no shared cache file to race on
    return split.map(scan, desc="checking images", load_from_cache_file=False, keep_in_memory=True)


def _drop_leaks(ds: DatasetDict, report: DataReport) -> DatasetDict:
    import imagehash

    held = [(imagehash.hex_to_hash(h), _example_name(im), s)
            for s in ("validation", "test") if s in ds
            for h, im in zip(ds[s]["phash"], ds[s]["image"], strict=True)]
    if not held:
        return ds
    keep = []
    for h, im in zip(ds["train"]["phash"], ds["train"]["image"], strict=True):
        h = imagehash.hex_to_hash(h)
        match = next(((name, s) for hh, name, s in held if h - hh <= DUPLICATE_DISTANCE), None)
        keep.append(match is None)
        if match:
            report.duplicates_dropped.append({"train": _example_name(im), "matches": match[0], "split": match[1]})
    ds["train"] = ds["train"].select([i for i, k in enumerate(keep) if k])
    return ds


def prepare(ds: DatasetDict, *, draft_size: int, validation_fraction: float = 0.1, test_fraction: float = 0.1,
            seed: int = 42, source: str = "", groups: dict[str, str] | None = None,
            validation_seeds: list[int] | None = None,
            extra: datasets.Dataset | None = None) -> tuple[list[DatasetDict], DataReport]:
    """Sanitise, split (stratified, seeded) and de-leak: one train/validation/test DatasetDict per validation seed,
    and the report of the first.

    Every image is opened once. The test split is drawn first, with ``seed`` alone; each of ``validation_seeds``
    (default ``[seed]``) then draws its own validation split from the rest, so models trained on different
    validation splits (a soup's members) share one test split and none of them trains on a test photo.
    ``extra`` photos (:func:`load_extra`) join each train split after the others are drawn: validation and test are
    the same with or without them."""
    report = DataReport(source=source)
    names = _check_labels(ds, source)
    report.classes = list(names)
    ds = _scan_all(DatasetDict({**ds, **({EXTRA: extra} if extra is not None else {})}), draft_size, report)
    extra = ds.pop(EXTRA, None)
    if extra is not None:
        report.extra = {"photos": len(extra)}
    counts = {names[k]: v for k, v in sorted(_counts(ds["train"]).items())}
    too_few = [n for n in names if counts.get(n, 0) < 2]
    if too_few:
        raise UsageError(f"Class folder(s) {too_few} in {source} have fewer than 2 readable images; "
                         "add photos or remove the folder.")
    total = sum(len(s) for s in ds.values())
    ds = _hold_out(ds, "test", test_fraction, total, seed, groups, len(names))
    members = []
    for i, validation_seed in enumerate(validation_seeds or [seed]):
        member = _hold_out(DatasetDict(ds), "validation", validation_fraction, total, validation_seed, groups,
                           len(names))
        if extra is not None:
            member["train"] = concatenate_datasets([member["train"], extra])
        member = _drop_leaks(member, report if i == 0 else DataReport())
        members.append(DatasetDict({k: member[k].remove_columns(["phash", "error"]) for k in member}))
    _count(members[0], names, report)
    return members, report


def _check_labels(ds: DatasetDict, source: str) -> list[str]:
    if "train" not in ds:
        raise UsageError(f"The data has splits {list(ds)}; one must be called 'train'.")
    names = ds["train"].features["label"].names if isinstance(ds["train"].features["label"], ClassLabel) else None
    if names is None:
        raise UsageError("The label column must be a ClassLabel (class names), as imagefolder makes it.")
    if len(names) < 2:
        raise UsageError(f"Found {len(names)} class ({names}) in {source}; a classifier needs at least 2 class "
                         "folders.")
    return names


def _scan_all(ds: DatasetDict, draft_size: int, report: DataReport) -> DatasetDict:
    """Every split scanned once; unreadable files listed in the report and dropped."""
    scanned = DatasetDict()
    for split_name, split in ds.items():
        split = _scan(split, draft_size)
        bad = [i for i, e in enumerate(split["error"]) if e]
        for i in bad:
            report.unreadable.append({"file": _example_name(split[i]["image"]), "error": split[i]["error"]})
        bad_rows = set(bad)
        scanned[split_name] = split.select([i for i in range(len(split)) if i not in bad_rows])
    if report.unreadable:
        logger.warning("Skipped %d unreadable file(s); see data_report.json", len(report.unreadable))
    return scanned


def _hold_out(ds: DatasetDict, split_name: str, frac: float, total: int, seed: int, groups, n_classes: int):
    """Draw ``split_name`` from train (stratified, or by whole sources with ``groups``) unless the data has it."""
    if split_name in ds or frac <= 0:
        return ds
    remaining = len(ds["train"])
    n = max(n_classes, round(frac * total))
    if remaining - n < n_classes:
        raise UsageError(f"Too few images ({remaining}) to hold out a {split_name} split; add photos.")
    if groups:
        ds["train"], ds[split_name] = _grouped_split(ds["train"], n / remaining, groups, seed)
    else:
        parts = ds["train"].train_test_split(test_size=n, stratify_by_column="label", seed=seed, keep_in_memory=True)
        ds["train"], ds[split_name] = parts["train"], parts["test"]
    return ds


def _count(ds: DatasetDict, names: list[str], report: DataReport) -> None:
    for split_name, split in ds.items():
        c = _counts(split)
        report.counts[split_name] = {names[k]: c.get(k, 0) for k in range(len(names))}
    for n, c in report.counts["train"].items():
        if c < MIN_PER_CLASS_WARNING:
            msg = f"Class '{n}' has only {c} training images; expect weak results below {MIN_PER_CLASS_WARNING}."
            report.warnings.append(msg)
            logger.warning(msg)


def _counts(split: datasets.Dataset) -> dict[int, int]:
    out: dict[int, int] = {}
    for y in split["label"]:
        out[y] = out.get(y, 0) + 1
    return out


def list_hidden(data_dir: str | None) -> list[str]:
    if not data_dir:
        return []
    return sorted(os.path.relpath(os.path.join(r, f), data_dir)
                  for r, _, fs in os.walk(data_dir) for f in fs if is_hidden(f))
