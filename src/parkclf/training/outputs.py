"""What a run leaves behind: the save_pretrained folder, metrics, the ONNX export, the model card, the Hub upload."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..errors import UsageError
from .config import DataArguments, TrainArguments

logger = logging.getLogger("parkclf.train")


def check_output_dir(output_dir: str, labels: list[str], replace: bool) -> None:
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test.{os.getpid()}"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as e:
        raise UsageError(f"Cannot write to --output-dir {out} ({e.strerror or e}); "
                         "choose a writable folder with free space.") from None
    cfg = out / "config.json"
    if cfg.exists() and not replace:
        old = json.loads(cfg.read_text()).get("id2label", {})
        old_labels = [old[k] for k in sorted(old, key=int)]
        if old_labels and old_labels != labels:
            raise UsageError(f"{out} already holds a model for labels {old_labels}, but this data has {labels}. "
                             "Use another --output-dir, or pass --replace-model to replace it.")


def store_fp16(folder: Path) -> None:
    """Rewrite model.safetensors with fp16 tensors; from_pretrained upcasts to the config's float32."""
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "model.safetensors"
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def save(out: Path, model, processor, metrics: dict, report: dict, data_args: DataArguments, args: TrainArguments,
         photos: list[str], truth: list[str]) -> dict | None:
    """Write the folder; returns the ONNX export's validation report (None with --no-export-onnx). ``photos`` and
    their classes ``truth`` are what the export's graphs are checked on."""
    from ..publish import card

    try:
        model.save_pretrained(out)
        processor.save_pretrained(out)
        if args.save_fp16:
            store_fp16(out)
        exported = None
        if args.export_onnx:
            from ..export import export

            exported = export(out, photos=photos, labels=truth, model=model)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        card.write(out, metrics=metrics, report=report, base_model=metrics["base_model"], title=model.config.title,
                   dataset=data_args.dataset, license=args.license, hub_model_id=args.hub_model_id,
                   provenance=card.keep_notes(out, args.card_notes), export=exported)
    except OSError as e:  # disk full or folder removed mid-run: say so; the checkpoints stay for a rerun
        raise UsageError(f"Could not write the model to {out} ({e.strerror or e}); free some space or choose "
                         "another --output-dir, then rerun the same command (it resumes).") from None
    if args.push_to_hub:
        from ..publish import hub

        hub.push_model(out, args.hub_model_id, private=args.hub_private)
    return exported


def summary(out: Path, metrics: dict, exported: dict | None, args: TrainArguments) -> str:
    """The last lines of the log: where the model went and what it scored."""
    t, a = metrics["test"], metrics["abstain"]
    lines = [f"Model saved to {out} (load it with transformers.pipeline or serve it: MODEL_ID={out} python app.py)",
             f"  test split, {sum(t['support'])} photos: accuracy {t['accuracy']:.3f}, macro-F1 {t['macro_f1']:.3f}"]
    if a.get("in_scope_keep_rate") is not None:
        lines.append(f"  in-scope photos answered {a['in_scope_keep_rate']:.3f} at abstain threshold "
                     f"{metrics['calibration']['abstain_threshold']:.3f}"
                     + (f"; out-of-scope AUROC {a['auroc']:.3f}" if a.get("auroc") is not None else ""))
    if exported:
        served = "model_quantized.onnx" if "model_quantized.onnx" in exported["graphs"] else "model.onnx"
        row = exported["graphs"][served]
        lines.append(f"  onnx/: {', '.join(exported['files'])}; {served} (what the app serves) agrees with torch on "
                     f"{row['top1_agreement']:.1%} of {exported['n_photos']} held-out photos"
                     + (f", accuracy {row['accuracy']:.3f} against fp32's {row['fp32_accuracy']:.3f}"
                        if "accuracy" in row else ""))
    if args.push_to_hub:
        lines.append(f"  pushed to https://huggingface.co/{args.hub_model_id}")
    return "\n".join(lines)
