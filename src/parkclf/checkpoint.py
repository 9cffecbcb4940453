"""A new checkpoint from a served one, with the classifier swapped: what ``parkclf teach`` writes.

The base checkpoint's files, with only the classifier changed, and no torch:
- ``model.safetensors``: the base tensors, the classifier's weight and bias replaced (``safetensors.numpy``, in the
  base's dtype);
- ``config.json``: the new ``id2label`` / ``label2id``, temperature and abstain threshold, and
  ``out_of_scope_label`` ("none of these") where the base's background bank was taught as a class;
- ``preprocessor_config.json`` and ``teach_background.npz``: the base's, as they are (so teaching from the
  taught model works the same);
- ``onnx/``: each graph with the new classifier (:mod:`parkclf.graphs`); ``activation_ranges.json`` as it is, since
  every range it holds is of a tensor before the classifier, which the swap leaves alone;
- ``README.md``: the model card (:func:`parkclf.publish.card.write_taught`), and ``taught.json``: the held-out
  figures, the photos per class and the base, as the card shows them.

The folder is written beside ``output_dir`` and moved into place at the end, so a failed run leaves no half model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .engine import EXPLAIN_FILES, MODEL_FILES, ONNX_DIR
from .errors import UsageError

WEIGHTS = "model.safetensors"
COPIED = ("preprocessor_config.json", f"{ONNX_DIR}/activation_ranges.json", "teach_background.npz")


def classifier_keys(tensors: dict[str, np.ndarray], n_labels: int) -> tuple[str, str]:
    """(weight, bias) names of the classifier among the checkpoint's tensors: the 2-D ``*classifier*.weight`` with a
    row per label, and its bias."""
    found = [k for k, v in tensors.items() if "classifier" in k and k.endswith(".weight") and v.ndim == 2
             and v.shape[0] == n_labels and k[:-len("weight")] + "bias" in tensors]
    if len(found) != 1:
        raise UsageError(f"Cannot tell the classifier among the base model's tensors ({len(found)} candidates); "
                         "teach from a transformers image classifier with one classifier layer (ViT, DeiT, DINOv2).")
    return found[0], found[0][:-len("weight")] + "bias"


def read_head(folder: Path, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight (labels, features), bias) of a checkpoint's classifier, read from its ``model.safetensors`` without
    loading the rest (a taught model's "Try it" runs this head on the served model's features)."""
    from safetensors import safe_open

    with safe_open(folder / WEIGHTS, framework="numpy") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
        stand_ins = {k: np.empty(shape if len(shape) != 2 else (shape[0], 0)) for k, shape in shapes.items()}
        w_key, b_key = classifier_keys(stand_ins, n_labels)
        return f.get_tensor(w_key).astype(np.float32), f.get_tensor(b_key).astype(np.float32)


def write_weights(base: Path, out: Path, weight: np.ndarray, bias: np.ndarray, n_base: int) -> None:
    from safetensors.numpy import load_file, save_file

    if not (base / WEIGHTS).exists():
        raise UsageError(f"{base} has no {WEIGHTS} (a Hub model is fetched for serving without it); download the "
                         f"whole checkpoint (`hf download REPO --local-dir DIR`) and teach from DIR.")
    tensors = load_file(base / WEIGHTS)
    w_key, b_key = classifier_keys(tensors, n_base)
    if tensors[w_key].shape[1] != weight.shape[1]:
        raise UsageError(f"The base model's classifier reads {tensors[w_key].shape[1]} features, but its graph gave "
                         f"{weight.shape[1]}; re-export the base model (`parkclf export`).")
    # C order: safetensors writes an array's buffer as it lies, so a transposed (Fortran-order) view would be saved
    # scrambled
    tensors[w_key] = np.ascontiguousarray(weight, dtype=tensors[w_key].dtype)
    tensors[b_key] = np.ascontiguousarray(bias, dtype=tensors[b_key].dtype)
    save_file(tensors, out / WEIGHTS, metadata={"format": "pt"})  # "pt": what transformers expects to load
    os.chmod(out / WEIGHTS, 0o644)  # save_file writes through a private temporary file (0600)


