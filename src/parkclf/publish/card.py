"""The model card: Hub metadata (model-index) plus per-class metrics, confusion matrix, provenance and limits."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..errors import UsageError

CONFUSION_PNG = "confusion_matrix.png"

RESULT_TABLES = """| class | precision | recall | F1 | support |
|---|---|---|---|---|
{%- for row in per_class %}
| {{ row.name }} | {{ "%.3f" | format(row.p) }} | {{ "%.3f" | format(row.r) }} | {{ "%.3f" | format(row.f) }} | {{ row.n }} |
{%- endfor %}

![Confusion matrix]({{ confusion_png }})

Confusion matrix (rows: true class, columns: predicted):

| | {{ labels | join(" | ") }} |
|---|{% for _ in labels %}---|{% endfor %}
{%- for row in confusion %}
| **{{ labels[loop.index0] }}** | {{ row | join(" | ") }} |
{%- endfor %}

"""

USE_IT = """## Use it

```python
from transformers import pipeline
clf = pipeline("image-classification", model="{{ repo_id }}")
print(clf("photo.jpg"))
```
{%- if export %}

In a browser, with transformers.js (the int8 graph, `dtype: "q8"`):

```js
import { pipeline } from "@huggingface/transformers";
const clf = await pipeline("image-classification", "{{ repo_id }}", { dtype: "q8" });
console.log(await clf("photo.jpg"));
```
{%- endif %}

A plain pipeline ranks the classes{% if calibration.out_of_scope_label %}, `{{ calibration.out_of_scope_label }}`
included,{% endif %} with the raw softmax; the calibrated answer and the abstain rule above are what this project's
app and `parkclf predict` give.

From a running Space or `python app.py`:

