"""Serving speed, in one run on one machine: the naive app, this app on torch, and this app on its ONNX export.

    python benchmarks/serving.py            # full run (about 15 minutes on 2 cores)
    python benchmarks/serving.py --smoke    # a few iterations, to check it runs (CI)

The naive app is Gradio's guide app (benchmarks/naive_app.py: a transformers pipeline, fp32, PIL input). "torch" is
`python app.py --engine torch` (bf16 weights where the CPU has native bf16), "onnx" is `python app.py` as shipped,
on the checkpoint's int8 export (OpenVINO with the static scales where export kept them, else ONNX Runtime; the
engine's name is in the table). Reported: the forward pass alone and one photo end to end in process (12 MP JPEGs;
for both engines also where that photo's time goes, stage by stage, and the forward pass 1.5x would need), each path
in processes of its own, the paths taking turns over three rounds (medians of all the rounds' calls), agreement with
the fp32 torch model on every shared park photo, and per server: cold start (process start to the first answer), one
client and eight clients through gradio_client (threads of this process, on the same cores; their own CPU per
request is reported), and RSS after warm-up. Prints a markdown table of ratios and writes
benchmarks/results/serving.json (serving-smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from parkclf.hardware import machine  # the CPU's name and flags beside every figure

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EMBEDDED = ROOT / "models" / "parks-vit-small"
SERVERS = {"naive": [sys.executable, "benchmarks/naive_app.py"],
           "torch": [sys.executable, "app.py", "--engine", "torch"],
           "onnx": [sys.executable, "app.py"]}
ENGINE = {"torch": "torch", "onnx": "auto"}  # the engine= of each path: "onnx" is what the app picks by default


def shared_photos() -> list[Path]:
    return sorted(p for d in ("sequoia", "yellowstone", "yosemite") for p in (SHARED / "data/parks" / d).glob("*")
                  if p.is_file())


def twelve_mp(tmp: Path) -> dict[str, Path]:
    """A real shared photo upscaled to 4032x3024 (JPEG q92), and 12 MP of noise (the worst case for JPEG)."""
    real = next((p for p in shared_photos() if min(Image.open(p).size) >= 700), None)
    img = Image.open(real).convert("RGB") if real else Image.new("RGB", (1024, 768), (90, 120, 60))
    img.resize((4032, 3024), Image.BICUBIC).save(tmp / "real12.jpg", quality=92)
    noise = np.random.default_rng(0).integers(0, 255, (3024, 4032, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp / "noisy12.jpg", quality=92)
    return {"12 MP real photo": tmp / "real12.jpg", "12 MP noise": tmp / "noisy12.jpg"}


ROUNDS = 3  # each path's process runs this many times, the paths taking turns: drift in the machine's speed
# (a shared 2-core VM's speed wanders by 10-20% over minutes) then falls on every path alike


FORWARD = """
import json, sys, time
from parkclf.classifier import Classifier
from parkclf.processing import open_images
model, engine, photo, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
clf = Classifier.from_pretrained(model, engine=engine)
pv = clf.pixel_values(open_images([photo], clf.preprocessor))
clf.engine.logits(pv)
times = []
for _ in range(n):
    t = time.perf_counter()
    clf.engine.logits(pv)
    times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"engine": clf.engine.name, "times": times}))
"""


def in_rounds(script: str, paths: dict[str, list[str]], rounds: int = ROUNDS) -> dict[str, list[dict]]:
    """Run ``script`` with each path's arguments once per round, the paths in turn, each in a fresh process; the
    JSON each run printed, per path."""
    out = {path: [] for path in paths}
    for _ in range(rounds):
        for path, args in paths.items():
            r = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                               check=True)
            out[path].append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def pooled_ms(samples: list[list[float]]) -> float:
    """The median of every round's calls together."""
    return round(statistics.median([t for run in samples for t in run]), 1)


