"""Coverage-guided fuzzing (atheris, libFuzzer) of every parser a visitor reaches, for as long as asked.

    python benchmarks/fuzz.py --seconds 1800              # every target, 30 minutes each, two at a time
    python benchmarks/fuzz.py --seconds 60 --targets load_image teach_zip
    python benchmarks/fuzz.py --runs 300                  # a fixed number of inputs each (CI: tests/test_fuzz.py)
    python benchmarks/fuzz.py seeds                       # rewrite tests/fuzz_corpus/ from the hostile suite

Targets, each fed arbitrary bytes (mutated from its committed seed corpus, ``tests/fuzz_corpus/<target>/``):

- ``load_image``: :func:`parkclf.images.load_image` on the bytes, with the serving pixel budget;
- ``many_zip``: the bytes as an uploaded zip, through the Many photos tab's reader (:func:`parkclf.app.many.expand`);
- ``teach_zip``: the same through the Teach tab's reader of class folders (``photos_from_zip``);
- ``class_names``: the bytes split into class names and photo counts, through the Teach tab's rows and
  :func:`parkclf.teach.check_names`; a name that is accepted must work as a folder name and a JSON label;
- ``correction``: a correction as the feedback path receives it (the upload's FileData dict, the photo's bytes, the
  right class, the session) through :class:`parkclf.app.feedback.FeedbackStore`; a saved one must read back.

Each may raise only its documented refusal (ImageError, TooMuch, the tab's gr.Error, TeachError, FeedbackError).
Anything else is a crash, and so is an input that takes over ``--timeout`` seconds or an RSS over ``--rss-mb``
(the pixel budget promises 100 MP an image: 300 MB of RGB). Crashing inputs are written to ``--artifacts`` and
belong in the target's corpus once fixed (tests/test_fuzz.py replays every corpus file). Prints, per target, the
inputs tried, the coverage reached (libFuzzer's ``cov``: edges of the instrumented Python code and ``ft``:
features) and the corpus it grew, beside the CPU; writes benchmarks/results/fuzz.json (fuzz-smoke.json with --runs).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz_corpus"
TARGETS = ("load_image", "many_zip", "teach_zip", "class_names", "correction")
INSTRUMENTED = ("parkclf", "PIL", "zipfile")  # the packages whose code coverage guides the fuzzing
MAX_LEN = 300_000  # bytes an input may grow to: bigger than every seed, small enough to stay fast


# ---------------------------------------------------------------------------------------------------- the targets

def target(name: str):
    """The function libFuzzer calls with each input, its modules imported under atheris' coverage instrumentation."""
    import atheris
    import gradio as gr  # not instrumented: it only carries the tab's refusal (gr.Error)

    # coverage of the code that reads the input: ours, and the standard library's and Pillow's parsers under it,
    # imported afresh under instrumentation (gradio imported them already; instrumenting every loaded module,
    # gradio's included, took 322 s at start here)
    for module in [m for m in sys.modules if m.split(".")[0] in INSTRUMENTED]:
        del sys.modules[module]
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        from PIL import Image

        from parkclf.app import feedback, many
        from parkclf.app.api import file_path
        from parkclf.images import ImageError, load_image
        from parkclf.teach import TeachError, TeachLimits, check_names

        if name in ("teach_zip", "class_names"):
            from parkclf.app.teach_photos import photos_from_rows, photos_from_zip

    work = Path(tempfile.mkdtemp(prefix=f"parkclf-fuzz-{name}-"))
    upload = work / "upload.zip"

    def image(data: bytes) -> None:
        try:
            img = load_image(data)
        except ImageError:
            return
        assert img.mode == "RGB" and img.width * img.height <= 100_000_000, (img.mode, img.size)

    def many_zip(data: bytes) -> None:
        upload.write_bytes(data)
        try:
            items = many.expand([str(upload)], ["photos.zip"], many.ManyLimits(max_files=50, zip_entries=200,
                                                                                zip_bytes=5 * 2**20))
        except many.TooMuch:
            return
        for item in items:
            assert not many.unsafe_entry(item.entry), item.entry
            assert item.error or isinstance(item.source, (bytes, str)), item

    def teach_zip(data: bytes) -> None:
        upload.write_bytes(data)
        try:
            classes, skipped = photos_from_zip(str(upload), "classes.zip", many.ManyLimits(
                max_files=50, zip_entries=200, zip_bytes=5 * 2**20))
        except gr.Error:
            return
        for label, photos in classes.items():
            assert label and "/" not in label and photos, (label, photos)

    limits = TeachLimits()

    def class_names(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        names = [fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
                 for _ in range(fdp.ConsumeIntInRange(0, 12))]
        files = [[] if fdp.ConsumeBool() else None for _ in names]
        try:
            rows = photos_from_rows(names, files)
            labels = check_names(list(rows), limits)
        except (gr.Error, TeachError):
            return
        for label in labels:  # what teaching will do with an accepted name: a folder, a label in config.json
            folder = work / "classes" / label
            folder.mkdir(parents=True)
            folder.rmdir()
            assert json.loads(json.dumps({"0": label}, ensure_ascii=False))["0"] == label
        assert len({label.casefold() for label in labels}) == len(labels)

    labels = ["sequoia", "yellowstone", "yosemite"]
    state = {"store": None, "n": 0}

    def correction(data: bytes) -> None:
        if state["n"] % 200 == 0:  # a fresh folder now and then, so the caps never refuse everything
            if state["store"] is not None:
                state["store"].close()
            state["store"] = feedback.FeedbackStore(work / f"feedback{state['n']}", labels, feedback.FeedbackLimits(
                per_session=10**9, overall=10**9, max_files=10**6))
        state["n"] += 1
        store = state["store"]
        fdp = atheris.FuzzedDataProvider(data)
        right = labels[fdp.ConsumeIntInRange(0, 2)] if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(20)
        session = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
        classified = fdp.ConsumeBool()
        answer = {"label": labels[fdp.ConsumeIntInRange(0, 2)], "abstained": fdp.ConsumeBool(),
                  "confidences": {n: fdp.ConsumeFloat() for n in labels}}
        payload = {"path": str(work / "photo.bin"), "orig_name": fdp.ConsumeUnicodeNoSurrogates(30),
                   "mime_type": fdp.ConsumeUnicodeNoSurrogates(20), "meta": {"_type": "gradio.FileData"}}
        photo = fdp.ConsumeBytes(MAX_LEN)
        Path(payload["path"]).write_bytes(photo)
        if classified:
            store.remember(session, feedback.digest(payload["path"]), answer)
        try:
            saved = store.save(file_path(payload), right, session=session)
        except (feedback.FeedbackError, gr.Error):
            return
        row = feedback.read_rows(store.root)[-1]
        assert saved.exists() and row["label"] == right and classified, row
        with Image.open(saved) as img:
            assert img.format == "JPEG" and max(img.size) <= store.limits.max_side

    return {"load_image": image, "many_zip": many_zip, "teach_zip": teach_zip, "class_names": class_names,
            "correction": correction}[name]


def run_target(name: str, args: list[str]) -> None:
    """One target in this process, under libFuzzer (which exits the process when done)."""
    import atheris

    atheris.Setup([sys.argv[0], *args], target(name))
    atheris.Fuzz()


# ---------------------------------------------------------------------------------------------------- seeds

def seeds() -> dict[str, list[tuple[str, bytes]]]:
    """Small real photos (the shipped NPS examples, cut down), the hostile suite's cases, and zips of them."""
    import importlib.util

    from PIL import Image

    spec = importlib.util.spec_from_file_location("hostile", ROOT / "tests" / "hostile.py")
    hostile_suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile_suite)
    cases = hostile_suite.cases

    photos = []
    for path in sorted((ROOT / "examples").glob("*.jpg"))[:3]:
        img = Image.open(path).convert("RGB")
        img.thumbnail((96, 96))
        for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")):
            buf = io.BytesIO()
            img.save(buf, fmt)
            photos.append((f"{path.stem}.{ext}", buf.getvalue()))
    hostile = [(f"{name}_{filename}", data) for name, data, filename, _ in cases() if len(data) <= MAX_LEN]

    def zipped(entries: list[tuple[str, bytes]]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for entry, data in entries:
                zf.writestr(entry, data)
        return buf.getvalue()

    def torn(data: bytes, at: int) -> bytes:  # one byte flipped: a bad CRC or a bad local header, found fuzzing
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]

    small = photos[:4]
    zips = [("flat.zip", zipped(small)),
            ("classes.zip", zipped([(f"{c}/{n}", d) for c in ("beach", "forest") for n, d in small[:2]])),
            ("folder.zip", zipped([(f"top/{c}/{n}", d) for c in ("a", "b") for n, d in small[:2]])),
            ("litter.zip", zipped([("__MACOSX/._a.jpg", b"x"), (".hidden/a.jpg", small[0][1]), ("a/notes.txt", b"hi"),
                                   ("a/b.jpg", small[1][1])])),
            ("climb.zip", zipped([("../evil.jpg", small[0][1])])),
            ("hostile.zip", zipped([(f"bad/{n}", d) for n, d in hostile[:6]])),
            ("bad-header.zip", torn(zipped([("a/b.jpg", small[1][1])]), 0)),
            ("bad-crc.zip", torn(zipped([("a/b.jpg", small[1][1])]), 60))]
    names = [("names.bin", b"\x02\x05beach\x06forest"), ("reserved.bin", b"\x03\x03CON\x01a\x02..")]
    return {"load_image": photos + hostile, "many_zip": zips, "teach_zip": zips, "class_names": names,
            "correction": [(n, b"\x01" * 16 + d) for n, d in photos[:3] + hostile[:5]]}