```python
from gradio_client import Client, handle_file
client = Client("{{ space_or_url }}")
print(client.predict(handle_file("photo.jpg"), api_name="/predict"))
```
"""

TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

Image classifier for **{{ labels | join(", ") }}**, fine-tuned from `{{ base_model }}` with this project's
`train.py`. Upload a photo and it answers one of these classes, or says the photo is none of them.
{%- if soup_seeds | length > 1 %}
Its weights are the mean of the weights of {{ soup_seeds | length }} models fine-tuned with
seeds {{ soup_seeds | join(", ") }}, each on its own validation split, all with the same test split (a uniform model
soup, `--soup {{ soup_seeds | length }}`), so it costs one model to run. Its calibration was fitted on each member's
own validation photos.
{%- endif %}
{%- if unseen %}

## Results on photographers it never saw

{{ unseen.photos }} in-scope photos from {{ unseen.sources }} sources and {{ unseen.out_of_scope_photos }} out-of-scope
photos, each scored by a model that never saw its photographer ({{ unseen.what }}). These are the figures to expect
on a new visitor's photo.

| metric | value [95% interval] |
|---|---|
| accuracy on in-scope photos (closest real class) | {{ "%.3f" | format(unseen.accuracy) }} [{{ unseen.accuracy_ci | join(", ") }}] |
| out-of-scope AUROC (in-scope score) | {{ "%.3f" | format(unseen.auroc) }} [{{ unseen.auroc_ci | join(", ") }}] |
| in-scope photos answered (not abstained) | {{ "%.3f" | format(unseen.answered) }} [{{ unseen.answered_ci | join(", ") }}] |
{%- for name, rate in (unseen.everyday_abstained or {}).items() %}
| {{ name }} photos abstained | {{ "%.3f" | format(rate) }} |
{%- endfor %}
{%- endif %}

## Results ({% if unseen %}random {% endif %}held-out test split, {{ n_test }} photos)
{%- if unseen %}

Photographers of these photos also took some of the training photos, so these figures are higher than above.
{%- endif %}

| metric | value |
|---|---|
| accuracy (all classes) | {{ "%.3f" | format(accuracy) }} |
{%- if abstain.in_scope_accuracy is not none and calibration.out_of_scope_label %}
| accuracy on in-scope photos (closest real class) | {{ "%.3f" | format(abstain.in_scope_accuracy) }} ({{ abstain.n_in_scope }} photos) |
{%- endif %}
| macro-F1 | {{ "%.3f" | format(macro_f1) }} |
{%- if abstain.in_scope_keep_rate is not none %}
| in-scope photos answered (not abstained) | {{ "%.3f" | format(abstain.in_scope_keep_rate) }} |
{%- endif %}
{%- if abstain.auroc is defined %}
| out-of-scope AUROC (in-scope score) | {{ "%.3f" | format(abstain.auroc) }} |
| out-of-scope photos abstained | {{ "%.3f" | format(abstain.out_of_scope_abstain_rate) }} |
{%- endif %}

""" + RESULT_TABLES + """{{ extra }}
{%- if export %}

## ONNX export

`onnx/` holds {{ export.files | join(", ") }} (the transformers.js layout), so the app serves this model with no
torch, and a browser runs it with transformers.js.
{%- if "activation_ranges.json" in export.files %} The app runs `model_quantized.onnx` on OpenVINO with the fixed
activation scales of `activation_ranges.json` (observed on {{ export.graphs.values() | map(attribute="calibration_photos") | select | first }} calibration photos), else on ONNX Runtime.
{%- endif %} Each graph was checked against the torch fp32 model on {{ export.n_photos }} photos; where they had
labels, its accuracy is that of the answer a visitor reads (the right class, or "none of these" for a photo of none):

| graph | accuracy (fp32) | top-1 agreement | flips: close calls / confident | abstain agreement | relevance correlation: median / lowest | largest logit difference |
|---|---|---|---|---|---|---|
{%- for name, row in export.graphs.items() %}
| `{{ name }}`{% if row.weights %} ({{ row.weights }} weights){% endif %} | {% if row.accuracy is defined %}{{ "%.4f" | format(row.accuracy) }} ({{ "%.4f" | format(row.fp32_accuracy) }}){% else %}–{% endif %} | {{ "%.4f" | format(row.top1_agreement) }} | {{ row.close_call_flips | default("–") }} / {{ row.confident_flips | default("–") }} | {{ "%.4f" | format(row.abstain_agreement) }} | {% if row.relevance_median is defined %}{{ "%.3f" | format(row.relevance_median) }} / {{ "%.3f" | format(row.relevance_lowest) }}{% else %}–{% endif %} | {{ "%.4f" | format(row.max_logit_diff) }} |
{%- endfor %}
{%- set flips = export.graphs.values() | map(attribute="flips") | select | list %}
{%- if flips %}

An int8 graph is kept where it loses a visitor (almost) nothing: accuracy within 0.5 points of fp32's on labelled
photos, no top-1 flip unless fp32's two best classes were within 0.10 in probability (a close call, where rounding
decides), abstain agreement at least 0.99. The flips, with fp32's margin between its two best classes:
{% for name, row in export.graphs.items() if row.flips %}
- `{{ name }}`: {% for f in row.flips %}{{ f.photo }} ({{ f.fp32 }} -> {{ f.int8 }}, {{ "%.3f" | format(f.fp32_margin) }}){{ ", " if not loop.last }}{% endfor %}
{%- endfor %}
{%- endif %}
{% for note in export.notes %}
- {{ note }}
{%- endfor %}
{%- endif %}

## Calibration and abstaining

Softmax temperature {{ "%.3f" | format(calibration.calibration_temperature) }} (fitted on the validation
split{% if soup_seeds | length > 1 %}s of its members, each scored by its own member, which never trained on
it{% endif %}). The app answers "not one of my classes" when the calibrated probability of the best class is below
{{ "%.3f" | format(calibration.abstain_threshold) }}{% if calibration.out_of_scope_label %}; the model also has an
out-of-scope class `{{ calibration.out_of_scope_label }}` trained on negative photos{% endif %}. Both live in
`config.json`.

## Training data

- Source: `{{ source }}`; classes from folder names.
- Counts per split: {{ counts }}.
{%- if hard_negatives %}
- Of the `{{ calibration.out_of_scope_label }}` training photos,
  {{ hard_negatives.photos_in_train }} are hard negatives (`--hard-negatives-dir`), each seen
  {{ hard_negatives.repeat }} times per epoch.
{%- endif %}
{%- if extra_photos %}
- Added to train alone (`--extra-dataset`, e.g. the app's corrections): {{ extra_photos.photos }}
  photo{{ "s" if extra_photos.photos != 1 }} from `{{ extra_photos.source }}`; validation and test were drawn without
  them.
{%- endif %}
- Unreadable files skipped: {{ n_unreadable }}; near-duplicates dropped from train because they matched a
  validation/test photo: {{ n_dupes }} (see `data_report.json`).
{{ provenance }}

## Intended use and limits

- For recognising the classes above in ordinary photos, as a demo and teaching tool.
- Metrics come from a small held-out split; photos from other photographers, seasons or cameras can score lower.
- Not for safety-relevant decisions.

""" + USE_IT

TAUGHT_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

Image classifier for **{{ labels | join(", ") }}**, taught with this project's `parkclf teach` from
{{ n_photos }} photos: a new classifier (multinomial logistic regression, L2 strength C = {{ C }} picked by
cross-validation) on the class-token features of `{{ base_name }}`, whose backbone it keeps unchanged.

## Results ({{ method }} cross-validation, {{ n_photos }} photos)

Each photo was scored by a model fitted without it.

