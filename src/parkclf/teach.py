"""``parkclf teach``: a new classifier from a few photos per class, in seconds, with no torch.

    parkclf teach photos/ --output-dir out/my-classes            # photos/<class>/*.jpg, the embedded model's backbone
    parkclf teach photos/ --output-dir out/birds --base out/my-model     # any checkpoint with onnx/

Teaching is serving plus one small fit. The base checkpoint's serving engine computes each photo's class token (the
classifier's input); a multinomial logistic regression on those features becomes the new classifier, with its
regularisation chosen by k-fold cross-validation, and the same folds' held-out answers give the metrics, the
temperature and the abstain threshold (:mod:`parkclf.calibration`). Where the base ships a background bank
(``teach_background.npz``: features of other photos in its own feature space), the bank is one more class, "none of
these", so that a photo unlike all of the visitor's classes can get that answer (:func:`fit_classes`). The new
checkpoint is the base one with the classifier swapped: ``model.safetensors``, ``config.json``, the ONNX graphs and
a model card. It loads with ``transformers.pipeline``, transformers.js and ``MODEL_ID=folder python app.py``.

The library API, for the command and the app's "Teach it" tab::

    taught = teach({"beach": [path, ...], "forest": [bytes, ...]}, "out/model", progress=lambda done, total: ...)
    taught.metrics["accuracy"], taught.folder, taught.skipped

A photo is an :data:`~parkclf.images.ImageSource` (a path, bytes, a file object) or a ``(name, source)`` pair, for
bytes that have a name to be listed by (a zip entry); messages name a photo by its class and file name, never by
the folder it sits in.

Bad input raises :class:`TeachError` (a :class:`~parkclf.errors.UsageError`) with one sentence a person can act on
(a base model that cannot be loaded, or an output folder that holds other files, raise a plain UsageError);
unreadable photos are skipped and listed in :attr:`Taught.skipped`, and a photo sent in two classes is kept in the
first and listed in :attr:`Taught.duplicates`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import calibration
from .classifier import EMBEDDED_MODEL, Classifier
from .errors import UsageError
from .hardware import cpu_threads
from .head import fit_head, report
from .images import MAX_BYTES, ImageError, ImageSource, image_files, is_hidden
from .images import price as image_price
from .processing import decoded_batches, draft_size


class TeachError(UsageError):
    """Photos or class names that cannot be taught; the message says which and what to do."""


@dataclass(frozen=True)
class TeachLimits:
    """What one teaching run may hold. The app passes these; the command uses the defaults."""

    min_classes: int = 2
    max_classes: int = 10
    min_photos: int = 2  # readable photos per class
    max_per_class: int = 200  # photos sent per class, readable or not
    max_total: int = 1000  # photos sent in all
    max_pixels: int = 3_000_000_000  # pixels the run may decode, priced from the headers before decoding
    max_name_length: int = 64  # characters of a class name (it becomes a folder name and a label)


@dataclass
class Taught:
    """What :func:`teach` made: the checkpoint folder and what a person reads about it."""

    folder: Path  # the new checkpoint (save_pretrained layout, with onnx/ and README.md)
    labels: list[str]  # class names, in the order of the classifier's outputs (config.json id2label)
    # held-out figures: accuracy, macro_f1, per_class {label: {precision, recall, f1, support}}, confusion (list of
    # lists, rows = true class, columns = predicted, in ``labels`` order), method ("5-fold", ...), n_photos,
    # C (the regularisation picked), calibration_temperature, abstain_threshold, keep_rate (held-out photos answered)
    metrics: dict
    counts: dict[str, int]  # photos per class that went into the fit
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why it could not be read)
    duplicates: list[str] = field(default_factory=list)  # one sentence per copy left out
    seconds: float = 0.0  # wall time of the whole run


def photos_from_folder(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``root/<class>/*`` -> {class: image files (recursively, sorted)}; hidden folders and files are skipped."""
    base = Path(root)
    if not base.is_dir():
        raise TeachError(f"No folder {base}; give a folder of class folders: {base}/<class>/*.jpg.")
    classes = sorted(p for p in base.iterdir() if p.is_dir() and not is_hidden(p))
    if not classes:
        raise TeachError(f"No class folders in {base}; expected {base}/<class>/*.jpg, one folder per class.")
    return {p.name: [Path(f) for f in image_files(p)] for p in classes}


