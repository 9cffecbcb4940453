"""``parkclf teach``: how well it learns, how long it takes beside ``parkclf predict``, and what memory it needs.

    python benchmarks/teach.py            # the acceptance figures of issue 26 (intel-scenes, parks; ~30 min on 2 cores)
    python benchmarks/teach.py --smoke    # 3 classes x 4 photos, one round (CI: it runs)

(a) Quality: ``parkclf teach`` on the first 20 and 50 photos of each of the six ../shared/data/intel-scenes/train
    folders, tested on all of test/ (scene photos by other photographers), with the app's Classifier.
(b) Speed: ``parkclf teach`` on the 120 photos of (a) against ``parkclf predict`` on the same 120 photos, both as
    whole commands (process start to exit), in turns, ``--rounds`` times each; the ratio of the medians.
(c) Memory: a process loads the base model (its idle RSS), then teaches 10 classes x 100 photos (six scene classes,
    the three big park folders and the smaller parks together) while a thread samples its RSS; the growth is the
    peak minus idle.

Prints a markdown table with the machine described and writes benchmarks/results/teach.json (teach-smoke.json).
Timings on a machine other work shares are slower and noisier: the load average is recorded at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from batch_predict import machine, timed  # parkclf.hardware's

from parkclf.images import image_files

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCENES, PARKS = SHARED / "intel-scenes", SHARED / "parks"
EMBEDDED = ROOT / "models" / "parks-vit-small"
BIG_PARKS = ("yosemite", "sequoia", "yellowstone")

MEASURE_RSS = """
import json, sys, threading, time
import psutil
from parkclf.classifier import Classifier
from parkclf.teach import photos_from_folder, teach

photos_dir, base, out = sys.argv[1:4]
me = psutil.Process()
clf = Classifier.from_pretrained(base)
clf.warm_up()
idle = me.memory_info().rss
peak, running = [idle], [True]

def sample():
    while running[0]:
        peak[0] = max(peak[0], me.memory_info().rss)
        time.sleep(0.02)

thread = threading.Thread(target=sample, daemon=True)
thread.start()
taught = teach(photos_from_folder(photos_dir), out, base=clf)
running[0] = False
thread.join()
print(json.dumps({"idle_mb": idle / 2**20, "peak_mb": peak[0] / 2**20, "photos": sum(taught.counts.values()),
                  "classes": len(taught.labels), "seconds": taught.seconds}))