| metric | value |
|---|---|
| accuracy | {{ "%.3f" | format(accuracy) }} |
| macro-F1 | {{ "%.3f" | format(macro_f1) }} |
| photos answered (not abstained) | {{ "%.3f" | format(keep_rate) }} |

""" + RESULT_TABLES + """
## Calibration and abstaining

Softmax temperature {{ "%.3f" | format(calibration.calibration_temperature) }}, fitted on the cross-validated
scores. The app answers "not one of my classes" when the calibrated probability of the best class is below
{{ "%.3f" | format(calibration.abstain_threshold) }}. Both live in `config.json`.
{%- if calibration.background %}

"{{ calibration.out_of_scope_label }}" is a class of its own: the classifier was fitted against
{{ calibration.background.rows }} rows of features of other photos, shipped with the base model
({{ calibration.background.about }}). Photos of none of the classes above get that answer, or a best class below the
threshold; the threshold answers {{ "%.0f" | format(100 * keep_rate) }}% of the held-out photos of the classes above,
and the held-out models abstained on {{ "%.0f" | format(100 * calibration.background.abstained) }}% of those other
rows.
{%- endif %}

## Training data

Photos per class: {% for name, n in counts.items() %}{{ name }} {{ n }}{{ ", " if not loop.last }}{% endfor %}.
{%- for note in export.notes %}

{{ note }}
{%- endfor %}

## Intended use and limits

- Taught from a few photos by one sender: photos from other places, seasons or cameras can score lower than the
  figures above.
- Not for safety-relevant decisions.