# The abstain threshold answers this share of the held-out photos. Without a background bank it is high, as in
# training: the held-out photos come from the same sender as the training ones, and photos from elsewhere score
# lower. With one, "none of these" is a class of its own, and a lower rate buys most of the abstaining on classes the
# model was never taught (experiments/teach_other.py; docs/results.md).
KEEP_RATE = 0.98
KEEP_RATE_WITH_BACKGROUND = 0.86
BACKGROUND_FILE = "teach_background.npz"  # a base checkpoint's bank of other photos' features (see background())
NONE_OF_THESE = "none of these"  # the taught model's out-of-scope label, when its base has a background bank
BATCH = 16  # photos per forward pass: the OpenVINO engine's full batch
MAX_NAME_BYTES = 255  # a folder name's limit on Linux and macOS, in UTF-8 bytes (found fuzzing: 64 emoji are 256)
FORBIDDEN = set('/\\:*?"<>|')  # not in a folder name on Linux, macOS or Windows
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class Photo:
    label: int  # position of its class in the labels
    name: str  # what the messages call it: class/file name
    source: ImageSource
    key: str | None = None  # sha256 of its bytes: spots a copy, and finds its features in a cache


Features = MutableMapping[str, np.ndarray]  # photo sha256 -> its feature row, for one base model


