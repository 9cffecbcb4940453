"""The forward pass of each engine on one checkpoint, in one process, taking turns: which is fastest on this CPU.

    python benchmarks/engines.py             # the embedded model, batches of 16, 3 rounds
    python benchmarks/engines.py --smoke     # batches of 2, one round (CI: it runs)

OpenVINO on the static int8 scales and ONNX Runtime's dynamic int8 (the two that "auto" times at start), and torch
(fp32, or bf16 where the CPU has it) run the same random batch, taking turns each round, so drift in a shared VM's
speed falls on all alike.
Prints milliseconds a photo (the best round, and every round) with the machine and its CPU flags, and writes
benchmarks/results/engines.json (engines-smoke.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from parkclf.engine import OnnxEngine, OpenVinoEngine, TorchEngine
from parkclf.hardware import cpu_flags, machine

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "parks-vit-small"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="batches of 2, one round")
    a = ap.parse_args()
    batch, rounds = (2, 1) if a.smoke else (a.batch, a.rounds)

    config = json.loads((Path(a.model) / "config.json").read_text())
    size = config["image_size"]
    engines = [OpenVinoEngine(a.model, patch_size=config["patch_size"]),
               OnnxEngine(a.model, precision="int8", patch_size=config["patch_size"]),
               TorchEngine.from_pretrained(a.model)]  # bf16 where the CPU has it, as the app's torch path
    engines = {engine.name: engine for engine in engines}
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    # OpenVinoEngine runs batches of its BATCH as one and the rest one photo at a time: each engine gets one warm-up
    ms = {name: [] for name in engines}
    for engine in engines.values():
        engine.logits(x)
    for _ in range(rounds):
        for name, engine in engines.items():
            t = time.perf_counter()
            engine.logits(x)
            ms[name].append(round((time.perf_counter() - t) / batch * 1000, 1))

    result = {"model": a.model, "batch": batch, "image_size": size, "machine": machine(), "cpu_flags": cpu_flags(),
              "load_average": os.getloadavg(), "ms_per_photo": ms}
    print(f"{result['machine']['cpu']}, {result['machine']['cores']} cores, flags {' '.join(result['cpu_flags'])}, "
          f"batch {batch} at {size} px, load {result['load_average'][0]:.1f}\n")
    print("| engine | ms a photo, best | every round |\n|---|---|---|")
    for name, rows in ms.items():
        print(f"| {name} | {min(rows):.0f} | {', '.join(f'{v:.0f}' for v in rows)} |")
    out = ROOT / "benchmarks" / "results" / ("engines-smoke.json" if a.smoke else "engines.json")
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
