"""``parkclf serve`` (and app.py): load the checkpoint once, warm it up, build the page, launch with safe settings.

Settings a Space sets as variables: MODEL_ID, ENGINE, FEEDBACK_DIR and FEEDBACK_DATASET (+ FEEDBACK_MAX_FILES,
FEEDBACK_MAX_MB), CACHE_EXPIRY, WEB_URL, GRADIO_SHARE; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are read by Gradio
itself, and HF_TOKEN (a secret) by huggingface_hub, as are HF_HUB_DOWNLOAD_TIMEOUT and HF_HUB_ETAG_TIMEOUT, which bound
every Hub request here (parkclf.hub_timeouts).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import logging
import os
import signal
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..classifier import EMBEDDED_MODEL, Classifier, load  # noqa: F401 (load: app.py's and the tests')
from ..engine import ENGINES
from ..images import MAX_BYTES

logger = logging.getLogger(__name__)

# Two requests in flight keep both cores busy (one decodes while the other runs the model); more would only queue
# inside the runtime's threads (docs/results.md: a one-forward-at-a-time lock changed nothing under eight clients).
CONCURRENCY = 2
ROOT = Path(__file__).resolve().parents[3]  # the project folder (a Space's clone, or this checkout)


def load_examples(folder: Path) -> list:
    from .ui import Example, pretty

    credits = folder / "credits.tsv"
    if not credits.exists():
        return []
    with credits.open(newline="") as f:
        return [Example(str(folder / r["file"]), f"{pretty(r['park'])} — {r['credit']}")
                for r in csv.DictReader(f, delimiter="\t")]


def examples_of(folder: Path | None) -> Path | None:
    """The gallery's photos come with the checkpoint: its own ``examples/`` (with a credits.tsv), or the project's
    for the embedded model, whose classes they show. Another model gets none, rather than photos of parks it does
    not know."""
    if folder is None:
        return None
    if (Path(folder) / "examples" / "credits.tsv").exists():
        return Path(folder) / "examples"
    return ROOT / "examples" if Path(folder).resolve() == EMBEDDED_MODEL.resolve() else None


def feedback_limits():
    """FEEDBACK_MAX_FILES and FEEDBACK_MAX_MB cap the corrections kept (defaults in FeedbackLimits)."""
    from .feedback import FeedbackLimits

    base = FeedbackLimits()
    return FeedbackLimits(max_files=int(os.environ.get("FEEDBACK_MAX_FILES", base.max_files)),
                          max_bytes=int(float(os.environ.get("FEEDBACK_MAX_MB", base.max_bytes / 2**20)) * 2**20))


def feedback_store(folder: str | None, dataset: str | None, labels: list[str], *, hf_api=None):
    """Where "Wrong? Tell us" keeps corrections: ``folder``, and with ``dataset`` (user/name) a Hub dataset repo as
    well, which a Space keeps across restarts (its disk it does not; the folder is then a temporary one unless
    given). None when neither is set: the page shows no control. ``hf_api``: an HfApi (tests pass a stand-in)."""
    from . import feedback

    if dataset:
        return feedback.on_hub(dataset, folder or tempfile.mkdtemp(prefix="feedback-"), labels, feedback_limits(),
                               api=hf_api)
    return feedback.FeedbackStore(folder, labels, feedback_limits()) if folder else None


def cache_expiry() -> tuple[int, int]:
    """CACHE_EXPIRY="frequency,age" in seconds: how often Gradio sweeps its upload cache, and what age goes."""
    from .ui import AppOptions

    value = os.environ.get("CACHE_EXPIRY")
    if not value:
        return AppOptions().delete_cache
    frequency, age = (int(v) for v in value.split(","))
    return frequency, age


def hub_login() -> bool:
    """Sign in with Hugging Face (the Teach tab's push): on a Space whose README says ``hf_oauth: true``, which sets
    OAUTH_CLIENT_ID. Elsewhere Gradio would demand a local HF login to mock it, so the tab says how to upload."""
    if not (os.environ.get("SYSTEM") == "spaces" and os.environ.get("OAUTH_CLIENT_ID")):
        return False
    if importlib.util.find_spec("authlib") is None:  # Gradio would refuse to start
        logger.warning("hf_oauth is on but authlib is not installed (gradio[oauth]); the Teach tab cannot push")
        return False
    return True


def create_demo(classifier: Classifier, model: str, *, examples_dir: Path | None = None, feedback=None,
                web_url: str | None = None, hf_api=None):
    from .teach import TeachOptions
    from .ui import AppOptions, about_markdown, build_demo

    local = model if Path(model).is_dir() else None
    options = AppOptions(examples=load_examples(examples_dir) if examples_dir else [],
                         about=about_markdown(local, classifier, Path(model).name if local else model),
                         feedback=feedback, web_url=web_url,
                         delete_cache=cache_expiry(), teaching=TeachOptions(login=hub_login(), hub_api=hf_api))
    return build_demo(classifier, options)


def launch(demo, *, share: bool = False, feedback_dir: str | None = None, routes: list | None = None, **kw):
    from .hardening import app_kwargs

    # api_open=False: every call goes through the queue and its concurrency limit (no /run shortcut).
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64, api_open=False)
    return demo.launch(share=share, max_file_size=MAX_BYTES, show_error=False, mcp_server=True,
                       allowed_paths=[], blocked_paths=[feedback_dir] if feedback_dir else None,
                       app_kwargs={**app_kwargs(), "routes": routes or []}, **kw)


def main(argv: list[str] | None = None, *, hf_api=None) -> None:
    """``hf_api``: the HfApi that keeps corrections on the Hub (default: huggingface_hub's, with HF_TOKEN) and that
    the Teach tab pushes through (with the signed-in visitor's token, per call)."""
    from ..publish import web

    parser = argparse.ArgumentParser(prog="parkclf serve", description="Serve a checkpoint as the Gradio app.")
    parser.add_argument("--model", default=os.environ.get("MODEL_ID") or str(EMBEDDED_MODEL),
                        help="Hub model id or local folder (default: $MODEL_ID, else the embedded model)")
    parser.add_argument("--share", action="store_true", default=os.environ.get("GRADIO_SHARE") == "1",
                        help="Also open a public share link (needs the network)")
    parser.add_argument("--feedback-dir", default=os.environ.get("FEEDBACK_DIR"),
                        help="Save user corrections here (off unless set, or --feedback-dataset is)")
    parser.add_argument("--feedback-dataset", default=os.environ.get("FEEDBACK_DATASET"),
                        help="Also keep user corrections in this Hub dataset repo, user/name (default "
                             "$FEEDBACK_DATASET; needs HF_TOKEN with write access): uploaded every 5 minutes and at "
                             "shutdown, and read back at start so a restart does not take the same photo twice")
    parser.add_argument("--engine", default=os.environ.get("ENGINE", "auto"),
                        choices=ENGINES,
                        help="What runs the model (default $ENGINE, else auto: OpenVINO where the export has its "
                             "activation ranges, else ONNX Runtime where the checkpoint has onnx/, else torch)")
    args = parser.parse_args(argv)
    # Gradio sets matplotlib's backend around every call; with it named, the first visitor does not wait for
    # matplotlib to import pyplot to find one (0.5 s). A server has no screen: Agg is what Gradio would pick.
    os.environ.setdefault("MPLBACKEND", "Agg")
    with ThreadPoolExecutor(1) as pool:  # the model loads and compiles while Gradio imports (3 s of a cold start)
        loading = pool.submit(load, args.model, args.engine)
        from . import ui  # noqa: F401
        classifier = loading.result()
    # The in-browser page is served beside the app when its npm packages are installed (web/node_modules) and the
    # checkpoint has its int8 export; else WEB_URL may point at a static Space that publishes it.
    routes = [web.mount(classifier.folder)] if web.available(classifier.folder) else []
    store = feedback_store(args.feedback_dir, args.feedback_dataset, classifier.labels, hf_api=hf_api)
    demo = create_demo(classifier, args.model, examples_dir=examples_of(classifier.folder), feedback=store,
                       web_url=os.environ.get("WEB_URL") or ("/web/" if routes else None), hf_api=hf_api)
    # A Space (docker stop) ends the app with SIGTERM, which would end Python without its cleanup; as an interrupt,
    # Gradio closes the server and launch returns, so the last corrections still go up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        launch(demo, share=args.share, feedback_dir=str(store.root) if store else None, routes=routes)
    finally:
        if store:
            store.close()
