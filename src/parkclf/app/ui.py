"""The Gradio page: ``build_demo(classifier)`` -> gr.Blocks with two tabs and the named API endpoints.

The UI never touches tensors; everything goes through :class:`parkclf.classifier.Classifier` (via
:mod:`.api`, :mod:`.many` and :mod:`.feedback`). API: ``/predict`` (one image), ``/predict_batch`` (a list),
``/explain`` (overlay + prediction); each is also an MCP tool.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..classifier import Classifier, Prediction
from ..tables import prediction_row
from . import many, teach
from .answer import Answer
from .api import Endpoints, Limits, file_path, refuse
from .feedback import FeedbackError, FeedbackStore, digest
from .words import NONE_OF_THESE, label_value, percent, pretty, verdict  # noqa: F401 (the page's words)

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
    feedback: FeedbackStore | None = None  # where "wrong? tell us" keeps corrections; None hides the control
    limits: Limits = field(default_factory=Limits)
    many_limits: many.ManyLimits = field(default_factory=many.ManyLimits)
    web_url: str | None = None  # the in-browser page (transformers.js), linked from the header
    delete_cache: tuple[int, int] = (600, 1800)  # every 10 minutes, uploads older than 30 minutes go
    teaching: teach.TeachOptions | None = field(default_factory=teach.TeachOptions)  # the Teach it tab; None hides it


def _header(title: str, labels: list[str], opts: AppOptions) -> None:
    web = (f" Or run the model [in your browser]({opts.web_url}): the photo never leaves your device."
           if opts.web_url else "")
    gr.Markdown(f"# {title}\nUpload a photo (or use the webcam / paste one) and the model says which of "
                f"**{', '.join(pretty(n) for n in labels)}** it shows, or that it is none of them.{web}")


def _one_photo(classifier: Classifier, endpoints: Endpoints, opts: AppOptions, store: FeedbackStore | None):
    labels = classifier.labels

    def classify(payload, show_map, request: gr.Request):
        if payload is None:
            return None, "", gr.update(value=None, visible=bool(show_map))
        path = file_path(payload)
        if show_map:
            image, pred = endpoints.explain(payload)
        else:
            image, pred = None, endpoints.predict(payload)
        if store is not None:
            store.remember(request.session_hash, digest(path), pred)
        p = Prediction(score=0.0, **pred)
        return (label_value(p, bool(classifier.out_of_scope_label)), verdict(p, labels),
                gr.update(value=image, visible=bool(show_map)))

    with gr.Row():
        with gr.Column():
            # image_mode=None and preprocess=False (below): Gradio hands over the upload untouched, so a bad file
            # reaches our loader and its sentence, instead of failing in Gradio's decode with a bare "Error"
            image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                             label="Photo", elem_id="photo")
            show_map = gr.Checkbox(label="Show which pixels decided (explanation overlay)", value=False)
            button = gr.Button("Classify", variant="primary")
        with gr.Column():
            verdict_md = gr.Markdown(elem_id="verdict")
            label = Answer(label="Prediction", elem_id="prediction")
            heatmap = gr.Image(label="Which pixels decided", visible=False, interactive=False, elem_id="explanation")
            if store is not None:
                _feedback(store, labels, image)
    events = dict(inputs=[image, show_map], outputs=[label, verdict_md, heatmap],
                  api_visibility="private", preprocess=False)
    button.click(classify, **events)
    image.change(classify, **events)
    return image


def _feedback(store: FeedbackStore, labels: list[str], image) -> None:
    with gr.Accordion("Wrong? Tell us the right answer", open=False):
        correct = gr.Dropdown([(pretty(n), n) for n in labels], label="The right class")
        send = gr.Button("Save correction")
        thanks = gr.Markdown()

    def save(payload, right, request: gr.Request):
        if payload is None or not right:
            raise refuse("Upload a photo and choose the right class first.")
        try:
            store.save(file_path(payload), right, session=request.session_hash)
        except FeedbackError as e:
            raise refuse(str(e)) from None
        return f"Saved as **{pretty(right)}**. Thank you!"

    # A private event is still callable over raw HTTP: every check lives in FeedbackStore.save, none in the page.
    send.click(save, [image, correct], thanks, api_visibility="private", preprocess=False)


def _many_photos(classifier: Classifier, opts: AppOptions) -> None:
    # a CSV is kept as long as an upload is (CACHE_EXPIRY): its download link lives no longer
    limits, labels, csvs = opts.many_limits, classifier.labels, many.CsvFolder(max_age_s=opts.delete_cache[1])
    gr.Markdown(f"Drop up to {limits.max_files} photos, or zips of them. Each row fills in as it is classified, "
                "and the table downloads as CSV.")
    files = gr.File(file_count="multiple", file_types=["image", ".zip"], label="Photos or zips", elem_id="many_files")
    go = gr.Button("Classify all", variant="primary", elem_id="many_go")
    table = gr.Dataframe(headers=["photo", "file", "label", "confidence", "abstained", "note"],
                         datatype=["html", "str", "str", "str", "bool", "str"], interactive=False,
                         elem_id="many_table", column_widths=["90px", "30%", "15%", "12%", "12%", "25%"])
    download = gr.DownloadButton("Download CSV", visible=False, elem_id="many_csv")

    def run(payloads, progress=gr.Progress()):  # noqa: B008 - Gradio injects progress tracking through this default
        payloads = payloads or []
        try:
            items = many.expand([file_path(f) for f in payloads],
                                [f.get("orig_name") or Path(file_path(f)).name for f in payloads], limits)
            many.price(items, classifier, limits)
        except many.TooMuch as e:
            raise refuse(str(e)) from None
        shown, rows = [], []
        yield shown, gr.DownloadButton(visible=False)
        for item, thumb, pred in progress.tqdm(many.classify(items, classifier, limits), total=len(items),
                                               desc="Classifying"):
            rows.append(prediction_row(item.name, pred, item.error or None, labels))
            shown.append([thumb, item.name, _shown_label(pred), percent(pred.score) if pred else "",
                          bool(pred and pred.abstained), item.error])
            yield shown, gr.DownloadButton(visible=False)
        yield shown, gr.DownloadButton(value=csvs.write(rows), visible=True)

    go.click(run, files, [table, download], api_visibility="private", preprocess=False, concurrency_limit=1)


def _shown_label(pred: Prediction | None) -> str:
    if pred is None:
        return ""
    return f"{NONE_OF_THESE} (closest: {pretty(pred.label)})" if pred.abstained else pretty(pred.label)


def _api(endpoints: Endpoints) -> None:
    # API-only components, hidden: gr.File hands over the raw upload, and preprocess=False keeps Gradio from making
    # an (undeleted) temporary file per call, so our loader sees every byte and refuses bad files itself.
    with gr.Row(visible=False):
        one = gr.File(type="filepath", label="image")
        several = gr.File(type="filepath", file_count="multiple", label="images")
        prediction = gr.JSON(label="prediction")
        predictions = gr.JSON(label="predictions")
        overlay = gr.Image(type="pil", format="png", label="overlay")
    # Not an MCP tool (still on the API page): Gradio 6.31 gives a multi-file input an MCP schema with a dangling
    # $ref that clients reject (PointerToNowhere), so agents call `predict` once per photo instead.
    endpoints.predict_batch._mcp_type = "not_a_tool"
    one.upload(endpoints.predict, one, prediction, api_name="predict", preprocess=False)
    several.upload(endpoints.predict_batch, several, predictions, api_name="predict_batch", preprocess=False)
    one.change(endpoints.explain, one, [overlay, prediction], api_name="explain", preprocess=False)


def build_demo(classifier: Classifier, options: AppOptions | None = None) -> gr.Blocks:
    opts = options or AppOptions()
    title = opts.title or classifier.title or f"Image classifier: {', '.join(classifier.labels)}"
    endpoints = Endpoints(classifier, opts.limits)
    store = opts.feedback
    with gr.Blocks(title=title, delete_cache=opts.delete_cache) as demo:
        _header(title, classifier.labels, opts)
        with gr.Tabs():
            with gr.Tab("One photo"):
                image = _one_photo(classifier, endpoints, opts, store)
                if opts.examples:
                    gr.Examples([[e.path] for e in opts.examples], inputs=[image],
                                label="Examples (public-domain NPS photos)",
                                example_labels=[e.credit for e in opts.examples])
            with gr.Tab("Many photos"):
                _many_photos(classifier, opts)
            if opts.teaching is not None:
                with gr.Tab("Teach it"):
                    teach.tab(classifier, opts.teaching)
        with gr.Accordion("About this model", open=False):
            gr.Markdown(opts.about or "")
        _api(endpoints)
    return demo


def about_markdown(model_dir: str | None, classifier: Classifier, model_id: str) -> str:
    """Classes, test metrics (from metrics.json or the card's model-index) and how to call the API."""
    lines = [f"**Model:** `{model_id}`  ", f"**Classes:** {', '.join(classifier.labels)}  "]
    metrics = None
    if model_dir and (Path(model_dir) / "metrics.json").exists():
        metrics = json.loads((Path(model_dir) / "metrics.json").read_text())
    if metrics and metrics.get("unseen_sources"):  # what a visitor can expect leads; the random split follows
        u = metrics["unseen_sources"]

        def figure(key: str) -> str:
            return f"{u[key]:.3f} [{u[key + '_ci'][0]:.3f}, {u[key + '_ci'][1]:.3f}]"

        lines.append(f"**On photographers it never saw** ({u['photos']} photos from {u['sources']} sources, 95% "
                     f"intervals): accuracy {figure('accuracy')}, out-of-scope AUROC {figure('auroc')}, in-scope "
                     f"answered {figure('answered')}; each photo scored by a model that never saw its photographer "
                     f"({u['what']}).  ")
    if metrics:
        t = metrics["test"]
        split = "Random test split (photographers also seen in training)" if metrics.get("unseen_sources") else (
            "Held-out test")
        lines.append(f"**{split}:** accuracy {t['accuracy']:.3f}, macro-F1 {t['macro_f1']:.3f} "
                     f"on {sum(t['support'])} photos.  ")
        a = metrics.get("abstain", {})
        if a.get("auroc") is not None:
            lines.append(f"**Out-of-scope{' (random split)' if metrics.get('unseen_sources') else ''}:** AUROC "
                         f"{a['auroc']:.3f}, in-scope answered {a['in_scope_keep_rate']:.0%}.  ")
        if metrics.get("extra_eval"):
            for k, v in metrics["extra_eval"].items():
                lines.append(f"**{k}:** {v}  ")
    lines += ["", "**Call it from code:**", "```python", "from gradio_client import Client, handle_file",
              "client = Client(\"http://127.0.0.1:7860\")  # or \"user/space-name\"",
              "client.predict(handle_file(\"photo.jpg\"), api_name=\"/predict\")", "```"]
    return "\n".join(lines)
