"""Benchmarks are scripts, not timed tests: CI only checks the serving benchmark runs in smoke mode."""

import json
import subprocess
import sys

import pytest

from conftest import EMBEDDED, ROOT


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_serving_benchmark_smoke():
    r = subprocess.run([sys.executable, "benchmarks/serving.py", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| path | naive | ours | speed-up |" in r.stdout
    result = json.loads((ROOT / "benchmarks" / "results" / "serving-smoke.json").read_text())
    assert result["client"]["ours"]["eight_clients"]["errors"] == 0
    assert result["cold_start_s"] > 0


def _run_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_leave_out_holds_whole_sources_out(tmp_path):
    from conftest import make_imagefolder

    parks = make_imagefolder(tmp_path / "parks", per_class=4, classes=("sequoia", "yosemite", "zion"))
    rows = ["park\tfile\trepo"] + [f"{p.parent.name}\t{p.parent.name}/{p.name}\t{'blog-a' if i % 2 else 'blog-b'}"
                                   for i, p in enumerate(sorted(parks.rglob("*.jpg")))]
    (parks / "SOURCES.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "split"
    counts = _run_script("leave_out").main(["--parks", str(parks), "--classes", "sequoia", "yosemite",
                                            "--sources", "blog-a", "--out", str(out)])
    assert counts == {"train/sequoia": 2, "heldout/sequoia": 2, "train/yosemite": 2, "heldout/yosemite": 2}
    held = {p.resolve() for p in (out / "heldout").rglob("*.jpg")}
    train = {p.resolve() for p in (out / "train").rglob("*.jpg")}
    assert held and train and not held & train
    assert not (out / "train" / "zion").exists()
    with pytest.raises(SystemExit, match="not empty"):
        _run_script("leave_out").main(["--parks", str(parks), "--out", str(out)])


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_abstain_eval_reports_keep_rate_auroc_and_accuracy_for_class_folders(tmp_path):
    from conftest import make_imagefolder

    ins = make_imagefolder(tmp_path / "in", per_class=3, classes=("sequoia", "yosemite"), size=(96, 72))
    outs = make_imagefolder(tmp_path / "out", per_class=3, classes=("street",), size=(96, 72))
    r = _run_script("abstain_eval").main(["--model", str(EMBEDDED), "--in-scope", str(ins / "sequoia"),
                                          str(ins / "yosemite"), "--out-of-scope", f"street={outs / 'street'}"])
    assert r["n_in_scope"] == r["n_in_scope_labelled"] == 6
    assert 0.0 <= r["in_scope_accuracy"] <= 1.0 and 0.0 <= r["in_scope_keep_rate"] <= 1.0
    assert r["out_of_scope"]["street"]["n"] == 3 and 0.0 <= r["out_of_scope"]["street"]["auroc"] <= 1.0
    args = ["--model", str(EMBEDDED), "--in-scope", str(ins / "sequoia"), "--out-of-scope", f"street={outs / 'street'}"]
    never = _run_script("abstain_eval").main([*args, "--threshold", "1.01"])
    always = _run_script("abstain_eval").main([*args, "--threshold", "0"])
    assert never["in_scope_keep_rate"] == 0.0 and never["out_of_scope"]["street"]["abstained"] == 1.0
    assert always["in_scope_keep_rate"] == 1.0 and always["out_of_scope"]["street"]["abstained"] == 0.0


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_abstain_eval_pools_several_folders_under_one_name(tmp_path):
    from conftest import make_imagefolder

    ins = make_imagefolder(tmp_path / "in", per_class=2, classes=("sequoia",), size=(96, 72))
    outs = make_imagefolder(tmp_path / "out", per_class=2, classes=("zion", "arches"), size=(96, 72))
    r = _run_script("abstain_eval").main(["--model", str(EMBEDDED), "--in-scope", str(ins / "sequoia"),
                                          "--out-of-scope", f"parks={outs / 'zion'},{outs / 'arches'}",
                                          f"zion={outs / 'zion'}"])
    assert r["out_of_scope"]["parks"]["n"] == 4 and r["out_of_scope"]["zion"]["n"] == 2


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_abstain_eval_pools_the_scores_of_several_runs(tmp_path):
    from sklearn.metrics import roc_auc_score

    from conftest import make_imagefolder

    a = make_imagefolder(tmp_path / "a", per_class=3, classes=("sequoia", "zion"), size=(96, 72))
    b = make_imagefolder(tmp_path / "b", per_class=2, classes=("yosemite", "zion"), size=(80, 96))
    run = _run_script("abstain_eval").main
    first = run(["--model", str(EMBEDDED), "--in-scope", str(a / "sequoia"), "--out-of-scope", f"other={a / 'zion'}",
                 "--scores-out", str(tmp_path / "a.json")])
    second = run(["--model", str(EMBEDDED), "--in-scope", str(b / "yosemite"), "--out-of-scope", f"other={b / 'zion'}",
                  "--threshold", "0.5", "--scores-out", str(tmp_path / "b.json"), "--pooled", str(tmp_path / "a.json")])
    assert "pooled" not in first
    saved = [json.loads((tmp_path / f).read_text()) for f in ("b.json", "a.json")]
    ins = [s for r in saved for s in r["in_scope"]]
    outs = [s for r in saved for s in r["out_of_scope"]["other"]]
    assert len(ins) == 5 and len(outs) == 5
    pooled = second["pooled"]
    assert pooled["runs"] == 2 and pooled["n_in_scope"] == 5 and pooled["out_of_scope"]["other"]["n"] == 5
    assert pooled["out_of_scope"]["other"]["auroc"] == round(roc_auc_score([1] * 5 + [0] * 5, ins + outs), 4)
    kept = sum(s >= 0.5 for s in saved[0]["in_scope"]) + sum(s >= saved[1]["threshold"] for s in saved[1]["in_scope"])
    assert pooled["in_scope_keep_rate"] == round(kept / 5, 4)
