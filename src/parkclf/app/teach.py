"""The "Teach it" tab: a visitor's own classifier from a few photos per class, taught here in seconds, tried at once,
downloaded as a checkpoint zip, or pushed to the visitor's Hub account.

The page only gathers photos and shows results; :func:`parkclf.teach.teach` does the teaching (the served model's
backbone, a new head, no torch) and decides what input is acceptable, with one sentence when it is not, which the
results area shows until the next Teach. Zips are read by the Many-photos tab's reader (:func:`parkclf.app.many.expand`:
caps on entries and bytes, no ``..``).

Several visitors at once (issue 32): photos are read as they are dropped, a batch at a time in turns
(:mod:`.teach_photos`), in events of their own; Teach reads what is left the same way, then fits, one fit at a time
and ahead of any reading; the zip is made after Teach has answered, in its own event. A press of Teach while a run
is pending starts another run when it ends (Gradio's ``trigger_mode="always_last"``), with the page's inputs then.

A taught model belongs to the session that taught it (:class:`.teach_models.TaughtModels`): nothing of one visitor
reaches another, and models go after ``max_age_s`` or when ``models`` newer ones are kept. "Push to my Hub account"
needs Sign in with Hugging Face, which works on a Space with ``hf_oauth: true``.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
import time
from dataclasses import dataclass

import gradio as gr

from ..classifier import Classifier, Prediction
from ..engine import EXPLAIN_FILES, ONNX_DIR
from ..errors import UsageError
from ..publish.card import CONFUSION_PNG
from ..teach import TeachLimits, base_classifier, teach
from . import many, teach_share
from .answer import Answer
from .api import Endpoints, file_path, guarded, refuse
from .teach_models import Model, TaughtModels, per_class_rows, refusal, summary
from .teach_photos import Reader, SessionFeatures, Turns, photos_from_rows, photos_from_zip, slug, zip_name
from .words import label_value, verdict

__all__ = ["Model", "TaughtModels", "TeachOptions", "TeachTab", "SessionFeatures", "photos_from_rows", "tab"]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeachOptions:
    # what one visitor may send: each photo costs about 0.4 s of CPU on the embedded model (benchmarks/teach_tab.py),
    # so 300 take a 2-core Space a minute or two (read in turns with the other visitors)
    limits: TeachLimits = TeachLimits(max_per_class=100, max_total=300, max_pixels=1_000_000_000)
    zip_limits: many.ManyLimits = many.ManyLimits(max_files=1000, zip_entries=2000, zip_bytes=300 * 2**20)
    models: int = 8  # taught models kept at once, all visitors together (the least recently taught goes first)
    max_age_s: float = 1800.0  # a taught model, its folder and its zip go this long after teaching
    login: bool = False  # Sign in with Hugging Face and the push; only on a Space with hf_oauth: true
    hub_api: object | None = None  # the HfApi pushes go through (tests: a recording stand-in); default HfApi()
    base: str | None = None  # a checkpoint whose backbone is reused, loaded once; default: the model the app serves
    rows: int = 10  # class rows on the page (the first three shown)
    visitors: int = 4  # Teach runs and reading events in progress at once (fits still go one at a time)


def keep():
    """An output that a yield leaves as it is."""
    return gr.skip()


class TeachTab:
    """The tab's handlers over one store of taught models; :meth:`render` lays out the page and wires them."""

    def __init__(self, classifier: Classifier, options: TeachOptions | None = None):
        self.options = options or TeachOptions()
        self.base = base_classifier(self.options.base or classifier)  # teaching reuses its compiled engine
        self.store = TaughtModels(models=self.options.models, max_age_s=self.options.max_age_s)
        self.features = SessionFeatures(max_age_s=self.options.max_age_s)
        self.turns = Turns()
        self.reader = Reader(self.base, self.options.limits, self.features, self.turns)
        self.fitting = threading.Lock()  # one fit at a time: two would only share the cores
        self._presses, self._latest, self._latest_lock = itertools.count(), {}, threading.Lock()

    def gather(self, zip_payload, names: list, files: list) -> tuple[dict, list]:
        """({class: photos}, [(name, why skipped)]) from either the class rows or one zip."""
        rows = photos_from_rows(names, files)
        if zip_payload is None:
            return rows, []
        if rows:
            raise refuse("Use either the class rows or one zip of class folders, not both.")
        return photos_from_zip(file_path(zip_payload), zip_name(zip_payload), self.options.zip_limits)

    def read(self, payload, session: str) -> str:
        """Read one class row's photos (or a zip's) for this session's Teach: the line shown under them at the end."""
        return list(self.reading(payload, session))[-1]

    def reading(self, payload, session: str):
        """The line under the row as its photos are read, batch by batch."""
        try:
            yield from self.reader.lines(payload, session, self.options.zip_limits)
        except gr.Error:
            yield ""
        except Exception:
            logger.exception("reading dropped photos failed")
            yield ""

    def run(self, zip_payload, names: list, files: list, session: str):
        """Read what this session has not read yet, teach, keep the model for ``session``; yield (summary, per-class
        rows, confusion picture, the after-teaching section, the download button), the summary saying how far the
        reading has got, then the results, or why nothing was taught (no error: it stays in the results area).
        Of two runs of one session at once (the page runs them one after the other), the later press wins."""
        t0, press, model = time.perf_counter(), next(self._presses), None
        with self._latest_lock:
            self._latest[session] = press
        try:
            photos, skipped = self.gather(zip_payload, names, files)
            everything = [photo for entries in photos.values() for photo in entries]
            for done, total in self.reader.read(everything, session):
                if done < total:
                    yield f"Reading your photos: {done} of {total}…", *[keep() for _ in range(4)]
            if self.fitting.locked():
                yield ("Your photos are read; teaching starts when another visitor's model is taught…",
                       *[keep() for _ in range(4)])
            with self.fitting, self.turns.interactive():
                model = None if self._latest.get(session) != press else self.fit(photos, session)
        except gr.Error as e:
            yield refusal(e.message, self.store.get(session)), *[keep() for _ in range(4)]
            return
        finally:
            with self._latest_lock:
                latest = self._latest.get(session) == press
                if latest:
                    del self._latest[session]
                    if model is not None:
                        self.store.put(session, model)
        if not latest:
            if model is not None:
                shutil.rmtree(model.home, ignore_errors=True)
            yield "**Replaced** by your newer press of Teach, which the page shows next.", *[keep() for _ in range(4)]
            return
        taught = model.taught
        logger.info("taught %d classes from %d photos in %.1fs", len(taught.labels), sum(taught.counts.values()),
                    time.perf_counter() - t0)
        yield (summary(taught, skipped, time.perf_counter() - t0), per_class_rows(taught),
               str(taught.folder / CONFUSION_PNG), gr.update(visible=True), gr.update(value=None, visible=False))

    def fit(self, photos: dict, session: str) -> Model:
        """Teach on ``photos`` (their features read already, or read here) into a new folder: the Model, served on
        the base's engine; gr.Error with the library's sentence when the photos cannot be taught."""
        home = self.store.home()
        try:
            # the card names the folder the zip unpacks to, never this server's temporary path
            taught = teach(photos, home / slug(list(photos)), base=self.base, limits=self.options.limits,
                           cache=self.features.get(session), repo_id=slug(list(photos)))
            classifier = Classifier.over(self.base, str(taught.folder))
        except UsageError as e:  # TeachError and what the checkpoint refuses: the visitor's input, in one sentence
            shutil.rmtree(home, ignore_errors=True)
            raise refuse(str(e)) from None
        except Exception as e:
            shutil.rmtree(home, ignore_errors=True)
            logger.exception("teaching failed")
            raise refuse(f"Teaching failed ({type(e).__name__}); try again, or with fewer photos.") from None
        return Model(taught, classifier, Endpoints(classifier), home)

    def download(self, session: str | None):
        """The download button of this session's model, its zip made on first asking; unchanged when there is no
        model, or when a newer one replaced it meanwhile (its own download follows its Teach)."""
        model = self.store.get(session)
        if model is None:
            return keep()
        path = teach_share.make_zip(model)
        return gr.update(value=str(path), visible=True) if self.store.get(session) is model else keep()

    def model(self, session: str | None) -> Model:
        model = self.store.get(session)
        if model is None:
            minutes = self.options.max_age_s / 60
            raise refuse(f"There is no taught model in this session (models are kept for {minutes:.0f} minutes); "
                         "teach one first.")
        return model

    def try_photo(self, payload, show_map: bool, session: str | None):
        """(Label value, verdict, overlay update) for one photo, by this session's taught model."""
        if payload is None:
            return None, "", gr.update(value=None, visible=False)
        model = self.model(session)
        if show_map and not any((model.taught.folder / ONNX_DIR / f).exists() for f in EXPLAIN_FILES.values()):
            raise refuse("This model has no explanation graph (the model it was taught from had none); untick the "
                         "overlay to try it.")
        with self.turns.interactive():
            if show_map:
                image, pred = model.endpoints.explain(payload)
            else:
                image, pred = None, model.endpoints.predict(payload)
        p = Prediction(score=0.0, **pred)
        return (label_value(p, bool(model.classifier.out_of_scope_label)), verdict(p, model.classifier.labels),
                gr.update(value=image, visible=bool(show_map)))

    def push(self, repo_name: str | None, private: bool, session: str | None, profile, oauth_token) -> str:
        """Push this session's model to the signed-in visitor's account with their token, for this one upload."""
        if profile is None or oauth_token is None:
            raise refuse("Sign in with Hugging Face first (the button above), then push.")
        return teach_share.push(self.model(session), repo_name, private, profile, oauth_token, self.options.hub_api)

    def render(self) -> None:
        o, lim = self.options, self.options.limits
        gr.Markdown(f"Teach it your own classes: name {lim.min_classes} to {lim.max_classes} classes and drop "
                    f"photos of each (at least {lim.min_photos}; 8 or more works better, up to {lim.max_per_class}), "
                    "or send one zip with a folder per class. The model you see on the first tab reads each photo as "
                    "you drop it; Teach fits a new last layer on them, and in seconds you can try it, download it, "
                    "or push it to your Hugging Face account. Your photos and model stay in your session.")
        with gr.Row():
            with gr.Column(scale=3):
                names, files, reads = self._class_rows(o.rows)
            with gr.Column(scale=2):
                zip_file = gr.File(file_types=[".zip"], label="Or one zip of class folders (<class>/*.jpg)",
                                   elem_id="teach_zip", height=120)
                zip_read = gr.Markdown(elem_id="teach_zip_read")
                go = gr.Button("Teach", variant="primary", elem_id="teach_go")
        result = gr.Markdown(elem_id="teach_summary")
        with gr.Row():
            table = gr.Dataframe(headers=["class", "photos", "precision", "recall", "F1"], interactive=False,
                                 label="Per class (held out)", elem_id="teach_per_class", scale=3)
            confusion = gr.Image(label="Confusion matrix (held out: rows are the true class)", type="filepath",
                                 interactive=False, elem_id="teach_confusion", scale=2)
        with gr.Column(visible=False) as after:
            try_again, try_events = self._try_it()
            download = gr.DownloadButton("Download the model (zip)", visible=False, elem_id="teach_download")
            self._push()

        def teach_photos(data: dict, request: gr.Request):
            yield from self.run(data[zip_file], [data[n] for n in names], [data[f] for f in files],
                                request.session_hash)

        def read_photos(payload, request: gr.Request):
            yield from self.reading(payload, request.session_hash)

        def zip_taught(request: gr.Request):
            return self.download(request.session_hash)

        # Reading, teaching and zipping each have a queue of their own, so that none waits behind another kind of
        # work; Turns then gives the cores to a fit or a tried photo before the next batch of anyone's reading.
        for i, (photos, read) in enumerate([*zip(files, reads, strict=True), (zip_file, zip_read)]):
            photos.upload(read_photos, photos, read, api_name=f"teach_read_{i}", api_visibility="private",
                          preprocess=False, concurrency_limit=o.visitors, concurrency_id="teach_read",
                          show_progress="minimal", trigger_mode="always_last")
            photos.clear(lambda: "", None, read, api_visibility="private", queue=False)
        taught = go.click(teach_photos, {zip_file, *names, *files}, [result, table, confusion, after, download],
                          api_visibility="private", preprocess=False, concurrency_limit=o.visitors,
                          concurrency_id="teach", trigger_mode="always_last", show_progress_on=[result])
        taught.then(zip_taught, None, download, api_visibility="private", concurrency_limit=1,
                    concurrency_id="teach_zip", show_progress="hidden", trigger_mode="always_last")
        taught.then(try_again, api_visibility="private", **try_events)

    def _class_rows(self, n: int) -> tuple[list, list, list]:
        names, files, reads, rows = [], [], [], []
        for i in range(n):
            with gr.Row(visible=i < 3, equal_height=True) as row:
                names.append(gr.Textbox(label=f"Class {i + 1}", placeholder="its name, e.g. beach", scale=1,
                                        elem_id=f"teach_name_{i}"))
                with gr.Column(scale=3):
                    files.append(gr.File(file_count="multiple", file_types=["image"], label="Photos", height=120,
                                         elem_id=f"teach_photos_{i}"))
                    reads.append(gr.Markdown(elem_id=f"teach_read_{i}"))
            rows.append(row)
        shown = gr.State(3)
        more = gr.Button("Add a class", size="sm", elem_id="teach_add")

        def add_class(k: int):
            k = min(k + 1, n)
            return k, *[gr.Row(visible=i < k) for i in range(n)], gr.Button(visible=k < n)

        more.click(add_class, shown, [shown, *rows, more], api_visibility="private", queue=False)
        return names, files, reads

    def _try_it(self) -> tuple:
        """Lay out Try it; returns its handler and the keywords that wire it (Teach wires it again, so that a photo
        already there is answered by the model just taught)."""
        gr.Markdown("### Try it")
        with gr.Row(elem_id="teach_try"):
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                 label="A new photo", elem_id="teach_try_photo")
                show_map = gr.Checkbox(label="Show which pixels decided (explanation overlay)", value=False)
            with gr.Column():
                verdict_md = gr.Markdown(elem_id="teach_verdict")
                label = Answer(label="Prediction", elem_id="teach_prediction")
                heatmap = gr.Image(label="Which pixels decided", visible=False, interactive=False,
                                   elem_id="teach_explanation")

        def try_taught(payload, explain: bool, request: gr.Request):
            return guarded("teach try", lambda: self.try_photo(payload, explain, request.session_hash))

        events = dict(inputs=[image, show_map], outputs=[label, verdict_md, heatmap], preprocess=False,
                                 concurrency_limit=self.options.visitors, concurrency_id="teach_try",
                                 trigger_mode="always_last")
        image.change(try_taught, api_visibility="private", **events)
        show_map.change(try_taught, api_visibility="private", **events)
        return try_taught, events

    def _push(self) -> None:
        gr.Markdown("### Push to your Hugging Face account")
        if not self.options.login:
            gr.Markdown("Signing in works where this app runs as a Hugging Face Space with `hf_oauth: true`. Here, "
                        "download the zip, unzip it, and upload the folder: `hf upload your-name/model-name FOLDER`.")
            return
        gr.LoginButton()
        with gr.Row():
            repo = gr.Textbox(label="Model repo name", placeholder="e.g. my-classifier (under your account)",
                              elem_id="teach_repo")
            private = gr.Checkbox(label="Private", value=False)
        button = gr.Button("Push to my Hub account", elem_id="teach_push")
        done = gr.Markdown(elem_id="teach_pushed")

        def push_taught(name, hidden: bool, request: gr.Request, profile: gr.OAuthProfile | None,
                        oauth_token: gr.OAuthToken | None) -> str:
            return self.push(name, hidden, request.session_hash, profile, oauth_token)

        button.click(push_taught, [repo, private], done, api_visibility="private")


def tab(classifier: Classifier, options: TeachOptions | None = None) -> TeachTab:
    """The "Teach it" tab's content (call inside ``gr.Tab``); the returned object holds the session store."""
    teach_tab = TeachTab(classifier, options)
    teach_tab.render()
    return teach_tab
