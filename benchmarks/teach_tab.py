"""The "Teach it" tab's speed: from pressing Teach to a model you can try, through the real app on this machine.

    python benchmarks/teach_tab.py            # 3 classes x 8 and 6 x 20 intel-scenes photos, 3 rounds each
    python benchmarks/teach_tab.py --smoke    # 3 x 8 generated photos, one round (CI: it runs)

Starts ``python app.py`` on loopback (``--model``, default the embedded model, is what it serves and teaches from).
Each round is a fresh session that does what the page does as photos are dropped in: it uploads each class's photos
and joins that row's read event (the photos go through the backbone then, in the Teach queue). Then, over Gradio's
HTTP protocol, it joins the Teach event, either at once (the worst case: Teach pressed as the last photos land, so
it waits for their reading) or once the reads are done (``read_s``: from the first upload until then), and times,
from the moment it joins: the first result (summary, metrics and confusion matrix: the model is loaded and "Try it"
answers) and the server's CPU seconds until then, the first "Try it" answer sent at that moment, and the zip ready
for download. Medians of the rounds; the load average at the start says how much else the machine was doing.
Also the server's RSS before and after (each taught model kept costs its own compiled engine). Prints a markdown
table with the machine described and writes benchmarks/results/teach_tab.json (teach_tab-smoke.json).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "intel-scenes"
EMBEDDED = ROOT / "models" / "parks-vit-small"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_1min": os.getloadavg()[0], "python": platform.python_version()}


def start_app(model: str, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MODEL_ID": model, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"app.py did not answer:\n{log.read_text()[-2000:]}")


class Session:
    """One visitor: uploads, then the tab's events joined by the elem_id of their inputs, each message timed."""

    def __init__(self, url: str):
        self.http, self.session = httpx.Client(base_url=url, timeout=600), uuid.uuid4().hex[:11]
        config = self.http.get("/config").json()
        self.events = {d["api_name"]: (d["id"], d["inputs"]) for d in config["dependencies"] if d.get("api_name")}
        self.elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}

    def upload(self, name: str, data: bytes) -> dict:
        path = self.http.post("/gradio_api/upload", files={"files": (name, data)}).json()[0]
        return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def join(self, event: str, values: dict) -> str:
        fn, inputs = self.events[event]
        body = {"data": [values.get(self.elem[i]) for i in inputs], "fn_index": fn, "session_hash": self.session,
                "event_data": None, "trigger_id": None}
        response = self.http.post("/gradio_api/queue/join", json=body)
        response.raise_for_status()
        return response.json()["event_id"]

    def stream(self):
        """(seconds since the call, message) for each message of this session, until a stream ends."""
        t0 = time.perf_counter()
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as s:
            for line in s.iter_lines():
                if line.startswith("data:"):
                    yield time.perf_counter() - t0, json.loads(line[5:])


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used: on a machine shared with other work, the wall time says
    how long a visitor waited, this how much of the machine it took."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def one_round(url: str, pid: int, photos: dict[str, list[bytes]], probe: bytes, read_first: bool) -> dict:
    page = Session(url)
    values, reads, start = {}, set(), time.perf_counter()
    for i, (name, files) in enumerate(photos.items()):
        values[f"teach_name_{i}"] = name
        values[f"teach_photos_{i}"] = [page.upload(f"{name}_{k}.jpg", d) for k, d in enumerate(files)]
        reads.add(page.join(f"teach_read_{i}", values))
    out = {}
    if read_first:
        for _, msg in page.stream():
            if msg.get("msg") == "process_completed" and msg.get("event_id") in reads:
                reads.discard(msg["event_id"])
                if not reads:
                    break
        out["read_s"] = time.perf_counter() - start
    t0, cpu0 = time.perf_counter(), cpu_s(pid)
    teaching, trying, wanted = page.join("teach_photos", values), None, len(out) + 4
    for _, msg in page.stream():
        now = time.perf_counter() - t0
        if msg.get("msg") == "process_completed" and not msg.get("success"):
            raise RuntimeError(msg.get("output"))
        if msg.get("event_id") == teaching and msg.get("msg") == "process_generating" and trying is None:
            out["ready_s"] = now  # the first yield: results shown, the model loaded and kept for this session
            out["ready_cpu_s"] = cpu_s(pid) - cpu0
            trying = page.join("try_taught", {"teach_try_photo": page.upload("probe.jpg", probe)})
        elif msg.get("msg") == "process_completed" and msg.get("event_id") in (teaching, trying):
            out["zip_s" if msg.get("event_id") == teaching else "first_try_s"] = now
        if len(out) == wanted:
            return out
    raise RuntimeError(f"the event stream ended with only {out}")