"""


def link_folder(root: Path, classes: dict[str, list[str]]) -> Path:
    """root/<class>/ with symlinks to the photos (nothing copied)."""
    for name, files in classes.items():
        (root / name).mkdir(parents=True)
        for f in files:
            (root / name / Path(f).name).symlink_to(Path(f).resolve())
    return root


def scene_classes(split: str, per_class: int | None) -> dict[str, list[str]]:
    return {d.name: image_files(d)[:per_class] for d in sorted((SCENES / split).iterdir()) if d.is_dir()}


def quality(tmp: Path, per_class: int, base: str, test: dict[str, list[str]]) -> dict:
    from parkclf.classifier import Classifier

    photos = link_folder(tmp / f"train-{per_class}", scene_classes("train", per_class))
    out = tmp / f"model-{per_class}"
    seconds, _ = timed([sys.executable, "-m", "parkclf", "teach", str(photos), "--output-dir", str(out),
                        "--base", base])
    clf = Classifier.from_pretrained(str(out))
    files = [f for fs in test.values() for f in fs]
    truth = [c for c, fs in test.items() for _ in fs]
    predicted = [p.label for p in clf.predict_batch(files)]
    held_out = json.loads((out / "taught.json").read_text())
    return {"per_class": per_class, "photos": sum(len(v) for v in scene_classes("train", per_class).values()),
            "test_photos": len(files), "test_accuracy": sum(p == t for p, t in zip(predicted, truth, strict=True))
            / len(files), "cross_validated_accuracy": held_out["accuracy"], "C": held_out["C"],
            "seconds": round(seconds, 2), "photos_dir": str(photos)}


def speed(tmp: Path, photos: Path, base: str, rounds: int) -> dict:
    files = [f for d in sorted(photos.iterdir()) for f in image_files(d)]
    teach_s, predict_s = [], []
    for r in range(rounds):  # in turns, so a drift in the machine's speed lands on both
        seconds, _ = timed([sys.executable, "-m", "parkclf", "teach", str(photos), "--output-dir",
                            str(tmp / f"speed-{r}"), "--base", base])
        teach_s.append(seconds)
        seconds, _ = timed([sys.executable, "-m", "parkclf", "predict", str(photos), "--model", base, "--output",
                            str(tmp / f"speed-{r}.csv")])
        predict_s.append(seconds)
    teach_m, predict_m = statistics.median(teach_s), statistics.median(predict_s)
    return {"photos": len(files), "teach_s": [round(s, 2) for s in teach_s],
            "predict_s": [round(s, 2) for s in predict_s], "ratio": round(teach_m / predict_m, 3)}


def memory(tmp: Path, base: str, per_class: int, smoke: bool) -> dict:
    classes = scene_classes("train", per_class)
    if smoke:
        classes = dict(list(classes.items())[:3])
    else:
        classes.update({p: image_files(PARKS / p)[:per_class] for p in BIG_PARKS})
        small = sorted(d for d in PARKS.iterdir() if d.is_dir() and d.name not in BIG_PARKS)
        classes["other_parks"] = [f for d in small for f in image_files(d)][:per_class]
    photos = link_folder(tmp / "memory", classes)
    script = tmp / "measure_rss.py"
    script.write_text(MEASURE_RSS)
    _, done = timed([sys.executable, str(script), str(photos), base, str(tmp / "memory-model")])
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {**{k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()},
            "growth_mb": round(row["peak_mb"] - row["idle_mb"], 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="3 classes x 4 photos, one round (CI)")
    ap.add_argument("--base", default=str(EMBEDDED), help="the checkpoint to teach from (and predict with)")
    ap.add_argument("--rounds", type=int, default=3, help="turns of teach and predict for the speed ratio")
    a = ap.parse_args(argv)
    if not SCENES.exists():
        raise SystemExit(f"No photos under {SCENES}; this benchmark needs ../shared/data/intel-scenes.")
    result = {"base": a.base, "smoke": a.smoke, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="teach-bench-") as tmp:
        tmp = Path(tmp)
        test = scene_classes("test", 4 if a.smoke else None)
        sizes = (4,) if a.smoke else (20, 50)
        result["quality"] = [quality(tmp, n, a.base, test) for n in sizes]
        result["speed"] = speed(tmp, Path(result["quality"][0].pop("photos_dir")), a.base, 1 if a.smoke else a.rounds)
        for row in result["quality"][1:]:
            row.pop("photos_dir")
        result["memory"] = memory(tmp, a.base, 4 if a.smoke else 100, a.smoke)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(report(result))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / ("teach-smoke.json" if a.smoke else "teach.json")).write_text(json.dumps(result, indent=2))
    return result


def report(r: dict) -> str:
    m, s, mem = r["machine"], r["speed"], r["memory"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores ({m['threads']} usable), flags {' '.join(m['cpu_flags'])}, "
             f"load average "
             f"{m['load_average_at_start'][0]} at start, {m['load_average_at_end'][0]} at end; base {r['base']}", "",
             "| measure | value |", "|---|---|"]
    for q in r["quality"]:
        lines.append(f"| (a) accuracy, {q['per_class']} photos per class ({q['photos']}), on {q['test_photos']} test "
                     f"photos | {q['test_accuracy']:.3f} (cross-validated {q['cross_validated_accuracy']:.3f}, "
                     f"C = {q['C']}) |")
    lines += [f"| (b) teach / predict on the same {s['photos']} photos, whole commands | {s['ratio']:.2f}x (teach "
              f"{s['teach_s']} s, predict {s['predict_s']} s) |",
              f"| (c) RSS while teaching {mem['classes']} classes, {mem['photos']} photos | +{mem['growth_mb']:.0f} "
              f"MB over idle {mem['idle_mb']:.0f} MB (peak {mem['peak_mb']:.0f} MB; taught in "
              f"{mem['seconds']:.1f} s) |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
