"""A soak: many visitors on the real app for a long time, and what the server looks like over it.

    python benchmarks/soak.py --visitors 8 --minutes 30     # the issue's soak (about 35 minutes in all)
    python benchmarks/soak.py --smoke                       # 2 visitors, 60 s, no growth checks (CI runs it)

Starts ``python app.py`` on loopback with corrections on (``FEEDBACK_DIR``), its temporary files in a folder of
their own (``TMPDIR`` and ``GRADIO_TEMP_DIR``) and uploads expiring after ``--expiry`` seconds. Each visitor, a thread
with its own Gradio session, goes round until the time is up: classify a photo (``/predict`` through gradio_client),
explain it (``/explain``), send a batch of 4 (``/predict_batch``) and a zip of 6 to Many photos, teach 3 classes of 8
photos and try the model, classify a photo in the One photo tab and send a correction for it; every third round it
also joins a Many photos run and walks away from its stream after the first message. Photos come from
``../shared/data/intel-scenes`` (each visitor its own).

Every 5 s it records the server's RSS, open file descriptors, threads and the files under its temporary folder. At
the end it waits for the uploads to expire, asks for one more answer (a stuck worker would hold it) and checks the
queue is empty. Passes when: no errors; RSS after the first third (warm-up) grows under 5% between the first and
last third; open descriptors and temporary files do not grow between the first and last third either; the last
answer comes back within 60 s. Prints a table per endpoint (p50, p95, count) beside the CPU, writes
benchmarks/results/soak.json (soak-smoke.json) and, with matplotlib, soak.png.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
from teach_tab import SCENES, Session, drop, start_app, teach, wait  # the page's protocol, shared

from parkclf.hardware import describe, machine

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("forest", "sea", "street")
# corrections are rate-limited per session and overall (FeedbackLimits: 120 an hour from everyone); 8 visitors send
# more than that in 30 minutes, and the refusal is the product doing its job
RATE_LIMITS = ("We are receiving many corrections right now", "Thank you! This session has sent")


class Refused(Exception):
    """A documented refusal (a rate limit), not an error."""


def photos(visitor: int, n: int = 24) -> dict[str, list[bytes]]:
    """Each class's photos from this visitor's offset: visitors send different photos (8 x 24 of the 200 a class)."""
    return {c: [p.read_bytes() for p in sorted((SCENES / "train" / c).glob("*.jpg"))[visitor * n:(visitor + 1) * n]]
            for c in CLASSES}


def zipped(files: list[bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, data in enumerate(files):
            zf.writestr(f"photos/{i}.jpg", data)
    return buf.getvalue()


class Visitor(threading.Thread):
    def __init__(self, url: str, pid: int, number: int, stop: float, log: dict, errors: list):
        super().__init__(daemon=True)
        self.url, self.pid, self.number, self.stop, self.log, self.errors = url, pid, number, stop, log, errors
        self.photos = photos(number)

    def timed(self, endpoint: str, call):
        start = time.perf_counter()
        try:
            out = call()
        except Refused as e:  # a limit the product sets on purpose: counted, not an error
            self.log.setdefault(f"refused: {e}", []).append(time.perf_counter() - start)
            return None
        except Exception as e:  # an error is a finding, not the end of the soak
            self.errors.append(f"{endpoint}: {type(e).__name__}: {str(e)[:300]}")
            return None
        self.log.setdefault(endpoint, []).append(time.perf_counter() - start)
        return out

    def run(self) -> None:
        from gradio_client import Client, handle_file

        client = Client(self.url, verbose=False)
        tmp = Path(tempfile.mkdtemp(prefix="soak-visitor-"))
        rounds, rng = 0, random.Random(self.number)
        while time.time() < self.stop:
            self.one_round(client, handle_file, rounds, rng, tmp)
            rounds += 1
        self.log.setdefault("rounds", []).append(rounds)

    def one_round(self, client, handle_file, n: int, rng: random.Random, tmp: Path) -> None:
        some = [rng.choice(self.photos[c]) for c in CLASSES for _ in range(2)]
        files = []
        for i, data in enumerate(some):
            files.append(tmp / f"{n}_{i}.jpg")
            files[-1].write_bytes(data)
        self.timed("/predict", lambda: client.predict(handle_file(str(files[0])), api_name="/predict"))
        self.timed("/explain", lambda: client.predict(handle_file(str(files[1])), api_name="/explain"))
        self.timed("/predict_batch", lambda: client.predict([handle_file(str(f)) for f in files[:4]],
                                                             api_name="/predict_batch"))
        page = Session(self.url)
        self.timed("many photos (zip of 6)", lambda: self.many(page, some, leave=False))
        taught = {c: self.photos[c][8 * (n % 3):8 * (n % 3) + 8] for c in CLASSES}
        self.timed("teach 3 x 8, then try", lambda: self.teach(page, taught, some[0]))
        mine = self.photos[CLASSES[n % 3]][n // 3 % len(self.photos[CLASSES[0]])]  # a photo corrected once
        self.timed("classify + correction", lambda: self.correct(page, mine))
        if n % 3 == 2:
            self.timed("walk away mid-stream", lambda: self.many(Session(self.url), some, leave=True))
        for f in files:
            f.unlink()

    @staticmethod
    def join(page: Session, event: str, data: list) -> str:
        fn, _ = page.events[event]
        r = page.http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn, "session_hash": page.session,
                                                            "event_data": None, "trigger_id": None})
        r.raise_for_status()
        return r.json()["event_id"]

    @staticmethod
    def result(page: Session, event: str) -> dict:
        for _, msg in page.stream():
            if msg.get("msg") == "process_completed" and msg.get("event_id") == event:
                if not msg.get("success"):
                    said = str((msg.get("output") or {}).get("error"))
                    if any(said.startswith(limit) for limit in RATE_LIMITS):
                        raise Refused(said)
                    raise RuntimeError(str(msg.get("output"))[:300])
                return msg["output"]
        raise RuntimeError("the stream ended before the event completed")

    def many(self, page: Session, some: list[bytes], leave: bool) -> None:
        event = self.join(page, "run", [[page.upload("photos.zip", zipped(some))]])
        if leave:  # read the first message, then close the stream: the visitor has left
            with page.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": page.session}) as s:
                next(s.iter_lines())
            return
        rows = self.result(page, event)["data"][0]
        rows = rows.get("data", rows) if isinstance(rows, dict) else rows
        if len(rows) != len(some):
            raise RuntimeError(f"Many photos answered {len(rows)} rows for {len(some)} photos")

    def teach(self, page: Session, taught: dict, probe: bytes) -> None:
        values, reads = drop(page, taught)
        wait(page, reads)
        teach(page, self.pid, values, probe)

    def correct(self, page: Session, photo: bytes) -> None:
        upload = page.upload("mine.jpg", photo)
        self.result(page, self.join(page, "classify", [upload, False]))
        out = self.result(page, self.join(page, "save", [upload, "yosemite"]))["data"][0]
        if "Saved" not in str(out):
            raise RuntimeError(f"the correction was not saved: {out}")


def final_answer(url: str, photo: bytes, tmp: Path) -> tuple[float, bool]:
    """One more /predict after the soak, within 60 s: a worker left busy would hold it."""
    from gradio_client import Client, handle_file

    path = tmp / "last.jpg"
    path.write_bytes(photo)
    start = time.perf_counter()
    try:
        answer = Client(url, verbose=False).submit(handle_file(str(path)), api_name="/predict").result(timeout=60)
    except Exception:
        return time.perf_counter() - start, False
    return time.perf_counter() - start, isinstance(answer, dict) and "label" in answer


def sample(pid: int, tmp: Path) -> dict:
    import psutil

    p = psutil.Process(pid)
    files = sum(len(f) for _, _, f in os.walk(tmp))
    return {"t": time.time(), "rss_mb": p.memory_info().rss / 2**20, "fds": p.num_fds(), "threads": p.num_threads(),
            "temp_files": files}


def thirds(samples: list[dict], key: str) -> tuple[float, float]:
    n = len(samples) // 3
    first, last = samples[:n] or samples, samples[-n:] or samples
    return statistics.mean(s[key] for s in first), statistics.mean(s[key] for s in last)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--visitors", type=int, default=8)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--expiry", type=int, default=120, help="seconds an upload is kept (CACHE_EXPIRY)")
    p.add_argument("--smoke", action="store_true", help="2 visitors for 60 s")
    a = p.parse_args(argv)
    if a.smoke:
        a.visitors, a.minutes, a.expiry = 2, 1.0, 10
    tmp = Path(tempfile.mkdtemp(prefix="parkclf-soak-"))
    (tmp / "tmp").mkdir()
    os.environ.update(TMPDIR=str(tmp / "tmp"), GRADIO_TEMP_DIR=str(tmp / "tmp" / "gradio"),
                      FEEDBACK_DIR=str(tmp / "feedback"), CACHE_EXPIRY=f"{max(5, a.expiry // 4)},{a.expiry}")
    proc, url = start_app(str(ROOT / "models" / "parks-vit-small"), tmp / "app.log")
    log: dict[str, list] = {}
    errors: list[str] = []
    samples = [sample(proc.pid, tmp / "tmp")]
    try:
        stop = time.time() + a.minutes * 60
        visitors = [Visitor(url, proc.pid, i, stop, log, errors) for i in range(a.visitors)]
        for v in visitors:
            v.start()
        while any(v.is_alive() for v in visitors):
            time.sleep(5)
            samples.append(sample(proc.pid, tmp / "tmp"))
        ended = time.time()
        time.sleep(a.expiry * 1.5)  # the uploads expire; what is still there after is kept for good
        after_expiry = sample(proc.pid, tmp / "tmp")
        last_answer_s, last_ok = final_answer(url, visitors[0].photos[CLASSES[0]][0], tmp)
        queue = httpx.get(f"{url}/gradio_api/queue/status", timeout=10).json()
    finally:
        proc.terminate()
        proc.wait(30)
    steady = [s for s in samples if s["t"] >= samples[0]["t"] + (ended - samples[0]["t"]) / 3]  # after warm-up
    rss = thirds(steady, "rss_mb")
    fds = thirds(steady, "fds")
    files = thirds(steady, "temp_files")
    endpoints = {k: {"count": len(v), "p50_s": round(statistics.median(v), 2),
                     "p95_s": round(float(np.percentile(v, 95)), 2)} for k, v in log.items() if k != "rounds"}
    result = {"machine": machine(), "visitors": a.visitors, "minutes": a.minutes, "expiry_s": a.expiry,
              "rounds": log.get("rounds", []), "errors": errors, "endpoints": endpoints,
              "rss_mb_first_last_third": [round(x, 1) for x in rss], "rss_growth": round(rss[1] / rss[0] - 1, 4),
              "fds_first_last_third": [round(x, 1) for x in fds],
              "temp_files_first_last_third": [round(x, 1) for x in files],
              "after_expiry": after_expiry, "last_answer_s": round(last_answer_s, 2), "last_answer_ok": last_ok,
              "queue_after": queue, "samples": samples}
    # a leak grows with time: compare the last third with the first, after the warm-up
    result["passed"] = bool(not errors and last_ok and queue.get("queue_size", 0) == 0 and (a.smoke or (
        result["rss_growth"] < 0.05 and fds[1] <= fds[0] * 1.05 + 2 and files[1] <= files[0] * 1.1 + 10)))
    out = ROOT / "benchmarks" / "results" / ("soak-smoke.json" if a.smoke else "soak.json")
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(report(result))
    return result


def plot(result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    s = result["samples"]
    t = [(x["t"] - s[0]["t"]) / 60 for x in s]
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    ax.plot(t, [x["rss_mb"] for x in s], label="server RSS (MB)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax2 = ax.twinx()
    ax2.plot(t, [x["temp_files"] for x in s], color="tab:orange", label="temporary files")
    ax2.set_ylabel("files")
    ax.set_title(f"{result['visitors']} visitors, {result['minutes']:g} min: {result['machine']['cpu']}", fontsize=9)
    fig.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def report(r: dict) -> str:
    lines = [f"Machine: {describe()}", f"{r['visitors']} visitors for {r['minutes']:g} min, rounds {r['rounds']}", "",
             "| endpoint | count | p50 s | p95 s |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['count']} | {v['p50_s']} | {v['p95_s']} |" for k, v in r["endpoints"].items()]
    lines += ["", f"RSS after warm-up, first / last third: {r['rss_mb_first_last_third']} MB "
              f"({r['rss_growth']:+.1%}); open fds {r['fds_first_last_third']}; temporary files "
              f"{r['temp_files_first_last_third']}, {r['after_expiry']['temp_files']} after the uploads expired",
              f"Errors: {len(r['errors'])}{': ' + '; '.join(r['errors'][:5]) if r['errors'] else ''}",
              f"Last answer after the soak: {'ok' if r['last_answer_ok'] else 'NONE'} in {r['last_answer_s']} s; queue "
              f"{r['queue_after']}", f"Passed: {r['passed']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
