"""The "Teach it" tab's speed and memory: from pressing Teach to a model you can try, through the real app here.

    python benchmarks/teach_tab.py            # intel-scenes photos: 3 x 8 and 6 x 20, two visitors, 8 models kept
    python benchmarks/teach_tab.py --smoke    # generated photos, one round each (CI: it runs)

Starts ``python app.py`` on loopback (``--model``, default the embedded model, is what it serves and teaches from).
Each round is a fresh session that does what the page does as photos are dropped in: it uploads each class's photos
and joins that row's read event. Then, over Gradio's HTTP protocol, it joins the Teach event, either at once (Teach
pressed as the last photos land: it reads what is left itself) or once the reads are done (``read_s``: from the
first upload until then), and times, from the moment it joins: Teach's answer (summary, metrics and confusion
matrix: "Try it" answers) and the server's CPU seconds until then, then, as the page does on that answer, the
first "Try it" answer and the zip ready for download (their own events). Medians of the rounds.

Two visitors (issue 32): B presses Teach on 3 x 8 photos already read while A drops 3 x 20; B's time to a model
it can try, against B's alone in the same run (the "after reading" row of the same photos). Memory: the server's RSS
as 8 visitors each teach and keep a model, per model kept, against what a model cost when each loaded its own
compiled engine (``load(folder)``, measured in a separate process in the same run). Prints a markdown table with
the machine described (CPU, its AVX-512 / VNNI / AMX flags, the load average) and writes
benchmarks/results/teach_tab.json (teach_tab-smoke.json).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from parkclf.hardware import machine  # the CPU's name and flags beside every figure

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "intel-scenes"
EMBEDDED = ROOT / "models" / "parks-vit-small"


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


def drop(page: Session, photos: dict[str, list[bytes]]) -> tuple[dict, set]:
    """Upload each class's photos into its row and join the row's read event: (the page's values, read events)."""
    values, reads = {}, set()
    for i, (name, files) in enumerate(photos.items()):
        values[f"teach_name_{i}"] = name
        values[f"teach_photos_{i}"] = [page.upload(f"{name}_{k}.jpg", d) for k, d in enumerate(files)]
        reads.add(page.join(f"teach_read_{i}", values))
    return values, reads


def wait(page: Session, events: set) -> None:
    for _, msg in page.stream():
        if msg.get("msg") == "process_completed" and msg.get("event_id") in events:
            events.discard(msg["event_id"])
            if not events:
                return


def teach(page: Session, pid: int, values: dict, probe: bytes) -> dict:
    """Join Teach; when it answers, join Try it and the zip as the page does. The times from joining Teach."""
    t0, cpu0, out = time.perf_counter(), cpu_s(pid), {}
    teaching, trying, zipping = page.join("teach_photos", values), None, None
    while len(out) < 4:  # the server ends a session's stream when it has nothing pending: open it again
        for _, msg in page.stream():
            now = time.perf_counter() - t0
            if msg.get("msg") != "process_completed":
                continue
            if not msg.get("success") or (msg["event_id"] == teaching and not str(
                    msg["output"]["data"][0]).startswith("**Taught")):
                raise RuntimeError(msg.get("output"))
            if msg["event_id"] == teaching:
                out["ready_s"], out["ready_cpu_s"] = now, cpu_s(pid) - cpu0  # the results: "Try it" answers now
                trying = page.join("try_taught", {"teach_try_photo": page.upload("probe.jpg", probe)})
                zipping = page.join("zip_taught", {})
            elif msg["event_id"] in (trying, zipping):
                out["first_try_s" if msg["event_id"] == trying else "zip_s"] = now
            if len(out) == 4:
                break
    return out


def one_round(url: str, pid: int, photos: dict[str, list[bytes]], probe: bytes, read_first: bool) -> dict:
    page, start = Session(url), time.perf_counter()
    values, reads = drop(page, photos)
    if not read_first:
        return teach(page, pid, values, probe)
    wait(page, reads)
    return {"read_s": time.perf_counter() - start, **teach(page, pid, values, probe)}


def two_visitors(url: str, pid: int, mine: dict, theirs: dict, probe: bytes) -> dict:
    """B's photos are read; A drops theirs, and B presses Teach at once: B's times, while A's reading goes on."""
    b = Session(url)
    values, reads = drop(b, mine)
    wait(b, reads)
    a = Session(url)
    theirs_read = drop(a, theirs)[1]
    times = teach(b, pid, values, probe)
    wait(a, theirs_read)  # before the next round
    return times


def visit(url: str, pid: int, photos: dict, probe: bytes) -> dict:
    """A visitor who drops photos, waits for them to be read, and teaches."""
    page = Session(url)
    values, reads = drop(page, photos)
    wait(page, reads)
    return teach(page, pid, values, probe)


def memory(url: str, pid: int, photos: dict, probe: bytes, visitors: int = 8) -> dict:
    """Server RSS with one model kept, then with ``visitors`` more taught (the store keeps the 8 latest)."""
    visit(url, pid, photos, probe)
    first = rss_mb(pid)
    for _ in range(visitors):
        visit(url, pid, photos, probe)
    kept = min(1 + visitors, 8) - 1  # the store keeps 8: the first model goes once 8 newer ones are kept
    return {"rss_one_model_mb": first, "rss_models_mb": rss_mb(pid), "visitors": visitors,
            "per_model_mb": (rss_mb(pid) - first) / kept}


OWN_ENGINE = """
import sys, tempfile
from pathlib import Path
from parkclf.classifier import Classifier, load
from parkclf.teach import teach
def rss(): return int(Path('/proc/self/status').read_text().split('VmRSS:')[1].split()[0]) / 1024
base = Classifier.from_pretrained(sys.argv[1])
photos = {n: [Path(p) for p in sys.argv[3:]][i::3] for i, n in enumerate(("a", "b", "c"))}
folder = teach(photos, Path(tempfile.mkdtemp()) / "m", base=base).folder
models, before = [load(str(folder))], rss()
models += [load(str(folder)) for _ in range(int(sys.argv[2]))]
print((rss() - before) / int(sys.argv[2]))
"""


def own_engine_mb(model: str, photos: list[Path], n: int = 2) -> float:
    """RSS per taught model kept the way the tab kept them before issue 32: each its own compiled engine."""
    r = subprocess.run([sys.executable, "-c", OWN_ENGINE, model, str(n), *map(str, photos)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return float(r.stdout.split()[-1])


def scene_photos(per_class: int, classes: int, skip: int = 0) -> tuple[dict[str, list[bytes]], bytes]:
    """``per_class`` photos of each of the first ``classes`` scenes after the first ``skip`` of them."""
    names = sorted(p.name for p in (SCENES / "train").iterdir())[skip:skip + classes]
    photos = {n: [p.read_bytes() for p in sorted((SCENES / "train" / n).glob("*.jpg"))[:per_class]] for n in names}
    probe = sorted((SCENES / "test" / names[0]).glob("*.jpg"))[0].read_bytes()
    return photos, probe


def generated_photos(per_class: int, seed: int = 0) -> tuple[dict[str, list[bytes]], bytes]:
    import numpy as np
    from PIL import Image

    def jpeg(colour, seed):
        rng = np.random.default_rng(seed)
        arr = np.clip(np.array(colour) * 0.7 + rng.normal(0, 30, (150, 150, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, "JPEG")
        return buf.getvalue()

    colours = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 220)}
    photos = {n: [jpeg(c, seed + 100 * i + k) for k in range(per_class)] for i, (n, c) in enumerate(colours.items())}
    return photos, jpeg(colours["red"], 9999)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(EMBEDDED), help="the checkpoint the app serves and teaches from")
    parser.add_argument("--smoke", action="store_true", help="generated photos, one round of each")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    smoke = args.smoke or not SCENES.exists()
    if smoke:
        small, rounds = ("3 classes x 8 generated photos", generated_photos(8)), 1
        sets, theirs = dict([small]), generated_photos(8, seed=5000)[0]
    else:
        small, rounds = ("3 classes x 8 photos", scene_photos(8, 3)), args.rounds
        sets, theirs = dict([small, ("6 classes x 20 photos", scene_photos(20, 6))]), scene_photos(20, 3, skip=3)[0]
    runs = {f"{name}, Teach pressed {when}": (photos, probe, first) for name, (photos, probe) in sets.items()
            for when, first in (("at once", False), ("after reading", True))}
    log = Path(tempfile.mkdtemp(prefix="teach-bench-")) / "app.log"
    proc, url = start_app(args.model, log)
    result = {"machine": machine(), "model": args.model, "rss_idle_mb": rss_mb(proc.pid), "runs": {}}
    try:
        for name, (photos, probe, read_first) in runs.items():
            times = [one_round(url, proc.pid, photos, probe, read_first) for _ in range(rounds)]
            result["runs"][name] = median(times) | {"photos": sum(len(v) for v in photos.values())}
        alone = result["runs"][f"{small[0]}, Teach pressed after reading"]
        times = [two_visitors(url, proc.pid, *small[1][:1], theirs, small[1][1]) for _ in range(rounds)]
        result["two_visitors"] = median(times) | {
            "theirs": sum(len(v) for v in theirs.values()), "alone_ready_s": alone["ready_s"],
            "alone_first_try_s": alone["first_try_s"]}
        result["memory"] = memory(url, proc.pid, *small[1], visitors=3 if smoke else 8)
        result["rss_after_mb"] = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    if not smoke:  # the same model kept the way the tab kept them before: each loads its own compiled engine
        paths = [p for n in sets[small[0]][0] for p in sorted((SCENES / "train" / n).glob("*.jpg"))[:8]]
        result["memory"]["own_engine_per_model_mb"] = own_engine_mb(args.model, paths)
    print(report(result))
    out = ROOT / "benchmarks" / "results" / ("teach_tab-smoke.json" if args.smoke else "teach_tab.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def median(rounds: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} | {"rounds": rounds}


def report(result: dict) -> str:
    m, two, mem = result["machine"], result["two_visitors"], result["memory"]
    lines = [f"Machine: {m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2/AVX-512/AMX'}), {m['cores']} cores (load "
             f"{m['load_average_at_start'][0]:.1f} at start), Python {m['python']}",
             f"Server RSS: {result['rss_idle_mb']:.0f} MB idle, {result.get('rss_after_mb', 0):.0f} MB after", "",
             "| run | photos read, from the first drop (s) | Teach -> model you can try (s) "
             "| server CPU until then (s) | first Try answer (s) | zip ready (s) |", "|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        read = f"{r['read_s']:.1f}" if "read_s" in r else "-"
        lines.append(f"| {name} | {read} | {r['ready_s']:.1f} | {r['ready_cpu_s']:.1f} | {r['first_try_s']:.1f} "
                     f"| {r['zip_s']:.1f} |")
    lines += ["", f"Two visitors: B presses Teach on photos already read while A drops {two['theirs']} photos "
              "(target: at most 2x B alone)", "", "| B | Teach -> model you can try (s) | first Try answer (s) |",
              "|---|---|---|",
              f"| alone (the row above, after reading) | {two['alone_ready_s']:.1f} | {two['alone_first_try_s']:.1f} |",
              f"| while A's photos are read | {two['ready_s']:.1f} ({two['ready_s'] / two['alone_ready_s']:.1f}x) "
              f"| {two['first_try_s']:.1f} ({two['first_try_s'] / two['alone_first_try_s']:.1f}x) |"]
    own = mem.get("own_engine_per_model_mb")
    lines += ["", f"Memory: server RSS {mem['rss_one_model_mb']:.0f} MB with one taught model kept, "
              f"{mem['rss_models_mb']:.0f} MB after {mem['visitors']} more visitors each taught one (8 kept at most): "
              f"**{mem['per_model_mb']:.1f} MB per model** (target: under 100)"
              + (f"; each on its own compiled engine, as before: {own:.0f} MB per model "
                 f"({mem['per_model_mb'] / own:.2f}x)" if own else "")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
