"""parkclf evaluate / abstain-eval: the measurements docs/results.md quotes, through the app's own path."""

import json

import pytest

from parkclf.errors import UsageError
from parkclf.evaluation import abstain_main, evaluate_main

from conftest import EMBEDDED, make_imagefolder


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_abstain_eval_reports_keep_rate_auroc_and_accuracy_for_class_folders(tmp_path):
    ins = make_imagefolder(tmp_path / "in", per_class=3, classes=("sequoia", "yosemite"), size=(96, 72))
    outs = make_imagefolder(tmp_path / "out", per_class=3, classes=("street",), size=(96, 72))
    r = abstain_main(["--model", str(EMBEDDED), "--in-scope", str(ins / "sequoia"),
                                          str(ins / "yosemite"), "--out-of-scope", f"street={outs / 'street'}"])
    assert r["n_in_scope"] == r["n_in_scope_labelled"] == 6
    assert 0.0 <= r["in_scope_accuracy"] <= 1.0 and 0.0 <= r["in_scope_keep_rate"] <= 1.0
    assert r["out_of_scope"]["street"]["n"] == 3 and 0.0 <= r["out_of_scope"]["street"]["auroc"] <= 1.0
    args = ["--model", str(EMBEDDED), "--in-scope", str(ins / "sequoia"), "--out-of-scope", f"street={outs / 'street'}"]
    never = abstain_main([*args, "--threshold", "1.01"])
    always = abstain_main([*args, "--threshold", "0"])
    assert never["in_scope_keep_rate"] == 0.0 and never["out_of_scope"]["street"]["abstained"] == 1.0
    assert always["in_scope_keep_rate"] == 1.0 and always["out_of_scope"]["street"]["abstained"] == 0.0


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_abstain_eval_pools_several_folders_under_one_name(tmp_path):
    ins = make_imagefolder(tmp_path / "in", per_class=2, classes=("sequoia",), size=(96, 72))
    outs = make_imagefolder(tmp_path / "out", per_class=2, classes=("zion", "arches"), size=(96, 72))
    r = abstain_main(["--model", str(EMBEDDED), "--in-scope", str(ins / "sequoia"),
                                          "--out-of-scope", f"parks={outs / 'zion'},{outs / 'arches'}",
                                          f"zion={outs / 'zion'}"])
    assert r["out_of_scope"]["parks"]["n"] == 4 and r["out_of_scope"]["zion"]["n"] == 2


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_abstain_eval_pools_the_scores_of_several_runs(tmp_path):
    from sklearn.metrics import roc_auc_score

    a = make_imagefolder(tmp_path / "a", per_class=3, classes=("sequoia", "zion"), size=(96, 72))
    b = make_imagefolder(tmp_path / "b", per_class=2, classes=("yosemite", "zion"), size=(80, 96))
    run = abstain_main
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


@pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is missing")
def test_evaluate_reports_the_accuracy_of_the_closest_class(tmp_path):
    data = make_imagefolder(tmp_path / "d", per_class=2, classes=("sequoia", "yosemite"), size=(96, 72))
    r = evaluate_main(["--model", str(EMBEDDED), "--data-dir", str(data)])
    assert r["n"] == 4 and r["path"] == "parkclf.Classifier"
    assert r["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_a_bad_out_of_scope_pair_or_folder_names_the_fix(tmp_path):
    with pytest.raises(UsageError, match="NAME=DIR"):
        abstain_main(["--model", str(EMBEDDED), "--in-scope", str(tmp_path), "--out-of-scope", str(tmp_path)])
    with pytest.raises(UsageError, match="expected .*<class>"):
        evaluate_main(["--model", str(EMBEDDED), "--data-dir", str(tmp_path / "missing")])