def write_config(base: Path, out: Path, labels: list[str], calib: dict) -> None:
    config = json.loads((base / "config.json").read_text())
    config.pop("out_of_scope_label", None)
    if calib.get("out_of_scope_label"):
        config["out_of_scope_label"] = calib["out_of_scope_label"]
    config.pop("num_labels", None)  # transformers reads the count from id2label
    config.update(id2label={str(i): n for i, n in enumerate(labels)}, label2id={n: i for i, n in enumerate(labels)},
                  calibration_temperature=calib["calibration_temperature"],
                  abstain_threshold=calib["abstain_threshold"],
                  title=f"Image classifier: {', '.join(real_labels(labels, calib))}")
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def real_labels(labels: list[str], config: dict) -> list[str]:
    """The classes a person taught: every label but the out-of-scope one ("none of these"), if any."""
    return [n for n in labels if n != config.get("out_of_scope_label")]


def write_graphs(base: Path, out: Path, weight: np.ndarray, bias: np.ndarray, base_name: str) -> dict:
    """Each graph of the base's onnx/ with the new classifier; returns what onnx/export.json says."""
    import onnx

    from . import graphs

    (out / ONNX_DIR).mkdir()
    files, notes = [], [f"The classifier was swapped by `parkclf teach` from `{base_name}`; every graph is the base "
                        "model's up to the classifier, and so are the activation ranges."]
    for name in [*MODEL_FILES.values(), *EXPLAIN_FILES.values()]:
        path = base / ONNX_DIR / name
        if not path.exists():
            continue
        model = onnx.load(str(path))
        if name in EXPLAIN_FILES.values():
            if not graphs.swap_explain(model.graph, weight, bias):
                notes.append(f"`{name}` was left out: its classifier could not be swapped.")
                continue
        else:
            graphs.swap(model.graph, weight, bias)
        onnx.save(model, str(out / ONNX_DIR / name))
        files.append(name)
    for name in COPIED:
        if (base / name).exists():
            shutil.copy2(base / name, out / name)
            files += [Path(name).name] if name.startswith(ONNX_DIR) else []
    report = {"files": sorted(files), "graphs": {}, "notes": notes, "taught_from": base_name}
    (out / ONNX_DIR / "export.json").write_text(json.dumps(report, indent=2))
    return report


def check_output_dir(out: Path) -> None:
    """``out`` may be new, empty, or an earlier model (replaced); files that are not a model are never deleted."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").exists())):
        raise UsageError(f"{out} already holds files that are not a model; give a new --output-dir.")


def write(base: Path, out: Path, *, labels: list[str], weight: np.ndarray, bias: np.ndarray, calib: dict,
          metrics: dict, counts: dict[str, int], base_name: str, base_model: str | None, n_base: int,
          repo_id: str | None = None) -> Path:
    """Write the checkpoint (see the module's docstring) to ``out``; returns ``out``. ``repo_id``: what the card's
    snippets load (default: ``out``)."""
    from .publish import card

    check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.teaching-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write_weights(base, tmp, weight, bias, n_base)
        write_config(base, tmp, labels, calib)
        exported = write_graphs(base, tmp, weight, bias, base_name)
        (tmp / "taught.json").write_text(json.dumps({"base_model": base_name, "counts": counts, **metrics}, indent=1))
        card.write_taught(tmp, labels=real_labels(labels, calib), metrics=metrics, counts=counts, base_name=base_name,
                          base_model=base_model, export=exported, repo_id=repo_id or str(out))
        check_output_dir(out)  # again: another run may have written there meanwhile
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except OSError as e:
        raise UsageError(f"Could not write the model to {out} ({e.strerror or e}); free some space or choose "
                         "another --output-dir.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def name_in_card(folder: Path, repo_id: str) -> None:
    """Write the taught checkpoint's card again with ``repo_id`` in its "Use it" snippets (before a push to it)."""
    from huggingface_hub import ModelCard

    from .publish import card

    config = json.loads((folder / "config.json").read_text())
    saved = json.loads((folder / "taught.json").read_text())
    counts, base_name = saved.pop("counts"), saved.pop("base_model")
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    card.write_taught(folder, labels=real_labels(labels, config),
                      metrics=saved, counts=counts, base_name=base_name,
                      base_model=ModelCard.load(folder / "README.md").data.base_model,
                      export=json.loads((folder / ONNX_DIR / "export.json").read_text()), repo_id=repo_id)
