"""Measuring a saved model on folders it never saw, through the app's own path (Classifier: sanitiser,
processor, engine, calibration, abstain). docs/results.md quotes these commands.

    parkclf evaluate --model out/scenes --data-dir ../shared/data/intel-scenes/test
    parkclf abstain-eval --model models/parks-vit-small \\
        --in-scope DIR [DIR ...] --out-of-scope street=../shared/data/intel-scenes/test/street [NAME=DIR ...]

``abstain-eval`` prints, per out-of-scope set, the share abstained and the AUROC of the in-scope score (in-scope vs
that set), the in-scope keep-rate at the checkpoint's threshold (or at ``--threshold``), and the closest-class
accuracy on in-scope folders named after a class. Several leave-out models, each scored on its own held-out photos,
pool into one estimate: save each run's per-photo scores with ``--scores-out FILE`` and name those files in the last
run's ``--pooled FILE ...``; it then also reports the AUROC over all the runs' photos of each set with one name.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from .errors import UsageError
from .images import ImageError, image_files

logger = logging.getLogger(__name__)


def _scores(clf, paths: list[str]) -> list:
    """The predictions of the readable photos among ``paths``; an unreadable one (scikit-image ships a TIFF that
    Pillow cannot open) is left out with a warning, not the whole measure."""
    out = []
    for i in range(0, len(paths), 32):
        try:
            out += clf.predict_batch(paths[i:i + 32])
        except ImageError:
            for path in paths[i:i + 32]:
                try:
                    out += clf.predict_batch([path])
                except ImageError as e:
                    logger.warning("left out %s: %s", path, e)
                    out.append(None)
    return [p for p in out if p is not None]


def auroc(in_scores, out_scores) -> float:
    """AUROC of the in-scope score: in-scope photos as positives, out-of-scope ones as negatives."""
    from sklearn.metrics import roc_auc_score

    return round(roc_auc_score([1] * len(in_scores) + [0] * len(out_scores), list(in_scores) + list(out_scores)), 4)


def labelled_files(data_dir: str) -> list[tuple[str, str]]:
    """(class folder name, file) for DIR/<class>/..., sorted."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"No folder at {data_dir}; expected {data_dir}/<class>/*.jpg.")
    return [(c.name, f) for c in sorted(root.iterdir()) if c.is_dir() for f in image_files(c)]


def evaluate_folder(model: str, data_dir: str, *, pipeline: bool = False) -> dict:
    """Accuracy on DIR/<class>/* (class names among the model's labels): the app's closest class, or with
    ``pipeline`` the top label of a plain transformers pipeline (needs torch)."""
    files = labelled_files(data_dir)
    t = time.perf_counter()
    if pipeline:
        from transformers import pipeline as hf_pipeline

        clf = hf_pipeline("image-classification", model=model)
        preds = [clf(f, top_k=1)[0]["label"] for _, f in files]
    else:
        from .classifier import Classifier

        preds = [p.label for p in _scores(Classifier.from_pretrained(model), [f for _, f in files])]
    acc = sum(p == y for p, (y, _) in zip(preds, files, strict=True)) / max(len(files), 1)
    return {"model": model, "data_dir": data_dir, "n": len(files), "accuracy": round(acc, 4),
            "path": "transformers.pipeline" if pipeline else "parkclf.Classifier",
            "seconds": round(time.perf_counter() - t, 1)}


def abstain_eval(model: str, in_scope: list[str], out_of_scope: dict[str, list[str]], *,
                 threshold: float | None = None) -> tuple[dict, dict]:
    """(result, per-photo scores) for in-scope folders against named sets of out-of-scope folders."""
    from .classifier import Classifier

    clf = Classifier.from_pretrained(model)
    if threshold is not None:
        clf.threshold = threshold
    in_files = [(f, Path(d).name) for d in in_scope for f in image_files(d)]
    ins = _scores(clf, [f for f, _ in in_files])
    if len(ins) < len(in_files):
        raise UsageError("Some --in-scope photos cannot be read (see the warnings above); remove them first.")
    if not ins:
        raise UsageError(f"No photos under --in-scope {in_scope}.")
    result = {"model": model, "threshold": clf.threshold, "n_in_scope": len(ins),
              "in_scope_keep_rate": round(sum(not p.abstained for p in ins) / len(ins), 4), "out_of_scope": {}}
    # A folder named after one of the model's classes holds photos of that class: report the closest-class accuracy.
    truth = [(p.label, name) for p, (_, name) in zip(ins, in_files, strict=True) if name in clf.labels]
    if truth:
        result["in_scope_accuracy"] = round(sum(a == b for a, b in truth) / len(truth), 4)
        result["n_in_scope_labelled"] = len(truth)
    saved = {"threshold": clf.threshold, "in_scope": [p.score for p in ins], "out_of_scope": {}}
    for name, dirs in out_of_scope.items():
        outs = _scores(clf, [f for d in dirs for f in image_files(d)])
        if not outs:
            raise UsageError(f"No photos under --out-of-scope {name}={','.join(dirs)}.")
        saved["out_of_scope"][name] = [p.score for p in outs]
        result["out_of_scope"][name] = {"n": len(outs),
                                        "abstained": round(sum(p.abstained for p in outs) / len(outs), 4),
                                        "auroc": auroc(saved["in_scope"], saved["out_of_scope"][name])}
    return result, saved


def pool(saved: dict, others: list[dict]) -> dict:
    """The AUROC and keep-rate over several runs' saved scores (each run compared with its own threshold)."""
    runs = [saved, *others]
    ins_all = [s for r in runs for s in r["in_scope"]]
    kept = sum(s >= r["threshold"] for r in runs for s in r["in_scope"])
    pooled = {"runs": len(runs), "n_in_scope": len(ins_all), "in_scope_keep_rate": round(kept / len(ins_all), 4),
              "out_of_scope": {}}
    for name in saved["out_of_scope"]:
        outs_all = [s for r in runs for s in r["out_of_scope"].get(name, [])]
        pooled["out_of_scope"][name] = {"n": len(outs_all), "auroc": auroc(ins_all, outs_all)}
    return pooled


def evaluate_main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="parkclf evaluate", description="Accuracy of a saved model on an imagefolder "
                                "it has never seen, through the app's own path.")
    p.add_argument("--model", required=True, help="a train.py output folder or a Hub model id")
    p.add_argument("--data-dir", required=True, help="DIR/<class>/*.jpg; classes must be among the model's labels")
    p.add_argument("--pipeline", action="store_true", help="use transformers.pipeline('image-classification')")
    a = p.parse_args(argv)
    result = evaluate_folder(a.model, a.data_dir, pipeline=a.pipeline)
    print(json.dumps(result))
    return result


def _named_sets(pairs: list[str]) -> dict[str, list[str]]:
    sets = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--out-of-scope {pair!r}: give NAME=DIR (or NAME=DIR1,DIR2), e.g. street=photos/street.")
        name, dirs = pair.split("=", 1)
        sets[name] = dirs.split(",")
    return sets


def abstain_main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="parkclf abstain-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    result, saved = abstain_eval(a.model, a.in_scope, _named_sets(a.out_of_scope), threshold=a.threshold)
    if a.scores_out:
        Path(a.scores_out).write_text(json.dumps(saved))
    if a.pooled:
        result["pooled"] = pool(saved, [json.loads(Path(f).read_text()) for f in a.pooled])
    print(json.dumps(result, indent=1))
    return result
