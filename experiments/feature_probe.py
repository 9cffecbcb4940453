"""How far can a linear head on the frozen backbone go? Grouped-by-source CV on the parks, test split on scenes.

    python experiments/feature_probe.py                     # about 5 minutes on 2 cores

Backs two statements in the README:
- ``--freeze-backbone`` (a linear head on [CLS], the only head a ViT checkpoint has) tops out below 0.88 on
  intel-scenes, and richer frozen features (CLS + mean patch, last layers) do not clearly pass it either;
- on the parks, with whole photographers held out, every frozen-feature head stays near 0.65-0.72.

Features come from the shared backbone through the project's own ``load_image`` (the decode every photo gets),
then a bicubic resize to the probe resolution and ImageNet normalisation, as the saved processor does.
Logistic regression (scikit-learn) on standardised features; parks: 5-fold StratifiedGroupKFold over
``SOURCES.tsv`` sources, 3 shuffles.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PARKS = ("sequoia", "yellowstone", "yosemite")
HEADS = {"cls": ("cls",), "cls+mean": ("cls", "mean"), "last4cls+mean": ("last4", "cls", "mean")}


def photos(root: Path, classes=None) -> list[tuple[Path, str]]:
    return [(p, d.name) for d in sorted(root.iterdir()) if d.is_dir() and (classes is None or d.name in classes)
            for p in sorted(d.iterdir()) if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}]


def features(model, files: list[Path], size: int) -> dict[str, np.ndarray]:
    import torch
    from torchvision.transforms.v2 import functional as F

    from parkclf.images import load_image

    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out: dict[str, list] = {"cls": [], "mean": [], "last4": []}
    for i in range(0, len(files), 32):
        x = torch.stack([(F.resize(F.to_image(load_image(f, draft_size=3 * size // 2)), [size, size],
                                   antialias=True).float() / 255 - mean) / std for f in files[i:i + 32]])
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            o = model(pixel_values=x, interpolate_pos_encoding=True, output_hidden_states=True)
            last = o.last_hidden_state.float()
            out["cls"].append(last[:, 0])
            out["mean"].append(last[:, 1:].mean(1))
            out["last4"].append(torch.cat([model.layernorm(h)[:, 0].float() for h in o.hidden_states[-4:-1]], -1))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def stack(f: dict, head: str) -> np.ndarray:
    return np.concatenate([f[k] for k in HEADS[head]], 1)


def logreg(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))


def grouped_cv(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, seeds: int = 3) -> float:
    from sklearn.model_selection import StratifiedGroupKFold

    right = []
    for seed in range(seeds):
        for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(x, y, groups):
            right += list(logreg(c).fit(x[tr], y[tr]).predict(x[te]) == y[te])
    return float(np.mean(right))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default=str(SHARED / "models" / "vit-small-dinov2"))
    ap.add_argument("--parks", default=str(SHARED / "data" / "parks"))
    ap.add_argument("--scenes", default=str(SHARED / "data" / "intel-scenes"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 336], help="probe resolutions for the parks")
    a = ap.parse_args(argv)

    import torch
    from transformers import ViTModel

    torch.manual_seed(0)
    model = ViTModel.from_pretrained(a.backbone, add_pooling_layer=False).eval()
    result = {"scenes_test_accuracy": {}, "parks_grouped_cv_accuracy": {}}

    train, test = photos(Path(a.scenes) / "train"), photos(Path(a.scenes) / "test")
    ftr, fte = features(model, [p for p, _ in train], 224), features(model, [p for p, _ in test], 224)
    ytr, yte = np.array([c for _, c in train]), np.array([c for _, c in test])
    for head in HEADS:
        for c in (0.01, 0.1, 1.0):
            acc = float((logreg(c).fit(stack(ftr, head), ytr).predict(stack(fte, head)) == yte).mean())
            result["scenes_test_accuracy"][f"{head} C={c}"] = round(acc, 3)
            print(f"scenes test, {head}, C={c}: {acc:.3f}", flush=True)

    with open(Path(a.parks) / "SOURCES.tsv", newline="") as f:
        source = {r["file"]: r["repo"] for r in csv.DictReader(f, delimiter="\t")}
    parks = photos(Path(a.parks), PARKS)
    y = np.array([c for _, c in parks])
    groups = np.array([source[f"{p.parent.name}/{p.name}"] for p, _ in parks])
    for size in a.sizes:
        f = features(model, [p for p, _ in parks], size)
        for head in HEADS:
            for c in (0.01, 0.1):
                acc = grouped_cv(stack(f, head), y, groups, c)
                result["parks_grouped_cv_accuracy"][f"{size}px {head} C={c}"] = round(acc, 3)
                print(f"parks grouped CV, {size}px, {head}, C={c}: {acc:.3f}", flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "feature_probe.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
