"""The Gradio app: ``build_demo(classifier)`` -> gr.Blocks with the page and the named API endpoints.

The UI never touches tensors; everything goes through :class:`parkclf.classifier.Classifier`.
API: ``/predict`` (one image), ``/predict_batch`` (a list), ``/explain`` (overlay + prediction).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..classifier import Classifier, Prediction
from ..images import ImageError

logger = logging.getLogger(__name__)


@dataclass
class Example:
    path: str
    credit: str


@dataclass
class AppOptions:
    title: str | None = None  # default: from the checkpoint config, else built from its labels
    examples: list[Example] = field(default_factory=list)
    about: str = ""  # markdown: metrics etc., read from the checkpoint by the caller
    feedback_dir: str | None = None  # where "wrong? tell us" saves corrections; None hides the control
    max_batch: int = 16


NONE_OF_THESE = "None of these"


def pretty(label: str) -> str:
    """Folder names as people write them on the page ("grand_canyon" -> "Grand Canyon"); the API keeps the raw label."""
    return label.replace("_", " ").replace("-", " ").title()


def percent(p: float) -> str:
    return f"{p:.0%}" if p >= 0.005 else "under 1%"


UNSURE_BELOW = 0.5  # answered below this: the verdict calls itself a guess


def verdict(pred: Prediction, labels: list[str]) -> str:
    names = [pretty(n) for n in labels]
    if pred.abstained:
        listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        return (f"**This doesn't look like {listed}.** The closest guess is {pretty(pred.label)} "
                f"({percent(pred.confidences[pred.label])}), but it is unsure.")
    p = pred.confidences[pred.label]
    if p < UNSURE_BELOW:  # answered, but the photo is nearly as likely to be something else: say so
        return f"**{pretty(pred.label)}**, probably ({percent(p)}: a low-confidence guess)"
    return f"**{pretty(pred.label)}** ({percent(p)} confident)"


def label_value(pred: Prediction, has_out_of_scope: bool) -> dict[str, float]:
    """What the Label widget shows. Its headline is its largest entry, so it must agree with the verdict: the rest
    of the probability shows as "None of these" only when the app abstains; an answer's headline is its park."""
    shown = {pretty(k): v for k, v in pred.confidences.items()}
    if has_out_of_scope and pred.abstained:
        shown[NONE_OF_THESE] = max(0.0, 1.0 - sum(pred.confidences.values()))
    return shown


def _refuse(e: Exception) -> gr.Error:
    # gr.Error's message reaches the user (page and gradio_client); nothing else about the failure does.
    return gr.Error(str(e) if isinstance(e, ImageError) else "The image could not be processed.", print_exception=False)


def _guarded(endpoint: str, call):
    """Run an endpoint; any failure reaches the user as one human sentence, never a traceback."""
    try:
        return call()
    except gr.Error:
        raise
    except Exception as e:
        logger.warning("%s refused an input: %s", endpoint, e)
        raise _refuse(e) from None


def _path(file) -> str:
    if file is None:
        raise gr.Error("No image received; please upload a photo.", print_exception=False)
    return file if isinstance(file, str) else getattr(file, "path", None) or file["path"]


def save_feedback(feedback_dir: str, image_path: str, label: str, predicted: str | None) -> Path:
    """Save the upload under <dir>/<label>/ (an imagefolder train.py --extra-data-dir reads) and log it."""
    root = Path(feedback_dir)
    dest = root / label / f"{uuid.uuid4().hex}{Path(image_path).suffix.lower() or '.jpg'}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image_path, dest)
    log = root / "feedback.csv"
    new = not log.exists()
    with log.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["time", "file", "label", "predicted"])
        w.writerow([time.strftime("%Y-%m-%dT%H:%M:%S"), str(dest.relative_to(root)), label, predicted or ""])
    return dest


