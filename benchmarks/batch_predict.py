"""Batch prediction: a plain transformers pipeline loop against ``parkclf predict``, in one run, on one machine.

    python benchmarks/batch_predict.py                       # the first 300 photos of ../shared/data/parks, sorted
    python benchmarks/batch_predict.py --smoke               # 20 of them, to check it runs (CI)
    python benchmarks/batch_predict.py --model out/my-model --photos 100 --batch-size 32

Each side is timed as a whole command, process start to exit (imports, model load, decoding, writing the table):
(a) a script written here that loops ``transformers.pipeline("image-classification")`` over the files, (b)
``python -m parkclf predict`` on the same checkpoint and files. Prints images/s of each, the ratio, the machine and
how often the two agree on the label, and writes benchmarks/results/batch_predict.json (batch_predict-smoke.json
with --smoke). Run it on an idle machine: the load average at the start is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parkclf.hardware import machine  # the CPU's name and flags beside every figure
from parkclf.images import image_files

ROOT = Path(__file__).resolve().parents[1]
PARKS = ROOT.parent / "shared" / "data" / "parks"
EMBEDDED = ROOT / "models" / "parks-vit-small"

# The naive baseline, as a tutorial writes it: one pipeline call per file, top label only.
PIPELINE_LOOP = """
import json, sys
from transformers import pipeline

model, listing, output = sys.argv[1:4]
classify = pipeline("image-classification", model=model)
with open(output, "w") as f:
    for path in open(listing).read().splitlines():
        f.write(json.dumps({"path": path, "label": classify(path, top_k=1)[0]["label"]}) + "\\n")
"""


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{done.stderr[-3000:]}")
    return seconds, done


def agreement(pipeline_labels: dict, ours: list[dict], out_of_scope: str | None) -> dict:
    """The pipeline ranks the out-of-scope class too; ours answers the closest real class and abstains instead."""
    both = [(pipeline_labels[r["path"]], r) for r in ours]
    oos = [(p, r) for p, r in both if p == out_of_scope]
    in_scope = [(p, r) for p, r in both if p != out_of_scope]
    return {"all": round(sum(p == r["label"] for p, r in both) / len(both), 4),
            "where_pipeline_is_in_scope": round(sum(p == r["label"] for p, r in in_scope) / max(len(in_scope), 1), 4),
            "pipeline_out_of_scope": len(oos),
            "of_those_we_abstain": sum(r["abstained"] == "True" for _, r in oos),
            "we_abstain": sum(r["abstained"] == "True" for _, r in both)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="20 photos, spread over the parks (CI)")
    ap.add_argument("--model", default=str(EMBEDDED), help="a checkpoint folder")
    ap.add_argument("--photos", type=int, default=300, help="how many photos (the first, sorted)")
    ap.add_argument("--batch-size", type=int, default=16, help="parkclf predict's --batch-size")
    a = ap.parse_args(argv)
    files = image_files(PARKS)[: a.photos]
    if a.smoke:
        files = files[:: max(1, len(files) // 20)][:20]
    if not files:
        raise SystemExit(f"No photos under {PARKS}; this benchmark needs ../shared/data/parks.")
    for f in files:  # both commands read from the page cache, not the first one from disk
        Path(f).read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    (tmp / "loop.py").write_text(PIPELINE_LOOP)
    (tmp / "files.txt").write_text("\n".join(files) + "\n")
    result = {"photos": len(files), "model": a.model, "smoke": a.smoke, "machine": machine()}

    seconds, _ = timed([sys.executable, str(tmp / "loop.py"), a.model, str(tmp / "files.txt"), str(tmp / "loop.jsonl")])
    result["pipeline"] = {"seconds": round(seconds, 2), "images_per_s": round(len(files) / seconds, 2)}
    seconds, done = timed([sys.executable, "-m", "parkclf", "predict", *files, "--model", a.model,
                           "--output", str(tmp / "ours.csv"), "--batch-size", str(a.batch_size)])
    engine = done.stdout.splitlines()[0].rsplit(" on ", 1)[-1]
    result["ours"] = {"seconds": round(seconds, 2), "images_per_s": round(len(files) / seconds, 2),
                      "engine": engine, "batch_size": a.batch_size}
    result["speedup"] = round(result["ours"]["images_per_s"] / result["pipeline"]["images_per_s"], 2)

    pipeline_labels = {r["path"]: r["label"] for r in map(json.loads, (tmp / "loop.jsonl").read_text().splitlines())}
    with (tmp / "ours.csv").open(newline="") as f:
        ours = list(csv.DictReader(f))
    config = json.loads((Path(a.model) / "config.json").read_text())
    result["agreement"] = agreement(pipeline_labels, ours, config.get("out_of_scope_label"))
    print(report(result))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / ("batch_predict-smoke.json" if a.smoke else "batch_predict.json")).write_text(json.dumps(result, indent=2))
    return result


def report(r: dict) -> str:
    m, p, o, g = r["machine"], r["pipeline"], r["ours"], r["agreement"]
    return "\n".join([
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['threads']} usable), flags {' '.join(m['cpu_flags'])}, "
        f"load average at start "
        f"{m['load_average_at_start'][0]}; torch {m['torch']}, onnxruntime {m['onnxruntime']}",
        f"{r['photos']} photos, {r['model']}; whole commands, process start to exit", "",
        "| command | seconds | images/s |", "|---|---|---|",
        f"| transformers pipeline loop | {p['seconds']} | {p['images_per_s']} |",
        f"| parkclf predict ({o['engine']}, batch {o['batch_size']}) | {o['seconds']} | {o['images_per_s']} |",
        "", f"Speed-up: {r['speedup']}x",
        f"Label agreement: {g['all']:.1%} of all photos; {g['where_pipeline_is_in_scope']:.1%} where the pipeline's "
        f"top label is a real class. The pipeline put {g['pipeline_out_of_scope']} on the out-of-scope class (we "
        f"abstained on {g['of_those_we_abstain']} of them); we abstained on {g['we_abstain']} in all.",
    ])


if __name__ == "__main__":
    main()
