"""Benchmarks and experiments are scripts, not timed tests: CI checks that they run as users run them."""

import json
import subprocess
import sys

import pytest

from parkclf.engine import has_static_int8

from conftest import EMBEDDED, ROOT, make_imagefolder


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_serving_benchmark_smoke():
    r = subprocess.run([sys.executable, "benchmarks/serving.py", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| measure | naive | torch | onnx | onnx vs torch | onnx vs naive |" in r.stdout
    result = json.loads((ROOT / "benchmarks" / "results" / "serving-smoke.json").read_text())
    # the app's default engine on the embedded model: the faster of OpenVINO on the static scales (where they and
    # openvino are) and ONNX Runtime's int8
    assert result["forward"]["onnx"]["engine"] in (("openvino-int8-static", "onnxruntime-int8")
                                                   if has_static_int8(EMBEDDED) else ("onnxruntime-int8",))
    assert result["forward"]["torch"]["engine"].startswith("torch")
    for name, row in result["in_process"].items():  # where one photo's time goes, for both engines
        assert set(row["stages"]) == {"torch", "onnx"}, name
        assert all(v > 0 for stages in row["stages"].values() for v in stages.values()), name
    for name, srv in result["servers"].items():
        assert srv["eight_clients"]["errors"] == 0 and srv["cold_start_s"] > 0 and srv["rss_mb"] > 0, name


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_batch_predict_benchmark_smoke():
    r = subprocess.run([sys.executable, "benchmarks/batch_predict.py", "--smoke"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((ROOT / "benchmarks" / "results" / "batch_predict-smoke.json").read_text())
    assert result["pipeline"]["images_per_s"] > 0 and result["ours"]["images_per_s"] > 0


def test_leave_out_holds_whole_sources_out(tmp_path):
    parks = make_imagefolder(tmp_path / "parks", per_class=4, classes=("sequoia", "yosemite", "zion"))
    rows = ["park\tfile\trepo"] + [f"{p.parent.name}\t{p.parent.name}/{p.name}\t{'blog-a' if i % 2 else 'blog-b'}"
                                   for i, p in enumerate(sorted(parks.rglob("*.jpg")))]
    (parks / "SOURCES.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "split"
    cmd = [sys.executable, "experiments/leave_out.py", "--parks", str(parks), "--out", str(out)]
    r = subprocess.run([*cmd, "--classes", "sequoia", "yosemite", "--sources", "blog-a"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    counts = {p.parent.parent.name + "/" + p.parent.name: 0 for p in out.rglob("*.jpg")}
    for p in out.rglob("*.jpg"):
        counts[p.parent.parent.name + "/" + p.parent.name] += 1
    assert counts == {"train/sequoia": 2, "heldout/sequoia": 2, "train/yosemite": 2, "heldout/yosemite": 2}
    held = {p.resolve() for p in (out / "heldout").rglob("*.jpg")}
    train = {p.resolve() for p in (out / "train").rglob("*.jpg")}
    assert held and train and not held & train
    assert not (out / "train" / "zion").exists()
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode != 0 and "not empty" in again.stderr


def test_teach_tab_benchmark_smoke():
    """Teach to a model you can try, through the real app: it runs, and its figures are in order."""
    import os
    from pathlib import Path

    base = Path(os.environ.get("PARKCLF_TEACH_BASE", EMBEDDED))  # a checkpoint with onnx/ to teach from
    if not (base / "onnx").exists():
        pytest.skip(f"{base} has no ONNX export to teach from")
    r = subprocess.run([sys.executable, "benchmarks/teach_tab.py", "--smoke", "--model", str(base)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| run | photos read, from the first drop (s) | Teach -> model you can try (s) |" in r.stdout
    run = json.loads((ROOT / "benchmarks" / "results" / "teach_tab-smoke.json").read_text())["runs"]
    at_once, after_reading = run.values()
    for figures in (at_once, after_reading):
        assert 0 < figures["ready_s"] <= figures["first_try_s"] and figures["ready_s"] <= figures["zip_s"], figures
    assert "read_s" not in at_once and after_reading["read_s"] > 0, run
    result = json.loads((ROOT / "benchmarks" / "results" / "teach_tab-smoke.json").read_text())
    two, memory = result["two_visitors"], result["memory"]
    assert 0 < two["ready_s"] <= two["first_try_s"] and two["alone_ready_s"] == after_reading["ready_s"], two
    assert memory["per_model_mb"] < 100, memory  # a taught model on its own compiled engine costs about 190


@pytest.mark.skipif(not (EMBEDDED / "onnx").exists(), reason="the embedded model's onnx/ is missing")
def test_teach_benchmark_smoke():
    from conftest import SCENES

    if not SCENES.exists():
        pytest.skip(f"real photos: {SCENES} is not present")
    r = subprocess.run([sys.executable, "benchmarks/teach.py", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| (b) teach / predict on the same 24 photos" in r.stdout
    result = json.loads((ROOT / "benchmarks" / "results" / "teach-smoke.json").read_text())
    assert 0 <= result["quality"][0]["test_accuracy"] <= 1 and result["quality"][0]["test_photos"] == 24
    assert result["speed"]["ratio"] > 0 and len(result["speed"]["teach_s"]) == 1
    assert result["memory"]["peak_mb"] >= result["memory"]["idle_mb"] > 0 and result["memory"]["photos"] == 12


@pytest.mark.skipif(not EMBEDDED.exists() or not has_static_int8(EMBEDDED), reason="needs the embedded export")
def test_engines_benchmark_smoke():
    r = subprocess.run([sys.executable, "benchmarks/engines.py", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| engine | ms a photo, best | every round |" in r.stdout
    result = json.loads((ROOT / "benchmarks" / "results" / "engines-smoke.json").read_text())
    assert set(result["ms_per_photo"]) == {"openvino-int8-static", "onnxruntime-int8",
                                           "torch-" + ("bfloat16" if result["machine"]["bf16"] else "float32")}
    assert all(len(v) == 1 and v[0] > 0 for v in result["ms_per_photo"].values())


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_explain_benchmark_smoke():
    r = subprocess.run([sys.executable, "benchmarks/explain.py", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| checkpoint | explanation graph | ms a photo, best |" in r.stdout and "1.00x" in r.stdout
    result = json.loads((ROOT / "benchmarks" / "results" / "explain-smoke.json").read_text())
    assert result["photos"] == 2 and all(len(v) == 1 and v[0] > 0 for v in result["ms_per_photo"].values())
    assert set(result["graphs"].values()) <= {"explain_quantized.onnx", "explain.onnx"}


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "intel-scenes").exists(), reason="needs ../shared")
def test_soak_smoke():
    """Two visitors for a minute through every endpoint and tab: no errors, an answer after it, an empty queue (the
    growth checks need the long run: python benchmarks/soak.py)."""
    r = subprocess.run([sys.executable, "benchmarks/soak.py", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((ROOT / "benchmarks" / "results" / "soak-smoke.json").read_text())
    assert result["errors"] == [] and result["last_answer_ok"] and result["queue_after"]["queue_size"] == 0
    assert {"/predict", "/explain", "/predict_batch", "many photos (zip of 6)", "teach 3 x 8, then try",
            "classify + correction"} <= set(result["endpoints"])
    assert len(result["samples"]) >= 10 and all(s["rss_mb"] > 0 for s in result["samples"])
    assert "Machine: " in r.stdout and "cores" in r.stdout
