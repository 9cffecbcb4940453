"""The "Teach it" tab's results: each session's taught model, kept for a while, and what the page says about it.

A taught model is served on the served model's compiled backbone (:meth:`parkclf.classifier.Classifier.over`):
its own classifier runs in NumPy on the backbone's features, so keeping one costs its checkpoint folder on disk and a
few kilobytes in memory, not a second compiled engine (about 190 MB each).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..classifier import Classifier
from ..teach import Taught
from .api import Endpoints
from .words import pretty


@dataclass
class Model:
    """One visitor's taught model: the checkpoint, its classifier for "Try it", and the zip once it is made."""

    taught: Taught
    classifier: Classifier
    endpoints: Endpoints
    home: Path  # the run's folder: the checkpoint and its zip, removed with the model
    made: float = field(default_factory=time.monotonic)
    zip_path: Path | None = None
    zipping: threading.Lock = field(default_factory=threading.Lock)  # the zip is made once, by whoever asks first


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


def refusal(sentence: str, earlier: Model | None) -> str:
    """The results area when Teach could not teach: why, in one sentence, and what the rest of the page shows."""
    kept = (f" The results below are of the model taught before ({', '.join(pretty(n) for n in earlier.taught.labels)})"
            "; Try it still uses that one." if earlier is not None else "")
    return f"**Not taught.** {sentence}{kept}"


def per_class_rows(taught: Taught) -> list[list]:
    per = taught.metrics["per_class"]
    return [[pretty(label), taught.counts.get(label, 0), f"{per[label]['precision']:.0%}",
             f"{per[label]['recall']:.0%}", f"{per[label]['f1']:.0%}"] for label in taught.labels]
