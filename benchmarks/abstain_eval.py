"""How well the app's in-scope score separates its classes from everything else, on folders of photos.

    python benchmarks/abstain_eval.py --model models/parks-vit-small \
        --in-scope DIR [DIR ...] --out-of-scope street=../shared/data/intel-scenes/test/street [NAME=DIR ...]

Prints, per out-of-scope set: the share abstained and the AUROC of the in-scope score (in-scope vs that set),
plus the in-scope keep-rate at the checkpoint's threshold (or at ``--threshold``), and the closest-class
accuracy on in-scope folders named after a class. Goes through Classifier, i.e. the app's path.

Several leave-out models, each scored on its own held-out photos, pool into one estimate: save each run's
per-photo scores with ``--scores-out FILE`` and name those files in the last run's ``--pooled FILE ...``. It
then also reports the AUROC of every out-of-scope set with the same name, over all the runs' photos together.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def files(d: str) -> list[str]:
    return sorted(str(p) for p in Path(d).rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".heic"})


def scores(clf, paths):
    out = []
    for i in range(0, len(paths), 32):
        out += clf.predict_batch(paths[i:i + 32])
    return out


def auroc(in_scores, out_scores) -> float:
    """AUROC of the in-scope score: in-scope photos as positives, out-of-scope ones as negatives."""
    from sklearn.metrics import roc_auc_score

    return round(roc_auc_score([1] * len(in_scores) + [0] * len(out_scores), list(in_scores) + list(out_scores)), 4)


def main(argv=None):
    from parkclf.classifier import Classifier

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--in-scope", nargs="+", required=True)
    p.add_argument("--out-of-scope", nargs="+", required=True,
                   help="NAME=DIR pairs; NAME=DIR1,DIR2 pools several folders into one set")
    p.add_argument("--threshold", type=float, help="abstain below this score instead of the checkpoint's threshold")
    p.add_argument("--scores-out", help="also write every photo's in-scope score to this JSON file, for --pooled")
    p.add_argument("--pooled", nargs="+", default=[], metavar="FILE",
                   help="--scores-out files of other runs: add their photos to this run's, per set name, and report "
                        "the pooled AUROC and keep-rate")
    a = p.parse_args(argv)
    clf = Classifier.from_pretrained(a.model)
    if a.threshold is not None:
        clf.threshold = a.threshold
    in_files = [(f, Path(d).name) for d in a.in_scope for f in files(d)]
    ins = scores(clf, [f for f, _ in in_files])
    result = {"model": a.model, "threshold": clf.threshold, "n_in_scope": len(ins),
              "in_scope_keep_rate": round(sum(not p.abstained for p in ins) / len(ins), 4), "out_of_scope": {}}
    # A folder named after one of the model's classes holds photos of that class: report the closest-class accuracy.
    truth = [(p.label, name) for p, (_, name) in zip(ins, in_files) if name in clf.labels]
    if truth:
        result["in_scope_accuracy"] = round(sum(a == b for a, b in truth) / len(truth), 4)
        result["n_in_scope_labelled"] = len(truth)
    saved = {"threshold": clf.threshold, "in_scope": [p.score for p in ins], "out_of_scope": {}}
    for pair in a.out_of_scope:
        name, dirs = pair.split("=", 1)
        outs = scores(clf, [f for d in dirs.split(",") for f in files(d)])
        saved["out_of_scope"][name] = [p.score for p in outs]
        result["out_of_scope"][name] = {"n": len(outs), "abstained": round(sum(p.abstained for p in outs) / len(outs), 4),
                                        "auroc": auroc(saved["in_scope"], saved["out_of_scope"][name])}
    if a.scores_out:
        Path(a.scores_out).write_text(json.dumps(saved))
    if a.pooled:
        runs = [saved] + [json.loads(Path(f).read_text()) for f in a.pooled]
        ins_all = [s for r in runs for s in r["in_scope"]]
        # each run's photos are compared with that run's threshold (the models may differ)
        kept = sum(s >= r["threshold"] for r in runs for s in r["in_scope"])
        result["pooled"] = {"runs": len(runs), "n_in_scope": len(ins_all),
                            "in_scope_keep_rate": round(kept / len(ins_all), 4), "out_of_scope": {}}
        for name in saved["out_of_scope"]:
            outs_all = [s for r in runs for s in r["out_of_scope"].get(name, [])]
            result["pooled"]["out_of_scope"][name] = {"n": len(outs_all), "auroc": auroc(ins_all, outs_all)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
