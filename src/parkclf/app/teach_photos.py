"""The "Teach it" tab's photos: the class rows or one zip as the page sends them, and the reading of each visitor's
photos (their features, through the served model's backbone) as they are dropped, in turns with other visitors.

Reading is the slow part of teaching (0.4 to 0.9 s of CPU a photo on a 2-core Space), and it happens in the
background of a visit: while photos are read, another visitor may press Teach or try a photo. :class:`Turns` makes
that wait short: reading goes one batch of :data:`READ_BATCH` photos at a time, readers take turns in the order they
asked, and a batch starts only while nobody teaches or tries, so interactive work waits for at most the batch in
progress. Teach runs the same reading for any photo not read yet, so it needs no reading event to finish first.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import PurePosixPath

from ..classifier import Classifier
from ..teach import Features, TeachLimits, precompute, unread
from . import many
from .api import file_path, refuse

# photos read per turn: what another visitor's Teach or Try it may wait for (1.6 to 3.6 s on 2 cores). Small batches
# cost reading little: OpenVINO runs fewer than 16 photos one at a time anyway (parkclf.engine.OpenVinoEngine)
READ_BATCH = 4


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
    if all(len(p) > 2 for p in parts) and len({p[0] for p in parts}) == 1:  # the zip of a folder: its name first
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


def zip_name(payload) -> str:
    return (payload.get("orig_name") if isinstance(payload, dict) else None) or PurePosixPath(
        file_path(payload)).name


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


class Turns:
    """Who may use the CPU next: interactive work (a fit, a tried photo) goes first and needs only the reading batch
    in progress to end; readers read one batch at a time, in the order they asked, while no interactive work runs.

    Gradio's queue cannot do this alone: an event holds its concurrency slot until it returns, so a reading event
    with a slot of its own would still share the cores with a fit, and one sharing a slot makes Teach wait for all
    of it (issue 32)."""

    def __init__(self):
        self._changed = threading.Condition()
        self._interactive = 0  # running or waiting for the batch in progress
        self._reading = False
        self._readers: deque[object] = deque()

    @contextmanager
    def interactive(self):
        with self._changed:
            self._interactive += 1
            self._changed.wait_for(lambda: not self._reading)
        try:
            yield
        finally:
            with self._changed:
                self._interactive -= 1
                self._changed.notify_all()

    @contextmanager
    def reading(self):
        ticket = object()
        with self._changed:
            self._readers.append(ticket)
            self._changed.wait_for(lambda: self._readers[0] is ticket and not self._interactive and not self._reading)
            self._readers.popleft()
            self._reading = True
        try:
            yield
        finally:
            with self._changed:
                self._reading = False
                self._changed.notify_all()


class Reader:
    """Reads photos into each session's features, a batch per turn (:class:`Turns`)."""

    def __init__(self, base: Classifier, limits: TeachLimits, features: SessionFeatures, turns: Turns):
        self.base, self.limits, self.features, self.turns = base, limits, features, turns

    def read(self, photos: Sequence, session: str) -> Iterator[tuple[int, int]]:
        """Yield (photos read so far, of how many) after each batch; the features go to ``session``'s. A photo that
        cannot be read is left out here (Teach says why), and a session stops at ``limits.max_total`` photos."""
        cache = self.features.get(session)
        todo = unread(photos, cache)  # what is read already takes no turn: a Teach on read photos goes on at once
        ready = len(photos) - len(todo)
        for start in range(0, len(todo), READ_BATCH):
            with self.turns.reading():
                # precompute skips what the cache holds: a batch another reader of this session (the row's
                # reading event, or Teach) read meanwhile costs nothing
                ready += precompute(todo[start:start + READ_BATCH], cache, base=self.base, limits=self.limits)
            yield ready, len(photos)
        if not todo:
            yield ready, len(photos)

    def lines(self, payload, session: str, zip_limits: many.ManyLimits) -> Iterator[str]:
        """The line under a class row (or the zip) as its photos are read: "16 of 40 photos read…", then the count
        read. Nothing is refused here: a zip that cannot be read leaves the line empty, and Teach says why."""
        if payload is None or payload == []:
            yield ""
            return
        if isinstance(payload, list):
            photos = [file_path(p) for p in payload]
        else:
            classes, _ = photos_from_zip(file_path(payload), zip_name(payload), zip_limits)
            photos = [photo for entries in classes.values() for photo in entries]
        ready, n = 0, len(photos)
        for ready, _ in self.read(photos, session):
            yield f"{ready} of {n} photos read…"
        yield (f"{ready} of {n} photo{'s' if n != 1 else ''} read" if ready < n else
               f"{ready} photo{'s' if ready != 1 else ''} read")
