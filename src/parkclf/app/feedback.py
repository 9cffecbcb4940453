"""Corrections from the page ("Wrong? Tell us"), saved as an imagefolder that ``train.py --extra-data-dir`` reads.

A public link means strangers write into this folder, so nothing they send is stored as sent: the upload is
decoded by :func:`parkclf.images.load_image` (what it refuses is refused) and saved as a fresh JPEG of at most
1024 px. A correction is taken only for a photo this session had classified, once per photo, at a limited rate
per session and overall (attempts count, refused ones too), and only while the folder is under its caps.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from ..images import ImageError, load_image

LOG = "feedback.csv"


class FeedbackError(ValueError):
    """A correction that is refused. The message is meant for the person who sent it."""


@dataclass(frozen=True)
class FeedbackLimits:
    max_files: int = 1000  # photos in the folder, all classes together
    max_bytes: int = 200 * 2**20  # bytes in the folder
    max_side: int = 1024  # the saved JPEG's longest side
    per_session: int = 10  # corrections per session per window
    overall: int = 120  # corrections from everyone per window
    window_s: float = 3600.0
    max_pixels: int = 40_000_000  # a correction needs no bigger photo than this
    sessions: int = 10_000  # sessions whose classified photos are remembered (least recent forgotten)


def digest(path: str) -> str:
    """sha256 of a file's bytes: the same upload is the same photo."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeedbackStore:
    def __init__(self, root: str | Path, labels: list[str], limits: FeedbackLimits | None = None):
        self.root, self.labels, self.limits = Path(root), list(labels), limits or FeedbackLimits()
        self._lock = threading.Lock()
        self._classified: OrderedDict[str, set[str]] = OrderedDict()
        self._times: dict[str, deque] = {}
        self._all_times: deque = deque()
        self._known, self.files, self.bytes = self._scan()

    def _scan(self) -> tuple[set[str], int, int]:
        """What the folder already holds: the digests logged, and its photos' count and size."""
        known, files, size = set(), 0, 0
        if (self.root / LOG).exists():
            with (self.root / LOG).open(newline="") as f:
                known = {r.get("digest", "") for r in csv.DictReader(f)} - {""}
        for p in self.root.glob("*/*.jpg") if self.root.is_dir() else []:
            files, size = files + 1, size + p.stat().st_size
        return known, files, size

    def remember(self, session: str, photo_digest: str) -> None:
        """This session classified this photo (called by the page's classify event)."""
        with self._lock:
            seen = self._classified.pop(session, set())
            seen.add(photo_digest)
            self._classified[session] = seen
            while len(self._classified) > self.limits.sessions:
                self._classified.popitem(last=False)

    def _check_rate(self, session: str, now: float) -> None:
        window = self.limits.window_s
        mine = self._times.setdefault(session, deque())
        for q in (mine, self._all_times):
            while q and now - q[0] > window:
                q.popleft()
        if len(mine) >= self.limits.per_session:
            raise FeedbackError(f"Thank you! This session has sent {len(mine)} corrections in the last "
                                f"{window / 60:.0f} minutes, the most we take; please try again later.")
        if len(self._all_times) >= self.limits.overall:
            raise FeedbackError("We are receiving many corrections right now; please try again in a while.")

    def _encode(self, path: str) -> bytes:
        try:
            img = load_image(path, max_pixels=self.limits.max_pixels)
        except ImageError as e:
            raise FeedbackError(f"This correction was not saved: {e}") from None
        img.thumbnail((self.limits.max_side, self.limits.max_side))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        return buf.getvalue()

    def save(self, path: str, label: str, predicted: str | None, *, session: str) -> Path:
        """Store one correction; raises FeedbackError (a sentence for the page) when it is refused. Every attempt
        counts towards the rate limits, refused ones included: each costs a decode."""
        if label not in self.labels:
            raise FeedbackError(f"Choose one of {', '.join(self.labels)} as the right class.")
        with self._lock:
            now = time.monotonic()
            self._check_rate(session, now)
            self._times[session].append(now)
            self._all_times.append(now)
        # what the loader refuses (not an image, torn, too big) is refused here, outside the lock
        data = self._encode(path)
        photo = digest(path)
        with self._lock:
            if photo not in self._classified.get(session, ()):
                raise FeedbackError("Classify this photo first, then tell us the right answer.")
            if photo in self._known:
                raise FeedbackError("We already have a correction for this photo. Thank you!")
            if self.files + 1 > self.limits.max_files or self.bytes + len(data) > self.limits.max_bytes:
                raise FeedbackError("Thank you! The feedback folder is full, so corrections are not being saved "
                                    "right now.")
            return self._write(data, label, predicted, photo)

    def _write(self, data: bytes, label: str, predicted: str | None, photo: str) -> Path:
        dest = self.root / label / f"{uuid.uuid4().hex}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(dest)  # a reader (or train.py) never sees half a photo
        log = self.root / LOG
        new = not log.exists()
        with log.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["time", "file", "label", "predicted", "digest"])
            w.writerow([time.strftime("%Y-%m-%dT%H:%M:%S"), str(dest.relative_to(self.root)), label, predicted or "",
                        photo])
        self._known.add(photo)
        self.files, self.bytes = self.files + 1, self.bytes + len(data)
        return dest
