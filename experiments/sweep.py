"""Choose the parks recipe on sources the model never saw: candidates x leave-sources-out folds, many runs at once.

    python experiments/grouped_folds.py split --folds 4 --out out/folds
    python experiments/sweep.py --folds-dir out/folds --out out/sweep --jobs 16          # phase 1: all candidates
    python experiments/sweep.py --folds-dir out/folds --out out/sweep --jobs 8 --soup-of x5-308   # phase 2

Phase 1 trains every candidate on every fold's train/ (and once on all photos, for the final model), then scores
each fold's heldout/ and the scene test photos with ``parkclf predict``. Phase 2 turns one candidate into soups of
three: each fold's model and the all-photos model become member 0, and train.py adds members 1 and 2. The rule that
picks the candidate, fixed before the runs: the highest closest-park accuracy over all held-out park photos, among
candidates whose other-parks AUROC is within 0.02 of the best and that answer at least 0.90 of the park photos;
within 0.005 of accuracy, the cheaper one. The soup is shipped if its held-out accuracy is at least the single
model's, else the single model. Each run is one train.py process on one GPU, decoding on its own core.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
P, S, T = SHARED / "data/parks", SHARED / "data/intel-scenes/train", SHARED / "data/intel-scenes/test"
BASE = SHARED / "models/vit-small-dinov2"

# name -> the flags that differ; every candidate has the three parks as classes, every other park folder as a hard
# negative, street / buildings / sea as negatives, the abstain threshold 0.15 and the centre crop 0.8.
CANDIDATES = {
    "x15-308": ["--image-size", "308", "--hard-negatives-repeat", "15"],  # the embedded recipe, one model
    "x5-308": ["--image-size", "308", "--hard-negatives-repeat", "5"],
    "x2-308": ["--image-size", "308", "--hard-negatives-repeat", "2"],
    "x5-224": ["--image-size", "224", "--hard-negatives-repeat", "5"],
}
COST = {"x5-224": 0, "x2-308": 1, "x5-308": 2, "x15-308": 3}  # training and serving cost, for ties


EXTRA: list[str] = []  # --train-args


def train_args(data_dir: Path, out: Path, name: str, soup: int = 1, workers: int = 0) -> list[str]:
    return [sys.executable, "-m", "parkclf", "train", "--data-dir", str(data_dir),
            "--classes", "sequoia", "yellowstone", "yosemite", "--other-classes-as-hard-negatives",
            "--negatives-dir", str(S / "street"), str(S / "buildings"), str(S / "sea"),
            "--model-name-or-path", str(BASE), "--center-crop", "0.8", "--abstain-threshold", "0.15",
            "--title", "National Parks Classifier", "--base-model-id", "facebook/dinov2-small", "--save-fp16",
            "--no-export-onnx", "--soup", str(soup), "--dataloader-num-workers", str(workers), "--output-dir", str(out),
            *CANDIDATES[name], *EXTRA]


def run(cmd: list[str], log: Path, env: dict) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    print(f"{rc} {time.time() - t:6.0f}s {log.name}", flush=True)
    return rc


def predict(model: Path, inputs: list[Path], table: Path, env: dict) -> None:
    run([sys.executable, "-m", "parkclf", "predict", *map(str, inputs), "--model", str(model), "--engine", "torch",
         "--output", str(table)], table.with_suffix(".log"), env)


def job(out: Path, name: str, fold: Path | None, env: dict, soup: int, workers: int) -> None:
    data = fold / "train" if fold else P
    model = out / name / (fold.name if fold else "all") / (f"soup{soup}" if soup > 1 else "")
    if soup > 1:  # member 0 is the single model of phase 1, reused by train.py
        single = model.parent
        (model / "soup" / "member-0").mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(single / f, model / "soup" / "member-0" / f)
    tag = f"{name}-{fold.name if fold else 'all'}-{soup}"
    # a datasets cache per run: runs on the same folder would otherwise build its Arrow cache at the same time
    env = {**env, "HF_DATASETS_CACHE": str(out / "cache" / tag)}
    run(train_args(data, model, name, soup, workers), out / "logs" / f"{tag}.log", env)
    if fold:
        tag = f"{name}{'-soup' if soup > 1 else ''}-{fold.name}"
        predict(model, [fold / "heldout"], out / "preds" / f"{tag}.jsonl", env)
        predict(model, [T / "street", T / "buildings"], out / "preds" / f"{tag}-scenes.jsonl", env)


def choose(out: Path) -> tuple[str, dict]:
    from grouped_folds import report  # beside this script, where Python looks first

    res = {n: report(sorted(map(str, (out / "preds").glob(f"{n}-fold-?.jsonl"))), P, None,
                     sorted(map(str, (out / "preds").glob(f"{n}-fold-?-scenes.jsonl"))))
           for n in CANDIDATES if any((out / "preds").glob(f"{n}-fold-?.jsonl"))}
    best_auroc = max(r["all_heldout"]["other_auroc"] for r in res.values())
    ok = {n: r["all_heldout"]["closest_park"] for n, r in res.items()
          if r["all_heldout"]["other_auroc"] >= best_auroc - 0.02 and r["all_heldout"]["answered"] >= 0.90}
    top = max(ok.values())
    return min((n for n, a in ok.items() if a >= top - 0.005), key=COST.get), res


def main(argv=None) -> None:
    global P
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=16, help="train.py processes at once")
    ap.add_argument("--workers", type=int, default=0, help="--dataloader-num-workers of each train.py")
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES))
    ap.add_argument("--soup-of", help="phase 2: make soups of three of this candidate (fold models and the final)")
    ap.add_argument("--choose", action="store_true", help="phase 2 on the candidate the rule picks")
    ap.add_argument("--parks", type=Path, default=P, help="the parks folder (SOURCES.tsv inside) the folds came from")
    ap.add_argument("--train-args", default="", help="more train.py flags for every run, e.g. for a quick check")
    a = ap.parse_args(argv)
    P = a.parks
    EXTRA[:] = shlex.split(a.train_args)
    folds = sorted(a.folds_dir.glob("fold-*"))
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    soup_of = a.soup_of
    if a.choose:
        soup_of, res = choose(a.out)
        (a.out / "choice.json").write_text(json.dumps({"chosen": soup_of, "candidates": res}, indent=1))
        print("chosen:", soup_of, flush=True)
    if soup_of:
        todo = [(soup_of, f, 3) for f in [*folds, None]]
    else:
        todo = [(n, f, 1) for n in a.candidates for f in [None, *folds]]
    todo.sort(key=lambda t: -COST[t[0]])  # the longest runs first, so none is left running alone at the end
    with ThreadPoolExecutor(a.jobs) as pool:
        list(pool.map(lambda t: job(a.out, t[0], t[1], env, t[2], a.workers), todo))
    if soup_of:
        ship(a.out, soup_of)


def ship(out: Path, name: str) -> None:
    """The rule's pick between the soup and its member 0, both trained on all the photos, into out/final."""
    from grouped_folds import report  # beside this script, where Python looks first

    res = {tag: report(sorted(map(str, (out / "preds").glob(f"{tag}-fold-?.jsonl"))), P, None,
                       sorted(map(str, (out / "preds").glob(f"{tag}-fold-?-scenes.jsonl"))))
           for tag in (name, f"{name}-soup")}
    soup = res[f"{name}-soup"]["all_heldout"]["closest_park"] >= res[name]["all_heldout"]["closest_park"]
    src = out / name / "all" / ("soup3" if soup else "")
    final = out / "final"
    final.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, final / f.name)
    (out / "ship.json").write_text(json.dumps({"candidate": name, "soup": soup, "from": str(src), **res}, indent=1))
    print("shipped:", src, flush=True)


if __name__ == "__main__":
    main()