def scene_photos(per_class: int, classes: int) -> tuple[dict[str, list[bytes]], bytes]:
    names = sorted(p.name for p in (SCENES / "train").iterdir())[:classes]
    photos = {n: [p.read_bytes() for p in sorted((SCENES / "train" / n).glob("*.jpg"))[:per_class]] for n in names}
    probe = sorted((SCENES / "test" / names[0]).glob("*.jpg"))[0].read_bytes()
    return photos, probe


def generated_photos(per_class: int) -> tuple[dict[str, list[bytes]], bytes]:
    import numpy as np
    from PIL import Image

    def jpeg(colour, seed):
        rng = np.random.default_rng(seed)
        arr = np.clip(np.array(colour) * 0.7 + rng.normal(0, 30, (150, 150, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, "JPEG")
        return buf.getvalue()

    colours = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 220)}
    photos = {n: [jpeg(c, 100 * i + k) for k in range(per_class)] for i, (n, c) in enumerate(colours.items())}
    return photos, jpeg(colours["red"], 9999)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(EMBEDDED), help="the checkpoint the app serves and teaches from")
    parser.add_argument("--smoke", action="store_true", help="3 x 8 generated photos, one round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.smoke or not SCENES.exists():
        sets, rounds = {"3 classes x 8 generated photos": generated_photos(8)}, 1
    else:
        sets, rounds = {"3 classes x 8 photos": scene_photos(8, 3), "6 classes x 20 photos": scene_photos(20, 6)}, \
            args.rounds
    runs = {f"{name}, Teach pressed {when}": (photos, probe, first) for name, (photos, probe) in sets.items()
            for when, first in (("at once", False), ("after reading", True))}
    log = Path(tempfile.mkdtemp(prefix="teach-bench-")) / "app.log"
    proc, url = start_app(args.model, log)
    result = {"machine": machine(), "model": args.model, "rss_idle_mb": rss_mb(proc.pid), "runs": {}}
    try:
        for name, (photos, probe, read_first) in runs.items():
            times = [one_round(url, proc.pid, photos, probe, read_first) for _ in range(rounds)]
            result["runs"][name] = {k: statistics.median(t[k] for t in times) for k in times[0]} | {
                "rounds": times, "photos": sum(len(v) for v in photos.values())}
        result["rss_after_mb"] = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    print(report(result))
    out = ROOT / "benchmarks" / "results" / ("teach_tab-smoke.json" if args.smoke else "teach_tab.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def report(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores (load {m['load_1min']:.1f} at start), Python {m['python']}",
             f"Server RSS: {result['rss_idle_mb']:.0f} MB idle, {result.get('rss_after_mb', 0):.0f} MB after", "",
             "| run | photos read, from the first drop (s) | Teach -> model you can try (s) "
             "| server CPU until then (s) | first Try answer (s) | zip ready (s) |", "|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        read = f"{r['read_s']:.1f}" if "read_s" in r else "-"
        lines.append(f"| {name} | {read} | {r['ready_s']:.1f} | {r['ready_cpu_s']:.1f} | {r['first_try_s']:.1f} "
                     f"| {r['zip_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