""" + USE_IT


def save_confusion_png(path: Path, matrix: list[list[int]], labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(labels), 1.0 + 0.8 * len(labels)), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(r) for r in matrix) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, v, ha="center", va="center", color="white" if v > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(out: Path, *, metrics: dict, report: dict, base_model: str, dataset: str | None, license: str,
          hub_model_id: str | None, provenance: str = "", extra: str = "", title: str | None = None,
          export: dict | None = None) -> ModelCard:
    labels = metrics["labels"]
    test = metrics["test"]
    save_confusion_png(out / CONFUSION_PNG, test["confusion_matrix"], labels)
    name = title or hub_model_id or out.name
    data_name = dataset or Path(str(metrics.get("source") or "imagefolder")).name
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="image-classification",
        base_model=base_model, datasets=[data_name], tags=["image-classification", "vision", "parkclf"],
        model_name=name,
        eval_results=[EvalResult(task_type="image-classification", dataset_type=dataset or "imagefolder",
                                 dataset_name=data_name, dataset_split="test",
                                 metric_type="accuracy", metric_value=round(test["accuracy"], 4)),
                      EvalResult(task_type="image-classification", dataset_type=dataset or "imagefolder",
                                 dataset_name=data_name, dataset_split="test",
                                 metric_type="f1", metric_name="macro-F1", metric_value=round(test["macro_f1"], 4))])
    per_class = [{"name": n, "p": test["precision"][i], "r": test["recall"][i], "f": test["f1"][i],
                  "n": test["support"][i]} for i, n in enumerate(labels)]
    card = ModelCard.from_template(
        card_data, template_str=TEMPLATE, title=name, labels=labels, base_model=base_model,
        n_test=sum(test["support"]), accuracy=test["accuracy"], macro_f1=test["macro_f1"], per_class=per_class,
        confusion=test["confusion_matrix"], confusion_png=CONFUSION_PNG, calibration=metrics["calibration"],
        abstain=metrics["abstain"], source=dataset or metrics.get("source"), counts=report.get("counts"),
        n_unreadable=len(report.get("unreadable", [])), n_dupes=len(report.get("duplicates_dropped", [])),
        hard_negatives=report.get("hard_negatives"), extra_photos=report.get("extra"),
        provenance=provenance, extra=extra, export=export, soup_seeds=metrics.get("soup_seeds", []),
        unseen=metrics.get("unseen_sources"), repo_id=hub_model_id or str(out),
        space_or_url="user/space-name or http://127.0.0.1:7860")
    card.save(out / "README.md")
    return card


def write_taught(out: Path, *, labels: list[str], metrics: dict, counts: dict[str, int], base_name: str,
                 base_model: str | None, export: dict, repo_id: str, license: str = "apache-2.0") -> ModelCard:
    """The card of a model ``parkclf teach`` wrote: held-out figures from its cross-validation, photos per class, the
    base model. ``base_model``: the Hub id named in the metadata (None where the base is a local folder of unknown
    origin)."""
    save_confusion_png(out / CONFUSION_PNG, metrics["confusion"], labels)
    title = f"Image classifier: {', '.join(labels)}"
    results = [EvalResult(task_type="image-classification", dataset_type="imagefolder", dataset_name="taught photos",
                          dataset_split=f"{metrics['method']} cross-validation", metric_type=kind,
                          metric_name=name, metric_value=round(metrics[key], 4))
               for kind, name, key in (("accuracy", "accuracy", "accuracy"), ("f1", "macro-F1", "macro_f1"))]
    card_data = ModelCardData(license=license, library_name="transformers", pipeline_tag="image-classification",
                              base_model=base_model, tags=["image-classification", "vision", "parkclf", "parkclf-teach"],
                              model_name=title, eval_results=results)
    per_class = [{"name": n, "p": m["precision"], "r": m["recall"], "f": m["f1"], "n": m["support"]}
                 for n, m in metrics["per_class"].items()]
    card = ModelCard.from_template(
        card_data, template_str=TAUGHT_TEMPLATE, title=title, labels=labels, base_name=base_name,
        n_photos=metrics["n_photos"], C=metrics["C"], method=metrics["method"], accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"], keep_rate=metrics["keep_rate"], per_class=per_class,
        confusion=metrics["confusion"], confusion_png=CONFUSION_PNG, calibration=metrics, counts=counts,
        export=export, repo_id=repo_id, space_or_url="user/space-name or http://127.0.0.1:7860")
    card.save(out / "README.md")
    return card


UNSEEN_KEYS = ("what", "photos", "sources", "accuracy", "accuracy_ci", "auroc", "auroc_ci", "answered", "answered_ci")


def rerender(folder: str | Path, *, notes: str | None = None, base_model: str | None = None,
             license: str | None = None, hub_model_id: str | None = None,
             unseen_sources: str | None = None) -> ModelCard | None:
    """Re-render the card of a folder train.py wrote, from its metrics.json, data_report.json and onnx/export.json.
    Base model, licence and repo id default to what the card already says, so a re-render keeps them.
    ``unseen_sources``: a JSON file of figures on photographers the recipe never saw (``UNSEEN_KEYS``, as
    ``experiments/grouped_folds.py card`` writes them), kept in metrics.json; the card and the app's About box lead
    with them. Returns None for a folder train.py did not write (no metrics.json or data_report.json)."""
    import json

    folder = Path(folder)
    if not ((folder / "metrics.json").exists() and (folder / "data_report.json").exists()):
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    if unseen_sources:
        figures = json.loads(Path(unseen_sources).read_text())
        missing = [k for k in UNSEEN_KEYS if k not in figures]
        if missing:
            raise UsageError(f"{unseen_sources} lacks {', '.join(missing)}; it needs {', '.join(UNSEEN_KEYS)}.")
        metrics["unseen_sources"] = figures
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    old = ModelCard.load(folder / "README.md").data if (folder / "README.md").exists() else ModelCardData()
    exported = folder / "onnx" / "export.json"
    return write(folder, metrics=metrics, report=json.loads((folder / "data_report.json").read_text()),
                 base_model=base_model or old.base_model or metrics["base_model"], dataset=None,
                 license=license or old.license or "apache-2.0", hub_model_id=hub_model_id,
                 provenance=keep_notes(folder, notes), title=json.loads((folder / "config.json").read_text()).get("title"),
                 export=json.loads(exported.read_text()) if exported.exists() else None)


def main(argv: list[str] | None = None) -> None:
    """Re-render a trained folder's card from its metrics.json, data_report.json and onnx/export.json (e.g. after
    editing notes).

        parkclf card models/parks-vit-small --card-notes models/parks-vit-small/card_notes.md
    """
    import argparse

    p = argparse.ArgumentParser(prog="parkclf card", description=main.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--card-notes", help="markdown added to the training-data section (kept as FOLDER/card_notes.md; "
                                        "without it, that file is used)")
    p.add_argument("--base-model", help="Hub id of the base model (default: the card's, else metrics.json's)")
    p.add_argument("--license", help="the card's licence (default: the card's, else apache-2.0)")
    p.add_argument("--hub-model-id")
    p.add_argument("--unseen-sources", help="a JSON file of leave-sources-out figures (experiments/grouped_folds.py "
                                            "card): the card and the app's About box lead with them")
    a = p.parse_args(argv)
    if rerender(a.folder, notes=a.card_notes, base_model=a.base_model, license=a.license,
                hub_model_id=a.hub_model_id, unseen_sources=a.unseen_sources) is None:
        raise UsageError(f"{a.folder} has no metrics.json and data_report.json: only a train.py output folder has a "
                         "card to re-render.")


NOTES = "card_notes.md"


def keep_notes(folder: Path, notes: str | None) -> str:
    """The card's own notes (provenance, licences): copied into the folder as card_notes.md, so that every later
    re-render (``parkclf card``, ``parkclf export``) and the Hub repo keep them. Returns their text."""
    kept = Path(folder) / NOTES
    if notes and Path(notes).resolve() != kept.resolve():
        kept.write_text(Path(notes).read_text())
    return kept.read_text() if kept.exists() else ""