def build_demo(classifier: Classifier, options: AppOptions | None = None) -> gr.Blocks:
    opts = options or AppOptions()
    labels = classifier.labels
    title = opts.title or classifier.title or f"Image classifier: {', '.join(labels)}"

    def predict(file) -> dict:
        return _guarded("predict", lambda: classifier.predict(_path(file)).to_dict())

    def predict_batch(files) -> list[dict]:
        files = files or []
        if len(files) > opts.max_batch:
            raise gr.Error(f"At most {opts.max_batch} images per call; got {len(files)}.", print_exception=False)
        return _guarded("predict_batch",
                        lambda: [p.to_dict() for p in classifier.predict_batch([_path(f) for f in files])])

    def explain(file):
        image, pred, _ = _guarded("explain", lambda: classifier.explain(_path(file)))
        return image, pred.to_dict()

    def classify(path, show_map):
        if path is None:
            return None, "", gr.update(value=None, visible=bool(show_map)), None
        if show_map:
            image, pred = explain(path)
        else:
            image, pred = None, predict(path)
        p = Prediction(score=0.0, **pred)
        return (label_value(p, bool(classifier.out_of_scope_label)), verdict(p, labels),
                gr.update(value=image, visible=bool(show_map)), p.label)

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nUpload a photo (or use the webcam / paste one) and the model says which of "
                    f"**{', '.join(pretty(n) for n in labels)}** it shows, or that it is none of them.")
        last_label = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"], label="Photo")
                show_map = gr.Checkbox(label="Show which pixels decided (explanation overlay)", value=False)
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                verdict_md = gr.Markdown(elem_id="verdict")
                label = gr.Label(num_top_classes=len(labels) + bool(classifier.out_of_scope_label), label="Prediction",
                                 elem_id="prediction")
                heatmap = gr.Image(label="Which pixels decided", visible=False, interactive=False, elem_id="explanation")
                if opts.feedback_dir:
                    with gr.Accordion("Wrong? Tell us the right answer", open=False):
                        correct = gr.Dropdown([(pretty(n), n) for n in labels], label="The right class")
                        send = gr.Button("Save correction")
                        thanks = gr.Markdown()
        if opts.examples:
            gr.Examples([[e.path] for e in opts.examples], inputs=[image],
                        example_labels=[e.credit for e in opts.examples], label="Examples (public-domain NPS photos)")
        with gr.Accordion("About this model", open=False):
            gr.Markdown(opts.about or "")

        ui_events = dict(inputs=[image, show_map], outputs=[label, verdict_md, heatmap, last_label], api_visibility="private")
        button.click(classify, **ui_events)
        image.change(classify, **ui_events)

        if opts.feedback_dir:
            def store(path, right, predicted):
                if not path or not right:
                    raise gr.Error("Upload a photo and choose the right class first.", print_exception=False)
                save_feedback(opts.feedback_dir, path, right, predicted)
                return f"Saved as **{right}**. Thank you!"

            send.click(store, [image, correct, last_label], thanks, api_visibility="private")

        # API-only endpoints: gr.File hands over the raw upload, so *our* loader sees every byte
        # and refuses bad files with its own message (gr.Image would try to decode first).
        with gr.Row(visible=False):
            api_in = gr.File(type="filepath")
            api_many = gr.File(type="filepath", file_count="multiple")
            api_out = gr.JSON()
            api_img = gr.Image(type="pil", format="png")
        api_in.upload(predict, api_in, api_out, api_name="predict",
                      api_description="One image -> {label, confidences, abstained}")
        api_many.upload(predict_batch, api_many, api_out, api_name="predict_batch",
                        api_description="A list of images -> a list of {label, confidences, abstained}")
        api_in.change(explain, api_in, [api_img, api_out], api_name="explain",
                      api_description="One image -> (overlay PNG of the pixels that decided, prediction)")
    return demo


def about_markdown(model_dir: str | None, classifier: Classifier, model_id: str) -> str:
    """Classes, test metrics (from metrics.json or the card's model-index) and how to call the API."""
    lines = [f"**Model:** `{model_id}`  ", f"**Classes:** {', '.join(classifier.labels)}  "]
    metrics = None
    if model_dir and (Path(model_dir) / "metrics.json").exists():
        metrics = json.loads((Path(model_dir) / "metrics.json").read_text())
    if metrics:
        t = metrics["test"]
        lines.append(f"**Held-out test:** accuracy {t['accuracy']:.3f}, macro-F1 {t['macro_f1']:.3f} "
                     f"on {sum(t['support'])} photos.  ")
        a = metrics.get("abstain", {})
        if a.get("auroc") is not None:
            lines.append(f"**Out-of-scope:** AUROC {a['auroc']:.3f}, in-scope answered {a['in_scope_keep_rate']:.0%}.  ")
        if metrics.get("extra_eval"):
            for k, v in metrics["extra_eval"].items():
                lines.append(f"**{k}:** {v}  ")
    lines += ["", "**Call it from code:**", "```python", "from gradio_client import Client, handle_file",
              "client = Client(\"http://127.0.0.1:7860\")  # or \"user/space-name\"",
              "client.predict(handle_file(\"photo.jpg\"), api_name=\"/predict\")", "```"]
    return "\n".join(lines)
