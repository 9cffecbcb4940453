"""Corrections from the page ("Wrong? Tell us"), kept as an imagefolder that ``parkclf train --extra-dataset`` reads,
in a local folder and, with ``FEEDBACK_DATASET``, in a Hub dataset repository as well.

Layout (the same on disk and on the Hub): one folder per app run, ``<run>/<label>/<uuid>.jpg`` with
``<run>/metadata.jsonl``, a row per photo (file_name, label: the right class, predicted, abstained, confidences,
time, sha256 of the photo as sent). ``datasets.load_dataset("imagefolder", data_dir=...)`` reads it, and so does
``load_dataset("user/name")``. A run writes only its own folder: a restarted Space, whose disk starts empty, never
overwrites what an earlier run uploaded (huggingface_hub's CommitScheduler uploads whole files).

Delivery to the Hub (tests/test_faults.py): an accepted correction is on this disk at once, and in the dataset after
the next commit (every few minutes, at start for what an earlier run left, and at shutdown). A commit lands whole or
not at all, and files go up whole at the same paths, so a commit repeated after a kill replaces rows, never adds
them. With the folder kept (FEEDBACK_DIR on a persistent disk), every accepted correction reaches the dataset exactly
once, even when the process is killed mid-upload: the next run's first commit takes the killed run's folder. On an
empty disk, what was committed is there exactly once; what was accepted since the last commit is lost (at most
once), and the same photo is taken again when it is resent.

A public link means strangers write into this folder, so nothing they send is stored as sent: the upload is
decoded by :func:`parkclf.images.load_image` (what it refuses is refused) and saved as a fresh JPEG of at most
1024 px. A correction is taken only for a photo this session had classified, once per photo (the photos already
taken are read back at start, from the folder and the Hub), at a limited rate per session and overall (attempts
count, refused ones too), and only while the kept corrections are under their caps.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..images import ImageError, load_image

logger = logging.getLogger(__name__)
METADATA = "metadata.jsonl"
UPLOADED = [f"*/{METADATA}", "*/*/*.jpg"]  # all a run writes that may leave the machine (never a .part file)


class FeedbackError(ValueError):
    """A correction that is refused. The message is meant for the person who sent it."""


@dataclass(frozen=True)
class FeedbackLimits:
    max_files: int = 1000  # corrections kept, all classes and runs together (the Hub dataset's included)
    max_bytes: int = 200 * 2**20  # bytes of photos in the local folder
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


def read_rows(root: str | Path) -> list[dict]:
    """The metadata rows of every run under ``root`` (a local folder, or the Hub's metadata files downloaded)."""
    rows = []
    for path in sorted(Path(root).glob(f"*/{METADATA}")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash mid-write; the rest of the file still counts
                logger.warning("%s:%d is not a JSON row; skipped", path, n)
    return rows


def digests(root: str | Path) -> set[str]:
    """The sha256 of every photo the runs under ``root`` hold: the photos already taken."""
    return {r["sha256"] for r in read_rows(root) if r.get("sha256")}


def run_name() -> str:
    """A folder name no other run picks: the UTC start time, then random hex (never a datasets split keyword)."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class FeedbackStore:
    """``taken``: digests of photos kept elsewhere (the Hub dataset). ``hub``: the CommitScheduler uploading
    ``root``; its lock keeps a photo and its metadata row in the same commit."""

    def __init__(self, root: str | Path, labels: list[str], limits: FeedbackLimits | None = None, *,
                 taken: set[str] | frozenset[str] = frozenset(), hub=None):
        self.root, self.labels, self.limits = Path(root), list(labels), limits or FeedbackLimits()
        self.run = self.root / run_name()
        self.hub = hub
        self._lock = threading.Lock()
        self._classified: OrderedDict[str, dict[str, dict]] = OrderedDict()
        self._times: dict[str, deque] = {}
        self._all_times: deque = deque()
        self._known = digests(self.root) | set(taken)
        self.bytes = sum(p.stat().st_size for p in self.root.glob("*/*/*.jpg"))

    @property
    def files(self) -> int:
        """Corrections kept: one per photo, here or on the Hub."""
        return len(self._known)

    def remember(self, session: str, photo_digest: str, prediction: dict) -> None:
        """This session classified this photo, and the model said ``prediction`` (label, confidences, abstained);
        called by the page's classify event."""
        answer = {k: prediction[k] for k in ("label", "confidences", "abstained")}
        with self._lock:
            seen = self._classified.pop(session, {})
            seen[photo_digest] = answer
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

    def save(self, path: str, label: str, *, session: str) -> Path:
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
            answer = self._classified.get(session, {}).get(photo)
            if answer is None:
                raise FeedbackError("Classify this photo first, then tell us the right answer.")
            if photo in self._known:
                raise FeedbackError("We already have a correction for this photo. Thank you!")
            if self.files + 1 > self.limits.max_files or self.bytes + len(data) > self.limits.max_bytes:
                raise FeedbackError("Thank you! The feedback folder is full, so corrections are not being saved "
                                    "right now.")
            try:
                return self._write(data, label, answer, photo)
            except OSError as e:  # a full disk (ENOSPC), a quota: the visitor gets a sentence, the server goes on
                logger.warning("a correction was not saved: %s: %s", type(e).__name__, e)
                why = "the server's disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (
                    "the server could not write it")
                raise FeedbackError(f"This correction was not saved: {why}. Please try again later.") from None

    def _write(self, data: bytes, label: str, answer: dict, photo: str) -> Path:
        dest = self.run / label / f"{uuid.uuid4().hex}.jpg"
        # confidences as a list of (label, score): one schema for every run, whatever classes its model had, so
        # datasets can read all the runs' metadata files together
        row = {"file_name": dest.relative_to(self.run).as_posix(), "label": label, "predicted": answer["label"],
               "abstained": bool(answer["abstained"]),
               "confidences": [{"label": k, "score": float(v)} for k, v in
                               sorted(answer["confidences"].items(), key=lambda kv: -kv[1])],
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sha256": photo}
        meta, tmp = self.run / METADATA, dest.with_suffix(".part")
        with self.hub.lock if self.hub else contextlib.nullcontext():  # an upload sees both files or neither
            size = meta.stat().st_size if meta.exists() else 0
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
                tmp.replace(dest)  # a reader (or parkclf train) never sees half a photo
                with meta.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            except OSError:
                # a failed write leaves neither the photo nor half a row (the next row would be glued to it)
                tmp.unlink(missing_ok=True)
                dest.unlink(missing_ok=True)
                if meta.exists():
                    os.truncate(meta, size)
                raise
        self._known.add(photo)
        self.bytes += len(data)
        return dest

    def close(self, timeout: float = 60.0) -> None:
        """Upload what is left (at shutdown), waiting ``timeout`` seconds at most, and stop the scheduler. A Hub that
        is down or slow costs one log line, not a traceback or a hung shutdown: what was not uploaded stays in
        ``root``, and a restart on the same disk (FEEDBACK_DIR) uploads it with its first commit."""
        if not self.hub:
            return
        try:
            self.hub.trigger().result(timeout=timeout)
        except Exception as e:  # TimeoutError included
            reason = (str(e).strip().splitlines() or [""])[0][:200] or f"no answer in {timeout:.0f}s"
            logger.warning("the last corrections were not uploaded to %s (%s: %s); they stay in %s",
                           self.hub.repo_id, type(e).__name__, reason, self.root)
        finally:
            self.hub.stop()


def on_hub(repo_id: str, root: str | Path, labels: list[str], limits: FeedbackLimits | None = None, *,
           every: float = 5.0, api=None) -> FeedbackStore:
    """A store whose folder a CommitScheduler uploads to the dataset repo ``repo_id`` every ``every`` minutes (and
    at :meth:`FeedbackStore.close`), knowing the photos the repo already holds. ``api``: an ``HfApi`` (the token
    comes from HF_TOKEN through huggingface_hub itself)."""
    from ..publish import hub

    scheduler = None
    try:
        scheduler = hub.schedule_uploads(root, repo_id, every=every, allow_patterns=UPLOADED, api=api)
        taken = digests(hub.download(scheduler.api, scheduler.repo_id, f"*/{METADATA}"))
    except Exception as e:  # no token, no network, no write access: say which setting to fix
        if scheduler:
            scheduler.stop()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UsageError(f"FEEDBACK_DATASET={repo_id}: the dataset repo could not be opened ({first}). Add an "
                         "HF_TOKEN secret with write access to it, or unset FEEDBACK_DATASET to keep corrections "
                         "on this disk only.") from None
    return FeedbackStore(root, labels, limits, taken=taken, hub=scheduler)
