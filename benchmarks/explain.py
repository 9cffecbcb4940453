"""What `/explain` costs a photo: the explanation graph of each checkpoint, one photo at a time as the app runs it,
in one process, the checkpoints taking turns.

    git worktree add /tmp/before HEAD~1          # the model before, for the ratio
    python benchmarks/explain.py --models models/parks-vit-small /tmp/before/models/parks-vit-small
    python benchmarks/explain.py --smoke     # the embedded model, 2 photos, one round (CI: it runs)

Each checkpoint explains the same real photos (the park examples shipped in examples/) through the engine the app
uses (ONNX Runtime on the explanation graph the checkpoint has: int8, or floating point with fp16 weights). Prints
milliseconds a photo (the best round, and every round), each against the first checkpoint, with the CPU's name and
flags, and writes benchmarks/results/explain.json (explain-smoke.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from parkclf.classifier import Classifier
from parkclf.engine import EXPLAIN_FILES, ONNX_DIR
from parkclf.hardware import cpu_flags, machine
from parkclf.images import image_files

ROOT = Path(__file__).resolve().parents[1]


def graph(folder: str) -> str:
    return next((f for f in (EXPLAIN_FILES["int8"], EXPLAIN_FILES["fp32"]) if (Path(folder) / ONNX_DIR / f).exists()),
                "none")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=[str(ROOT / "models" / "parks-vit-small")])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="2 photos, one round")
    a = ap.parse_args()
    photos = image_files(ROOT / "examples")[: 2 if a.smoke else None]
    rounds = 1 if a.smoke else a.rounds
    classifiers = {m: Classifier.from_pretrained(m, engine="onnx") for m in a.models}
    for clf in classifiers.values():  # warm-up: the session is built on first use
        clf.explain(photos[0])
    ms = {m: [] for m in a.models}
    for _ in range(rounds):
        for m, clf in classifiers.items():
            t = time.perf_counter()
            for p in photos:
                clf.explain(p)
            ms[m].append(round((time.perf_counter() - t) / len(photos) * 1000, 1))

    result = {"photos": len(photos), "machine": machine(), "cpu_flags": cpu_flags(), "load_average": os.getloadavg(),
              "graphs": {m: graph(m) for m in a.models}, "ms_per_photo": ms}
    first = min(ms[a.models[0]])
    print(f"{result['machine']['cpu']}, {result['machine']['cores']} cores, flags {' '.join(result['cpu_flags'])}, "
          f"{len(photos)} photos, load {result['load_average'][0]:.1f}\n")
    print("| checkpoint | explanation graph | ms a photo, best | every round | against the first |\n"
          "|---|---|---|---|---|")
    for m, rows in ms.items():
        print(f"| {m} | {result['graphs'][m]} | {min(rows):.0f} | {', '.join(f'{v:.0f}' for v in rows)} | "
              f"{min(rows) / first:.2f}x |")
    out = ROOT / "benchmarks" / "results" / ("explain-smoke.json" if a.smoke else "explain.json")
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
