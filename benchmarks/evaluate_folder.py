"""Accuracy of a saved model on an imagefolder it has never seen.

    python benchmarks/evaluate_folder.py --model out/scenes --data-dir ../shared/data/intel-scenes/test
    python benchmarks/evaluate_folder.py --model out/scenes --data-dir ... --pipeline   # plain transformers.pipeline

By default it goes through the app's own path (Classifier: sanitiser, processor, calibration, abstain).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data-dir", required=True, help="DIR/<class>/*.jpg; classes must be among the model's labels")
    p.add_argument("--pipeline", action="store_true", help="use transformers.pipeline('image-classification')")
    a = p.parse_args(argv)
    files = sorted((c.name, f) for c in Path(a.data_dir).iterdir() if c.is_dir() for f in sorted(c.iterdir()) if f.is_file())
    t = time.perf_counter()
    if a.pipeline:
        from transformers import pipeline

        clf = pipeline("image-classification", model=a.model)
        preds = [clf(str(f), top_k=1)[0]["label"] for _, f in files]
    else:
        from parkclf.classifier import Classifier

        clf = Classifier.from_pretrained(a.model)
        preds = [p.label for i in range(0, len(files), 32) for p in clf.predict_batch([str(f) for _, f in files[i:i + 32]])]
    acc = sum(p == y for p, (y, _) in zip(preds, files)) / len(files)
    result = {"model": a.model, "data_dir": a.data_dir, "n": len(files), "accuracy": round(acc, 4),
              "path": "transformers.pipeline" if a.pipeline else "parkclf.Classifier", "seconds": round(time.perf_counter() - t, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
