"""Can a taught model say "none of these"? Held-out scene classes against taught ones, for several abstain rules.

    python experiments/teach_other.py features     # the served graph's features of every photo used (~10 min, cached)
    python experiments/teach_other.py bank         # models/parks-vit-small/teach_background.npz from the parks' ones
    python experiments/teach_other.py score        # the table: the three splits, 6 seeded picks each (~2 min)

On the six intel-scenes classes, four are taught from 20 photos each (``train/``, a seeded pick) and two are held
out, for the three splits of the issue (buildings+street, forest+mountain, glacier+sea held out). Each split's
``test/`` photos are scored: the taught classes' photos answered and right, the held-out classes' photos abstained.
Teaching is :func:`parkclf.head.fit_head` on the embedded model's served features, exactly as ``parkclf teach``
fits; the rules differ only in what else goes into the fit and how the threshold is set.

The background bank never comes from intel-scenes: it is built from the parks photos (``../shared/data/parks``:
landscapes of 30 national parks, by 75 photographers) and five seeded crops of each (three of 35-60% of the photo's
side, two of 12-30%: rock, water, trees, sky). Most of those photos are all rights reserved, so no photo's own
features are shipped: the bank is BANK_ROWS k-means centroids of their features, each the average of dozens of
photos and crops, like a model's weights. Per-photo features stay in the cache folder,
``$PARKCLF_ARTIFACTS/teach_other`` (default ``artifacts/``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCENES = SHARED / "data" / "intel-scenes"
PARKS = SHARED / "data" / "parks"
CLASSES = ("buildings", "forest", "glacier", "mountain", "sea", "street")
SPLITS = (("buildings", "street"), ("forest", "mountain"), ("glacier", "sea"))
CACHE = Path(os.environ.get("PARKCLF_ARTIFACTS", ROOT / "artifacts")) / "teach_other"
EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTS and not p.name.startswith("."))


BANK_ROWS = 48
# (cache name, seed, crops per photo, side as a share of the photo's): the bank's crops of each parks photo
CROPS = (("parks_crops", 0, 3, (0.35, 0.6)), ("parks_tight", 1, 2, (0.12, 0.3)))
SEEDS = 6
PHOTOS = 20  # per taught class


def compute(model: str) -> None:
    """The served graph's features of intel-scenes, the parks photos and three crops of each parks photo."""
    from parkclf.classifier import Classifier
    from parkclf.images import load_image
    from parkclf.teach import TeachLimits, precompute

    clf = Classifier.from_pretrained(model)
    limits = TeachLimits(max_total=10**6, max_pixels=10**13)
    CACHE.mkdir(parents=True, exist_ok=True)

    def rows(sources: list, keys: list[str]) -> np.ndarray:
        cache: dict[str, np.ndarray] = {}
        precompute(sources, cache, base=clf, limits=limits)
        return np.stack([cache[k] for k in keys])

    for name, root in [("scenes", SCENES), ("parks", PARKS)]:
        paths = files(root)
        x = rows(paths, [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths])
        np.savez(CACHE / f"{name}.npz", x=x, path=np.asarray([str(p.relative_to(root)) for p in paths]))
        print(name, len(x))
    for name, seed, per_photo, scale in CROPS:  # the parks photos again, cut down: rock, water, trees, sky
        rng, crops = np.random.default_rng(seed), []
        for path in files(PARKS):
            image = load_image(path, draft_size=800)
            w, h = image.size
            for _ in range(per_photo):
                s = rng.uniform(*scale)
                cw, ch = int(w * s), int(h * s)
                x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
                crops.append(image.crop((x0, y0, x0 + cw, y0 + ch)))
        x = rows(crops, [hashlib.sha256(c.tobytes()).hexdigest() for c in crops])
        np.savez(CACHE / f"{name}.npz", x=x, path=np.arange(len(x)))
        print(name, len(x))


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(CACHE / f"{name}.npz")
    return d["x"].astype(np.float32), d["path"]


def bank(model: Path) -> None:
    from sklearn.cluster import KMeans

    from parkclf.teach import BACKGROUND_FILE

    x = np.concatenate([load(name)[0] for name in ("parks", *(c[0] for c in CROPS))])
    centres = KMeans(BANK_ROWS, n_init=3, random_state=0).fit(x).cluster_centers_.astype(np.float32)
    about = (f"{BANK_ROWS} k-means centroids of the features of {len(load('parks')[0])} photos of 30 US national parks "
             f"and 5 crops of each, {len(x)} in all; no photo's own features; experiments/teach_other.py bank")
    np.savez(model / BACKGROUND_FILE, features=centres, about=np.asarray(about))
    print(model / BACKGROUND_FILE, centres.shape)


def score(model: Path) -> dict:
    """Each split x seed: teach 4 classes x PHOTOS with and without the model's bank, score test/."""
    from parkclf import calibration
    from parkclf.teach import KEEP_RATE, KEEP_RATE_WITH_BACKGROUND, NONE_OF_THESE, Background, fit_classes

    with np.load(model / "teach_background.npz") as f:
        shipped = Background(f["features"].astype(np.float32), str(f["about"]))
    x_all, paths = load("scenes")
    split = np.asarray([p.split("/")[0] for p in paths])
    cls = np.asarray([p.split("/")[1] for p in paths])
    test = split == "test"
    rules = {f"softmax, keep {KEEP_RATE} (before)": None,
             f"background class, keep {KEEP_RATE_WITH_BACKGROUND}": shipped}
    out: dict = {}
    for held in SPLITS:
        taught = [c for c in CLASSES if c not in held]
        for seed in range(SEEDS):
            rng = np.random.default_rng(seed)
            pick = np.concatenate([rng.choice(np.flatnonzero((split == "train") & (cls == c)), PHOTOS, replace=False)
                                   for c in taught])
            y = np.asarray([taught.index(c) for c in cls[pick]])
            ours = np.isin(cls[test], taught)
            for rule, bg in rules.items():
                fit, calib, _ = fit_classes(x_all[pick], y, taught, bg)
                labels = [*taught, NONE_OF_THESE] if bg is not None else taught
                probs, s = calibration.in_scope_scores(x_all[test] @ fit.weight.T + fit.bias, labels,
                                                       calib["calibration_temperature"], calib["out_of_scope_label"])
                kept = s >= calib["abstain_threshold"]
                right = np.asarray(taught)[probs.argmax(-1)] == cls[test]
                row = out.setdefault(rule, {}).setdefault("+".join(held), {"answered": [], "accuracy": [],
                                                                           "held_out_abstained": []})
                row["answered"].append(float(kept[ours].mean()))
                row["accuracy"].append(float(right[ours].mean()))
                row["held_out_abstained"].append(float((~kept[~ours]).mean()))
    for rule, splits in out.items():
        print(rule)
        for name, row in splits.items():
            print(f"  {name:18s} " + "  ".join(f"{k} {np.mean(v):.3f} [{min(v):.3f}-{max(v):.3f}]"
                                               for k, v in row.items()))
        print(f"  mean held-out abstained {np.mean([np.mean(r['held_out_abstained']) for r in splits.values()]):.3f}")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["features", "bank", "score"])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "parks-vit-small")
    a = p.parse_args()
    if a.what == "features":
        compute(str(a.model))
    elif a.what == "bank":
        bank(a.model)
    else:
        result = score(a.model)
        (ROOT / "experiments" / "results" / "teach_other.json").write_text(json.dumps(
            {"model": a.model.name, "photos_per_class": PHOTOS, "seeds": SEEDS, "rules": result}, indent=1))