def forward(model_dir: Path, photo: Path, n: int, rounds: int = ROUNDS) -> dict:
    """The forward pass alone, batch 1, on the same pixel values: what each engine costs. Each engine in a process
    of its own, as each server has: torch's idle OpenMP threads would otherwise spin beside ONNX Runtime's."""
    per = str(max(1, n // rounds))
    runs = in_rounds(FORWARD, {e: [str(model_dir), ENGINE[e], str(photo), per] for e in ("torch", "onnx")}, rounds)
    out = {e: {"engine": r[0]["engine"], "ms": pooled_ms([x["times"] for x in r])} for e, r in runs.items()}
    out["speedup_onnx_vs_torch"] = round(out["torch"]["ms"] / out["onnx"]["ms"], 2)
    return out


def clf_images(clf, photo):
    from parkclf.processing import open_images

    return open_images([str(photo)], clf.preprocessor)


END_TO_END = """
import json, sys, time
from PIL import Image
model, path, n, photos = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
if path == "naive":
    from transformers import pipeline
    naive = pipeline("image-classification", model=model)
    fn = lambda p: naive(Image.open(p).convert("RGB"))
else:
    from parkclf.classifier import Classifier
    from parkclf.processing import open_images
    clf = Classifier.from_pretrained(model, engine=path)
    fn = clf.predict
    stages = {"decode": lambda p: open_images([p], clf.preprocessor), "preprocess": clf.pixel_values,
              "forward": clf.engine.logits}
out = {}
for photo in photos:
    fn(photo)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn(photo)
        times.append((time.perf_counter() - t) * 1000)
    out[photo] = {"total": times}
    if path != "naive":  # then the same calls again, each stage timed: where the time of one photo goes
        for name in stages:
            out[photo][name] = []
        for _ in range(n):
            x = photo
            for name, stage in stages.items():
                t = time.perf_counter()
                x = stage(x)
                out[photo][name].append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
"""


def in_process(model_dir: Path, images: dict[str, Path], n: int, rounds: int = ROUNDS) -> dict:
    """One photo end to end (decode, preprocess, forward, answer): the naive pipeline and both engines, each in
    processes of its own, in rounds."""
    per = str(max(1, n // rounds))
    photos = [str(p) for p in images.values()]
    runs = in_rounds(END_TO_END, {path: [str(model_dir), ENGINE.get(path, path), per, *photos]
                                  for path in ("naive", "torch", "onnx")}, rounds)
    rows = {}
    for name, photo in images.items():
        row = rows[name] = {k: pooled_ms([x[str(photo)]["total"] for x in r]) for k, r in runs.items()}
        row["speedup_onnx_vs_torch"] = round(row["torch"] / row["onnx"], 2)
        row["speedup_onnx_vs_naive"] = round(row["naive"] / row["onnx"], 2)
        row["stages"] = {k: {stage: pooled_ms([x[str(photo)][stage] for x in r]) for stage in STAGES}
                         for k, r in runs.items() if k != "naive"}
        # what the onnx path's forward pass would have to take for 1.5x, the rest of its photo's time unchanged
        row["onnx_forward_for_1.5x_ms"] = round(row["torch"] / 1.5 - (row["onnx"] - row["stages"]["onnx"]["forward"]),
                                                1)
    return rows


STAGES = ("decode", "preprocess", "forward")  # open_images (decode, EXIF, RGB), pixel_values, engine.logits


def agreement(model_dir: Path, files: list[Path]) -> dict:
    """The ONNX path's answers against the fp32 torch model on the same pixel values: label (closest real class),
    abstain decision and the largest calibrated probability difference."""
    import torch

    from parkclf.classifier import Classifier

    onnx = Classifier.from_pretrained(str(model_dir))
    ref = Classifier.from_pretrained(str(model_dir), engine="torch")
    ref.engine.model.float()
    ref.engine.dtype = torch.float32
    same_label = same_abstain = 0
    diff = 0.0
    for f in files:
        pv = onnx.pixel_values(clf_images(onnx, f))
        a, b = ref.predictions(ref.engine.logits(pv))[0], onnx.predictions(onnx.engine.logits(pv))[0]
        same_label += a.label == b.label
        same_abstain += a.abstained == b.abstained
        diff = max(diff, *(abs(a.confidences[k] - b.confidences[k]) for k in a.confidences))
    n = max(len(files), 1)
    return {"n": len(files), "top1_agreement": round(same_label / n, 4),
            "abstain_agreement": round(same_abstain / n, 4), "max_prob_diff": round(diff, 4)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], model_dir: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "MODEL_ID": str(model_dir)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url, t0
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}") from None
            time.sleep(0.05)


def tls_context():
    """httpx's default context (certifi's CAs, verification on), built once. gradio_client builds a new one for
    each of its three HTTP calls per prediction, even over plain http: about 100 ms of CPU per request, taken
    here from the two cores the server under test runs on (a real Space's callers spend theirs elsewhere)."""
    import ssl

    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def client_load(url: str, photo: Path, clients: int, per_client: int) -> dict:
    """``clients`` gradio_client users in threads of this process, ``per_client`` /predict calls each. Reports the
    clients' own CPU per request too: it shares the server's cores."""
    import psutil
    from gradio_client import Client, handle_file

    lat, errors = [], []
    tls = tls_context()

    def user():
        c = Client(url, verbose=False, ssl_verify=tls)
        for _ in range(per_client):
            t = time.perf_counter()
            try:
                c.predict(handle_file(str(photo)), api_name="/predict")
                lat.append((time.perf_counter() - t) * 1000)
            except Exception as e:  # noqa: BLE001 - any failure counts
                errors.append(repr(e))

    me = psutil.Process()
    cpu, t = sum(me.cpu_times()[:2]), time.perf_counter()
    threads = [threading.Thread(target=user) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall, cpu = time.perf_counter() - t, sum(me.cpu_times()[:2]) - cpu
    return {"clients": clients, "requests": len(lat), "errors": len(errors),
            "p50_ms": round(statistics.median(lat), 1) if lat else None,
            "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
            "images_per_s": round(len(lat) / wall, 2),
            "client_cpu_ms_per_request": round(cpu * 1000 / max(len(lat), 1), 1)}


def server(name: str, model_dir: Path, photo: Path, n1: int, n8: int) -> dict:
    import psutil
    from gradio_client import Client, handle_file

    proc, url, t0 = start(SERVERS[name], model_dir)
    try:
        Client(url, verbose=False, ssl_verify=tls_context()).predict(handle_file(str(photo)), api_name="/predict")
        cold = round(time.perf_counter() - t0, 2)
        one = client_load(url, photo, 1, n1)
        rss = psutil.Process(proc.pid).memory_info().rss  # after warm-up: the first answer and n1 more
        eight = client_load(url, photo, 8, n8)
        return {"cold_start_s": cold, "one_client": one, "eight_clients": eight, "rss_mb": round(rss / 2**20)}
    finally:
        proc.terminate()
        proc.wait()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few iterations only (CI)")
    ap.add_argument("--model", default=str(EMBEDDED))
    a = ap.parse_args(argv)
    n = 2 if a.smoke else 30
    model = Path(a.model)
    images = twelve_mp(Path(tempfile.mkdtemp()))
    files = shared_photos()[: 5 if a.smoke else None]
    rounds = 1 if a.smoke else ROUNDS
    result = {"machine": machine(), "smoke": a.smoke, "rounds": rounds,
              "forward": forward(model, images["12 MP real photo"], n, rounds),
              "in_process": in_process(model, images, n, rounds),
              "agreement": agreement(model, files) if files else None,
              "servers": {k: server(k, model, images["12 MP real photo"], 3 if a.smoke else 30, 2 if a.smoke else 10)
                          for k in SERVERS}}
    s = result["servers"]
    result["ratios"] = {
        "cold_start_onnx_over_naive": round(s["onnx"]["cold_start_s"] / s["naive"]["cold_start_s"], 2),
        "throughput_8_clients_onnx_over_naive": round(s["onnx"]["eight_clients"]["images_per_s"]
                                                       / s["naive"]["eight_clients"]["images_per_s"], 2),
        "rss_onnx_over_torch": round(s["onnx"]["rss_mb"] / s["torch"]["rss_mb"], 2)}
    print(report(result))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / ("serving-smoke.json" if a.smoke else "serving.json")).write_text(json.dumps(result, indent=2))
    return result


def report(r: dict) -> str:
    m, f, s, q = r["machine"], r["forward"], r["servers"], r["ratios"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores ({m['threads']} threads), flags {' '.join(m['cpu_flags'])}, "
             f"torch {m['torch']}",
             "", "| measure | naive | torch | onnx | onnx vs torch | onnx vs naive |", "|---|---|---|---|---|---|",
             f"| forward pass, batch 1 ({f['torch']['engine']} / {f['onnx']['engine']}) | | {f['torch']['ms']} ms | "
             f"{f['onnx']['ms']} ms | {f['speedup_onnx_vs_torch']}x | |"]
    for name, row in r["in_process"].items():
        lines.append(f"| in process, {name} | {row['naive']} ms | {row['torch']} ms | {row['onnx']} ms | "
                     f"{row['speedup_onnx_vs_torch']}x | {row['speedup_onnx_vs_naive']}x |")
        st = row["stages"]
        cells = " | ".join(" / ".join(str(st[k][stage]) for stage in STAGES) + " ms" for k in ("torch", "onnx"))
        need = row["onnx_forward_for_1.5x_ms"]
        need = f"{need} ms" if need > 0 else "none: the rest alone takes longer"
        lines.append(f"| of which decode / preprocess / forward | | {cells} | onnx forward for 1.5x: {need} | |")
    cold = {name: f"{s[name]['cold_start_s']} s" for name in s}
    lines.append(f"| cold start to the first answer | {cold['naive']} | {cold['torch']} | {cold['onnx']} | | "
                 f"{q['cold_start_onnx_over_naive']}x the time |")
    for k in ("one_client", "eight_clients"):
        cell = {name: f"{s[name][k]['images_per_s']}/s, p50 {s[name][k]['p50_ms']} ms" for name in s}
        lines.append(f"| {k.replace('_', ' ')} (gradio_client) | {cell['naive']} | {cell['torch']} | {cell['onnx']} | "
                     f"{round(s['onnx'][k]['images_per_s'] / s['torch'][k]['images_per_s'], 2)}x | "
                     f"{round(s['onnx'][k]['images_per_s'] / s['naive'][k]['images_per_s'], 2)}x |")
    cpu = {name: f"{s[name]['eight_clients']['client_cpu_ms_per_request']} ms" for name in s}
    lines.append(f"| the eight clients' own CPU per request | {cpu['naive']} | {cpu['torch']} | {cpu['onnx']} | | |")
    rss = {name: f"{s[name]['rss_mb']} MB" for name in s}
    lines.append(f"| RSS after warm-up | {rss['naive']} | {rss['torch']} | {rss['onnx']} | "
                 f"{q['rss_onnx_over_torch']}x | |")
    if r["agreement"]:
        g = r["agreement"]
        lines.append(f"| agreement with fp32 torch, {g['n']} shared photos: top-1 / abstain / largest prob. diff | | | "
                     f"{g['top1_agreement']} / {g['abstain_agreement']} / {g['max_prob_diff']} | | |")
    errors = sum(s[name][k]["errors"] for name in s for k in ("one_client", "eight_clients"))
    lines.append(f"| client errors | | | {errors} | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
