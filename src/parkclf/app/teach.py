"""The "Teach it" tab: a visitor's own classifier from a few photos per class, taught here in seconds, tried at once,
downloaded as a checkpoint zip, or pushed to the visitor's Hub account.

The page only gathers photos and shows results; :func:`parkclf.teach.teach` does the teaching (the served model's
backbone, a new head, no torch) and decides what input is acceptable, with one sentence when it is not. Zips are
read by the Many-photos tab's reader (:func:`parkclf.app.many.expand`: caps on entries and bytes, no ``..``).

A taught model belongs to the session that taught it (:class:`TaughtModels`): nothing of one visitor reaches another,
and models go after ``max_age_s`` or when ``models`` newer ones are kept. Teaching runs one at a time (the rest
queue). "Push to my Hub account" needs Sign in with Hugging Face, which works on a Space with ``hf_oauth: true``;
the visitor's token is handed to that one upload call and kept nowhere.
"""

from __future__ import annotations

import contextvars
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import gradio as gr

from ..classifier import Classifier, Prediction, load
from ..engine import EXPLAIN_FILES, ONNX_DIR
from ..errors import UsageError
from ..publish.card import CONFUSION_PNG
from ..teach import Features, Taught, TeachLimits, precompute, teach
from . import many
from .api import Endpoints, file_path, guarded, refuse
from .words import label_value, pretty, verdict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeachOptions:
    # what one visitor may send: each photo costs about 0.4 s of CPU on the embedded model (benchmarks/teach_tab.py),
    # so 300 take a 2-core Space a minute or two, while the next visitor's teaching waits
    limits: TeachLimits = TeachLimits(max_per_class=100, max_total=300, max_pixels=1_000_000_000)
    zip_limits: many.ManyLimits = many.ManyLimits(max_files=1000, zip_entries=2000, zip_bytes=300 * 2**20)
    models: int = 8  # taught models kept at once, all visitors together (the least recently taught goes first)
    max_age_s: float = 1800.0  # a taught model, its folder and its zip go this long after teaching
    login: bool = False  # Sign in with Hugging Face and the push; only on a Space with hf_oauth: true
    hub_api: object | None = None  # the HfApi pushes go through (tests: a recording stand-in); default HfApi()
    base: str | None = None  # a checkpoint whose backbone is reused; default: the model the app serves
    rows: int = 10  # class rows on the page (the first three shown)


@dataclass
class Model:
    """One visitor's taught model: the checkpoint, its classifier for "Try it", and the zip once it is made."""

    taught: Taught
    classifier: Classifier
    endpoints: Endpoints
    home: Path  # the run's folder: the checkpoint and its zip, removed with the model
    made: float = field(default_factory=time.monotonic)
    zip_path: Path | None = None


class TaughtModels:
    """Each session's latest taught model, keyed by Gradio's session hash. At most ``models`` are kept (the least
    recently taught goes) and none longer than ``max_age_s``; a dropped model's files go with it."""

    def __init__(self, root: Path | None = None, *, models: int = 8, max_age_s: float = 1800.0):
        self.root = Path(root or tempfile.mkdtemp(prefix="parkclf-taught-"))
        self.models, self.max_age_s = models, max_age_s
        self._by_session: dict[str, Model] = {}
        self._lock = threading.Lock()

    def home(self) -> Path:
        """A fresh folder for one teaching run."""
        path = self.root / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def put(self, session: str, model: Model) -> None:
        with self._lock:
            dropped = [self._by_session.pop(session, None)]
            self._by_session[session] = model
            dropped += self._sweep()
        self._remove(dropped)

    def get(self, session: str | None) -> Model | None:
        with self._lock:
            dropped = self._sweep()
            model = self._by_session.get(session) if session else None
        self._remove(dropped)
        return model

    def __len__(self) -> int:
        return len(self._by_session)

    def _sweep(self) -> list[Model]:
        now, dropped = time.monotonic(), []
        for session, model in list(self._by_session.items()):
            if now - model.made > self.max_age_s:
                dropped.append(self._by_session.pop(session))
        while len(self._by_session) > self.models:  # dicts keep insertion order: the oldest first
            dropped.append(self._by_session.pop(next(iter(self._by_session))))
        return dropped

    @staticmethod
    def _remove(models: list[Model | None]) -> None:
        for model in models:
            if model is not None:
                shutil.rmtree(model.home, ignore_errors=True)


