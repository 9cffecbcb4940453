"""Serving speed: the naive app (pipeline, fp32, PIL) against this project's path, in one run, one machine.

    python benchmarks/serving.py                 # full run (about 10 minutes on 2 cores)
    python benchmarks/serving.py --smoke         # a few iterations, to check it runs (CI)
    python benchmarks/serving.py --training      # also time frozen vs full fine-tuning on intel-scenes

Prints a markdown table of ratios (naive / ours), the machine, and writes benchmarks/results/serving.json.
Models: the embedded checkpoint, and a ViT-B/16 with random weights built here (the ratio on a bigger model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
SHARED = ROOT.parent / "shared"
EMBEDDED = ROOT / "models" / "parks-vit-small"


def machine() -> dict:
    import torch

    from parkclf.hardware import bf16_supported

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "bf16": bf16_supported(), "python": platform.python_version()}


def real_photo() -> Image.Image:
    for p in sorted((SHARED / "data" / "parks" / "yosemite").glob("*.jp*g")):
        img = Image.open(p)
        if min(img.size) >= 700:
            return img.convert("RGB")
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (768, 1024, 3), dtype=np.uint8))


def jpeg_12mp(img: Image.Image, path: Path) -> Path:
    img.resize((4032, 3024), Image.BICUBIC).save(path, quality=92)
    return path


def noisy_12mp(path: Path) -> Path:
    arr = np.random.default_rng(0).integers(0, 255, (3024, 4032, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=92)
    return path


def vit_b16(path: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    labels = ["sequoia", "yellowstone", "yosemite"]
    cfg = ViTConfig(num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    ViTForImageClassification(cfg).save_pretrained(path)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(path)
    return path


def p50(xs):
    return statistics.median(xs)


def p95(xs):
    return float(np.percentile(xs, 95))


def time_calls(fn, arg, n: int) -> list[float]:
    fn(arg)  # warm
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn(arg)
        out.append((time.perf_counter() - t) * 1000)
    return out


def in_process(model_dir: Path, images: dict[str, Path], n: int) -> dict:
    from transformers import pipeline

    from parkclf.classifier import Classifier

    naive = pipeline("image-classification", model=str(model_dir))
    ours = Classifier.from_pretrained(str(model_dir))
    rows = {}
    for name, path in images.items():
        a = p50(time_calls(lambda p: naive(Image.open(p).convert("RGB")), path, n))
        b = p50(time_calls(ours.predict, path, n))
        rows[name] = {"naive_ms": round(a, 1), "ours_ms": round(b, 1), "speedup": round(a / b, 2)}
    return rows


def agreement(model_dir: Path, files: list[Path]) -> dict:
    """Top-1 agreement of our path (draft decode, bf16) with the plain fp32 pipeline path."""
    import torch
    from transformers import pipeline

    from parkclf.classifier import Classifier

    ref = pipeline("image-classification", model=str(model_dir), dtype=torch.float32)
    ours = Classifier.from_pretrained(str(model_dir))
    same, diffs = 0, []
    for f in files:
        r = {d["label"]: d["score"] for d in ref(Image.open(f).convert("RGB"), top_k=None)}
        # compare on the raw softmax over all classes (the reference has no calibration)
        logits = ours.logits(ours_images(ours, f))[0]
        p = torch.softmax(logits, -1).numpy()
        o = {ours.all_labels[i]: float(p[i]) for i in range(len(p))}
        same += max(r, key=r.get) == max(o, key=o.get)
        diffs.append(max(abs(r[k] - o[k]) for k in r))
    return {"n": len(files), "top1_agreement": round(same / max(len(files), 1), 4),
            "max_prob_diff": round(max(diffs, default=0.0), 4)}


def ours_images(clf, f):
    from parkclf.transforms import open_images

    return open_images([str(f)], clf.image_processor)


def serve(cmd: list[str], env: dict) -> tuple[subprocess.Popen, str, float]:
    from live import free_port

    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env, "GRADIO_SERVER_PORT": str(port),
                                                "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited")
            time.sleep(0.05)
    return proc, url, t0


def client_load(url: str, photo: Path, clients: int, per_client: int, server_pid: int | None = None) -> dict:
    """``clients`` threads of gradio_client, each sending ``per_client`` requests. With ``server_pid``, also the
    CPU time each request cost the server process and this (client) process: both share the same cores here."""
    import resource

    import psutil
    from gradio_client import Client, handle_file

    lat, errors = [], []
    warm = Client(url, verbose=False)
    warm.predict(handle_file(str(photo)), api_name="/predict")

    def user():
        c = Client(url, verbose=False)
        for _ in range(per_client):
            t = time.perf_counter()
            try:
                c.predict(handle_file(str(photo)), api_name="/predict")
                lat.append((time.perf_counter() - t) * 1000)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    def cpu():
        me = resource.getrusage(resource.RUSAGE_SELF)
        srv = psutil.Process(server_pid).cpu_times() if server_pid else None
        return me.ru_utime + me.ru_stime, (srv.user + srv.system) if srv else 0.0

    c0, s0 = cpu()
    t = time.perf_counter()
    threads = [threading.Thread(target=user) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    c1, s1 = cpu()
    out = {"clients": clients, "requests": len(lat), "errors": len(errors), "p50_ms": round(p50(lat), 1),
           "p95_ms": round(p95(lat), 1), "images_per_s": round(len(lat) / wall, 2)}
    if server_pid and lat:
        out["server_cpu_ms_per_request"] = round((s1 - s0) / len(lat) * 1000, 1)
        out["client_cpu_ms_per_request"] = round((c1 - c0) / len(lat) * 1000, 1)
    return out


def raw_protocol(url: str, photo: Path, n: int) -> dict:
    """One client speaking Gradio's HTTP protocol directly over one kept-alive connection: upload, queue/join,
    then read the SSE stream to process_completed. The server's own floor, without gradio_client's per-call
    costs (new HTTP clients with fresh TLS contexts, a 50 ms polling loop)."""
    import uuid

    import httpx

    lat = []
    with httpx.Client(base_url=url.rstrip("/"), timeout=60) as http:
        deps = http.get("/config").json()["dependencies"]
        fn = next(i for i, d in enumerate(deps) if d.get("api_name") == "predict")
        for _ in range(n + 1):
            t = time.perf_counter()
            with photo.open("rb") as f:
                path = http.post("/gradio_api/upload", files={"files": f}).json()[0]
            session = uuid.uuid4().hex
            payload = {"data": [{"path": path, "orig_name": photo.name, "meta": {"_type": "gradio.FileData"}}],
                       "fn_index": fn, "session_hash": session, "event_data": None, "trigger_id": None}
            http.post("/gradio_api/queue/join", json=payload).raise_for_status()
            done = None
            with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:") and '"process_completed"' in line:
                        done = json.loads(line[5:])
                        break
            if not (done and done.get("success")):
                raise RuntimeError(f"raw protocol call failed: {done}")
            lat.append((time.perf_counter() - t) * 1000)
    lat = lat[1:]  # the first call warms the connection
    return {"requests": len(lat), "p50_ms": round(p50(lat), 1), "p95_ms": round(p95(lat), 1)}


def cold_start(model_dir: Path, photo: Path) -> float:
    from gradio_client import Client, handle_file

    proc, url, t0 = serve([sys.executable, "app.py", "--model", str(model_dir)], {})
    try:
        Client(url, verbose=False).predict(handle_file(str(photo)), api_name="/predict")
        return round(time.perf_counter() - t0, 2)
    finally:
        proc.terminate()
        proc.wait()


def through_client(model_dir: Path, photo: Path, n1: int, n8: int, soak: int) -> dict:
    out = {}
    for name, cmd in [("naive", [sys.executable, "benchmarks/naive_app.py"]),
                      ("ours", [sys.executable, "app.py", "--model", str(model_dir)])]:
        proc, url, _ = serve(cmd, {"MODEL_ID": str(model_dir)})
        try:
            out[name] = {"one_client": client_load(url, photo, 1, n1), "raw_protocol": raw_protocol(url, photo, n1),
                         "eight_clients": client_load(url, photo, 8, n8, server_pid=proc.pid)}
            if name == "ours" and soak:
                out["load_8_clients_x_%d" % soak] = client_load(url, photo, 8, soak)
        finally:
            proc.terminate()
            proc.wait()
    out["throughput_ratio_8_clients"] = round(out["ours"]["eight_clients"]["images_per_s"]
                                              / out["naive"]["eight_clients"]["images_per_s"], 2)
    return out


def training(smoke: bool) -> dict:
    if smoke:
        return {}
    rows = {}
    for name, extra in [("frozen", ["--freeze-backbone"]), ("full", [])]:
        out = Path(tempfile.mkdtemp()) / name
        t = time.perf_counter()
        subprocess.run([sys.executable, "train.py", "--data-dir", str(SHARED / "data/intel-scenes/train"),
                        "--model-name-or-path", str(SHARED / "models/vit-small-dinov2"), "--output-dir", str(out), *extra],
                       cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - t
        r = subprocess.run([sys.executable, "benchmarks/evaluate_folder.py", "--model", str(out), "--data-dir",
                            str(SHARED / "data/intel-scenes/test")], cwd=ROOT, check=True, capture_output=True, text=True)
        rows[name] = {"wall_s": round(wall, 1), "test_accuracy": json.loads(r.stdout.strip().splitlines()[-1])["accuracy"]}
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few iterations only (CI)")
    ap.add_argument("--training", action="store_true", help="also time frozen vs full fine-tuning")
    ap.add_argument("--model", default=str(EMBEDDED))
    a = ap.parse_args(argv)
    n = 2 if a.smoke else 15
    tmp = Path(tempfile.mkdtemp())
    images = {"12MP real photo (q92)": jpeg_12mp(real_photo(), tmp / "real12.jpg"),
              "12MP noisy synthetic": noisy_12mp(tmp / "noisy12.jpg")}
    shared = sorted(p for d in ("yosemite", "yellowstone", "sequoia") for p in (SHARED / "data/parks" / d).glob("*")
                    if p.is_file())
    result = {"machine": machine(), "smoke": a.smoke}
    model = Path(a.model)
    if shared:
        images["a real shared photo"] = shared[0]
    result["in_process_embedded"] = in_process(model, images, n)
    result["in_process_vit_b16_random"] = in_process(vit_b16(tmp / "vitb16"), {k: v for k, v in images.items() if "12MP" in k}, n)
    if shared:
        from parkclf.classifier import Classifier

        clf = Classifier.from_pretrained(str(model))
        per_photo = [p50(time_calls(clf.predict, f, 1)) for f in shared[: (5 if a.smoke else None)]]
        result["in_process_shared_photos"] = {"n": len(per_photo), "p50_ms": round(p50(per_photo), 1),
                                              "p95_ms": round(p95(per_photo), 1)}
        result["agreement_vs_fp32"] = agreement(model, shared[: (5 if a.smoke else None)])
    photo = images["12MP real photo (q92)"]
    pred_ms = p50(time_calls(clf.predict, photo, n)) if shared else None
    expl_ms = p50(time_calls(clf.explain, photo, n)) if shared else None
    if pred_ms:
        result["explain_vs_predict"] = {"predict_ms": round(pred_ms, 1), "explain_ms": round(expl_ms, 1),
                                        "ratio": round(expl_ms / pred_ms, 2)}
    result["client"] = through_client(model, images["12MP real photo (q92)"], 3 if a.smoke else 30, 2 if a.smoke else 10,
                                      0 if a.smoke else 50)
    result["cold_start_s"] = cold_start(model, images["12MP real photo (q92)"])
    if a.training:
        result["training"] = training(a.smoke)
    print(report(result))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / ("serving-smoke.json" if a.smoke else "serving.json")).write_text(json.dumps(result, indent=2))
    return result


def report(r: dict) -> str:
    m = r["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, bf16={m['bf16']}", "",
             "| path | naive | ours | speed-up |", "|---|---|---|---|"]
    for section in ("in_process_embedded", "in_process_vit_b16_random"):
        for k, v in r[section].items():
            lines.append(f"| {section.replace('in_process_', '')}: {k} | {v['naive_ms']} ms | {v['ours_ms']} ms | {v['speedup']}x |")
    c = r["client"]
    for k in ("one_client", "eight_clients"):
        nv, ov = c["naive"][k], c["ours"][k]
        lines.append(f"| gradio_client, {k.replace('_', ' ')}: p50 / p95 | {nv['p50_ms']} / {nv['p95_ms']} ms | "
                     f"{ov['p50_ms']} / {ov['p95_ms']} ms | {round(nv['p50_ms'] / ov['p50_ms'], 2)}x |")
        lines.append(f"| gradio_client, {k.replace('_', ' ')}: throughput | {nv['images_per_s']}/s | {ov['images_per_s']}/s | "
                     f"{round(ov['images_per_s'] / nv['images_per_s'], 2)}x |")
    nv, ov = c["naive"]["raw_protocol"], c["ours"]["raw_protocol"]
    lines.append(f"| one client, raw HTTP protocol (no gradio_client): p50 / p95 | {nv['p50_ms']} / {nv['p95_ms']} ms | "
                 f"{ov['p50_ms']} / {ov['p95_ms']} ms | {round(nv['p50_ms'] / ov['p50_ms'], 2)}x |")
    nv, ov = c["naive"]["eight_clients"], c["ours"]["eight_clients"]
    if "server_cpu_ms_per_request" in ov:
        lines.append(f"| eight clients: server CPU per request | {nv['server_cpu_ms_per_request']} ms | "
                     f"{ov['server_cpu_ms_per_request']} ms | "
                     f"{round(nv['server_cpu_ms_per_request'] / ov['server_cpu_ms_per_request'], 2)}x |")
        lines.append(f"| eight clients: gradio_client CPU per request (same cores) | {nv['client_cpu_ms_per_request']} ms | "
                     f"{ov['client_cpu_ms_per_request']} ms | |")
    for k, v in c.items():
        if k.startswith("load_"):
            lines.append(f"| {k}: errors, p50 / p95, throughput | | {v['errors']} errors, {v['p50_ms']} / {v['p95_ms']} ms, "
                         f"{v['images_per_s']}/s | |")
    lines.append(f"| cold start to first answer | | {r['cold_start_s']} s | |")
    if "agreement_vs_fp32" in r:
        g = r["agreement_vs_fp32"]
        s = r["in_process_shared_photos"]
        lines.append(f"| shared photos in-process p50 / p95 | | {s['p50_ms']} / {s['p95_ms']} ms | |")
        lines.append(f"| top-1 agreement with fp32 pipeline ({g['n']} photos) | | {g['top1_agreement']} (max prob diff {g['max_prob_diff']}) | |")
    if "explain_vs_predict" in r:
        e = r["explain_vs_predict"]
        lines.append(f"| /explain vs /predict in-process (12MP real) | {e['predict_ms']} ms | {e['explain_ms']} ms | {e['ratio']}x cost |")
    for k, v in r.get("training", {}).items():
        lines.append(f"| training {k} on intel-scenes | | {v['wall_s']} s, test acc {v['test_accuracy']} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