def check_names(names: Sequence[str], limits: TeachLimits) -> list[str]:
    """The class names as labels (surrounding spaces dropped); TeachError for an empty, duplicated or unusable one."""
    labels = [str(n).strip() for n in names]
    if len(labels) < limits.min_classes:
        raise TeachError(f"Teaching needs at least {limits.min_classes} classes; this has {len(labels)}"
                         f"{' (' + ', '.join(labels) + ')' if labels else ''}. Add another class of photos.")
    if len(labels) > limits.max_classes:
        raise TeachError(f"At most {limits.max_classes} classes per model; this has {len(labels)}. Leave some out.")
    seen: dict[str, str] = {}
    for i, label in enumerate(labels, 1):
        if not label:
            raise TeachError(f"Class {i} has no name; give every class a name (it becomes the label).")
        if len(label) > limits.max_name_length or len(label.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise TeachError(f"The class name '{label[:20]}...' is {len(label)} characters long; use at most "
                             f"{limits.max_name_length} (fewer where they are not plain letters).")
        if FORBIDDEN & set(label) or any(ord(c) < 32 for c in label) or label.startswith(".") \
                or label.split(".")[0].lower() in RESERVED:
            raise TeachError(f"The class name {label!r} cannot be a folder name: leave out / \\ : * ? \" < > | and "
                             "control characters, do not start it with a dot, and avoid CON, NUL, COM1 and the like.")
        if label.casefold() == NONE_OF_THESE:
            raise TeachError(f"{label!r} is what the model answers for a photo unlike all of its classes; give this "
                             "class another name.")
        if label.casefold() in seen:
            raise TeachError(f"Two classes are called {seen[label.casefold()]!r} and {label!r}; give each class its "
                             "own name (folders that differ only in case are one folder on Windows and macOS).")
        seen[label.casefold()] = label
    return labels


def _name(source: ImageSource, label: str, i: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"{label}/{Path(source).name}"
    named = getattr(source, "name", None)
    return f"{label}/{Path(named).name}" if isinstance(named, str) else f"{label}/photo {i + 1}"


def _content(source: ImageSource) -> bytes | None:
    """The bytes that identify a photo, for spotting the same one in two classes (None: unreadable, left to the
    decoder to explain)."""
    from PIL import Image

    try:
        if isinstance(source, (bytes, bytearray)):
            return bytes(source)
        if isinstance(source, Image.Image):
            return source.tobytes()
        if isinstance(source, (str, os.PathLike)):
            return Path(source).read_bytes() if os.path.getsize(source) <= MAX_BYTES else None
        data = source.read()
        source.seek(0)
        return data
    except OSError:
        return None


def collect(photos: Mapping[str, Sequence[ImageSource | tuple[str, ImageSource]]], labels: list[str],
            limits: TeachLimits) -> tuple[list[Photo], list[str]]:
    """The photos in class order, within the caps, each once: (photos, one sentence per copy left out)."""
    total = sum(len(v) for v in photos.values())
    for label, sources in zip(labels, photos.values(), strict=True):
        if len(sources) > limits.max_per_class:
            raise TeachError(f"The class {label!r} has {len(sources)} photos; at most {limits.max_per_class} per "
                             "class. Leave some out.")
    if total > limits.max_total:
        raise TeachError(f"These classes hold {total} photos; at most {limits.max_total} in all. Leave some out.")
    first: dict[str, str] = {}
    kept, duplicates = [], []
    for c, (label, sources) in enumerate(zip(labels, photos.values(), strict=True)):
        for i, item in enumerate(sources):
            given, source = item if isinstance(item, tuple) else (None, item)
            name = f"{label}/{Path(given).name}" if given else _name(source, label, i)
            data = _content(source)
            key = hashlib.sha256(data).hexdigest() if data else None
            if key in first:
                duplicates.append(f"{name} is the same photo as {first[key]}; the copy in {label!r} was left out.")
                continue
            if key:
                first[key] = name
            kept.append(Photo(c, name, source, key))
    return kept, duplicates


def price(kept: list[Photo], draft: int, limits: TeachLimits) -> list[tuple[str, str]]:
    """Refuse the run before decoding anything when its photos would decode more than the pixel budget; a photo
    whose header cannot be read is dropped from ``kept`` and returned as (name, why)."""
    total, skipped = 0, []
    for photo in list(kept):
        try:
            total += image_price(photo.source, draft_size=draft)
        except ImageError as e:
            skipped.append((photo.name, str(e)))
            kept.remove(photo)
        except OSError as e:
            skipped.append((photo.name, f"The file could not be read ({e.strerror or e})."))
            kept.remove(photo)
    if total > limits.max_pixels:
        raise TeachError(f"These photos would decode to {total / 1e6:.0f} megapixels; a teaching run may hold at most "
                         f"{limits.max_pixels / 1e6:.0f}. Send fewer or smaller photos (JPEG photos cost least).")
    return skipped


def features(clf: Classifier, kept: list[Photo], progress: Callable[[int, int], None] | None,
             cache: Features | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(features, class of each, (name, why) for photos that could not be decoded), through the serving engine.
    Photos whose features ``cache`` holds are not decoded again; the new ones are added to it."""
    if not hasattr(clf.engine, "features"):
        raise TeachError(f"{clf.folder} has no onnx/ export to compute features with; teach from a checkpoint "
                         "with onnx/ (run `parkclf export` on it once).")
    cache = {} if cache is None else cache
    found = {i: cache[p.key] for i, p in enumerate(kept) if p.key in cache}
    todo = [i for i in range(len(kept)) if i not in found]
    batches = [todo[j:j + BATCH] for j in range(0, len(todo), BATCH)]
    skipped, done = [], len(found)
    if progress and done:
        progress(done, len(kept))
    decoded = decoded_batches(([kept[i].source for i in b] for b in batches), clf.preprocessor, min(4, cpu_threads()))
    for batch, pixels in zip(batches, decoded, strict=True):
        ok = [(i, px) for i, (px, _) in zip(batch, pixels, strict=True) if px is not None]
        skipped += [(kept[i].name, why) for i, (px, why) in zip(batch, pixels, strict=True) if px is None]
        if ok:
            for (i, _), row in zip(ok, clf.engine.features(np.stack([px for _, px in ok])), strict=True):
                found[i] = row
                if kept[i].key is not None:
                    cache[kept[i].key] = row
        done += len(batch)
        if progress:
            progress(done, len(kept))
    order = sorted(found)
    x = np.stack([found[i] for i in order]) if order else np.zeros((0, 0), np.float32)
    return x, np.asarray([kept[i].label for i in order], np.int64), skipped


def _keyed(photos: Sequence[ImageSource | tuple[str, ImageSource]]) -> list[Photo]:
    kept = []
    for i, item in enumerate(photos):
        given, source = item if isinstance(item, tuple) else (None, item)
        data = _content(source)
        if data:
            kept.append(Photo(0, given or _name(source, "", i), source, hashlib.sha256(data).hexdigest()))
    return kept


def unread(photos: Sequence[ImageSource | tuple[str, ImageSource]], cache: Features) -> list:
    """The items of ``photos`` whose features ``cache`` lacks (unreadable ones included), as given."""
    keys = {id(p.source): p.key for p in _keyed(photos)}
    return [item for item in photos if keys.get(id(item[1] if isinstance(item, tuple) else item)) not in cache]


def precompute(photos: Sequence[ImageSource | tuple[str, ImageSource]], cache: Features, *,
               base: str | os.PathLike | Classifier | None = None, limits: TeachLimits = TeachLimits(),
               progress: Callable[[int, int], None] | None = None) -> int:
    """Compute the features of ``photos`` into ``cache`` ahead of :func:`teach` with the same cache and base (the
    app does this as photos are dropped, so that Teach only fits). Returns how many of ``photos`` the cache holds.

    Nothing is refused here: a photo that cannot be read is left out, and :func:`teach` says why. The cache grows
    to at most ``limits.max_total`` photos, and a call past the pixel budget computes nothing."""
    kept = _keyed(photos)
    todo = list({p.key: p for p in kept if p.key not in cache}.values())[:max(0, limits.max_total - len(cache))]
    if todo:
        clf = base_classifier(base)
        try:
            price(todo, draft_size(clf.preprocessor), limits)
        except TeachError:
            return sum(p.key in cache for p in kept)
        features(clf, todo, progress, cache)
    return sum(p.key in cache for p in kept)


def check_counts(y: np.ndarray, labels: list[str], skipped: list[tuple[str, str]], duplicates: list[str],
                 limits: TeachLimits) -> None:
    counts = np.bincount(y, minlength=len(labels))
    for label, n in zip(labels, counts, strict=True):
        if n < limits.min_photos:
            lost = sum(1 for name, _ in skipped if name.startswith(f"{label}/"))
            copies = sum(1 for sentence in duplicates if sentence.startswith(f"{label}/"))
            why = [f"{lost} could not be read"] if lost else []
            if copies:
                why.append(f"{copies} {'is a photo' if copies == 1 else 'are photos'} already in another class")
            why_text = f" ({'; '.join(why)})" if why else ""
            raise TeachError(f"The class {label!r} has {n} readable photo{'s' if n != 1 else ''}{why_text}; each "
                             f"class needs at least {limits.min_photos}. Add photos to it.")


@dataclass(frozen=True)
class Background:
    """Features of photos that are none of anyone's classes, in a base checkpoint's own feature space: taught as one
    more class, "none of these", so that a taught model has seen something unlike the visitor's photos."""

    features: np.ndarray  # (rows, features) float32
    about: str  # what the rows are built from, for the card


def background(clf: Classifier, width: int) -> Background | None:
    """The base checkpoint's ``teach_background.npz`` (``features``, ``about``), or None where it has none or its rows
    are not ``width`` wide (a bank is only valid in the feature space it was computed in)."""
    path = clf.folder / BACKGROUND_FILE if clf.folder is not None else None
    if path is None or not path.exists():
        return None
    with np.load(path, allow_pickle=False) as bank:
        rows, about = bank["features"].astype(np.float32), str(bank["about"])
    return Background(rows, about) if rows.ndim == 2 and rows.shape[1] == width else None


def base_classifier(base: str | os.PathLike | Classifier | None) -> Classifier:
    if isinstance(base, Classifier):
        return base
    return Classifier.from_pretrained(str(base or EMBEDDED_MODEL))


def base_names(base: str | os.PathLike | Classifier | None, folder: Path) -> tuple[str, str | None]:
    """(what the card calls the base, the Hub id its metadata names): a Hub id as given; for a local folder, its
    name, and the Hub id its own card names as its base."""
    if isinstance(base, str) and not Path(base).is_dir():
        return base, base
    card = folder / "README.md"
    if card.exists():
        from huggingface_hub import ModelCard

        return folder.name, ModelCard.load(card).data.base_model
    return folder.name, None


def write_checkpoint(clf: Classifier, base, out: Path, labels: list[str], fit, calib: dict, metrics: dict,
                     counts: dict[str, int], repo_id: str | None = None) -> Path:
    from . import checkpoint

    if clf.folder is None:
        raise TeachError("The base model has no checkpoint folder to copy; load it with Classifier.from_pretrained.")
    name, hub_id = base_names(base, clf.folder)
    return checkpoint.write(clf.folder, out, labels=labels, weight=fit.weight, bias=fit.bias, calib=calib,
                            metrics=metrics, counts=counts, base_name=name, base_model=hub_id,
                            n_base=len(clf.all_labels), repo_id=repo_id)


def fit_classes(x: np.ndarray, y: np.ndarray, labels: list[str], bank: Background | None) -> tuple:
    """(the head, its calibration, the held-out metrics) for features ``x`` of classes ``y``. With a background
    bank its rows are one more class, "none of these", and the threshold answers KEEP_RATE_WITH_BACKGROUND of the
    held-out photos of the taught classes; the metrics are always on the taught classes' photos alone, their
    answer being the best taught class."""
    n = len(labels)
    if bank is not None:
        x, y = np.concatenate([x, bank.features]), np.concatenate([y, np.full(len(bank.features), n)])
    all_labels = [*labels, NONE_OF_THESE] if bank is not None else labels
    fit = fit_head(x, y, len(all_labels))
    ood = NONE_OF_THESE if bank is not None else None
    calib = calibration.fit(fit.heldout_logits, y, all_labels, ood,
                            keep_rate=KEEP_RATE_WITH_BACKGROUND if bank is not None else KEEP_RATE)
    taught = y < n
    probs, score = calibration.in_scope_scores(fit.heldout_logits[taught], all_labels,
                                               calib["calibration_temperature"], ood)
    metrics = {**report(y[taught], probs.argmax(-1), labels), "method": f"{fit.folds}-fold",
               "n_photos": int(taught.sum()), "C": fit.C, **calib,
               "keep_rate": float((score >= calib["abstain_threshold"]).mean())}
    if bank is not None:  # and how much of the bank itself the held-out models abstained on
        _, other = calibration.in_scope_scores(fit.heldout_logits[~taught], all_labels,
                                               calib["calibration_temperature"], ood)
        metrics["background"] = {"rows": len(bank.features), "about": bank.about,
                                 "abstained": float((other < calib["abstain_threshold"]).mean())}
    return fit, calib, metrics


def teach(photos: Mapping[str, Sequence[ImageSource | tuple[str, ImageSource]]], output_dir: str | os.PathLike, *,
          base: str | os.PathLike | Classifier | None = None, limits: TeachLimits = TeachLimits(),
          progress: Callable[[int, int], None] | None = None, cache: Features | None = None,
          repo_id: str | None = None) -> Taught:
    """Teach a new classifier on ``photos`` ({class name: photos}, in label order) and write it to ``output_dir``.

    ``base``: a checkpoint folder or Hub id with ``onnx/`` whose backbone is reused (default: the embedded model),
    or a loaded :class:`~parkclf.classifier.Classifier` (the app's own: its compiled engine is reused).
    ``progress(done, total)`` is called after each batch of photos has been through the backbone.
    ``cache``: {photo sha256: features} kept for this base by earlier runs or :func:`precompute`; photos found there
    are not computed again, and the new ones are added.
    ``repo_id``: what the card's "Use it" snippets load, a Hub id or a folder name (default: ``output_dir``).
    """
    from .checkpoint import check_output_dir

    start = time.perf_counter()
    labels = check_names(list(photos), limits)
    check_output_dir(Path(output_dir))
    kept, duplicates = collect(photos, labels, limits)
    clf = base_classifier(base)
    skipped = price(kept, draft_size(clf.preprocessor), limits)
    x, y, unreadable = features(clf, kept, progress, cache)
    skipped += unreadable
    check_counts(y, labels, skipped, duplicates, limits)
    bank = background(clf, x.shape[1])
    fit, calib, metrics = fit_classes(x, y, labels, bank)
    counts = {label: int(n) for label, n in zip(labels, np.bincount(y, minlength=len(labels)), strict=True)}
    folder = write_checkpoint(clf, base, Path(output_dir), [*labels, NONE_OF_THESE] if bank else labels, fit, calib,
                              metrics, counts, repo_id)
    return Taught(folder=folder, labels=labels, metrics=metrics, counts=counts, skipped=skipped,
                  duplicates=duplicates, seconds=time.perf_counter() - start)


def summary(taught: Taught) -> str:
    """What the command prints at the end: held-out figures, per class, what was left out, where the model went."""
    m = taught.metrics
    width = max(len(n) for n in taught.labels)
    lines = [f"Held-out accuracy {m['accuracy']:.3f} (macro-F1 {m['macro_f1']:.3f}; {m['method']} cross-validation "
             f"on {m['n_photos']} photos, each scored by a model fitted without it)",
             f"  {'class':<{width}}  photos  precision  recall     F1"]
    for name in taught.labels:
        row = m["per_class"][name]
        lines.append(f"  {name:<{width}}  {taught.counts[name]:>6}  {row['precision']:>9.3f}  {row['recall']:>6.3f}  "
                     f"{row['f1']:>5.3f}")
    lines.append(f"Answers below {m['abstain_threshold']:.3f} calibrated confidence abstain ({m['keep_rate']:.1%} of "
                 f"the held-out photos answered); temperature {m['calibration_temperature']:.3f}, C = {m['C']}.")
    for name, why in taught.skipped:
        lines.append(f"Skipped {name}: {why}")
    lines += [f"Left out: {sentence}" for sentence in taught.duplicates]
    lines.append(f"Model saved to {taught.folder} in {taught.seconds:.1f} s. Try it: MODEL_ID={taught.folder} python "
                 f"app.py, or parkclf predict PHOTOS --model {taught.folder} --output predictions.csv")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Taught:
    import argparse

    from tqdm.auto import tqdm

    p = argparse.ArgumentParser(prog="parkclf teach", description=__doc__.split("\n\n")[0] + "\n\n" +
                                __doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos_dir", metavar="PHOTOS_DIR", help="a folder of class folders: PHOTOS_DIR/<class>/*.jpg")
    p.add_argument("--output-dir", required=True, help="where the new checkpoint goes (a new or empty folder, or an "
                   "earlier model to replace)")
    p.add_argument("--base", help="a checkpoint folder or Hub model id with onnx/ whose backbone is reused "
                   "(default: the embedded model)")
    a = p.parse_args(argv)
    photos = photos_from_folder(a.photos_dir)
    with tqdm(total=sum(map(len, photos.values())), unit="img", desc="teach") as bar:
        taught = teach(photos, a.output_dir, base=a.base, progress=lambda done, _total: bar.update(done - bar.n))
    print(summary(taught))
    return taught