def slug(labels: list[str]) -> str:
    """A folder and repo name from the class names: "Red rock", "sea" -> "red-rock-sea-classifier"."""
    text = re.sub(r"[^a-z0-9]+", "-", "-".join(labels).lower()).strip("-")
    return (text[:60].rstrip("-") or "classifier") + "-classifier"


def photos_from_rows(names: list[str | None], files: list[list | None]) -> dict[str, list[str]]:
    """The class rows as the page sends them -> {name: upload paths}. Empty rows are left out; the rest, even a
    bad name or too few photos, go to :func:`parkclf.teach.teach`, which says what is wrong with them."""
    photos: dict[str, list[str]] = {}
    for name, uploads in zip(names, files, strict=True):
        name = (name or "").strip()
        if not name and not uploads:
            continue
        if name in photos:
            raise refuse(f"Two classes are both called '{name}'; give each class its own name.")
        photos[name] = [file_path(f) for f in uploads or []]
    return photos


def photos_from_zip(path: str, name: str, limits: many.ManyLimits) -> tuple[dict[str, list[tuple[str, bytes]]], list]:
    """One zip of ``<class>/`` folders (or ``<top>/<class>/``) -> ({class: [(entry, photo bytes)]}, [(entry, why
    skipped)]); teach() names each photo by its entry."""
    try:
        items = many.expand([path], [name], limits)
    except many.TooMuch as e:
        raise refuse(str(e)) from None
    if not items or not all(i.entry for i in items):
        reason = ("it holds no photos" if not items else items[0].error.rstrip(".").lower() if items[0].error
                  else "it is not a zip file")
        raise refuse(f"{name} cannot be read as a zip of class folders ({reason}); zip one folder per class, "
                     "each holding its photos.")
    parts = [PurePosixPath(i.entry).parts for i in items]
    if len({p[0] for p in parts}) == 1 and all(len(p) > 2 for p in parts):  # the zip of a folder: its name first
        parts = [p[1:] for p in parts]
    loose = [i.entry for i, p in zip(items, parts, strict=True) if len(p) < 2]
    if loose:
        raise refuse(f"{name} has photos outside class folders ({loose[0]}); put each class's photos in a folder "
                     "named after the class, and zip those folders.")
    photos: dict[str, list[tuple[str, bytes]]] = {}
    skipped = []
    for item, p in zip(items, parts, strict=True):
        if item.error:
            skipped.append((item.entry, item.error))
        else:
            photos.setdefault(p[0], []).append((item.entry, item.source))
    return photos, skipped


class SessionFeatures:
    """Each session's photo features ({sha256: row}), computed as its photos are dropped, so that Teach only fits.
    Keyed by Gradio's session hash: one visitor's never reach another's teaching. At most ``sessions`` are kept (the
    least recently used goes) and none unused for longer than ``max_age_s``."""

    def __init__(self, *, sessions: int = 32, max_age_s: float = 1800.0):
        self.sessions, self.max_age_s = sessions, max_age_s
        self._by_session: dict[str, tuple[float, Features]] = {}
        self._lock = threading.Lock()

    def get(self, session: str) -> Features:
        with self._lock:
            now = time.monotonic()
            for key, (used, _) in list(self._by_session.items()):
                if now - used > self.max_age_s:
                    del self._by_session[key]
            features = self._by_session.pop(session, (now, {}))[1]
            self._by_session[session] = (now, features)  # the most recently used last
            while len(self._by_session) > self.sessions:
                del self._by_session[next(iter(self._by_session))]
            return features

    def __len__(self) -> int:
        return len(self._by_session)


def make_zip(model: Model) -> Path:
    """The checkpoint folder as a zip whose one top folder is the checkpoint (unzip, then MODEL_ID=that folder)."""
    folder = model.taught.folder
    path = model.home / f"{folder.name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, (Path(folder.name) / f.relative_to(folder)).as_posix())
    return path


def progress_reporter(progress: gr.Progress):
    """``progress(done, total)`` for :func:`teach`, callable from any thread: Gradio finds the event to update
    through context variables, which a worker thread would not have, so each call runs in a copy of this one's."""
    context = contextvars.copy_context()

    def report(done: int, total: int) -> None:
        context.copy().run(progress, (done, total), desc="Reading the photos", unit="photos")

    return report