def write_seeds() -> None:
    for name, files in seeds().items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)  # crash-* files (inputs that once crashed a target) stay
        for filename, data in files:
            (folder / re.sub(r"[^A-Za-z0-9_.-]", "_", filename)).write_bytes(data)
        print(name, len(files), "seeds,", sum(len(d) for _, d in files) // 1024, "KB")


# ---------------------------------------------------------------------------------------------------- the runner

STATS = re.compile(r"#(\d+)\s+(?:DONE|INITED|NEW|REDUCE|pulse)\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def fuzz(name: str, *, seconds: int | None, runs: int | None, timeout: int, rss_mb: int, artifacts: Path) -> dict:
    """One target for ``seconds`` of wall time (or ``runs`` inputs) in a child process. A child killed by a stray
    SIGALRM with no crashing input (seen on the Teach targets only, after 20 s to 9 minutes; no code here sets a
    timer, and rerunning every input it had kept reproduces nothing) is started again on the corpus it grew, until
    the time is up; the restarts are counted and reported."""
    grown = Path(tempfile.mkdtemp(prefix=f"parkclf-corpus-{name}-"))  # new inputs here; the committed seeds stay
    artifacts.mkdir(parents=True, exist_ok=True)
    flags = [str(grown), str(CORPUS / name), f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}", f"-max_len={MAX_LEN}",
             f"-artifact_prefix={artifacts}/{name}-", "-print_final_stats=1"]
    start, inputs, restarts = time.perf_counter(), 0, 0
    while True:
        left = None if not seconds else int(seconds - (time.perf_counter() - start))
        done = subprocess.run([sys.executable, __file__, "run", name, *flags,
                               f"-max_total_time={left}" if seconds else f"-runs={runs}"], capture_output=True,
                              text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
        stats = STATS.findall(done.stderr)
        last = stats[-1] if stats else ("0", "0", "0", "0")
        inputs += int(last[0])
        crashes = sorted(p.name for p in artifacts.glob(f"{name}-*"))
        stray_alarm = done.returncode == -14 and not crashes
        if not (stray_alarm and seconds and time.perf_counter() - start < seconds - 5):
            break
        restarts += 1
    return {"target": name, "seconds": round(time.perf_counter() - start, 1), "inputs": inputs,
            "cov": int(last[1]), "ft": int(last[2]), "corpus": int(last[3]), "restarts": restarts,
            "returncode": 0 if stray_alarm else done.returncode, "crashes": crashes,
            "tail": done.stderr[-3000:] if done.returncode and not stray_alarm else ""}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="fuzz", choices=["fuzz", "run", "seeds"])
    p.add_argument("target", nargs="?")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    p.add_argument("--seconds", type=int, help="wall time per target")
    p.add_argument("--runs", type=int, default=200, help="inputs per target, where --seconds is not given")
    p.add_argument("--jobs", type=int, default=2, help="targets at once")
    p.add_argument("--timeout", type=int, default=10, help="seconds an input may take")
    p.add_argument("--rss-mb", type=int, default=2048, help="RSS the fuzzing process may reach")
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts" / "fuzz")
    a, rest = p.parse_known_args()
    if a.command == "run":
        run_target(a.target, rest)
        return
    if a.command == "seeds":
        write_seeds()
        return
    from concurrent.futures import ThreadPoolExecutor

    from parkclf.hardware import describe, machine

    header, facts = describe(), machine()  # now: a run takes as long as asked, and the code may change meanwhile
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda t: fuzz(t, seconds=a.seconds, runs=None if a.seconds else a.runs,
                                            timeout=a.timeout, rss_mb=a.rss_mb, artifacts=a.artifacts), a.targets))
    print(f"Machine: {header}; {a.jobs} targets at once")
    print("| target | seconds | inputs | cov | ft | corpus | crashes | restarts |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['seconds']} | {r['inputs']} | {r['cov']} | {r['ft']} | {r['corpus']} | "
              f"{len(r['crashes'])} | {r.get('restarts', 0)} |")
    out = ROOT / "benchmarks" / "results" / ("fuzz.json" if a.seconds else "fuzz-smoke.json")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for r in rows:
        r.update(when=when, seconds_asked=a.seconds, jobs=a.jobs)
    if a.seconds and out.exists():  # fuzz.json keeps each target's latest long run: a rerun of some replaces theirs
        ran = {r["target"] for r in rows}
        rows = [r for r in json.loads(out.read_text())["targets"] if r["target"] not in ran] + rows
        rows.sort(key=lambda r: TARGETS.index(r["target"]))
    out.write_text(json.dumps({"machine": facts, "targets": rows}, indent=1))
    failed = [r for r in rows if r["returncode"] or r["crashes"]]
    for r in failed:
        print(f"\n{r['target']}: exit {r['returncode']}, crashes {r['crashes']}\n{r['tail']}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
