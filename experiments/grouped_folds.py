"""Leave-sources-out folds of the parks data, and the report of a recipe scored on them.

    python experiments/grouped_folds.py split --folds 4 --out out/folds        # fold-i/{train,heldout}/<park>/
    python train.py --data-dir out/folds/fold-0/train ...                      # one model per fold (see gpu_sweep.py)
    parkclf predict out/folds/fold-0/heldout --model M0 --output out/preds/x-fold-0.jsonl
    python experiments/grouped_folds.py report out/preds/x-fold-*.jsonl --baseline out/preds/embedded.jsonl

Every photographer (``SOURCES.tsv``'s repo column) lands in the held-out part of exactly one fold, the other parks
included, so each photo is scored by a model that never saw its source. The report gives closest-park accuracy
(per photo, and as a mean over sources), the other-parks-against-parks AUROC of the best park's confidence, the
share of park photos answered and of other-park photos abstained, each with a 95% interval, on all held-out photos
and on the ones added on 2026-12-04 (``added-2026-12-04.txt``: sources the embedded model never saw).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PARKS = ROOT.parent / "shared" / "data" / "parks"
CLASSES = ["sequoia", "yellowstone", "yosemite"]
ADDED = "added-2026-12-04.txt"


def sources(parks: Path) -> dict[str, str]:
    """'park/file' -> source."""
    with open(parks / "SOURCES.tsv", newline="") as f:
        return {r["file"]: r["repo"] for r in csv.DictReader(f, delimiter="\t")}


def split(parks: Path, folds: int, seed: int, out: Path) -> dict:
    from sklearn.model_selection import StratifiedGroupKFold

    src = sources(parks)
    files = sorted(f for f in src if (parks / f).exists())
    in_scope = [f.split("/")[0] if f.split("/")[0] in CLASSES else "other" for f in files]
    groups = [src[f] for f in files]
    counts = {}
    for i, (_, held) in enumerate(StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
                                  .split(files, in_scope, groups)):
        held = set(held)
        for j, f in enumerate(files):
            part = "heldout" if j in held else "train"
            dest = out / f"fold-{i}" / part / f
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.abspath(parks / f), dest)
            key = f"fold-{i}/{part}/{'park' if in_scope[j] != 'other' else 'other'}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def read_rows(paths: list[str]) -> list[dict]:
    rows = []
    for p in paths:
        with open(p) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def _wilson(k: int, n: int) -> list[float]:
    if n == 0:
        return [float("nan")] * 2
    z, p = 1.96, k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(mid - half, 3), round(mid + half, 3)]


def _bootstrap(stat, n: int, draws: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    vals = [stat(rng.integers(0, n, n)) for _ in range(draws)]
    return [round(float(np.nanpercentile(vals, 2.5)), 3), round(float(np.nanpercentile(vals, 97.5)), 3)]


def scored(rows: list[dict], src: dict[str, str], added: set[str]) -> list[dict]:
    """One record per photo: its park, source, whether it is new, the closest park and its confidence."""
    out = []
    for r in rows:
        if r.get("error"):
            continue
        key = "/".join(Path(r["path"]).parts[-2:])
        conf = {c: r[f"confidence_{c}"] for c in CLASSES}
        best = max(conf, key=conf.get)
        out.append({"key": key, "park": key.split("/")[0], "source": src.get(key, "?"), "new": key in added,
                    "closest": best, "score": conf[best], "abstained": bool(r["abstained"])})
    return out


def measures(photos: list[dict]) -> dict:
    from sklearn.metrics import roc_auc_score

    parks = [p for p in photos if p["park"] in CLASSES]
    others = [p for p in photos if p["park"] not in CLASSES]
    right = np.array([p["closest"] == p["park"] for p in parks], dtype=float)
    by_source: dict[str, list[float]] = {}
    for p, r in zip(parks, right, strict=True):
        by_source.setdefault(p["source"], []).append(r)
    per_source = np.array([np.mean(v) for v in by_source.values()])
    res = {"park_photos": len(parks), "closest_park": round(float(right.mean()), 3) if len(parks) else None,
           "closest_park_ci": _wilson(int(right.sum()), len(parks)), "sources": len(per_source),
           "closest_park_source_mean": round(float(per_source.mean()), 3) if len(per_source) else None,
           "closest_park_source_mean_ci": _bootstrap(lambda i: per_source[i].mean(), len(per_source)),
           "answered": round(float(np.mean([not p["abstained"] for p in parks])), 3) if parks else None,
           "per_park": {c: f"{int(sum(r for p, r in zip(parks, right, strict=True) if p['park'] == c))}/"
                           f"{sum(p['park'] == c for p in parks)}" for c in CLASSES}}
    if others and parks:
        y = np.array([1] * len(parks) + [0] * len(others))
        s = np.array([p["score"] for p in parks] + [p["score"] for p in others])
        res["other_parks"] = len(others)
        res["other_auroc"] = round(float(roc_auc_score(y, s)), 3)
        res["other_auroc_ci"] = _bootstrap(lambda i: roc_auc_score(y[i], s[i]) if 0 < y[i].sum() < len(i) else np.nan,
                                           len(y))
        res["other_abstained"] = round(float(np.mean([p["abstained"] for p in others])), 3)
    return res


def paired_gain(photos: list[dict], base: list[dict]) -> dict:
    """Accuracy of ``photos`` minus ``base`` on the park photos both scored, with a paired bootstrap interval."""
    b = {p["key"]: p["closest"] == p["park"] for p in base if p["park"] in CLASSES}
    pairs = np.array([(p["closest"] == p["park"], b[p["key"]]) for p in photos if p["key"] in b], dtype=float)
    if not len(pairs):
        return {}
    d = pairs[:, 0] - pairs[:, 1]
    return {"photos": len(d), "gain": round(float(d.mean()), 3), "gain_ci": _bootstrap(lambda i: d[i].mean(), len(d))}


def report(paths: list[str], parks: Path, baseline: list[str] | None, scenes: list[str] | None) -> dict:
    src = sources(parks)
    added = set((parks / ADDED).read_text().split())
    photos = scored(read_rows(paths), src, added)
    res = {"all_heldout": measures(photos), "new_sources": measures([p for p in photos if p["new"]])}
    if baseline:
        base = scored(read_rows(baseline), src, added)
        res["baseline_new_sources"] = measures([p for p in base if p["new"]])
        res["gain_new_sources"] = paired_gain([p for p in photos if p["new"]], [p for p in base if p["new"]])
    if scenes:
        rows = read_rows(scenes)
        for name in sorted({Path(r["path"]).parent.name for r in rows}):
            mine = [r for r in rows if Path(r["path"]).parent.name == name and not r.get("error")]
            res[f"{name}_abstained"] = round(float(np.mean([r["abstained"] for r in mine])), 3)
    return res


def card_figures(row: dict, what: str) -> dict:
    """The generic figures of a candidate's report row (closest class, other-parks AUROC, answered, street and
    buildings abstained), each with its 95% interval."""
    heldout = row["all_heldout"]
    n = heldout["park_photos"]
    return {"what": what, "photos": n, "sources": heldout["sources"], "out_of_scope_photos": heldout["other_parks"],
            "accuracy": heldout["closest_park"], "accuracy_ci": heldout["closest_park_ci"],
            "auroc": heldout["other_auroc"], "auroc_ci": heldout["other_auroc_ci"],
            "answered": heldout["answered"], "answered_ci": _wilson(round(heldout["answered"] * n), n),
            "everyday_abstained": {k.removesuffix("_abstained"): v for k, v in row.items() if k.endswith("_abstained")}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split", help="build fold-i/{train,heldout}/<park>/ folders of symbolic links")
    s.add_argument("--parks", type=Path, default=PARKS)
    s.add_argument("--folds", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report", help="measures of parkclf predict tables of held-out photos")
    r.add_argument("predictions", nargs="+", help="JSONL tables from parkclf predict on the folds' heldout/")
    r.add_argument("--parks", type=Path, default=PARKS)
    r.add_argument("--baseline", nargs="*", help="tables of another model on the same photos (the embedded one)")
    r.add_argument("--scenes", nargs="*", help="tables of scene photos (street, buildings) for the abstained rate")
    r.add_argument("--json-out", type=Path)
    c = sub.add_parser("card", help="a candidate's leave-sources-out figures over all held-out photos, in the form "
                                    "`parkclf card --unseen-sources` puts on a model card and the app's About box")
    c.add_argument("results", type=Path, help="the sweep's results (experiments/results/parks_sweep.json)")
    c.add_argument("candidate", help="a candidate's name in it, e.g. x2-308")
    c.add_argument("--what", required=True, help="one sentence: which models scored the photos")
    a = ap.parse_args(argv)
    if a.cmd == "split":
        if a.out.exists() and any(a.out.iterdir()):
            raise SystemExit(f"{a.out} is not empty; choose a new --out folder.")
        res = split(a.parks.resolve(), a.folds, a.seed, a.out)
    elif a.cmd == "card":
        res = card_figures(json.loads(a.results.read_text())[a.candidate], a.what)
    else:
        res = report(a.predictions, a.parks, a.baseline, a.scenes)
        if a.json_out:
            a.json_out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