def summary(taught: Taught, skipped: list, ready_s: float) -> str:
    """What a person reads after teaching: held-out accuracy and how it was measured, and what was left out."""
    m, n = taught.metrics, sum(taught.counts.values())
    lines = [f"**Taught {len(taught.labels)} classes from {n} photos in {ready_s:.1f} s.** "
             f"Held-out accuracy **{m['accuracy']:.0%}** ({m.get('method', 'held out')}: each photo is scored by a "
             "model fitted without it)."]
    if m.get("keep_rate") is not None:
        lines.append(f"It answers {m['keep_rate']:.0%} of those photos and says it is unsure of the rest: a photo "
                     "unlike all of your classes gets \"doesn't look like\" instead of a wrong answer.")
    left_out = [f"{name}: {why}" for name, why in [*skipped, *taught.skipped]] + list(taught.duplicates)
    if left_out:
        lines.append(f"\n**Left out ({len(left_out)}):** " + "; ".join(left_out[:10])
                     + ("; …" if len(left_out) > 10 else ""))
    return "\n".join(lines)


def per_class_rows(taught: Taught) -> list[list]:

    per = taught.metrics["per_class"]
    return [[pretty(label), taught.counts.get(label, 0), f"{per[label]['precision']:.0%}",
             f"{per[label]['recall']:.0%}", f"{per[label]['f1']:.0%}"] for label in taught.labels]




class TeachTab:
    """The tab's handlers over one store of taught models; :meth:`render` lays out the page and wires them."""

    def __init__(self, classifier: Classifier, options: TeachOptions | None = None):
        self.options = options or TeachOptions()
        self.base = self.options.base or classifier  # the served model: teaching reuses its compiled engine
        self.store = TaughtModels(models=self.options.models, max_age_s=self.options.max_age_s)
        self.features = SessionFeatures(max_age_s=self.options.max_age_s)

    def gather(self, zip_payload, names: list, files: list) -> tuple[dict, list]:
        """({class: photos}, [(name, why skipped)]) from either the class rows or one zip."""
        rows = photos_from_rows(names, files)
        if zip_payload is None:
            return rows, []
        if rows:
            raise refuse("Use either the class rows or one zip of class folders, not both.")
        path = file_path(zip_payload)
        name = (zip_payload.get("orig_name") if isinstance(zip_payload, dict) else None) or Path(path).name
        return photos_from_zip(path, name, self.options.zip_limits)

    def read(self, payload, session: str, progress=None) -> str:
        """Compute the features of one class row's photos (or of a zip's) as they are dropped, for this session's
        Teach: the line shown under them. Nothing is refused here; Teach says what is wrong."""
        try:
            if payload is None or payload == []:
                return ""
            if isinstance(payload, list):
                photos = [file_path(p) for p in payload]
            else:
                name = (payload.get("orig_name") if isinstance(payload, dict) else None) or "the zip"
                classes, _ = photos_from_zip(file_path(payload), name, self.options.zip_limits)
                photos = [photo for entries in classes.values() for photo in entries]
            ready = precompute(photos, self.features.get(session), base=self.base, limits=self.options.limits,
                               progress=progress_reporter(progress) if progress is not None else None)
        except gr.Error:
            return ""
        except Exception:
            logger.exception("reading dropped photos failed")
            return ""
        return (f"{ready} of {len(photos)} photo{'s' if len(photos) != 1 else ''} read" if ready < len(photos) else
                f"{ready} photo{'s' if ready != 1 else ''} read")

    def run(self, zip_payload, names: list, files: list, session: str, progress=None):
        """Teach, keep the model for ``session``, and yield (summary, per-class rows, confusion picture, the
        after-teaching section, the download button): once the model can be tried, once more with its zip."""
        t0 = time.perf_counter()
        photos, skipped = self.gather(zip_payload, names, files)
        home = self.store.home()
        try:
            # the card names the folder the zip unpacks to, never this server's temporary path
            taught = teach(photos, home / slug(list(photos)), base=self.base, limits=self.options.limits,
                           progress=progress_reporter(progress) if progress is not None else None,
                           cache=self.features.get(session), repo_id=slug(list(photos)))
            classifier = load(str(taught.folder))
        except UsageError as e:  # TeachError and what load refuses: the visitor's input, said in one sentence
            shutil.rmtree(home, ignore_errors=True)
            raise refuse(str(e)) from None
        except Exception as e:
            shutil.rmtree(home, ignore_errors=True)
            logger.exception("teaching failed")
            raise refuse(f"Teaching failed ({type(e).__name__}); try again, or with fewer photos.") from None
        model = Model(taught, classifier, Endpoints(classifier), home)
        self.store.put(session, model)
        logger.info("taught %d classes from %d photos in %.1fs", len(taught.labels), sum(taught.counts.values()),
                    time.perf_counter() - t0)
        shown = (summary(taught, skipped, time.perf_counter() - t0), per_class_rows(taught),
                 str(taught.folder / CONFUSION_PNG), gr.update(visible=True))  # the card's picture
        yield *shown, gr.update(visible=False)
        model.zip_path = make_zip(model)
        yield *shown, gr.update(value=str(model.zip_path), visible=True)

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
        if show_map:
            image, pred = model.endpoints.explain(payload)
        else:
            image, pred = None, model.endpoints.predict(payload)
        p = Prediction(score=0.0, **pred)
        return (label_value(p, False), verdict(p, model.classifier.labels),
                gr.update(value=image, visible=bool(show_map)))

    def push(self, repo_name: str | None, private: bool, session: str | None, profile, oauth_token) -> str:
        """Push this session's model to the signed-in visitor's account with their token, for this one upload."""
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        from ..checkpoint import name_in_card
        from ..publish.hub import push_model

        if profile is None or oauth_token is None:
            raise refuse("Sign in with Hugging Face first (the button above), then push.")
        model = self.model(session)
        name = (repo_name or "").strip() or model.taught.folder.name
        repo_id = name if "/" in name else f"{profile.username}/{name}"
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            raise refuse(f"'{name}' cannot be a repo name; use letters, digits, '-', '_' and '.', "
                         "e.g. my-classifier.") from None
        try:
            name_in_card(model.taught.folder, repo_id)
            push_model(model.taught.folder, repo_id, private=bool(private), api=self.options.hub_api,
                       token=oauth_token.token, commit_message="Upload a model taught in the parkclf app")
        except Exception as e:  # the Hub's reason, never the token (its messages do not carry it; made sure)
            reason = str(e).strip().splitlines()[0][:160].replace(oauth_token.token, "…") if str(e).strip() else ""
            logger.warning("push to %s failed: %s", repo_id, type(e).__name__)
            raise refuse(f"The Hub did not take the upload to {repo_id} ({reason or type(e).__name__}); check that "
                         "you may write there, or pick another name.") from None
        logger.info("pushed a taught model to %s", repo_id)
        return (f"Pushed to [{repo_id}](https://huggingface.co/{repo_id}). Serve it with this app: "
                f"`MODEL_ID={repo_id} python app.py`, or load it with `transformers.pipeline`.")

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
            self._try_it()
            download = gr.DownloadButton("Download the model (zip)", visible=False, elem_id="teach_download")
            self._push()

        def teach_photos(data: dict, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - Gradio's way
            yield from self.run(data[zip_file], [data[n] for n in names], [data[f] for f in files],
                                  request.session_hash, progress)

        def read_photos(payload, request: gr.Request, progress=gr.Progress()):  # noqa: B008 - Gradio's way
            return self.read(payload, request.session_hash, progress)

        # one at a time: two runs would only share the two cores; the rest wait in the queue, each for its session.
        # Photos are read as they are dropped (the same queue), so that Teach then only fits.
        for i, (photos, read) in enumerate([*zip(files, reads, strict=True), (zip_file, zip_read)]):
            photos.upload(read_photos, photos, read, api_name=f"teach_read_{i}", api_visibility="private",
                          preprocess=False, concurrency_limit=1, concurrency_id="teach", show_progress="minimal")
            photos.clear(lambda: "", None, read, api_visibility="private", queue=False)
        go.click(teach_photos, {zip_file, *names, *files}, [result, table, confusion, after, download],
                 api_visibility="private", preprocess=False, concurrency_limit=1, concurrency_id="teach")

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

    def _try_it(self) -> None:
        gr.Markdown("### Try it")
        with gr.Row(elem_id="teach_try"):
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                 label="A new photo", elem_id="teach_try_photo")
                show_map = gr.Checkbox(label="Show which pixels decided (explanation overlay)", value=False)
            with gr.Column():
                verdict_md = gr.Markdown(elem_id="teach_verdict")
                label = gr.Label(num_top_classes=self.options.limits.max_classes, label="Prediction",
                                 elem_id="teach_prediction")
                heatmap = gr.Image(label="Which pixels decided", visible=False, interactive=False,
                                   elem_id="teach_explanation")

        def try_taught(payload, explain: bool, request: gr.Request):
            return guarded("teach try", lambda: self.try_photo(payload, explain, request.session_hash))

        events = dict(inputs=[image, show_map], outputs=[label, verdict_md, heatmap], api_visibility="private",
                      preprocess=False)
        image.change(try_taught, **events)
        show_map.change(try_taught, **events)

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
